//! `convcg pipeline DIR --json`: one JSON line whose counts are those of `label()` run directly
//! on the same files, and a readable table without `--json`.

use crate::support::convcg;
use std::path::Path;
use std::process::Output;

use convcg_data::io::{ImpressionColumns, ReadOptions, read_log};
use convcg_data::{LabelConfig, engagement_impressions, label};

fn success(run: Output) -> String {
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// A small world (as in cli_synth.rs) so that users see many impressions and some convert.
const SMALL_WORLD: &str = "num_users = 1500\nnum_pins = 3000\nnum_advertisers = 150\n\
                           num_categories = 30\nnum_brands = 300\nnum_queries = 150\n";

fn synth(dir: &Path, events: u64) -> std::path::PathBuf {
    let config = dir.join("world.toml");
    std::fs::write(&config, SMALL_WORLD).expect("writable");
    let out = dir.join("log");
    success(
        convcg()
            .args(["synth", "--quiet", "--events", &events.to_string()])
            .args(["--seed", "11", "--shards", "2", "--out"])
            .arg(&out)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs"),
    );
    out
}

#[test]
fn json_counts_are_those_of_label_on_the_same_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = synth(dir.path(), 150_000);
    let stdout = success(
        convcg()
            .arg("pipeline")
            .arg(&log_dir)
            .args([
                "--json",
                "--batch-size",
                "1000",
                "--seed",
                "4",
                "--threads",
                "2",
            ])
            .output()
            .expect("runs"),
    );
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let got: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let int = |key: &str| {
        got[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {stdout}"))
    };

    let opts = ReadOptions {
        catalogue: false,
        impression_columns: ImpressionColumns::Core,
        ..ReadOptions::default()
    };
    let (log, _) = read_log(&log_dir, &opts).expect("reads");
    let cutoff = log
        .impressions
        .ts
        .iter()
        .copied()
        .max()
        .expect("impressions");
    let eng = engagement_impressions(&log).expect("unique ids");
    let cfg = LabelConfig {
        seed: 4,
        ..LabelConfig::default()
    };
    let labelled = label(&log, &eng, &cfg, cutoff, None).expect("labels");
    let s = &labelled.stats;
    assert!(s.positives > 2_000 && s.attributed() > 10, "{s}");
    assert!(s.masked_conversion_labels > 0 && s.unattributed > 0, "{s}");

    assert_eq!(int("events"), log.num_events() as u64);
    assert_eq!(int("impressions"), log.impressions.len() as u64);
    assert_eq!(int("engagements"), log.engagements.len() as u64);
    assert_eq!(int("conversions"), log.conversions.len() as u64);
    assert_eq!(got["cutoff"].as_i64(), Some(cutoff));
    assert_eq!(int("positives"), s.positives as u64);
    assert_eq!(int("attributed_conversions"), s.attributed() as u64);
    assert_eq!(int("click_through"), s.attributed_click_through as u64);
    assert_eq!(int("unattributed_conversions"), s.unattributed as u64);
    assert_eq!(
        int("masked_conversion_labels"),
        s.masked_conversion_labels as u64
    );
    assert_eq!(int("hard_negatives"), s.hard_negatives() as u64);
    assert_eq!(int("batches"), s.positives.div_ceil(1000) as u64);
    assert_eq!((int("batch"), int("seed"), int("threads")), (1000, 4, 2));

    assert!(int("events_per_s") > 0, "{stdout}");
    let seconds = got["seconds"].as_f64().expect("seconds");
    let phases = got["phases_s"].as_object().expect("phases_s");
    let names: Vec<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["read", "label", "batches"] {
        assert!(phases[name].as_f64().is_some_and(|s| s >= 0.0), "{stdout}");
    }
    let sum: f64 = phases.values().filter_map(|v| v.as_f64()).sum();
    assert!((sum - seconds).abs() < 0.01, "phases {sum} vs {seconds}");
    let rss = got["peak_rss_mb"].as_f64();
    if cfg!(target_os = "linux") {
        assert!(rss.is_some_and(|mb| mb > 1.0), "{stdout}");
    }

    let table = success(
        convcg()
            .arg("pipeline")
            .arg(&log_dir)
            .output()
            .expect("runs"),
    );
    let positives_row = table
        .lines()
        .find(|l| l.starts_with("positives "))
        .expect("a positives row");
    assert!(
        positives_row.ends_with(&format!("| {}", s.positives)),
        "{table}"
    );

    // A dataset.toml beside the tables sets the rules, as for `convcg train --data`: with a
    // click window of a tenth of the default, far fewer conversion labels are masked.
    std::fs::write(
        log_dir.join("dataset.toml"),
        "[data]\nclick_window_days = 0.7\nhard_negatives_per_positive = 2\n",
    )
    .expect("writable");
    let stdout = success(
        convcg()
            .arg("pipeline")
            .arg(&log_dir)
            .args(["--json", "--batch-size", "1000", "--seed", "4"])
            .output()
            .expect("runs"),
    );
    let got: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let rules = LabelConfig {
        click_window_s: 60_480,
        hard_negatives_per_positive: 2,
        seed: 4,
        ..LabelConfig::default()
    };
    let relabelled = label(&log, &eng, &rules, cutoff, None).expect("labels");
    let r = &relabelled.stats;
    assert!(
        r.masked_conversion_labels < s.masked_conversion_labels,
        "{r}"
    );
    assert_eq!(
        got["masked_conversion_labels"].as_u64(),
        Some(r.masked_conversion_labels as u64)
    );
    assert_eq!(
        got["hard_negatives"].as_u64(),
        Some(r.hard_negatives() as u64)
    );
}

#[test]
fn a_missing_log_or_a_zero_batch_size_fails_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = convcg()
        .arg("pipeline")
        .arg(dir.path().join("nowhere"))
        .arg("--json")
        .output()
        .expect("runs");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(run.stdout.is_empty(), "no JSON on failure");

    let run = convcg()
        .arg("pipeline")
        .arg(dir.path())
        .args(["--batch-size", "0"])
        .output()
        .expect("runs");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("batch_size"), "{stderr}");
}
