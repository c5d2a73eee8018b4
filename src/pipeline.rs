//! `convcg pipeline DIR`: W3 once (an event log on disk to every shuffled batch), reported as one
//! JSON line shaped like the DuckDB peer's, or as a readable table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use convcg_data::LabelConfig;
use convcg_data::pipeline::{PipelineConfig, PipelineReport, run_pipeline};

use crate::progress::spinner;
use crate::run::Verbosity;

/// What `convcg pipeline` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineRequest {
    /// Positives per batch; at least 1.
    pub batch_size: usize,
    /// Seed of both the hard-negative draw and the shuffle (the peer's `--seed`).
    pub seed: u64,
    /// Worker threads (`None`: rayon's default, one per core).
    pub threads: Option<usize>,
}

impl PipelineRequest {
    /// The pipeline configuration: the default rules with this seed and batch size.
    pub fn config(&self) -> PipelineConfig {
        let mut cfg = PipelineConfig {
            batch_size: self.batch_size,
            shuffle_seed: self.seed,
            ..PipelineConfig::default()
        };
        cfg.labels.seed = self.seed;
        cfg
    }

    /// [`PipelineRequest::config`] with the labelling rules and bad-row policy of
    /// `dir/dataset.toml` where there is one, as `convcg train --data` reads it (its hard-negative
    /// seed is still this request's).
    ///
    /// # Errors
    /// If `dataset.toml` cannot be read or parsed.
    pub fn config_for(&self, dir: &Path) -> Result<PipelineConfig> {
        let mut cfg = self.config();
        if let Some(data) = crate::config::read_dataset_toml(dir)? {
            cfg.labels = LabelConfig {
                seed: self.seed,
                ..data.label_config()
            };
            cfg.on_bad_row = data.on_bad_row;
        }
        Ok(cfg)
    }
}

/// Runs W3 once on `dir` in a pool of `req.threads` threads; with [`Verbosity::Normal`] shows
/// the phase on a spinner (on stderr).
///
/// # Errors
/// If the pool cannot be built, or the pipeline fails (a bad log or setting), with the
/// directory named.
pub fn run_w3(dir: &Path, req: &PipelineRequest, verbosity: Verbosity) -> Result<PipelineReport> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = req.threads {
        pool = pool.num_threads(t);
    }
    let pool = pool.build().context("cannot start the worker threads")?;
    let spin = spinner(verbosity == Verbosity::Normal, "");
    let cfg = req.config_for(dir)?;
    let settings = dir.join(crate::DATASET_CONFIG_FILE);
    if verbosity == Verbosity::Normal && settings.is_file() {
        eprintln!("labelling rules from {}", settings.display());
    }
    let report = pool.install(|| {
        run_pipeline(dir, &cfg, &mut |phase| {
            spin.set_message(phase.as_str());
        })
    });
    spin.finish_and_clear();
    report.with_context(|| format!("W3 pipeline on {}", dir.display()))
}

/// The report as one JSON object: the peer's keys (`events`, `seconds`, `events_per_s`,
/// `peak_rss_mb`, the counts, `batch`, `seed`, `threads`, `phases_s`), `peak_rss_mb` null where
/// it could not be read.
pub fn report_json(report: &PipelineReport, req: &PipelineRequest) -> serde_json::Value {
    let phases: serde_json::Map<String, serde_json::Value> = report
        .phases()
        .iter()
        .map(|(p, s)| (p.as_str().to_owned(), json!(round3(*s))))
        .collect();
    json!({
        "workload": "W3",
        "impl": "convcg",
        "threads": req.threads.unwrap_or_else(rayon::current_num_threads),
        "events": report.events,
        "seconds": round3(report.seconds),
        "events_per_s": report.events_per_s().round() as u64,
        "peak_rss_mb": report.peak_rss_mb.map(|mb| (mb * 10.0).round() / 10.0),
        "positives": report.positives,
        "attributed_conversions": report.attributed_conversions,
        "unattributed_conversions": report.unattributed_conversions,
        "hard_negatives": report.hard_negatives,
        "click_through": report.click_through,
        "masked_conversion_labels": report.masked_conversion_labels,
        "batches": report.batches,
        "impressions": report.impressions,
        "engagements": report.engagements,
        "conversions": report.conversions,
        "cutoff": report.cutoff,
        "batch": req.batch_size,
        "seed": req.seed,
        "phases_s": phases,
    })
}

fn round3(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The report as a readable two-column table.
pub fn report_table(report: &PipelineReport) -> String {
    let rss = report
        .peak_rss_mb
        .map_or_else(|| "unknown".to_owned(), |mb| format!("{mb:.1} MiB"));
    let phases = report
        .phases()
        .iter()
        .map(|(p, s)| format!("{} {s:.3}", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = [
        (
            "events (impressions / engagements / conversions)",
            format!(
                "{} ({} / {} / {})",
                report.events, report.impressions, report.engagements, report.conversions
            ),
        ),
        ("cutoff (unix s)", report.cutoff.to_string()),
        ("positives", report.positives.to_string()),
        (
            "conversions attributed (click-through) / unattributed",
            format!(
                "{} ({}) / {}",
                report.attributed_conversions,
                report.click_through,
                report.unattributed_conversions
            ),
        ),
        (
            "masked conversion labels",
            report.masked_conversion_labels.to_string(),
        ),
        ("hard negatives", report.hard_negatives.to_string()),
        ("batches", report.batches.to_string()),
        ("seconds", format!("{:.3} ({phases})", report.seconds)),
        ("events per second", format!("{:.0}", report.events_per_s())),
        ("peak RSS", rss),
    ];
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{k:<width$} | {v}");
    }
    out
}
