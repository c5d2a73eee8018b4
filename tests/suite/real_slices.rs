//! `convcg train --data` end to end on the real slices of `shared/data/`, each imported into a
//! temporary directory first. Skips (with the reason) when the shared folder is absent, unless
//! `CONVCG_REQUIRE_SHARED=1`.

use std::path::{Path, PathBuf};

use convcg::{RunConfig, RunOutput, TrainData, TrainRequest, import_dataset};
use convcg_data::import::Source;
use convcg_data::io::Format;
use convcg_data::testing::require_shared_file;
use convcg_data::{EvalProtocol, Task};
use convcg_eval::Bootstrap;

/// Run settings small enough for the test profile; `[data]` comes from the importer's
/// dataset.toml except the eval-query cap, which keeps evaluation to a few seconds.
const RUN_SETTINGS: &str = r#"
    seed = 11
    threads = 2

    [data]
    max_eval_queries = 3000

    [train]
    batch_size = 512
    epochs = 2.0
"#;

fn slice(rel: &str) -> Option<PathBuf> {
    require_shared_file(Path::new(env!("CARGO_MANIFEST_DIR")), rel)
}

/// Imports `source` from `src`, trains on it through the `--data` path, and checks what every
/// run must write.
fn import_and_train(source: Source, src: &Path) -> (RunConfig, RunOutput) {
    let data = tempfile::tempdir().unwrap();
    import_dataset(source, src, data.path(), Format::Parquet).unwrap();
    let settings = data.path().join("run.toml");
    std::fs::write(&settings, RUN_SETTINGS).unwrap();
    let cfg = RunConfig::for_dataset_dir(data.path(), Some(&settings))
        .unwrap()
        .config;
    let run = tempfile::tempdir().unwrap();
    let out = TrainRequest::new(&cfg, TrainData::Directory(data.path()), run.path())
        .run()
        .unwrap();
    eprintln!("{source}:\n{}", out.metrics.table());

    // Retrieval writes the source's own ids where the importer kept dictionaries (trivago).
    let opts = convcg::RetrieveOptions {
        k: 3,
        surface: convcg_data::Surface::HomeFeed,
        context_pin_id: None,
        query_id: None,
        exclude_seen: false,
        ranks: convcg::dist::Ranks::single(),
        open: convcg::serve::OpenOptions {
            data: None,
            verbosity: convcg::Verbosity::Quiet,
            index: convcg::serve::IndexChoice::Exact,
        },
    };
    let found = convcg::retrieve(run.path(), &[0], &opts).unwrap();
    let csv = convcg::retrieved_csv(&found.lists, found.source_ids.as_ref()).unwrap();
    let dictionaries = data.path().join(convcg_data::import::DICTIONARY_DIR);
    if dictionaries.join("item.csv").is_file() {
        let ids = found.source_ids.as_ref().expect("source ids");
        let items = ids.pins.as_ref().expect("an item dictionary");
        let first = csv.lines().nth(1).expect("a row");
        assert!(first.starts_with("0,1,"), "{csv}");
        let pin: i64 = first.split(',').nth(2).unwrap().parse().unwrap();
        assert!(
            first.ends_with(&format!(",{}", items.value(pin).expect("a source id"))),
            "{csv}"
        );
        assert!(csv.starts_with("user_id,rank,pin_id,score,source_user_id,source_pin_id\n"));
    } else {
        assert_eq!(found.source_ids, None);
        assert!(csv.starts_with("user_id,rank,pin_id,score\n"));
    }

    let written = std::fs::read_to_string(run.path().join("config.toml")).unwrap();
    assert_eq!(RunConfig::from_toml(&written).unwrap(), cfg);
    let json = std::fs::read_to_string(run.path().join("metrics.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for retriever in ["model", "popularity", "recently_seen", "random"] {
        for task in ["conversion", "engagement"] {
            for k in [20, 50, 100, 500, 1000] {
                let x = v[retriever][task][format!("recall@{k}")].as_f64();
                assert!(
                    x.is_some_and(|x| x.is_finite() && (0.0..=1.0).contains(&x)),
                    "{source}: metrics.json {retriever}.{task}.recall@{k} = {x:?}"
                );
            }
        }
    }
    assert!(v.get("oracle").is_none(), "no ground truth for a real log");
    assert!(
        v.get("oracle_clicks").is_none(),
        "no ground truth for a real log"
    );
    assert!(
        v.get("online").is_none(),
        "no simulated serving without ground truth"
    );
    let per_query = convcg::PerQuery::read_beside(&run.path().join("metrics.json"), &out.metrics)
        .unwrap()
        .expect("a --data run writes per_query.json");
    assert!(per_query.online.is_none());
    assert_eq!(
        per_query.conversion.queries,
        out.metrics.eval.conversion_queries
    );
    assert!(
        out.metrics
            .training
            .loss_curve
            .iter()
            .all(|p| p.loss.is_finite())
    );
    assert_eq!(out.read_report.as_ref().map(|r| r.skipped.total()), Some(0));
    (cfg, out)
}

#[test]
fn taobao_model_beats_popularity_on_buys_with_a_bootstrap_interval_above_zero() {
    let Some(src) = slice("data/taobao-userbehavior-slice/UserBehavior_slice.csv") else {
        return;
    };
    let (cfg, out) = import_and_train(Source::Taobao, &src);
    // From the importer's dataset.toml, merged under the run settings.
    assert_eq!(cfg.data.eval_protocol, EvalProtocol::LastConversion);
    assert_eq!(cfg.data.max_eval_queries, 3000);
    let m = &out.metrics;
    assert!(
        m.eval.conversion_queries >= 1000,
        "{} buy queries",
        m.eval.conversion_queries
    );
    let model = out.per_query.get("model", Task::Conversion, 100).unwrap();
    let popularity = out
        .per_query
        .get("popularity", Task::Conversion, 100)
        .unwrap();
    assert_eq!(model.len(), m.eval.conversion_queries);
    // The per-query values are the ones the table averages.
    let mean = model.iter().sum::<f64>() / model.len() as f64;
    assert!((mean - m.model.conversion["recall@100"]).abs() < 1e-9);
    let ci = Bootstrap {
        resamples: 1000,
        level: 0.95,
        seed: 2024,
    }
    .mean_difference(model, popularity)
    .unwrap();
    eprintln!("buy recall@100, model - popularity: {ci:?}");
    assert!(
        ci.low > 0.0,
        "model vs popularity buy recall@100: 95% interval of the difference {ci:?}"
    );
}

#[test]
fn tmall_trains_end_to_end_under_last_conversion() {
    let Some(src) = slice("data/tmall-userlog-10k/user_log_10k.csv") else {
        return;
    };
    let (cfg, out) = import_and_train(Source::Tmall, &src);
    assert_eq!(cfg.data.eval_protocol, EvalProtocol::LastConversion);
    assert!(out.metrics.eval.conversion_queries > 0);
    assert!(out.metrics.training.examples > 0);
}

#[test]
fn trivago_trains_end_to_end_under_a_time_split() {
    let Some(src) = slice("data/trivago-100k/trivago_val_100k.parquet") else {
        return;
    };
    let (cfg, out) = import_and_train(Source::Trivago, &src);
    assert_eq!(cfg.data.eval_protocol, EvalProtocol::Time);
    assert!(out.metrics.eval.conversion_queries > 0);
    assert!(out.metrics.training.examples > 0);
}
