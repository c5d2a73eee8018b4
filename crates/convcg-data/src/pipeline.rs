//! W3 of shared/reference-workload.md: from an event log on disk to ready training batches, the
//! whole data path of training at once: read the Parquet (or CSV) tables, attribute conversions,
//! label positives with their weights, draw hard negatives, compute log q, shuffle and cut
//! batches. `convcg pipeline DIR` and the `w3/pipeline` benchmark run it.
//!
//! The counts in the [`PipelineReport`] are taken from what the pipeline made (the batches and
//! the attribution), not from the labeller's own statistics, so that they check the output.

use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::io::{ImpressionColumns, OnBadRow, ReadOptions, ReadReport, read_log};
use crate::labels::{
    LabelConfig, LabelStats, LabelledBatch, MASKED_LABEL, Touch, batches, engagement_impressions,
    label,
};

/// What the pipeline does, beyond the labelling rules.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// The labelling rules (windows, weights, hard negatives per positive, their seed).
    pub labels: LabelConfig,
    /// Positives per batch (the last batch holds the rest); at least 1.
    pub batch_size: usize,
    /// Seed of the shuffle.
    pub shuffle_seed: u64,
    /// The maturity cutoff, unix seconds; `None` takes the largest impression ts.
    pub cutoff: Option<i64>,
    /// Bad rows: an error, or skipped and counted in [`PipelineReport::read`].
    pub on_bad_row: OnBadRow,
}

impl Default for PipelineConfig {
    /// W3's settings: the default rules (one hard negative per positive), batches of 2,048,
    /// seed 0, cutoff at the last impression, bad rows are errors.
    fn default() -> Self {
        PipelineConfig {
            labels: LabelConfig::default(),
            batch_size: 2048,
            shuffle_seed: 0,
            cutoff: None,
            on_bad_row: OnBadRow::Error,
        }
    }
}

/// A phase of the pipeline, as reported to the progress callback when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelinePhase {
    /// Reading the impression, engagement and conversion tables.
    Read,
    /// Attribution, labels and weights, hard negatives, log q.
    Label,
    /// Shuffling the positives and cutting the batches.
    Batches,
}

impl PipelinePhase {
    /// `read`, `label` or `batches` (the keys of the phase timings).
    pub fn as_str(self) -> &'static str {
        match self {
            PipelinePhase::Read => "read",
            PipelinePhase::Label => "label",
            PipelinePhase::Batches => "batches",
        }
    }
}

/// What one run of the pipeline read, made and spent. Every count is taken from the output.
#[derive(Clone, Debug)]
pub struct PipelineReport {
    /// Impression rows read.
    pub impressions: usize,
    /// Engagement rows read.
    pub engagements: usize,
    /// Conversion rows read.
    pub conversions: usize,
    /// Impression, engagement and conversion rows together (W3's "events").
    pub events: usize,
    /// The maturity cutoff used.
    pub cutoff: i64,
    /// Rows over all batches (each positive once).
    pub positives: usize,
    /// Conversions credited to an impression, click-through or view-through.
    pub attributed_conversions: usize,
    /// Of those, the ones credited to a click.
    pub click_through: usize,
    /// Conversions credited to nothing.
    pub unattributed_conversions: usize,
    /// Batch rows whose conversion label is masked (immature impressions).
    pub masked_conversion_labels: usize,
    /// Hard negatives in the batches (slots with a pin id).
    pub hard_negatives: usize,
    /// Batches made.
    pub batches: usize,
    /// Seconds reading the tables.
    pub read_s: f64,
    /// Seconds labelling (attribution, labels, hard negatives, log q).
    pub label_s: f64,
    /// Seconds shuffling and cutting batches.
    pub batches_s: f64,
    /// Seconds from the first read to the last batch.
    pub seconds: f64,
    /// The process's peak resident set, MiB (`VmHWM` of `/proc/self/status`); `None` where
    /// that cannot be read (not Linux). It covers the whole process so far, not this run alone.
    pub peak_rss_mb: Option<f64>,
    /// The labeller's own counts (for cross-checks and the readable report).
    pub stats: LabelStats,
    /// What the reader read and skipped.
    pub read: ReadReport,
}

impl PipelineReport {
    /// Events per second from the first read to the last batch.
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    /// The phase timings in order, `(name, seconds)`.
    pub fn phases(&self) -> [(PipelinePhase, f64); 3] {
        [
            (PipelinePhase::Read, self.read_s),
            (PipelinePhase::Label, self.label_s),
            (PipelinePhase::Batches, self.batches_s),
        ]
    }
}

/// Runs the pipeline on the canonical-schema directory `dir` and drops the batches once they
/// are all made and counted; see [`run_pipeline_batches`].
///
/// # Errors
/// As [`run_pipeline_batches`].
pub fn run_pipeline(
    dir: &Path,
    cfg: &PipelineConfig,
    progress: &mut dyn FnMut(PipelinePhase),
) -> Result<PipelineReport> {
    run_pipeline_batches(dir, cfg, progress).map(|(_, report)| report)
}

/// Runs the pipeline on the canonical-schema directory `dir`: reads the impression columns the
/// rules need (ids, request, time, user, pin, surface), every engagement and conversion, and no
/// catalogue (the batches carry ids only); labels the whole log with the cutoff
/// (`cfg.cutoff`, else the largest impression ts); shuffles every positive into batches of
/// `cfg.batch_size`. Calls `progress` as each phase starts. Returns every batch, all in
/// memory, with the report; the report's time stops when the last batch is made.
///
/// # Errors
/// Whatever reading the log reports (a missing table or column, a bad value unless skipped),
/// an empty impressions table without a configured cutoff, an invalid labelling configuration,
/// or a batch size of 0.
pub fn run_pipeline_batches(
    dir: &Path,
    cfg: &PipelineConfig,
    progress: &mut dyn FnMut(PipelinePhase),
) -> Result<(Vec<LabelledBatch>, PipelineReport)> {
    // Check the cheap settings first: a bad one should not cost a read of the log.
    cfg.labels.validate()?;
    if cfg.batch_size == 0 {
        return Err(Error::InvalidArgument {
            name: "batch_size",
            message: "must be at least 1, got 0".into(),
        });
    }
    let start = Instant::now();
    progress(PipelinePhase::Read);
    let opts = ReadOptions {
        on_bad_row: cfg.on_bad_row,
        catalogue: false,
        impression_columns: ImpressionColumns::Core,
    };
    let (log, read) = read_log(dir, &opts)?;
    let t_read = start.elapsed().as_secs_f64();

    progress(PipelinePhase::Label);
    let cutoff = match cfg.cutoff {
        Some(c) => c,
        None => log
            .impressions
            .ts
            .iter()
            .copied()
            .max()
            .ok_or(Error::EmptyTable {
                table: "impressions",
            })?,
    };
    let eng = engagement_impressions(&log)?;
    let labelled = label(&log, &eng, &cfg.labels, cutoff, None)?;
    let t_label = start.elapsed().as_secs_f64();

    progress(PipelinePhase::Batches);
    let out = batches(&labelled, cfg.batch_size, cfg.shuffle_seed)?;
    let seconds = start.elapsed().as_secs_f64();

    let touches = &labelled.attribution.touch;
    let click_through = touches.iter().filter(|t| **t == Some(Touch::Click)).count();
    let attributed = touches.iter().filter(|t| t.is_some()).count();
    let report = PipelineReport {
        impressions: log.impressions.len(),
        engagements: log.engagements.len(),
        conversions: log.conversions.len(),
        events: log.num_events(),
        cutoff,
        positives: out.iter().map(LabelledBatch::len).sum(),
        attributed_conversions: attributed,
        click_through,
        unattributed_conversions: touches.len() - attributed,
        masked_conversion_labels: out
            .iter()
            .map(|b| count(&b.label_conversion, |&l| l == MASKED_LABEL))
            .sum(),
        hard_negatives: out.iter().map(|b| b.hard_negatives.drawn()).sum(),
        batches: out.len(),
        read_s: t_read,
        label_s: t_label - t_read,
        batches_s: seconds - t_label,
        seconds,
        peak_rss_mb: peak_rss_mb(),
        stats: labelled.stats,
        read,
    };
    Ok((out, report))
}

fn count<T>(values: &[T], keep: impl Fn(&T) -> bool) -> usize {
    values.iter().filter(|v| keep(v)).count()
}

/// The process's peak resident set so far, MiB: `VmHWM` of `/proc/self/status` (kB there,
/// which the kernel means as KiB); `None` where the file or the line cannot be read.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// The `VmHWM:` value of a `/proc/PID/status` text, KiB.
fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{WriteOptions, write_log};
    use crate::labels::NONE;
    use crate::{Marketplace, SynthConfig};

    /// The time of the log's last impression: the cutoff `run_pipeline` uses by default.
    fn last_impression(log: &crate::EventLog) -> i64 {
        log.impressions
            .ts
            .iter()
            .copied()
            .max()
            .expect("impressions")
    }

    fn small_log(dir: &Path, shards: usize) -> crate::EventLog {
        let cfg = SynthConfig {
            num_users: 300,
            num_pins: 500,
            num_advertisers: 30,
            num_categories: 10,
            num_brands: 40,
            num_queries: 20,
            impressions: 40_000,
            ..SynthConfig::default()
        };
        let market = Marketplace::generate(&cfg, 3, &|_, _| {}).expect("generates");
        let opts = WriteOptions {
            shards,
            row_group_rows: 7_777,
            ..WriteOptions::default()
        };
        write_log(dir, &market.log, &opts).expect("writes");
        market.log
    }

    #[test]
    fn batches_hold_every_positive_once_and_the_counts_match_the_labeller() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = small_log(dir.path(), 3);
        let cfg = PipelineConfig {
            batch_size: 333,
            shuffle_seed: 9,
            ..PipelineConfig::default()
        };
        let mut phases = Vec::new();
        let (out, report) =
            run_pipeline_batches(dir.path(), &cfg, &mut |p| phases.push(p)).expect("runs");
        assert_eq!(
            phases,
            [
                PipelinePhase::Read,
                PipelinePhase::Label,
                PipelinePhase::Batches
            ]
        );

        let cutoff = last_impression(&log);
        let eng = engagement_impressions(&log).expect("unique ids");
        let labelled = label(&log, &eng, &cfg.labels, cutoff, None).expect("labels");
        let s = &labelled.stats;
        assert!(s.positives > 1_000 && s.attributed() > 0, "{s}");
        assert_eq!(report.events, log.num_events());
        assert_eq!(report.cutoff, cutoff);
        assert_eq!(report.positives, s.positives);
        assert_eq!(report.attributed_conversions, s.attributed());
        assert_eq!(report.click_through, s.attributed_click_through);
        assert_eq!(report.unattributed_conversions, s.unattributed);
        assert_eq!(report.masked_conversion_labels, s.masked_conversion_labels);
        assert_eq!(report.hard_negatives, s.hard_negatives());
        assert_eq!(report.batches, s.positives.div_ceil(333));
        assert_eq!(report.stats, *s);

        // Full batches but the last, and the batches are a permutation of the labelled rows.
        let (last, full) = out.split_last().expect("batches");
        assert!(full.iter().all(|b| b.len() == 333));
        assert_eq!(last.len(), s.positives - 333 * full.len());
        let mut got: Vec<(i64, i64, i8, i64, bool)> = out
            .iter()
            .flat_map(|b| {
                (0..b.len()).map(|k| {
                    (
                        b.user_id[k],
                        b.pin_id[k],
                        b.label_conversion[k],
                        b.hard_negatives.pins()[k],
                        b.hard_negatives.valid()[k],
                    )
                })
            })
            .collect();
        let mut want: Vec<(i64, i64, i8, i64, bool)> = (0..labelled.len())
            .map(|k| {
                (
                    labelled.user_id[k],
                    labelled.pin_id[k],
                    labelled.label_conversion[k],
                    labelled.hard_negative_pin_id[k],
                    labelled.hard_negative[k] != NONE,
                )
            })
            .collect();
        assert_ne!(got, want, "the rows are shuffled");
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(labelled.hard_negative.iter().any(|&i| i != NONE));
    }

    #[test]
    fn a_configured_cutoff_masks_more_and_the_seed_changes_the_order_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = small_log(dir.path(), 1);
        let last = last_impression(&log);
        let run = |cfg: &PipelineConfig| {
            run_pipeline_batches(dir.path(), cfg, &mut |_| {}).expect("runs")
        };
        let (a, base) = run(&PipelineConfig::default());
        let (b, reseeded) = run(&PipelineConfig {
            shuffle_seed: 1,
            ..PipelineConfig::default()
        });
        assert_ne!(a, b);
        assert_eq!(base.positives, reseeded.positives);
        assert_eq!(
            base.masked_conversion_labels,
            reseeded.masked_conversion_labels
        );

        let (_, early) = run(&PipelineConfig {
            cutoff: Some(last - 3 * 86_400),
            ..PipelineConfig::default()
        });
        assert_eq!(early.cutoff, last - 3 * 86_400);
        assert!(early.masked_conversion_labels > base.masked_conversion_labels);
        assert_eq!(early.attributed_conversions, base.attributed_conversions);
    }

    #[test]
    fn csv_gives_the_parquet_counts_and_a_bad_row_is_an_error_or_skipped() {
        let parquet = tempfile::tempdir().expect("temp dir");
        let log = small_log(parquet.path(), 1);
        let csv = tempfile::tempdir().expect("temp dir");
        let opts = WriteOptions {
            format: crate::io::Format::Csv,
            ..WriteOptions::default()
        };
        write_log(csv.path(), &log, &opts).expect("writes");
        let cfg = PipelineConfig::default();
        let a = run_pipeline(parquet.path(), &cfg, &mut |_| {}).expect("runs");
        let b = run_pipeline(csv.path(), &cfg, &mut |_| {}).expect("runs");
        let counts = |r: &PipelineReport| {
            [
                r.events,
                r.positives,
                r.attributed_conversions,
                r.click_through,
                r.unattributed_conversions,
                r.masked_conversion_labels,
                r.hard_negatives,
                r.batches,
            ]
        };
        assert_eq!(counts(&a), counts(&b));

        // An impression with an unknown surface, after every real one (ids stay unique).
        let path = csv.path().join("impressions.csv");
        let mut text = std::fs::read_to_string(&path).expect("reads");
        let last = log.impressions.len() as i64;
        text.push_str(&format!(
            "{},1,1700000000,1,1,nowhere,,,\n",
            last + 1_000_000
        ));
        std::fs::write(&path, text).expect("writes");
        let err = run_pipeline(csv.path(), &cfg, &mut |_| {}).expect_err("a bad surface");
        let msg = err.to_string();
        assert!(
            msg.contains("impressions.csv") && msg.contains("surface"),
            "{msg}"
        );
        let skip = PipelineConfig {
            on_bad_row: OnBadRow::Skip,
            ..PipelineConfig::default()
        };
        let c = run_pipeline(csv.path(), &skip, &mut |_| {}).expect("runs");
        assert_eq!(c.read.skipped.impressions, 1);
        assert_eq!(counts(&c), counts(&a));
    }

    #[test]
    fn bad_settings_and_missing_tables_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let zero = PipelineConfig {
            batch_size: 0,
            ..PipelineConfig::default()
        };
        let err = run_pipeline(dir.path(), &zero, &mut |_| {}).expect_err("batch size 0");
        assert!(err.to_string().contains("batch_size"), "{err}");
        let err = run_pipeline(dir.path(), &PipelineConfig::default(), &mut |_| {})
            .expect_err("an empty directory");
        assert!(err.to_string().contains("impressions"), "{err}");
    }

    #[test]
    fn vm_hwm_parses_and_is_read_on_linux() {
        let status = "Name:\tx\nVmPeak:\t  99 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 10 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(2048));
        assert_eq!(parse_vm_hwm_kib("VmHWM:\t12 MB\n"), None);
        assert_eq!(parse_vm_hwm_kib("VmRSS:\t12 kB\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mb().is_some_and(|mb| mb > 0.0));
        }
    }
}
