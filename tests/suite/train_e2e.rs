//! End to end on a small synthetic marketplace: the trained model must retrieve conversions
//! clearly better than popularity, and a run must be reproducible from its seed.

use convcg::{Metrics, RunConfig};

use crate::support::{SMALL_MARKETPLACE, TINY_WORLD};

/// A marketplace a fifth of the default's size, and a few hundred training steps.
fn small_config() -> RunConfig {
    let rest = r#"
        [model.query]
        mlp = [128, 64]

        [model.pin]
        mlp = [128, 64]

        [train]
        batch_size = 512
        epochs = 4.0
    "#;
    let text = format!("seed = 7\nthreads = 2\n{SMALL_MARKETPLACE}{rest}");
    RunConfig::from_toml(&text).unwrap()
}

fn run(cfg: &RunConfig, dir: &std::path::Path) -> Metrics {
    convcg::TrainRequest::new(cfg, convcg::TrainData::Synthetic, dir)
        .run()
        .unwrap()
        .metrics
}

fn at(m: &std::collections::BTreeMap<String, f64>, key: &str) -> f64 {
    m[key]
}

#[test]
fn trained_model_beats_popularity_on_conversions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let m = run(&cfg, dir.path());
    eprintln!("{}", m.table());
    let steps = m.training.steps;
    assert!((200..=1000).contains(&steps), "{steps} steps");
    let model = at(&m.model.conversion, "recall@100");
    let popularity = at(&m.popularity.conversion, "recall@100");
    let random = at(&m.random.conversion, "recall@100");
    assert!(
        m.eval.conversion_queries >= 50,
        "too few conversion queries ({}) to judge",
        m.eval.conversion_queries
    );
    assert!(
        model >= 2.0 * popularity && model >= popularity + 0.1,
        "conversion recall@100: model {model:.4} vs popularity {popularity:.4}"
    );
    assert!(
        popularity > random,
        "popularity {popularity} vs random {random}"
    );
    let eng = at(&m.model.engagement, "recall@100");
    let eng_pop = at(&m.popularity.engagement, "recall@100");
    assert!(
        eng >= 2.0 * eng_pop,
        "engagement recall@100: model {eng:.4} vs popularity {eng_pop:.4}"
    );
    let first = m.training.loss_curve.first().unwrap().loss;
    let last = m.training.loss_curve.last().unwrap().loss;
    assert!(last < first, "loss {first} -> {last}");

    // The run directory holds the full config, which parses back to the same run.
    let written = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert_eq!(RunConfig::from_toml(&written).unwrap(), cfg);
    let json = std::fs::read_to_string(dir.path().join("metrics.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for retriever in ["model", "popularity", "random", "oracle"] {
        for task in ["conversion", "engagement"] {
            for k in [20, 50, 100, 500, 1000] {
                let x = &v[retriever][task][format!("recall@{k}")];
                assert!(
                    x.is_f64(),
                    "metrics.json lacks {retriever}.{task}.recall@{k}"
                );
            }
        }
    }
    // The oracle of clicks (the engagement-only ceiling) is scored on the conversion queries only.
    for k in [20, 50, 100, 500, 1000] {
        let x = v["oracle_clicks"]["conversion"][format!("recall@{k}")].as_f64();
        assert!(
            x.is_some_and(|x| (0.0..=1.0).contains(&x)),
            "metrics.json oracle_clicks.conversion.recall@{k} = {x:?}"
        );
    }
    assert_eq!(v["oracle_clicks"]["engagement"], serde_json::json!({}));
    check_ranking_sections(&v);
    check_online_section(&m, &v);
    check_per_query_file(&m, &dir.path().join("metrics.json"));
}

/// `per_query.json`: read back beside `metrics.json` (which checks its counts and mean
/// recall@100 against it), it gives every K's mean recall and the model's online totals.
fn check_per_query_file(m: &Metrics, metrics_file: &std::path::Path) {
    let p = convcg::PerQuery::read_beside(metrics_file, m)
        .unwrap()
        .expect("a run writes per_query.json");
    assert_eq!(p.conversion.ks(), convcg_eval::RECALL_KS);
    for k in convcg_eval::RECALL_KS {
        let per = p.engagement.recall(k).unwrap();
        let mean = per.iter().sum::<f64>() / per.len() as f64;
        let want = m.model.engagement[&format!("recall@{k}")];
        assert!(
            (mean - want).abs() < 1e-9,
            "engagement recall@{k}: {mean} vs {want}"
        );
    }
    let online = p.online.expect("online outcomes per query");
    let model = &m.online.as_ref().unwrap().retrievers["model"].outcome;
    let conversions: f64 = online.conversions.iter().sum();
    assert!((conversions - model.conversions).abs() < 1e-9 * model.conversions.max(1.0));
    assert_eq!(
        online.ads_shown.iter().map(|&a| a as usize).sum::<usize>(),
        model.ads_shown
    );
}

/// The `online` section: every retriever served, expected totals consistent with each other, and
/// the model's lifts over popularity present.
fn check_online_section(m: &Metrics, v: &serde_json::Value) {
    let online = m
        .online
        .as_ref()
        .expect("a synthetic run has simulated serving");
    assert_eq!(online.auction, convcg_eval::AuctionConfig::default());
    for retriever in ["model", "popularity", "recently_seen", "random", "oracle"] {
        let f = &online.retrievers[retriever];
        let o = &f.outcome;
        assert_eq!(o.queries, m.eval.conversion_queries, "{retriever}");
        assert!(o.ads_shown <= 5 * o.queries && o.queries_with_ads <= o.queries);
        assert!(o.impressions <= o.ads_shown as f64 + 1e-9);
        assert!(o.clicks <= o.impressions && o.conversions <= o.impressions);
        assert!(o.value >= 0.0 && o.cost >= 0.0);
        assert!(v["online"]["retrievers"][retriever]["roas"].is_f64() || o.cost == 0.0);
    }
    let model = &online.retrievers["model"].outcome;
    let random = &online.retrievers["random"].outcome;
    assert!(
        model.conversions > random.conversions,
        "model {model:?} vs random {random:?}"
    );
    let lift = online.lift_vs_popularity["model"];
    assert!(lift.conversion_volume.is_some() && lift.roas.is_some());
    assert!(m.table().contains("model vs popularity: "));
}

/// Every figure under `path` of `v`, with its path; counts (`queries`,
/// `skipped_without_relevant`) are left out.
fn figures(v: &serde_json::Value, path: String, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                if key != "queries" && key != "skipped_without_relevant" {
                    figures(child, format!("{path}.{key}"), out);
                }
            }
        }
        serde_json::Value::Number(n) => out.push((path, n.as_f64().unwrap_or(f64::NAN))),
        other => panic!("{path} is {other}, not a number"),
    }
}

/// The `ndcg`, `advertiser`, `coverage` and `surfaces` sections of metrics.json: present for
/// every retriever, every figure finite and in [0, 1].
fn check_ranking_sections(v: &serde_json::Value) {
    for retriever in ["model", "popularity", "recently_seen", "random", "oracle"] {
        for task in ["conversion", "engagement"] {
            for k in [20, 50, 100, 500, 1000] {
                let ndcg = &v["ndcg"][retriever][task][format!("ndcg@{k}")];
                assert!(ndcg.is_f64(), "no ndcg.{retriever}.{task}.ndcg@{k}");
                let adv = &v["advertiser"][retriever][task][format!("recall@{k}")];
                assert!(adv.is_f64(), "no advertiser.{retriever}.{task}.recall@{k}");
            }
            for surface in ["homefeed", "related", "search"] {
                let s = &v["surfaces"][retriever][task][surface];
                assert!(
                    s["queries"].is_u64(),
                    "no surfaces.{retriever}.{task}.{surface}"
                );
                if s["queries"].as_u64() > Some(0) {
                    assert!(
                        s["recall"]["recall@100"].is_f64(),
                        "{retriever} {surface}: {s}"
                    );
                }
            }
        }
        let c = &v["coverage"][retriever]["@100"];
        for key in [
            "pin_coverage",
            "advertiser_coverage",
            "pin_gini",
            "advertiser_gini",
        ] {
            assert!(c[key].is_f64(), "no coverage.{retriever}.@100.{key}");
        }
    }
    let mut all = Vec::new();
    for section in ["ndcg", "advertiser", "coverage", "surfaces"] {
        figures(&v[section], section.to_owned(), &mut all);
    }
    assert!(all.len() > 200, "only {} figures", all.len());
    for (path, x) in all {
        assert!(x.is_finite() && (0.0..=1.0).contains(&x), "{path} = {x}");
    }
}

#[test]
fn same_seed_gives_the_same_metrics_file() {
    // The tiny world on 2 threads: every stage of a run (marketplace, training with parallel
    // kernels, evaluation, the simulated auction and traffic) in a couple of seconds.
    let text =
        format!("seed = 7\nthreads = 2\n{TINY_WORLD}\n[train]\nbatch_size = 64\nepochs = 2.0\n");
    let cfg = RunConfig::from_toml(&text).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&cfg, a.path());
    run(&cfg, b.path());
    for file in ["metrics.json", "per_query.json"] {
        let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(file)).unwrap();
        assert_eq!(
            read(&a),
            read(&b),
            "two runs with one seed wrote different {file}"
        );
    }
}
