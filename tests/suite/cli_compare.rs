//! `convcg compare` of two tiny trained runs on the same marketplace: every recall delta and
//! online lift with its paired bootstrap interval from the runs' `per_query.json`, a zero
//! interval for a run against itself, and plain deltas with the reason when a run has no
//! per-query file.

use crate::support::{TINY_WORLD, convcg};
use std::path::Path;
use std::process::Command;

/// 400 users, 1,500 pins, a small model trained for `epochs`: the same marketplace and eval
/// queries for one `seed` whatever `epochs` is.
fn tiny(seed: u64, epochs: f64) -> String {
    format!(
        "seed = {seed}\nthreads = 2\n{TINY_WORLD}\n[train]\nbatch_size = 32\nepochs = {epochs:?}\n"
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn train(dir: &Path, name: &str, seed: u64, epochs: f64) -> std::path::PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, tiny(seed, epochs)).unwrap();
    let out = dir.join(name);
    run(convcg()
        .args(["train", "--quiet", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out));
    out
}

/// Whether a recall row or the paper-style line of `compare`'s output has an interval.
fn has_interval(text: &str) -> bool {
    text.lines()
        .filter(|l| {
            l.starts_with("conversion  ")
                || l.starts_with("engagement  ")
                || l.starts_with("B vs A")
        })
        .any(|l| l.contains('['))
}

#[test]
fn compare_of_two_tiny_runs_prints_intervals_and_of_a_run_with_itself_zero_ones() {
    let dir = tempfile::tempdir().unwrap();
    let a = train(dir.path(), "a", 5, 1.0);
    let b = train(dir.path(), "b", 5, 2.0);
    assert!(a.join("per_query.json").is_file());

    let text = run(convcg().arg("compare").arg(&a).arg(&b));
    assert!(!text.contains("no interval"), "{text}");
    assert!(
        text.contains("model recall@K\ntask        surface        K         A         B     delta  relative  95% interval of delta\n"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("conversion  all          100 "))
        .unwrap_or_else(|| panic!("no conversion recall@100 row in:\n{text}"));
    assert!(row.contains("  [") && row.contains(", "), "{row}");
    for k in [20, 50, 100, 500, 1000] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("engagement  all    {k:>9} ")) && l.contains('[')),
            "no engagement recall@{k} interval in:\n{text}"
        );
    }
    let seed_line = text
        .lines()
        .find(|l| l.starts_with("B vs A: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        seed_line.contains("% conversion volume [")
            && seed_line.contains("% impression-to-conversion [")
            && seed_line.contains("% RoAS ["),
        "{seed_line}"
    );
    assert!(text.contains(
        "intervals: paired bootstrap over the eval queries or traffic requests (2000 resamples, 95% percentile"
    ));

    // The JSON: each interval's estimate is the printed delta, and brackets it.
    let json = run(convcg().args(["compare", "--json"]).arg(&a).arg(&b));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let recall = v["recall"].as_array().unwrap();
    assert!(recall.len() >= 10, "{json}");
    for r in recall {
        let ci = &r["interval"];
        let (mean, low, high) = (
            ci["mean"].as_f64().unwrap(),
            ci["low"].as_f64().unwrap(),
            ci["high"].as_f64().unwrap(),
        );
        assert!((mean - r["delta"].as_f64().unwrap()).abs() < 1e-9, "{r}");
        assert!(low <= mean + 1e-12 && mean <= high + 1e-12, "{r}");
    }
    let volume = &v["online"]["intervals"]["conversion_volume"];
    let lift = v["online"]["lift"]["conversion_volume"].as_f64().unwrap();
    assert!(
        (volume["mean"].as_f64().unwrap() - lift).abs() < 1e-6,
        "{volume} vs {lift}"
    );
    assert_eq!(v["bootstrap"]["resamples"], 2000);

    // A run against itself: every delta 0 with the interval [0, 0], not a result.
    let same = run(convcg().arg("compare").arg(&a).arg(&a));
    for l in same
        .lines()
        .filter(|l| l.starts_with("conversion  ") || l.starts_with("engagement  "))
    {
        assert!(
            l.contains("   +0.0000 ") && l.ends_with("  [+0.0000, +0.0000] (n.s.)"),
            "{l}\nin:\n{same}"
        );
    }
    assert!(
        same.contains(
            "B vs A: +0.0% conversion volume [+0.0%, +0.0%] (n.s.), \
             +0.0% impression-to-conversion [+0.0%, +0.0%] (n.s.), +0.0% RoAS [+0.0%, +0.0%] (n.s.)"
        ),
        "{same}"
    );

    // Another marketplace (seed 6): other eval queries, so nothing pairs, and the reason.
    let c = train(dir.path(), "c", 6, 1.0);
    let apart = run(convcg().arg("compare").arg(&a).arg(&c));
    assert!(!has_interval(&apart), "{apart}");
    for task in ["conversion", "engagement"] {
        assert!(
            apart.contains(&format!(
                "no interval: the runs' {task} eval queries differ (A: "
            )),
            "{apart}"
        );
    }

    // Without B's per-query file: the deltas as before, and why there is no interval.
    std::fs::remove_file(b.join("per_query.json")).unwrap();
    let plain = run(convcg().arg("compare").arg(&a).arg(&b));
    assert!(!has_interval(&plain), "{plain}");
    assert!(
        plain.contains("no interval: run B has no per_query.json beside"),
        "{plain}"
    );
    // The row up to its interval: task, surface, K, A, B, delta and relative (68 characters).
    assert!(plain.contains(&format!("{}\n", &row[..68])), "{plain}");
}
