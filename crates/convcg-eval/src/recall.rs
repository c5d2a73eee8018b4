use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topk::TopK;

/// The recall cut-offs of docs/design.md (Metrics): recall@20, @50, @100, @500 and @1000.
pub const RECALL_KS: [usize; 5] = [20, 50, 100, 500, 1000];

/// Macro-averaged recall and capped recall at several cut-offs.
///
/// Keys are `"recall@K"` in `recall` and `"capped_recall@K"` in `capped_recall`; `BTreeMap`s keep
/// the JSON form deterministic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallReport {
    /// Number of queries averaged over.
    pub queries: usize,
    /// `recall@K` = mean over queries of `|top K ∩ relevant| / |relevant|`.
    pub recall: BTreeMap<String, f64>,
    /// `capped_recall@K` = mean over queries of `|top K ∩ relevant| / min(K, |relevant|)`.
    pub capped_recall: BTreeMap<String, f64>,
}

/// recall@K and capped_recall@K of `topk` against `relevant[q]` for every `K` in `ks`,
/// macro-averaged (every query weighs the same).
///
/// Relevant ids are deduplicated, and so are repeated ids within a top-k list (a hand-built
/// `TopK` could hold them), so each relevant item counts at most once.
///
/// # Errors
/// - [`Error::QueryCountMismatch`] unless there is one relevant set per query;
/// - [`Error::EmptyRelevant`] for a query without relevant items: the caller skips (and counts)
///   those (docs/design.md, Eval queries);
/// - [`Error::NoQueries`] when there is nothing to average;
/// - [`Error::ZeroCutoff`] / [`Error::CutoffExceedsK`] for a `K` of 0 or larger than `topk.k`;
/// - [`Error::MalformedTopK`] when `topk`'s fields disagree.
pub fn recall_at_k(topk: &TopK, relevant: &[Vec<u32>], ks: &[usize]) -> Result<RecallReport> {
    let n_queries = check_request(topk, relevant.len(), ks)?;
    let depth = ks.iter().copied().max().unwrap_or(0);
    let mut recall_sum = vec![0f64; ks.len()];
    let mut capped_sum = vec![0f64; ks.len()];
    let mut marker = HitMarker::default();
    // hits[i] = distinct relevant items among the first i + 1 retrieved.
    let mut hits: Vec<usize> = Vec::with_capacity(depth);
    for (q, relevant_q) in relevant.iter().enumerate() {
        let n_relevant = marker.mark(q, &topk.row(q)[..depth], relevant_q)?;
        hits.clear();
        hits.extend(marker.first_hit.iter().scan(0, |count, &hit| {
            *count += usize::from(hit);
            Some(*count)
        }));
        for (i, &cutoff) in ks.iter().enumerate() {
            let h = hits[cutoff - 1] as f64;
            recall_sum[i] += h / n_relevant as f64;
            capped_sum[i] += h / cutoff.min(n_relevant) as f64;
        }
    }
    let mean = |sum: f64| sum / n_queries as f64;
    Ok(RecallReport {
        queries: n_queries,
        recall: ks
            .iter()
            .zip(&recall_sum)
            .map(|(c, &s)| (format!("recall@{c}"), mean(s)))
            .collect(),
        capped_recall: ks
            .iter()
            .zip(&capped_sum)
            .map(|(c, &s)| (format!("capped_recall@{c}"), mean(s)))
            .collect(),
    })
}

/// Marks which ranks of a list hold a relevant item for the first time, with buffers reused
/// across queries. Relevant ids are deduplicated, and a relevant id repeated in the list counts
/// at its first rank only, so each relevant item counts at most once.
#[derive(Debug, Default)]
pub(crate) struct HitMarker {
    relevant: Vec<u32>,
    found: Vec<bool>,
    /// `first_hit[r]`: rank `r` of the last list marked holds a relevant item not seen above it.
    pub(crate) first_hit: Vec<bool>,
}

impl HitMarker {
    /// Marks `list` (query `query`'s) against `relevant` and returns the number of distinct
    /// relevant items.
    ///
    /// # Errors
    /// [`Error::EmptyRelevant`] if `relevant` is empty.
    pub(crate) fn mark(&mut self, query: usize, list: &[u32], relevant: &[u32]) -> Result<usize> {
        self.relevant.clear();
        self.relevant.extend_from_slice(relevant);
        self.relevant.sort_unstable();
        self.relevant.dedup();
        if self.relevant.is_empty() {
            return Err(Error::EmptyRelevant { query });
        }
        self.found.clear();
        self.found.resize(self.relevant.len(), false);
        self.first_hit.clear();
        for id in list {
            let hit = match self.relevant.binary_search(id) {
                Ok(at) => !std::mem::replace(&mut self.found[at], true),
                Err(_) => false,
            };
            self.first_hit.push(hit);
        }
        Ok(self.relevant.len())
    }
}

/// Checks a metric request against the errors [`recall_at_k`] documents (all but
/// [`Error::EmptyRelevant`], which needs the sets themselves) and returns the number of queries.
pub(crate) fn check_request(topk: &TopK, relevant_sets: usize, ks: &[usize]) -> Result<usize> {
    let k = topk.k;
    topk.check_shape()?;
    if let Some(&cutoff) = ks.iter().find(|&&c| c > k) {
        return Err(Error::CutoffExceedsK { cutoff, k });
    }
    if ks.contains(&0) {
        return Err(Error::ZeroCutoff);
    }
    let n_queries = topk.num_queries();
    if relevant_sets != n_queries {
        return Err(Error::QueryCountMismatch {
            topk: n_queries,
            relevant: relevant_sets,
        });
    }
    if n_queries == 0 {
        return Err(Error::NoQueries);
    }
    Ok(n_queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hand_made() -> TopK {
        TopK {
            k: 4,
            ids: vec![5, 3, 9, 1, 2, 4, 6, 8],
            scores: vec![4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0, 1.0],
        }
    }

    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "{got} != {want}");
    }

    #[test]
    fn hand_computed_recall_and_capped_recall() {
        // Query 0: relevant {1, 3, 7}; hits after 1, 2, 4 retrieved: 0, 1, 2.
        // Query 1: relevant {2, 8} (2 listed twice); hits: 1, 1, 2.
        let relevant = vec![vec![3, 1, 7], vec![2, 2, 8]];
        let r = recall_at_k(&hand_made(), &relevant, &[1, 2, 4]).unwrap();
        assert_eq!(r.queries, 2);
        assert_near(r.recall["recall@1"], (0.0 + 1.0 / 2.0) / 2.0);
        assert_near(r.recall["recall@2"], (1.0 / 3.0 + 1.0 / 2.0) / 2.0);
        assert_near(r.recall["recall@4"], (2.0 / 3.0 + 1.0) / 2.0);
        assert_near(r.capped_recall["capped_recall@1"], (0.0 + 1.0) / 2.0);
        assert_near(
            r.capped_recall["capped_recall@2"],
            (1.0 / 2.0 + 1.0 / 2.0) / 2.0,
        );
        assert_near(r.capped_recall["capped_recall@4"], (2.0 / 3.0 + 1.0) / 2.0);
        assert_eq!(r.recall.len(), 3);
        assert_eq!(r.capped_recall.len(), 3);
    }

    #[test]
    fn duplicates_count_once() {
        let deduped = recall_at_k(&hand_made(), &[vec![3, 1, 7], vec![2, 8]], &[4]).unwrap();
        let repeated = recall_at_k(
            &hand_made(),
            &[vec![7, 3, 1, 7, 3], vec![8, 2, 2, 8, 8]],
            &[4],
        )
        .unwrap();
        assert_eq!(deduped, repeated);
        // A hand-built list that repeats a relevant id still finds it once.
        let twice = TopK {
            k: 3,
            ids: vec![5, 5, 6],
            scores: vec![3.0, 2.0, 1.0],
        };
        let r = recall_at_k(&twice, &[vec![5, 9]], &[3]).unwrap();
        assert_near(r.recall["recall@3"], 0.5);
        assert_near(r.capped_recall["capped_recall@3"], 0.5);
    }

    #[test]
    fn invalid_requests_are_errors() {
        let top = hand_made();
        let rel = vec![vec![1], vec![2]];
        assert_eq!(
            recall_at_k(&top, &rel, &[4, 5]),
            Err(Error::CutoffExceedsK { cutoff: 5, k: 4 })
        );
        assert_eq!(recall_at_k(&top, &rel, &[0]), Err(Error::ZeroCutoff));
        assert_eq!(
            recall_at_k(&top, &[vec![1], vec![]], &[1]),
            Err(Error::EmptyRelevant { query: 1 })
        );
        assert_eq!(
            recall_at_k(&top, &rel[..1], &[1]),
            Err(Error::QueryCountMismatch {
                topk: 2,
                relevant: 1
            })
        );
        let none = TopK {
            k: 4,
            ids: vec![],
            scores: vec![],
        };
        assert_eq!(recall_at_k(&none, &[], &[1]), Err(Error::NoQueries));
        let ragged = TopK {
            k: 4,
            ids: vec![1, 2, 3],
            scores: vec![1.0; 3],
        };
        assert!(matches!(
            recall_at_k(&ragged, &rel, &[1]),
            Err(Error::MalformedTopK { .. })
        ));
        let err = recall_at_k(&top, &rel, &[1000]).unwrap_err();
        assert!(err.to_string().contains("recall@1000"), "{err}");
    }

    #[test]
    fn report_json_is_deterministic_and_round_trips() {
        let r = recall_at_k(&hand_made(), &[vec![3], vec![8]], &[4, 1, 2]).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.starts_with(
            r#"{"queries":2,"recall":{"recall@1":0.0,"recall@2":0.5,"recall@4":1.0},"capped_recall""#
        ), "{json}");
        assert_eq!(serde_json::from_str::<RecallReport>(&json).unwrap(), r);
        assert_eq!(RECALL_KS, [20, 50, 100, 500, 1000]);
    }
}
