//! The forward pass on tiny random models, on every compiled CPU backend: agreement with an
//! independent `f64` reference, cached decoding equal to full recomputation, a mixed-length packed
//! batch equal to each sequence alone, and batch validation.

use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::for_each_backend;
use llm_auction_model::llama::Llama;
use llm_auction_model::logits::logits_to_host;
use llm_auction_model::testing::*;

/// A batch of one sequence's tokens at positions `start..`, with the given blocks and logits rows.
fn single(
    tokens: &[u32],
    start: usize,
    blocks: Vec<u32>,
    block_size: usize,
    logits_rows: Vec<usize>,
) -> ForwardBatch {
    ForwardBatch {
        tokens: tokens.to_vec(),
        positions: (start..start + tokens.len()).map(|p| p as u32).collect(),
        seq_starts: vec![0, tokens.len()],
        block_size,
        block_tables: vec![blocks],
        logits_rows,
    }
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|k| (k * 37 + seed * 101 + 5) % 300)
        .collect()
}

for_each_backend! {

    fn load(seed: u64, lm_head: bool) -> (Llama<B>, Weights) {
        let cfg = tiny_config();
        let w = random_weights(&cfg, seed, lm_head);
        let model = Llama::<B>::load(cfg, &MapSource(w.clone()), &Default::default(), &mut |_, _, _| {}).unwrap();
        (model, w)
    }

    #[test]
    fn matches_f64_reference() {
        for lm_head in [false, true] {
            let (model, w) = load(1, lm_head);
            let toks = tokens(40, 1);
            // 40 tokens: long enough for the vectorised paths of both backends.
            let mut cache = model.new_cache(48).unwrap();
            let logits = model.forward(&single(&toks, 0, (0..10).collect(), 4, (0..40).collect()), &mut cache).unwrap();
            let got = logits_to_host(logits).unwrap();
            let want = reference_logits(model.config(), &w, &toks);
            for (p, row) in want.iter().enumerate() {
                let d = max_diff(&got[p * 300..(p + 1) * 300], row);
                assert!(d < 1e-4, "position {p}: max |Δ| = {d}");
            }
        }
    }

    #[test]
    fn cached_decode_equals_full_recompute() {
        let (model, _) = load(2, false);
        let toks = tokens(20, 2);
        let mut full_cache = model.new_cache(32).unwrap();
        let blocks: Vec<u32> = vec![3, 0, 5, 1, 7];
        let full = logits_to_host(model.forward(&single(&toks, 0, blocks.clone(), 4, (0..20).collect()), &mut full_cache).unwrap()).unwrap();
        // Prefill 7 tokens, then a chunk of 5, then one token at a time.
        let mut cache = model.new_cache(32).unwrap();
        let mut got: Vec<f32> = Vec::new();
        let mut pos = 0;
        for chunk in [7usize, 5, 1, 1, 1, 1, 1, 1, 1, 1] {
            let b = single(&toks[pos..pos + chunk], pos, blocks.clone(), 4, (0..chunk).collect());
            got.extend(logits_to_host(model.forward(&b, &mut cache).unwrap()).unwrap());
            pos += chunk;
        }
        assert_eq!(got.len(), full.len());
        let d = got.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-5, "cached vs full: max |Δ| = {d}");
    }

    #[test]
    fn mixed_length_batch_equals_each_sequence_alone() {
        let (model, _) = load(3, false);
        let bs = 4;
        // Three sequences: A has 9 cached tokens and decodes 1; B prefills 6 from scratch; C has 3
        // cached and adds a chunk of 4.
        let a = tokens(10, 10);
        let b = tokens(6, 11);
        let c = tokens(7, 12);
        let ta = vec![0u32, 1, 2];
        let tb = vec![3u32, 4];
        let tc = vec![5u32, 6];
        let mut cache = model.new_cache(7 * bs).unwrap();
        model.forward(&single(&a[..9], 0, ta.clone(), bs, vec![]), &mut cache).unwrap();
        model.forward(&single(&c[..3], 0, tc.clone(), bs, vec![]), &mut cache).unwrap();
        let batch = ForwardBatch {
            tokens: [&a[9..], &b[..], &c[3..]].concat(),
            positions: [vec![9u32], (0..6).collect(), (3..7).collect()].concat(),
            seq_starts: vec![0, 1, 7, 11],
            block_size: bs,
            block_tables: vec![ta.clone(), tb.clone(), tc.clone()],
            logits_rows: (0..11).collect(),
        };
        let mixed = logits_to_host(model.forward(&batch, &mut cache).unwrap()).unwrap();
        let alone = |toks: &[u32], from: usize, blocks: Vec<u32>| -> Vec<f32> {
            let mut cache = model.new_cache(7 * bs).unwrap();
            let all = logits_to_host(model.forward(&single(toks, 0, blocks, bs, (0..toks.len()).collect()), &mut cache).unwrap()).unwrap();
            all[from * 300..].to_vec()
        };
        let expected = [alone(&a, 9, ta), alone(&b, 0, tb), alone(&c, 3, tc)].concat();
        let d = mixed.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-5, "mixed batch vs alone: max |Δ| = {d}");
    }

    #[test]
    fn logits_rows_select_and_order() {
        let (model, _) = load(4, false);
        let toks = tokens(6, 4);
        let mut c1 = model.new_cache(8).unwrap();
        let all = logits_to_host(model.forward(&single(&toks, 0, vec![0, 1], 4, (0..6).collect()), &mut c1).unwrap()).unwrap();
        let mut c2 = model.new_cache(8).unwrap();
        let some = logits_to_host(model.forward(&single(&toks, 0, vec![0, 1], 4, vec![5, 2]), &mut c2).unwrap()).unwrap();
        assert_eq!(&some[..300], &all[5 * 300..6 * 300]);
        assert_eq!(&some[300..], &all[2 * 300..3 * 300]);
    }

    #[test]
    fn bad_batches_are_errors_and_leave_the_cache_usable() {
        let (model, _) = load(5, false);
        let mut cache = model.new_cache(8).unwrap();
        let bad = [
            single(&[1, 2], 0, vec![9], 4, vec![]),         // slot beyond the cache
            single(&[1, 300], 0, vec![0], 4, vec![]),       // unknown token
            single(&[1, 2], 127, vec![0; 40], 4, vec![]),   // beyond the context
            single(&[1, 2], 0, vec![0], 4, vec![2]),        // logits row out of range
        ];
        for b in &bad {
            assert!(model.forward(b, &mut cache).is_err());
        }
        assert!(model.forward(&single(&[1, 2], 0, vec![0], 4, vec![1]), &mut cache).is_ok());
    }
}
