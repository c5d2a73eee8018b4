//! convcg-data's integration tests as one binary, each file a module: one link, and one build of
//! the generic code they share, instead of one per file (CI builds them on two cores).
//! `cargo test -p convcg-data --test data labels::` runs one module.

#[cfg(feature = "io")]
mod io_support;

mod batcher;
mod dataset;
mod events;
#[cfg(feature = "import")]
mod import;
mod import_shared;
#[cfg(feature = "io")]
mod io_engines;
#[cfg(feature = "io")]
mod io_errors;
#[cfg(feature = "io")]
mod io_fuzz;
#[cfg(feature = "io")]
mod io_roundtrip;
#[cfg(feature = "io")]
mod io_types;
mod labels;
mod labels_props;
mod last_conversion;
mod synth;
mod synth_bids;
mod synth_mechanisms;
