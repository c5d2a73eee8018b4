//! The `convcg` crate's integration tests, one module per subject, built as one test binary:
//! each separate test file linked the whole workspace again.
//!
//! Run one subject with its module path as the filter, e.g.
//! `cargo test -p convcg --test suite real_slices -- --nocapture`.

mod cli;
mod cli_compare;
mod cli_embed;
mod cli_headroom;
mod cli_import;
mod cli_online;
mod cli_pipeline;
mod cli_serve;
mod cli_synth;
mod config_validation;
mod docs;
mod fuzz_regressions;
mod layering;
mod real_slices;
mod recipe;
mod reliability;
mod support;
mod train_e2e;
