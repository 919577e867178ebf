//! Encoders for the ggml types [`super::dequant`] decodes, used by the test fixtures (the
//! `testing` feature) to build quantised GGUF files.
//!
//! The quantisers ([`quantize_q8_0`], [`quantize_q4_0`], [`quantize_q4_1`])
//! follow ggml's round-to-nearest reference quantisers, with one refinement:
//! the scale (and Q4_1 minimum) are rounded to f16 *before* the quants are
//! computed, so the reconstruction error of an element is at most half a
//! quantisation step (except for Q4_0's asymmetric range, where the value
//! opposite in sign to the block's extreme can be clamped by up to one step).

use half::{bf16, f16};

use super::GgufError;
use super::dequant::QK;

fn blocks_of<'a>(x: &'a [f32], what: &str) -> Result<&'a [[f32; QK]], GgufError> {
    let (blocks, rest) = x.as_chunks::<QK>();
    if rest.is_empty() {
        Ok(blocks)
    } else {
        Err(GgufError::Invalid {
            what: format!(
                "{what} quantisation needs a multiple of {QK} values, got {}",
                x.len()
            ),
        })
    }
}

/// Rounds `v` to f16, returning the stored bits and the value they represent.
fn round_f16(v: f32) -> (f16, f32) {
    let h = f16::from_f32(v);
    (h, h.to_f32())
}

/// Reciprocal of a scale, 0 for a zero (or non-finite-producing) scale.
fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// Quantises `x` to Q8_0 blocks (34 bytes per 32 values): `d = max|x| / 127`,
/// `q = round(x / d)`. Errors with [`GgufError::Invalid`] if `x.len()` is not
/// a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Result<Vec<u8>, GgufError> {
    let blocks = blocks_of(x, "Q8_0")?;
    let mut out = Vec::with_capacity(blocks.len() * 34);
    for block in blocks {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (dh, d) = round_f16(amax / 127.0);
        let id = inverse(d);
        out.extend_from_slice(&dh.to_le_bytes());
        out.extend(
            block
                .iter()
                .map(|&v| ((v * id).round().clamp(-127.0, 127.0) as i8) as u8),
        );
    }
    Ok(out)
}

/// Quantises `x` to Q4_0 blocks (18 bytes per 32 values): with `e` the value
/// of largest magnitude, `d = e / -8` and `q = clamp(round(x / d) + 8, 0, 15)`.
/// Errors with [`GgufError::Invalid`] if `x.len()` is not a multiple of 32.
pub fn quantize_q4_0(x: &[f32]) -> Result<Vec<u8>, GgufError> {
    let blocks = blocks_of(x, "Q4_0")?;
    let mut out = Vec::with_capacity(blocks.len() * 18);
    for block in blocks {
        let extreme = block
            .iter()
            .fold(0.0f32, |e, &v| if v.abs() > e.abs() { v } else { e });
        let (dh, d) = round_f16(extreme / -8.0);
        let id = inverse(d);
        let quant = |v: f32| (v * id + 8.5).floor().clamp(0.0, 15.0) as u8;
        out.extend_from_slice(&dh.to_le_bytes());
        let (lo, hi) = block.split_at(QK / 2);
        out.extend(lo.iter().zip(hi).map(|(&a, &b)| quant(a) | (quant(b) << 4)));
    }
    Ok(out)
}

/// Quantises `x` to Q4_1 blocks (20 bytes per 32 values): `m = min(x)`,
/// `d = (max(x) − m) / 15`, `q = clamp(round((x − m) / d), 0, 15)`.
/// Errors with [`GgufError::Invalid`] if `x.len()` is not a multiple of 32.
pub fn quantize_q4_1(x: &[f32]) -> Result<Vec<u8>, GgufError> {
    let blocks = blocks_of(x, "Q4_1")?;
    let mut out = Vec::with_capacity(blocks.len() * 20);
    for block in blocks {
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (mh, m) = round_f16(min);
        let (dh, d) = round_f16((max - m) / 15.0);
        let id = inverse(d);
        let quant = |v: f32| ((v - m) * id + 0.5).floor().clamp(0.0, 15.0) as u8;
        out.extend_from_slice(&dh.to_le_bytes());
        out.extend_from_slice(&mh.to_le_bytes());
        let (lo, hi) = block.split_at(QK / 2);
        out.extend(lo.iter().zip(hi).map(|(&a, &b)| quant(a) | (quant(b) << 4)));
    }
    Ok(out)
}

/// Encodes `x` as little-endian IEEE half floats (round to nearest even).
pub fn encode_f16(x: &[f32]) -> Vec<u8> {
    x.iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// Encodes `x` as little-endian bfloat16 values (round to nearest even).
pub fn encode_bf16(x: &[f32]) -> Vec<u8> {
    x.iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect()
}
