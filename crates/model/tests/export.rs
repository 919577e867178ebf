//! `model export`: a tiny random GGUF model exported to a Hugging Face folder and to an all-F32
//! GGUF file must load back as the same network (last-position logits and teacher-forced
//! log-probabilities within 1e-5 of the GGUF-loaded model), with the same tokenizer and chat
//! template; the HF weights must be the fixture's own HF-order weights (so the q/k un-permutation
//! happened), the F32 GGUF must hold only F32 tensors, bit-equal to the dequantised source, with
//! the source's metadata. Destinations are written atomically and never overwritten by accident.
//! Last, the default model's exported tokenizer.json must equal the reference tokenizer.json.

use llm_auction_model::CpuBackend;
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::chat::Message;
use llm_auction_model::export::{
    ExportFormat, ExportOptions, GGUF_F32_FILE, HF_FILES, export, export_gguf_f32, export_hf,
    hf_tokenizer,
};
use llm_auction_model::fetch::ensure_default_model;
use llm_auction_model::generation::ScoreRequest;
use llm_auction_model::gguf::writer::GgufWriter;
use llm_auction_model::gguf::{GgmlType, GgufFile, MetaValue};
use llm_auction_model::logits::logits_to_host;
use llm_auction_model::model::{Model, gguf_tokenizer_spec};
use llm_auction_model::standalone::{StandaloneConfig, score_with_top};
use llm_auction_model::testing::*;
use llm_auction_model::tokenizer::TextTokenizer;
use llm_auction_model::weights::{SafetensorsSource, WeightSource};
use serde_json::Value;
use std::path::{Path, PathBuf};

type B = CpuBackend;

const PROMPTS: [&str; 4] = [
    "the cat sat on the mat",
    "In 2024, 12345 + 678 = 13023 and 3.14159",
    "héllo wörld ✓ 日本語 🦀 — ok",
    "<|im_start|>user\nhow are you?<|im_end|>\n<|im_start|>assistant\n",
];

const CONTINUATIONS: [&str; 4] = [" and then 42 more", " the end", "!!", "fine, 99 times"];

const TOKENIZER_STRINGS: [&str; 8] = [
    "",
    "Hello world",
    "  leading spaces and\ttabs\nnewlines",
    "digits 0123456789 and 1,000,000.50",
    "unicode: héllo wörld ✓ 日本語 🦀 Ω≈ç√",
    "<|im_start|>system\nYou are<|im_end|><|pad|>",
    "mixed123abc456 x2y3",
    "emoji 👩‍👩‍👧 and combining é",
];

fn no_progress() -> impl FnMut(&str, usize, usize) {
    |_, _, _| {}
}

fn load(path: &Path) -> Model<B> {
    Model::<B>::load(path, &Default::default(), &mut no_progress())
        .unwrap_or_else(|e| panic!("{} loads: {e}", path.display()))
}

fn last_logits(model: &Model<B>, toks: &[u32]) -> Vec<f32> {
    let mut cache = model.llama.new_cache(64).unwrap();
    let b = ForwardBatch {
        tokens: toks.to_vec(),
        positions: (0..toks.len() as u32).collect(),
        seq_starts: vec![0, toks.len()],
        block_size: 8,
        block_tables: vec![(0..8).collect()],
        logits_rows: vec![toks.len() - 1],
    };
    logits_to_host(model.llama.forward(&b, &mut cache).unwrap()).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest |Δ| of last-position logits and of teacher-forced log-probabilities over [`PROMPTS`],
/// checking on the way that both models tokenize every prompt and continuation the same and agree
/// on the most likely next tokens.
fn compare(a: &Model<B>, b: &Model<B>) -> (f32, f32) {
    let (mut d_logits, mut d_lp) = (0.0f32, 0.0f32);
    for (p, c) in PROMPTS.iter().zip(CONTINUATIONS) {
        let prompt = a.encode(p).unwrap();
        let cont = a.encode(c).unwrap();
        assert_eq!(b.encode(p).unwrap(), prompt, "{p:?}");
        assert_eq!(b.encode(c).unwrap(), cont, "{c:?}");
        d_logits = d_logits.max(max_abs(&last_logits(a, &prompt), &last_logits(b, &prompt)));
        let req = ScoreRequest {
            prompt,
            continuation: cont,
        };
        let cfg = StandaloneConfig::default();
        let (ra, top_a) = score_with_top(&a.llama, &req, 3, &cfg).unwrap();
        let (rb, top_b) = score_with_top(&b.llama, &req, 3, &cfg).unwrap();
        d_lp = d_lp.max(max_abs(&ra.token_logprobs, &rb.token_logprobs));
        let ids = |r: &[(u32, f32)]| r.iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(ids(&top_a), ids(&top_b), "{p:?}");
    }
    (d_logits, d_lp)
}

fn same_tokenizer_and_template(a: &Model<B>, b: &Model<B>) {
    for s in TOKENIZER_STRINGS {
        let ids = a.encode(s).unwrap();
        assert_eq!(b.encode(s).unwrap(), ids, "{s:?}");
        assert_eq!(b.decode(&ids).unwrap(), a.decode(&ids).unwrap(), "{s:?}");
    }
    assert_eq!(
        a.chat_turn("You are a helpful assistant.", "What is 2+2?")
            .unwrap(),
        b.chat_turn("You are a helpful assistant.", "What is 2+2?")
            .unwrap()
    );
    let conv = [
        Message::new("system", "Be brief."),
        Message::new("user", "héllo 123"),
        Message::new("assistant", "Hi!"),
        Message::new("user", "again"),
    ];
    for gen_prompt in [false, true] {
        assert_eq!(
            a.chat_prompt(&conv, gen_prompt).unwrap(),
            b.chat_prompt(&conv, gen_prompt).unwrap()
        );
    }
    assert_eq!(a.eos_ids(), b.eos_ids());
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tiny_gguf(dir: &Path, seed: u64, lm_head: bool) -> (PathBuf, Weights) {
    let cfg = tiny_config();
    let w = random_weights(&cfg, seed, lm_head);
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &cfg, &w);
    (path, w)
}

/// Names in `dir` that look like leftovers of an export (temporary or backup folders).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".export-"))
        .collect()
}

#[test]
fn hf_export_of_a_gguf_model_is_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let (src, w) = tiny_gguf(dir.path(), 11, false);
    let out = dir.path().join("hf");
    let mut calls = 0;
    let report = export_hf(&src, &out, false, &mut |_, _, _| calls += 1).unwrap();
    assert_eq!(report.dir, out);
    assert_eq!(report.model_path, out);
    assert_eq!(report.files, HF_FILES);
    assert_eq!(report.tensors, 2 + 9 * 2);
    assert!(calls > report.tensors, "progress once per tensor");
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, HF_FILES, "exactly the listed files");
    assert!(leftovers(dir.path()).is_empty());
    let total: u64 = HF_FILES
        .iter()
        .map(|f| std::fs::metadata(out.join(f)).unwrap().len())
        .sum();
    assert_eq!(report.bytes, total);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        for f in HF_FILES {
            assert_eq!(
                mode(f),
                mode("config.json"),
                "{f} has the usual permissions"
            );
        }
    }

    // The weights are the fixture's own HF-order weights (as the GGUF stores them after
    // quantisation), so the q/k rows were un-permuted; every tensor is F32, no lm_head (tied).
    let expected = quantised_view(&w);
    let st_bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut want: Vec<String> = expected.keys().cloned().collect();
    want.sort();
    assert_eq!(names, want);
    for (_, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
    }
    let source = SafetensorsSource::open(&out).unwrap();
    for (name, t) in &expected {
        let got = source.tensor(name).unwrap();
        assert_eq!(got.shape, t.shape, "{name}");
        assert!(
            got.data == t.data,
            "{name}: values differ from the HF-order weights"
        );
    }
    assert!(!source.contains("lm_head.weight"));

    // config.json and friends
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["torch_dtype"], "float32");
    assert_eq!(c["hidden_act"], "silu");
    assert_eq!(c["tie_word_embeddings"], true);
    let cfg = tiny_config();
    for (key, v) in [
        ("hidden_size", cfg.hidden_size),
        ("intermediate_size", cfg.intermediate_size),
        ("num_hidden_layers", cfg.num_layers),
        ("num_attention_heads", cfg.num_heads),
        ("num_key_value_heads", cfg.num_kv_heads),
        ("head_dim", cfg.head_dim),
        ("max_position_embeddings", cfg.max_position),
        ("vocab_size", cfg.vocab_size),
        ("bos_token_id", 1),
        ("eos_token_id", 2),
    ] {
        assert_eq!(c[key].as_u64(), Some(v as u64), "{key}");
    }
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-5));
    assert_eq!(c["rope_theta"].as_f64(), Some(10_000.0));
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], CHAT_TEMPLATE);
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["add_bos_token"], false);
    let g = read_json(&out.join("generation_config.json"));
    assert_eq!(
        (g["bos_token_id"].as_u64(), g["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    let tj = read_json(&out.join("tokenizer.json"));
    assert_eq!(
        tj["pre_tokenizer"]["pretokenizers"][0],
        serde_json::json!({"type": "Digits", "individual_digits": true})
    );

    // The exported folder is the same model as the GGUF file.
    let a = load(&src);
    let b = load(&out);
    assert_eq!(a.config(), b.config());
    let (d_logits, d_lp) = compare(&a, &b);
    eprintln!("hf export vs gguf: max |Δ logits| = {d_logits:e}, max |Δ log-prob| = {d_lp:e}");
    assert!(d_logits <= 1e-5, "logits differ by {d_logits}");
    assert!(d_lp <= 1e-5, "log-probs differ by {d_lp}");
    same_tokenizer_and_template(&a, &b);
}

#[test]
fn hf_export_keeps_an_untied_lm_head() {
    let dir = tempfile::tempdir().unwrap();
    let (src, w) = tiny_gguf(dir.path(), 12, true);
    let out = dir.path().join("hf");
    let report = export(&src, &out, &ExportOptions::default(), &mut no_progress()).unwrap();
    assert_eq!(report.tensors, 2 + 9 * 2 + 1);
    assert_eq!(
        read_json(&out.join("config.json"))["tie_word_embeddings"],
        false
    );
    let got = SafetensorsSource::open(&out)
        .unwrap()
        .tensor("lm_head.weight")
        .unwrap();
    assert!(got.data == quantised_view(&w)["lm_head.weight"].data);
    let (a, b) = (load(&src), load(&out));
    assert!(!b.config().tie_word_embeddings);
    let (d_logits, d_lp) = compare(&a, &b);
    assert!(d_logits <= 1e-5 && d_lp <= 1e-5, "{d_logits} {d_lp}");
}

#[test]
fn hf_export_of_an_hf_folder_is_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 13, false);
    let src = dir.path().join("src");
    write_hf_folder(&src, &cfg, &w, StDtype::BF16, true);
    let out = dir.path().join("out");
    let report = export_hf(&src, &out, false, &mut no_progress()).unwrap();
    assert_eq!(report.files, HF_FILES);
    let (a, b) = (load(&src), load(&out));
    assert_eq!(a.config(), b.config());
    let (d_logits, d_lp) = compare(&a, &b);
    eprintln!("hf export vs hf (bf16, sharded): {d_logits:e} {d_lp:e}");
    assert!(d_logits <= 1e-5 && d_lp <= 1e-5, "{d_logits} {d_lp}");
    same_tokenizer_and_template(&a, &b);
    // Exporting the export gives the same bytes.
    let again = dir.path().join("again");
    export_hf(&out, &again, false, &mut no_progress()).unwrap();
    for f in HF_FILES {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn gguf_f32_export_is_the_same_model_with_only_f32_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = tiny_gguf(dir.path(), 14, false);
    let out = dir.path().join("f32");
    let opts = ExportOptions {
        format: ExportFormat::GgufF32,
        force: false,
    };
    let report = export(&src, &out, &opts, &mut no_progress()).unwrap();
    assert_eq!(report.model_path, out.join(GGUF_F32_FILE));
    assert_eq!(report.files, [GGUF_F32_FILE]);
    assert!(leftovers(dir.path()).is_empty());

    let s = GgufFile::open(&src).unwrap();
    let f = GgufFile::open(&report.model_path).unwrap();
    assert_eq!(report.tensors, s.tensors().len());
    // Metadata: every source key with the same value, plus general.file_type = ALL_F32.
    let mut want = s.metadata().clone();
    want.insert("general.file_type".into(), MetaValue::U32(0));
    assert_eq!(f.metadata(), &want);
    // Tensors: same names, dims and order, F32, bit-equal to the dequantised source (so still in
    // the GGUF row order llama.cpp expects).
    assert_eq!(f.tensors().len(), s.tensors().len());
    let mut quantised = 0;
    for (ts, tf) in s.tensors().iter().zip(f.tensors()) {
        assert_eq!((&tf.name, &tf.dims), (&ts.name, &ts.dims));
        assert_eq!(tf.ggml_type, GgmlType::F32, "{}", tf.name);
        quantised += usize::from(ts.ggml_type != GgmlType::F32);
        let (a, b) = (
            s.tensor_f32(&ts.name).unwrap(),
            f.tensor_f32(&tf.name).unwrap(),
        );
        assert!(
            a.iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits())),
            "{}",
            ts.name
        );
    }
    assert!(quantised > 10, "the source really was quantised");

    let (a, b) = (load(&src), load(&report.model_path));
    assert_eq!(a.config(), b.config());
    let (d_logits, d_lp) = compare(&a, &b);
    eprintln!("gguf-f32 export vs gguf: {d_logits:e} {d_lp:e}");
    assert!(d_logits <= 1e-5 && d_lp <= 1e-5, "{d_logits} {d_lp}");
    same_tokenizer_and_template(&a, &b);

    // Exporting the F32 file again gives the same bytes.
    let again = dir.path().join("again");
    export_gguf_f32(&report.model_path, &again, false, &mut no_progress()).unwrap();
    assert_eq!(
        std::fs::read(&report.model_path).unwrap(),
        std::fs::read(again.join(GGUF_F32_FILE)).unwrap()
    );
}

#[test]
fn destinations_are_written_atomically_and_never_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = tiny_gguf(dir.path(), 15, false);
    let out = dir.path().join("out");
    export_hf(&src, &out, false, &mut no_progress()).unwrap();
    let before = std::fs::read(out.join("config.json")).unwrap();

    // A second export without force fails, names the folder, and leaves it alone.
    let e = export_hf(&src, &out, false, &mut no_progress()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&out.display().to_string()), "{msg}");
    assert!(msg.contains("not empty"), "{msg}");
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), before);
    let opts = ExportOptions {
        format: ExportFormat::GgufF32,
        force: false,
    };
    assert!(export(&src, &out, &opts, &mut no_progress()).is_err());

    // force replaces a previous export (of either format) ...
    let forced = ExportOptions {
        format: ExportFormat::GgufF32,
        force: true,
    };
    export(&src, &out, &forced, &mut no_progress()).unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [GGUF_F32_FILE]);
    export_hf(&src, &out, true, &mut no_progress()).unwrap();
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), before);
    assert!(leftovers(dir.path()).is_empty());

    // ... but never a folder holding anything else.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let msg = export_hf(&src, &out, true, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("notes.txt") && msg.contains(&out.display().to_string()),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );

    // An existing empty folder is fine; a file is not a folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    export_hf(&src, &empty, false, &mut no_progress()).unwrap();
    assert!(empty.join("model.safetensors").is_file());
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let msg = export_hf(&src, &file, true, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not a folder") && msg.contains("a-file"),
        "{msg}"
    );

    // Missing parents are created.
    let deep = dir.path().join("a/b/c");
    export_hf(&src, &deep, false, &mut no_progress()).unwrap();
    assert!(deep.join("tokenizer.json").is_file());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn bad_sources_are_errors_that_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let hf = dir.path().join("hf");
    write_hf_folder(
        &hf,
        &cfg,
        &random_weights(&cfg, 16, false),
        StDtype::F32,
        false,
    );
    let out = dir.path().join("out");
    let f32_opts = ExportOptions {
        format: ExportFormat::GgufF32,
        force: false,
    };

    // gguf-f32 needs a GGUF source.
    let msg = export(&hf, &out, &f32_opts, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&hf.display().to_string()) && msg.contains("GGUF"),
        "{msg}"
    );
    assert!(!out.exists());

    // Missing, junk and truncated sources.
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00truncated").unwrap();
    let text = dir.path().join("text.bin");
    std::fs::write(&text, b"hello").unwrap();
    for src in [dir.path().join("missing.gguf"), junk, text] {
        for format in [ExportFormat::Hf, ExportFormat::GgufF32] {
            let opts = ExportOptions {
                format,
                force: false,
            };
            assert!(
                export(&src, &out, &opts, &mut no_progress()).is_err(),
                "{src:?}"
            );
        }
    }

    // A tensor of a type that cannot be dequantised: named, checked before writing.
    let (tiny, _) = tiny_gguf(dir.path(), 17, false);
    let s = GgufFile::open(&tiny).unwrap();
    let mut g = GgufWriter::new();
    for (k, v) in s.metadata() {
        g.add_meta(k, v.clone());
    }
    for t in s.tensors() {
        g.add_raw_tensor(
            &t.name,
            &t.dims,
            t.ggml_type,
            s.tensor_bytes(&t.name).unwrap().to_vec(),
        )
        .unwrap();
    }
    g.add_raw_tensor("extra.weight", &[256], GgmlType::from_id(12), vec![0; 144])
        .unwrap();
    let odd = dir.path().join("odd.gguf");
    g.write(&odd).unwrap();
    let msg = export(&odd, &out, &f32_opts, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("extra.weight") && msg.contains("Q4_K"),
        "{msg}"
    );

    // A weight of the wrong shape (HF folder whose config says more layers than it has).
    let short = dir.path().join("short");
    let mut more = cfg.clone();
    more.num_layers = 3;
    write_hf_folder(
        &short,
        &more,
        &random_weights(&cfg, 18, false),
        StDtype::F32,
        false,
    );
    let msg = export_hf(&short, &out, false, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.layers.2"), "{msg}");
    let mut wide = cfg.clone();
    wide.hidden_size = 64;
    wide.intermediate_size = 128;
    let bad = dir.path().join("bad-shape");
    write_hf_folder(
        &bad,
        &cfg,
        &random_weights(&wide, 19, false),
        StDtype::F32,
        false,
    );
    let msg = export_hf(&bad, &out, false, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("shape"), "{msg}");

    // An untied model without its output projection (loading refuses it too).
    let untied = dir.path().join("untied");
    let mut no_tie = cfg.clone();
    no_tie.tie_word_embeddings = false;
    write_hf_folder(
        &untied,
        &no_tie,
        &random_weights(&cfg, 20, false),
        StDtype::F32,
        false,
    );
    let msg = export_hf(&untied, &out, false, &mut no_progress())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lm_head.weight"), "{msg}");

    assert!(!out.exists(), "no failed export created the destination");
    assert!(leftovers(dir.path()).is_empty());
}

/// The default model's tokenizer, exported, is the reference tokenizer.json of SmolLM2
/// (`tests/fixtures/tokenizer.digits-fixed.json`) and encodes every golden string to the golden ids.
#[test]
fn default_model_tokenizer_json_equals_the_reference() {
    let path = ensure_default_model(&mut |m| eprintln!("{m}")).expect("the default model");
    let file = GgufFile::open(&path).unwrap();
    let tok = TextTokenizer::from_gguf(gguf_tokenizer_spec(&file).unwrap()).unwrap();
    let text = hf_tokenizer(&tok).to_string(false).unwrap();
    let ours: Value = serde_json::from_str(&text).unwrap();
    let reference = read_json(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer.digits-fixed.json"
    )));
    for key in reference.as_object().unwrap().keys() {
        assert_eq!(ours[key], reference[key], "tokenizer.json field {key}");
    }
    assert_eq!(ours, reference);

    let reloaded: tokenizers::Tokenizer = text.parse().unwrap();
    let golden = read_json(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smollm2_golden_public.json"
    )));
    let mut n = 0;
    for key in ["tokenizer_tests", "tokenizer_tests_pretokenizer_sensitive"] {
        for case in golden[key].as_array().unwrap() {
            let s = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            // With add_special_tokens, as transformers and vLLM encode: nothing is added.
            assert_eq!(reloaded.encode(s, true).unwrap().get_ids(), want, "{s:?}");
            n += 1;
        }
    }
    assert!(n >= 10);
}
