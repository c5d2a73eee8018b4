//! What a run measured, as written to `metrics.json`, and the results table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use convcg_data::Task;
use convcg_eval::{RecallReport, TopK};

/// Recall figures of one retriever (the model or a reference point) per task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrieverMetrics {
    /// Against reported, attributed conversions in the eval window.
    pub conversion: BTreeMap<String, f64>,
    /// Against clicked or saved pins in the eval window.
    pub engagement: BTreeMap<String, f64>,
    /// Against true conversions (synthetic marketplace only), unreported ones included and fake
    /// ones excluded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conversion_clean: Option<BTreeMap<String, f64>>,
}

impl RetrieverMetrics {
    /// The results table's sections, labelled; clean labels exist only on the synthetic marketplace.
    fn sections(&self) -> [(&'static str, Option<&BTreeMap<String, f64>>); 3] {
        [
            ("conversion", Some(&self.conversion)),
            ("conversion (clean labels)", self.conversion_clean.as_ref()),
            ("engagement", Some(&self.engagement)),
        ]
    }
}

/// One point of the training loss curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    /// Steps done.
    pub step: usize,
    /// Mean batch loss over the steps since the previous point.
    pub loss: f64,
}

/// How the run trained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Training examples (positives of both tasks).
    pub examples: usize,
    /// The loss curve.
    pub loss_curve: Vec<LossPoint>,
}

/// Sizes of the evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Pins in the corpus every query is searched against.
    pub corpus_pins: usize,
    /// Conversion eval queries scored.
    pub conversion_queries: usize,
    /// Engagement eval queries scored.
    pub engagement_queries: usize,
    /// (user, surface) pairs of the window with no relevant pin, skipped, per task.
    pub skipped_without_relevant: BTreeMap<String, usize>,
    /// Queries before the seeded subsample, per task.
    pub subsampled_from: BTreeMap<String, usize>,
}

/// The contents of `metrics.json`. Later versions add keys, never rename these.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The trained model.
    pub model: RetrieverMetrics,
    /// The same top K (most training positives of the task) for every query.
    pub popularity: RetrieverMetrics,
    /// Per query, the pins the user had impressions of before the query's moment, most recent
    /// first, then popularity's list (`Dataset::recently_seen`).
    #[serde(default)]
    pub recently_seen: RetrieverMetrics,
    /// K uniform random pins per query.
    pub random: RetrieverMetrics,
    /// The top K by true expected conversions (engagement task: clicks) per request under the
    /// logging policy, given the query's user, surface and context (synthetic marketplace only):
    /// the best any model that sees the query's context can do in expectation. The exposure
    /// probabilities are a closed-form approximation of the incumbent
    /// (`GroundTruth::expected_conversion_scores`), and recall is measured on one draw of it, so a
    /// model can edge past it by chance or where that approximation errs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oracle: Option<RetrieverMetrics>,
    /// Evaluation sizes.
    pub eval: EvalSummary,
    /// Training summary.
    pub training: TrainingSummary,
}

/// `recall@K` and `capped_recall@K` of a report, plus the query count, as one flat map.
pub fn flatten(report: &RecallReport) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = report.recall.clone();
    m.extend(report.capped_recall.clone());
    m
}

impl Metrics {
    /// The results table: every retriever's recall@K per task, and the model against popularity
    /// and the oracle at K = 100.
    pub fn table(&self) -> String {
        let ks = convcg_eval::RECALL_KS;
        let mut rows: Vec<(&str, &RetrieverMetrics)> = vec![
            ("model", &self.model),
            ("popularity", &self.popularity),
            ("recently seen", &self.recently_seen),
            ("random", &self.random),
        ];
        if let Some(o) = &self.oracle {
            rows.push(("oracle", o));
        }
        let mut out = String::new();
        for section in 0..3 {
            let (task, Some(_)) = self.model.sections()[section] else {
                continue;
            };
            let _ = write!(out, "\n{task:<26}");
            for k in ks {
                let _ = write!(out, "{:>12}", format!("recall@{k}"));
            }
            out.push('\n');
            for (name, r) in &rows {
                let Some(m) = r.sections()[section].1 else {
                    continue;
                };
                let _ = write!(out, "  {name:<24}");
                for k in ks {
                    let v = m.get(&format!("recall@{k}")).copied().unwrap_or(f64::NAN);
                    let _ = write!(out, "{v:>12.4}");
                }
                out.push('\n');
            }
        }
        let at100 = |m: &BTreeMap<String, f64>| m.get("recall@100").copied().unwrap_or(f64::NAN);
        let model = at100(&self.model.conversion);
        let _ = write!(
            out,
            "\nconversion recall@100: model {:.4} = {:.2}x popularity",
            model,
            model / at100(&self.popularity.conversion)
        );
        if let Some(o) = &self.oracle {
            let _ = write!(
                out,
                ", {:.1}% of the oracle",
                100.0 * model / at100(&o.conversion)
            );
        }
        let _ = writeln!(
            out,
            " ({} conversion queries, {} engagement queries, {} pins)",
            self.eval.conversion_queries, self.eval.engagement_queries, self.eval.corpus_pins
        );
        out
    }
}

/// Every eval query's recall@K of each retriever, per task and K (in query order): what a
/// paired comparison of two retrievers resamples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryRecalls {
    recall: BTreeMap<(String, usize, usize), Vec<f64>>,
}

impl QueryRecalls {
    /// Records `retriever`'s recall@K for every K in [`convcg_eval::RECALL_KS`] up to `top.k`:
    /// per query, `|top K ∩ relevant| / |relevant|` (relevant pins and listed pins counted once
    /// each; a query without relevant pins gets 0).
    pub(crate) fn insert(
        &mut self,
        retriever: &str,
        task: Task,
        top: &TopK,
        relevant: &[Vec<u32>],
    ) {
        for &k in convcg_eval::RECALL_KS.iter().filter(|&&k| k <= top.k) {
            let values = relevant
                .iter()
                .enumerate()
                .map(|(q, rel)| {
                    let mut rel = rel.clone();
                    rel.sort_unstable();
                    rel.dedup();
                    if rel.is_empty() {
                        return 0.0;
                    }
                    let mut listed: Vec<u32> = top.row(q)[..k].to_vec();
                    listed.sort_unstable();
                    listed.dedup();
                    let hits = listed
                        .iter()
                        .filter(|p| rel.binary_search(p).is_ok())
                        .count();
                    hits as f64 / rel.len() as f64
                })
                .collect();
            self.recall
                .insert((retriever.to_owned(), task.index(), k), values);
        }
    }

    /// `retriever`'s ("model", "popularity", "recently_seen", "random", "oracle") recall@`k`
    /// of each `task` query, if it was measured.
    pub fn get(&self, retriever: &str, task: Task, k: usize) -> Option<&[f64]> {
        self.recall
            .get(&(retriever.to_owned(), task.index(), k))
            .map(Vec::as_slice)
    }
}

/// A paired bootstrap's estimate of `mean(a - b)` and its percentile interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootstrapInterval {
    /// `mean(a - b)` over all pairs.
    pub mean: f64,
    /// The lower percentile of the resampled means.
    pub low: f64,
    /// The upper percentile of the resampled means.
    pub high: f64,
}

/// The paired bootstrap of `mean(a[i] - b[i])`: `resamples` draws of `n` indices with
/// replacement (ChaCha8 seeded with `seed`), and the `(1 - level) / 2` and `(1 + level) / 2`
/// percentiles (nearest rank) of the resampled means.
///
/// # Errors
/// If `a` and `b` differ in length or are empty, `resamples` is 0, or `level` is not in (0, 1).
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> anyhow::Result<BootstrapInterval> {
    if a.len() != b.len() || a.is_empty() {
        anyhow::bail!("paired bootstrap of {} and {} values", a.len(), b.len());
    }
    if resamples == 0 || !(level > 0.0 && level < 1.0) {
        anyhow::bail!("paired bootstrap with {resamples} resamples at level {level}");
    }
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = diff.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diff[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_unstable_by(f64::total_cmp);
    let at = |p: f64| means[((p * resamples as f64).ceil() as usize).clamp(1, resamples) - 1];
    Ok(BootstrapInterval {
        mean: diff.iter().sum::<f64>() / n as f64,
        low: at((1.0 - level) / 2.0),
        high: at((1.0 + level) / 2.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_separates_a_clear_difference() {
        // 997 pairs (an awkward size), a - b = 0.1 + noise in [-0.05, 0.05].
        let b: Vec<f64> = (0..997).map(|i| f64::from(i % 7) / 7.0).collect();
        let a: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.1 + (f64::from(i as u32 % 11) - 5.0) / 100.0)
            .collect();
        let ci = paired_bootstrap(&a, &b, 1000, 0.95, 3).unwrap();
        assert!(ci.low <= ci.mean && ci.mean <= ci.high, "{ci:?}");
        assert!(ci.low > 0.09 && ci.high < 0.11, "{ci:?}");
        assert_eq!(ci, paired_bootstrap(&a, &b, 1000, 0.95, 3).unwrap());
    }

    #[test]
    fn bootstrap_interval_of_pure_noise_covers_zero() {
        let a: Vec<f64> = (0..501).map(|i| f64::from(i % 2)).collect();
        let b: Vec<f64> = (0..501).map(|i| f64::from((i + 1) % 2)).collect();
        let ci = paired_bootstrap(&a, &b, 1000, 0.95, 9).unwrap();
        assert!(ci.low < 0.0 && ci.high > 0.0, "{ci:?}");
    }

    #[test]
    fn bootstrap_rejects_bad_input() {
        assert!(paired_bootstrap(&[1.0], &[1.0, 2.0], 10, 0.95, 0).is_err());
        assert!(paired_bootstrap(&[], &[], 10, 0.95, 0).is_err());
        assert!(paired_bootstrap(&[1.0], &[0.0], 0, 0.95, 0).is_err());
        assert!(paired_bootstrap(&[1.0], &[0.0], 10, 1.0, 0).is_err());
    }

    #[test]
    fn per_query_recall_matches_the_definition() {
        let top = TopK {
            k: 1000,
            ids: (0..2000u32).map(|i| i % 1000).collect(),
            scores: vec![0.0; 2000],
        };
        let mut r = QueryRecalls::default();
        r.insert(
            "x",
            Task::Conversion,
            &top,
            &[vec![3, 3, 70], vec![999, 5000]],
        );
        assert_eq!(r.get("x", Task::Conversion, 50).unwrap(), &[0.5, 0.0]);
        assert_eq!(r.get("x", Task::Conversion, 100).unwrap(), &[1.0, 0.0]);
        assert_eq!(r.get("x", Task::Conversion, 1000).unwrap(), &[1.0, 0.5]);
        assert!(r.get("x", Task::Engagement, 100).is_none());
    }
}
