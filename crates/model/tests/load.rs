//! Loading tiny models from disk: Hugging Face folders (F32/F16/BF16, single file and sharded) and
//! GGUF files (Q8_0/Q4_0/Q4_1/F32 tensors, permuted q/k rows, tokenizer and template in the
//! metadata) must give the same network as the weights they were written from; malformed inputs must
//! give typed errors naming what is wrong.

use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::chat::Message;
use llm_auction_model::config::LlamaConfig;
use llm_auction_model::for_each_backend;
use llm_auction_model::logits::logits_to_host;
use llm_auction_model::model::Model;
use llm_auction_model::testing::*;
use llm_auction_model::{Llama, ModelError};

for_each_backend! {

    fn logits_of(model: &Llama<B>, toks: &[u32]) -> Vec<f32> {
        let mut cache = model.new_cache(32).unwrap();
        let b = ForwardBatch {
            tokens: toks.to_vec(),
            positions: (0..toks.len() as u32).collect(),
            seq_starts: vec![0, toks.len()],
            block_size: 8,
            block_tables: vec![vec![0, 1, 2, 3]],
            logits_rows: (0..toks.len()).collect(),
        };
        logits_to_host(model.forward(&b, &mut cache).unwrap()).unwrap()
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn no_progress() -> impl FnMut(&str, usize, usize) {
        |_, _, _| {}
    }

    /// The network of `cfg` with the in-memory weights `w`.
    fn load_weights(cfg: LlamaConfig, w: Weights) -> Result<Llama<B>, ModelError> {
        Llama::<B>::load(cfg, &MapSource(w), &Default::default(), &mut no_progress())
    }

    const TOKS: [u32; 9] = [1, 50, 120, 7, 299, 33, 8, 200, 2];

    #[test]
    fn hf_folder_loads_every_dtype_and_sharding() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 7, false);
        let direct = load_weights(cfg.clone(), w.clone())
        .unwrap();
        let expected = logits_of(&direct, &TOKS);
        for (dt, shards, tol) in [
            (StDtype::F32, false, 1e-6),
            (StDtype::F32, true, 1e-6),
            (StDtype::F16, false, 5e-2),
            (StDtype::BF16, true, 2e-1),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write_hf_folder(dir.path(), &cfg, &w, dt, shards);
            let mut seen = 0;
            let model =
                Model::<B>::load(dir.path(), &Default::default(), &mut |_, _, _| seen += 1).unwrap();
            assert!(seen > 10, "progress callback is called per tensor");
            let got = logits_of(&model.llama, &TOKS);
            let d = max_abs(&got, &expected);
            assert!(d <= tol, "max |Δ| = {d} for tolerance {tol}");
            assert_eq!(model.eos_ids(), &[2]);
            let ids = model.encode("the cat sat on the mat").unwrap();
            assert_eq!(model.decode(&ids).unwrap(), "the cat sat on the mat");
            let prompt = model
                .chat_turn("You are a helpful assistant.", "Hi")
                .unwrap();
            assert_eq!(
                prompt,
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            );
        }
    }

    #[test]
    fn gguf_loads_quantised_weights_and_undoes_the_rope_permutation() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 8, false);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_gguf(&path, &cfg, &w);
        let model = Model::<B>::load(&path, &Default::default(), &mut no_progress()).unwrap();
        assert_eq!(model.config(), &cfg);
        // The network equals one built from the dequantised weights in HF layout.
        let direct = load_weights(cfg.clone(), quantised_view(&w))
        .unwrap();
        let d = max_abs(&logits_of(&model.llama, &TOKS), &logits_of(&direct, &TOKS));
        assert!(d < 1e-5, "GGUF vs dequantised weights: max |Δ| = {d}");
        // ... and differs from one that skipped the un-permutation (the permutation matters).
        let mut wrong = quantised_view(&w);
        for l in 0..cfg.num_layers {
            let name = format!("model.layers.{l}.self_attn.q_proj.weight");
            let t = wrong.get_mut(&name).unwrap();
            t.data = llm_auction_model::weights::permute_rope_rows(
                &t.data,
                cfg.num_heads,
                cfg.head_dim,
                t.shape[1],
            )
            .unwrap();
        }
        let skipped = load_weights(cfg.clone(), wrong)
        .unwrap();
        assert!(max_abs(&logits_of(&model.llama, &TOKS), &logits_of(&skipped, &TOKS)) > 1e-3);
        // Tokenizer and chat template come from the metadata.
        let ids = model.encode("<|im_start|>user 12 the<|im_end|>").unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(*ids.last().unwrap(), 2);
        let p = model
            .chat_prompt(
                &[Message {
                    role: "user".into(),
                    content: "x".into(),
                }],
                true,
            )
            .unwrap();
        assert_eq!(p, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn missing_and_misshapen_tensors_are_named() {
        let cfg = tiny_config();
        let mut w = random_weights(&cfg, 9, false);
        w.remove("model.layers.1.mlp.up_proj.weight");
        let e = load_weights(cfg.clone(), w)
        .unwrap_err();
        assert!(
            matches!(&e, ModelError::MissingTensor { name } if name == "model.layers.1.mlp.up_proj.weight"),
            "{e}"
        );

        let mut w = random_weights(&cfg, 9, false);
        let t = w.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        t.shape = vec![32, 16];
        let e = load_weights(cfg.clone(), w)
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("k_proj") && msg.contains("[32, 16]") && msg.contains("[16, 32]"),
            "{msg}"
        );

        // Untied config without lm_head.
        let mut untied = cfg.clone();
        untied.tie_word_embeddings = false;
        let e = load_weights(untied, random_weights(&cfg, 9, false))
        .unwrap_err();
        assert!(e.to_string().contains("lm_head"));
    }

    #[test]
    fn truncated_or_corrupt_files_are_errors() {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 10, false);
        // safetensors: truncate the file at several points.
        let dir = tempfile::tempdir().unwrap();
        write_hf_folder(dir.path(), &cfg, &w, StDtype::F32, false);
        let st = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&st).unwrap();
        for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&st, &bytes[..cut]).unwrap();
            let e = Model::<B>::load(dir.path(), &Default::default(), &mut no_progress());
            assert!(
                matches!(
                    e,
                    Err(ModelError::Safetensors { .. }) | Err(ModelError::Io { .. })
                ),
                "cut at {cut}"
            );
        }
        // GGUF: truncations and a few byte flips must error (or load), never panic.
        let path = dir.path().join("tiny.gguf");
        write_gguf(&path, &cfg, &w);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [
            0,
            3,
            4,
            20,
            200,
            bytes.len() / 3,
            bytes.len() - 10,
            bytes.len() - 1,
        ] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(
                Model::<B>::load(&path, &Default::default(), &mut no_progress()).is_err(),
                "cut at {cut}"
            );
        }
        // Not a model at all.
        let junk = dir.path().join("junk.bin");
        std::fs::write(&junk, b"hello world").unwrap();
        assert!(matches!(
            Model::<B>::load(&junk, &Default::default(), &mut no_progress()),
            Err(ModelError::ModelPath { .. })
        ));
        let e = Model::<B>::load(
            &dir.path().join("nope"),
            &Default::default(),
            &mut no_progress(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("no such file"));
        let empty = tempfile::tempdir().unwrap();
        let e = Model::<B>::load(empty.path(), &Default::default(), &mut no_progress())
            .err()
            .unwrap();
        assert!(e.to_string().contains("config.json"));
    }
}
