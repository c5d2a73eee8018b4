//! End to end on a small synthetic marketplace: the trained model must retrieve conversions
//! clearly better than popularity, and a run must be reproducible from its seed.

use convcg::{Metrics, RunConfig, Verbosity};

/// A marketplace a fifth of the default's size, and a few hundred training steps.
fn small_config() -> RunConfig {
    let text = r#"
        seed = 7
        threads = 2

        [synth]
        num_users = 10000
        num_pins = 20000
        num_advertisers = 400
        num_categories = 60
        num_brands = 1000
        num_queries = 400
        impressions = 1500000

        [model.query]
        mlp = [128, 64]

        [model.pin]
        mlp = [128, 64]

        [train]
        batch_size = 512
        epochs = 4.0
    "#;
    RunConfig::from_toml(text).unwrap()
}

fn run(cfg: &RunConfig, dir: &std::path::Path) -> Metrics {
    convcg::train(cfg, dir, Verbosity::Quiet).unwrap()
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
            for k in [50, 100, 500, 1000] {
                let x = &v[retriever][task][format!("recall@{k}")];
                assert!(
                    x.is_f64(),
                    "metrics.json lacks {retriever}.{task}.recall@{k}"
                );
            }
        }
    }
}

#[test]
fn same_seed_gives_the_same_metrics_file() {
    let mut cfg = small_config();
    cfg.synth.impressions = 400_000;
    cfg.train.epochs = 1.0;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&cfg, a.path());
    run(&cfg, b.path());
    let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("metrics.json")).unwrap();
    assert_eq!(
        read(&a),
        read(&b),
        "two runs with one seed wrote different metrics.json"
    );
}
