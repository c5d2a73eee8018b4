//! Config validation over every section: each bad value is reported with its key, the value
//! and what is allowed; an unknown key in any section (or sub-table) is an error naming it.

use convcg::RunConfig;

/// The full error text (with its context chain) of parsing and validating `text`.
fn error_of(text: &str) -> String {
    match RunConfig::from_toml(text).and_then(|c| c.validate()) {
        Ok(()) => panic!("accepted:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn every_bad_value_names_its_key_value_and_what_is_allowed() {
    let cases: &[(&str, &[&str])] = &[
        ("threads = 5000", &["threads", "5000", "1..=1024"]),
        (
            "[synth]\nnum_users = 0",
            &["[synth]", "num_users", "at least 1", "0"],
        ),
        (
            "[synth]\nnum_pins = 10\nnum_advertisers = 20",
            &["num_advertisers", "at most num_pins", "20"],
        ),
        ("[synth]\nrho = 1.5", &["rho", "[0, 1]", "1.5"]),
        ("[synth]\ndays = 0", &["days", "1..=36500", "0"]),
        ("[synth]\nstart_ts = -5", &["start_ts", "-5", "2100"]),
        (
            "[synth]\nlatent_dim = 5000",
            &["latent_dim", "at most 1024", "5000"],
        ),
        (
            "[synth]\nlabel_horizon_days = 1e9",
            &["label_horizon_days", "36500"],
        ),
        (
            "[synth]\nserving_temperature = nan",
            &["serving_temperature", "> 0", "NaN"],
        ),
        ("[synth]\nfake_share = 1.0", &["fake_share", "[0, 1)", "1"]),
        (
            "[synth]\nads_per_request = [1, 0, 2]",
            &["ads_per_request", "at least 1"],
        ),
        (
            "[synth]\npin_dense_dim = 4096",
            &["pin_dense_dim", "1024", "4096"],
        ),
        (
            "[data]\neval_window_days = 0.0",
            &["[data]", "eval_window_days", "(0, 36500]", "0"],
        ),
        (
            "[data]\nclick_window_days = -1.0",
            &["click_window_days", "[0, 36500]", "-1"],
        ),
        (
            "[data]\nhistory_len = 5000",
            &["history_len", "0..=1000", "5000"],
        ),
        (
            "[data]\nhard_negatives_per_positive = 99",
            &["hard_negatives_per_positive", "0..=8", "99"],
        ),
        (
            "[data]\nmax_eval_queries = 0",
            &["max_eval_queries", "at least 1", "0"],
        ),
        ("[data]\nsave_weight = -2.0", &["save_weight", ">= 0", "-2"]),
        (
            "[data.click_weight]\nscale_s = 0.0",
            &["click_weight.scale_s", "> 0", "0"],
        ),
        (
            "[data.conversion_kind_weights]\npurchase = -1.0",
            &["conversion_kind_weights.purchase", ">= 0", "-1"],
        ),
        (
            "[data.streaming_log_q]\nbuckets = 0",
            &["streaming_log_q.buckets", "1..=268435456", "0"],
        ),
        (
            "[data.streaming_log_q]\nhashes = 9",
            &["streaming_log_q.hashes", "1..=8", "9"],
        ),
        (
            "[data]\neval_protocol = \"weekly\"",
            &["eval_protocol", "weekly", "time", "last_conversion"],
        ),
        (
            "[data]\non_bad_row = \"drop\"",
            &["on_bad_row", "drop", "error", "skip"],
        ),
        (
            "[data]\nlog_q = \"sampled\"",
            &["log_q", "sampled", "exact", "streaming"],
        ),
        ("[model]\nout_dim = 0", &["model.out_dim", "0", "1..=4096"]),
        (
            "[model]\ntemperature = 0.0",
            &["model.temperature", "0", "(0, 10]"],
        ),
        (
            "[model.query]\nembedding_dim = 0",
            &["model.query.embedding_dim", "0", "1..=1024"],
        ),
        (
            "[model.pin]\ncross_layers = 99",
            &["model.pin.cross_layers", "99", "0..=16"],
        ),
        (
            "[model.pin]\nmlp = [64, 0]",
            &["model.pin.mlp", "0", "1..=8192"],
        ),
        (
            "[model.query]\nstructure = \"ring\"",
            &["structure", "ring", "parallel", "stacked"],
        ),
        ("[optim]\nadam_lr = 0.0", &["optim.adam_lr", "0", "(0, 10]"]),
        (
            "[optim]\nadagrad_eps = nan",
            &["optim.adagrad_eps", "NaN", "(0, 10]"],
        ),
        (
            "[optim]\nadagrad_weight_decay = -0.1",
            &["optim.adagrad_weight_decay", "-0.1", "[0, 1]"],
        ),
        (
            "[optim]\nadam_beta1 = 1.0",
            &["optim.adam_beta1", "1", "[0, 1)"],
        ),
        (
            "[train]\nbatch_size = 1",
            &["train.batch_size", "1", "2..=65536"],
        ),
        ("[train]\nepochs = 0.0", &["train.epochs", "0", "(0, 1000]"]),
        ("[train]\nlog_every = 0", &["train.log_every", "0", ">= 1"]),
        (
            "[train]\non_nonfinite = \"ignore\"",
            &["on_nonfinite", "ignore", "error", "skip"],
        ),
        (
            "[train]\ncheckpoint_every = -1",
            &["checkpoint_every", "-1"],
        ),
        ("[train]\nepochs = \"many\"", &["epochs", "many"]),
    ];
    for (text, says) in cases {
        let err = error_of(text);
        for s in *says {
            assert!(err.contains(s), "{text:?}: the error lacks {s:?}: {err}");
        }
    }
}

#[test]
fn an_unknown_key_in_any_section_is_an_error_naming_it() {
    for (section, key) in [
        ("", "sed"),
        ("[synth]", "num_user"),
        ("[data]", "history"),
        ("[data.click_weight]", "scale"),
        ("[data.conversion_kind_weights]", "purchases"),
        ("[data.streaming_log_q]", "bucket"),
        ("[model]", "out"),
        ("[model.query]", "mlp_dims"),
        ("[model.pin]", "layers"),
        ("[optim]", "lr"),
        ("[train]", "checkpoint_evry"),
        ("[serve]", "port"),
    ] {
        let text = format!("{section}\n{key} = 1\n");
        let err = error_of(&text);
        let name = if section == "[serve]" { "serve" } else { key };
        assert!(err.contains(name), "{text:?}: {err}");
        assert!(err.contains("unknown"), "{text:?}: {err}");
    }
}

#[test]
fn the_defaults_and_checkpoint_every_zero_are_valid() {
    RunConfig::default().validate().unwrap();
    let cfg = RunConfig::from_toml("[train]\ncheckpoint_every = 0\n").unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.train.checkpoint_every, 0);
    assert_eq!(
        RunConfig::default().train.checkpoint_every,
        convcg::DEFAULT_CHECKPOINT_EVERY
    );
}
