//! Helpers for tests, behind the `testing` feature, which dev-dependencies turn on
//! (`convcg-data = { ..., features = ["testing"] }`): finding the shared real-data folder (the
//! one lookup every test of the workspace uses), the correlations the synthetic marketplace's
//! tests check, and the "no row" sentinel of the crate's index columns.

mod shared;

pub use crate::labels::NONE;
pub use crate::synth::realised::{pearson, spearman};
pub use shared::{
    REQUIRE_ENV, SHARED_ENV, SharedDir, require_present, require_shared_file, resolve_shared_dir,
    shared_dir, workspace_root,
};
