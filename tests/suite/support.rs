//! What several of the suite's modules share.

use std::process::Command;

/// The `convcg` binary this test build made.
pub fn convcg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convcg"))
}
