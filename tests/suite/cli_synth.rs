//! `convcg synth`: the written log has about the events asked for, reads back, is what its
//! manifest regenerates, and has the configured world's properties.

use crate::support::convcg;
use convcg::SynthManifest;
use convcg_data::io::{ReadOptions, read_log};

/// A fiftieth of the default catalogue and users, so that 200k events are about 95 impressions
/// a user (the default world at 200k events would be 4 a user).
const SMALL_WORLD: &str = "num_users = 2000\nnum_pins = 4000\nnum_advertisers = 200\n\
                           num_categories = 40\nnum_brands = 400\nnum_queries = 200\n";

const EVENTS: u64 = 200_000;

#[test]
fn synth_writes_a_log_of_about_n_events_that_regenerates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("world.toml");
    std::fs::write(&config, SMALL_WORLD).expect("writable");
    let out = dir.path().join("log");
    let run = convcg()
        .args(["synth", "--events", &EVENTS.to_string(), "--seed", "5"])
        .args(["--shards", "2", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.starts_with("property"), "{stdout}");
    assert!(stdout.contains("events written:"), "{stdout}");
    assert!(stdout.contains("generated in"), "{stdout}");

    let (log, report) = read_log(&out, &ReadOptions::default()).expect("the log reads back");
    let events = log.num_events() as f64;
    let off = events / EVENTS as f64 - 1.0;
    assert!(off.abs() < 0.05, "{events} events for {EVENTS} asked");
    assert_eq!(report.files.len(), 10, "{report}");

    let manifest = SynthManifest::read(&out).expect("synth.toml");
    assert_eq!(manifest.seed, 5);
    assert_eq!(manifest.events_requested, EVENTS);
    assert_eq!(manifest.events_written as f64, events);
    assert_eq!(manifest.config.num_users, 2_000);
    let market = manifest.regenerate().expect("regenerates");
    assert_eq!(market.log, log, "synth.toml regenerates the written log");

    // Tolerances: the design ranges where they do not depend on the sample size (skew, CTR,
    // rho, the event mix); about three binomial standard deviations around the design range
    // for the conversion figures, of which this log has only about 50.
    let r = market.realised();
    let table = r.to_string();
    assert!(
        (0.15..=0.30).contains(&r.top1_impression_share),
        "top-1% share\n{table}"
    );
    assert!(r.ctr.iter().all(|c| (0.005..0.1).contains(c)), "{table}");
    assert!(
        r.saves < r.clicks && r.clicks < r.impressions / 10,
        "{table}"
    );
    assert!(
        (r.factor_correlation - r.config.rho).abs() < 0.05,
        "rho\n{table}"
    );
    assert!(
        (0.003..=0.03).contains(&r.true_conversions_per_click),
        "conversions per click\n{table}"
    );
    assert!(
        (0.3..=3.0).contains(&r.delay_median_days),
        "delay median\n{table}"
    );
    assert!(r.delay_p90_days > 2.5, "delay p90\n{table}");
    assert!(
        (0.0..=0.45).contains(&r.unreported_share),
        "unreported\n{table}"
    );
}

#[test]
fn synth_refuses_bad_arguments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("log");
    let run = convcg()
        .args(["synth", "--events", "1000", "--format", "json", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("json"));

    let run = convcg()
        .args(["synth", "--quiet", "--events", "0", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--events"));

    let config = dir.path().join("typo.toml");
    std::fs::write(&config, "num_user = 5\n").expect("writable");
    let run = convcg()
        .args(["synth", "--quiet", "--events", "1000", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("num_user") && err.contains("typo.toml"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written on a bad argument");

    // CSV cannot be sharded: refused before twenty million events are generated.
    let run = convcg()
        .args([
            "synth", "--quiet", "--events", "20000000", "--format", "csv",
        ])
        .args(["--shards", "3", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("--shards") && err.contains("CSV"), "{err}");
    assert!(!out.exists(), "nothing is written on a bad argument");
}

/// A log too small for its catalogue (the default world's at a few thousand events) says so.
#[test]
fn a_log_with_few_conversions_is_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = convcg()
        .args(["synth", "--quiet", "--events", "20000", "--out"])
        .arg(dir.path().join("log"))
        .output()
        .expect("runs");
    assert!(run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("warning: the log holds only") && err.contains("num_pins"),
        "{err}"
    );
}
