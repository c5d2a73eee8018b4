//! `convcg compare RUN_A RUN_B`: run B against run A, as the seed reports online results
//! ("+x% conversion volume, +y% impression-to-conversion, +z% RoAS"), with the model's recall@K
//! deltas per task and surface.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use convcg_eval::OnlineLift;

use crate::metrics::Metrics;
use crate::online::{LIFT_BASELINE, OnlineFigures};

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
}

/// Run B against run A.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Run A's `metrics.json`.
    pub a: PathBuf,
    /// Run B's `metrics.json`.
    pub b: PathBuf,
    /// The model's simulated serving.
    pub online: OnlineComparison,
    /// The model's recall@K per task, surface (`all` first) and K, where both runs have it.
    pub recall: Vec<RecallDelta>,
    /// Why the lifts may not be like for like (different auctions or baselines); empty when
    /// the runs served the same queries through the same auction.
    pub warnings: Vec<String>,
}

/// The model's online figures of a run, or an error naming the file that lacks them.
fn model_online<'m>(file: &Path, m: &'m Metrics) -> Result<&'m OnlineFigures> {
    let Some(online) = &m.online else {
        bail!(
            "{} has no `online` section: simulated serving needs the synthetic marketplace's ground truth \
             (a `convcg train` run, or `train --data` on a `convcg synth` directory, by a convcg that measures it)",
            file.display()
        );
    };
    online
        .retrievers
        .get("model")
        .with_context(|| format!("{}: the `online` section has no model", file.display()))
}

/// Compares the runs (directories or `metrics.json` files) `a` and `b`.
///
/// # Errors
/// If a file is missing or unreadable, or a run has no simulated serving of its model.
pub fn compare_runs(a: &Path, b: &Path) -> Result<Comparison> {
    let (file_a, ma) = read_metrics(a)?;
    let (file_b, mb) = read_metrics(b)?;
    let online_a = model_online(&file_a, &ma)?.clone();
    let online_b = model_online(&file_b, &mb)?.clone();
    let mut warnings = Vec::new();
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
        online: OnlineComparison {
            lift: OnlineLift::between(&online_a.outcome, &online_b.outcome),
            a: online_a,
            b: online_b,
        },
        recall: recall_deltas(&ma, &mb),
        a: file_a,
        b: file_b,
        warnings,
    })
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
        for s in convcg_data::Surface::ALL {
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

impl Comparison {
    /// The printed comparison: the files, the model's online figures and lifts, the seed-style
    /// line, then the recall deltas.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A: {}", self.a.display());
        let _ = writeln!(out, "B: {}", self.b.display());
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let (a, b, lift) = (&self.online.a, &self.online.b, &self.online.lift);
        let _ = writeln!(
            out,
            "\n{:<34}{:>12}{:>12}{:>10}",
            "model, simulated serving", "A", "B", "B vs A"
        );
        let rows = [
            (
                "conversion volume (per 1k queries)",
                a.conversion_volume,
                b.conversion_volume,
                4,
                lift.conversion_volume,
            ),
            (
                "impression-to-conversion (%)",
                a.impression_to_conversion.map(|x| 100.0 * x),
                b.impression_to_conversion.map(|x| 100.0 * x),
                4,
                lift.impression_to_conversion,
            ),
            ("RoAS", a.roas, b.roas, 3, lift.roas),
        ];
        for (name, va, vb, digits, l) in rows {
            let _ = writeln!(
                out,
                "{name:<34}{:>12}{:>12}{:>10}",
                figure(va, digits),
                figure(vb, digits),
                signed_percent(l)
            );
        }
        let _ = writeln!(out, "\nB vs A: {}", lift.seed_style());
        let _ = writeln!(
            out,
            "\nmodel recall@K\n{:<12}{:<10}{:>6}{:>10}{:>10}{:>10}{:>10}",
            "task", "surface", "K", "A", "B", "delta", "relative"
        );
        for r in &self.recall {
            let _ = writeln!(
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
        }
        out
    }
}
