//! Metrics beyond recall: NDCG, advertiser recall, and how widely the served lists spread over
//! pins and advertisers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::recall::{HitMarker, RecallReport, check_request, recall_at_k};
use crate::topk::TopK;

/// Macro-averaged NDCG@K with binary relevance, for every `K` in `ks`, keyed `"ndcg@K"`.
///
/// For a query with relevant set `R` (deduplicated) and list `L`, the gain of rank `r` (from 0)
/// is `1 / log2(r + 2)` when `L[r]` is in `R` and not already counted higher in the list;
/// `DCG@K` sums the gains of the first `K` ranks and `IDCG@K` is the DCG of a perfect list,
/// `Σ_{r < min(K, |R|)} 1 / log2(r + 2)`. NDCG@K = DCG@K / IDCG@K, in [0, 1].
///
/// # Errors
/// Those of [`recall_at_k`], for the same reasons.
pub fn ndcg_at_k(
    topk: &TopK,
    relevant: &[Vec<u32>],
    ks: &[usize],
) -> Result<BTreeMap<String, f64>> {
    let n_queries = check_request(topk, relevant.len(), ks)?;
    let depth = ks.iter().copied().max().unwrap_or(0);
    // discount[r] = 1 / log2(r + 2); ideal[i] = Σ_{r < i} discount[r].
    let discount: Vec<f64> = (0..depth).map(|r| 1.0 / ((r + 2) as f64).log2()).collect();
    let ideal: Vec<f64> = std::iter::once(0.0)
        .chain(discount.iter().scan(0.0, |acc, &g| {
            *acc += g;
            Some(*acc)
        }))
        .collect();
    let mut sums = vec![0f64; ks.len()];
    let mut marker = HitMarker::default();
    // dcg[r] = DCG of the first r + 1 ranks.
    let mut dcg: Vec<f64> = Vec::with_capacity(depth);
    for (q, relevant_q) in relevant.iter().enumerate() {
        let n_relevant = marker.mark(q, &topk.row(q)[..depth], relevant_q)?;
        dcg.clear();
        dcg.extend(
            marker
                .first_hit
                .iter()
                .zip(&discount)
                .scan(0.0, |acc, (&hit, &g)| {
                    if hit {
                        *acc += g;
                    }
                    Some(*acc)
                }),
        );
        for (sum, &cutoff) in sums.iter_mut().zip(ks) {
            *sum += dcg[cutoff - 1] / ideal[cutoff.min(n_relevant)];
        }
    }
    Ok(ks
        .iter()
        .zip(&sums)
        .map(|(c, &s)| (format!("ndcg@{c}"), s / n_queries as f64))
        .collect())
}

/// Advertiser recall@K: a query's relevant advertisers are those of its relevant pins, and one
/// counts as found when any pin of that advertiser is in the top `K` (the source paper's converted
/// user-advertiser pairs). `pin_advertiser[pin]` is the advertiser of each pin.
///
/// Returns a [`RecallReport`] over advertisers: `recall@K` divides by the query's number of
/// relevant advertisers, `capped_recall@K` by `min(K, that number)`.
///
/// # Errors
/// Those of [`recall_at_k`], and [`Error::UnknownItem`] for a retrieved or relevant pin id not
/// below `pin_advertiser.len()`.
pub fn advertiser_recall_at_k(
    topk: &TopK,
    relevant: &[Vec<u32>],
    pin_advertiser: &[u32],
    ks: &[usize],
) -> Result<RecallReport> {
    check_request(topk, relevant.len(), ks)?;
    let advertiser_of = |&pin: &u32| -> Result<u32> {
        pin_advertiser
            .get(pin as usize)
            .copied()
            .ok_or(Error::UnknownItem {
                id: pin,
                items: pin_advertiser.len(),
            })
    };
    // The lists become lists of advertisers; recall_at_k counts a repeated advertiser once.
    let lists = TopK {
        k: topk.k,
        ids: topk.ids.iter().map(advertiser_of).collect::<Result<_>>()?,
        scores: topk.scores.clone(),
    };
    let advertisers: Vec<Vec<u32>> = relevant
        .iter()
        .map(|pins| pins.iter().map(advertiser_of).collect::<Result<_>>())
        .collect::<Result<_>>()?;
    recall_at_k(&lists, &advertisers, ks)
}

/// How widely the served top-`K` lists spread, at one cut-off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Share of all pins that appear in at least one query's top `K`.
    pub pin_coverage: f64,
    /// Share of all advertisers with at least one pin in some query's top `K`.
    pub advertiser_coverage: f64,
    /// Gini coefficient of the pins' appearance counts over all pins (never-served ones count
    /// as 0): 0 when every pin is served equally often, near 1 when a few take everything.
    pub pin_gini: f64,
    /// Gini coefficient of the advertisers' appearance counts (a list's pins of one advertiser
    /// each count), over all advertisers.
    pub advertiser_gini: f64,
}

/// [`Coverage`] of the served lists at every `K` in `ks`, keyed `"@K"`, over a corpus of
/// `pin_advertiser.len()` pins and `n_advertisers` advertisers.
///
/// # Errors
/// [`Error::MalformedTopK`], [`Error::ZeroCutoff`], [`Error::CutoffExceedsK`] and
/// [`Error::NoQueries`] as for [`recall_at_k`]; [`Error::UnknownItem`] for a retrieved pin not
/// below `pin_advertiser.len()` or an advertiser not below `n_advertisers`.
pub fn coverage_at_k(
    topk: &TopK,
    pin_advertiser: &[u32],
    n_advertisers: usize,
    ks: &[usize],
) -> Result<BTreeMap<String, Coverage>> {
    let n_queries = check_request(topk, topk.num_queries(), ks)?;
    if let Some(&a) = pin_advertiser
        .iter()
        .find(|&&a| a as usize >= n_advertisers)
    {
        return Err(Error::UnknownItem {
            id: a,
            items: n_advertisers,
        });
    }
    let mut cutoffs: Vec<usize> = ks.to_vec();
    cutoffs.sort_unstable();
    cutoffs.dedup();
    let mut pin_counts = vec![0f64; pin_advertiser.len()];
    let mut advertiser_counts = vec![0f64; n_advertisers];
    let mut out = BTreeMap::new();
    let mut done = 0;
    // The counts at K extend those at the previous cut-off by ranks done..K of every list.
    for &cutoff in &cutoffs {
        for q in 0..n_queries {
            for &pin in &topk.row(q)[done..cutoff] {
                let advertiser = *pin_advertiser.get(pin as usize).ok_or(Error::UnknownItem {
                    id: pin,
                    items: pin_advertiser.len(),
                })?;
                pin_counts[pin as usize] += 1.0;
                advertiser_counts[advertiser as usize] += 1.0;
            }
        }
        done = cutoff;
        let share = |counts: &[f64]| {
            let served = counts.iter().filter(|&&c| c > 0.0).count();
            served as f64 / counts.len().max(1) as f64
        };
        out.insert(
            format!("@{cutoff}"),
            Coverage {
                pin_coverage: share(&pin_counts),
                advertiser_coverage: share(&advertiser_counts),
                pin_gini: gini(&pin_counts),
                advertiser_gini: gini(&advertiser_counts),
            },
        );
    }
    Ok(out)
}

/// Gini coefficient of non-negative amounts: `Σ_i Σ_j |x_i - x_j| / (2 n Σ x)`, computed on the
/// sorted amounts as `Σ_i (2i - n - 1) x_(i) / (n Σ x)` with `i` from 1. 0 for equal amounts (and
/// for an empty or all-zero input), `(n - 1) / n` when one item holds everything.
pub fn gini(amounts: &[f64]) -> f64 {
    let n = amounts.len();
    let total: f64 = amounts.iter().sum();
    if n == 0 || total <= 0.0 {
        return 0.0;
    }
    let mut sorted = amounts.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| (2.0 * (i + 1) as f64 - n as f64 - 1.0) * x)
        .sum();
    weighted / (n as f64 * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(k: usize, ids: &[u32]) -> TopK {
        TopK {
            k,
            ids: ids.to_vec(),
            scores: (0..ids.len()).map(|i| -(i as f32)).collect(),
        }
    }

    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "{got} != {want}");
    }

    fn d(r: usize) -> f64 {
        1.0 / ((r + 2) as f64).log2()
    }

    #[test]
    fn ndcg_by_hand() {
        // Query 0: relevant {1, 7}; hits at ranks 1 and 3. Query 1: relevant {2} at rank 0.
        let top = lists(4, &[5, 1, 9, 7, 2, 4, 6, 8]);
        let relevant = vec![vec![7, 1], vec![2]];
        let n = ndcg_at_k(&top, &relevant, &[1, 2, 4]).unwrap();
        assert_near(n["ndcg@1"], (0.0 + 1.0) / 2.0);
        assert_near(n["ndcg@2"], (d(1) / (d(0) + d(1)) + 1.0) / 2.0);
        assert_near(n["ndcg@4"], ((d(1) + d(3)) / (d(0) + d(1)) + 1.0) / 2.0);
    }

    #[test]
    fn ndcg_counts_a_repeated_hit_once_and_is_one_for_a_perfect_list() {
        let top = lists(3, &[4, 4, 6]);
        let n = ndcg_at_k(&top, &[vec![4, 6, 4]], &[3]).unwrap();
        assert_near(n["ndcg@3"], (d(0) + d(2)) / (d(0) + d(1)));
        let perfect = lists(3, &[6, 4, 1]);
        assert_near(
            ndcg_at_k(&perfect, &[vec![4, 6]], &[3]).unwrap()["ndcg@3"],
            1.0,
        );
    }

    #[test]
    fn ndcg_rejects_what_recall_rejects() {
        let top = lists(2, &[1, 2]);
        assert_eq!(
            ndcg_at_k(&top, &[vec![]], &[1]),
            Err(Error::EmptyRelevant { query: 0 })
        );
        assert_eq!(
            ndcg_at_k(&top, &[vec![1]], &[3]),
            Err(Error::CutoffExceedsK { cutoff: 3, k: 2 })
        );
        assert_eq!(ndcg_at_k(&top, &[vec![1]], &[0]), Err(Error::ZeroCutoff));
    }

    #[test]
    fn advertiser_recall_by_hand() {
        // Pins 0..6 belong to advertisers [0, 0, 1, 1, 2, 2].
        let owner = [0, 0, 1, 1, 2, 2];
        // Query 0 converted on pins 1 and 4 (advertisers 0 and 2); its list shows pin 0 (the
        // same advertiser as pin 1) then pins 2 and 3. Query 1 converted on pin 3 (advertiser
        // 1), listed at rank 1 as pin 2.
        let top = lists(3, &[0, 2, 3, 5, 2, 0]);
        let r = advertiser_recall_at_k(&top, &[vec![1, 4], vec![3]], &owner, &[1, 3]).unwrap();
        assert_eq!(r.queries, 2);
        assert_near(r.recall["recall@1"], (0.5 + 0.0) / 2.0);
        assert_near(r.recall["recall@3"], (0.5 + 1.0) / 2.0);
        assert_near(r.capped_recall["capped_recall@1"], (1.0 + 0.0) / 2.0);
        assert_eq!(
            advertiser_recall_at_k(&top, &[vec![1, 9], vec![3]], &owner, &[1]),
            Err(Error::UnknownItem { id: 9, items: 6 })
        );
    }

    #[test]
    fn coverage_and_gini_by_hand() {
        // 6 pins of advertisers [0, 0, 1, 1, 2, 2], 4 advertisers (advertiser 3 has no pin).
        let owner = [0, 0, 1, 1, 2, 2];
        let top = lists(2, &[0, 2, 0, 1]);
        let c = coverage_at_k(&top, &owner, 4, &[2, 1]).unwrap();
        // @1: pin 0 twice. Pins [2,0,0,0,0,0], advertisers [2,0,0,0].
        assert_near(c["@1"].pin_coverage, 1.0 / 6.0);
        assert_near(c["@1"].advertiser_coverage, 1.0 / 4.0);
        assert_near(c["@1"].pin_gini, 5.0 / 6.0);
        assert_near(c["@1"].advertiser_gini, 3.0 / 4.0);
        // @2: pins [2,1,1,0,0,0], advertisers [3,1,0,0].
        assert_near(c["@2"].pin_coverage, 3.0 / 6.0);
        assert_near(c["@2"].advertiser_coverage, 2.0 / 4.0);
        // Sorted pins [0,0,0,1,1,2]: Σ (2i - 7) x = 1 + 3 + 10 = 14, over 6 * 4.
        assert_near(c["@2"].pin_gini, 14.0 / 24.0);
        // Sorted advertisers [0,0,1,3]: Σ (2i - 5) x = 1 + 9 = 10, over 4 * 4.
        assert_near(c["@2"].advertiser_gini, 10.0 / 16.0);
        assert_eq!(
            coverage_at_k(&top, &[0, 0, 1, 5, 2, 2], 4, &[1]),
            Err(Error::UnknownItem { id: 5, items: 4 })
        );
        assert_eq!(
            coverage_at_k(&top, &owner[..2], 4, &[2]),
            Err(Error::UnknownItem { id: 2, items: 2 })
        );
    }

    #[test]
    fn gini_extremes() {
        assert_eq!(gini(&[]), 0.0);
        assert_eq!(gini(&[0.0, 0.0]), 0.0);
        assert_near(gini(&[3.0, 3.0, 3.0]), 0.0);
        assert_near(gini(&[0.0, 0.0, 0.0, 5.0]), 3.0 / 4.0);
        // Against the pairwise definition on an uneven case.
        let x = [1.0, 4.0, 0.0, 2.5, 2.5];
        let pairwise: f64 = x
            .iter()
            .flat_map(|a| x.iter().map(move |b| (a - b as &f64).abs()))
            .sum::<f64>()
            / (2.0 * x.len() as f64 * x.iter().sum::<f64>());
        assert_near(gini(&x), pairwise);
    }
}
