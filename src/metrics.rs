//! What a run measured, as written to `metrics.json`, and the results table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use convcg_eval::RecallReport;

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
