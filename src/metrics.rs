//! What a run measured, as written to `metrics.json`, and the results table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use convcg_data::{Surface, Task};
use convcg_eval::{
    Coverage, RecallReport, TopK, advertiser_recall_at_k, coverage_at_k, ndcg_at_k, recall_at_k,
};

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
    /// The top K by true expected *clicks* per request under the same logging policy, on the
    /// conversion task's queries only (synthetic marketplace only): the ceiling of a retriever
    /// that learns from engagement alone. `oracle` minus this is the most that conversion labels
    /// can add on the log; its engagement figures are left empty (they would be `oracle`'s).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oracle_clicks: Option<RetrieverMetrics>,
    /// Evaluation sizes.
    pub eval: EvalSummary,
    /// Training summary.
    pub training: TrainingSummary,
    /// NDCG@K per retriever ("model", "popularity", "recently_seen", "random", "oracle") and
    /// task, keyed `"ndcg@K"`.
    #[serde(default)]
    pub ndcg: BTreeMap<String, TaskScores>,
    /// Advertiser recall@K per retriever and task (a relevant advertiser is found when any of
    /// its pins is in the top K), keyed `"recall@K"` and `"capped_recall@K"`.
    #[serde(default)]
    pub advertiser: BTreeMap<String, TaskScores>,
    /// Pin and advertiser coverage of the served top K and their Gini per retriever, keyed
    /// `"@K"`, over the conversion task's eval queries (see `coverage_of`).
    #[serde(default)]
    pub coverage: BTreeMap<String, BTreeMap<String, Coverage>>,
    /// recall@K per retriever, task and surface ("homefeed", "related", "search").
    #[serde(default)]
    pub surfaces: BTreeMap<String, TaskSurfaces>,
    /// Simulated serving of every retriever's conversion top K, and the lifts over popularity
    /// (runs whose log has a ground truth: the synthetic marketplace; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub online: Option<crate::online::OnlineMetrics>,
    /// The simulated A/B on traffic: requests drawn from the marketplace's traffic model in the
    /// eval window (`[online] traffic_requests`), each served through every retriever's
    /// conversion top K and the same auction (synthetic marketplace only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub traffic: Option<crate::online::OnlineMetrics>,
}

/// One figure set per task, each a map from metric name to value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskScores {
    /// On the conversion task's eval queries.
    #[serde(default)]
    pub conversion: BTreeMap<String, f64>,
    /// On the engagement task's eval queries.
    #[serde(default)]
    pub engagement: BTreeMap<String, f64>,
}

impl TaskScores {
    fn task_mut(&mut self, task: Task) -> &mut BTreeMap<String, f64> {
        match task {
            Task::Conversion => &mut self.conversion,
            Task::Engagement => &mut self.engagement,
        }
    }
}

/// Per-surface recall of one retriever, per task; keys are [`Surface::as_str`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSurfaces {
    /// On the conversion task's eval queries.
    #[serde(default)]
    pub conversion: BTreeMap<String, SurfaceRecall>,
    /// On the engagement task's eval queries.
    #[serde(default)]
    pub engagement: BTreeMap<String, SurfaceRecall>,
}

/// recall@K of the eval queries of one surface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SurfaceRecall {
    /// Queries of the surface averaged over (those with a relevant pin).
    pub queries: usize,
    /// Queries of the surface handed in without a relevant pin, left out of the average. The
    /// dataset's own eval queries always have one (it counts the pairs it drops per task in
    /// [`EvalSummary::skipped_without_relevant`]), so for them this is 0.
    pub skipped_without_relevant: usize,
    /// `recall@K` and `capped_recall@K` as in [`flatten`]; empty when `queries` is 0.
    pub recall: BTreeMap<String, f64>,
}

/// What one retriever's lists measure on one task beyond recall: the [`Metrics::ndcg`],
/// [`Metrics::advertiser`] and [`Metrics::surfaces`] entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RankingMetrics {
    /// Queries with a relevant pin, over which every figure is macro-averaged.
    pub queries: usize,
    /// Queries without a relevant pin, skipped.
    pub skipped_without_relevant: usize,
    /// `"ndcg@K"` ([`convcg_eval::ndcg_at_k`]); empty when `queries` is 0.
    pub ndcg: BTreeMap<String, f64>,
    /// Advertiser `recall@K` and `capped_recall@K` ([`convcg_eval::advertiser_recall_at_k`]);
    /// empty when `queries` is 0.
    pub advertiser: BTreeMap<String, f64>,
    /// recall@K of each surface's queries, for every surface (a surface without queries has an
    /// empty `recall`).
    pub surfaces: BTreeMap<String, SurfaceRecall>,
}

/// NDCG@K, advertiser recall@K and per-surface recall@K of `top` (one row per query) against
/// `relevant[q]`, for every K in `ks`, where query `q` was asked on `surfaces[q]` and
/// `pin_advertiser[pin]` is each pin's advertiser. Queries with no relevant pin are skipped and
/// counted, overall and per surface; the rest are macro-averaged.
///
/// # Errors
/// If `relevant` or `surfaces` does not hold one entry per row of `top`, or a metric rejects the
/// request (a K of 0 or above `top.k`, a malformed `top`, a pin without an advertiser).
pub fn ranking_metrics(
    top: &TopK,
    relevant: &[Vec<u32>],
    surfaces: &[Surface],
    pin_advertiser: &[u32],
    ks: &[usize],
) -> anyhow::Result<RankingMetrics> {
    let n = top.num_queries();
    if relevant.len() != n || surfaces.len() != n {
        anyhow::bail!(
            "{n} lists, {} relevant sets and {} surfaces",
            relevant.len(),
            surfaces.len()
        );
    }
    let keep: Vec<usize> = (0..n).filter(|&q| !relevant[q].is_empty()).collect();
    let mut out = RankingMetrics {
        queries: keep.len(),
        skipped_without_relevant: n - keep.len(),
        ..RankingMetrics::default()
    };
    if keep.len() == n {
        // The dataset's own queries all have relevant pins: no copy of the lists needed.
        out.ndcg = ndcg_at_k(top, relevant, ks)?;
        out.advertiser = flatten(&advertiser_recall_at_k(top, relevant, pin_advertiser, ks)?);
    } else if !keep.is_empty() {
        let sub = top.select_rows(&keep);
        let rel: Vec<Vec<u32>> = keep.iter().map(|&q| relevant[q].clone()).collect();
        out.ndcg = ndcg_at_k(&sub, &rel, ks)?;
        out.advertiser = flatten(&advertiser_recall_at_k(&sub, &rel, pin_advertiser, ks)?);
    }
    for surface in Surface::ALL {
        let of_surface = |q: &usize| surfaces[*q] == surface;
        let rows: Vec<usize> = keep.iter().copied().filter(of_surface).collect();
        let skipped = (0..n).filter(of_surface).count() - rows.len();
        let recall = if rows.is_empty() {
            BTreeMap::new()
        } else {
            let rel: Vec<Vec<u32>> = rows.iter().map(|&q| relevant[q].clone()).collect();
            flatten(&recall_at_k(&top.select_rows(&rows), &rel, ks)?)
        };
        out.surfaces.insert(
            surface.as_str().to_owned(),
            SurfaceRecall {
                queries: rows.len(),
                skipped_without_relevant: skipped,
                recall,
            },
        );
    }
    Ok(out)
}

/// Pin and advertiser [`Coverage`] of the served lists `top` at every K in `ks`, keyed `"@K"`.
/// The run passes each retriever's lists for the conversion task's eval queries: the requests a
/// conversion retriever serves, each (user, surface) pair once (the engagement task's queries
/// mostly repeat the same pairs, which would count their lists twice).
///
/// # Errors
/// Those of [`convcg_eval::coverage_at_k`].
pub fn coverage_of(
    top: &TopK,
    pin_advertiser: &[u32],
    n_advertisers: usize,
    ks: &[usize],
) -> anyhow::Result<BTreeMap<String, Coverage>> {
    Ok(coverage_at_k(top, pin_advertiser, n_advertisers, ks)?)
}

/// `recall@K` and `capped_recall@K` of a report as one flat map.
pub fn flatten(report: &RecallReport) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = report.recall.clone();
    m.extend(report.capped_recall.clone());
    m
}

impl Metrics {
    /// Files one retriever's ranking metrics on one task under [`Metrics::ndcg`],
    /// [`Metrics::advertiser`] and [`Metrics::surfaces`].
    pub fn insert_ranking(&mut self, retriever: &str, task: Task, m: RankingMetrics) {
        *self
            .ndcg
            .entry(retriever.to_owned())
            .or_default()
            .task_mut(task) = m.ndcg;
        *self
            .advertiser
            .entry(retriever.to_owned())
            .or_default()
            .task_mut(task) = m.advertiser;
        let surfaces = self.surfaces.entry(retriever.to_owned()).or_default();
        match task {
            Task::Conversion => surfaces.conversion = m.surfaces,
            Task::Engagement => surfaces.engagement = m.surfaces,
        }
    }

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
        if let Some(o) = &self.oracle_clicks {
            rows.push(("oracle of clicks", o));
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
                let Some(m) = r.sections()[section].1.filter(|m| !m.is_empty()) else {
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
        let popularity = at100(&self.popularity.conversion);
        let _ = write!(out, "\nconversion recall@100: model {model:.4}");
        if popularity > 0.0 {
            let _ = write!(out, " = {:.2}x popularity", model / popularity);
        } else {
            // With a handful of eval queries popularity may find none: no ratio to print.
            let _ = write!(out, ", popularity {popularity:.4}");
        }
        let (strongest, best) = self.strongest_baseline();
        if strongest == "popularity" {
            out.push_str(", the strongest baseline");
        }
        if let Some(o) = self.oracle.as_ref().filter(|o| at100(&o.conversion) > 0.0) {
            let _ = write!(
                out,
                ", {:.1}% of the oracle",
                100.0 * model / at100(&o.conversion)
            );
        }
        if strongest != "popularity" {
            let _ = write!(out, "; the strongest baseline is {strongest}, {best:.4}");
        }
        let _ = writeln!(
            out,
            " ({} conversion queries, {} engagement queries, {} pins)",
            self.eval.conversion_queries, self.eval.engagement_queries, self.eval.corpus_pins
        );
        if let (Some(o), Some(c)) = (&self.oracle, &self.oracle_clicks) {
            let (o, c) = (at100(&o.conversion), at100(&c.conversion));
            let _ = writeln!(
                out,
                "conversion labels can add at most {:+.4} recall@100 here: the oracle {o:.4}, \
                 the oracle of clicks (engagement-only ceiling) {c:.4}, {:+.1}%",
                o - c,
                100.0 * (o / c - 1.0)
            );
        }
        self.ranking_block(&mut out);
        if let Some(online) = &self.online {
            out.push_str(&online.table());
        }
        if let Some(traffic) = &self.traffic {
            out.push_str(&traffic.traffic_table());
        }
        out
    }

    /// The baseline (popularity, recently seen or random) with the highest conversion
    /// recall@100, and that recall; popularity on a tie or where none was measured.
    pub fn strongest_baseline(&self) -> (&'static str, f64) {
        let at100 = |r: &RetrieverMetrics| {
            r.conversion
                .get("recall@100")
                .copied()
                .filter(|v| v.is_finite())
        };
        let mut best = ("popularity", at100(&self.popularity));
        for (name, r) in [
            ("recently seen", &self.recently_seen),
            ("random", &self.random),
        ] {
            if let Some(v) = at100(r)
                && best.1.is_none_or(|b| v > b)
            {
                best = (name, Some(v));
            }
        }
        (best.0, best.1.unwrap_or(f64::NAN))
    }

    /// The table's block of the metrics beyond recall at K = 100 on the conversion task, model
    /// against popularity; nothing when neither was measured (a `metrics.json` of an older run).
    fn ranking_block(&self, out: &mut String) {
        const RETRIEVERS: [&str; 2] = ["model", "popularity"];
        if RETRIEVERS
            .iter()
            .all(|r| !self.ndcg.contains_key(*r) && !self.coverage.contains_key(*r))
        {
            return;
        }
        // A figure a retriever does not have prints as "-".
        let get = |m: Option<&BTreeMap<String, f64>>, key: &str| {
            m.and_then(|m| m.get(key))
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
        };
        let _ = writeln!(
            out,
            "\n{:<34}{:>16}{:>16}",
            "conversion task, K = 100", "model", "popularity"
        );
        let mut row = |label: &str, cell: &dyn Fn(&str) -> String| {
            let _ = write!(out, "  {label:<32}");
            for r in RETRIEVERS {
                let _ = write!(out, "{:>16}", cell(r));
            }
            out.push('\n');
        };
        row("ndcg@100", &|r| {
            let m = self.ndcg.get(r).map(|t| &t.conversion);
            get(m, "ndcg@100")
        });
        // Absent where the catalogue has a single advertiser (every list finds it).
        if !self.advertiser.is_empty() {
            row("advertiser recall@100", &|r| {
                let m = self.advertiser.get(r).map(|t| &t.conversion);
                get(m, "recall@100")
            });
        }
        let coverage = |r: &str| self.coverage.get(r).and_then(|c| c.get("@100"));
        row("pin coverage@100 (gini)", &|r| match coverage(r) {
            Some(c) => format!("{:.4} ({:.2})", c.pin_coverage, c.pin_gini),
            None => "-".to_owned(),
        });
        row("advertiser coverage@100 (gini)", &|r| match coverage(r) {
            Some(c) => format!("{:.4} ({:.2})", c.advertiser_coverage, c.advertiser_gini),
            None => "-".to_owned(),
        });
        for surface in Surface::ALL {
            let name = surface.as_str();
            let of = |r: &str| self.surfaces.get(r).and_then(|s| s.conversion.get(name));
            let queries = of("model").map_or(0, |s| s.queries);
            if queries == 0 {
                continue;
            }
            row(&format!("recall@100 {name} ({queries} q)"), &|r| {
                get(of(r).map(|s| &s.recall), "recall@100")
            });
        }
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
        for &k in convcg_eval::RECALL_KS.iter().filter(|&&k| k <= top.k()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_the_oracle_of_clicks_on_conversions_only_with_the_headroom() {
        let at = |r: f64| {
            convcg_eval::RECALL_KS
                .iter()
                .map(|k| (format!("recall@{k}"), r))
                .collect::<BTreeMap<_, _>>()
        };
        let both = |r: f64| RetrieverMetrics {
            conversion: at(r),
            engagement: at(r),
            conversion_clean: None,
        };
        let m = Metrics {
            model: both(0.5),
            popularity: both(0.1),
            oracle: Some(both(0.8)),
            oracle_clicks: Some(RetrieverMetrics {
                conversion: at(0.75),
                ..RetrieverMetrics::default()
            }),
            ..Metrics::default()
        };
        let table = m.table();
        let engagement = table
            .split("\nengagement")
            .nth(1)
            .and_then(|s| s.split("\n\n").next())
            .unwrap_or_default();
        assert!(table.contains("  oracle of clicks"), "{table}");
        assert!(!engagement.contains("oracle of clicks"), "{table}");
        assert!(
            table.contains(
                "conversion labels can add at most +0.0500 recall@100 here: the oracle 0.8000, \
                 the oracle of clicks (engagement-only ceiling) 0.7500, +6.7%"
            ),
            "{table}"
        );
        let without = Metrics {
            oracle_clicks: None,
            ..m
        };
        assert!(!without.table().contains("oracle of clicks"));
    }

    /// A retriever whose conversion recall is `r` at every K.
    fn at(r: f64) -> RetrieverMetrics {
        RetrieverMetrics {
            conversion: convcg_eval::RECALL_KS
                .iter()
                .map(|k| (format!("recall@{k}"), r))
                .collect(),
            ..RetrieverMetrics::default()
        }
    }

    /// The headline names the strongest baseline, recently seen where it beats popularity.
    #[test]
    fn the_headline_names_the_strongest_baseline() {
        let tmall = Metrics {
            model: at(0.3911),
            popularity: at(0.0279),
            recently_seen: at(0.8128),
            random: at(0.0140),
            ..Metrics::default()
        };
        assert_eq!(tmall.strongest_baseline(), ("recently seen", 0.8128));
        assert!(
            tmall.table().contains(
                "conversion recall@100: model 0.3911 = 14.02x popularity; \
                 the strongest baseline is recently seen, 0.8128"
            ),
            "{}",
            tmall.table()
        );
        let synthetic = Metrics {
            recently_seen: at(0.01),
            ..tmall
        };
        assert_eq!(synthetic.strongest_baseline().0, "popularity");
        assert!(
            synthetic
                .table()
                .contains("= 14.02x popularity, the strongest baseline"),
            "{}",
            synthetic.table()
        );
    }

    /// A popularity (or oracle) recall of 0, as a log with one conversion query gives, prints
    /// no ratio rather than `NaNx` or `infx`.
    #[test]
    fn a_zero_baseline_prints_no_ratio() {
        for model in [0.0, 1.0] {
            let one_query = Metrics {
                model: at(model),
                popularity: at(0.0),
                recently_seen: at(0.0),
                random: at(0.0),
                oracle: Some(at(0.0)),
                ..Metrics::default()
            };
            let table = one_query.table();
            assert!(
                table.contains(&format!(
                    "conversion recall@100: model {model:.4}, popularity 0.0000, the strongest baseline ("
                )),
                "{table}"
            );
            assert!(!table.contains("NaN") && !table.contains("inf"), "{table}");
        }
    }

    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "{got} != {want}");
    }

    /// 1 / log2(rank + 2), the NDCG discount of rank `r` (from 0).
    fn d(r: usize) -> f64 {
        1.0 / ((r + 2) as f64).log2()
    }

    /// Four queries over pins 0..6 of advertisers [0, 0, 1, 1, 2, 2], lists of 3 with ties in
    /// their scores (broken by the smaller id, as the retrievers do).
    fn hand_made() -> (TopK, Vec<Vec<u32>>, Vec<Surface>) {
        let top = TopK::new(
            3,
            vec![1, 0, 4, 2, 3, 5, 5, 2, 1, 3, 1, 0],
            vec![2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 2.0, 1.0, 3.0, 2.0, 1.0],
        )
        .unwrap();
        // Query 1 has no relevant pin: skipped and counted.
        let relevant = vec![vec![4, 0], vec![], vec![2], vec![2, 3, 1]];
        let surfaces = vec![
            Surface::HomeFeed,
            Surface::Related,
            Surface::Related,
            Surface::HomeFeed,
        ];
        (top, relevant, surfaces)
    }

    const OWNER: [u32; 6] = [0, 0, 1, 1, 2, 2];

    #[test]
    fn ranking_metrics_by_hand() {
        let (top, relevant, surfaces) = hand_made();
        let m = ranking_metrics(&top, &relevant, &surfaces, &OWNER, &[1, 3]).unwrap();
        assert_eq!((m.queries, m.skipped_without_relevant), (3, 1));
        // Hits: query 0 at ranks 1 and 2 (the tied pair) of 2 relevant; query 2 at rank 1 of 1;
        // query 3 at ranks 0 and 1 of 3.
        assert_near(m.ndcg["ndcg@1"], (0.0 + 0.0 + 1.0) / 3.0);
        assert_near(
            m.ndcg["ndcg@3"],
            ((d(1) + d(2)) / (d(0) + d(1)) + d(1) / d(0) + (d(0) + d(1)) / (d(0) + d(1) + d(2)))
                / 3.0,
        );
        // Advertisers: query 0 lists [0, 0, 2] for relevant {0, 2}; query 2 lists [2, 1, 0]
        // for {1}; query 3 lists [1, 0, 0] for {0, 1}.
        assert_near(m.advertiser["recall@1"], (0.5 + 0.0 + 0.5) / 3.0);
        assert_near(m.advertiser["recall@3"], 1.0);
        assert_near(m.advertiser["capped_recall@1"], (1.0 + 0.0 + 1.0) / 3.0);
        assert_eq!(m.advertiser.len(), 4);
        let home = &m.surfaces["homefeed"];
        assert_eq!((home.queries, home.skipped_without_relevant), (2, 0));
        assert_near(home.recall["recall@1"], (0.0 + 1.0 / 3.0) / 2.0);
        assert_near(home.recall["recall@3"], (1.0 + 2.0 / 3.0) / 2.0);
        assert_near(home.recall["capped_recall@1"], (0.0 + 1.0) / 2.0);
        let related = &m.surfaces["related"];
        assert_eq!((related.queries, related.skipped_without_relevant), (1, 1));
        assert_near(related.recall["recall@1"], 0.0);
        assert_near(related.recall["recall@3"], 1.0);
        let search = &m.surfaces["search"];
        assert_eq!((search.queries, search.skipped_without_relevant), (0, 0));
        assert!(search.recall.is_empty());
    }

    #[test]
    fn skipping_a_query_equals_leaving_it_out() {
        let (top, relevant, surfaces) = hand_made();
        let with_skip = ranking_metrics(&top, &relevant, &surfaces, &OWNER, &[1, 3]).unwrap();
        let rows = [0, 2, 3];
        let without = ranking_metrics(
            &top.select_rows(&rows),
            &rows.map(|q| relevant[q].clone()),
            &rows.map(|q| surfaces[q]),
            &OWNER,
            &[1, 3],
        )
        .unwrap();
        assert_eq!(without.skipped_without_relevant, 0);
        assert_eq!(without.ndcg, with_skip.ndcg);
        assert_eq!(without.advertiser, with_skip.advertiser);
        assert_eq!(
            without.surfaces["related"].recall,
            with_skip.surfaces["related"].recall
        );
    }

    #[test]
    fn ranking_metrics_of_queries_without_relevant_pins_are_empty_not_nan() {
        let (top, _, surfaces) = hand_made();
        let m = ranking_metrics(
            &top,
            &[vec![], vec![], vec![], vec![]],
            &surfaces,
            &OWNER,
            &[3],
        )
        .unwrap();
        assert_eq!((m.queries, m.skipped_without_relevant), (0, 4));
        assert!(m.ndcg.is_empty() && m.advertiser.is_empty());
        assert_eq!(m.surfaces["related"].skipped_without_relevant, 2);
        assert!(m.surfaces.values().all(|s| s.recall.is_empty()));
    }

    #[test]
    fn ranking_metrics_reject_mismatched_and_bad_input() {
        let (top, relevant, surfaces) = hand_made();
        assert!(ranking_metrics(&top, &relevant[..3], &surfaces, &OWNER, &[1]).is_err());
        assert!(ranking_metrics(&top, &relevant, &surfaces[..1], &OWNER, &[1]).is_err());
        assert!(ranking_metrics(&top, &relevant, &surfaces, &OWNER, &[4]).is_err());
        assert!(ranking_metrics(&top, &relevant, &surfaces, &OWNER[..4], &[1]).is_err());
    }

    #[test]
    fn coverage_counts_every_served_list_by_hand() {
        // At K = 1 the lists serve pins 1, 2, 5, 3 (the skipped query's list is served too):
        // pin counts [0, 1, 1, 1, 0, 1], advertiser counts [1, 2, 1].
        let (top, _, _) = hand_made();
        let c = coverage_of(&top, &OWNER, 3, &[1, 3]).unwrap();
        assert_near(c["@1"].pin_coverage, 4.0 / 6.0);
        assert_near(c["@1"].advertiser_coverage, 1.0);
        // Sorted pins [0, 0, 1, 1, 1, 1]: (-1 + 1 + 3 + 5) / (6 * 4).
        assert_near(c["@1"].pin_gini, 8.0 / 24.0);
        // Sorted advertisers [1, 1, 2]: (-2 + 0 + 4) / (3 * 4).
        assert_near(c["@1"].advertiser_gini, 2.0 / 12.0);
        // At K = 3 every pin is served: [3, 3, 2, 2, 1, 1].
        assert_near(c["@3"].pin_coverage, 1.0);
        assert!(coverage_of(&top, &OWNER, 2, &[1]).is_err());
    }

    #[test]
    fn new_sections_land_in_json_and_the_table_and_old_files_still_read() {
        let (top, relevant, surfaces) = hand_made();
        let ks = convcg_eval::RECALL_KS;
        // Lists of 1000 from the hand-made rows, padded with pins 6.. (advertiser 3).
        let long = TopK::new(
            1000,
            (0..4)
                .flat_map(|q| top.row(q).iter().copied().chain(6..6 + 997))
                .collect(),
            vec![0.0; 4000],
        )
        .unwrap();
        let owner: Vec<u32> = (0..1003u32)
            .map(|p| OWNER.get(p as usize).copied().unwrap_or(3))
            .collect();
        let mut m = Metrics::default();
        for (name, task) in [
            ("model", Task::Conversion),
            ("popularity", Task::Conversion),
        ] {
            let r = ranking_metrics(&long, &relevant, &surfaces, &owner, &ks).unwrap();
            m.insert_ranking(name, task, r);
            m.coverage
                .insert(name.to_owned(), coverage_of(&long, &owner, 4, &ks).unwrap());
        }
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert!(v["ndcg"]["model"]["conversion"]["ndcg@100"].is_f64());
        assert!(v["advertiser"]["popularity"]["conversion"]["recall@1000"].is_f64());
        assert!(v["coverage"]["model"]["@100"]["advertiser_gini"].is_f64());
        assert_eq!(
            v["surfaces"]["model"]["conversion"]["related"]["skipped_without_relevant"],
            1
        );
        let table = m.table();
        assert!(table.contains("ndcg@100"), "{table}");
        assert!(table.contains("recall@100 related (1 q)"), "{table}");
        // A metrics.json from before these sections existed still reads, and so does ours.
        let mut old = v.clone();
        for key in ["ndcg", "advertiser", "coverage", "surfaces"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let back: Metrics = serde_json::from_value(old).unwrap();
        assert!(back.ndcg.is_empty() && back.surfaces.is_empty());
        assert!(!back.table().contains("ndcg@100"));
        assert_eq!(serde_json::from_value::<Metrics>(v).unwrap(), m);
    }

    #[test]
    fn per_query_recall_matches_the_definition() {
        let top = TopK::new(
            1000,
            (0..2000u32).map(|i| i % 1000).collect(),
            vec![0.0; 2000],
        )
        .unwrap();
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
