//! Dequantisation of ggml tensor data to `f32` (the matching encoders, for
//! test fixtures, are in `gguf::quant` under the `testing` feature).
//!
//! Supported types and their block layouts (all little-endian):
//!
//! | type | elements/block | bytes/block | layout / decoding                                  |
//! |------|----------------|-------------|----------------------------------------------------|
//! | F32  | 1              | 4           | IEEE `f32`                                         |
//! | F16  | 1              | 2           | IEEE half                                          |
//! | BF16 | 1              | 2           | bfloat16                                           |
//! | Q8_0 | 32             | 34          | f16 `d`, 32 × i8 `q`; `w = q·d`                    |
//! | Q4_0 | 32             | 18          | f16 `d`, 16 bytes `qs`; `w[j] = (lo(qs[j]) − 8)·d`, `w[j+16] = (hi(qs[j]) − 8)·d` |
//! | Q4_1 | 32             | 20          | f16 `d`, f16 `m`, 16 bytes `qs`; `w[j] = lo(qs[j])·d + m`, `w[j+16] = hi(qs[j])·d + m` |

use half::{bf16, f16};

use super::{GgmlType, GgufError};

/// Elements per block of the supported quantised types.
pub const QK: usize = 32;

/// Dequantises `n` elements of type `ty` from `bytes` (exactly the tensor's
/// bytes).
///
/// Errors with [`GgufError::UnsupportedTensorType`] for types other than
/// F32, F16, BF16, Q8_0, Q4_0 and Q4_1, and with [`GgufError::Invalid`] if
/// `n` is not a multiple of the type's block size or `bytes` does not hold
/// exactly `n` elements. `name` is only used in error messages.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize, name: &str) -> Result<Vec<f32>, GgufError> {
    // Normalise hand-built `Other(id)` values for supported ids.
    let ty = GgmlType::from_id(ty.id());
    let (block_size, block_bytes) = match ty {
        GgmlType::F32 => (1, 4),
        GgmlType::F16 | GgmlType::BF16 => (1, 2),
        GgmlType::Q8_0 => (QK, 34),
        GgmlType::Q4_0 => (QK, 18),
        GgmlType::Q4_1 => (QK, 20),
        GgmlType::Other(id) => {
            return Err(GgufError::UnsupportedTensorType {
                name: name.to_string(),
                ggml_type: id,
                type_name: ty.name(),
            });
        }
    };
    if !n.is_multiple_of(block_size) {
        return Err(GgufError::Invalid {
            what: format!(
                "tensor '{name}': {n} elements is not a multiple of the {ty} block size {block_size}"
            ),
        });
    }
    let expected = (n / block_size).checked_mul(block_bytes);
    if expected != Some(bytes.len()) {
        return Err(GgufError::Invalid {
            what: format!(
                "tensor '{name}': {n} elements of type {ty} need {} bytes, got {}",
                expected.map_or_else(|| "too many".to_string(), |e| e.to_string()),
                bytes.len()
            ),
        });
    }

    // `bytes.len()` equals the exact encoded size, so `n` is bounded by the
    // input length and every `as_chunks` remainder below is empty.
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => {
            let (chunks, _) = bytes.as_chunks::<4>();
            out.extend(chunks.iter().map(|c| f32::from_le_bytes(*c)));
        }
        GgmlType::F16 => {
            let (chunks, _) = bytes.as_chunks::<2>();
            out.extend(chunks.iter().map(|c| f16::from_le_bytes(*c).to_f32()));
        }
        GgmlType::BF16 => {
            let (chunks, _) = bytes.as_chunks::<2>();
            out.extend(chunks.iter().map(|c| bf16::from_le_bytes(*c).to_f32()));
        }
        GgmlType::Q8_0 => {
            let (blocks, _) = bytes.as_chunks::<34>();
            for &[d0, d1, ref qs @ ..] in blocks {
                let d = f16::from_le_bytes([d0, d1]).to_f32();
                out.extend(qs.iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_0 => {
            let (blocks, _) = bytes.as_chunks::<18>();
            for &[d0, d1, ref qs @ ..] in blocks {
                let d = f16::from_le_bytes([d0, d1]).to_f32();
                out.extend(qs.iter().map(|&q| f32::from((q & 0x0F) as i8 - 8) * d));
                out.extend(qs.iter().map(|&q| f32::from((q >> 4) as i8 - 8) * d));
            }
        }
        GgmlType::Q4_1 => {
            let (blocks, _) = bytes.as_chunks::<20>();
            for &[d0, d1, m0, m1, ref qs @ ..] in blocks {
                let d = f16::from_le_bytes([d0, d1]).to_f32();
                let m = f16::from_le_bytes([m0, m1]).to_f32();
                out.extend(qs.iter().map(|&q| f32::from(q & 0x0F) * d + m));
                out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
            }
        }
        GgmlType::Other(_) => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::quant::{
        encode_bf16, encode_f16, quantize_q4_0, quantize_q4_1, quantize_q8_0,
    };

    fn f16_bytes(bits: u16) -> [u8; 2] {
        bits.to_le_bytes()
    }

    #[test]
    fn q8_0_hand_built_block_exact() {
        // d = 0.25 (f16 0x3400), q = [-128, 127, -14, -13, ..., 15]
        let mut block = f16_bytes(0x3400).to_vec();
        let mut q: Vec<i8> = (0..32).map(|j| j as i8 - 16).collect();
        q[0] = -128;
        q[1] = 127;
        block.extend(q.iter().map(|&v| v as u8));
        let out = dequantize(GgmlType::Q8_0, &block, 32, "t").unwrap();
        let expected: Vec<f32> = q.iter().map(|&v| f32::from(v) * 0.25).collect();
        assert_eq!(out, expected);
        assert_eq!(out[0], -32.0);
        assert_eq!(out[1], 31.75);
        assert_eq!(out[2], -3.5);
        assert_eq!(out[31], 3.75);
    }

    #[test]
    fn q4_0_hand_built_block_exact() {
        // d = 2.0 (f16 0x4000); low nibble j, high nibble 15 - j.
        let mut block = f16_bytes(0x4000).to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(GgmlType::Q4_0, &block, 32, "t").unwrap();
        let mut expected = Vec::new();
        for j in 0..16 {
            expected.push((j as f32 - 8.0) * 2.0);
        }
        for j in 0..16 {
            expected.push((7.0 - j as f32) * 2.0);
        }
        assert_eq!(out, expected);
        assert_eq!(out[0], -16.0);
        assert_eq!(out[15], 14.0);
        assert_eq!(out[16], 14.0);
        assert_eq!(out[31], -16.0);

        // Negative scale d = -1.5 (f16 0xBE00), all nibbles 0x3 / 0xC.
        let mut block = f16_bytes(0xBE00).to_vec();
        block.extend([0xC3u8; 16]);
        let out = dequantize(GgmlType::Q4_0, &block, 32, "t").unwrap();
        assert!(out[..16].iter().all(|&v| v == 7.5)); // (3 - 8) * -1.5
        assert!(out[16..].iter().all(|&v| v == -6.0)); // (12 - 8) * -1.5
    }

    #[test]
    fn q4_1_hand_built_block_exact() {
        // d = 0.5 (0x3800), m = -1.0 (0xBC00); low nibble j, high 15 - j.
        let mut block = f16_bytes(0x3800).to_vec();
        block.extend(f16_bytes(0xBC00));
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(GgmlType::Q4_1, &block, 32, "t").unwrap();
        let expected: Vec<f32> = (0..16)
            .map(|j| j as f32 * 0.5 - 1.0)
            .chain((0..16).map(|j| (15 - j) as f32 * 0.5 - 1.0))
            .collect();
        assert_eq!(out, expected);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[15], 6.5);
        assert_eq!(out[16], 6.5);
        assert_eq!(out[31], -1.0);
    }

    #[test]
    fn float_types_exact() {
        let out = dequantize(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0], 2, "t").unwrap();
        assert_eq!(out, [1.0, -2.0]);
        let out = dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x49, 0x40], 2, "t").unwrap();
        assert_eq!(out, [1.0, 3.140625]);
        let out = dequantize(GgmlType::F32, &1.5f32.to_le_bytes(), 1, "t").unwrap();
        assert_eq!(out, [1.5]);
        assert!(dequantize(GgmlType::F32, &[], 0, "t").unwrap().is_empty());
    }

    #[test]
    fn other_id_of_supported_type_is_normalised() {
        let bytes = quantize_q8_0(&[1.0; 32]).unwrap();
        let a = dequantize(GgmlType::Other(8), &bytes, 32, "t").unwrap();
        let b = dequantize(GgmlType::Q8_0, &bytes, 32, "t").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn dequantize_errors() {
        let err = dequantize(GgmlType::Other(13), &[0; 176], 256, "blk.0.x").unwrap_err();
        assert!(matches!(
            &err,
            GgufError::UnsupportedTensorType { name, ggml_type: 13, type_name }
                if name == "blk.0.x" && type_name == "Q5_K"
        ));
        assert_eq!(
            err.to_string(),
            "tensor 'blk.0.x' has type Q5_K (13), which is not supported \
             (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
        );
        // n not a multiple of the block size
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0; 34], 31, "t"),
            Err(GgufError::Invalid { .. })
        ));
        // wrong byte lengths
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0; 33], 32, "t"),
            Err(GgufError::Invalid { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_1, &[0; 40], 32, "t"),
            Err(GgufError::Invalid { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::F32, &[0; 7], 2, "t"),
            Err(GgufError::Invalid { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::F16, &[0; 4], usize::MAX, "t"),
            Err(GgufError::Invalid { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 4], usize::MAX - 31, "t"),
            Err(GgufError::Invalid { .. })
        ));
    }

    #[test]
    fn quantisers_reject_partial_blocks() {
        for q in [quantize_q8_0, quantize_q4_0, quantize_q4_1] {
            assert!(matches!(q(&[0.0; 33]), Err(GgufError::Invalid { .. })));
            assert!(q(&[]).unwrap().is_empty());
        }
    }

    #[test]
    fn quantisers_exact_on_representable_blocks() {
        // Values that are exact multiples of a power-of-two step reconstruct exactly.
        let x: Vec<f32> = (0..32).map(|j| (j as f32 - 16.0) * 0.125).collect();
        let q = quantize_q4_1(&x).unwrap();
        assert_eq!(q.len(), 20);
        let back = dequantize(GgmlType::Q4_1, &q, 32, "t").unwrap();
        for (a, b) in x.iter().zip(&back) {
            // d = (1.875 + 2) / 15 = 0.2583 -> error bound d/2
            assert!((a - b).abs() <= 0.13, "{a} vs {b}");
        }
        let x: Vec<f32> = (0..32).map(|j| (j % 16) as f32 - 8.0).collect();
        let q = quantize_q4_0(&x).unwrap();
        // extreme is -8 -> d = 1, every value exact
        assert_eq!(dequantize(GgmlType::Q4_0, &q, 32, "t").unwrap(), x);
        let x: Vec<f32> = (0..32).map(|j| j as f32 * 4.0 - 64.0).collect();
        let q = quantize_q8_0(&x).unwrap();
        let back = dequantize(GgmlType::Q8_0, &q, 32, "t").unwrap();
        let d = 64.0 / 127.0;
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= d / 2.0, "{a} vs {b}");
        }
        // all-zero blocks stay zero
        for (ty, q) in [
            (GgmlType::Q8_0, quantize_q8_0(&[0.0; 32]).unwrap()),
            (GgmlType::Q4_0, quantize_q4_0(&[0.0; 32]).unwrap()),
            (GgmlType::Q4_1, quantize_q4_1(&[0.0; 32]).unwrap()),
        ] {
            assert_eq!(dequantize(ty, &q, 32, "t").unwrap(), [0.0; 32]);
        }
    }

    #[test]
    fn float_encoders_round_trip() {
        let x = [0.0, 1.0, -2.5, 65504.0, 1e-3];
        let back = dequantize(GgmlType::F16, &encode_f16(&x), x.len(), "t").unwrap();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() * 1e-3, "{a} vs {b}");
        }
        let x = [0.0, 1.0, -2.5, 1e30, 1e-30];
        let back = dequantize(GgmlType::BF16, &encode_bf16(&x), x.len(), "t").unwrap();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() / 256.0, "{a} vs {b}");
        }
    }
}
