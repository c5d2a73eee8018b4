use std::borrow::Cow;

use convcg_kernels::{Accum, Par, Trans, gemm};
use ndarray::ArrayView2;

use crate::select::Selector;
use crate::topk::{TopK, assert_ids_fit, for_each_query_range};

/// Queries scored together by one GEMM; also the unit of parallel work.
const QUERY_BLOCK: usize = 128;
/// Corpus rows per GEMM: the block (256 KiB at d = 64) and the `QUERY_BLOCK x CORPUS_BLOCK`
/// scratch (512 KiB) stay in cache while the selection reads the scores back.
const CORPUS_BLOCK: usize = 1024;

/// Exact inner-product top-k: `queries` `[nq, d]` and `corpus` `[n, d]`, both row-major.
///
/// Returns `min(k, n)` items per query (`TopK.k = min(k, n)`), best first, ties broken by smaller
/// id. The corpus is scanned in cache-sized blocks; each block of queries times each corpus block
/// is scored by one GEMM into a reused scratch, and every query keeps a bounded selection whose
/// threshold (the current k-th best) rejects most scores with one comparison, so no full row of
/// scores is ever materialised. With `Par::Rayon(n)` the query blocks are split over at most `n`
/// rayon workers (inner GEMMs sequential); block boundaries do not depend on the thread count, so
/// `Par::Seq` and any `Par::Rayon(n)` give bit-identical results.
///
/// Scores are f32 GEMM results: candidates whose exact scores differ by less than the f32
/// rounding error may come out in either order.
///
/// # Panics
/// If `d == 0`, if `queries.len()` or `corpus.len()` is not a multiple of `d`, or if the corpus
/// has more than `u32::MAX + 1` rows (ids are `u32`).
#[track_caller]
pub fn exact_top_k(queries: &[f32], corpus: &[f32], d: usize, k: usize, par: Par) -> TopK {
    exact_top_k_blocked(queries, corpus, d, k, par, QUERY_BLOCK, CORPUS_BLOCK)
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

#[track_caller]
pub(crate) fn exact_top_k_blocked(
    queries: &[f32],
    corpus: &[f32],
    d: usize,
    k: usize,
    par: Par,
    query_block: usize,
    corpus_block: usize,
) -> TopK {
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
    let (nq, n) = (queries.len() / d, corpus.len() / d);
    assert_ids_fit(n);
    let k = k.min(n);
    let mut ids = vec![0u32; nq * k];
    let mut scores = vec![0f32; nq * k];
    if k == 0 {
        return TopK { k, ids, scores };
    }
    for_each_query_range(
        nq,
        query_block,
        k,
        &mut ids,
        &mut scores,
        par,
        |range, ids, scores| {
            let rows = query_block.min(range.len());
            let mut scratch = vec![0f32; rows * corpus_block.min(n)];
            let mut selectors: Vec<Selector> = (0..rows).map(|_| Selector::new(k)).collect();
            let mut q0 = range.start;
            while q0 < range.end {
                let qb = query_block.min(range.end - q0);
                let q_rows = &queries[q0 * d..(q0 + qb) * d];
                selectors[..qb].iter_mut().for_each(Selector::reset);
                let mut c0 = 0;
                while c0 < n {
                    let cb = corpus_block.min(n - c0);
                    let block = &mut scratch[..qb * cb];
                    // Inner GEMMs stay sequential: the parallelism is over query ranges.
                    let c_rows = &corpus[c0 * d..(c0 + cb) * d];
                    gemm(
                        block,
                        qb,
                        cb,
                        d,
                        Accum::Replace,
                        q_rows,
                        Trans::No,
                        c_rows,
                        Trans::Yes,
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
        },
    );
    TopK { k, ids, scores }
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
    let k = k.min(n_items);
    let mut ids = vec![0u32; n_queries * k];
    let mut scores = vec![0f32; n_queries * k];
    if k == 0 {
        return TopK { k, ids, scores };
    }
    for_each_query_range(
        n_queries,
        1,
        k,
        &mut ids,
        &mut scores,
        par,
        |range, ids, scores| {
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
        },
    );
    TopK { k, ids, scores }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn assert_close_to_naive(queries: &[f32], corpus: &[f32], d: usize, k: usize, top: &TopK) {
        let n = corpus.len() / d;
        let nq = queries.len() / d;
        let kk = k.min(n);
        assert_eq!(top.k, kk);
        assert_eq!((top.ids.len(), top.scores.len()), (nq * kk, nq * kk));
        let norm = |v: &[f32]| dot64(v, v).sqrt();
        let c_norms: Vec<f64> = corpus.chunks_exact(d).map(norm).collect();
        for (q, (qv, reference)) in queries
            .chunks_exact(d)
            .zip(naive(queries, corpus, d))
            .enumerate()
        {
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
        let kk = k.min(corpus.len() / d);
        assert_eq!(top.k, kk);
        for (q, reference) in naive(queries, corpus, d).into_iter().enumerate() {
            let want_ids: Vec<u32> = reference[..kk].iter().map(|p| p.1).collect();
            let want_scores: Vec<f32> = reference[..kk].iter().map(|p| p.0 as f32).collect();
            assert_eq!(top.row(q), want_ids, "query {q}");
            assert_eq!(top.row_scores(q), want_scores, "query {q}");
        }
    }

    #[test]
    fn matches_naive_f64_at_awkward_sizes() {
        let nq = 130;
        for n in [1, 5, 99, 1000, 4097] {
            for d in [1, 3, 64] {
                let queries = uniform(nq * d, 1);
                let corpus = uniform(n * d, 2);
                for k in [1, 10, 100, n, n + 3] {
                    let seq = exact_top_k(&queries, &corpus, d, k, Par::Seq);
                    assert_close_to_naive(&queries, &corpus, d, k, &seq);
                    let par = exact_top_k(&queries, &corpus, d, k, Par::rayon(2));
                    assert_eq!(seq, par, "n {n} d {d} k {k}");
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
                for k in [1, 10, 100, n, n + 3] {
                    let seq = exact_top_k(&queries, &corpus, d, k, Par::Seq);
                    assert_equals_naive(&queries, &corpus, d, k, &seq);
                    assert_eq!(seq, exact_top_k(&queries, &corpus, d, k, Par::rayon(2)));
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
        for qb in [1, 2, 16, 17, 18] {
            for cb in [1, 7, 20, 21, 127, 128, 129, 130] {
                for par in [Par::Seq, Par::rayon(3)] {
                    let got = exact_top_k_blocked(&queries, &corpus, d, k, par, qb, cb);
                    assert_eq!(got, want, "query block {qb}, corpus block {cb}");
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
            let top = exact_top_k_blocked(&queries, &corpus, d, k, Par::rayon(2), qb, cb);
            prop_assert_eq!(top.ids.len(), nq * k.min(n));
            if nq > 0 && k.min(n) > 0 {
                assert_equals_naive(&queries, &corpus, d, k, &top);
            }
        }
    }
}
