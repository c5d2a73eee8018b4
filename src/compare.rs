//! `convcg compare RUN_A RUN_B`: run B against run A, as the seed reports online results
//! ("+x% conversion volume, +y% impression-to-conversion, +z% RoAS"), with the model's recall@K
//! deltas per task and surface, each with a paired bootstrap 95% interval over the eval queries
//! when both runs wrote `per_query.json` for the same queries.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use convcg_data::Surface;
use convcg_eval::{Bootstrap, BootstrapInterval, OnlineLift};

use crate::metrics::Metrics;
use crate::online::{LIFT_BASELINE, OnlineFigures};
use crate::per_query::{OnlineLiftIntervals, PerQuery, QuerySet, recall_intervals};

/// The file of a run directory that `compare` and `report` read.
pub const METRICS_FILE: &str = "metrics.json";

/// Reads a run's `metrics.json`: `path` is the run directory or the file itself. Returns the
/// file's path and its contents.
///
/// # Errors
/// If the file cannot be read or is not a `metrics.json` (the error names the file).
pub fn read_metrics(path: &Path) -> Result<(PathBuf, Metrics)> {
    let file = if path.is_dir() {
        path.join(METRICS_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let metrics = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a convcg metrics.json", file.display()))?;
    Ok((file, metrics))
}

/// `Ok` when the run of `file` was evaluated; an error naming the file when it trained with
/// `[data] eval_protocol = "none"` and so has no figure to compare or chart.
pub fn require_evaluation(file: &Path, metrics: &Metrics) -> Result<()> {
    if metrics.eval.conversion_queries + metrics.eval.engagement_queries == 0 {
        anyhow::bail!(
            "{} holds no evaluation: its run trained with `[data] eval_protocol = \"none\"` (or had no eval query)",
            file.display()
        );
    }
    Ok(())
}

/// One recall figure of the model in both runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecallDelta {
    /// `conversion` or `engagement`.
    pub task: &'static str,
    /// `all`, or the surface of the eval queries (`homefeed`, `related`, `search`).
    pub surface: String,
    /// The cut-off.
    pub k: usize,
    /// Run A's recall@K.
    pub a: f64,
    /// Run B's recall@K.
    pub b: f64,
    /// `b - a`.
    pub delta: f64,
    /// `100 (b / a - 1)`; `None` when `a` is 0.
    pub relative: Option<f64>,
    /// The paired bootstrap interval of `delta` over the queries (its `mean` is `delta`
    /// recomputed from `per_query.json`); `None` when the runs' per-query figures do not pair
    /// ([`Comparison::no_interval`] says why).
    pub interval: Option<BootstrapInterval>,
}

/// The model's simulated serving in both runs and B's lifts over A.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineComparison {
    /// Run A's model.
    pub a: OnlineFigures,
    /// Run B's model.
    pub b: OnlineFigures,
    /// B over A, in percent.
    pub lift: OnlineLift,
    /// The paired bootstrap intervals of the lifts over the conversion eval queries, in
    /// percent; `None` when the runs' per-query outcomes do not pair.
    pub intervals: Option<OnlineLiftIntervals>,
}

/// Run B against run A.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Run A's `metrics.json`.
    pub a: PathBuf,
    /// Run B's `metrics.json`.
    pub b: PathBuf,
    /// The model's simulated serving; `None` when a run has none (a run on real data: simulated
    /// serving needs the synthetic marketplace's ground truth), [`Comparison::notes`] says
    /// which.
    pub online: Option<OnlineComparison>,
    /// The model in the simulated A/B on traffic; `None` when a run has none.
    pub traffic: Option<OnlineComparison>,
    /// The model's recall@K per task, surface (`all` first) and K, where both runs have it.
    pub recall: Vec<RecallDelta>,
    /// Why the lifts may not be like for like (different auctions or baselines); empty when
    /// the runs served the same queries through the same auction.
    pub warnings: Vec<String>,
    /// How the intervals were drawn.
    pub bootstrap: Bootstrap,
    /// Why figures lack an interval (a run without `per_query.json`, different eval queries);
    /// empty when every figure has one.
    pub no_interval: Vec<String>,
    /// What else the reader should know (no simulated serving in a run).
    pub notes: Vec<String>,
}

/// The model's online figures of a run, or why there are none (naming the file).
fn model_online<'m>(file: &Path, m: &'m Metrics) -> std::result::Result<&'m OnlineFigures, String> {
    let Some(online) = &m.online else {
        return Err(format!(
            "{} has no `online` section: simulated serving needs the synthetic marketplace's ground truth \
             (a `convcg train` run, or `train --data` on a `convcg synth` directory, by a convcg that measures it)",
            file.display()
        ));
    };
    online
        .retrievers
        .get("model")
        .ok_or_else(|| format!("{}: the `online` section has no model", file.display()))
}

/// A run's `per_query.json`, or why it has none usable.
fn per_query_of(label: &str, file: &Path, m: &Metrics) -> std::result::Result<PerQuery, String> {
    match PerQuery::read_beside(file, m) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(format!(
            "run {label} has no {} beside {} (a run by a convcg before it)",
            crate::per_query::PER_QUERY_FILE,
            file.display()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Compares the runs (directories or `metrics.json` files) `a` and `b`.
///
/// # Errors
/// If a `metrics.json` is missing or unreadable.
pub fn compare_runs(a: &Path, b: &Path) -> Result<Comparison> {
    let (file_a, ma) = read_metrics(a)?;
    let (file_b, mb) = read_metrics(b)?;
    require_evaluation(&file_a, &ma)?;
    require_evaluation(&file_b, &mb)?;
    let settings = Bootstrap::default();
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let mut no_interval = Vec::new();
    let pair = match (
        per_query_of("A", &file_a, &ma),
        per_query_of("B", &file_b, &mb),
    ) {
        (Ok(pa), Ok(pb)) => Some((pa, pb)),
        (ra, rb) => {
            no_interval.extend(ra.err());
            no_interval.extend(rb.err());
            None
        }
    };
    // Per task, the two runs' query sets when they are the same queries.
    let mut paired_sets: Vec<(&'static str, &QuerySet, &QuerySet)> = Vec::new();
    if let Some((pa, pb)) = &pair {
        for (task, sa, sb) in [
            ("conversion", &pa.conversion, &pb.conversion),
            ("engagement", &pa.engagement, &pb.engagement),
        ] {
            if sa.identity == sb.identity && sa.queries == sb.queries && sa.queries > 0 {
                paired_sets.push((task, sa, sb));
            } else {
                let what = if task == "conversion" {
                    "their conversion recall and online outcomes do"
                } else {
                    "their engagement recall does"
                };
                no_interval.push(format!(
                    "the runs' {task} eval queries differ (A: {} queries, identity {}; B: {}, {}): \
                     {what} not pair query by query",
                    sa.queries, sa.identity, sb.queries, sb.identity
                ));
            }
        }
    }
    let mut recall = recall_deltas(&ma, &mb);
    for (task, sa, sb) in &paired_sets {
        let mut subsets: Vec<(String, Option<Vec<usize>>)> = vec![("all".to_owned(), None)];
        for s in Surface::ALL {
            let rows = sa.rows_of(s);
            if !rows.is_empty() {
                subsets.push((s.as_str().to_owned(), Some(rows)));
            }
        }
        for (surface, rows) in subsets {
            let intervals =
                recall_intervals(sa, sb, rows.as_deref(), &convcg_eval::RECALL_KS, &settings)?;
            for r in recall
                .iter_mut()
                .filter(|r| r.task == *task && r.surface == surface)
            {
                r.interval = intervals.get(&r.k).copied();
            }
        }
    }
    let online = match (model_online(&file_a, &ma), model_online(&file_b, &mb)) {
        (Ok(oa), Ok(ob)) => {
            let intervals = match &pair {
                Some((pa, pb)) => match (&pa.online, &pb.online) {
                    (Some(qa), Some(qb))
                        if paired_sets.iter().any(|(t, _, _)| *t == "conversion") =>
                    {
                        Some(OnlineLiftIntervals::between(qa, qb, &settings)?)
                    }
                    (Some(_), Some(_)) => None,
                    _ => {
                        no_interval.push(
                            "a per_query.json holds no online outcomes: the online lifts have no interval"
                                .to_owned(),
                        );
                        None
                    }
                },
                None => None,
            };
            Some(OnlineComparison {
                lift: OnlineLift::between(&oa.outcome, &ob.outcome),
                a: oa.clone(),
                b: ob.clone(),
                intervals,
            })
        }
        (ra, rb) => {
            notes.extend(ra.err());
            notes.extend(rb.err());
            None
        }
    };
    let traffic = traffic_comparison(&ma, &mb, pair.as_ref(), &settings, &mut no_interval)?;
    if let (Some(oa), Some(ob)) = (&ma.online, &mb.online) {
        if oa.auction != ob.auction {
            warnings.push("the runs' auctions differ ([online] settings)".to_owned());
        }
        let base =
            |o: &crate::online::OnlineMetrics| o.retrievers.get(LIFT_BASELINE).map(|f| f.outcome);
        if base(oa) != base(ob) {
            warnings.push(format!(
                "the runs' {LIFT_BASELINE} baselines differ: they did not serve the same eval queries of the same marketplace"
            ));
        }
    }
    Ok(Comparison {
        online,
        traffic,
        recall,
        a: file_a,
        b: file_b,
        warnings,
        bootstrap: settings,
        no_interval,
        notes,
    })
}

/// The model of both runs in the simulated A/B on traffic, with intervals over the requests
/// when both runs' `per_query.json` hold the outcomes of the same requests.
fn traffic_comparison(
    ma: &Metrics,
    mb: &Metrics,
    pair: Option<&(PerQuery, PerQuery)>,
    settings: &Bootstrap,
    no_interval: &mut Vec<String>,
) -> Result<Option<OnlineComparison>> {
    fn model(m: &Metrics) -> Option<&OnlineFigures> {
        m.traffic.as_ref().and_then(|t| t.retrievers.get("model"))
    }
    let (Some(ta), Some(tb)) = (model(ma), model(mb)) else {
        return Ok(None);
    };
    let intervals = match pair.map(|(a, b)| (&a.traffic, &b.traffic)) {
        Some((Some(qa), Some(qb))) if qa.identity == qb.identity => Some(
            OnlineLiftIntervals::between(&qa.outcomes, &qb.outcomes, settings)?,
        ),
        Some((Some(_), Some(_))) => {
            no_interval.push(
                "the runs served different traffic requests: the traffic lifts have no interval"
                    .to_owned(),
            );
            None
        }
        _ => {
            no_interval.push(
                "a per_query.json holds no traffic outcomes: the traffic lifts have no interval"
                    .to_owned(),
            );
            None
        }
    };
    Ok(Some(OnlineComparison {
        lift: OnlineLift::between(&ta.outcome, &tb.outcome),
        a: ta.clone(),
        b: tb.clone(),
        intervals,
    }))
}

/// The model's recall@K of both runs, per task, surface and K of [`convcg_eval::RECALL_KS`].
fn recall_deltas(ma: &Metrics, mb: &Metrics) -> Vec<RecallDelta> {
    let mut out = Vec::new();
    for task in ["conversion", "engagement"] {
        let overall = |m: &Metrics| match task {
            "conversion" => m.model.conversion.clone(),
            _ => m.model.engagement.clone(),
        };
        let of_surface = |m: &Metrics, s: &str| {
            m.surfaces
                .get("model")
                .and_then(|t| match task {
                    "conversion" => t.conversion.get(s),
                    _ => t.engagement.get(s),
                })
                .map(|r| r.recall.clone())
                .unwrap_or_default()
        };
        let mut sets = vec![("all".to_owned(), overall(ma), overall(mb))];
        for s in Surface::ALL {
            let s = s.as_str();
            sets.push((s.to_owned(), of_surface(ma, s), of_surface(mb, s)));
        }
        for (surface, ra, rb) in sets {
            for k in convcg_eval::RECALL_KS {
                let key = format!("recall@{k}");
                let (Some(&a), Some(&b)) = (ra.get(&key), rb.get(&key)) else {
                    continue;
                };
                out.push(RecallDelta {
                    task,
                    surface: surface.clone(),
                    k,
                    a,
                    b,
                    delta: b - a,
                    relative: convcg_eval::lift_percent(Some(a), Some(b)),
                    interval: None,
                });
            }
        }
    }
    out
}

/// A percentage with its sign and one decimal, or `n/a`.
fn signed_percent(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:+.1}%"))
}

fn figure(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// The source paper's line with an interval after each lift where there is one:
/// `+4.1% conversion volume [+2.0%, +6.3%], +2.7% impression-to-conversion [..], +3.1% RoAS [..]`.
fn paper_style_with(lift: &OnlineLift, intervals: Option<&OnlineLiftIntervals>) -> String {
    let Some(ci) = intervals else {
        return lift.paper_style();
    };
    let one = |l: Option<f64>, name: &str, ci: Option<BootstrapInterval>| {
        let mut s = format!("{} {name}", signed_percent(l));
        if let Some(ci) = ci {
            s.push(' ');
            s.push_str(&ci.bracket(1, "%"));
        }
        s
    };
    format!(
        "{}, {}, {}",
        one(
            lift.conversion_volume,
            "conversion volume",
            ci.conversion_volume
        ),
        one(
            lift.impression_to_conversion,
            "impression-to-conversion",
            ci.impression_to_conversion
        ),
        one(lift.roas, "RoAS", ci.roas)
    )
}

impl Comparison {
    /// The printed comparison: the files, the model's online figures and lifts, the paper-style
    /// line, then the recall deltas, each with its interval where there is one, and why not
    /// where there is none.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A: {}", self.a.display());
        let _ = writeln!(out, "B: {}", self.b.display());
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let pct = self.bootstrap.level * 100.0;
        if let Some(traffic) = &self.traffic {
            Self::online_block(
                "model, simulated A/B on traffic",
                "per 1k requests",
                traffic,
                pct,
                &mut out,
            );
        }
        match &self.online {
            Some(online) => Self::online_block(
                "model, simulated serving",
                "per 1k queries",
                online,
                pct,
                &mut out,
            ),
            None => {
                let _ = writeln!(
                    out,
                    "\nno simulated serving: online figures need the synthetic marketplace's ground truth"
                );
                for n in &self.notes {
                    let _ = writeln!(out, "  {n}");
                }
            }
        }
        let with_intervals = self.recall.iter().any(|r| r.interval.is_some());
        let _ = write!(
            out,
            "\nmodel recall@K\n{:<12}{:<10}{:>6}{:>10}{:>10}{:>10}{:>10}",
            "task", "surface", "K", "A", "B", "delta", "relative"
        );
        if with_intervals {
            let _ = write!(out, "  {pct:.0}% interval of delta");
        }
        out.push('\n');
        for r in &self.recall {
            let _ = write!(
                out,
                "{:<12}{:<10}{:>6}{:>10.4}{:>10.4}{:>+10.4}{:>10}",
                r.task,
                r.surface,
                r.k,
                r.a,
                r.b,
                r.delta,
                signed_percent(r.relative)
            );
            if let Some(ci) = r.interval {
                let _ = write!(out, "  {}", ci.bracket(4, ""));
            }
            out.push('\n');
        }
        let any_interval = with_intervals
            || [&self.online, &self.traffic]
                .iter()
                .any(|o| o.as_ref().is_some_and(|o| o.intervals.is_some()));
        if any_interval {
            let _ = writeln!(
                out,
                "\nintervals: paired bootstrap over the eval queries or traffic requests ({} resamples, {pct:.0}% percentile, seed {}); \
                 (n.s.): the interval holds 0, the difference is not a result",
                self.bootstrap.resamples, self.bootstrap.seed
            );
        }
        for why in &self.no_interval {
            let _ = writeln!(out, "no interval: {why}");
        }
        out
    }

    fn online_block(title: &str, per: &str, online: &OnlineComparison, pct: f64, out: &mut String) {
        let (a, b, lift) = (&online.a, &online.b, &online.lift);
        let ci = online.intervals.as_ref();
        let _ = write!(out, "\n{title:<34}{:>12}{:>12}{:>10}", "A", "B", "B vs A");
        if ci.is_some() {
            let _ = write!(out, "  {pct:.0}% interval");
        }
        out.push('\n');
        let rows = [
            (
                format!("conversion volume ({per})"),
                a.conversion_volume,
                b.conversion_volume,
                4,
                lift.conversion_volume,
                ci.and_then(|c| c.conversion_volume),
            ),
            (
                "impression-to-conversion (%)".to_owned(),
                a.impression_to_conversion.map(|x| 100.0 * x),
                b.impression_to_conversion.map(|x| 100.0 * x),
                4,
                lift.impression_to_conversion,
                ci.and_then(|c| c.impression_to_conversion),
            ),
            (
                "RoAS".to_owned(),
                a.roas,
                b.roas,
                3,
                lift.roas,
                ci.and_then(|c| c.roas),
            ),
        ];
        for (name, va, vb, digits, l, interval) in rows {
            let _ = write!(
                out,
                "{name:<34}{:>12}{:>12}{:>10}",
                figure(va, digits),
                figure(vb, digits),
                signed_percent(l)
            );
            if let Some(interval) = interval {
                let _ = write!(out, "  {}", interval.bracket(1, "%"));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "\nB vs A: {}", paper_style_with(lift, ci));
    }
}
