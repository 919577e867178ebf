//! Weight matrices kept in the block formats a GGUF file stores them in (Q4_1, Q8_0), for the
//! native CPU pass: decoding streams every weight once per step, and a Q4_1 weight is 0.75 bytes
//! here against 4 as `f32`. The pass expands a few rows at a time into `f32` right before the
//! product ([`crate::cpu::kernels`]), with the same arithmetic as
//! [`gguf::dequant::dequantize`](crate::gguf::dequant::dequantize), so every expanded weight is
//! bitwise the `f32` the loader produced and the results do not change.
//!
//! The blocks are re-laid out once at load: the `f16` scales become `f32` (exactly), and rows can
//! be reordered (the q/k RoPE permutation of llama.cpp's converter, undone as for the `f32` copy).

use crate::gguf::{GgmlType, GgufError, invalid};
use half::f16;

/// Values per block in both formats.
pub const BLOCK: usize = 32;

/// The block format of a [`PackedMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// 32 unsigned 4-bit quants, a scale `d` and a minimum `m`: `w = q·d + m`.
    Q4_1,
    /// 32 signed 8-bit quants and a scale `d`: `w = q·d`.
    Q8_0,
}

impl BlockFormat {
    /// The format of a GGUF tensor type, if it is one of these.
    pub fn of(ty: GgmlType) -> Option<Self> {
        match ty {
            GgmlType::Q4_1 => Some(Self::Q4_1),
            GgmlType::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }

    /// Bytes of one block in a GGUF file.
    fn file_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    /// Quant bytes per block.
    pub(crate) fn quant_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 16,
            Self::Q8_0 => 32,
        }
    }

    /// `f32` scales per block (`d, m` or `d`).
    pub(crate) fn scales(self) -> usize {
        match self {
            Self::Q4_1 => 2,
            Self::Q8_0 => 1,
        }
    }
}

/// A row-major `[rows, cols]` weight matrix in blocks of [`BLOCK`] values along each row.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// Per block, in row order: [`BlockFormat::scales`] `f32`s.
    scales: Vec<f32>,
    /// Per block, in row order: [`BlockFormat::quant_bytes`] bytes (Q4_1: value `j` in the low
    /// nibble of byte `j`, value `j + 16` in its high nibble; Q8_0: two's-complement bytes).
    quants: Vec<u8>,
}

impl PackedMatrix {
    /// Re-lays out a GGUF tensor's blocks as `[rows, cols]`, output row `r` taken from the file's
    /// row `src_row(r)`.
    ///
    /// # Errors
    /// [`GgufError::Invalid`] if `cols` is not a multiple of [`BLOCK`], `bytes` is not exactly
    /// `rows · cols / 32` blocks, or `src_row` leaves the matrix.
    pub fn from_gguf(
        format: BlockFormat,
        bytes: &[u8],
        rows: usize,
        cols: usize,
        src_row: impl Fn(usize) -> usize,
    ) -> Result<Self, GgufError> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(invalid(format!(
                "a {format:?} matrix needs rows of a multiple of {BLOCK} values, got {cols}"
            )));
        }
        let per_row = cols / BLOCK;
        let row_bytes = per_row * format.file_bytes();
        if rows.checked_mul(row_bytes) != Some(bytes.len()) {
            return Err(invalid(format!(
                "{} bytes are not a [{rows}, {cols}] {format:?} matrix",
                bytes.len()
            )));
        }
        let mut scales = Vec::with_capacity(rows * per_row * format.scales());
        let mut quants = Vec::with_capacity(rows * per_row * format.quant_bytes());
        for r in 0..rows {
            let s = src_row(r);
            if s >= rows {
                return Err(invalid(format!("row {s} of a {rows}-row matrix")));
            }
            for block in bytes[s * row_bytes..(s + 1) * row_bytes].chunks(format.file_bytes()) {
                let half = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
                scales.push(half(0));
                if format == BlockFormat::Q4_1 {
                    scales.push(half(2));
                }
                let start = 2 * format.scales();
                quants.extend_from_slice(&block[start..]);
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            scales,
            quants,
        })
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (scales and quants).
    pub fn bytes(&self) -> usize {
        self.scales.len() * 4 + self.quants.len()
    }

    /// The scales and quants of rows `r0..r1`.
    pub(crate) fn row_blocks(&self, r0: usize, r1: usize) -> (&[f32], &[u8]) {
        let per_row = self.cols / BLOCK;
        let (s, q) = (self.format.scales(), self.format.quant_bytes());
        (
            &self.scales[r0 * per_row * s..r1 * per_row * s],
            &self.quants[r0 * per_row * q..r1 * per_row * q],
        )
    }

    /// Rows `r0..r1` as `f32` into `out` (`(r1 - r0) · cols` values), on the calling thread, in
    /// portable code (the kernels module compiles the same loop for the CPU's vector units).
    ///
    /// # Panics
    /// If the rows are out of range or `out` has the wrong length.
    pub fn expand_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        assert!(r0 <= r1 && r1 <= self.rows, "rows out of range");
        let (scales, quants) = self.row_blocks(r0, r1);
        expand(self.format, scales, quants, out);
    }
}

/// Expands whole blocks: `out` holds `scales.len() / format.scales()` blocks of 32 values. The
/// arithmetic is that of [`crate::gguf::dequant::dequantize`] (a product, then a sum: no fused
/// multiply-add), so each value is bitwise the loader's.
///
/// # Panics
/// If the lengths disagree.
#[inline(always)]
pub(crate) fn expand(format: BlockFormat, scales: &[f32], quants: &[u8], out: &mut [f32]) {
    let blocks = scales.len() / format.scales();
    assert!(
        quants.len() == blocks * format.quant_bytes() && out.len() == blocks * BLOCK,
        "block lengths disagree"
    );
    match format {
        BlockFormat::Q4_1 => {
            for ((s, q), o) in scales
                .chunks_exact(2)
                .zip(quants.chunks_exact(16))
                .zip(out.chunks_exact_mut(BLOCK))
            {
                let (d, m) = (s[0], s[1]);
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
                    *l = f32::from(b & 0x0F) * d + m;
                    *h = f32::from(b >> 4) * d + m;
                }
            }
        }
        BlockFormat::Q8_0 => {
            for ((&d, q), o) in scales
                .iter()
                .zip(quants.chunks_exact(BLOCK))
                .zip(out.chunks_exact_mut(BLOCK))
            {
                for (v, &b) in o.iter_mut().zip(q) {
                    *v = f32::from(b as i8) * d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequant::dequantize;
    use crate::gguf::quant::{quantize_q4_1, quantize_q8_0};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect()
    }

    #[test]
    fn expanded_rows_are_the_loaders_values_bitwise() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (rows, cols) = (5, 96);
        let x = random(&mut rng, rows * cols);
        for (ty, bytes) in [
            (GgmlType::Q4_1, quantize_q4_1(&x).unwrap()),
            (GgmlType::Q8_0, quantize_q8_0(&x).unwrap()),
        ] {
            let want = dequantize(ty, &bytes, rows * cols, "w").unwrap();
            let p =
                PackedMatrix::from_gguf(BlockFormat::of(ty).unwrap(), &bytes, rows, cols, |r| r)
                    .unwrap();
            let mut got = vec![0f32; rows * cols];
            p.expand_rows(0, rows, &mut got);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty:?}"
            );
            // Rows in another order, and a range of them.
            let rev =
                PackedMatrix::from_gguf(p.format(), &bytes, rows, cols, |r| rows - 1 - r).unwrap();
            let mut two = vec![0f32; 2 * cols];
            rev.expand_rows(1, 3, &mut two);
            assert_eq!(&two[..cols], &want[3 * cols..4 * cols]);
            assert_eq!(&two[cols..], &want[2 * cols..3 * cols]);
            assert!(p.bytes() < rows * cols * 4 / 3);
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let q = quantize_q4_1(&[0.5; 64]).unwrap();
        let f = BlockFormat::Q4_1;
        assert!(PackedMatrix::from_gguf(f, &q, 2, 32, |r| r).is_ok());
        let msg = |r: Result<PackedMatrix, GgufError>| r.unwrap_err().to_string();
        assert!(msg(PackedMatrix::from_gguf(f, &q, 1, 48, |r| r)).contains("multiple of 32"));
        assert!(msg(PackedMatrix::from_gguf(f, &q, 3, 32, |r| r)).contains("are not a [3, 32]"));
        assert!(msg(PackedMatrix::from_gguf(f, &q, 2, 32, |r| r + 1)).contains("row 2"));
    }
}
