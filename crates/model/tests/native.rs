//! The native CPU forward pass (flex, `crate::cpu`) on tiny random models with odd sizes: agreement
//! with the independent `f64` reference and with the burn-op pass, and exact (bitwise) equality of
//! a sequence's logits alone, in a mixed batch, and decoded step by step against a full prefill.
#![cfg(feature = "flex")]

use llm_auction_model::backend::FlexBackend as B;
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::config::LlamaConfig;
use llm_auction_model::llama::{Kernels, Llama};
use llm_auction_model::logits::logits_to_host;
use llm_auction_model::testing::*;

/// Odd sizes everywhere: no dimension is a multiple of a SIMD width, 3 query heads per KV head.
fn odd_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 37,
        intermediate_size: 53,
        num_layers: 3,
        num_heads: 6,
        num_kv_heads: 2,
        head_dim: 10,
        ..tiny_config()
    }
}

fn load(cfg: LlamaConfig, seed: u64) -> (Llama<B>, Weights) {
    let w = random_weights(&cfg, seed, false);
    let model = Llama::<B>::load(
        cfg,
        &MapSource(w.clone()),
        &Default::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    (model, w)
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|k| (k * 37 + seed * 101 + 5) % 300)
        .collect()
}

fn single(toks: &[u32], start: usize, blocks: Vec<u32>, bs: usize) -> ForwardBatch {
    ForwardBatch {
        tokens: toks.to_vec(),
        positions: (start..start + toks.len()).map(|p| p as u32).collect(),
        seq_starts: vec![0, toks.len()],
        block_size: bs,
        block_tables: vec![blocks],
        logits_rows: (0..toks.len()).collect(),
    }
}

fn run(model: &Llama<B>, b: &ForwardBatch, slots: usize) -> Vec<f32> {
    let mut cache = model.new_cache(slots).unwrap();
    logits_to_host(model.forward(b, &mut cache).unwrap()).unwrap()
}

#[test]
fn native_matches_the_f64_reference_and_the_burn_pass() {
    for cfg in [tiny_config(), odd_config()] {
        let (model, w) = load(cfg, 21);
        assert_eq!(model.kernels(), Kernels::Native);
        // 70 tokens: three query blocks of the fused attention, edge tiles in every GEMM.
        let toks = tokens(70, 3);
        let b = single(&toks, 0, (0..18).collect(), 4);
        let native = run(&model, &b, 72);
        let want = reference_logits(model.config(), &w, &toks);
        for (p, row) in want.iter().enumerate() {
            let d = max_diff(&native[p * 300..(p + 1) * 300], row);
            assert!(d < 1e-4, "position {p}: max |Δ| vs f64 = {d}");
        }
        let burn = run(&model.clone().with_kernels(Kernels::Burn), &b, 72);
        let d = native
            .iter()
            .zip(&burn)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "native vs burn: max |Δ| = {d}");
    }
}

#[test]
fn a_sequence_gives_the_same_bits_alone_batched_and_decoded() {
    let (model, _) = load(odd_config(), 22);
    let bs = 4;
    let a = tokens(41, 10);
    let b = tokens(6, 11);
    let c = tokens(37, 12);
    let (ta, tb, tc): (Vec<u32>, Vec<u32>, Vec<u32>) =
        ((0..11).collect(), (11..13).collect(), (13..23).collect());
    let slots = 23 * bs;
    // Alone: each sequence's full prefill.
    let alone_a = run(&model, &single(&a, 0, ta.clone(), bs), slots);
    let alone_b = run(&model, &single(&b, 0, tb.clone(), bs), slots);
    let alone_c = run(&model, &single(&c, 0, tc.clone(), bs), slots);
    // Mixed: A has 40 cached tokens and decodes 1; B prefills 6; C has 3 cached and adds 34.
    let mut cache = model.new_cache(slots).unwrap();
    let mut prefill = |t: &[u32], blocks: &Vec<u32>| {
        let mut one = single(t, 0, blocks.clone(), bs);
        one.logits_rows.clear();
        model.forward(&one, &mut cache).unwrap();
    };
    prefill(&a[..40], &ta);
    prefill(&c[..3], &tc);
    let batch = ForwardBatch {
        tokens: [&a[40..], &b[..], &c[3..]].concat(),
        positions: [vec![40u32], (0..6).collect(), (3..37).collect()].concat(),
        seq_starts: vec![0, 1, 7, 41],
        block_size: bs,
        block_tables: vec![ta.clone(), tb, tc],
        logits_rows: (0..41).collect(),
    };
    let mixed = logits_to_host(model.forward(&batch, &mut cache).unwrap()).unwrap();
    let expected = [&alone_a[40 * 300..], &alone_b[..], &alone_c[3 * 300..]].concat();
    assert!(
        mixed
            .iter()
            .zip(&expected)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "mixed batch differs from each sequence alone"
    );
    // Decoded one token at a time after a 5-token prefill: the same bits as the full prefill.
    let mut cache = model.new_cache(slots).unwrap();
    let mut got = logits_to_host(
        model
            .forward(&single(&a[..5], 0, ta.clone(), bs), &mut cache)
            .unwrap(),
    )
    .unwrap();
    for p in 5..a.len() {
        let step = single(&a[p..p + 1], p, ta.clone(), bs);
        got.extend(logits_to_host(model.forward(&step, &mut cache).unwrap()).unwrap());
    }
    assert!(
        got.iter()
            .zip(&alone_a)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "decoding step by step differs from the full prefill"
    );
}

/// A GGUF file like the real one (Q8_0 embedding and tied head, Q4_1 layer matrices, Q4_0 down
/// projections, q/k rows permuted): the native pass reads the Q4_1 and Q8_0 matrices in their
/// blocks and must give bitwise the logits of the same pass on the dequantised `f32` weights, in a
/// one-token pass, a short batch and a batch of more rows than one activation block (150).
#[test]
fn block_format_weights_give_the_f32_weights_bits() {
    let cfg = tiny_config();
    let w = random_weights(&cfg, 5, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    write_gguf(&path, &cfg, &w);
    let model =
        llm_auction_model::model::Model::<B>::load(&path, &Default::default(), &mut |_, _, _| {})
            .unwrap()
            .llama;
    // q, k, v, o, gate, up per layer (down is Q4_0, read as f32), and the head.
    assert_eq!(model.packed_matrices(), 6 * cfg.num_layers + 1);
    let f32_model = model.clone().with_kernels(Kernels::NativeF32);
    let two = |n: usize| {
        let (a, b) = (tokens(n, 1), tokens(n, 2));
        ForwardBatch {
            tokens: [a, b].concat(),
            positions: (0..n as u32).chain(0..n as u32).collect(),
            seq_starts: vec![0, n, 2 * n],
            block_size: 4,
            block_tables: vec![(0..19).collect(), (19..38).collect()],
            logits_rows: (0..2 * n).collect(),
        }
    };
    let reference = reference_logits(&cfg, &quantised_view(&w), &tokens(75, 1));
    for b in [single(&tokens(1, 3), 0, vec![0], 4), two(3), two(75)] {
        let packed = run(&model, &b, 152);
        let dense = run(&f32_model, &b, 152);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&packed), bits(&dense), "{} tokens", b.tokens.len());
        if b.tokens.len() == 150 {
            for (p, row) in reference.iter().enumerate() {
                let d = max_diff(&packed[p * 300..(p + 1) * 300], row);
                assert!(d < 1e-4, "position {p}: max |Δ| vs f64 = {d}");
            }
        }
    }
}
