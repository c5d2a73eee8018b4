//! What several of the suite's modules share.

use std::process::Command;

/// The `convcg` binary this test build made.
pub fn convcg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convcg"))
}

/// Runs `cmd` and returns its output, failing the test with its stderr if it fails.
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `[synth]` and `[model]` sections of the suite's tiny runs: 400 users, 1,500 pins and a
/// small model, quick to train. A config puts its top-level keys before it and
/// its `[train]` section after it.
pub const TINY_WORLD: &str = r#"
[synth]
num_users = 400
num_pins = 1500
num_advertisers = 60
num_categories = 12
num_brands = 80
num_queries = 24
impressions = 40000
# Conversions far more common than the default world's, so that a tiny log has eval queries.
conversion_bias = -3.5

[model]
out_dim = 16

[model.query]
embedding_dim = 8
cross_layers = 1
mlp = [32]

[model.pin]
embedding_dim = 8
cross_layers = 1
mlp = [32]
"#;

/// The `[synth]` section of the suite's small end-to-end marketplace: 10,000 users, 20,000 pins
/// and 1.5 million impressions, quick to train for a few hundred steps. A config puts its
/// top-level keys before it.
pub const SMALL_MARKETPLACE: &str = r#"
[synth]
num_users = 10000
num_pins = 20000
num_advertisers = 400
num_categories = 60
num_brands = 1000
num_queries = 400
impressions = 1500000
"#;
