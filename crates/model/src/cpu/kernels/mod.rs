//! The SIMD kernel of the native CPU forward pass, and the one module of the crate with `unsafe`
//! code: raw-pointer loads in `#[target_feature]` functions, chosen by run-time CPU detection.
//!
//! Everything rests on one product, "NT": `out[i][j] (+)= Σ_k a[i][k] · b[j][k]` for two row-major
//! matrices that share their inner dimension. A projection is NT with the checkpoint's `[out, in]`
//! weight as `b` (each weight row streamed once per tile of activation rows, no packing); attention
//! is NT twice (`q · kᵀ`, then `p · vᵀ` against the transposed values).
//!
//! **Fixed reduction order per element.** Each output element is its own chain: lane `l` of one
//! vector accumulator sums `a[i][k] · b[j][k]` over `k ≡ l (mod lanes)` in increasing `k` with fused
//! multiply-adds (a masked load zeroes the lanes past `k`), then the lanes are summed in one fixed
//! tree. Tile shape, edge tiles, the number of rows in the call and the split between threads change
//! which instructions run side by side, never the arithmetic of an element, so a row's result does
//! not depend on the other rows of its batch. (Padding a row with zeros up to a longer `k` adds exact
//! zeros, which is how causal attention stays independent of the query block.)

#![allow(unsafe_code)]
// Register tiles read best as `acc[r][j]`.
#![allow(clippy::needless_range_loop)]

use crate::packed::PackedMatrix;
use rayon::prelude::*;
use std::sync::OnceLock;

mod exp;
mod expand;
mod pv;
mod tiles;

pub use exp::{silu_mul, softmax_prefix};
use expand::{EXPAND_ROWS, EXPANDED, expand_rows};
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

    /// Tile shape `(rows of a, rows of b)` of the kernel.
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

    /// Rows `r0..r1`.
    fn rows(self, r0: usize, r1: usize) -> Self {
        debug_assert!(r0 <= r1 && r1 <= self.rows);
        if r0 == r1 {
            return Self::new(&[], 0, self.cols, self.stride);
        }
        Self::new(
            &self.data[r0 * self.stride..],
            r1 - r0,
            self.cols,
            self.stride,
        )
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

/// A raw output pointer shared by the threads of [`nt_par`], each writing its own columns.
#[derive(Clone, Copy)]
struct OutPtr {
    ptr: *mut f32,
    stride: usize,
}
// SAFETY: the threads of `nt_par` write disjoint column ranges of the output (see there).
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
    let o = OutPtr {
        ptr: out.data.as_mut_ptr(),
        stride: out.stride,
    };
    // SAFETY: `out` is borrowed mutably for the call, and its view was bounds-checked.
    unsafe { nt_raw(isa, a, b, o, 0, accumulate, true) };
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
/// takes blocks of weight rows (the same blocks whatever the thread count), so each weight row is
/// streamed once per block of activation rows.
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
    let (_, nr) = isa.tile();
    // Blocks of weight rows: small enough that there are several per thread, large enough to
    // amortise the sweep over the activation rows; a multiple of the tile width.
    let total: usize = parts.iter().map(|p| p.weight.rows()).sum();
    let threads = rayon::current_num_threads().max(1);
    let block = (total / (threads * 4)).clamp(nr, 64).div_ceil(nr) * nr;
    let mut units = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let n = part.weight.rows();
        units.extend((0..n).step_by(block).map(|j0| (p, j0, (j0 + block).min(n))));
    }
    let o = OutPtr {
        ptr: out.data.as_mut_ptr(),
        stride: out.stride,
    };
    let run = |&(p, j0, j1): &(usize, usize, usize)| {
        let part = parts[p];
        // SAFETY (both calls): the output view was bounds-checked for `a.rows` rows and `out.cols`
        // columns; this unit writes columns `column + j0 .. column + j1`, which no other unit
        // writes (units of one part are disjoint, parts were checked not to overlap), and `out`
        // stays borrowed mutably until every unit has finished.
        match part.weight {
            Weight::Dense(w) => unsafe {
                nt_raw(
                    isa,
                    a,
                    w.rows(j0, j1),
                    o,
                    part.column + j0,
                    accumulate,
                    true,
                )
            },
            Weight::Packed(w) => EXPANDED.with_borrow_mut(|buf| {
                // Few activation rows: expand a few weight rows at a time, used while in L1.
                // Many: the whole block, so each block of activations is swept once per block.
                let step = if a.rows <= ROW_BLOCK {
                    EXPAND_ROWS
                } else {
                    j1 - j0
                };
                for r0 in (j0..j1).step_by(step) {
                    let r1 = (r0 + step).min(j1);
                    buf.resize((r1 - r0) * w.cols(), 0.0);
                    expand_rows(isa, w, r0, r1, buf);
                    let b = Mat::dense(buf, r1 - r0, w.cols());
                    unsafe { nt_raw(isa, a, b, o, part.column + r0, accumulate, false) };
                }
            }),
        }
    };
    if units.len() == 1 || a.rows * total * a.cols < 1 << 16 {
        units.iter().for_each(run);
    } else {
        units.par_iter().for_each(run);
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

/// Rows of `a` per sweep: this block of activations stays in the L2 cache while a tile of weight
/// rows (in L1) runs over it.
const ROW_BLOCK: usize = 128;

/// How many weight rows ahead of the current tile [`nt_raw`] prefetches (into L2), when the
/// activations have at most [`PREFETCH_MAX_ROWS`] rows (decoding: the weights stream from memory
/// once per step and the compute per weight row is too short to hide the misses). Measured with
/// 1 and 16 rows (docs/performance.md): 16 rows ahead into L2 cut the 16-row time by about 20 %.
const PREFETCH_ROWS: usize = 16;
/// See [`PREFETCH_ROWS`]; larger batches reuse each weight row enough to hide its misses.
const PREFETCH_MAX_ROWS: usize = 16;

/// Hints the CPU to bring `row` into the L2 cache.
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: prefetching is a hint with no architectural effect; the address is inside `row`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// `out[i][col0 + j] (+)= Σ_k a[i][k] · b[j][k]`.
///
/// # Safety
/// `out` must be valid for writes of `a.rows` rows of `col0 + b.rows` columns at its stride, and no
/// other thread may access those elements during the call; `isa` must be available.
unsafe fn nt_raw(
    isa: Isa,
    a: Mat<'_>,
    b: Mat<'_>,
    out: OutPtr,
    col0: usize,
    accumulate: bool,
    prefetch: bool,
) {
    let (mr, mut nr) = isa.tile();
    if a.rows <= 2 && isa == Isa::Avx512 {
        // Few activation rows (decoding): wider tiles keep more weight rows streaming at once.
        nr = 8;
    }
    let k = a.cols;
    for i0 in (0..a.rows).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(a.rows);
        for j in (0..b.rows).step_by(nr) {
            let nj = nr.min(b.rows - j);
            if prefetch && i0 == 0 && a.rows <= PREFETCH_MAX_ROWS {
                // The first sweep reads these weight rows from memory: ask for the rows a few
                // tiles ahead now, so that many cache misses are in flight (decoding streams every
                // weight once per step). A hint only: it changes no result.
                let ahead = (j + PREFETCH_ROWS).min(b.rows);
                let upto = (j + PREFETCH_ROWS + nj).min(b.rows);
                for r in ahead..upto {
                    prefetch_row(&b.data[r * b.stride..r * b.stride + b.cols]);
                }
            }
            for i in (i0..i1).step_by(mr) {
                let ni = mr.min(i1 - i);
                // SAFETY: rows i..i+ni of `a` and j..j+nj of `b` are in bounds (views checked at
                // construction); the output block is in bounds by this function's contract.
                unsafe {
                    let pa = a.data.as_ptr().add(i * a.stride);
                    let pb = b.data.as_ptr().add(j * b.stride);
                    let po = out.ptr.add(i * out.stride + col0 + j);
                    tile(
                        isa, ni, nj, pa, a.stride, pb, b.stride, k, po, out.stride, accumulate,
                    );
                }
            }
        }
    }
}

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
    macro_rules! dispatch {
        ($f:ident; $($mr:literal),*; $($nr:literal),*) => {
            dispatch!(@rows $f; [$($mr),*]; [$($nr),*])
        };
        (@rows $f:ident; [$($mr:literal),*]; $nrs:tt) => {
            match ni {
                $($mr => dispatch!(@cols $f; $mr; $nrs),)*
                _ => unreachable!("tile rows"),
            }
        };
        (@cols $f:ident; $mr:literal; [$($nr:literal),*]) => {
            match nj {
                $($nr => $f::<$mr, $nr>(a, lda, b, ldb, k, out, ldo, acc),)*
                _ => unreachable!("tile columns"),
            }
        };
    }
    // SAFETY: forwarded from this function's contract; the ISA was checked by the caller.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => dispatch!(tile_avx512; 1, 2, 3, 4; 1, 2, 3, 4, 5, 6, 7, 8),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => dispatch!(tile_avx2; 1, 2; 1, 2, 3, 4),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => unreachable!("x86 kernels on another architecture"),
            Isa::Scalar => dispatch!(tile_scalar; 1; 1, 2, 3, 4),
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

    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows_or_threads() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for isa in isas() {
            for &(m, n, k) in &[(37, 29, 77), (16, 130, 64), (5, 3, 17), (129, 70, 33)] {
                let a = random(&mut rng, m * k);
                let b = random(&mut rng, n * k);
                let mut all = vec![0f32; m * n];
                let parts = [
                    Part {
                        weight: Weight::Dense(Mat::dense(&b[..(n / 2) * k], n / 2, k)),
                        column: 0,
                    },
                    Part {
                        weight: Weight::Dense(Mat::dense(&b[(n / 2) * k..], n - n / 2, k)),
                        column: n / 2,
                    },
                ];
                nt_par(
                    isa,
                    Mat::dense(&a, m, k),
                    &parts,
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
            // Activation rows on both sides of ROW_BLOCK, weight rows not a multiple of the
            // expansion or the tile, 1 to 3 blocks per row.
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
                    let mut expanded = vec![0f32; 3 * k];
                    expand_rows(isa, &w, n - 3, n, &mut expanded);
                    assert_eq!(expanded, dense[(n - 3) * k..], "{isa:?} {ty:?} expansion");
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
