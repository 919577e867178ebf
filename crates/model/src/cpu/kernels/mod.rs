//! The SIMD kernels of the native CPU forward pass, and the one module of the crate with `unsafe`
//! code: raw-pointer loads in `#[target_feature]` functions, chosen by run-time CPU detection.
//!
//! Two products. A projection is the weight product [`nt_par`]: `out[i][j] (+)= Σ_k a[i][k] ·
//! w[j][k]` on the checkpoint's `[out, in]` weight, whose rows each thread lays out block by block
//! as panels of 16 rows (`[k][16]`, `panels.rs`; block-format weights are expanded straight into
//! that layout, `expand.rs`), then multiplies by broadcast activations. Attention is "NT" twice
//! ([`nt`]: `q · kᵀ`, then `p · vᵀ` against the transposed values), on row-major operands as they
//! lie in the KV store.
//!
//! **Fixed reduction order per element.** Each output element is its own chain. In the weight
//! product it is one chain of fused multiply-adds in increasing `k`, from zero or from the old
//! value. In NT, lane `l` of one vector accumulator sums `a[i][k] · b[j][k]` over `k ≡ l (mod
//! lanes)` in increasing `k` with fused multiply-adds (a masked load zeroes the lanes past `k`),
//! then the lanes are summed in one fixed tree. Tile shape, edge tiles, the number of rows in the
//! call and the split between threads change which instructions run side by side, never the
//! arithmetic of an element, so a row's result does not depend on the other rows of its batch; the
//! weight product's chains are also the same on every instruction set. (Padding a row with zeros
//! up to a longer `k` adds exact zeros, which is how causal attention stays independent of the
//! query block.)

#![allow(unsafe_code)]
// Register tiles read best as `acc[r][j]`.
#![allow(clippy::needless_range_loop)]

use crate::packed::PackedMatrix;
use rayon::prelude::*;
use std::sync::OnceLock;

mod exp;
mod expand;
mod panels;
mod pv;
mod tiles;

pub use exp::{silu_mul, softmax_prefix};
use expand::{PANELS, expand_panels};
use panels::{PANEL, pack_dense, panel_avx2, panel_avx512, panel_scalar};
pub use pv::{Rows, pv};
use tiles::{tile_avx2, tile_avx512, tile_scalar};

/// The instruction set the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F and AVX-512VL: 16 lanes, 4 × 6 tiles (1 or 2 × 8 for one or two rows).
    Avx512,
    /// AVX2 with FMA: 8 lanes, 2 × 4 tiles.
    Avx2,
    /// Portable code (8 partial sums per element).
    Scalar,
}

impl Isa {
    /// The best instruction set this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            // VL too, though every vector here is 512 bits wide: without it the compiler can
            // zero or move registers 16-31 only through memory, and it spilled the accumulators
            // of tiles with more than 16 of them (docs/performance.md).
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Whether this CPU can run `self`.
    pub fn available(self) -> bool {
        matches!(
            (self, Isa::detect()),
            (Isa::Scalar, _) | (Isa::Avx2, Isa::Avx2 | Isa::Avx512) | (Isa::Avx512, Isa::Avx512)
        )
    }

    /// Tile shape `(rows of a, panels of 16 weight rows)` of the weight product for `m`
    /// activation rows: for one or two rows, fewer panels, so that the weight rows laid out per
    /// tile stay small (at least four panels: each is an independent chain of multiply-adds, and
    /// fewer chains than the FMA latency leave the unit idle).
    fn panel_tile(self, m: usize) -> (usize, usize) {
        match self {
            Isa::Avx512 if m <= 2 => (2, 4),
            Isa::Avx512 => (4, 6),
            Isa::Avx2 if m <= 2 => (2, 2),
            Isa::Avx2 => (4, 1),
            Isa::Scalar => (1, 1),
        }
    }

    /// Tile shape `(rows of a, rows of b)` of the NT kernel.
    fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (4, 6),
            Isa::Avx2 => (2, 4),
            Isa::Scalar => (1, 4),
        }
    }
}

/// A buffer of `f32` whose first element starts a cache line (64 bytes). The kernels' vector loads
/// then stay inside one line wherever a row's length is a multiple of 16 (the default model's
/// widths all are); a load that straddles two lines costs two (docs/performance.md).
pub type Aligned = aligned_vec::AVec<f32, aligned_vec::ConstAlign<64>>;

/// `n` zeros in an [`Aligned`] buffer.
pub fn zeros(n: usize) -> Aligned {
    let mut v = Aligned::with_capacity(64, n);
    v.resize(n, 0.0);
    v
}

/// The instruction set detected once for this process.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

/// A read-only row-major matrix view: `rows` rows of `cols` elements, `stride` apart.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

/// The bounds check of every view, on which the kernels' loads rely.
fn check_view(len: usize, rows: usize, cols: usize, stride: usize) {
    assert!(rows <= 1 || cols <= stride, "matrix rows overlap");
    let end = rows
        .checked_sub(1)
        .map(|r| r.checked_mul(stride).and_then(|o| o.checked_add(cols)));
    assert!(
        end.is_none_or(|e| e.is_some_and(|e| e <= len)),
        "matrix view out of bounds"
    );
}

impl<'a> Mat<'a> {
    /// A view of `data`.
    ///
    /// # Panics
    /// If the rows do not fit in `data` or overlap (`cols > stride` with more than one row): the
    /// kernels rely on this check for the bounds of every load.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        check_view(data.len(), rows, cols, stride);
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }

    /// A dense `[rows, cols]` view.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }
}

/// A mutable row-major matrix view (as [`Mat`]).
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> MatMut<'a> {
    /// A view of `data`.
    ///
    /// # Panics
    /// As [`Mat::new`].
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Self {
        check_view(data.len(), rows, cols, stride);
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }

    /// A dense `[rows, cols]` view.
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols)
    }
}

/// A raw output pointer shared by the threads of [`nt_par`], each writing its own rows and columns.
#[derive(Clone, Copy)]
struct OutPtr {
    ptr: *mut f32,
    stride: usize,
}
impl OutPtr {
    /// The output from row `i` on.
    ///
    /// # Safety
    /// Row `i` must be inside the output.
    unsafe fn row(self, i: usize) -> Self {
        Self {
            // SAFETY: in bounds by the contract.
            ptr: unsafe { self.ptr.add(i * self.stride) },
            stride: self.stride,
        }
    }
}
// SAFETY: the threads of `nt_par` write disjoint blocks of the output (see there).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `out (+)= a · bᵀ` on the calling thread (`a` `[m, k]`, `b` `[n, k]`, `out` `[m, n]`).
///
/// # Panics
/// If the shapes disagree.
pub fn nt(isa: Isa, a: Mat<'_>, b: Mat<'_>, out: MatMut<'_>, accumulate: bool) {
    assert!(a.cols == b.cols, "inner dimensions differ");
    assert!(out.rows == a.rows && out.cols == b.rows, "output shape");
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    let (mr, mut nr) = isa.tile();
    if a.rows <= 2 && isa == Isa::Avx512 {
        // One or two rows: wider tiles keep more rows of `b` streaming at once.
        nr = 8;
    }
    let k = a.cols;
    for i0 in (0..a.rows).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(a.rows);
        for j in (0..b.rows).step_by(nr) {
            let nj = nr.min(b.rows - j);
            for i in (i0..i1).step_by(mr) {
                let ni = mr.min(i1 - i);
                // SAFETY: rows i..i+ni of `a` and j..j+nj of `b` are in bounds (views checked at
                // construction), and so is the output block (`out` was checked to be `[m, n]`
                // and is borrowed mutably for the call).
                unsafe {
                    let pa = a.data.as_ptr().add(i * a.stride);
                    let pb = b.data.as_ptr().add(j * b.stride);
                    let po = out.data.as_mut_ptr().add(i * out.stride + j);
                    tile(
                        isa, ni, nj, pa, a.stride, pb, b.stride, k, po, out.stride, accumulate,
                    );
                }
            }
        }
    }
}

/// A weight matrix `[n, k]` of [`nt_par`]: dense `f32`, or in blocks that are expanded to `f32` a
/// few rows at a time right before the product (the same values bitwise, see [`crate::packed`]).
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    /// Row-major `f32`.
    Dense(Mat<'a>),
    /// Q4_1 or Q8_0 blocks.
    Packed(&'a PackedMatrix),
}

impl Weight<'_> {
    /// `n`.
    pub fn rows(&self) -> usize {
        match self {
            Weight::Dense(m) => m.rows,
            Weight::Packed(p) => p.rows(),
        }
    }

    /// `k`.
    pub fn cols(&self) -> usize {
        match self {
            Weight::Dense(m) => m.cols,
            Weight::Packed(p) => p.cols(),
        }
    }
}

/// One weight matrix of [`nt_par`] and the output column its rows start at.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// `[n, k]`.
    pub weight: Weight<'a>,
    /// First output column.
    pub column: usize,
}

/// `out[:, column..column + n] (+)= a · weightᵀ` for every part, on rayon's threads: each thread
/// takes a block of weight rows, lays it out as panels in its buffer (expanding blocks or
/// transposing `f32` rows) and runs the panel tiles over every activation row, or over a share of
/// them when the blocks do not share out evenly between the threads. So each weight row is read
/// once per call (once per share). How the work is cut does not change a bit of the result.
///
/// # Panics
/// If a part's shape disagrees with `a` or `out`, or two parts' columns overlap.
pub fn nt_par(isa: Isa, a: Mat<'_>, parts: &[Part<'_>], out: MatMut<'_>, accumulate: bool) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    assert!(out.rows == a.rows, "output rows");
    let mut spans: Vec<(usize, usize)> = parts
        .iter()
        .map(|p| {
            assert!(p.weight.cols() == a.cols, "inner dimensions differ");
            assert!(p.column + p.weight.rows() <= out.cols, "output columns");
            (p.column, p.column + p.weight.rows())
        })
        .collect();
    spans.sort_unstable();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "parts overlap in the output"
    );
    let k = a.cols;
    let (mr, np) = isa.panel_tile(a.rows);
    let group = np * PANEL;
    // Blocks of weight rows: several per thread, but no more than fit the buffer's share of the
    // L2 cache; a multiple of the tile's panels.
    let total: usize = parts.iter().map(|p| p.weight.rows()).sum();
    let threads = rayon::current_num_threads().max(1);
    let cap = (PANEL_BUFFER_BYTES / (4 * k.max(1)) / group).max(1) * group;
    let block = (total / (threads * 4))
        .div_ceil(group)
        .clamp(1, cap / group)
        * group;
    let mut blocks = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let n = part.weight.rows();
        blocks.extend((0..n).step_by(block).map(|j0| (p, j0, (j0 + block).min(n))));
    }
    // Many activation rows and blocks that do not share out evenly between the threads: each
    // block also goes to every thread for a share of the rows (laid out once per share), so that
    // no thread waits at the end for the others.
    let shares = if blocks.len() % threads != 0 && a.rows >= ROWS_PER_SHARE * threads {
        threads
    } else {
        1
    };
    let per_share = (a.rows.div_ceil(shares).div_ceil(mr) * mr).max(1);
    let units: Vec<_> = blocks
        .iter()
        .flat_map(|&(p, j0, j1)| {
            (0..a.rows)
                .step_by(per_share)
                .map(move |i0| (p, j0, j1, i0, (i0 + per_share).min(a.rows)))
        })
        .collect();
    let o = OutPtr {
        ptr: out.data.as_mut_ptr(),
        stride: out.stride,
    };
    let run = |&(p, j0, j1, i0, i1): &(usize, usize, usize, usize, usize)| {
        let part = parts[p];
        let a = Mat::new(&a.data[i0 * a.stride..], i1 - i0, a.cols, a.stride);
        // SAFETY: row i0 is inside the output view (i0 < a.rows = out.rows).
        let o = unsafe { o.row(i0) };
        PANELS.with_borrow_mut(|buf| {
            // One row tile: lay out one tile's panels at a time, used while in cache. More: the
            // whole block, swept by every row tile.
            let step = if a.rows <= mr { group } else { j1 - j0 };
            for r0 in (j0..j1).step_by(step) {
                let r1 = (r0 + step).min(j1);
                let panels = (r1 - r0).div_ceil(PANEL);
                buf.resize(panels * PANEL * k, 0.0);
                match part.weight {
                    Weight::Dense(w) => pack_dense(isa, w.data, w.stride, k, r0, r1, buf),
                    Weight::Packed(w) => {
                        expand_panels(isa, w, r0 / PANEL, r0 / PANEL + panels, buf)
                    }
                }
                // SAFETY: the output view was bounds-checked for `a.rows` rows and `out.cols`
                // columns; this unit writes rows `i0..i1` of columns `column + j0 .. column + j1`,
                // which no other unit writes (blocks of one part are disjoint, parts were checked
                // not to overlap, shares of a block are disjoint), and `out` stays borrowed
                // mutably until every unit has finished.
                unsafe { panel_product(isa, a, buf, r1 - r0, o, part.column + r0, accumulate) };
            }
        })
    };
    if units.len() == 1 || a.rows * total * a.cols < 1 << 16 {
        units.iter().for_each(run);
    } else {
        units.par_iter().for_each(run);
    }
}

/// The fewest activation rows per share of a block (below, the layout's cost outweighs the
/// balance it buys).
const ROWS_PER_SHARE: usize = 64;

/// The bytes of one block of weight panels (per thread): a share of the L2 cache that leaves room
/// for the activation rows.
const PANEL_BUFFER_BYTES: usize = 384 << 10;

/// `out[i][col0 + j] (+)= Σ_k a[i][k] · w[j][k]` for the `rows` weight rows laid out as panels in
/// `panels`, row tile by row tile (each sweeping all panels).
///
/// # Safety
/// `out` must be valid for writes of `a.rows` rows of `col0 + rows` columns at its stride, and no
/// other thread may access those elements during the call; `panels` must hold
/// `rows.div_ceil(16)` panels of `16 · a.cols`; `isa` must be available.
unsafe fn panel_product(
    isa: Isa,
    a: Mat<'_>,
    panels: &[f32],
    rows: usize,
    out: OutPtr,
    col0: usize,
    accumulate: bool,
) {
    let k = a.cols;
    let (mr, np) = isa.panel_tile(a.rows);
    let count = rows.div_ceil(PANEL);
    debug_assert!(panels.len() >= count * PANEL * k);
    for g in (0..count).step_by(np) {
        let ng = np.min(count - g);
        let last = if g + ng == count {
            rows - (count - 1) * PANEL
        } else {
            PANEL
        };
        // A range of `k` at a time, so that the tile's panel rows stay in L1 while every row tile
        // runs over them; each range picks the chains up from the output.
        for k0 in (0..k).step_by(K_RANGE) {
            let kc = K_RANGE.min(k - k0);
            for i in (0..a.rows).step_by(mr) {
                let ni = mr.min(a.rows - i);
                // SAFETY: rows i..i+ni of `a` are in bounds (view checked at construction), and
                // k0 + kc <= k; panels g..g+ng are in `panels`; the output block is in bounds by
                // this function's contract.
                unsafe {
                    panel_tile(
                        isa,
                        ni,
                        ng,
                        a.data.as_ptr().add(i * a.stride + k0),
                        a.stride,
                        panels.as_ptr().add(g * PANEL * k + k0 * PANEL),
                        PANEL * k,
                        kc,
                        out.ptr.add(i * out.stride + col0 + g * PANEL),
                        out.stride,
                        last,
                        accumulate || k0 > 0,
                    )
                };
            }
        }
    }
}

/// Values of `k` per tile call: six panels over this range are 48 KiB, about one L1 cache (64, 96
/// and 192 measured the same within the noise on the EPYC).
const K_RANGE: usize = 128;

/// `f::<rows, cols>(args)` for the run-time tile shape `(rows, cols)`, one of the listed sizes: how
/// a tile reaches its monomorphised kernel.
macro_rules! tile_call {
    ($f:ident, $rows:expr, $cols:expr, [$($mr:literal),*], $ncs:tt, $args:tt) => {
        match $rows {
            $($mr => tile_call!(@cols $f, $mr, $cols, $ncs, $args),)*
            _ => unreachable!("tile rows"),
        }
    };
    (@cols $f:ident, $mr:literal, $cols:expr, [$($nc:literal),*], $args:tt) => {
        match $cols {
            $($nc => tile_call!(@call $f, $mr, $nc, $args),)*
            _ => unreachable!("tile columns"),
        }
    };
    (@call $f:ident, $mr:literal, $nc:literal, ($($arg:expr),*)) => {
        $f::<$mr, $nc>($($arg),*)
    };
}

/// Dispatches an `ni`-row, `ng`-panel tile to its monomorphised kernel.
///
/// # Safety
/// As the panel kernels (`panels.rs`); `isa` must be available.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_tile(
    isa: Isa,
    ni: usize,
    ng: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ps: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    last: usize,
    load: bool,
) {
    // SAFETY: forwarded from this function's contract; the ISA was checked by the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => tile_call!(
                panel_avx512,
                ni,
                ng,
                [1, 2, 3, 4],
                [1, 2, 3, 4, 5, 6],
                (a, lda, b, ps, k, out, ldo, last, load)
            ),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => tile_call!(
                panel_avx2,
                ni,
                ng,
                [1, 2, 3, 4],
                [1, 2],
                (a, lda, b, ps, k, out, ldo, last, load)
            ),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => unreachable!("x86 kernels on another architecture"),
            Isa::Scalar => tile_call!(
                panel_scalar,
                ni,
                ng,
                [1],
                [1],
                (a, lda, b, ps, k, out, ldo, last, load)
            ),
        }
    }
}

/// The kernel's measured peak on this machine, in GFLOP/s: the best of five `[512, 576] · [1536,
/// 576]ᵀ` products (a prefill projection of the default model) on all of rayon's threads.
pub fn measured_peak_gflops() -> f64 {
    let (m, k, n) = (512, 576, 1536);
    // Aligned as the forward pass's operands are, so that this is the kernel's own best.
    let a = Aligned::from_iter(64, (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01));
    let b = Aligned::from_iter(64, (0..n * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01));
    let mut out = zeros(m * n);
    let isa = isa();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        rayon::scope(|_| {
            nt_par(
                isa,
                Mat::dense(&a, m, k),
                &[Part {
                    weight: Weight::Dense(Mat::dense(&b, n, k)),
                    column: 0,
                }],
                MatMut::dense(&mut out, m, n),
                false,
            )
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    (2 * m * n * k) as f64 / best / 1e9
}

/// Rows of `a` per sweep of [`nt`]: this block of rows stays in the L2 cache while a tile of `b`'s
/// rows (in L1) runs over it.
const ROW_BLOCK: usize = 128;

/// Dispatches an `ni × nj` tile to its monomorphised kernel.
///
/// # Safety
/// `a` must hold `ni` rows of `k` floats at stride `lda`, `b` `nj` rows at `ldb`, `out` `ni` rows
/// of `nj` writable floats at `ldo`; `isa` must be available.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    ni: usize,
    nj: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    acc: bool,
) {
    // SAFETY: forwarded from this function's contract; the ISA was checked by the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => tile_call!(
                tile_avx512,
                ni,
                nj,
                [1, 2, 3, 4],
                [1, 2, 3, 4, 5, 6, 7, 8],
                (a, lda, b, ldb, k, out, ldo, acc)
            ),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => tile_call!(
                tile_avx2,
                ni,
                nj,
                [1, 2],
                [1, 2, 3, 4],
                (a, lda, b, ldb, k, out, ldo, acc)
            ),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => unreachable!("x86 kernels on another architecture"),
            Isa::Scalar => tile_call!(
                tile_scalar,
                ni,
                nj,
                [1],
                [1, 2, 3, 4],
                (a, lda, b, ldb, k, out, ldo, acc)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn isas() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Scalar]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// The f64 product, and `Σ |a||b|` per element (the scale of its rounding error).
    fn reference(
        a: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
        lda: usize,
    ) -> Vec<(f64, f64)> {
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut mag) = (0f64, 0f64);
                for kk in 0..k {
                    let p = a[i * lda + kk] as f64 * b[j * k + kk] as f64;
                    s += p;
                    mag += p.abs();
                }
                out.push((s, mag));
            }
        }
        out
    }

    #[test]
    fn nt_matches_an_f64_reference_on_random_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for isa in isas() {
            for _ in 0..60 {
                let m = rng.random_range(1..40);
                let n = rng.random_range(1..40);
                let k = rng.random_range(1..100);
                let lda = k + rng.random_range(0..5); // strided rows too
                let a = random(&mut rng, m * lda);
                let b = random(&mut rng, n * k);
                let base = random(&mut rng, m * n);
                for accumulate in [false, true] {
                    let mut out = base.clone();
                    nt(
                        isa,
                        Mat::new(&a, m, k, lda),
                        Mat::dense(&b, n, k),
                        MatMut::dense(&mut out, m, n),
                        accumulate,
                    );
                    for (e, (&got, (want, mag))) in
                        out.iter().zip(reference(&a, &b, m, n, k, lda)).enumerate()
                    {
                        let want = want + if accumulate { base[e] as f64 } else { 0.0 };
                        let tol = 1e-6 * (mag + 1.0) * (k as f64).sqrt();
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{isa:?} m={m} n={n} k={k} element {e}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// `a · bᵀ` by [`nt_par`] with `b` split into two parts, into `out` (`[m, n + 3]`, the
    /// product at column 1).
    fn nt_par_split(isa: Isa, a: Mat<'_>, b: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
        let k = a.cols;
        let h = n / 3;
        let parts = [
            Part {
                weight: Weight::Dense(Mat::dense(&b[h * k..n * k], n - h, k)),
                column: 1 + h,
            },
            Part {
                weight: Weight::Dense(Mat::dense(&b[..h * k], h, k)),
                column: 1,
            },
        ];
        let m = a.rows;
        nt_par(isa, a, &parts, MatMut::dense(out, m, n + 3), accumulate);
    }

    #[test]
    fn nt_par_of_no_rows_writes_nothing() {
        let b = [1f32; 6];
        for isa in isas() {
            let mut out: [f32; 0] = [];
            nt_par_split(isa, Mat::dense(&[], 0, 2), &b, 3, &mut out, false);
        }
    }

    #[test]
    fn nt_par_matches_an_f64_reference_on_random_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for isa in isas() {
            for round in 0..50 {
                // Row counts on both sides of every tile height, weight rows not a multiple of a
                // panel, odd inner dimensions; a large case now and then so that rayon splits it.
                let (m, n, k) = if round % 10 == 0 {
                    (rng.random_range(20..40), rng.random_range(200..300), 67)
                } else {
                    (
                        rng.random_range(1..20),
                        rng.random_range(1..90),
                        rng.random_range(1..80),
                    )
                };
                let lda = k + rng.random_range(0..5);
                let a = random(&mut rng, m * lda);
                let b = random(&mut rng, n * k);
                let base = random(&mut rng, m * (n + 3));
                for accumulate in [false, true] {
                    let mut out = base.clone();
                    nt_par_split(isa, Mat::new(&a, m, k, lda), &b, n, &mut out, accumulate);
                    let want = reference(&a, &b, m, n, k, lda);
                    for i in 0..m {
                        for c in 0..n + 3 {
                            let e = i * (n + 3) + c;
                            let got = out[e] as f64;
                            if c == 0 || c > n {
                                assert_eq!(out[e], base[e], "{isa:?} column {c} was written");
                                continue;
                            }
                            let (w, mag) = want[i * n + c - 1];
                            let w = w + if accumulate { base[e] as f64 } else { 0.0 };
                            let tol = 1e-6 * (mag + 1.0) * (k as f64).sqrt();
                            assert!(
                                (got - w).abs() <= tol,
                                "{isa:?} m={m} n={n} k={k} ({i}, {c}): {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows_threads_or_isa() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for &(m, n, k) in &[
            (37, 29, 77),
            (16, 130, 64),
            (5, 3, 17),
            (129, 70, 33),
            (3, 300, 40),
        ] {
            let a = random(&mut rng, m * k);
            let b = random(&mut rng, n * k);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut first: Option<Vec<u32>> = None;
            for isa in isas() {
                let mut all = vec![0f32; m * (n + 3)];
                nt_par_split(isa, Mat::dense(&a, m, k), &b, n, &mut all, false);
                // Each instruction set computes the same chains.
                match &first {
                    None => first = Some(bits(&all)),
                    Some(f) => assert_eq!(f, &bits(&all), "{isa:?} differs from {:?}", isas()[0]),
                }
                for i in [0, m / 2, m - 1] {
                    // The row alone, on one thread, in one part.
                    let mut one = vec![0f32; n];
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap()
                        .install(|| {
                            nt_par(
                                isa,
                                Mat::dense(&a[i * k..(i + 1) * k], 1, k),
                                &[Part {
                                    weight: Weight::Dense(Mat::dense(&b, n, k)),
                                    column: 0,
                                }],
                                MatMut::dense(&mut one, 1, n),
                                false,
                            )
                        });
                    let row = &all[i * (n + 3) + 1..i * (n + 3) + 1 + n];
                    assert_eq!(bits(&one), bits(row), "{isa:?} row {i}");
                }
            }
        }
    }

    #[test]
    fn nt_rows_do_not_depend_on_the_other_rows_or_zero_padding() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        for isa in isas() {
            for &(m, n, k) in &[(37, 29, 77), (16, 130, 64), (5, 3, 17), (129, 70, 33)] {
                let a = random(&mut rng, m * k);
                let b = random(&mut rng, n * k);
                let mut all = vec![0f32; m * n];
                nt(
                    isa,
                    Mat::dense(&a, m, k),
                    Mat::dense(&b, n, k),
                    MatMut::dense(&mut all, m, n),
                    false,
                );
                for i in [0, m / 2, m - 1] {
                    // The row alone, one output column at a time.
                    for j in 0..n {
                        let mut one = [0f32];
                        nt(
                            isa,
                            Mat::dense(&a[i * k..(i + 1) * k], 1, k),
                            Mat::dense(&b[j * k..(j + 1) * k], 1, k),
                            MatMut::dense(&mut one, 1, 1),
                            false,
                        );
                        assert_eq!(
                            one[0].to_bits(),
                            all[i * n + j].to_bits(),
                            "{isa:?} ({i}, {j})"
                        );
                    }
                    // Zero padding of k adds exact zeros.
                    let mut pa = a[i * k..(i + 1) * k].to_vec();
                    pa.extend([0.0; 19]);
                    let mut pb = Vec::new();
                    for j in 0..n {
                        pb.extend_from_slice(&b[j * k..(j + 1) * k]);
                        pb.extend(random(&mut rng, 19));
                    }
                    let mut padded = vec![0f32; n];
                    nt(
                        isa,
                        Mat::dense(&pa, 1, k + 19),
                        Mat::dense(&pb, n, k + 19),
                        MatMut::dense(&mut padded, 1, n),
                        false,
                    );
                    for j in 0..n {
                        assert_eq!(
                            padded[j].to_bits(),
                            all[i * n + j].to_bits(),
                            "{isa:?} padded ({i}, {j})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dense_rows_are_laid_out_as_panels() {
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        for isa in isas() {
            for &(rows, k, ldw) in &[(16, 16, 16), (37, 35, 40), (5, 70, 70), (48, 100, 103)] {
                let w = random(&mut rng, rows * ldw);
                let (r0, r1) = (if rows > 16 { 16 } else { 0 }, rows);
                let panels = (r1 - r0).div_ceil(PANEL);
                let mut out = vec![f32::NAN; panels * PANEL * k];
                pack_dense(isa, &w, ldw, k, r0, r1, &mut out);
                for p in 0..panels {
                    for kk in 0..k {
                        for j in 0..PANEL {
                            let r = r0 + p * PANEL + j;
                            let want = if r < r1 { w[r * ldw + kk] } else { 0.0 };
                            assert_eq!(
                                out[(p * k + kk) * PANEL + j].to_bits(),
                                want.to_bits(),
                                "{isa:?} {rows}x{k} panel {p} ({kk}, {j})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pv_matches_an_f64_reference_and_ignores_zero_padding() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for isa in isas() {
            for _ in 0..40 {
                let m = rng.random_range(1..11);
                let n = rng.random_range(1..60);
                let cols = rng.random_range(1..40);
                let width = cols + rng.random_range(0..30);
                let store = random(&mut rng, (n + 5) * width);
                let mut offsets: Vec<usize> = (0..n + 5).map(|j| j * width).collect();
                offsets.reverse(); // any order of slots
                offsets.truncate(n);
                let p = random(&mut rng, m * n);
                let mut out = vec![0f32; m * cols];
                pv(
                    isa,
                    Mat::dense(&p, m, n),
                    Rows::new(&store, &offsets, cols),
                    MatMut::dense(&mut out, m, cols),
                );
                for i in 0..m {
                    for c in 0..cols {
                        let (mut want, mut mag) = (0f64, 0f64);
                        for j in 0..n {
                            let t = p[i * n + j] as f64 * store[offsets[j] + c] as f64;
                            want += t;
                            mag += t.abs();
                        }
                        let got = out[i * cols + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * (mag + 1.0),
                            "{isa:?} ({i}, {c}): {got} vs {want}"
                        );
                    }
                }
                // Row 0 alone with 7 extra keys of weight zero: the same bits.
                let mut padded_p = p[..n].to_vec();
                padded_p.extend([0.0; 5]);
                let mut more = offsets.clone();
                more.extend((0..5).map(|j| j * width));
                let mut one = vec![0f32; cols];
                pv(
                    isa,
                    Mat::dense(&padded_p, 1, n + 5),
                    Rows::new(&store, &more, cols),
                    MatMut::dense(&mut one, 1, cols),
                );
                assert!(
                    one.iter()
                        .zip(&out[..cols])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa:?} padded"
                );
            }
        }
    }

    #[test]
    fn packed_weights_give_the_dense_products_bitwise() {
        use crate::gguf::GgmlType;
        use crate::gguf::dequant::dequantize;
        use crate::gguf::quant::{quantize_q4_1, quantize_q8_0};
        use crate::packed::BlockFormat;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for isa in isas() {
            // Activation rows on both sides of a row tile, weight rows not a multiple of a panel,
            // 1 to 3 blocks per row.
            for &(m, n, k) in &[(1, 37, 32), (3, 70, 96), (16, 9, 64), (130, 21, 32)] {
                let a = random(&mut rng, m * k);
                let x = random(&mut rng, n * k);
                for (ty, bytes) in [
                    (GgmlType::Q4_1, quantize_q4_1(&x).unwrap()),
                    (GgmlType::Q8_0, quantize_q8_0(&x).unwrap()),
                ] {
                    let f = BlockFormat::of(ty).unwrap();
                    let w = PackedMatrix::from_gguf(f, &bytes, n, k, |r| r).unwrap();
                    let dense = dequantize(ty, &bytes, n * k, "w").unwrap();
                    // The vector expansion of the last panel against the portable one.
                    let last = (n - 1) / PANEL;
                    let mut expanded = vec![f32::NAN; PANEL * k];
                    expand_panels(isa, &w, last, last + 1, &mut expanded);
                    let mut want = vec![0f32; PANEL * k];
                    let (scales, quants) = w.panel_blocks(last, last + 1);
                    crate::packed::expand_panel(w.format(), scales, quants, &mut want);
                    assert_eq!(expanded, want, "{isa:?} {ty:?} expansion");
                    let mut want = vec![0.5f32; m * (n + 2)];
                    let mut got = want.clone();
                    for (weight, out) in [
                        (Weight::Dense(Mat::dense(&dense, n, k)), &mut want),
                        (Weight::Packed(&w), &mut got),
                    ] {
                        nt_par(
                            isa,
                            Mat::dense(&a, m, k),
                            &[Part { weight, column: 1 }],
                            MatMut::dense(out, m, n + 2),
                            true,
                        );
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{isa:?} {ty:?} {m}x{n}x{k}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn views_are_bounds_checked() {
        let data = [0f32; 10];
        Mat::new(&data, 3, 4, 4);
    }
}
