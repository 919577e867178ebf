//! The register tiles of the NT product, one per instruction set, and the fixed lane-sum tree.
// Register tiles read best as `acc[r][j]`.
#![allow(clippy::needless_range_loop)]

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
#[target_feature(enable = "avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_avx512<const MR: usize, const NR: usize>(
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
#[target_feature(enable = "avx512f,avx512vl")]
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
pub(super) unsafe fn tile_avx2<const MR: usize, const NR: usize>(
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
pub(super) unsafe fn tile_scalar<const MR: usize, const NR: usize>(
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
