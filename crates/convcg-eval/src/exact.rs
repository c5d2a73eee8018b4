use std::borrow::Cow;

use convcg_kernels::{Accum, Par, Rows, RowsMut, gemm};
use ndarray::ArrayView2;

use crate::quantized::exact_top_k_quantized;
use crate::select::Selector;
use crate::simd::{LANES, Simd, fill_panels};
use crate::topk::{TopK, assert_ids_fit, for_each_query_range, share_query_chunks};

/// Portable path: queries scored together by one GEMM; also the unit of parallel work.
const QUERY_BLOCK: usize = 128;
/// Portable path: corpus rows per GEMM. The block (256 KiB at d = 64) and the
/// `QUERY_BLOCK x CORPUS_BLOCK` scratch (512 KiB) stay in cache while the selection reads the
/// scores back.
const CORPUS_BLOCK: usize = 1024;
/// Fused path: queries per unit of parallel work. Each chunk reads the whole corpus from memory
/// once (256 MiB at W2), so chunks are large enough for that to be cheap beside the scoring, and
/// small enough that the workers finish close together.
const SCAN_CHUNK: usize = 256;
/// Fused path: corpus rows per block. Every query panel of a worker sweeps one block before the
/// next is touched, so the block (128 KiB at d = 64) is read from memory once per chunk of
/// queries and from L2 by each panel.
const SCAN_BLOCK: usize = 512;

/// What every engine of [`exact_top_k`] is asked: the top `k` of each query of `queries`
/// (`[nq, d]`) over `corpus` (`[n, d]`), both row-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Search<'a> {
    pub(crate) queries: &'a [f32],
    pub(crate) corpus: &'a [f32],
    pub(crate) d: usize,
    pub(crate) k: usize,
}

impl<'a> Search<'a> {
    pub(crate) fn new(queries: &'a [f32], corpus: &'a [f32], d: usize, k: usize) -> Self {
        Self {
            queries,
            corpus,
            d,
            k,
        }
    }

    /// Query and corpus rows, after checking the shapes as [`exact_top_k`] documents.
    #[track_caller]
    fn shapes(&self) -> (usize, usize) {
        let Self {
            queries, corpus, d, ..
        } = *self;
        assert!(d > 0, "embedding dimension must be positive");
        assert!(
            queries.len().is_multiple_of(d),
            "queries length {} is not a multiple of d = {d}",
            queries.len()
        );
        assert!(
            corpus.len().is_multiple_of(d),
            "corpus length {} is not a multiple of d = {d}",
            corpus.len()
        );
        let n = corpus.len() / d;
        assert_ids_fit(n);
        (queries.len() / d, n)
    }
}

/// How an engine of [`exact_top_k`] cuts its work: `queries` per unit of parallel work (a chunk
/// or a block of queries), and `corpus` rows per block swept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiling {
    pub(crate) queries: usize,
    pub(crate) corpus: usize,
}

/// The portable path's tiling.
const BLOCKED: Tiling = Tiling {
    queries: QUERY_BLOCK,
    corpus: CORPUS_BLOCK,
};
/// The fused and int16 paths' tiling.
pub(crate) const SCAN: Tiling = Tiling {
    queries: SCAN_CHUNK,
    corpus: SCAN_BLOCK,
};

/// Fewest queries for which the int16 first pass pays for quantising the corpus (one pass over
/// it, about as long as scoring a few dozen queries against it).
const QUANTIZED_MIN_QUERIES: usize = 64;

/// Exact inner-product top-k: `queries` `[nq, d]` and `corpus` `[n, d]`, both row-major.
///
/// Returns `min(k, n)` items per query (`TopK.k = min(k, n)`), best first, ties broken by smaller
/// id. No full row of scores is ever materialised: every query keeps a bounded selection whose
/// threshold (the current k-th best) rejects almost every score with one comparison.
///
/// The engine is chosen at run time:
/// - on x86_64 CPUs with AVX2 and FMA, a register-blocked f32 kernel scores 16 queries against 6
///   corpus rows at a time (12 with AVX-512) and compares the scores with the 16 thresholds
///   before they leave the registers; the corpus is swept in blocks that stay in L2 while every
///   query panel passes;
/// - there, from 64 queries up, a first pass in int16 (queries and corpus quantised, exact
///   integer dot products, 6 queries x 16 rows at a time, x 64 rows with AVX-512 VNNI's
///   `vpdpwssd`) keeps every row that a proven bound on
///   the quantisation and f32 rounding errors cannot rule out, and only those are scored in f32:
///   the result is the f32 kernel's, ids and scores bit for bit (inputs the bound does not
///   cover, such as non-finite values, go to the f32 kernel);
/// - elsewhere, one GEMM per block of queries and block of corpus rows into a reused scratch,
///   then the selection reads it back.
///
/// With `Par::Rayon(n)` at most `n` rayon workers share the queries (the SIMD engines hand out
/// chunks of 256 queries as workers come free; the portable one splits the queries into at most
/// `n` contiguous ranges). A score depends only on its query and corpus row, never on the
/// blocking, the schedule or the thread count, so `Par::Seq` and any `Par::Rayon(n)` give
/// bit-identical results.
///
/// Scores are f32: with AVX2 and FMA each is one FMA chain over the components in order, else a
/// GEMM result. Candidates whose exact scores differ by less than the f32 rounding error may
/// come out in either order, and the order may differ between CPUs with and without AVX2.
///
/// # Panics
/// If `d == 0`, if `queries.len()` or `corpus.len()` is not a multiple of `d`, or if the corpus
/// has more than `u32::MAX + 1` rows (ids are `u32`).
#[track_caller]
pub fn exact_top_k(queries: &[f32], corpus: &[f32], d: usize, k: usize, par: Par) -> TopK {
    let search = Search::new(queries, corpus, d, k);
    let Some(simd) = Simd::detect() else {
        return exact_top_k_blocked(search, par, BLOCKED);
    };
    let (nq, n) = search.shapes();
    if nq >= QUANTIZED_MIN_QUERIES && k.min(n) > 0 {
        let capped = Search {
            k: k.min(n),
            ..search
        };
        if let Some(top) = exact_top_k_quantized(capped, par, simd, SCAN) {
            return top;
        }
    }
    exact_top_k_fused(search, par, simd, SCAN)
}

/// [`exact_top_k`] on ndarray views `[nq, d]` and `[n, d]`, as the model hands embeddings over.
///
/// Views that are not in standard (row-major, contiguous) layout are copied once.
///
/// # Panics
/// If the two views have different numbers of columns, if that number is 0, or if the corpus has
/// more than `u32::MAX + 1` rows.
#[track_caller]
pub fn exact_top_k_arrays(
    queries: ArrayView2<'_, f32>,
    corpus: ArrayView2<'_, f32>,
    k: usize,
    par: Par,
) -> TopK {
    let d = queries.ncols();
    assert_eq!(
        corpus.ncols(),
        d,
        "queries have {d} columns but the corpus has {}",
        corpus.ncols()
    );
    let (queries, corpus) = (row_major(queries), row_major(corpus));
    exact_top_k(&queries, &corpus, d, k, par)
}

fn row_major(a: ArrayView2<'_, f32>) -> Cow<'_, [f32]> {
    match a.to_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// The fused SIMD engine of [`exact_top_k`]: chunks of `tiling.queries` queries, handed out to
/// the workers on demand, each sweeping the corpus in blocks of `tiling.corpus` rows.
///
/// Chunks go to whichever worker is free, so a worker slowed down by other processes on the
/// machine holds up the others by one chunk at most; which worker scores a query does not change
/// its scores, so the results do not depend on the schedule.
#[track_caller]
pub(crate) fn exact_top_k_fused(search: Search<'_>, par: Par, simd: Simd, tiling: Tiling) -> TopK {
    let (nq, n) = search.shapes();
    let Search {
        queries,
        corpus,
        d,
        k,
    } = search;
    let mut top = TopK::zeroed(nq, k.min(n));
    let k = top.k;
    if k == 0 || nq == 0 {
        return top;
    }
    share_query_chunks(
        queries,
        d,
        tiling.queries,
        &mut top,
        par,
        || FusedScan::new(simd, d, k, tiling.corpus),
        |scan, chunk| scan.run(chunk.queries, corpus, chunk.ids, chunk.scores),
    );
    top
}

/// One worker's state for the fused engine, reused from chunk to chunk.
struct FusedScan {
    simd: Simd,
    d: usize,
    k: usize,
    corpus_block: usize,
    /// Panels of [`LANES`] queries, transposed: `panels[p * d + j][lane]` is component `j` of
    /// the chunk's query `p * LANES + lane`; lanes past the chunk's last query are zero.
    panels: Vec<[f32; LANES]>,
    /// The kernel's filter per lane, see [`Selector::filter_threshold`]; `+inf` (nothing but NaN
    /// passes) on lanes without a query.
    thresholds: Vec<[f32; LANES]>,
    selectors: Vec<Selector>,
}

impl FusedScan {
    fn new(simd: Simd, d: usize, k: usize, corpus_block: usize) -> Self {
        Self {
            simd,
            d,
            k,
            corpus_block: corpus_block.max(1),
            panels: Vec::new(),
            thresholds: Vec::new(),
            selectors: Vec::new(),
        }
    }

    /// Top-k of each query of `queries` (`[m, d]`) over the whole `corpus` into `ids` and
    /// `scores` (`m * k` each).
    fn run(&mut self, queries: &[f32], corpus: &[f32], ids: &mut [u32], scores: &mut [f32]) {
        let (d, k) = (self.d, self.k);
        let (m, n) = (queries.len() / d, corpus.len() / d);
        let n_panels = fill_panels(&mut self.panels, d, queries.chunks_exact(d));
        self.thresholds.clear();
        self.thresholds.extend((0..n_panels).map(|p| {
            std::array::from_fn(|lane| {
                if p * LANES + lane < m {
                    f32::NAN
                } else {
                    f32::INFINITY
                }
            })
        }));
        self.selectors.resize_with(m, || Selector::new(k));
        self.selectors.iter_mut().for_each(Selector::reset);
        let selectors = &mut self.selectors[..m];
        let mut c0 = 0;
        while c0 < n {
            let cb = self.corpus_block.min(n - c0);
            let block = &corpus[c0 * d..(c0 + cb) * d];
            for ((panel, panel_thresholds), panel_selectors) in self
                .panels
                .chunks_exact(d)
                .zip(&mut self.thresholds)
                .zip(selectors.chunks_mut(LANES))
            {
                self.simd
                    .scan(panel, block, panel_thresholds, |row, s, mask, t| {
                        // `c0 + row < n`, which fits u32 (checked by `shapes`).
                        let id = (c0 + row) as u32;
                        let mut bits = mask;
                        while bits != 0 {
                            let lane = bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            if let Some(sel) = panel_selectors.get_mut(lane) {
                                sel.offer_one(s[lane], id);
                                t[lane] = sel.filter_threshold();
                            }
                        }
                    });
            }
            c0 += cb;
        }
        for ((sel, ids), scores) in selectors
            .iter_mut()
            .zip(ids.chunks_exact_mut(k))
            .zip(scores.chunks_exact_mut(k))
        {
            sel.finish(ids, scores);
        }
    }
}

/// The portable GEMM engine of [`exact_top_k`]: blocks of `tiling.queries` queries times blocks
/// of `tiling.corpus` corpus rows.
#[track_caller]
pub(crate) fn exact_top_k_blocked(search: Search<'_>, par: Par, tiling: Tiling) -> TopK {
    let (nq, n) = search.shapes();
    let Search {
        queries,
        corpus,
        d,
        k,
    } = search;
    let Tiling {
        queries: query_block,
        corpus: corpus_block,
    } = tiling;
    let mut top = TopK::zeroed(nq, k.min(n));
    let k = top.k;
    if k == 0 {
        return top;
    }
    for_each_query_range(nq, query_block, &mut top, par, |range, ids, scores| {
        let rows = query_block.min(range.len());
        let mut scratch = vec![0f32; rows * corpus_block.min(n)];
        let mut selectors: Vec<Selector> = (0..rows).map(|_| Selector::new(k)).collect();
        let mut q0 = range.start;
        while q0 < range.end {
            let qb = query_block.min(range.end - q0);
            let q_rows = Rows::new(&queries[q0 * d..(q0 + qb) * d], qb, d);
            selectors[..qb].iter_mut().for_each(Selector::reset);
            let mut c0 = 0;
            while c0 < n {
                let cb = corpus_block.min(n - c0);
                let block = &mut scratch[..qb * cb];
                // Inner GEMMs stay sequential: the parallelism is over query ranges.
                let c_rows = Rows::new(&corpus[c0 * d..(c0 + cb) * d], cb, d);
                let out = RowsMut::new(block, qb, cb);
                gemm(
                    out,
                    Accum::Replace,
                    q_rows.mat(),
                    c_rows.mat().transpose(),
                    1.0,
                    Par::Seq,
                );
                for (sel, row) in selectors.iter_mut().zip(block.chunks_exact(cb)) {
                    sel.offer(row, c0 as u32);
                }
                c0 += cb;
            }
            let out = (q0 - range.start) * k;
            for (i, sel) in selectors[..qb].iter_mut().enumerate() {
                let at = out + i * k;
                sel.finish(&mut ids[at..at + k], &mut scores[at..at + k]);
            }
            q0 += qb;
        }
    });
    top
}

/// Top-k by an arbitrary scorer: `scorer(q, out)` fills `out[0..n_items]` with query `q`'s scores
/// (the oracle uses the true expected conversions per request under the logging policy).
///
/// Same output conventions as [`exact_top_k`]: `min(k, n_items)` per query, best first, ties by
/// smaller id, NaN ranked last. With `Par::Rayon(n)` the queries are split into at most `n`
/// contiguous ranges, each worker reusing one `out` buffer; results do not depend on `par`.
///
/// # Panics
/// If `n_items > u32::MAX + 1`, or if `scorer` panics.
#[track_caller]
pub fn top_k_by<F: Fn(usize, &mut [f32]) + Sync>(
    n_queries: usize,
    n_items: usize,
    k: usize,
    scorer: F,
    par: Par,
) -> TopK {
    assert_ids_fit(n_items);
    let mut top = TopK::zeroed(n_queries, k.min(n_items));
    let k = top.k;
    if k == 0 {
        return top;
    }
    for_each_query_range(n_queries, 1, &mut top, par, |range, ids, scores| {
        let mut out = vec![0f32; n_items];
        let mut sel = Selector::new(k);
        for (i, q) in range.enumerate() {
            scorer(q, &mut out);
            sel.reset();
            sel.offer(&out, 0);
            sel.finish(
                &mut ids[i * k..(i + 1) * k],
                &mut scores[i * k..(i + 1) * k],
            );
        }
    });
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::unit_normal;
    use ndarray::{Array2, ShapeBuilder};
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn uniform(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Small integers: every dot product is exact in f32 whatever the summation order, and ties
    /// are everywhere.
    fn small_ints(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len)
            .map(|_| rng.random_range(-2i32..=2) as f32)
            .collect()
    }

    fn dot64(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    /// Brute force in f64: for each query, all items sorted by (score desc, id asc), with
    /// `-0.0 == 0.0` as the crate documents.
    fn naive(queries: &[f32], corpus: &[f32], d: usize) -> Vec<Vec<(f64, u32)>> {
        queries
            .chunks_exact(d)
            .map(|q| {
                let mut all: Vec<(f64, u32)> = corpus
                    .chunks_exact(d)
                    .zip(0u32..)
                    .map(|(c, id)| (dot64(q, c), id))
                    .collect();
                all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
                all
            })
            .collect()
    }

    /// Checks `top` against the f64 ranking, allowing swaps only between candidates whose f64
    /// scores are within f32 rounding of each other.
    fn assert_close_to_naive(
        queries: &[f32],
        corpus: &[f32],
        d: usize,
        k: usize,
        naive_ranking: &[Vec<(f64, u32)>],
        top: &TopK,
    ) {
        let n = corpus.len() / d;
        let nq = queries.len() / d;
        let kk = k.min(n);
        assert_eq!(top.k, kk);
        assert_eq!((top.ids.len(), top.scores.len()), (nq * kk, nq * kk));
        let norm = |v: &[f32]| dot64(v, v).sqrt();
        let c_norms: Vec<f64> = corpus.chunks_exact(d).map(norm).collect();
        for (q, (qv, reference)) in queries.chunks_exact(d).zip(naive_ranking).enumerate() {
            let tol = |id: u32| 1e-5 * norm(qv) * c_norms[id as usize] + 1e-12;
            let exact: Vec<f64> = {
                let mut by_id = vec![0.0; n];
                reference.iter().for_each(|&(s, id)| by_id[id as usize] = s);
                by_id
            };
            let (ids, scores) = (top.row(q), top.row_scores(q));
            let mut seen = vec![false; n];
            for (i, (&id, &s)) in ids.iter().zip(scores).enumerate() {
                assert!(
                    !std::mem::replace(&mut seen[id as usize], true),
                    "query {q}: id {id} twice"
                );
                assert!(
                    (f64::from(s) - exact[id as usize]).abs() <= tol(id),
                    "query {q}: score of {id}"
                );
                if i > 0 {
                    let prev = (scores[i - 1], ids[i - 1]);
                    assert!(
                        prev.0 > s || prev.0 == s && prev.1 < id,
                        "query {q}: not best first"
                    );
                }
            }
            // The worst kept candidate must not lose to any left-out one by more than rounding.
            let Some(&worst) = ids
                .iter()
                .min_by(|&&a, &&b| exact[a as usize].total_cmp(&exact[b as usize]))
            else {
                continue;
            };
            for (id, &s) in exact.iter().enumerate() {
                if !seen[id] {
                    assert!(
                        s <= exact[worst as usize] + tol(id as u32) + tol(worst),
                        "query {q}: {id} (score {s}) beats kept {worst} ({})",
                        exact[worst as usize]
                    );
                }
            }
        }
    }

    /// With exact integer data the answer is unique: the first `min(k, n)` of the f64 ranking.
    fn assert_equals_naive(queries: &[f32], corpus: &[f32], d: usize, k: usize, top: &TopK) {
        assert_equals_ranking(&naive(queries, corpus, d), corpus.len() / d, k, top);
    }

    /// [`assert_equals_naive`] with the f64 ranking (over `n` items) computed once by the caller.
    fn assert_equals_ranking(naive_ranking: &[Vec<(f64, u32)>], n: usize, k: usize, top: &TopK) {
        let kk = k.min(n);
        assert_eq!(top.k, kk);
        for (q, reference) in naive_ranking.iter().enumerate() {
            let want_ids: Vec<u32> = reference[..kk].iter().map(|p| p.1).collect();
            let want_scores: Vec<f32> = reference[..kk].iter().map(|p| p.0 as f32).collect();
            assert_eq!(top.row(q), want_ids, "query {q}");
            assert_eq!(top.row_scores(q), want_scores, "query {q}");
        }
    }

    /// Every engine [`exact_top_k`] can take on this machine, with small blocks and chunks so
    /// that their edges fall everywhere: `(name, result)` for each.
    fn engines(
        queries: &[f32],
        corpus: &[f32],
        d: usize,
        k: usize,
        par: Par,
    ) -> Vec<(String, TopK)> {
        let mut out = vec![
            (
                "public".to_string(),
                exact_top_k(queries, corpus, d, k, par),
            ),
            (
                "blocked".to_string(),
                exact_top_k_blocked(Search::new(queries, corpus, d, k), par, BLOCKED),
            ),
        ];
        for simd in Simd::available() {
            for (chunk, block) in [(SCAN_CHUNK, SCAN_BLOCK), (17, 100), (1, 7)] {
                let tiling = Tiling {
                    queries: chunk,
                    corpus: block,
                };
                out.push((
                    format!("{simd:?} fused chunk {chunk} block {block}"),
                    exact_top_k_fused(Search::new(queries, corpus, d, k), par, simd, tiling),
                ));
                let (nq, n) = (queries.len() / d, corpus.len() / d);
                if nq > 0 && k.min(n) > 0 {
                    let kk = k.min(n);
                    let quantized = exact_top_k_quantized(
                        Search::new(queries, corpus, d, kk),
                        par,
                        simd,
                        tiling,
                    );
                    // Absent only for inputs it leaves to the f32 engine (non-finite, zeros).
                    if let Some(top) = quantized {
                        out.push((
                            format!("{simd:?} quantized chunk {chunk} block {block}"),
                            top,
                        ));
                    }
                }
            }
        }
        out
    }

    /// W2's correctness rule: every query has the f64 reference's ids, except that candidates
    /// whose f64 scores are within `1e-6` of the reference's k-th score may trade places. So
    /// every returned id scores at least `kth - 1e-6` and every id scoring above `kth + 1e-6` is
    /// returned; also no id twice, and best first by (score, id).
    fn assert_w2_rule(queries: &[f32], corpus: &[f32], d: usize, k: usize, top: &TopK) {
        let kk = k.min(corpus.len() / d);
        assert_eq!(top.k, kk);
        for (q, reference) in naive(queries, corpus, d).into_iter().enumerate() {
            let kth = reference[kk - 1].0;
            let mut exact = vec![0.0; reference.len()];
            reference.iter().for_each(|&(s, id)| exact[id as usize] = s);
            let (ids, scores) = (top.row(q), top.row_scores(q));
            let mut seen = vec![false; reference.len()];
            for (i, &id) in ids.iter().enumerate() {
                assert!(
                    !std::mem::replace(&mut seen[id as usize], true),
                    "query {q}: {id} twice"
                );
                assert!(
                    exact[id as usize] >= kth - 1e-6,
                    "query {q}: {id} is not in the top {kk}"
                );
                if i > 0 {
                    let prev = (scores[i - 1], ids[i - 1]);
                    assert!(
                        prev.0 > scores[i] || prev.0 == scores[i] && prev.1 < id,
                        "query {q}: order"
                    );
                }
            }
            for &(s, id) in reference.iter().take_while(|&&(s, _)| s > kth + 1e-6) {
                assert!(
                    seen[id as usize],
                    "query {q}: {id} (score {s}, k-th {kth}) missing"
                );
            }
        }
    }

    #[test]
    fn w2_shaped_data_meets_the_w2_rule_on_every_engine() {
        let (nq, n, d, k) = (64, 20_000, 64, 100);
        let queries = unit_normal(nq, d, 21);
        let mut corpus = unit_normal(n, d, 22);
        // Exact duplicates: equal scores on every engine, to be broken by the smaller id.
        corpus.copy_within(0..500 * d, 15_000 * d);
        let seq = exact_top_k(&queries, &corpus, d, k, Par::Seq);
        for (name, top) in engines(&queries, &corpus, d, k, Par::Seq)
            .into_iter()
            .chain(engines(&queries, &corpus, d, k, Par::rayon(2)))
        {
            assert_w2_rule(&queries, &corpus, d, k, &top);
            for q in 0..nq {
                let row = top.row(q);
                for (&id, &s) in row.iter().zip(top.row_scores(q)) {
                    // A duplicate pair splits only one way: the smaller id kept.
                    let twin = match id {
                        0..500 => id + 15_000,
                        15_000..15_500 => id - 15_000,
                        _ => continue,
                    };
                    if let Some(at) = row.iter().position(|&t| t == twin) {
                        assert_eq!(
                            top.row_scores(q)[at],
                            s,
                            "{name}: query {q} twins {id} {twin}"
                        );
                    } else {
                        assert!(
                            id < twin,
                            "{name}: query {q} kept {id} over its twin {twin}"
                        );
                    }
                }
            }
            if name.starts_with("fused") || name.starts_with("quantized") || name == "public" {
                assert_eq!(top, seq, "{name}: results depend on blocking or threads");
            }
        }
    }

    #[test]
    fn matches_naive_f64_at_awkward_sizes() {
        let nq = 130;
        for n in [1, 5, 99, 1000, 4097] {
            for d in [1, 3, 64] {
                let queries = uniform(nq * d, 1);
                let corpus = uniform(n * d, 2);
                let ranking = naive(&queries, &corpus, d);
                for k in [1, 10, 100, n, n + 3] {
                    let seq = engines(&queries, &corpus, d, k, Par::Seq);
                    let par = engines(&queries, &corpus, d, k, Par::rayon(2));
                    for ((name, seq), (_, par)) in seq.iter().zip(&par) {
                        assert_close_to_naive(&queries, &corpus, d, k, &ranking, seq);
                        assert_eq!(seq, par, "{name}: n {n} d {d} k {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn ties_are_broken_by_smaller_id() {
        let nq = 131;
        for n in [1, 5, 99, 1000, 4097] {
            for d in [1, 3] {
                let queries = small_ints(nq * d, 3);
                let corpus = small_ints(n * d, 4);
                let ranking = naive(&queries, &corpus, d);
                for k in [1, 10, 100, n, n + 3] {
                    for par in [Par::Seq, Par::rayon(2)] {
                        for (_, top) in engines(&queries, &corpus, d, k, par) {
                            assert_equals_ranking(&ranking, n, k, &top);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn block_edges_do_not_change_the_answer() {
        let (nq, n, d, k) = (17, 129, 64, 20);
        let queries = small_ints(nq * d, 5);
        let corpus = small_ints(n * d, 6);
        let want = exact_top_k(&queries, &corpus, d, k, Par::Seq);
        assert_equals_naive(&queries, &corpus, d, k, &want);
        let search = Search::new(&queries, &corpus, d, k);
        for qb in [1, 2, 16, 17, 18] {
            for cb in [1, 7, 20, 21, 127, 128, 129, 130] {
                let tiling = Tiling {
                    queries: qb,
                    corpus: cb,
                };
                for par in [Par::Seq, Par::rayon(3)] {
                    let got = exact_top_k_blocked(search, par, tiling);
                    assert_eq!(got, want, "query block {qb}, corpus block {cb}");
                    for simd in Simd::available() {
                        let got = exact_top_k_fused(search, par, simd, tiling);
                        assert_eq!(got, want, "{simd:?} fused: chunk {qb}, block {cb}");
                        let got = exact_top_k_quantized(search, par, simd, tiling);
                        assert_eq!(
                            got,
                            Some(want.clone()),
                            "{simd:?} int16: chunk {qb}, block {cb}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_by_inner_product_equals_exact_top_k() {
        let (nq, n, d) = (70, 4097, 3);
        let queries = small_ints(nq * d, 7);
        let corpus = small_ints(n * d, 8);
        let scorer = |q: usize, out: &mut [f32]| {
            let qv = &queries[q * d..(q + 1) * d];
            for (o, c) in out.iter_mut().zip(corpus.chunks_exact(d)) {
                *o = qv.iter().zip(c).map(|(a, b)| a * b).sum();
            }
        };
        for k in [1, 10, 100, n + 3] {
            let want = exact_top_k(&queries, &corpus, d, k, Par::Seq);
            assert_eq!(top_k_by(nq, n, k, scorer, Par::Seq), want);
            assert_eq!(top_k_by(nq, n, k, scorer, Par::rayon(2)), want);
        }
    }

    #[test]
    fn nan_and_infinite_scores_rank_predictably() {
        let scores = [
            0.5,
            f32::NAN,
            f32::NEG_INFINITY,
            2.0,
            f32::INFINITY,
            0.5,
            f32::NAN,
            -0.0,
            0.0,
        ];
        let top = top_k_by(
            2,
            scores.len(),
            100,
            |_, out| out.copy_from_slice(&scores),
            Par::Seq,
        );
        assert_eq!(top.k, scores.len());
        assert_eq!(top.row(1), &[4, 3, 0, 5, 7, 8, 2, 1, 6]);
        let top3 = top_k_by(
            1,
            scores.len(),
            3,
            |_, out| out.copy_from_slice(&scores),
            Par::Seq,
        );
        assert_eq!(top3.row(0), &[4, 3, 0]);
        let all_nan = top_k_by(1, 300, 5, |_, out| out.fill(f32::NAN), Par::Seq);
        assert_eq!(all_nan.row(0), &[0, 1, 2, 3, 4]);
        let nan_then_real = top_k_by(
            1,
            300,
            2,
            |_, out| {
                out.fill(f32::NAN);
                out[250] = f32::NEG_INFINITY;
            },
            Par::Seq,
        );
        assert_eq!(nan_then_real.row(0), &[250, 0]);
    }

    #[test]
    fn nan_and_infinite_inputs_rank_alike_on_every_engine() {
        let (nq, n, d) = (19, 300, 3);
        let queries = small_ints(nq * d, 12);
        let mut corpus = small_ints(n * d, 13);
        corpus[7 * d] = f32::NAN;
        corpus[40 * d + 1] = f32::INFINITY;
        corpus[41 * d + 2] = f32::NEG_INFINITY;
        corpus[42 * d..43 * d].copy_from_slice(&[f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        for k in [1, 5, 299, 300] {
            let all = engines(&queries, &corpus, d, k, Par::rayon(2));
            for (name, top) in &all {
                // NaN != NaN, so `TopK`'s `==` cannot compare these; zeros may differ in sign.
                let alike = |x: f32, y: f32| x == y || x.is_nan() && y.is_nan();
                assert_eq!(top.ids, all[1].1.ids, "{name}, k {k}");
                assert!(
                    top.scores
                        .iter()
                        .zip(&all[1].1.scores)
                        .all(|(&x, &y)| alike(x, y)),
                    "{name}, k {k}"
                );
            }
            if k == 300 {
                // Row 7 scores NaN for every query: ranked last, or before other NaN rows by id.
                for q in 0..nq {
                    let at = all[0].1.row(q).iter().position(|&id| id == 7);
                    assert!(
                        at.is_some_and(|at| all[0].1.row_scores(q)[at..]
                            .iter()
                            .all(|s| s.is_nan()))
                    );
                }
            }
        }
    }

    #[test]
    fn empty_inputs() {
        let q = [1.0, 2.0];
        let empty = exact_top_k(&q, &[], 2, 10, Par::Seq);
        assert_eq!((empty.k, empty.ids.len(), empty.num_queries()), (0, 0, 0));
        let zero_k = exact_top_k(&q, &q, 2, 0, Par::rayon(2));
        assert_eq!((zero_k.k, zero_k.ids.len()), (0, 0));
        let no_queries = exact_top_k(&[], &q, 2, 3, Par::rayon(2));
        assert_eq!((no_queries.k, no_queries.ids.len()), (1, 0));
        assert_eq!(
            top_k_by(0, 5, 3, |_, _| unreachable!(), Par::rayon(2))
                .ids
                .len(),
            0
        );
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn shape_mismatch_panics() {
        exact_top_k(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2, 1, Par::Seq);
    }

    #[test]
    fn arrays_in_any_layout_match_slices() {
        let (nq, n, d) = (9, 50, 4);
        let queries = small_ints(nq * d, 9);
        let corpus = small_ints(n * d, 10);
        let want = exact_top_k(&queries, &corpus, d, 7, Par::Seq);
        let qa = Array2::from_shape_vec((nq, d), queries).unwrap();
        let ca = Array2::from_shape_vec((n, d), corpus).unwrap();
        assert_eq!(exact_top_k_arrays(qa.view(), ca.view(), 7, Par::Seq), want);
        let mut q_cols = Array2::<f32>::zeros((nq, d).f());
        q_cols.assign(&qa);
        assert!(q_cols.as_slice().is_none());
        assert_eq!(
            exact_top_k_arrays(q_cols.view(), ca.view(), 7, Par::Seq),
            want,
            "column-major input"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn blocked_selection_is_exact(
            nq in 0usize..12, n in 0usize..300, d in 1usize..5, k in 0usize..40,
            qb in 1usize..9, cb in 1usize..70, seed in any::<u64>(),
        ) {
            let queries = small_ints(nq * d, seed);
            let corpus = small_ints(n * d, seed ^ 0x5eed);
            let tiling = Tiling { queries: qb, corpus: cb };
            let search = Search::new(&queries, &corpus, d, k);
            let top = exact_top_k_blocked(search, Par::rayon(2), tiling);
            prop_assert_eq!(top.ids.len(), nq * k.min(n));
            if nq > 0 && k.min(n) > 0 {
                assert_equals_naive(&queries, &corpus, d, k, &top);
            }
            for simd in Simd::available() {
                let fused = exact_top_k_fused(search, Par::rayon(2), simd, tiling);
                prop_assert_eq!(&fused, &top);
                if nq > 0 && k.min(n) > 0 {
                    let capped = Search { k: k.min(n), ..search };
                    let quantized = exact_top_k_quantized(capped, Par::rayon(2), simd, tiling);
                    // All-zero corpora are left to the f32 engine.
                    if corpus.iter().any(|&x| x != 0.0) {
                        prop_assert_eq!(quantized, Some(top.clone()));
                    } else {
                        prop_assert_eq!(quantized, None);
                    }
                }
            }
        }
    }
}
