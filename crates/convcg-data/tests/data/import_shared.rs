//! `convcg_data::testing`'s shared-data lookup driven by the real environment variables. Each
//! case runs the ignored `probe` test of this binary in a child process with its own
//! environment, so no test changes the variables of a running process.

use std::path::Path;
use std::process::{Command, Output};

use convcg_data::testing::{REQUIRE_ENV, SHARED_ENV, require_shared_file};

/// Tells the probe which file to ask for.
const PROBE_REL: &str = "CONVCG_SHARED_PROBE_REL";

/// Run only as a child of the tests below: asks for `$CONVCG_SHARED_PROBE_REL` and prints what
/// came back.
#[test]
#[ignore = "run by the other tests of this file in a child process"]
fn probe() {
    let rel = std::env::var(PROBE_REL).expect("the probe runs with its variable set");
    let found = require_shared_file(Path::new(env!("CARGO_MANIFEST_DIR")), &rel);
    println!("probe found: {found:?}");
}

fn run_probe(shared: &Path, rel: &str, required: bool) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    // The probe's name as the harness knows it: its module path without the crate's name.
    let name = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::probe"),
        None => "probe".to_string(),
    };
    let mut cmd = Command::new(exe);
    cmd.args([
        name.as_str(),
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SHARED_ENV, shared)
    .env(PROBE_REL, rel);
    if required {
        cmd.env(REQUIRE_ENV, "1");
    } else {
        cmd.env_remove(REQUIRE_ENV);
    }
    cmd.output().expect("run the probe")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_environment_names_the_folder_and_decides_skip_or_fail() {
    let shared = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(shared.path().join("data")).expect("mkdir");
    std::fs::write(shared.path().join("data/x.csv"), "1\n").expect("write");

    let found = run_probe(shared.path(), "data/x.csv", true);
    let out = text(&found);
    assert!(found.status.success(), "{out}");
    let expected = shared.path().join("data/x.csv");
    assert!(
        out.contains(&format!("probe found: Some({expected:?})")),
        "{out}"
    );

    let skipped = run_probe(shared.path(), "data/missing.csv", false);
    let out = text(&skipped);
    assert!(skipped.status.success(), "{out}");
    assert!(out.contains("probe found: None"), "{out}");
    assert!(
        out.contains("skipping:") && out.contains("missing.csv"),
        "{out}"
    );

    let failed = run_probe(shared.path(), "data/missing.csv", true);
    let out = text(&failed);
    assert!(!failed.status.success(), "{out}");
    assert!(out.contains("shared data required"), "{out}");
    assert!(out.contains("missing.csv"), "{out}");
}
