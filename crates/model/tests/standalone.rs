//! Standalone scoring and generation on a tiny model: results of several requests equal those of
//! each alone, prefill chunking changes nothing, they agree with the forward pass, are reproducible
//! under a seed, and bad requests are typed errors.

use llm_auction_model::for_each_backend;
use llm_auction_model::generation::{FinishReason, GenerateRequest, ScoreRequest};
use llm_auction_model::sampling::SamplingParams;
use llm_auction_model::standalone::{StandaloneConfig, generate, score, score_with_top};
use llm_auction_model::testing::*;
use llm_auction_model::{Llama, ModelError};

for_each_backend! {

    fn model() -> (Llama<B>, Weights) {
        let cfg = tiny_config();
        let w = random_weights(&cfg, 21, false);
        (
            Llama::<B>::load(
                cfg,
                &MapSource(w.clone()),
                &Default::default(),
                &mut |_, _, _| {},
            )
            .unwrap(),
            w,
        )
    }

    fn seq(n: usize, s: u32) -> Vec<u32> {
        (0..n as u32).map(|k| (k * 53 + s * 17 + 3) % 300).collect()
    }

    #[test]
    fn scoring_matches_reference_and_is_batch_independent() {
        let (m, w) = model();
        let reqs: Vec<ScoreRequest> = [(5, 7), (1, 3), (12, 9), (30, 1)]
            .iter()
            .enumerate()
            .map(|(k, &(p, c))| ScoreRequest {
                prompt: seq(p, k as u32),
                continuation: seq(c, 10 + k as u32),
            })
            .collect();
        let small = StandaloneConfig {
            token_budget: 7,
            block_size: 4,
        };
        let batched = score(&m, &reqs, &StandaloneConfig::default()).unwrap();
        let chunked = score(&m, &reqs, &small).unwrap();
        for (k, r) in reqs.iter().enumerate() {
            let alone = score(&m, std::slice::from_ref(r), &StandaloneConfig::default())
                .unwrap()
                .remove(0);
            let full: Vec<u32> = [r.prompt.clone(), r.continuation.clone()].concat();
            let reference = reference_logits(m.config(), &w, &full);
            for (i, &t) in r.continuation.iter().enumerate() {
                let row = &reference[r.prompt.len() - 1 + i];
                let lse = row.iter().map(|x| (x - row[0]).exp()).sum::<f64>().ln() + row[0];
                let want = row[t as usize] - lse;
                for got in [&batched[k], &chunked[k], &alone] {
                    assert!(
                        (got.token_logprobs[i] as f64 - want).abs() < 1e-4,
                        "request {k} token {i}"
                    );
                }
            }
            assert!(
                (batched[k].total_logprob
                    - batched[k]
                        .token_logprobs
                        .iter()
                        .map(|&x| x as f64)
                        .sum::<f64>())
                .abs()
                    < 1e-9
            );
            // The top 3 after the prompt: the reference's three largest logits, most likely first,
            // and asking for them does not change the continuation's log-probabilities.
            let (with_top, top) = score_with_top(&m, r, 3, &small).unwrap();
            assert_eq!(with_top, chunked[k]);
            let row = &reference[r.prompt.len() - 1];
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            assert_eq!(
                top.iter().map(|t| t.0 as usize).collect::<Vec<_>>(),
                order[..3].to_vec()
            );
            assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        }
    }

    #[test]
    fn generation_is_seeded_and_batch_independent() {
        let (m, w) = model();
        let params = SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 0,
            greedy: false,
        };
        let reqs: Vec<GenerateRequest> = (0..5)
            .map(|k| GenerateRequest {
                prompt: seq(3 + 4 * k, k as u32),
                params,
                max_new_tokens: 12,
                stop: vec![],
                seed: 100 + k as u64,
            })
            .collect();
        let a = generate(&m, &reqs, &StandaloneConfig::default(), &mut |_| {}).unwrap();
        let b = generate(
            &m,
            &reqs,
            &StandaloneConfig {
                token_budget: 5,
                block_size: 4,
            },
            &mut |_| {},
        )
        .unwrap();
        for (k, r) in reqs.iter().enumerate() {
            let alone = generate(
                &m,
                std::slice::from_ref(r),
                &StandaloneConfig::default(),
                &mut |_| {},
            )
            .unwrap()
            .remove(0);
            assert_eq!(a[k].tokens, alone.tokens, "request {k}: batched vs alone");
            assert_eq!(
                b[k].tokens, alone.tokens,
                "request {k}: small batches vs alone"
            );
            assert_eq!(a[k].tokens.len(), 12);
            assert_eq!(a[k].finish, FinishReason::Length);
            // Raw log-probs equal the reference model's; proposal log-probs are >= raw ones at T < 1
            // only in aggregate, so just check they are finite and <= 0.
            let full: Vec<u32> = [r.prompt.clone(), a[k].tokens.clone()].concat();
            let reference = reference_logits(m.config(), &w, &full);
            for (i, &t) in a[k].tokens.iter().enumerate() {
                let row = &reference[r.prompt.len() - 1 + i];
                let lse = row.iter().map(|x| (x - row[0]).exp()).sum::<f64>().ln() + row[0];
                assert!((a[k].logprobs_raw[i] - (row[t as usize] - lse)).abs() < 1e-4);
                assert!(a[k].logprobs_proposal[i] <= 1e-12 && a[k].logprobs_proposal[i].is_finite());
            }
        }
        // Greedy is the argmax of the reference, and stops at a stop token (kept in the output).
        let g = GenerateRequest {
            prompt: seq(4, 9),
            params: SamplingParams::greedy(),
            max_new_tokens: 8,
            stop: vec![],
            seed: 0,
        };
        let out = generate(
            &m,
            std::slice::from_ref(&g),
            &StandaloneConfig::default(),
            &mut |_| {},
        )
        .unwrap()
        .remove(0);
        let full: Vec<u32> = [g.prompt.clone(), out.tokens.clone()].concat();
        let reference = reference_logits(m.config(), &w, &full);
        for (i, &t) in out.tokens.iter().enumerate() {
            let row = &reference[g.prompt.len() - 1 + i];
            let best = (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .unwrap();
            assert_eq!(t as usize, best);
        }
        let stop = GenerateRequest {
            stop: vec![out.tokens[2]],
            ..g
        };
        let s = generate(&m, &[stop], &StandaloneConfig::default(), &mut |_| {})
            .unwrap()
            .remove(0);
        let first = out.tokens.iter().position(|&t| t == out.tokens[2]).unwrap();
        assert_eq!(s.tokens, out.tokens[..=first].to_vec());
        assert_eq!(s.finish, FinishReason::Stop);
    }

    #[test]
    fn bad_requests_are_errors() {
        let (m, _) = model();
        let empty = ScoreRequest {
            prompt: vec![],
            continuation: vec![1],
        };
        assert!(matches!(
            score(&m, &[empty], &StandaloneConfig::default()),
            Err(ModelError::Parameter { .. })
        ));
        let long = ScoreRequest {
            prompt: seq(100, 1),
            continuation: seq(40, 2),
        };
        assert!(matches!(
            score(&m, &[long], &StandaloneConfig::default()),
            Err(ModelError::PromptTooLong { .. })
        ));
        let unknown = ScoreRequest {
            prompt: vec![1, 999],
            continuation: vec![1],
        };
        assert!(matches!(
            score(&m, &[unknown], &StandaloneConfig::default()),
            Err(ModelError::UnknownToken { id: 999, .. })
        ));
        let unknown = ScoreRequest {
            prompt: vec![1],
            continuation: vec![999],
        };
        assert!(matches!(
            score(&m, &[unknown], &StandaloneConfig::default()),
            Err(ModelError::UnknownToken { id: 999, .. })
        ));
        let bad_t = GenerateRequest {
            prompt: vec![1],
            params: SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            max_new_tokens: 3,
            stop: vec![],
            seed: 0,
        };
        assert!(matches!(
            generate(&m, &[bad_t], &StandaloneConfig::default(), &mut |_| {}),
            Err(ModelError::Parameter {
                field: "temperature",
                ..
            })
        ));
        let too_long = GenerateRequest {
            prompt: seq(120, 1),
            params: SamplingParams::greedy(),
            max_new_tokens: 20,
            stop: vec![],
            seed: 0,
        };
        assert!(matches!(
            generate(&m, &[too_long], &StandaloneConfig::default(), &mut |_| {}),
            Err(ModelError::PromptTooLong { .. })
        ));
        // Zero new tokens is a valid, empty generation.
        let none = GenerateRequest {
            prompt: vec![1],
            params: SamplingParams::greedy(),
            max_new_tokens: 0,
            stop: vec![],
            seed: 0,
        };
        assert!(
            generate(&m, &[none], &StandaloneConfig::default(), &mut |_| {}).unwrap()[0]
                .tokens
                .is_empty()
        );
    }
}
