//! The remote backends' response parsers (vLLM's `/v1/completions`, llama.cpp's `/completion`) on
//! any JSON a server might send: a sample, a batch of scorings, a forced token, a full next-token
//! row. Every malformed answer is an error message, never a panic; what parses is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_auction_engine::remote::{llama_server, vllm};
use llm_auction_engine::request::GenerateRequest;
use llm_auction_model::sampling::SamplingParams;

const VOCAB: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let g = GenerateRequest {
        prompt: vec![1, 2, 3],
        params: SamplingParams::default(),
        max_new_tokens: 8,
        stop: vec![2],
        seed: 0,
    };
    for processed in [false, true] {
        if let Ok(s) = vllm::parse_generate(&v, &g, VOCAB, processed) {
            assert!(s.tokens.len() <= g.max_new_tokens);
            assert!(s.tokens.iter().all(|&t| (t as usize) < VOCAB));
        }
    }
    let items = [(vec![1, 2], vec![3, 4, 5]), (vec![7], vec![8])];
    if let Ok(scored) = vllm::parse_score(&v, &items, VOCAB) {
        assert_eq!(scored.len(), items.len());
        for (s, (_, c)) in scored.iter().zip(&items) {
            assert_eq!(s.token_logprobs.len(), c.len());
            assert!(s.token_logprobs.iter().all(|x| x.is_finite() && *x <= 0.0));
        }
    }
    for row in [
        vllm::parse_next_row(&v, VOCAB),
        llama_server::parse_next_row(&v, VOCAB),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(row.len(), VOCAB);
        assert!(row.iter().all(|x| !x.is_nan() && *x <= 0.0));
    }
    if let Ok(s) = llama_server::parse_generate(&v, &g, VOCAB) {
        assert!(s.tokens.len() <= g.max_new_tokens);
    }
    if let Ok(lp) = llama_server::parse_forced(&v, 5, VOCAB) {
        assert!(lp.is_finite() && lp <= 0.0);
    }
});
