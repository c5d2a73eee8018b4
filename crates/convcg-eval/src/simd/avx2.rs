//! The AVX2 + FMA kernels of [`Simd`](super::Simd): 8-lane vectors in the 16 `ymm` registers.

use std::arch::x86_64::{
    __m256, __m256i, _CMP_NLE_UQ, _mm256_add_epi32, _mm256_castsi256_ps, _mm256_cmp_ps,
    _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_movemask_epi8, _mm256_movemask_ps, _mm256_mul_ps, _mm256_or_ps, _mm256_or_si256,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_storeu_ps,
    _mm256_storeu_si256,
};

use super::{LANES, PairOfRows, QUERIES_I16, ROWS_I16};

/// Corpus rows per register tile: 6 rows x 16 queries = 12 accumulators, plus two query
/// vectors and one broadcast, within the 16 `ymm` registers.
const TILE_ROWS: usize = 6;

entry_points!("avx2,fma");

/// [`scan`] for dimension `D`, or any dimension (`panel.len()`) when `D == 0`.
#[target_feature(enable = "avx2,fma")]
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
    let rest = tiles.remainder();
    match rest.len() / d {
        0 => {}
        1 => tile::<1, D, F>(panel, rest, row, thresholds, on_hit),
        2 => tile::<2, D, F>(panel, rest, row, thresholds, on_hit),
        3 => tile::<3, D, F>(panel, rest, row, thresholds, on_hit),
        4 => tile::<4, D, F>(panel, rest, row, thresholds, on_hit),
        _ => tile::<5, D, F>(panel, rest, row, thresholds, on_hit),
    }
}

/// Scores the `R` rows of `tile_rows` (`[R, d]`), the first being row `first_row` of the
/// scan, and reports the hits; `D` as in [`scan_dim`].
#[target_feature(enable = "avx2,fma")]
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
    let (q_lo, q_hi) = load16(&panel[0]);
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    for i in 0..R {
        let c = bcast(rows[i], 0);
        lo[i] = _mm256_mul_ps(q_lo, c);
        hi[i] = _mm256_mul_ps(q_hi, c);
    }
    for j in 1..d {
        let (q_lo, q_hi) = load16(&panel[j]);
        for i in 0..R {
            let c = bcast(rows[i], j);
            lo[i] = _mm256_fmadd_ps(q_lo, c, lo[i]);
            hi[i] = _mm256_fmadd_ps(q_hi, c, hi[i]);
        }
    }
    let (t_lo, t_hi) = load16(thresholds);
    let mut any = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_NLE_UQ>(lo[0], t_lo),
        _mm256_cmp_ps::<_CMP_NLE_UQ>(hi[0], t_hi),
    );
    for i in 1..R {
        any = _mm256_or_ps(any, _mm256_cmp_ps::<_CMP_NLE_UQ>(lo[i], t_lo));
        any = _mm256_or_ps(any, _mm256_cmp_ps::<_CMP_NLE_UQ>(hi[i], t_hi));
    }
    if _mm256_movemask_ps(any) != 0 {
        report(&lo, &hi, first_row, thresholds, on_hit);
    }
}

/// The rare path: finds the rows of the tile with a hit against the current thresholds and
/// hands their scores to `on_hit`.
#[target_feature(enable = "avx2,fma")]
#[cold]
#[inline(never)]
fn report<const R: usize, F>(
    lo: &[__m256; R],
    hi: &[__m256; R],
    first_row: usize,
    thresholds: &mut [f32; LANES],
    on_hit: &mut F,
) where
    F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
{
    for i in 0..R {
        let (t_lo, t_hi) = load16(thresholds);
        let mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(lo[i], t_lo)) as u32
            | (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(hi[i], t_hi)) as u32) << 8;
        if mask != 0 {
            let mut scores = [0f32; LANES];
            let (s_lo, s_hi) = scores.split_at_mut(8);
            // SAFETY: `s_lo` and `s_hi` are 8 writable, contiguous f32 each; the store is
            // unaligned.
            unsafe {
                _mm256_storeu_ps(s_lo.as_mut_ptr(), lo[i]);
                _mm256_storeu_ps(s_hi.as_mut_ptr(), hi[i]);
            }
            on_hit(first_row + i, &scores, mask, thresholds);
        }
    }
}

/// [`scan_i16`] for `P` pairs, or any number (`panel.len()`) when `P == 0`. Each int16 tile is
/// one group of 16 rows, as two 8-lane halves: 6 queries x 2 halves = 12 accumulators, plus the
/// two halves, one broadcast and one product: the 16 `ymm` registers.
#[target_feature(enable = "avx2,fma")]
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
    for (g, group) in groups.chunks_exact(pairs).enumerate() {
        tile_i16::<P, F>(panel, group, g * ROWS_I16, thresholds, on_hit);
    }
}

/// Dot products of the panel's queries with the rows of `group`, the first being row
/// `first_row` of the scan; `P` as in [`scan_i16_dim`].
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tile_i16<const P: usize, F>(
    panel: &[[i32; QUERIES_I16]],
    group: &[PairOfRows],
    first_row: usize,
    thresholds: &mut [i32; QUERIES_I16],
    on_hit: &mut F,
) where
    F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
{
    let pairs = if P == 0 { panel.len() } else { P };
    assert!(panel.len() == pairs && group.len() == pairs);
    let mut acc = [[_mm256_setzero_si256(); 2]; QUERIES_I16];
    for p in 0..pairs {
        let halves = load_pair_of_rows(&group[p]);
        for (qi, acc) in acc.iter_mut().enumerate() {
            let q = _mm256_set1_epi32(panel[p][qi]);
            for h in 0..2 {
                acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(halves[h], q));
            }
        }
    }
    let mut any = _mm256_setzero_si256();
    for (acc, &t) in acc.iter().zip(thresholds.iter()) {
        let t = _mm256_set1_epi32(t);
        for h in 0..2 {
            any = _mm256_or_si256(any, _mm256_cmpgt_epi32(acc[h], t));
        }
    }
    if _mm256_movemask_epi8(any) != 0 {
        report_i16(&acc, first_row, thresholds, on_hit);
    }
}

/// The rare path of the int16 kernel, as [`report`] for the f32 one.
#[target_feature(enable = "avx2,fma")]
#[cold]
#[inline(never)]
fn report_i16<F>(
    acc: &[[__m256i; 2]; QUERIES_I16],
    first_row: usize,
    thresholds: &mut [i32; QUERIES_I16],
    on_hit: &mut F,
) where
    F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
{
    for (qi, acc) in acc.iter().enumerate() {
        let t = _mm256_set1_epi32(thresholds[qi]);
        let mask = above(acc[0], t) | above(acc[1], t) << 8;
        if mask != 0 {
            let mut out = [0i32; ROWS_I16];
            let (lo, hi) = out.split_at_mut(8);
            // SAFETY: `lo` and `hi` are 8 writable, contiguous i32 (32 bytes) each; the stores
            // are unaligned.
            unsafe {
                _mm256_storeu_si256(lo.as_mut_ptr().cast::<__m256i>(), acc[0]);
                _mm256_storeu_si256(hi.as_mut_ptr().cast::<__m256i>(), acc[1]);
            }
            on_hit(qi, first_row, &out, mask, thresholds);
        }
    }
}

/// Bit `i` set iff `dots[i] > t[i]`, for the 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn above(dots: __m256i, t: __m256i) -> u32 {
    _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(dots, t))) as u32
}

/// One [`PairOfRows`] as two vectors: rows 0..8 and 8..16.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn load_pair_of_rows(v: &PairOfRows) -> [__m256i; 2] {
    // SAFETY: `v` is 32 contiguous readable i16 (64 bytes), so both 32-byte unaligned loads stay
    // inside.
    unsafe {
        let p = v.as_ptr().cast::<__m256i>();
        [_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))]
    }
}

/// Rows scored 8 at a time by [`chain_scores`]: 8 independent chains hide the FMA latency.
const CHAINS: usize = 8;

#[target_feature(enable = "avx2,fma")]
pub(super) fn chain_scores(query: &[f32], corpus: &[f32], ids: &[u32], out: &mut [f32]) {
    let d = query.len();
    let row = |id: u32| &corpus[id as usize * d..][..d];
    let mut ids = ids.chunks_exact(CHAINS);
    let mut outs = out.chunks_exact_mut(CHAINS);
    for (ids, out) in ids.by_ref().zip(outs.by_ref()) {
        let rows: [&[f32]; CHAINS] = std::array::from_fn(|t| row(ids[t]));
        let mut acc = [0f32; CHAINS];
        for t in 0..CHAINS {
            acc[t] = query[0] * rows[t][0];
        }
        for j in 1..d {
            for t in 0..CHAINS {
                acc[t] = query[j].mul_add(rows[t][j], acc[t]);
            }
        }
        out.copy_from_slice(&acc);
    }
    for (&id, out) in ids.remainder().iter().zip(outs.into_remainder()) {
        let r = row(id);
        *out = (1..d).fold(query[0] * r[0], |acc, j| query[j].mul_add(r[j], acc));
    }
}

/// Lanes 0..8 and 8..16 of `v` as two vectors.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn load16(v: &[f32; LANES]) -> (__m256, __m256) {
    // SAFETY: `v` is 16 contiguous readable f32, so both 8-wide unaligned loads stay inside.
    unsafe {
        (
            _mm256_loadu_ps(v.as_ptr()),
            _mm256_loadu_ps(v.as_ptr().add(8)),
        )
    }
}

/// `row[j]` in all 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn bcast(row: &[f32], j: usize) -> __m256 {
    _mm256_set1_ps(row[j])
}
