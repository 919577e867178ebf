//! What the CLI's tests share: the binary run once with arguments, a tiny random GGUF model written
//! to a folder, and a `serve` process started on a free loopback port, waited on until ready and
//! stopped by its PID.
#![allow(dead_code)]

use llm_auction_model::config::LlamaConfig;
use llm_auction_model::testing::{random_weights, tiny_config, write_gguf};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed (by its PID) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Starts `serve` on a free loopback port with `extra` flags and waits until it is ready.
    pub fn start(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm-auction"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let s = Self {
            child,
            base,
            stderr: Some(stderr),
        };
        s.wait_ready(env.iter().find(|(k, _)| *k == "KEY").map(|kv| kv.1));
        s
    }

    fn wait_ready(&self, key: Option<&str>) {
        let start = Instant::now();
        loop {
            let mut req = ureq::get(&format!("{}/readyz", self.base));
            if let Some(k) = key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            if req.call().is_ok() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body`; the status and the JSON answer.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        answer(
            ureq::post(&self.url(path))
                .timeout(Duration::from_secs(300))
                .send_string(body),
        )
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// Sends SIGTERM and waits for the exit status and the stderr.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let start = Instant::now();
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (code, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let (code, resp) = match r {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(c, r)) => (c, r),
        Err(e) => panic!("request failed: {e}"),
    };
    let text = resp.into_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (code, v)
}

/// Runs the binary with `args`: its exit status (-1 when killed), stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llm-auction"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Writes `dir/tiny.gguf`: the tiny test architecture with `max_position` positions and random
/// weights drawn from `seed`.
pub fn tiny_gguf(dir: &Path, max_position: usize, seed: u64) -> PathBuf {
    let cfg = LlamaConfig {
        max_position,
        ..tiny_config()
    };
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &cfg, &random_weights(&cfg, seed, false));
    path
}

/// The server tests' model: [`tiny_gguf`] with 1024 positions.
pub fn tiny_model(dir: &Path) -> PathBuf {
    tiny_gguf(dir, 1024, 7)
}
