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

use rayon::prelude::*;
use std::sync::OnceLock;

/// The instruction set the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 16 lanes, 4 × 4 tiles.
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
            if std::arch::is_x86_feature_detected!("avx512f") {
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
            Isa::Avx512 => (4, 4),
            Isa::Avx2 => (2, 4),
            Isa::Scalar => (1, 4),
        }
    }
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
    unsafe { nt_raw(isa, a, b, o, 0, accumulate) };
}

/// One weight matrix of [`nt_par`] and the output column its rows start at.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// `[n, k]`.
    pub weight: Mat<'a>,
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
            assert!(p.weight.cols == a.cols, "inner dimensions differ");
            assert!(p.column + p.weight.rows <= out.cols, "output columns");
            (p.column, p.column + p.weight.rows)
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
    let total: usize = parts.iter().map(|p| p.weight.rows).sum();
    let threads = rayon::current_num_threads().max(1);
    let block = (total / (threads * 4)).clamp(nr, 64).div_ceil(nr) * nr;
    let mut units = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let n = part.weight.rows;
        units.extend((0..n).step_by(block).map(|j0| (p, j0, (j0 + block).min(n))));
    }
    let o = OutPtr {
        ptr: out.data.as_mut_ptr(),
        stride: out.stride,
    };
    let run = |&(p, j0, j1): &(usize, usize, usize)| {
        let part = parts[p];
        // SAFETY: the output view was bounds-checked for `a.rows` rows and `out.cols` columns;
        // this unit writes columns `column + j0 .. column + j1`, which no other unit writes (units
        // of one part are disjoint, parts were checked not to overlap), and `out` stays borrowed
        // mutably until every unit has finished.
        unsafe {
            nt_raw(
                isa,
                a,
                part.weight.rows(j0, j1),
                o,
                part.column + j0,
                accumulate,
            )
        };
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
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let b: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut out = vec![0f32; m * n];
    let isa = isa();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        rayon::scope(|_| {
            nt_par(
                isa,
                Mat::dense(&a, m, k),
                &[Part {
                    weight: Mat::dense(&b, n, k),
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

/// Rows gathered by offset: row `j` is `data[offsets[j]..offsets[j] + cols]` (the keys or values
/// of one head in the KV store, whose slots follow the block table).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    offsets: &'a [usize],
    cols: usize,
}

impl<'a> Rows<'a> {
    /// A view of `data`.
    ///
    /// # Panics
    /// If a row does not fit in `data` (the kernels rely on this check).
    pub fn new(data: &'a [f32], offsets: &'a [usize], cols: usize) -> Self {
        assert!(
            offsets
                .iter()
                .all(|&o| o.checked_add(cols).is_some_and(|e| e <= data.len())),
            "gathered rows out of bounds"
        );
        Self {
            data,
            offsets,
            cols,
        }
    }
}

/// `out = p · v` for `p` `[m, n]` and the `n` gathered rows of `v` (`[n, cols]`): attention's
/// weighted sum of values, read in place from the KV store. Each element is one chain of fused
/// multiply-adds over `j` in increasing order (so exact zeros in `p` past a row's visible keys
/// leave it unchanged).
///
/// # Panics
/// If the shapes disagree.
pub fn pv(isa: Isa, p: Mat<'_>, v: Rows<'_>, out: MatMut<'_>) {
    assert!(p.cols == v.offsets.len(), "inner dimensions differ");
    assert!(out.rows == p.rows && out.cols == v.cols, "output shape");
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    let (n, cols) = (p.cols, v.cols);
    for i in (0..p.rows).step_by(4) {
        let ni = 4.min(p.rows - i);
        // SAFETY: rows i..i+ni of `p` hold `n` floats (view checked), every gathered row holds
        // `cols` floats (checked in `Rows::new`), and rows i..i+ni of `out` hold `cols` writable
        // floats (view checked, borrowed mutably for the call).
        unsafe {
            let pp = p.data.as_ptr().add(i * p.stride);
            let po = out.data.as_mut_ptr().add(i * out.stride);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => pv_avx512(ni, pp, p.stride, v, cols, po, out.stride),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => pv_avx2(ni, pp, p.stride, v, cols, po, out.stride),
                #[cfg(not(target_arch = "x86_64"))]
                Isa::Avx512 | Isa::Avx2 => unreachable!("x86 kernels on another architecture"),
                Isa::Scalar => pv_scalar(ni, pp, p.stride, n, v, cols, po, out.stride),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_avx512(
    ni: usize,
    p: *const f32,
    ldp: usize,
    v: Rows<'_>,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::*;
    for c in (0..cols).step_by(16) {
        let mask = if cols - c >= 16 {
            0xFFFF
        } else {
            ((1u32 << (cols - c)) - 1) as __mmask16
        };
        let mut acc = [_mm512_setzero_ps(); 4];
        for (j, &off) in v.offsets.iter().enumerate() {
            // SAFETY: lanes c.. of gathered row j are inside it (masked past `cols`; rows checked
            // in `Rows::new`); p's element (r, j) is inside row r (contract of `pv`).
            let x = unsafe { _mm512_maskz_loadu_ps(mask, v.data.as_ptr().add(off + c)) };
            for (r, a) in acc.iter_mut().enumerate().take(ni) {
                let w = _mm512_set1_ps(unsafe { *p.add(r * ldp + j) });
                *a = _mm512_fmadd_ps(w, x, *a);
            }
        }
        for (r, a) in acc.iter().enumerate().take(ni) {
            // SAFETY: lanes c.. of output row r, masked past `cols`.
            unsafe { _mm512_mask_storeu_ps(out.add(r * ldo + c), mask, *a) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_avx2(
    ni: usize,
    p: *const f32,
    ldp: usize,
    v: Rows<'_>,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::*;
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for c in (0..cols).step_by(8) {
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((cols - c).min(8) as i32), idx);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (j, &off) in v.offsets.iter().enumerate() {
            // SAFETY: as in `pv_avx512`; maskload touches only the lanes inside the row.
            let x = unsafe { _mm256_maskload_ps(v.data.as_ptr().add(off + c), mask) };
            for (r, a) in acc.iter_mut().enumerate().take(ni) {
                let w = _mm256_set1_ps(unsafe { *p.add(r * ldp + j) });
                *a = _mm256_fmadd_ps(w, x, *a);
            }
        }
        for (r, a) in acc.iter().enumerate().take(ni) {
            // SAFETY: only the lanes inside output row r are stored.
            unsafe { _mm256_maskstore_ps(out.add(r * ldo + c), mask, *a) };
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn pv_scalar(
    ni: usize,
    p: *const f32,
    ldp: usize,
    n: usize,
    v: Rows<'_>,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    for r in 0..ni {
        // SAFETY: row r of `p` holds n floats, row r of `out` cols floats (contract of `pv`).
        let (pr, or) = unsafe {
            (
                std::slice::from_raw_parts(p.add(r * ldp), n),
                std::slice::from_raw_parts_mut(out.add(r * ldo), cols),
            )
        };
        or.fill(0.0);
        for (&w, &off) in pr.iter().zip(v.offsets) {
            for (o, &x) in or.iter_mut().zip(&v.data[off..off + cols]) {
                *o = w.mul_add(x, *o);
            }
        }
    }
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
unsafe fn nt_raw(isa: Isa, a: Mat<'_>, b: Mat<'_>, out: OutPtr, col0: usize, accumulate: bool) {
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
            if i0 == 0 && a.rows <= PREFETCH_MAX_ROWS {
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

/// Writes or adds one finished element.
///
/// # Safety
/// `p` must be valid for reads and writes.
#[inline(always)]
unsafe fn store(p: *mut f32, s: f32, accumulate: bool) {
    // SAFETY: by the contract.
    unsafe { *p = if accumulate { *p + s } else { s } };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<const MR: usize, const NR: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let mut step = |kk: usize, mask: __mmask16| {
        let mut av = [_mm512_setzero_ps(); MR];
        for (r, v) in av.iter_mut().enumerate() {
            // SAFETY: lanes kk..kk+popcount(mask) of row r are inside row r (tile contract); the
            // masked-off lanes are not read (AVX-512 masked loads suppress their faults).
            *v = unsafe { _mm512_maskz_loadu_ps(mask, a.add(r * lda + kk)) };
        }
        for j in 0..NR {
            // SAFETY: as above for row j of `b`.
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, b.add(j * ldb + kk)) };
            for r in 0..MR {
                acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
            }
        }
    };
    let full = k / 16 * 16;
    for kk in (0..full).step_by(16) {
        step(kk, 0xFFFF);
    }
    if full < k {
        step(full, ((1u32 << (k - full)) - 1) as __mmask16);
    }
    // Sixteen accumulators at a time through one butterfly (zeros pad the last group), so every
    // element's lanes are summed by the same tree whatever the tile shape.
    let total = MR * NR;
    for g0 in (0..total).step_by(16) {
        let mut group = [_mm512_setzero_ps(); 16];
        for (p, v) in group.iter_mut().enumerate().take(total - g0) {
            *v = acc[(g0 + p) / NR][(g0 + p) % NR];
        }
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), reduce16(group)) };
        for p in 0..16.min(total - g0) {
            let q = g0 + p;
            // SAFETY: element (q / NR, q % NR) of the output tile (tile contract).
            unsafe {
                store(
                    out.add(q / NR * ldo + q % NR),
                    lanes[reduce16_lane(p)],
                    accumulate,
                )
            };
        }
    }
}

/// Where [`reduce16`] leaves the sum of accumulator `p`.
#[inline(always)]
fn reduce16_lane(p: usize) -> usize {
    4 * (p % 4) + p / 4
}

/// The lane sums of 16 vectors in one vector (lane [`reduce16_lane`]`(p)` holds the sum of `v[p]`),
/// by four levels of pairwise adds. Each level adds, for every vector alike, its lanes `l` and
/// `l + half`: the tree is the same for all 16, which is what makes a tile's shape invisible in its
/// results; and it costs 15 adds and 30 shuffles instead of 16 full reductions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce16(v: [std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Level 1: 256-bit halves. s[i] = [v[2i] (8 partials) | v[2i+1] (8 partials)].
    let mut s = [_mm512_setzero_ps(); 8];
    for (i, o) in s.iter_mut().enumerate() {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b);
        *o = _mm512_add_ps(lo, hi);
    }
    // Level 2: 128-bit quarters. t[m] quarter Q = v[4m + Q] (4 partials).
    let mut t = [_mm512_setzero_ps(); 4];
    for (m, o) in t.iter_mut().enumerate() {
        let (a, b) = (s[2 * m], s[2 * m + 1]);
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        *o = _mm512_add_ps(lo, hi);
    }
    // Level 3: pairs within quarters. u[n] quarter Q = [v[8n+Q] (2) | v[8n+4+Q] (2)].
    let mut u = [_mm512_setzero_ps(); 2];
    for (n, o) in u.iter_mut().enumerate() {
        let (a, b) = (t[2 * n], t[2 * n + 1]);
        let lo = _mm512_shuffle_ps::<0b01_00_01_00>(a, b);
        let hi = _mm512_shuffle_ps::<0b11_10_11_10>(a, b);
        *o = _mm512_add_ps(lo, hi);
    }
    // Level 4: quarter Q = [v[Q], v[4+Q], v[8+Q], v[12+Q]].
    let lo = _mm512_shuffle_ps::<0b10_00_10_00>(u[0], u[1]);
    let hi = _mm512_shuffle_ps::<0b11_01_11_01>(u[0], u[1]);
    _mm512_add_ps(lo, hi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const MR: usize, const NR: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let full = k / 8 * 8;
    for kk in (0..full).step_by(8) {
        let mut av = [_mm256_setzero_ps(); MR];
        for (r, v) in av.iter_mut().enumerate() {
            // SAFETY: 8 floats of row r from kk are inside the row (tile contract).
            *v = unsafe { _mm256_loadu_ps(a.add(r * lda + kk)) };
        }
        for j in 0..NR {
            // SAFETY: as above for row j of `b`.
            let bv = unsafe { _mm256_loadu_ps(b.add(j * ldb + kk)) };
            for r in 0..MR {
                acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
            }
        }
    }
    if full < k {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((k - full) as i32), idx);
        let mut av = [_mm256_setzero_ps(); MR];
        for (r, v) in av.iter_mut().enumerate() {
            // SAFETY: only the lanes inside the row are loaded (maskload does not touch the rest).
            *v = unsafe { _mm256_maskload_ps(a.add(r * lda + full), mask) };
        }
        for j in 0..NR {
            // SAFETY: as above.
            let bv = unsafe { _mm256_maskload_ps(b.add(j * ldb + full), mask) };
            for r in 0..MR {
                acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let hi = _mm256_extractf128_ps(*v, 1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(*v), hi);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
            // SAFETY: element (r, j) of the output tile (tile contract).
            unsafe { store(out.add(r * ldo + j), _mm_cvtss_f32(s1), accumulate) };
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_scalar<const MR: usize, const NR: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
) {
    for r in 0..MR {
        // SAFETY: row r of `a` holds k floats (tile contract).
        let ar = unsafe { std::slice::from_raw_parts(a.add(r * lda), k) };
        for j in 0..NR {
            // SAFETY: row j of `b` holds k floats (tile contract).
            let br = unsafe { std::slice::from_raw_parts(b.add(j * ldb), k) };
            let mut lanes = [0f32; 8];
            for (ca, cb) in ar.chunks(8).zip(br.chunks(8)) {
                for l in 0..ca.len() {
                    lanes[l] = ca[l].mul_add(cb[l], lanes[l]);
                }
            }
            let s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
            // SAFETY: element (r, j) of the output tile (tile contract).
            unsafe { store(out.add(r * ldo + j), s, accumulate) };
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
                        weight: Mat::dense(&b[..(n / 2) * k], n / 2, k),
                        column: 0,
                    },
                    Part {
                        weight: Mat::dense(&b[(n / 2) * k..], n - n / 2, k),
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
    #[should_panic(expected = "out of bounds")]
    fn views_are_bounds_checked() {
        let data = [0f32; 10];
        Mat::new(&data, 3, 4, 4);
    }
}
