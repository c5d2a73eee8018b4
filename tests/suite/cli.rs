//! The `convcg` binary: its config round trip and its errors.

use crate::support::convcg;

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
