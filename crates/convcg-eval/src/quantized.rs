//! The int16 engine of [`exact_top_k`](crate::exact_top_k): a first pass in integers over
//! quantised embeddings, then exact f32 rescoring of every candidate the first pass cannot rule
//! out, so that the result equals the f32 engine's bit for bit.
//!
//! # Why the result is exact
//!
//! The corpus is quantised with one scale `sc` (`c ~ sc * ĉ`, `ĉ` integer) and each query with
//! its own `sq`. The integer dot product `D = q̂ · ĉ` is exact, and `a = sq * sc * D`
//! approximates the f32 score `s` (the FMA chain of [`Simd::scan`]) within
//!
//! ```text
//! |s - a| <= |s - q.c| + |q.c - a|
//!          <= γ_d |q| max|c|  +  |q| max|c - sc ĉ|  +  |q - sq q̂| max|sc ĉ|  =:  E
//! ```
//!
//! (the first term the rounding of a d-term FMA chain, `γ_d = d u / (1 - d u)`, `u = 2^-24`, plus
//! a tiny allowance for subnormals; the others Cauchy-Schwarz). Let `D_k` be the k-th largest
//! `D` over the corpus and `M >= 2E / (sq sc)` in integer units. At least `k` rows have
//! `D >= D_k`, hence `s >= a_k - E`; a row with `D < D_k - M` has `s <= a + E < a_k - E`, strictly
//! below all of those, so it is not in the top k whatever the tie rule. The first pass therefore
//! keeps every row with `D >= D_k - M` (with the running k-th largest, which only grows, so the
//! filter only ever keeps more), and the survivors are rescored with the f32 chain and selected
//! exactly as the f32 engine selects.
//!
//! Inputs the argument does not cover (a non-finite value, a corpus of zeros, scores near the
//! f32 overflow) are left to the f32 engine: [`exact_top_k_quantized`] returns `None`.

use convcg_kernels::Par;
use rayon::prelude::*;

use crate::exact::{Search, Tiling};
use crate::select::Selector;
use crate::simd::{PairOfRows, QUERIES_I16, ROWS_I16, Simd, fill_panels};
use crate::topk::{TopK, share_query_chunks};

/// Largest quantisation level: 12 bits and a sign, as fine as the i32 sums allow at d = 64 (see
/// [`levels`]).
const MAX_LEVEL: i32 = 4095;

/// Quantisation level `L` for `d_pad` components: integers lie in `[-L, L]`, and
/// `d_pad * L * L < 2^31` keeps every dot product (and partial sum) inside i32.
fn levels(d_pad: usize) -> i32 {
    let bound = (i32::MAX as f64 / d_pad as f64).sqrt().floor() as i32;
    bound.clamp(1, MAX_LEVEL)
}

/// `x` rounded to an integer, half away from zero, for `|x| < 2^31`: one conversion instead of
/// libm's `round` (any nearby integer would do: the error is measured, not assumed).
#[inline]
fn round(x: f64) -> f64 {
    f64::from((x + 0.5f64.copysign(x)) as i32)
}

/// The corpus, quantised and laid out for [`Simd::scan_i16`], with the norms the error bound
/// needs.
struct QuantizedCorpus {
    /// `[groups, pairs]`: group `g` holds rows `16g..16g + 16` (rows past `n` are zero).
    groups: Vec<PairOfRows>,
    pairs: usize,
    /// `c ~ scale * ĉ`.
    scale: f64,
    /// Largest `|c - scale ĉ|`, `|scale ĉ|` and `|c|` over the rows.
    err_max: f64,
    dequant_norm_max: f64,
    norm_max: f64,
}

/// Quantises `corpus` (`[n, d]`), or `None` if a value is not finite or all are zero.
fn quantize_corpus(corpus: &[f32], d: usize, par: Par) -> Option<QuantizedCorpus> {
    let pairs = d.div_ceil(2);
    let level = levels(2 * pairs);
    let abs_max = |chunk: &[f32]| chunk.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let finite = |chunk: &[f32]| chunk.iter().all(|x| x.is_finite());
    // One task per thread: at most `t` busy under `Par::Rayon(t)`.
    let tasks = match par {
        Par::Rayon(threads) => threads.get(),
        Par::Seq => 1,
    };
    let n_groups = (corpus.len() / d).div_ceil(ROWS_I16);
    let groups_per_task = n_groups.div_ceil(tasks).max(1);
    let (max, all_finite) = match par {
        Par::Rayon(_) => corpus
            .par_chunks(groups_per_task * ROWS_I16 * d)
            .map(|c| (abs_max(c), finite(c)))
            .reduce(|| (0.0, true), |a, b| (a.0.max(b.0), a.1 && b.1)),
        Par::Seq => (abs_max(corpus), finite(corpus)),
    };
    if !all_finite || max == 0.0 {
        return None;
    }
    let scale = f64::from(max) / f64::from(level);
    let inv_scale = 1.0 / scale;
    let mut groups = vec![[0i16; 2 * ROWS_I16]; n_groups * pairs];
    // Each task quantises whole groups and returns its (err, dequantised norm, norm) maxima.
    let quantize = |first_group: usize, out: &mut [PairOfRows]| -> (f64, f64, f64) {
        let mut maxima = (0f64, 0f64, 0f64);
        for (g, out) in out.chunks_exact_mut(pairs).enumerate() {
            let row0 = (first_group + g) * ROWS_I16;
            for r in 0..ROWS_I16 {
                let Some(row) = corpus.get((row0 + r) * d..(row0 + r + 1) * d) else {
                    break;
                };
                let (mut err, mut dequant, mut norm) = (0f64, 0f64, 0f64);
                for (j, &x) in row.iter().enumerate() {
                    let x = f64::from(x);
                    let level = round(x * inv_scale);
                    out[j / 2][2 * r + j % 2] = level as i16;
                    err += (x - level * scale).powi(2);
                    dequant += (level * scale).powi(2);
                    norm += x * x;
                }
                maxima.0 = maxima.0.max(err.sqrt());
                maxima.1 = maxima.1.max(dequant.sqrt());
                maxima.2 = maxima.2.max(norm.sqrt());
            }
        }
        maxima
    };
    let max3 = |a: (f64, f64, f64), b: (f64, f64, f64)| (a.0.max(b.0), a.1.max(b.1), a.2.max(b.2));
    let (err_max, dequant_norm_max, norm_max) = match par {
        Par::Rayon(_) => groups
            .par_chunks_mut(groups_per_task * pairs)
            .enumerate()
            .map(|(t, out)| quantize(t * groups_per_task, out))
            .reduce(|| (0.0, 0.0, 0.0), max3),
        Par::Seq => quantize(0, &mut groups),
    };
    Some(QuantizedCorpus {
        groups,
        pairs,
        scale,
        err_max,
        dequant_norm_max,
        norm_max,
    })
}

/// One query, quantised: the kernel's words, and the margin `M` of the module docs.
struct QuantizedQuery {
    /// `words[p]`: components `2p` (low i16) and `2p + 1` (high i16).
    words: Vec<i32>,
    margin: i64,
}

/// Quantises `query` against `corpus`'s scale, or `None` if it is not finite or its scores could
/// come near the f32 range's end.
fn quantize_query(query: &[f32], corpus: &QuantizedCorpus) -> Option<QuantizedQuery> {
    if !query.iter().all(|x| x.is_finite()) {
        return None;
    }
    let level = levels(2 * corpus.pairs);
    let norm = query
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    if norm * corpus.norm_max > 1e30 {
        return None;
    }
    let max = query.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let scale = if max > 0.0 {
        f64::from(max) / f64::from(level)
    } else {
        1.0
    };
    let mut words = vec![0i32; corpus.pairs];
    let mut err = 0f64;
    for (j, &x) in query.iter().enumerate() {
        let x = f64::from(x);
        let level = round(x / scale);
        err += (x - level * scale).powi(2);
        let half = (level as i16 as u16 as u32) << (16 * (j % 2));
        words[j / 2] |= half as i32;
    }
    let d = query.len() as f64;
    let u = f64::powi(2.0, -24);
    let gamma = d * u / (1.0 - d * u);
    let bound = gamma * norm * corpus.norm_max
        + norm * corpus.err_max
        + err.sqrt() * corpus.dequant_norm_max;
    // Slack for the rounding of this f64 arithmetic and for f32 subnormals.
    let bound = bound * (1.0 + 1e-6) + d * f64::powi(2.0, -140);
    let margin = (2.0 * bound / (scale * corpus.scale)).ceil() + 1.0;
    // Past i32's range every row survives, which is correct (if slow); such margins come only
    // from degenerate scales.
    let margin = if margin < 2f64.powi(40) {
        margin as i64
    } else {
        1 << 40
    };
    Some(QuantizedQuery { words, margin })
}

/// The first pass's selection for one query: every row whose dot product may still reach the
/// top k, that is `D >= D_k - margin` with `D_k` the k-th largest so far.
struct Candidates {
    k: usize,
    margin: i64,
    /// `(D, id)` in increasing id order.
    buf: Vec<(i32, u32)>,
    cap: usize,
    /// Rows with `D < cut` are out; only grows.
    cut: i64,
    scratch: Vec<i32>,
}

impl Candidates {
    fn new(k: usize, margin: i64) -> Self {
        let cap = 2 * k.max(64);
        Self {
            k,
            margin,
            buf: Vec::with_capacity(cap),
            cap,
            cut: i64::MIN,
            scratch: Vec::new(),
        }
    }

    /// The kernel's threshold: rows with `D > threshold`, i.e. `D >= cut`, are offered.
    fn threshold(&self) -> i32 {
        self.cut
            .saturating_sub(1)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }

    #[inline]
    fn offer(&mut self, dot: i32, id: u32) {
        if i64::from(dot) >= self.cut {
            self.buf.push((dot, id));
            if self.buf.len() >= self.cap {
                self.compact();
            }
        }
    }

    /// Raises the cut to the k-th largest `D` so far less the margin and drops the rows below
    /// it; grows the buffer if most rows stay.
    fn compact(&mut self) {
        if self.buf.len() >= self.k {
            self.scratch.clear();
            self.scratch.extend(self.buf.iter().map(|&(dot, _)| dot));
            let (_, &mut kth, _) = self
                .scratch
                .select_nth_unstable_by(self.k - 1, |a, b| b.cmp(a));
            self.cut = self.cut.max(i64::from(kth) - self.margin);
            let cut = self.cut;
            self.buf.retain(|&(dot, _)| i64::from(dot) >= cut);
        }
        if self.buf.len() * 2 > self.cap {
            self.cap *= 2;
        }
    }
}

/// [`exact_top_k`](crate::exact_top_k)'s int16 engine; `None` where the module docs say the f32
/// engine must answer instead. Chunks of `tiling.queries` queries go to the workers as they come
/// free, each sweeping the quantised corpus in blocks of `tiling.corpus` rows (rounded up to
/// whole tiles).
///
/// `queries` `[nq, d]` and `corpus` `[n, d]` have been checked; `1 <= k <= n`, `nq >= 1`.
pub(crate) fn exact_top_k_quantized(
    search: Search<'_>,
    par: Par,
    simd: Simd,
    tiling: Tiling,
) -> Option<TopK> {
    let Search {
        queries,
        corpus,
        d,
        k,
    } = search;
    let corpus_q = quantize_corpus(corpus, d, par)?;
    let quantized: Vec<QuantizedQuery> = queries
        .chunks_exact(d)
        .map(|q| quantize_query(q, &corpus_q))
        .collect::<Option<_>>()?;
    let mut top = TopK::zeroed(quantized.len(), k);
    // Whole groups per block.
    let block_groups = tiling.corpus.div_ceil(ROWS_I16).max(1);
    share_query_chunks(
        queries,
        d,
        tiling.queries,
        &mut top,
        par,
        || QuantizedScan {
            simd,
            corpus,
            corpus_q: &corpus_q,
            d,
            k,
            block_groups,
            panels: Vec::new(),
            thresholds: Vec::new(),
            candidates: Vec::new(),
            survivor_ids: Vec::new(),
            survivor_scores: Vec::new(),
        },
        |scan, chunk| {
            let quantized = &quantized[chunk.range];
            scan.run(chunk.queries, quantized, chunk.ids, chunk.scores)
        },
    );
    Some(top)
}

/// One worker's state for the int16 engine, reused from chunk to chunk.
struct QuantizedScan<'a> {
    simd: Simd,
    corpus: &'a [f32],
    corpus_q: &'a QuantizedCorpus,
    d: usize,
    k: usize,
    block_groups: usize,
    /// Panels of [`QUERIES_I16`] queries: `panels[p * pairs + j][qi]` is word `j` of the chunk's
    /// query `p * QUERIES_I16 + qi` (zero past the chunk's last query).
    panels: Vec<[i32; QUERIES_I16]>,
    /// The kernel's thresholds per panel; `i32::MAX` (nothing passes) on slots without a query.
    thresholds: Vec<[i32; QUERIES_I16]>,
    candidates: Vec<Candidates>,
    survivor_ids: Vec<u32>,
    survivor_scores: Vec<f32>,
}

impl QuantizedScan<'_> {
    fn run(
        &mut self,
        queries: &[f32],
        quantized: &[QuantizedQuery],
        ids: &mut [u32],
        scores: &mut [f32],
    ) {
        let (d, k, pairs) = (self.d, self.k, self.corpus_q.pairs);
        let n = self.corpus.len() / d;
        let words = quantized.iter().map(|q| q.words.as_slice());
        let n_panels = fill_panels(&mut self.panels, pairs, words);
        self.candidates.clear();
        self.candidates
            .extend(quantized.iter().map(|q| Candidates::new(k, q.margin)));
        self.thresholds.clear();
        self.thresholds.extend((0..n_panels).map(|p| {
            std::array::from_fn(|qi| match self.candidates.get(p * QUERIES_I16 + qi) {
                Some(c) => c.threshold(),
                None => i32::MAX,
            })
        }));
        let all_groups = &self.corpus_q.groups;
        let mut g0 = 0;
        while g0 * pairs < all_groups.len() {
            let block = &all_groups[g0 * pairs..]
                [..(self.block_groups * pairs).min(all_groups.len() - g0 * pairs)];
            let row0 = g0 * ROWS_I16;
            for ((panel, panel_thresholds), panel_candidates) in self
                .panels
                .chunks_exact(pairs)
                .zip(&mut self.thresholds)
                .zip(self.candidates.chunks_mut(QUERIES_I16))
            {
                self.simd.scan_i16(
                    panel,
                    block,
                    panel_thresholds,
                    |qi, first, dots, mask, t| {
                        let Some(cand) = panel_candidates.get_mut(qi) else {
                            return;
                        };
                        let mut bits = mask;
                        while bits != 0 {
                            let r = bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            let id = row0 + first + r;
                            // Rows past `n` are padding; `id < n` fits u32 (checked by the
                            // caller).
                            if id < n {
                                cand.offer(dots[r], id as u32);
                            }
                        }
                        t[qi] = cand.threshold();
                    },
                );
            }
            g0 += self.block_groups;
        }
        for (((query, cand), ids), scores) in queries
            .chunks_exact(d)
            .zip(&mut self.candidates)
            .zip(ids.chunks_exact_mut(k))
            .zip(scores.chunks_exact_mut(k))
        {
            cand.compact();
            self.survivor_ids.clear();
            self.survivor_ids.extend(cand.buf.iter().map(|&(_, id)| id));
            self.survivor_scores.clear();
            self.survivor_scores.resize(self.survivor_ids.len(), 0.0);
            self.simd.chain_scores(
                query,
                self.corpus,
                &self.survivor_ids,
                &mut self.survivor_scores,
            );
            let mut sel = Selector::new(k);
            for (&id, &s) in self.survivor_ids.iter().zip(&self.survivor_scores) {
                sel.offer_one(s, id);
            }
            sel.finish(ids, scores);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::{SCAN, exact_top_k_fused};
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    fn normal(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.sample(StandardNormal)).collect()
    }

    /// The int16 engine against the f32 engine: equal ids and bit-equal scores, or `None` where
    /// the inputs are left to the f32 engine.
    /// Every kernel family of the CPU is checked, against the narrowest family's f32 engine.
    fn check(queries: &[f32], corpus: &[f32], d: usize, k: usize) -> Option<()> {
        let available = Simd::available();
        let kk = k.min(corpus.len() / d);
        let search = Search::new(queries, corpus, d, kk);
        let want = exact_top_k_fused(search, Par::Seq, *available.first()?, SCAN);
        let splits = [
            (Par::Seq, 256, 512),
            (Par::rayon(2), 5, 17),
            (Par::rayon(3), 1, 1),
        ];
        let mut results = Vec::new();
        for &simd in &available {
            for &(par, chunk, block) in &splits {
                let tiling = Tiling {
                    queries: chunk,
                    corpus: block,
                };
                let got = exact_top_k_quantized(search, par, simd, tiling);
                results.push((got, format!("{simd:?} chunk {chunk} block {block}")));
            }
            let fused = exact_top_k_fused(search, Par::Seq, simd, SCAN);
            assert_eq!(fused, want, "{simd:?}: f32 engine");
        }
        if results.iter().all(|(got, _)| got.is_none()) {
            return None;
        }
        let bits = |t: &TopK| t.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        for (got, split) in results {
            let got = got.expect("answered for one split and not another");
            assert_eq!(got.ids, want.ids, "ids, {split}");
            assert_eq!(bits(&got), bits(&want), "scores, {split}");
        }
        Some(())
    }

    #[test]
    fn equals_the_f32_engine_on_w2_shaped_data() {
        if Simd::available().is_empty() {
            return;
        }
        let d = 64;
        let unit = |rows: usize, seed: u64| {
            let mut v = normal(rows * d, seed);
            for row in v.chunks_exact_mut(d) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= norm);
            }
            v
        };
        let queries = unit(70, 31);
        let mut corpus = unit(30_000, 32);
        // Exact duplicates and a near-duplicate within f32 rounding of the original.
        corpus.copy_within(0..300 * d, 20_000 * d);
        corpus.copy_within(5 * d..6 * d, 29_999 * d);
        corpus[29_999 * d] = f32::from_bits(corpus[29_999 * d].to_bits() + 1);
        for k in [1, 100, 1000] {
            assert_eq!(check(&queries, &corpus, d, k), Some(()), "k {k}");
        }
    }

    #[test]
    fn equals_the_f32_engine_at_awkward_sizes_and_scales() {
        if Simd::available().is_empty() {
            return;
        }
        for n in [1, 5, 8, 15, 16, 17, 33, 1000, 4097] {
            for d in [1, 2, 3, 63, 64, 65] {
                let queries = normal(13 * d, n as u64);
                let corpus = normal(n * d, 7 + d as u64);
                for k in [1, 10, 100, n + 3] {
                    assert_eq!(
                        check(&queries, &corpus, d, k),
                        Some(()),
                        "n {n} d {d} k {k}"
                    );
                }
            }
        }
        // Scales far from 1, rows of very different norms, and a zero query.
        let d = 16;
        let mut corpus = normal(3000 * d, 40);
        for (i, row) in corpus.chunks_exact_mut(d).enumerate() {
            let scale = [1e-30f32, 1e-3, 1.0, 1e3, 1e12][i % 5];
            row.iter_mut().for_each(|x| *x *= scale);
        }
        let mut queries = normal(9 * d, 41);
        queries[..d].fill(0.0);
        queries[d..2 * d].iter_mut().for_each(|x| *x *= 1e-20);
        queries[2 * d..3 * d].iter_mut().for_each(|x| *x *= 1e10);
        for k in [1, 50, 3000] {
            assert_eq!(check(&queries, &corpus, d, k), Some(()), "k {k}");
        }
    }

    #[test]
    fn inputs_outside_the_bound_are_left_to_the_f32_engine() {
        if Simd::available().is_empty() {
            return;
        }
        let d = 4;
        let corpus = normal(100 * d, 50);
        let queries = normal(3 * d, 51);
        assert_eq!(check(&queries, &corpus, d, 5), Some(()));
        let mut nan = corpus.clone();
        nan[17] = f32::NAN;
        assert_eq!(check(&queries, &nan, d, 5), None);
        let mut inf = queries.clone();
        inf[2] = f32::INFINITY;
        assert_eq!(check(&inf, &corpus, d, 5), None);
        assert_eq!(check(&queries, &vec![0.0; 100 * d], d, 5), None);
        let huge: Vec<f32> = queries.iter().map(|x| x * 1e30).collect();
        let huge_corpus: Vec<f32> = corpus.iter().map(|x| x * 1e10).collect();
        assert_eq!(check(&huge, &huge_corpus, d, 5), None);
    }

    #[test]
    fn candidates_keep_every_row_within_the_margin_of_the_kth() {
        let mut cand = Candidates::new(3, 10);
        for id in 0..1000u32 {
            cand.offer((id % 97) as i32 * 4, id);
        }
        cand.compact();
        // k-th largest is 96 * 4 = 384: every row with D >= 374 stays, none below.
        assert!(cand.buf.iter().all(|&(dot, _)| dot >= 374));
        let expected = (0..1000u32).filter(|id| (id % 97) * 4 >= 374).count();
        assert_eq!(cand.buf.len(), expected);
        assert!(cand.buf.windows(2).all(|w| w[0].1 < w[1].1));
        assert_eq!(cand.threshold(), 373);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_floats_give_the_f32_engines_answer(
            nq in 1usize..10, n in 1usize..200, d in 1usize..9, k in 1usize..30,
            spread in 0i32..20, seed in any::<u64>(),
        ) {
            // Components spread over 2^-spread..1 with many near-ties from the coarse grid.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut value = |_| {
                let x: f32 = rng.random_range(-8..=8) as f32 / 8.0;
                x * f32::powi(2.0, -rng.random_range(0..=spread))
            };
            let queries: Vec<f32> = (0..nq * d).map(&mut value).collect();
            let corpus: Vec<f32> = (0..n * d).map(&mut value).collect();
            let answered = check(&queries, &corpus, d, k);
            prop_assert!(answered.is_some() || corpus.iter().all(|&x| x == 0.0));
        }
    }
}
