//! convcg: trains and evaluates a two-tower conversion candidate generator for shopping ads.
//!
//! This package is the trainer: it composes the layers — `convcg-data` (events, the synthetic
//! marketplace, examples, batches), `convcg-model` (towers, losses, optimisers) and `convcg-eval`
//! (exact top-k, recall, reference points) — into runs, and holds the run configuration and the
//! `convcg` command line. See `docs/architecture.md` for the crate map.
#![deny(missing_docs)]
// Library code returns errors; `unwrap` and `expect` only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

mod checkpoint;
mod config;
mod fault;
mod import;
mod metrics;
mod output;
mod pipeline;
mod run;
mod synth;

pub use checkpoint::{
    CHECKPOINT_DIR, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, Checkpoint, CheckpointError, Found, KEEP,
    MODEL_FILE, RunSource, SOURCE_FILE, TrainingState, checkpoint_name, data_fingerprint,
    list_checkpoints, load_model, newest_usable, prune, remove_stale_temp_files,
};
pub use config::{ConfigError, DEFAULT_CHECKPOINT_EVERY, OnNonFinite, RunConfig, TrainConfig};
pub use fault::{FAULT_ENV, FAULT_MARKER, FaultAction, FaultPlan, WriteStage};
pub use import::{DATASET_CONFIG_FILE, import_dataset};
pub use metrics::{
    BootstrapInterval, EvalSummary, LossPoint, Metrics, QueryRecalls, RetrieverMetrics,
    TrainingSummary, paired_bootstrap,
};
pub use output::write_atomic;
pub use pipeline::{PipelineRequest, report_json, report_table, run_w3};
pub use run::{
    Evaluation, Interrupted, RunControl, RunOutput, Verbosity, default_run_dir, evaluate,
    feature_tables, resume, train, train_data, train_model, train_source,
};
pub use synth::{MANIFEST_FILE, SynthManifest, SynthRequest, SynthSummary, scale_to_events, synth};
