//! The native CPU forward pass over host slices: the same network as [`crate::llama`] (embedding,
//! blocks of RMSNorm → grouped-query attention → residual, RMSNorm → SwiGLU → residual, final norm,
//! LM head), with
//! - every projection one [`nt_par`] call on the checkpoint's `[out, in]` weights, q/k/v in one call
//!   and gate/up in one call, the residual added in the GEMM's store;
//! - RoPE, the KV write and SwiGLU as one sweep each over the rows;
//! - attention fused per (sequence, KV head, block of queries): the group's query heads together,
//!   `q · kᵀ` against the keys in place in the KV store (one block of consecutive slots at a time),
//!   a causal softmax, and `p · v` reading the values in place (no gathers, no padded
//!   `[S, H, Tq, Tk]` tensors).
//!
//! Each row's result depends only on its own token and its own sequence's context (see
//! [`super::kernels`]), so a sequence gives the same bits alone or in any batch.

use super::kernels::{Isa, Mat, MatMut, Part, Rows, Weight, nt, nt_par, pv, zeros};
use super::ops;
use crate::batch::{ForwardBatch, Layout};
use crate::config::LlamaConfig;
use crate::rope::Rope;
use rayon::prelude::*;

/// One decoder block's weights; the matrices `[out, in]`.
pub(crate) struct LayerWeights<'a> {
    pub attn_norm: &'a [f32],
    pub wq: Weight<'a>,
    pub wk: Weight<'a>,
    pub wv: Weight<'a>,
    pub wo: Weight<'a>,
    pub mlp_norm: &'a [f32],
    pub w_gate: Weight<'a>,
    pub w_up: Weight<'a>,
    pub w_down: Weight<'a>,
}

/// The model's weights as host slices.
pub(crate) struct Weights<'a> {
    /// `[vocab, d]`.
    pub embed: &'a [f32],
    pub layers: Vec<LayerWeights<'a>>,
    pub norm: &'a [f32],
    /// `[vocab, d]`.
    pub lm_head: Weight<'a>,
}

fn part(weight: Weight<'_>, column: usize) -> Part<'_> {
    Part { weight, column }
}

/// Query positions per attention work unit: a block of a long prompt, so that a prefill's
/// attention spreads over the threads and each block reads only the keys it can see.
const QUERY_BLOCK: usize = 32;

/// The KV stores of one layer (`[num_slots, kv_dim]` each).
pub(crate) struct Stores<'a> {
    pub keys: &'a mut [f32],
    pub values: &'a mut [f32],
}

/// One forward pass: writes the new tokens' keys and values into `stores` (one per layer) and
/// returns the logits of `batch.logits_rows`, row-major `[rows, vocab]`. The batch must have been
/// validated into `layout` against the same model and stores.
pub(crate) fn forward(
    isa: Isa,
    cfg: &LlamaConfig,
    rope: &Rope,
    w: &Weights<'_>,
    batch: &ForwardBatch,
    layout: &Layout,
    stores: &mut [Stores<'_>],
) -> Vec<f32> {
    let n = batch.tokens.len();
    let (d, qd, kvd, ffn) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let (hd, eps) = (cfg.head_dim, cfg.rms_norm_eps);
    let width = qd + 2 * kvd;
    let mut x = zeros(n * d);
    for (row, &t) in x.chunks_mut(d).zip(&batch.tokens) {
        let t = t as usize;
        row.copy_from_slice(&w.embed[t * d..(t + 1) * d]);
    }
    let mut h = zeros(n * d);
    let mut qkv = zeros(n * width);
    let mut att = zeros(n * qd);
    let mut gate_up = zeros(n * 2 * ffn);
    for (lw, store) in w.layers.iter().zip(stores.iter_mut()) {
        ops::rms_norm(&x, lw.attn_norm, eps, &mut h);
        let qkv_parts = [part(lw.wq, 0), part(lw.wk, qd), part(lw.wv, qd + kvd)];
        nt_par(
            isa,
            Mat::dense(&h, n, d),
            &qkv_parts,
            MatMut::dense(&mut qkv, n, width),
            false,
        );
        ops::rows_mut(&mut qkv, width, |r, row| {
            let p = batch.positions[r] as usize;
            for head in row[..qd + kvd].chunks_mut(hd) {
                rope.rotate(head, p);
            }
        });
        for (r, &slot) in layout.slot_mapping.iter().enumerate() {
            let (s, src) = (slot as usize * kvd, &qkv[r * width + qd..(r + 1) * width]);
            store.keys[s..s + kvd].copy_from_slice(&src[..kvd]);
            store.values[s..s + kvd].copy_from_slice(&src[kvd..]);
        }
        attention(isa, cfg, batch, layout, &qkv, store, &mut att);
        nt_par(
            isa,
            Mat::dense(&att, n, qd),
            &[part(lw.wo, 0)],
            MatMut::dense(&mut x, n, d),
            true,
        );
        ops::rms_norm(&x, lw.mlp_norm, eps, &mut h);
        let mlp_parts = [part(lw.w_gate, 0), part(lw.w_up, ffn)];
        nt_par(
            isa,
            Mat::dense(&h, n, d),
            &mlp_parts,
            MatMut::dense(&mut gate_up, n, 2 * ffn),
            false,
        );
        ops::swiglu(isa, &mut gate_up, ffn);
        nt_par(
            isa,
            Mat::new(&gate_up, n, ffn, 2 * ffn),
            &[part(lw.w_down, 0)],
            MatMut::dense(&mut x, n, d),
            true,
        );
    }
    let rows = batch.logits_rows.len();
    let mut last = zeros(rows * d);
    for (out, &r) in last.chunks_mut(d).zip(&batch.logits_rows) {
        ops::rms_norm_row(&x[r * d..(r + 1) * d], w.norm, eps, out);
    }
    let vocab = cfg.vocab_size;
    let mut logits = vec![0f32; rows * vocab];
    nt_par(
        isa,
        Mat::dense(&last, rows, d),
        &[part(w.lm_head, 0)],
        MatMut::dense(&mut logits, rows, vocab),
        false,
    );
    logits
}

/// Causal grouped-query attention of the packed, rotated queries in `qkv` (rows of width
/// `q_dim + 2·kv_dim`, queries first) over each sequence's context in `store`; writes `att`
/// (`[N, q_dim]`).
fn attention(
    isa: Isa,
    cfg: &LlamaConfig,
    batch: &ForwardBatch,
    layout: &Layout,
    qkv: &[f32],
    store: &Stores<'_>,
    att: &mut [f32],
) {
    let (kvh, hd, qd, kvd) = (cfg.num_kv_heads, cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let rep = cfg.num_heads / kvh;
    let width = qd + 2 * kvd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut units = Vec::new();
    for s in 0..batch.num_seqs() {
        for g in 0..kvh {
            for i0 in (0..layout.lens[s]).step_by(QUERY_BLOCK) {
                units.push((s, g, i0, (i0 + QUERY_BLOCK).min(layout.lens[s])));
            }
        }
    }
    let bs = batch.block_size;
    let run = |&(s, g, i0, i1): &(usize, usize, usize, usize)| -> Vec<f32> {
        let a = batch.seq_starts[s];
        let p0 = layout.ctx[s] - layout.lens[s];
        let keys = p0 + i1;
        let ni = i1 - i0;
        // The group's queries, rows in (head, position) order.
        let rows = rep * ni;
        let mut q = zeros(rows * hd);
        for (r, dst) in q.chunks_mut(ni * hd).enumerate() {
            let col = (g * rep + r) * hd;
            for (i, d) in dst.chunks_mut(hd).enumerate() {
                let at = (a + i0 + i) * width + col;
                d.copy_from_slice(&qkv[at..at + hd]);
            }
        }
        // Scores against the keys in place, one KV block (consecutive slots) at a time.
        let mut scores = vec![0f32; rows * keys];
        for j0 in (0..keys).step_by(bs) {
            let nb = bs.min(keys - j0);
            let at = batch.slot_of(s, j0) * kvd + g * hd;
            nt(
                isa,
                Mat::dense(&q, rows, hd),
                Mat::new(&store.keys[at..], nb, hd, kvd),
                MatMut::new(&mut scores[j0..], rows, nb, keys),
                false,
            );
        }
        for (r, row) in scores.chunks_mut(keys).enumerate() {
            ops::softmax_prefix(isa, row, p0 + i0 + r % ni + 1, scale);
        }
        let offsets: Vec<usize> = (0..keys)
            .map(|j| batch.slot_of(s, j) * kvd + g * hd)
            .collect();
        let mut out = vec![0f32; rows * hd];
        pv(
            isa,
            Mat::dense(&scores, rows, keys),
            Rows::new(store.values, &offsets, hd),
            MatMut::dense(&mut out, rows, hd),
        );
        out
    };
    let outs: Vec<Vec<f32>> = if units.len() == 1 {
        units.iter().map(run).collect()
    } else {
        // One unit at a time: later query blocks see more keys, so even halves of the list are
        // uneven work.
        units.par_iter().with_max_len(1).map(run).collect()
    };
    for (&(s, g, i0, i1), out) in units.iter().zip(&outs) {
        let (a, ni) = (batch.seq_starts[s], i1 - i0);
        for (r, o) in out.chunks(ni * hd).enumerate() {
            let col = (g * rep + r) * hd;
            for (i, v) in o.chunks(hd).enumerate() {
                let row = a + i0 + i;
                att[row * qd + col..row * qd + col + hd].copy_from_slice(v);
            }
        }
    }
}
