//! `convcg headroom` on the suite's tiny world: the oracle against the oracle of clicks, offline
//! and in the simulated A/B, with no model trained.

use crate::support::{TINY_WORLD, convcg};

fn headroom(dir: &std::path::Path, traffic: usize, json: bool) -> String {
    let cfg = dir.join("headroom.toml");
    std::fs::write(
        &cfg,
        format!("seed = 3\nthreads = 2\n{TINY_WORLD}\n[online]\ntraffic_requests = {traffic}\n"),
    )
    .unwrap();
    let mut cmd = convcg();
    cmd.arg("headroom").arg("--config").arg(&cfg);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn headroom_prints_both_oracles_offline_and_on_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let v: serde_json::Value = serde_json::from_str(&headroom(dir.path(), 600, true)).unwrap();
    let queries = v["conversion_queries"].as_u64().unwrap();
    assert!(queries > 0, "{v}");
    assert!(v["shown_per_user_median"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["online_requests"], 600);
    assert_eq!(v["online_on_traffic"], true);
    assert_eq!(v["oracle_online"]["queries"], 600);
    assert_eq!(v["oracle_clicks_online"]["queries"], 600);
    for k in [20, 50, 100, 500, 1000] {
        let key = format!("recall@{k}");
        let (o, c) = (
            v["oracle"][&key].as_f64().unwrap(),
            v["oracle_clicks"][&key].as_f64().unwrap(),
        );
        assert!(
            (0.0..=1.0).contains(&o) && (0.0..=1.0).contains(&c),
            "{key}: {o} {c}"
        );
    }
    // The lift is the two oracles' conversion volumes, in percent.
    let (o, c) = (
        v["oracle_online"]["conversion_volume"].as_f64().unwrap(),
        v["oracle_clicks_online"]["conversion_volume"]
            .as_f64()
            .unwrap(),
    );
    let lift = v["lift"]["conversion_volume"].as_f64().unwrap();
    assert!(
        (lift - 100.0 * (o / c - 1.0)).abs() < 1e-9,
        "{lift} vs {o} / {c}"
    );

    // Each headroom carries its paired bootstrap interval, around its estimate.
    let offline = &v["offline_interval"];
    let at100 = 100.0
        * (v["oracle"]["recall@100"].as_f64().unwrap()
            / v["oracle_clicks"]["recall@100"].as_f64().unwrap()
            - 1.0);
    assert!(
        (offline["mean"].as_f64().unwrap() - at100).abs() < 1e-9,
        "{offline}"
    );
    let online = &v["lift_intervals"]["conversion_volume"];
    assert!(
        (online["mean"].as_f64().unwrap() - lift).abs() < 1e-9,
        "{online}"
    );
    for ci in [offline, online] {
        assert!(
            ci["low"].as_f64().unwrap() <= ci["high"].as_f64().unwrap(),
            "{ci}"
        );
    }

    let table = headroom(dir.path(), 0, false);
    assert!(
        table.contains("conversion campaigns (share of advertisers)"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "simulated A/B on {queries} conversion eval queries"
        )),
        "{table}"
    );
    assert!(table.contains("headroom: "), "{table}");
}
