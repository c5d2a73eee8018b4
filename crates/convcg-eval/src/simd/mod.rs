//! The one place of the crate with `unsafe`: the scoring micro-kernels of the exact engines,
//! compiled for AVX2 + FMA ([`avx2`]) and for AVX-512 with VNNI ([`avx512`]) and chosen at run
//! time ([`Simd::detect`]); on other CPUs (and other architectures) `detect` returns `None` and
//! the caller uses the portable GEMM path.
//!
//! - [`Simd::scan`] scores a panel of [`LANES`] queries against corpus rows in f32 and filters
//!   the scores against per-query thresholds in registers, so that only the rare candidate ever
//!   leaves them. Every score is one fused multiply-add chain over the components in order,
//!   `s = fma(q[d-1], c[d-1], ... fma(q[1], c[1], q[0] * c[0]))`, computed lane-wise: a score
//!   depends only on its query and its corpus row, never on the instruction set, the panel, the
//!   lane, the row's place in a tile or the thread, which is what makes results identical across
//!   thread counts and CPUs. [`Simd::chain_scores`] computes the same chains for chosen rows.
//! - [`Simd::scan_i16`] does the same for quantised embeddings: exact i32 dot products of i16
//!   vectors ([`QUERIES_I16`] queries against groups of [`ROWS_I16`] rows), filtered against i32
//!   thresholds. The sums are exact, so both instruction sets give the same integers.
#![allow(unsafe_code)]

use convcg_kernels::SimdLevel;

/// The entry points of a kernel module, [`Simd::scan`]'s and [`Simd::scan_i16`]'s, compiled
/// with the module's target features: each dispatches the common embedding width (d = 64, 32
/// pairs) to a copy of the module's `scan_dim` / `scan_i16_dim` with the dimension known, so that
/// the component loop has a constant trip count, and any other width to the general copy.
#[cfg(target_arch = "x86_64")]
macro_rules! entry_points {
    ($features:literal) => {
        #[target_feature(enable = $features)]
        pub(super) fn scan<F>(
            panel: &[[f32; LANES]],
            rows: &[f32],
            thresholds: &mut [f32; LANES],
            on_hit: &mut F,
        ) where
            F: FnMut(usize, &[f32; LANES], u32, &mut [f32; LANES]),
        {
            if panel.len() == 64 {
                scan_dim::<64, F>(panel, rows, thresholds, on_hit);
            } else {
                scan_dim::<0, F>(panel, rows, thresholds, on_hit);
            }
        }

        #[target_feature(enable = $features)]
        pub(super) fn scan_i16<F>(
            panel: &[[i32; QUERIES_I16]],
            groups: &[PairOfRows],
            thresholds: &mut [i32; QUERIES_I16],
            on_hit: &mut F,
        ) where
            F: FnMut(usize, usize, &[i32; ROWS_I16], u32, &mut [i32; QUERIES_I16]),
        {
            if panel.len() == 32 {
                scan_i16_dim::<32, F>(panel, groups, thresholds, on_hit);
            } else {
                scan_i16_dim::<0, F>(panel, groups, thresholds, on_hit);
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Queries scored together by one call of the f32 kernel: two 8-wide vectors, or one 16-wide.
pub(crate) const LANES: usize = 16;
/// Queries scored together by one call of the int16 kernel, each broadcast against corpus rows.
pub(crate) const QUERIES_I16: usize = 6;
/// Corpus rows in one group of the int16 layout: one 16-lane vector of i32 results, or two
/// 8-lane ones.
pub(crate) const ROWS_I16: usize = 16;
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

/// Asserts that `len` is a whole, non-zero number of units of `unit` (`what` and `unit_name`
/// name them in the message).
#[track_caller]
fn whole_units(len: usize, unit: usize, what: &str, unit_name: &str) {
    assert!(
        unit > 0 && len.is_multiple_of(unit),
        "{what} {len} is not a multiple of {unit_name} = {unit}"
    );
}

/// The instruction sets of a [`Simd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// AVX2 and FMA: 8-lane vectors.
    Avx2,
    /// AVX-512 F, BW, VL and VNNI (with AVX2 and FMA): 16-lane vectors.
    Avx512,
}

/// Proof that the CPU running this process has the instruction sets of its kernels; only
/// [`Simd::detect`] and [`Simd::available`] make one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Simd(Isa);

/// Calls a kernel of module `avx2` or `avx512`, as the receiver's [`Isa`] says. On x86_64 the
/// call is sound: a [`Simd`] exists only if the CPU has that instruction set, which is all that
/// the kernels (safe functions apart from their target features) require. Elsewhere no `Simd`
/// can exist, so the call is unreachable; the `unused` arguments are named only to keep them
/// used there.
macro_rules! dispatch {
    ($isa:expr, $function:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see the macro's documentation: the receiver proves the instruction set.
        unsafe {
            match $isa {
                Isa::Avx2 => avx2::$function($($arg),*),
                Isa::Avx512 => avx512::$function($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = ($isa, $($arg),*);
            unreachable!("Simd cannot be constructed off x86_64")
        }
    }};
}

impl Simd {
    /// The widest kernels this CPU runs ([`SimdLevel::detect`], so `CONVCG_SIMD` may lower it),
    /// or `None` below AVX2 and FMA.
    pub(crate) fn detect() -> Option<Self> {
        Self::at(SimdLevel::detect())
    }

    /// Every kernel family this CPU runs, narrowest first, whatever `CONVCG_SIMD` says: what
    /// tests compare with each other.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        [SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|&level| level <= SimdLevel::supported())
            .filter_map(Self::at)
            .collect()
    }

    /// The kernels of `level`, which the caller has checked this CPU supports.
    fn at(level: SimdLevel) -> Option<Self> {
        match level {
            SimdLevel::Portable => None,
            SimdLevel::Avx2 => Some(Self(Isa::Avx2)),
            SimdLevel::Avx512 | SimdLevel::Amx => Some(Self(Isa::Avx512)),
        }
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
    /// thresholds; rows after the current tile of up to 12 rows see the new values, rows in the
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
        dispatch!(self.0, scan(panel, rows, thresholds, &mut on_hit))
    }

    /// Integer dot products of the [`QUERIES_I16`] quantised queries of `panel` with every row
    /// of `groups`, reporting the rows where some query's dot product beats its threshold.
    ///
    /// Layout: `panel[p][qi]` holds query `qi`'s components `2p` and `2p + 1` as the low and
    /// high i16 of an i32; `groups` is `[g, pairs]` of [`PairOfRows`], group `g` holding rows
    /// `16g..16g + 16`, `groups[g * pairs + p]` their components `2p` and `2p + 1` (so
    /// `pairs = panel.len()`). The dot product of query `qi` with a row is the exact sum of the
    /// i16 products, accumulated in wrapping i32: the caller keeps `|sum|` below `2^31`.
    ///
    /// For each query `qi` and each group of rows, in increasing row order per query, the
    /// kernel calls `on_hit(qi, first_row, &dots, mask, thresholds)` when `mask != 0`, where
    /// `first_row` is the group's first row (counted from `groups[0]`), `dots[r]` the dot
    /// product with row `first_row + r`, and bit `r` of `mask` is set iff
    /// `dots[r] > thresholds[qi]`. `on_hit` may raise thresholds; rows after the current tile of
    /// up to 4 groups see the new values (earlier reports are a superset, never a miss).
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
        dispatch!(self.0, scan_i16(panel, groups, thresholds, &mut on_hit))
    }

    /// The f32 score of `query` with each row `ids[i]` of `corpus` (`[n, d]`, `d =
    /// query.len()`) into `out[i]`: the same FMA chain, bit for bit, as [`Simd::scan`].
    ///
    /// # Panics
    /// If `out.len() != ids.len()`, `query` is empty, or an id is out of range.
    pub(crate) fn chain_scores(self, query: &[f32], corpus: &[f32], ids: &[u32], out: &mut [f32]) {
        assert!(!query.is_empty() && out.len() == ids.len());
        // Scalar FMA chains: AVX2's FMA serves both instruction sets.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: every `Simd` proves AVX2 and FMA (AVX-512 machines have both).
        unsafe {
            avx2::chain_scores(query, corpus, ids, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (self, corpus, ids);
            unreachable!("Simd cannot be constructed off x86_64")
        }
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

    /// Every kernel family of this CPU with every dimension of `dims`; says on stderr which
    /// families there are, so that a run on a CPU without them is visibly not a test of them.
    fn each_simd<const N: usize>(dims: [usize; N]) -> Vec<(Simd, usize)> {
        let available = Simd::available();
        eprintln!("kernels tested on this CPU: {available:?}");
        available
            .into_iter()
            .flat_map(|simd| dims.map(|d| (simd, d)))
            .collect()
    }

    #[test]
    fn int16_dots_are_exact_and_hits_follow_thresholds() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for (simd, d) in each_simd([2, 6, 64]) {
            let pairs = d / 2;
            for n in [0, 1, 8, 9, 16, 17, 40, 64, 65, 100] {
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
                                assert_eq!(dots[r], dot(qi, row), "{simd:?} d {d} row {row}");
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
                            assert!(
                                seen.contains(&(qi, row)),
                                "{simd:?} d {d} row {row} query {qi}"
                            );
                            best[qi] = best[qi].max(s);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn chain_scores_are_the_kernels_fma_chains() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for (simd, d) in each_simd([1, 5, 64]) {
            let corpus: Vec<f32> = (0..50 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let query: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let ids: Vec<u32> = (0..19).map(|_| rng.random_range(0..50)).collect();
            let mut out = vec![0.0; ids.len()];
            simd.chain_scores(&query, &corpus, &ids, &mut out);
            for (&id, &s) in ids.iter().zip(&out) {
                let want = fma_chain(&query, &corpus[id as usize * d..][..d]);
                assert_eq!(s.to_bits(), want.to_bits(), "{simd:?} d {d} id {id}");
            }
        }
    }

    #[test]
    fn scores_are_fma_chains_and_hits_follow_thresholds() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (simd, d) in each_simd([1, 2, 7, 64, 65]) {
            for n in [0, 1, 5, 6, 7, 12, 13, 16, 17, 29, 40] {
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
                        assert_eq!(
                            s[lane].to_bits(),
                            want.to_bits(),
                            "{simd:?} d {d} row {row}"
                        );
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
                        assert!(
                            seen.contains(&(row, lane)),
                            "{simd:?} d {d} row {row} lane {lane}"
                        );
                    }
                }
                let mut best = [-0.1f32; LANES];
                for row in 0..n {
                    for lane in (1..LANES).step_by(2) {
                        let s = fma_chain(&queries[lane * d..][..d], &rows[row * d..][..d]);
                        if s > best[lane] {
                            assert!(
                                seen.contains(&(row, lane)),
                                "{simd:?} d {d} row {row} lane {lane}"
                            );
                            best[lane] = s;
                        }
                    }
                }
            }
        }
    }
}
