//! Weight matrices kept in the block formats a GGUF file stores them in (Q4_1, Q8_0), for the
//! native CPU pass: decoding streams every weight once per step, and a Q4_1 weight is 0.75 bytes
//! here against 4 as `f32`. The pass expands a panel of rows at a time into `f32` right before the
//! product ([`crate::cpu::kernels`]), with the same arithmetic as
//! [`gguf::dequant::dequantize`](crate::gguf::dequant::dequantize), so every expanded weight is
//! bitwise the `f32` the loader produced and the results do not change.
//!
//! The blocks are re-laid out once at load: interleaved by panels of 16 rows (the order the product
//! reads them in), the `f16` scales turned into `f32` (exactly), and rows can be reordered (the q/k RoPE permutation of llama.cpp's converter, undone as for the `f32` copy).

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

/// Weight rows per panel: the native pass multiplies by a weight matrix laid out `[k][16]` for
/// each 16 consecutive rows (see [`crate::cpu::kernels`]), so the blocks are kept in that order.
pub const PANEL: usize = 16;

/// A `[rows, cols]` weight matrix in blocks of [`BLOCK`] values along each row, interleaved by
/// panels of [`PANEL`] rows: for each panel (the last one padded with zero rows) and each block
/// column, the 16 rows' scales side by side, then their quants with the 16 rows' bytes of one
/// position side by side. Expanding one position of a block column then gives one 16-wide row of
/// the panel the product reads, with no transposition.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// Per panel and block column: [`BlockFormat::scales`] groups of 16 `f32` (`d` of each row,
    /// then for Q4_1 `m` of each row).
    scales: Vec<f32>,
    /// Per panel and block column: [`BlockFormat::quant_bytes`] groups of 16 bytes, byte `j` of
    /// group `t` being byte `t` of row `j`'s block (Q4_1: value `t` in the low nibble, `t + 16`
    /// in the high one; Q8_0: value `t` in two's complement).
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
        let (ns, nq) = (format.scales(), format.quant_bytes());
        let panels = rows.div_ceil(PANEL);
        // Zero scales and quants in the padding rows: they expand to exact zeros.
        let mut scales = vec![0f32; panels * per_row * ns * PANEL];
        let mut quants = vec![0u8; panels * per_row * nq * PANEL];
        for r in 0..rows {
            let s = src_row(r);
            if s >= rows {
                return Err(invalid(format!("row {s} of a {rows}-row matrix")));
            }
            let (panel, j) = (r / PANEL, r % PANEL);
            for (b, block) in bytes[s * row_bytes..(s + 1) * row_bytes]
                .chunks(format.file_bytes())
                .enumerate()
            {
                let half = |i: usize| f16::from_le_bytes([block[i], block[i + 1]]).to_f32();
                let at = panel * per_row + b;
                for i in 0..ns {
                    scales[(at * ns + i) * PANEL + j] = half(2 * i);
                }
                for (t, &q) in block[2 * ns..].iter().enumerate() {
                    quants[(at * nq + t) * PANEL + j] = q;
                }
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

    /// Bytes held (scales and quants, the padding rows of the last panel included).
    pub fn bytes(&self) -> usize {
        self.scales.len() * 4 + self.quants.len()
    }

    /// The scales and quants of panels `p0..p1`.
    pub(crate) fn panel_blocks(&self, p0: usize, p1: usize) -> (&[f32], &[u8]) {
        let per_panel = self.cols / BLOCK * PANEL;
        let (s, q) = (self.format.scales(), self.format.quant_bytes());
        (
            &self.scales[p0 * per_panel * s..p1 * per_panel * s],
            &self.quants[p0 * per_panel * q..p1 * per_panel * q],
        )
    }

    /// Rows `r0..r1` as row-major `f32` into `out` (`(r1 - r0) · cols` values): the values the
    /// product uses, one at a time (for checks; the pass expands whole panels).
    ///
    /// # Panics
    /// If the rows are out of range or `out` has the wrong length.
    pub fn expand_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        assert!(r0 <= r1 && r1 <= self.rows, "rows out of range");
        assert!(out.len() == (r1 - r0) * self.cols, "output length");
        let k = self.cols;
        let mut panel = vec![0f32; PANEL * k];
        for (i, row) in out.chunks_exact_mut(k).enumerate() {
            let r = r0 + i;
            let (scales, quants) = self.panel_blocks(r / PANEL, r / PANEL + 1);
            expand_panel(self.format, scales, quants, &mut panel);
            for (c, v) in row.iter_mut().enumerate() {
                *v = panel[c * PANEL + r % PANEL];
            }
        }
    }
}

/// Expands whole panels' blocks into panels laid out `[cols][16]`: `out` holds
/// `scales.len() / (format.scales() · 16)` block columns of `32 · 16` values. The arithmetic is
/// that of [`crate::gguf::dequant::dequantize`] (a product, then a sum: no fused multiply-add),
/// so each value is bitwise the loader's.
///
/// # Panics
/// If the lengths disagree.
#[inline(always)]
pub(crate) fn expand_panel(format: BlockFormat, scales: &[f32], quants: &[u8], out: &mut [f32]) {
    let blocks = scales.len() / (format.scales() * PANEL);
    assert!(
        quants.len() == blocks * format.quant_bytes() * PANEL
            && out.len() == blocks * BLOCK * PANEL,
        "block lengths disagree"
    );
    match format {
        BlockFormat::Q4_1 => {
            for ((s, q), o) in scales
                .chunks_exact(2 * PANEL)
                .zip(quants.chunks_exact(16 * PANEL))
                .zip(out.chunks_exact_mut(BLOCK * PANEL))
            {
                let (d, m) = s.split_at(PANEL);
                let (lo, hi) = o.split_at_mut(16 * PANEL);
                for ((l, h), q) in lo
                    .chunks_exact_mut(PANEL)
                    .zip(hi.chunks_exact_mut(PANEL))
                    .zip(q.chunks_exact(PANEL))
                {
                    for j in 0..PANEL {
                        l[j] = f32::from(q[j] & 0x0F) * d[j] + m[j];
                        h[j] = f32::from(q[j] >> 4) * d[j] + m[j];
                    }
                }
            }
        }
        BlockFormat::Q8_0 => {
            for ((d, q), o) in scales
                .chunks_exact(PANEL)
                .zip(quants.chunks_exact(BLOCK * PANEL))
                .zip(out.chunks_exact_mut(BLOCK * PANEL))
            {
                for (v, q) in o.chunks_exact_mut(PANEL).zip(q.chunks_exact(PANEL)) {
                    for j in 0..PANEL {
                        v[j] = f32::from(q[j] as i8) * d[j];
                    }
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
        // Two full panels and a part of a third.
        let (rows, cols) = (37, 96);
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
            // Rows in another order, and a range of them across a panel boundary.
            let rev =
                PackedMatrix::from_gguf(p.format(), &bytes, rows, cols, |r| rows - 1 - r).unwrap();
            let mut three = vec![0f32; 3 * cols];
            rev.expand_rows(15, 18, &mut three);
            for (i, row) in three.chunks(cols).enumerate() {
                let src = rows - 1 - (15 + i);
                assert_eq!(row, &want[src * cols..(src + 1) * cols], "{ty:?} row {i}");
            }
            // The padded panel's expansion: the rows past the end are zeros.
            let (scales, quants) = p.panel_blocks(2, 3);
            let mut panel = vec![1f32; PANEL * cols];
            expand_panel(p.format(), scales, quants, &mut panel);
            for c in 0..cols {
                for j in 0..PANEL {
                    let v = panel[c * PANEL + j];
                    let r = 2 * PANEL + j;
                    let want = if r < rows { want[r * cols + c] } else { 0.0 };
                    assert_eq!(v.to_bits(), want.to_bits(), "{ty:?} ({r}, {c})");
                }
            }
            assert!(p.bytes() < rows * cols * 4 / 2);
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
