//! The AVX-512 kernels of [`Simd`](super::Simd): 16-lane vectors in the 32 `zmm` registers, the
//! int16 products summed by VNNI's `vpdpwssd`.
//!
//! The f32 kernel computes the same lane-wise FMA chains as the AVX2 one, one 16-query panel per
//! vector instead of two halves, so the scores are the same bits; the int16 kernel's sums are
//! exact, so they are the same integers.

use std::arch::x86_64::{
    __m512, __m512i, _CMP_NLE_UQ, _mm512_cmp_ps_mask, _mm512_cmpgt_epi32_mask, _mm512_dpwssd_epi32,
    _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_ps, _mm512_storeu_si512,
};

use super::{LANES, PairOfRows, QUERIES_I16, ROWS_I16};

/// Corpus rows per f32 register tile: 12 accumulators of 16 queries each, enough independent
/// chains to cover the FMA latency on two ports, plus the query vector.
const TILE_ROWS: usize = 12;
/// Rows per tile for what is left after the full tiles, before single rows.
const SHORT_TILE_ROWS: usize = 4;

entry_points!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma");

/// [`scan`] for dimension `D`, or any dimension (`panel.len()`) when `D == 0`: full tiles, then
/// tiles of [`SHORT_TILE_ROWS`], then single rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn scan_dim<const D: usize, F>(
    panel: &[[f32; LANES]],
    rows: &[f32],
    thresholds: &mut [f32; LANES],
    on_hit: &mut F,
) where
    F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
{
    let d = if D == 0 { panel.len() } else { D };
    assert_eq!(panel.len(), d);
    let mut tiles = rows.chunks_exact(TILE_ROWS * d);
    let mut row = 0;
    for tile_rows in tiles.by_ref() {
        tile::<TILE_ROWS, D, F>(panel, tile_rows, row, thresholds, on_hit);
        row += TILE_ROWS;
    }
    let mut short = tiles.remainder().chunks_exact(SHORT_TILE_ROWS * d);
    for tile_rows in short.by_ref() {
        tile::<SHORT_TILE_ROWS, D, F>(panel, tile_rows, row, thresholds, on_hit);
        row += SHORT_TILE_ROWS;
    }
    for tile_rows in short.remainder().chunks_exact(d) {
        tile::<1, D, F>(panel, tile_rows, row, thresholds, on_hit);
        row += 1;
    }
}

/// Scores the `R` rows of `tile_rows` (`[R, d]`), the first being row `first_row` of the scan,
/// and reports the hits; `D` as in [`scan_dim`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn tile<const R: usize, const D: usize, F>(
    panel: &[[f32; LANES]],
    tile_rows: &[f32],
    first_row: usize,
    thresholds: &mut [f32; LANES],
    on_hit: &mut F,
) where
    F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
{
    let d = if D == 0 { panel.len() } else { D };
    assert!(panel.len() == d && tile_rows.len() == R * d);
    // Each row sliced to exactly `d`, so that `rows[i][j]` with `j < d` needs no check.
    let mut rows: [&[f32]; R] = [&[]; R];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = &tile_rows[i * d..][..d];
    }
    // Component 0 starts the chains with a product (the documented score).
    let q = load16(&panel[0]);
    let mut acc = [_mm512_setzero_ps(); R];
    for i in 0..R {
        acc[i] = _mm512_mul_ps(q, _mm512_set1_ps(rows[i][0]));
    }
    for j in 1..d {
        let q = load16(&panel[j]);
        for i in 0..R {
            acc[i] = _mm512_fmadd_ps(q, _mm512_set1_ps(rows[i][j]), acc[i]);
        }
    }
    let t = load16(thresholds);
    let mut any = 0u16;
    for i in 0..R {
        any |= _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(acc[i], t);
    }
    if any != 0 {
        report(&acc, first_row, thresholds, on_hit);
    }
}

/// The rare path: finds the rows of the tile with a hit against the current thresholds and
/// hands their scores to `on_hit`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[cold]
#[inline(never)]
fn report<const R: usize, F>(
    acc: &[__m512; R],
    first_row: usize,
    thresholds: &mut [f32; LANES],
    on_hit: &mut F,
) where
    F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
{
    for i in 0..R {
        let mask = u32::from(_mm512_cmp_ps_mask::<_CMP_NLE_UQ>(
            acc[i],
            load16(thresholds),
        ));
        if mask != 0 {
            let mut scores = [0f32; LANES];
            // SAFETY: `scores` is 16 writable, contiguous f32; the store is unaligned.
            unsafe { _mm512_storeu_ps(scores.as_mut_ptr(), acc[i]) };
            on_hit(first_row + i, &scores, mask, thresholds);
        }
    }
}

/// Groups of 16 rows per int16 tile: 6 queries x 4 groups = 24 accumulators, plus the 4 groups'
/// rows and one broadcast, within the 32 `zmm` registers.
const TILE_GROUPS: usize = 4;

/// [`scan_i16`] for `P` pairs, or any number (`panel.len()`) when `P == 0`: tiles of
/// [`TILE_GROUPS`] groups, then single groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn scan_i16_dim<const P: usize, F>(
    panel: &[[i32; QUERIES_I16]],
    groups: &[PairOfRows],
    thresholds: &mut [i32; QUERIES_I16],
    on_hit: &mut F,
) where
    F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
{
    let pairs = if P == 0 { panel.len() } else { P };
    assert_eq!(panel.len(), pairs);
    let mut tiles = groups.chunks_exact(TILE_GROUPS * pairs);
    let mut row = 0;
    for tile_groups in tiles.by_ref() {
        tile_i16::<TILE_GROUPS, P, F>(panel, tile_groups, row, thresholds, on_hit);
        row += TILE_GROUPS * ROWS_I16;
    }
    for group in tiles.remainder().chunks_exact(pairs) {
        tile_i16::<1, P, F>(panel, group, row, thresholds, on_hit);
        row += ROWS_I16;
    }
}

/// Dot products of the panel's queries with the `V` groups of `tile_groups`, the first row
/// being row `first_row` of the scan; `P` as in [`scan_i16_dim`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn tile_i16<const V: usize, const P: usize, F>(
    panel: &[[i32; QUERIES_I16]],
    tile_groups: &[PairOfRows],
    first_row: usize,
    thresholds: &mut [i32; QUERIES_I16],
    on_hit: &mut F,
) where
    F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
{
    let pairs = if P == 0 { panel.len() } else { P };
    assert!(panel.len() == pairs && tile_groups.len() == V * pairs);
    let mut groups: [&[PairOfRows]; V] = [&[]; V];
    for (v, group) in groups.iter_mut().enumerate() {
        *group = &tile_groups[v * pairs..][..pairs];
    }
    let mut acc = [[_mm512_setzero_si512(); V]; QUERIES_I16];
    for p in 0..pairs {
        let mut rows = [_mm512_setzero_si512(); V];
        for v in 0..V {
            rows[v] = load_pair_of_rows(&groups[v][p]);
        }
        for (qi, acc) in acc.iter_mut().enumerate() {
            let q = _mm512_set1_epi32(panel[p][qi]);
            for v in 0..V {
                acc[v] = _mm512_dpwssd_epi32(acc[v], rows[v], q);
            }
        }
    }
    let mut any = 0u16;
    for (acc, &t) in acc.iter().zip(thresholds.iter()) {
        let t = _mm512_set1_epi32(t);
        for v in 0..V {
            any |= _mm512_cmpgt_epi32_mask(acc[v], t);
        }
    }
    if any != 0 {
        report_i16(&acc, first_row, thresholds, on_hit);
    }
}

/// The rare path of the int16 kernel, as [`report`] for the f32 one.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[cold]
#[inline(never)]
fn report_i16<const V: usize, F>(
    acc: &[[__m512i; V]; QUERIES_I16],
    first_row: usize,
    thresholds: &mut [i32; QUERIES_I16],
    on_hit: &mut F,
) where
    F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
{
    for (qi, acc) in acc.iter().enumerate() {
        for (v, &dots) in acc.iter().enumerate() {
            let t = _mm512_set1_epi32(thresholds[qi]);
            let mask = u32::from(_mm512_cmpgt_epi32_mask(dots, t));
            if mask != 0 {
                let mut out = [0i32; ROWS_I16];
                // SAFETY: `out` is 16 writable, contiguous i32 (64 bytes); the store is
                // unaligned.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast::<__m512i>(), dots) };
                on_hit(qi, first_row + v * ROWS_I16, &out, mask, thresholds);
            }
        }
    }
}

/// One [`PairOfRows`] as a vector.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn load_pair_of_rows(v: &PairOfRows) -> __m512i {
    // SAFETY: `v` is 32 contiguous readable i16 (64 bytes); the load is unaligned.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast::<__m512i>()) }
}

/// The 16 lanes of `v` as one vector.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
#[inline]
fn load16(v: &[f32; LANES]) -> __m512 {
    // SAFETY: `v` is 16 contiguous readable f32; the load is unaligned.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}
