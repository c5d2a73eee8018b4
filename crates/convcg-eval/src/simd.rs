//! The one place of the crate with `unsafe`: the AVX2 + FMA micro-kernels, chosen at run time
//! ([`Fma256::detect`]); on other CPUs (and other architectures) `detect` returns `None` and the
//! caller uses the portable GEMM path.
//!
//! - [`Fma256::scan`] scores a panel of [`LANES`] queries against corpus rows in f32 and filters
//!   the scores against per-query thresholds in registers, so that only the rare candidate ever
//!   leaves them. Every score is one fused multiply-add chain over the components in order,
//!   `s = fma(q[d-1], c[d-1], ... fma(q[1], c[1], q[0] * c[0]))`, computed lane-wise: a score
//!   depends only on its query and its corpus row, never on the panel, the lane, the row's
//!   place in a block or the thread, which is what makes results identical across thread
//!   counts. [`Fma256::chain_scores`] computes the same chains for chosen rows.
//! - [`Fma256::scan_i16`] does the same for quantised embeddings: exact i32 dot products of
//!   i16 vectors ([`QUERIES_I16`] queries against 16 rows at a time), filtered against i32
//!   thresholds.
#![allow(unsafe_code)]

/// Queries scored together by one call of the f32 kernel: two 8-wide vectors.
pub(crate) const LANES: usize = 16;
/// Queries scored together by one call of the int16 kernel, each broadcast against corpus rows.
pub(crate) const QUERIES_I16: usize = 6;
/// Corpus rows in one group of the int16 layout (one 8-lane vector of i32 results).
pub(crate) const ROWS_I16: usize = 8;
/// One component pair of [`ROWS_I16`] rows in the int16 layout: `[row0 c0, row0 c1, row1 c0, ...]`.
pub(crate) type PairOfRows = [i16; 2 * ROWS_I16];

/// Lays `rows` (each at most `width` long) out as the panels of the kernels, which score `L`
/// queries together: component `j` of row `p * L + lane` goes to `panels[p * width + j][lane]`,
/// and every other slot (lanes past the last row, components past a short row) is zero. Returns
/// the number of panels.
pub(crate) fn fill_panels<'r, T: Copy + Default + 'r, const L: usize>(
    panels: &mut Vec<[T; L]>,
    width: usize,
    rows: impl ExactSizeIterator<Item = &'r [T]>,
) -> usize {
    let n_panels = rows.len().div_ceil(L);
    panels.clear();
    panels.resize(n_panels * width, [T::default(); L]);
    for (i, row) in rows.enumerate() {
        let (p, lane) = (i / L, i % L);
        for (j, &x) in row.iter().enumerate() {
            panels[p * width + j][lane] = x;
        }
    }
    n_panels
}

/// Calls a kernel of `x86` from a method of [`Fma256`]. On x86_64 the call is sound: a `Fma256`
/// exists only if `detect` found AVX2 and FMA on this CPU, which is all that the kernels (safe
/// functions apart from their target features) require. Elsewhere no `Fma256` can exist, so
/// the call is unreachable; the `unused` arguments are named only to keep them used there.
macro_rules! with_avx2_fma {
    ($call:expr, unused($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see the macro's documentation: the receiver proves AVX2 and FMA.
        unsafe {
            $call
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = ($($arg),*);
            unreachable!("Fma256 cannot be constructed off x86_64")
        }
    }};
}

/// Asserts that `len` is a whole, non-zero number of units of `unit` (`what` and `unit_name`
/// name them in the message).
#[track_caller]
fn whole_units(len: usize, unit: usize, what: &str, unit_name: &str) {
    assert!(
        unit > 0 && len.is_multiple_of(unit),
        "{what} {len} is not a multiple of {unit_name} = {unit}"
    );
}

/// Proof that the CPU running this process has AVX2 and FMA; only [`Fma256::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fma256(());

impl Fma256 {
    /// `Some` when the CPU has AVX2 and FMA (checked once per call, cheaply: std caches it).
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Self(()));
            }
        }
        None
    }

    /// Scores the [`LANES`] queries of `panel` against every row of `rows` and reports the rows
    /// where some query's score may beat its threshold.
    ///
    /// `panel[j][lane]` is component `j` of query `lane` (so `panel.len()` is the dimension `d`);
    /// `rows` is `[r, d]` row-major. For each row `i` in increasing order, with `s[lane]` the
    /// score of query `lane` against row `i`, the kernel calls
    /// `on_hit(i, &s, mask, thresholds)` when `mask != 0`, where bit `lane` of `mask` is set iff
    /// `!(s[lane] <= thresholds[lane])`: the score is greater, or either is NaN. A NaN threshold
    /// therefore passes every score, and `+inf` passes only NaN scores. `on_hit` may raise
    /// thresholds; rows after the current tile of up to 6 rows see the new values, rows in the
    /// same tile may still be reported against the old ones (a superset, never a miss).
    ///
    /// # Panics
    /// If `rows.len()` is not a multiple of `panel.len()`, or `panel` is empty.
    pub(crate) fn scan<F>(
        self,
        panel: &[[f32; LANES]],
        rows: &[f32],
        thresholds: &mut [f32; LANES],
        mut on_hit: F,
    ) where
        F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
    {
        whole_units(rows.len(), panel.len(), "rows length", "d");
        with_avx2_fma!(
            x86::scan(panel, rows, thresholds, &mut on_hit),
            unused(rows, thresholds, &mut on_hit)
        )
    }
}

impl Fma256 {
    /// Integer dot products of the [`QUERIES_I16`] quantised queries of `panel` with every row
    /// of `groups`, reporting the rows where some query's dot product beats its threshold.
    ///
    /// Layout: `panel[p][qi]` holds query `qi`'s components `2p` and `2p + 1` as the low and
    /// high i16 of an i32; `groups` is `[g, pairs]` of [`PairOfRows`], group `g` holding rows
    /// `8g..8g + 8`, `groups[g * pairs + p]` their components `2p` and `2p + 1` (so
    /// `pairs = panel.len()`). The dot product of query `qi` with a row is the exact sum of the
    /// i16 products, accumulated in wrapping i32: the caller keeps `|sum|` below `2^31`.
    ///
    /// For each query `qi` and each group of 8 rows, in increasing row order per query, the
    /// kernel calls `on_hit(qi, first_row, &dots, mask, thresholds)` when `mask != 0`, where
    /// `first_row` is the group's first row (counted from `groups[0]`), `dots[r]` the dot
    /// product with row `first_row + r`, and bit `r` of `mask` is set iff
    /// `dots[r] > thresholds[qi]`. `on_hit` may raise thresholds; rows after the current tile of
    /// up to 16 rows see the new values (earlier reports are a superset, never a miss).
    ///
    /// # Panics
    /// If `groups.len()` is not a multiple of `panel.len()`, or `panel` is empty.
    pub(crate) fn scan_i16<F>(
        self,
        panel: &[[i32; QUERIES_I16]],
        groups: &[PairOfRows],
        thresholds: &mut [i32; QUERIES_I16],
        mut on_hit: F,
    ) where
        F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
    {
        whole_units(groups.len(), panel.len(), "row pairs", "pairs per group");
        with_avx2_fma!(
            x86::scan_i16(panel, groups, thresholds, &mut on_hit),
            unused(groups, thresholds, &mut on_hit)
        )
    }

    /// The f32 score of `query` with each row `ids[i]` of `corpus` (`[n, d]`, `d =
    /// query.len()`) into `out[i]`: the same FMA chain, bit for bit, as [`Fma256::scan`].
    ///
    /// # Panics
    /// If `out.len() != ids.len()`, `query` is empty, or an id is out of range.
    pub(crate) fn chain_scores(self, query: &[f32], corpus: &[f32], ids: &[u32], out: &mut [f32]) {
        assert!(!query.is_empty() && out.len() == ids.len());
        with_avx2_fma!(
            x86::chain_scores(query, corpus, ids, out),
            unused(corpus, ids)
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m256i, _CMP_NLE_UQ, _mm256_add_epi32, _mm256_castsi256_ps, _mm256_cmp_ps,
        _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256,
        _mm256_madd_epi16, _mm256_movemask_epi8, _mm256_movemask_ps, _mm256_mul_ps, _mm256_or_ps,
        _mm256_or_si256, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_setzero_si256, _mm256_storeu_ps, _mm256_storeu_si256,
    };

    use super::{LANES, PairOfRows, QUERIES_I16, ROWS_I16};

    /// Corpus rows per register tile: 6 rows x 16 queries = 12 accumulators, plus two query
    /// vectors and one broadcast, within the 16 `ymm` registers.
    const TILE_ROWS: usize = 6;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn scan<F>(
        panel: &[[f32; LANES]],
        rows: &[f32],
        thresholds: &mut [f32; LANES],
        on_hit: &mut F,
    ) where
        F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
    {
        // The common embedding width gets a copy of the kernel with the dimension known, so
        // the component loop has a constant trip count.
        if panel.len() == 64 {
            scan_dim::<64, F>(panel, rows, thresholds, on_hit);
        } else {
            scan_dim::<0, F>(panel, rows, thresholds, on_hit);
        }
    }

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

    /// Groups of 8 rows per int16 tile: 6 queries x 2 groups = 12 accumulators, plus two row
    /// vectors, one broadcast and one product: the 16 `ymm` registers.
    const TILE_GROUPS: usize = 2;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn scan_i16<F>(
        panel: &[[i32; QUERIES_I16]],
        groups: &[PairOfRows],
        thresholds: &mut [i32; QUERIES_I16],
        on_hit: &mut F,
    ) where
        F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
    {
        // As for the f32 kernel: d = 64 (32 pairs) gets a copy with a constant trip count.
        if panel.len() == 32 {
            scan_i16_dim::<32, F>(panel, groups, thresholds, on_hit);
        } else {
            scan_i16_dim::<0, F>(panel, groups, thresholds, on_hit);
        }
    }

    /// [`scan_i16`] for `P` pairs, or any number (`panel.len()`) when `P == 0`.
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
        let mut tiles = groups.chunks_exact(TILE_GROUPS * pairs);
        let mut row = 0;
        for tile_groups in tiles.by_ref() {
            tile_i16::<TILE_GROUPS, P, F>(panel, tile_groups, row, thresholds, on_hit);
            row += TILE_GROUPS * ROWS_I16;
        }
        let rest = tiles.remainder();
        if !rest.is_empty() {
            tile_i16::<1, P, F>(panel, rest, row, thresholds, on_hit);
        }
    }

    /// Dot products of the panel's queries with the `V` groups of `tile_groups`, the first row
    /// being row `first_row` of the scan; `P` as in [`scan_i16_dim`].
    #[target_feature(enable = "avx2,fma")]
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
        let mut vecs: [&[PairOfRows]; V] = [&[]; V];
        for (v, vec) in vecs.iter_mut().enumerate() {
            *vec = &tile_groups[v * pairs..][..pairs];
        }
        let mut acc = [[_mm256_setzero_si256(); V]; QUERIES_I16];
        for p in 0..pairs {
            let mut rows = [_mm256_setzero_si256(); V];
            for v in 0..V {
                rows[v] = load_pair_of_rows(&vecs[v][p]);
            }
            for (qi, acc) in acc.iter_mut().enumerate() {
                let q = _mm256_set1_epi32(panel[p][qi]);
                for v in 0..V {
                    acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(rows[v], q));
                }
            }
        }
        let mut any = _mm256_setzero_si256();
        for (acc, &t) in acc.iter().zip(thresholds.iter()) {
            let t = _mm256_set1_epi32(t);
            for v in 0..V {
                any = _mm256_or_si256(any, _mm256_cmpgt_epi32(acc[v], t));
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
    fn report_i16<const V: usize, F>(
        acc: &[[__m256i; V]; QUERIES_I16],
        first_row: usize,
        thresholds: &mut [i32; QUERIES_I16],
        on_hit: &mut F,
    ) where
        F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
    {
        for (qi, acc) in acc.iter().enumerate() {
            for (v, &dots) in acc.iter().enumerate() {
                let t = _mm256_set1_epi32(thresholds[qi]);
                let mask =
                    _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(dots, t))) as u32;
                if mask != 0 {
                    let mut out = [0i32; ROWS_I16];
                    // SAFETY: `out` is 8 writable, contiguous i32 (32 bytes); the store is
                    // unaligned.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast::<__m256i>(), dots) };
                    on_hit(qi, first_row + v * ROWS_I16, &out, mask, thresholds);
                }
            }
        }
    }

    /// One [`PairOfRows`] as a vector.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn load_pair_of_rows(v: &PairOfRows) -> __m256i {
        // SAFETY: `v` is 16 contiguous readable i16 (32 bytes); the load is unaligned.
        unsafe { _mm256_loadu_si256(v.as_ptr().cast::<__m256i>()) }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The documented score: one FMA chain over the components in order.
    fn fma_chain(q: &[f32], c: &[f32]) -> f32 {
        q.iter()
            .zip(c)
            .skip(1)
            .fold(q[0] * c[0], |acc, (&x, &y)| x.mul_add(y, acc))
    }

    #[test]
    fn int16_dots_are_exact_and_hits_follow_thresholds() {
        let Some(simd) = Fma256::detect() else {
            return;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for d in [2, 6, 64] {
            let pairs = d / 2;
            for n in [0, 1, 8, 9, 16, 17, 40] {
                let queries: Vec<i16> = (0..QUERIES_I16 * d)
                    .map(|_| rng.random_range(-4095..=4095))
                    .collect();
                let rows: Vec<i16> = (0..n * d).map(|_| rng.random_range(-4095..=4095)).collect();
                let dot = |qi: usize, row: usize| -> i32 {
                    (0..d)
                        .map(|j| i32::from(queries[qi * d + j]) * i32::from(rows[row * d + j]))
                        .sum()
                };
                let panel: Vec<[i32; QUERIES_I16]> = (0..pairs)
                    .map(|p| {
                        std::array::from_fn(|qi| {
                            let (lo, hi) = (queries[qi * d + 2 * p], queries[qi * d + 2 * p + 1]);
                            (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32
                        })
                    })
                    .collect();
                let n_groups = n.div_ceil(ROWS_I16);
                let mut groups = vec![[0i16; 2 * ROWS_I16]; n_groups * pairs];
                for row in 0..n {
                    for j in 0..d {
                        groups[row / ROWS_I16 * pairs + j / 2][2 * (row % ROWS_I16) + j % 2] =
                            rows[row * d + j];
                    }
                }
                // Even queries take everything; odd ones only what beats the best so far.
                let mut thresholds =
                    std::array::from_fn(|qi| if qi % 2 == 0 { i32::MIN } else { 0 });
                let mut seen = Vec::new();
                simd.scan_i16(
                    &panel,
                    &groups,
                    &mut thresholds,
                    |qi, first, dots, mask, t| {
                        for r in 0..ROWS_I16 {
                            let row = first + r;
                            if mask >> r & 1 == 1 && row < n {
                                assert_eq!(dots[r], dot(qi, row), "d {d} row {row}");
                                seen.push((qi, row));
                                if qi % 2 == 1 {
                                    t[qi] = t[qi].max(dots[r]);
                                }
                            }
                        }
                    },
                );
                let mut best = [0i32; QUERIES_I16];
                for row in 0..n {
                    for qi in 0..QUERIES_I16 {
                        let s = dot(qi, row);
                        if qi % 2 == 0 || s > best[qi] {
                            assert!(seen.contains(&(qi, row)), "d {d} row {row} query {qi}");
                            best[qi] = best[qi].max(s);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn chain_scores_are_the_kernels_fma_chains() {
        let Some(simd) = Fma256::detect() else {
            return;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for d in [1, 5, 64] {
            let corpus: Vec<f32> = (0..50 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let query: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let ids: Vec<u32> = (0..19).map(|_| rng.random_range(0..50)).collect();
            let mut out = vec![0.0; ids.len()];
            simd.chain_scores(&query, &corpus, &ids, &mut out);
            for (&id, &s) in ids.iter().zip(&out) {
                let want = fma_chain(&query, &corpus[id as usize * d..][..d]);
                assert_eq!(s.to_bits(), want.to_bits(), "d {d} id {id}");
            }
        }
    }

    #[test]
    fn scores_are_fma_chains_and_hits_follow_thresholds() {
        let Some(simd) = Fma256::detect() else {
            eprintln!("no AVX2 + FMA here: kernel not tested");
            return;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for d in [1, 2, 7, 64] {
            for n in [0, 1, 5, 6, 7, 13, 40] {
                let queries: Vec<f32> = (0..LANES * d)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let rows: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
                let panel: Vec<[f32; LANES]> = (0..d)
                    .map(|j| std::array::from_fn(|lane| queries[lane * d + j]))
                    .collect();
                // Half the lanes take everything (NaN), the rest only what beats a threshold
                // that rises on every hit.
                let mut thresholds: [f32; LANES] =
                    std::array::from_fn(|lane| if lane % 2 == 0 { f32::NAN } else { -0.1 });
                let mut seen = Vec::new();
                simd.scan(&panel, &rows, &mut thresholds, |row, s, mask, t| {
                    for lane in 0..LANES {
                        let want = fma_chain(&queries[lane * d..][..d], &rows[row * d..][..d]);
                        assert_eq!(s[lane].to_bits(), want.to_bits(), "d {d} row {row}");
                        if mask >> lane & 1 == 1 {
                            seen.push((row, lane));
                            if lane % 2 == 1 {
                                t[lane] = t[lane].max(s[lane]);
                            }
                        }
                    }
                });
                // Replay: every NaN lane sees every row; the others exactly the records, as
                // far as the tile-granular threshold updates allow (a superset is allowed).
                for row in 0..n {
                    for lane in (0..LANES).step_by(2) {
                        assert!(seen.contains(&(row, lane)), "d {d} row {row} lane {lane}");
                    }
                }
                let mut best = [-0.1f32; LANES];
                for row in 0..n {
                    for lane in (1..LANES).step_by(2) {
                        let s = fma_chain(&queries[lane * d..][..d], &rows[row * d..][..d]);
                        if s > best[lane] {
                            assert!(seen.contains(&(row, lane)), "d {d} row {row} lane {lane}");
                            best[lane] = s;
                        }
                    }
                }
            }
        }
    }
}
