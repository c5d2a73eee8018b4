//! convcg-data's integration tests as one binary, each file a module: one link, and one build of
//! the generic code they share, instead of one per file (CI builds them on two cores).
//! `cargo test -p convcg-data --test data labels::` runs one module.

mod io_support;

mod batcher;
mod dataset;
mod import;
mod import_shared;
mod io_errors;
mod io_fuzz;
mod io_roundtrip;
mod io_types;
mod labels;
mod labels_props;
mod last_conversion;
mod synth;
mod synth_bids;
mod synth_mechanisms;
