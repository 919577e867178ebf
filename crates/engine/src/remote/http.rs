//! HTTP to one entry's replicas: every request has a deadline; the replica with the fewest requests
//! in flight is chosen (a replica that failed to connect is skipped while others work); connection
//! errors, 429 and 503 are retried a bounded number of times with exponential backoff, other 4xx
//! and 5xx never; responses are read up to a size limit and parsed as JSON.

use crate::error::{EngineError, Result};
use crate::models_file::RemoteSpec;
use serde_json::Value;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Largest response body read (a full next-token row of a 256k vocabulary is ~25 MB of JSON).
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// The client of one remote entry.
pub struct Http {
    spec: RemoteSpec,
    agent: ureq::Agent,
    outstanding: Vec<AtomicUsize>,
    down: Vec<AtomicBool>,
}

/// Guards a replica's in-flight count.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Failure {
    /// Worth retrying (connection error, 429, 503).
    Transient(String),
    /// Final.
    Fatal(String),
}

impl Http {
    /// A client for `spec`'s replicas.
    pub fn new(spec: RemoteSpec) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(spec.timeout)
            .timeout_connect(spec.timeout.min(Duration::from_secs(10)))
            .build();
        let n = spec.urls.len();
        Self {
            spec,
            agent,
            outstanding: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            down: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The entry.
    pub fn spec(&self) -> &RemoteSpec {
        &self.spec
    }

    /// An error about replica `url`.
    pub fn error(&self, url: &str, message: impl Into<String>) -> EngineError {
        EngineError::Remote {
            kind: self.spec.kind.name().into(),
            url: url.into(),
            message: message.into(),
        }
    }

    /// Marks replica `i` as down (it is skipped while another one is up).
    pub fn mark_down(&self, i: usize) {
        self.down[i].store(true, Ordering::Relaxed);
    }

    /// The replica to use now: the fewest requests in flight among those up (all, if none is up).
    fn pick(&self) -> usize {
        let up: Vec<usize> = (0..self.down.len())
            .filter(|&i| !self.down[i].load(Ordering::Relaxed))
            .collect();
        let pool = if up.is_empty() {
            (0..self.down.len()).collect()
        } else {
            up
        };
        pool.into_iter()
            .min_by_key(|&i| self.outstanding[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// `POST path` with a JSON body on the best replica, with retries; returns the replica's URL and
    /// the response.
    ///
    /// # Errors
    /// [`EngineError::Remote`] naming the last replica tried.
    pub fn post(&self, path: &str, body: &Value) -> Result<(String, Value)> {
        self.call(None, path, Some(body))
    }

    /// `GET path` on the best replica, with retries; returns the replica's URL and the response.
    ///
    /// # Errors
    /// [`EngineError::Remote`].
    pub fn get(&self, path: &str) -> Result<(String, Value)> {
        self.call(None, path, None)
    }

    /// `GET path` on replica `i` only (probes), with retries.
    ///
    /// # Errors
    /// [`EngineError::Remote`].
    pub fn get_on(&self, i: usize, path: &str) -> Result<Value> {
        Ok(self.call(Some(i), path, None)?.1)
    }

    /// `POST path` on replica `i` only (self-tests), with retries.
    ///
    /// # Errors
    /// [`EngineError::Remote`].
    pub fn post_on(&self, i: usize, path: &str, body: &Value) -> Result<Value> {
        Ok(self.call(Some(i), path, Some(body))?.1)
    }

    /// The response of the replica that answered, with its URL.
    fn call(
        &self,
        only: Option<usize>,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(String, Value)> {
        let mut last = String::new();
        let mut url = String::new();
        for attempt in 0..=self.spec.retries {
            if attempt > 0 {
                let ms = (100u64 << (attempt - 1).min(5)).min(2000);
                std::thread::sleep(Duration::from_millis(ms));
            }
            let i = only.unwrap_or_else(|| self.pick());
            url = self.spec.urls[i].clone();
            self.outstanding[i].fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(&self.outstanding[i]);
            let result = self.once(&url, path, body);
            drop(guard);
            match result {
                Ok(v) => {
                    self.down[i].store(false, Ordering::Relaxed);
                    return Ok((url, v));
                }
                Err(Failure::Fatal(m)) => return Err(self.error(&url, m)),
                Err(Failure::Transient(m)) => {
                    tracing::warn!(entry = %self.spec.name, %url, attempt, error = %m, "retrying");
                    last = m;
                }
            }
        }
        Err(self.error(
            &url,
            format!("{last} (after {} attempts)", self.spec.retries + 1),
        ))
    }

    fn once(&self, base: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let full = format!("{base}{path}");
        let mut req = match body {
            Some(_) => self.agent.post(&full),
            None => self.agent.get(&full),
        };
        if let Some(key) = &self.spec.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let index = self.spec.urls.iter().position(|u| u == base);
        match res {
            Ok(r) => {
                let text = read_limited(r).map_err(|m| Failure::Fatal(format!("{path}: {m}")))?;
                serde_json::from_str(&text)
                    .map_err(|e| Failure::Fatal(format!("{path}: the response is not JSON ({e})")))
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = read_limited(r).unwrap_or_default();
                let m = format!("{path}: HTTP {code}: {}", error_message(&text));
                if code == 429 || code == 503 {
                    Err(Failure::Transient(m))
                } else {
                    Err(Failure::Fatal(m))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                if let Some(i) = index {
                    self.down[i].store(true, Ordering::Relaxed);
                }
                Err(Failure::Transient(format!("{path}: {t}")))
            }
        }
    }
}

fn read_limited(r: ureq::Response) -> Result<String, String> {
    let mut buf = Vec::new();
    r.into_reader()
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the response: {e}"))?;
    if buf.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(format!(
            "the response exceeds {} MB",
            MAX_RESPONSE_BYTES >> 20
        ));
    }
    String::from_utf8(buf).map_err(|_| "the response is not UTF-8".into())
}

/// The server's error message, from `{"error": {"message": ...}}`, `{"message": ...}` or the text.
fn error_message(text: &str) -> String {
    let v: Option<Value> = serde_json::from_str(text).ok();
    let m = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let m = m.unwrap_or_else(|| text.trim().to_string());
    let m: String = m.split_whitespace().collect::<Vec<_>>().join(" ");
    if m.chars().count() > 300 {
        m.chars().take(300).collect::<String>() + "…"
    } else {
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models_file::RemoteKind;

    fn http(urls: usize) -> Http {
        Http::new(RemoteSpec {
            name: "r".into(),
            kind: RemoteKind::Vllm,
            urls: (0..urls)
                .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
                .collect(),
            model: Some("m".into()),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_concurrency: 4,
            retries: 0,
            processed_logprobs: false,
        })
    }

    #[test]
    fn the_replica_with_fewest_requests_in_flight_is_picked_and_down_ones_are_skipped() {
        let h = http(3);
        h.outstanding[0].store(2, Ordering::Relaxed);
        h.outstanding[1].store(1, Ordering::Relaxed);
        h.outstanding[2].store(3, Ordering::Relaxed);
        assert_eq!(h.pick(), 1);
        h.mark_down(1);
        assert_eq!(h.pick(), 0);
        h.mark_down(0);
        assert_eq!(h.pick(), 2);
        // All down: the least loaded of all is tried again.
        h.mark_down(2);
        assert_eq!(h.pick(), 1);
        let _guard = InFlight(&h.outstanding[1]);
        h.outstanding[1].fetch_add(5, Ordering::Relaxed);
        assert_eq!(h.pick(), 0);
    }

    #[test]
    fn server_error_messages_are_one_short_line() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad\n token"}}"#),
            "bad token"
        );
        assert_eq!(error_message(r#"{"detail":"x"}"#), r#"{"detail":"x"}"#);
        assert_eq!(error_message(&"y".repeat(400)).chars().count(), 301);
    }
}
