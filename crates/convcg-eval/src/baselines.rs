use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use crate::select::best_first;
use crate::topk::{TopK, assert_ids_fit};

/// Popularity baseline: the same list for every query, largest count first, ties by smaller id.
///
/// Item `i` has count `counts[i]`; `TopK.k = min(k, counts.len())` and scores are the counts. NaN
/// counts rank last.
///
/// # Panics
/// If `counts` has more than `u32::MAX + 1` items.
#[track_caller]
pub fn popularity_top_k(counts: &[f32], n_queries: usize, k: usize) -> TopK {
    assert_ids_fit(counts.len());
    let k = k.min(counts.len());
    let mut ranked: Vec<(f32, u32)> = counts.iter().zip(0u32..).map(|(&c, i)| (c, i)).collect();
    if k > 0 && k < ranked.len() {
        ranked.select_nth_unstable_by(k - 1, best_first);
    }
    ranked.truncate(k);
    ranked.sort_unstable_by(best_first);
    let ids: Vec<u32> = ranked.iter().map(|&(_, id)| id).collect();
    let scores: Vec<f32> = ranked.iter().map(|&(s, _)| s).collect();
    TopK {
        k,
        ids: ids.repeat(n_queries),
        scores: scores.repeat(n_queries),
    }
}

/// Random baseline: `min(k, n_items)` distinct items per query, drawn uniformly without
/// replacement, in random order.
///
/// Query `q` draws from its own ChaCha8 stream (`seed`, stream `q`), so the lists depend only on
/// `seed` and `q`, never on thread count or on how many queries are drawn. Scores are
/// `1 - rank / k`, decreasing, so that every prefix of a list is itself a uniform sample:
/// recall@K of this baseline is about `K / n_items` for every `K`.
///
/// # Panics
/// If `n_items > u32::MAX + 1`.
#[track_caller]
pub fn random_top_k(n_items: usize, n_queries: usize, k: usize, seed: u64) -> TopK {
    assert_ids_fit(n_items);
    let k = k.min(n_items);
    let mut ids = Vec::with_capacity(n_queries * k);
    for q in 0..n_queries {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(q as u64);
        ids.extend(index::sample(&mut rng, n_items, k).iter().map(|i| i as u32));
    }
    let ranks: Vec<f32> = (0..k).map(|r| 1.0 - r as f32 / k as f32).collect();
    TopK {
        k,
        ids,
        scores: ranks.repeat(n_queries),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recall::recall_at_k;

    #[test]
    fn popularity_breaks_ties_by_smaller_id_and_repeats_per_query() {
        let counts = [3.0, 5.0, 5.0, 1.0, 5.0, f32::NAN, 4.0];
        let top = popularity_top_k(&counts, 3, 4);
        assert_eq!(top.k, 4);
        assert_eq!(top.num_queries(), 3);
        for q in 0..3 {
            assert_eq!(top.row(q), &[1, 2, 4, 6]);
            assert_eq!(top.row_scores(q), &[5.0, 5.0, 5.0, 4.0]);
        }
        let all = popularity_top_k(&counts, 1, 100);
        assert_eq!(all.row(0), &[1, 2, 4, 6, 0, 3, 5]);
        assert_eq!(popularity_top_k(&[], 4, 10).ids.len(), 0);
    }

    #[test]
    fn random_lists_are_distinct_and_deterministic() {
        let (n, nq, k) = (1000, 50, 200);
        let a = random_top_k(n, nq, k, 42);
        assert_eq!((a.k, a.num_queries()), (k, nq));
        for q in 0..nq {
            let mut row = a.row(q).to_vec();
            assert!(row.iter().all(|&id| (id as usize) < n));
            row.sort_unstable();
            row.dedup();
            assert_eq!(row.len(), k, "query {q} repeats an item");
            assert!(a.row_scores(q).windows(2).all(|w| w[0] > w[1]));
        }
        assert_eq!(a, random_top_k(n, nq, k, 42));
        assert_ne!(a, random_top_k(n, nq, k, 43));
        assert_ne!(a.row(0), a.row(1));
        // Each query has its own stream: drawing fewer queries does not change the first ones.
        assert_eq!(random_top_k(n, 3, k, 42).ids, a.ids[..3 * k]);
        let whole = random_top_k(5, 2, 9, 1);
        assert_eq!(whole.k, 5);
        let mut row = whole.row(1).to_vec();
        row.sort_unstable();
        assert_eq!(row, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn random_lists_are_roughly_uniform_at_every_position() {
        let (n, nq, k) = (50, 20_000, 5);
        let top = random_top_k(n, nq, k, 7);
        let mut anywhere = vec![0f64; n];
        let mut first = vec![0f64; n];
        for q in 0..nq {
            top.row(q)
                .iter()
                .for_each(|&id| anywhere[id as usize] += 1.0);
            first[top.row(q)[0] as usize] += 1.0;
        }
        // Expected 2000 (sd ~42) anywhere and 400 (sd ~20) in first place: 6 sd bounds.
        let expect = (nq * k / n) as f64;
        assert!(
            anywhere.iter().all(|&c| (c - expect).abs() < 0.13 * expect),
            "{anywhere:?}"
        );
        let expect_first = (nq / n) as f64;
        assert!(
            first
                .iter()
                .all(|&c| (c - expect_first).abs() < 0.3 * expect_first),
            "{first:?}"
        );
    }

    #[test]
    fn random_recall_is_about_k_over_n() {
        let (n, nq, n_rel) = (10_000, 2_000, 100);
        let top = random_top_k(n, nq, 1000, 11);
        let relevant: Vec<Vec<u32>> = random_top_k(n, nq, n_rel, 12)
            .ids
            .chunks_exact(n_rel)
            .map(<[u32]>::to_vec)
            .collect();
        let report = recall_at_k(&top, &relevant, &crate::RECALL_KS).unwrap();
        for cutoff in crate::RECALL_KS {
            let want = cutoff as f64 / n as f64;
            let got = report.recall[&format!("recall@{cutoff}")];
            assert!(
                (got / want - 1.0).abs() < 0.15,
                "recall@{cutoff} = {got}, want about {want}"
            );
            let capped = report.capped_recall[&format!("capped_recall@{cutoff}")];
            let want_capped = want * n_rel as f64 / cutoff.min(n_rel) as f64;
            assert!(
                (capped / want_capped - 1.0).abs() < 0.15,
                "capped@{cutoff} = {capped}"
            );
        }
    }
}
