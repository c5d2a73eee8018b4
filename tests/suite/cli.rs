//! The `convcg` binary: its config round trip and its errors.

use std::path::Path;

use crate::support::{TINY_WORLD, convcg, succeed};

#[test]
fn config_prints_the_defaults_as_parseable_toml() {
    let out = convcg().arg("config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = convcg::RunConfig::from_toml(&text).unwrap();
    assert_eq!(parsed, convcg::RunConfig::default());
}

#[test]
fn a_bad_config_value_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[train]\nbatch_size = 1\n").unwrap();
    let out = convcg()
        .args(["train", "--quiet", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.batch_size"), "stderr: {err}");
    assert!(err.contains("2..=65536"), "stderr: {err}");
}

/// Bad values in the sections the data crate checks name their section, key, value and range;
/// a value outside an enumeration lists the allowed ones.
#[test]
fn bad_data_and_train_values_name_section_key_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[data]\nhard_negatives_per_positive = 99\n",
            &["[data]", "hard_negatives_per_positive", "0..=8", "99"][..],
        ),
        (
            "[data]\neval_protocol = \"weekly\"\n",
            &["eval_protocol", "weekly", "time", "last_conversion"][..],
        ),
        (
            "[online]\nreserve = -0.5\n",
            &["[online]", "reserve", "-0.5", "finite number >= 0"][..],
        ),
        (
            "[synth]\nbid_median = 0.0\n",
            &["[synth]", "bid_median", "> 0"][..],
        ),
        (
            "[train]\non_nonfinite = \"ignore\"\n",
            &["on_nonfinite", "ignore", "error", "skip"][..],
        ),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = convcg()
            .args(["train", "--quiet", "--config"])
            .arg(&path)
            .arg("--out")
            .arg(dir.path().join("run"))
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        for s in *says {
            assert!(err.contains(s), "{text}: stderr lacks {s:?}: {err}");
        }
    }
}

#[test]
fn an_unknown_config_key_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[train]\nbatch_sise = 64\n").unwrap();
    let out = convcg()
        .args(["train", "--quiet", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_sise"), "stderr: {err}");
    assert!(err.contains("typo.toml"), "stderr: {err}");
}

/// A user error prints its message and causes, never a stack backtrace, even with
/// RUST_BACKTRACE set in the environment.
#[test]
fn user_errors_print_their_causes_and_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("model.ckpt"), b"CONVCGCK not really").unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "1\n").unwrap();
    for setting in ["1", "full"] {
        let out = convcg()
            .arg("retrieve")
            .arg(&run_dir)
            .arg("--users")
            .arg(&users)
            .env("RUST_BACKTRACE", setting)
            .env("RUST_LIB_BACKTRACE", setting)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("Error: checkpoint "), "{err}");
        assert!(err.contains("is unusable: truncated"), "{err}");
        assert!(!err.to_lowercase().contains("backtrace"), "{err}");
        assert!(!err.contains("src/"), "no source locations: {err}");
    }
}

/// A dataset directory `dir/data` holding only `dataset.toml` (config errors and overrides come
/// before any table is read).
fn dataset_dir(dir: &Path, dataset_toml: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("dataset.toml"), dataset_toml).unwrap();
    data
}

/// `convcg train --config FILE` (and `--data DIR` beside it) with `text` in FILE; its stderr.
fn train_error(dir: &Path, text: &str, data: Option<&Path>) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = convcg();
    cmd.args(["train", "--quiet", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("run"));
    if let Some(data) = data {
        cmd.arg("--data").arg(data);
    }
    let out = cmd.env_remove("RUST_BACKTRACE").output().unwrap();
    assert!(!out.status.success(), "{text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config error cites the user's own file, line and key in a user's words, alone or merged
/// with a dataset's `dataset.toml`; a key in the wrong section names the section it belongs in,
/// and a misspelt one the nearest key.
#[test]
fn config_errors_cite_the_users_file_line_and_key_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset_dir(
        dir.path(),
        "# the dataset's own settings\n[data]\neval_window_days = 0.5\nclick_window_days = 0.1\n",
    );
    let cases: &[(&str, &[&str])] = &[
        (
            "[train]\nepochs = \"three\"\n",
            &[
                "bad.toml, line 2",
                "train.epochs",
                "expected a number",
                "\"three\"",
            ],
        ),
        (
            "seed = 1\n[data]\nhistory_len = -2\n",
            &[
                "bad.toml, line 3",
                "data.history_len",
                "a whole number",
                "-2",
            ],
        ),
        (
            "epochs = 3\n",
            &[
                "bad.toml, line 1",
                "unknown key `epochs`",
                "belongs in [train]",
            ],
        ),
        (
            "[data]\nhistroy_len = 5\n",
            &[
                "bad.toml, line 2",
                "histroy_len",
                "did you mean `history_len`?",
            ],
        ),
    ];
    for with_data in [None, Some(data.as_path())] {
        for (text, says) in cases {
            let err = train_error(dir.path(), text, with_data);
            for s in *says {
                assert!(
                    err.contains(s),
                    "{text} (data: {with_data:?}) lacks {s:?}:\n{err}"
                );
            }
            for rust in ["usize", "f64", "u64", "struct "] {
                assert!(!err.contains(rust), "{text}: Rust words in:\n{err}");
            }
        }
    }
    std::fs::write(
        data.join("dataset.toml"),
        "[data]\nclick_window_days = \"x\"\n",
    )
    .unwrap();
    let err = train_error(dir.path(), "seed = 1\n", Some(&data));
    assert!(
        err.contains("dataset.toml, line 2") && err.contains("data.click_window_days"),
        "{err}"
    );
}

/// `convcg config --data DIR` prints that dataset's configuration (its `dataset.toml` applied,
/// and said so); a run whose `--config` file sets a key of `dataset.toml` otherwise says which;
/// the full default dump passed with `--data` names every key it overrode.
#[test]
fn config_with_data_prints_the_datasets_settings_and_runs_name_what_they_override() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset_dir(
        dir.path(),
        "[data]\neval_protocol = \"last_conversion\"\nhistory_len = 7\n",
    );
    let missing = convcg()
        .arg("config")
        .arg("--data")
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nowhere is not a dataset directory"), "{err}");
    let out = succeed(convcg().arg("config").arg("--data").arg(&data));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("eval_protocol = \"last_conversion\""),
        "{printed}"
    );
    assert!(printed.contains("history_len = 7"), "{printed}");
    assert!(printed.contains("(set by "), "{printed}");
    let saved = dir.path().join("dataset-config.toml");
    std::fs::write(&saved, &printed).unwrap();
    let layered = convcg::RunConfig::for_dataset_dir(&data, Some(&saved)).unwrap();
    assert!(layered.overridden.is_empty(), "{:?}", layered.overridden);
    assert_eq!(
        layered.config,
        convcg::RunConfig::for_dataset_dir(&data, None)
            .unwrap()
            .config
    );

    let defaults = succeed(convcg().arg("config")).stdout;
    let err = train_error(
        dir.path(),
        &String::from_utf8(defaults).unwrap(),
        Some(&data),
    );
    assert!(err.contains("overrides 2 of"), "{err}");
    assert!(
        err.contains("data.eval_protocol = \"time\" (dataset.toml: \"last_conversion\")"),
        "{err}"
    );
    assert!(
        err.contains("data.history_len = 20 (dataset.toml: 7)"),
        "{err}"
    );
}

/// Outside a terminal a training run prints plain progress lines at a steady cadence
/// (`CONVCG_PROGRESS_EVERY_S`), where indicatif would draw nothing.
#[test]
fn training_outside_a_terminal_prints_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        format!("seed = 3\nthreads = 1\n{TINY_WORLD}\n[train]\nbatch_size = 32\nepochs = 2.0\n"),
    )
    .unwrap();
    let out = succeed(
        convcg()
            .arg("train")
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(dir.path().join("run"))
            .env("CONVCG_PROGRESS_EVERY_S", "0.001"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let steps = err
        .lines()
        .filter(|l| l.starts_with("progress: ") && l.contains('/') && l.contains("left)"))
        .count();
    assert!(steps >= 2, "{steps} progress lines in:\n{err}");
}

/// `eval_protocol = "none"` trains on the whole log, writes the model, skips evaluation and
/// says so; `compare` and `report` refuse such a run by name.
#[test]
fn eval_protocol_none_trains_on_everything_and_skips_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ship.toml");
    std::fs::write(
        &config,
        format!(
            "seed = 5\nthreads = 1\n{TINY_WORLD}\n[data]\neval_protocol = \"none\"\nclick_window_days = \"2d\"\n[train]\nbatch_size = 32\nmin_steps = 20\nepochs = 0.001\n"
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    let out = succeed(
        convcg()
            .arg("train")
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&run),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no evaluation"), "{err}");
    assert!(run.join(convcg::MODEL_FILE).is_file());
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["eval"]["conversion_queries"], 0, "{metrics}");
    assert_eq!(metrics["training"]["steps"], 20, "{metrics}");
    for args in [vec!["compare"], vec!["report"]] {
        let mut cmd = convcg();
        cmd.args(&args).arg(&run);
        if args[0] == "compare" {
            cmd.arg(&run);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("holds no evaluation"), "{args:?}: {err}");
    }
}

/// `[train] precision = "bf16"` says which products it runs: bf16 on AMX where the CPU has it,
/// and below AMX (forced here with `CONVCG_SIMD=avx512`) f32, the same steps as an f32 run.
#[test]
fn bf16_precision_says_which_products_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str, precision: &str, simd: Option<&str>| {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "seed = 5\nthreads = 1\n{TINY_WORLD}\n[data]\neval_protocol = \"none\"\n[train]\nbatch_size = 32\nmin_steps = 20\nepochs = 0.001\nprecision = \"{precision}\"\n"
            ),
        )
        .unwrap();
        let run = dir.path().join(name);
        let mut cmd = convcg();
        cmd.arg("train")
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&run);
        if let Some(simd) = simd {
            cmd.env("CONVCG_SIMD", simd);
        }
        let out = succeed(&mut cmd);
        let curve = std::fs::read_to_string(run.join("training.json")).unwrap();
        (String::from_utf8_lossy(&out.stderr).into_owned(), curve)
    };
    let (_, f32_curve) = train("f32", "f32", None);
    let (err, capped_curve) = train("capped", "bf16", Some("avx512"));
    assert!(
        err.contains("no AMX bf16 products, so training runs in f32"),
        "{err}"
    );
    assert_eq!(
        capped_curve, f32_curve,
        "a bf16 run without AMX trains in f32"
    );
    if convcg_kernels::SimdLevel::supported() == convcg_kernels::SimdLevel::Amx {
        let (err, bf16_curve) = train("bf16", "bf16", None);
        assert!(
            err.contains("training with bf16 products on AMX tiles"),
            "{err}"
        );
        assert_ne!(
            bf16_curve, f32_curve,
            "bf16 products change the losses' last bits"
        );
    } else {
        eprintln!("no AMX on this CPU: the bf16 products are not run here");
    }
}

/// Built without the `mpi` feature (the default), `--distributed` says how to get it, before
/// touching the run directory.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_commands_say_they_need_the_mpi_feature() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let runs = [
        vec!["train", "--distributed", "--out", out_dir.to_str().unwrap()],
        vec![
            "retrieve",
            out_dir.to_str().unwrap(),
            "--users",
            "users.txt",
            "--distributed",
        ],
    ];
    for args in runs {
        let out = convcg().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--distributed needs convcg built with MPI")
                && err.contains("--features mpi"),
            "{args:?}: {err}"
        );
    }
    assert!(!out_dir.exists(), "nothing is written");
}
