//! Writes the seed corpora of the fuzz targets into `corpus/<target>/`: small valid inputs made by
//! the model crate's own test fixtures (the tiny random Llama as GGUF and as a Hugging Face
//! folder) and worked examples of the mechanism JSON filters. Run from `fuzz/`:
//! `cargo run --example make_corpus`.

use llm_auction_fuzz::{HF_FILES, pack};
use llm_auction_model::config::LlamaConfig;
use llm_auction_model::testing::{
    StDtype, random_weights, tiny_config, write_gguf, write_hf_folder,
};
use std::path::Path;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed");
    println!("corpus/{target}/{name}: {} bytes", bytes.len());
}

fn main() {
    // The tests' tiny model with one layer keeps the seeds (and each execution) small; its widths
    // are multiples of the quantisation block (32), as GGUF needs.
    let cfg = LlamaConfig {
        num_layers: 1,
        ..tiny_config()
    };
    let w = random_weights(&cfg, 11, false);
    let tmp = tempfile::tempdir().expect("temporary folder");

    let gguf = tmp.path().join("tiny.gguf");
    write_gguf(&gguf, &cfg, &w);
    let bytes = std::fs::read(&gguf).expect("gguf");
    put("gguf_bytes", "tiny.gguf", &bytes);
    put("model_gguf", "tiny.gguf", &bytes);

    let hf = tmp.path().join("hf");
    std::fs::create_dir_all(&hf).expect("folder");
    write_hf_folder(&hf, &cfg, &w, StDtype::F32, false);
    let sections = HF_FILES.map(|f| std::fs::read(hf.join(f)).unwrap_or_default());
    put("model_hf", "tiny-f32", &pack(&sections));
    let bf16 = tmp.path().join("hf16");
    std::fs::create_dir_all(&bf16).expect("folder");
    write_hf_folder(&bf16, &cfg, &w, StDtype::BF16, false);
    let sections = HF_FILES.map(|f| std::fs::read(bf16.join(f)).unwrap_or_default());
    put("model_hf", "tiny-bf16", &pack(&sections));

    for (name, text) in [
        ("mosaic-alg1", r#"{"rewards":[[1,2,3],[0,0,0]],"tau":1}"#),
        (
            "mosaic-alg2",
            r#"{"rewards":[[1,-2,0.5]],"tau":0.5,"log_ref":[-10,-12,-11],"log_gen":[-9,-15,-11],"offset":false,"seed":7}"#,
        ),
        (
            "token-linear",
            r#"{"distributions":[[0.2,0.8],[0.6,0.4]],"bids":[1,3],"aggregation":"linear","payment":"second_price","seed":5}"#,
        ),
        (
            "token-loglinear",
            r#"{"distributions":[[0.2,0.3,0.5],[0.6,0.3,0.1]],"bids":[2,1],"aggregation":"log_linear","payment":"first_price","seed":1}"#,
        ),
    ] {
        put("mechanism_json", name, text.as_bytes());
    }

    // Answers shaped as the servers send them (docs/remote.md), for the response parsers.
    let row: serde_json::Map<String, serde_json::Value> = (0..64)
        .map(|t| (format!("token_id:{t}"), serde_json::json!(-(64f64.ln()))))
        .collect();
    let prompt_lp = |full: &[u32]| -> Vec<serde_json::Value> {
        full.iter()
            .enumerate()
            .map(|(k, t)| {
                if k == 0 {
                    serde_json::Value::Null
                } else {
                    serde_json::json!({ t.to_string(): {"logprob": -1.5, "rank": 3} })
                }
            })
            .collect()
    };
    for (name, v) in [
        (
            "vllm-sample",
            serde_json::json!({"choices": [{"index": 0, "token_ids": [5, 9, 2], "finish_reason": "stop",
                "logprobs": {"token_logprobs": [-0.5, -1.25, -0.125]}}]}),
        ),
        (
            "vllm-scores",
            serde_json::json!({"choices": [
                {"index": 0, "prompt_logprobs": prompt_lp(&[1, 2, 3, 4, 5])},
                {"index": 1, "prompt_logprobs": prompt_lp(&[7, 8])}]}),
        ),
        (
            "vllm-row",
            serde_json::json!({"choices": [{"logprobs": {"top_logprobs": [row]}}]}),
        ),
        (
            "llama-sample",
            serde_json::json!({"completion_probabilities": [{"id": 5, "prob": 0.5}, {"id": 2, "prob": 0.25}],
                "stop_type": "eos"}),
        ),
        (
            "llama-forced",
            serde_json::json!({"completion_probabilities": [{"id": 5, "logprob": -2.5}]}),
        ),
        (
            "llama-row",
            serde_json::json!({"completion_probabilities": [{"top_probs":
                (0..64).map(|t| serde_json::json!({"id": t, "prob": 1.0 / 64.0})).collect::<Vec<_>>()}]}),
        ),
    ] {
        put("remote_responses", name, v.to_string().as_bytes());
    }
}
