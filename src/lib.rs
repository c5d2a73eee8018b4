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

mod ablate;
mod checkpoint;
mod compare;
mod config;
mod embed;
mod fault;
mod headroom;
mod import;
mod metrics;
mod online;
mod output;
mod per_query;
mod pipeline;
mod report;
mod run;
mod synth;

pub use ablate::{
    AblationReport, AblationRequest, Ladder, Spread, VariantResult, ablation_config,
    ablation_config_with, run_ablation,
};
pub use checkpoint::{
    CHECKPOINT_DIR, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, Checkpoint, CheckpointError, Found, KEEP,
    MODEL_FILE, RunSource, SOURCE_FILE, TrainingState, checkpoint_name, data_fingerprint,
    list_checkpoints, load_model, newest_usable, prune, remove_stale_temp_files,
};
pub use compare::{
    Comparison, METRICS_FILE, OnlineComparison, RecallDelta, compare_runs, read_metrics,
};
pub use config::{ConfigError, DEFAULT_CHECKPOINT_EVERY, OnNonFinite, RunConfig, TrainConfig};
pub use embed::{
    EMBED_FILES, EmbedSummary, Retrieved, embed_run, read_user_ids, retrieve, retrieved_csv,
};
pub use fault::{FAULT_ENV, FAULT_MARKER, FaultAction, FaultPlan, WriteStage};
pub use headroom::{Headroom, headroom};
pub use import::{DATASET_CONFIG_FILE, import_dataset};
pub use metrics::{
    EvalSummary, LossPoint, Metrics, QueryRecalls, RetrieverMetrics, TrainingSummary,
};
pub use online::{LIFT_BASELINE, OnlineFigures, OnlineMetrics, online_metrics};
pub use output::write_atomic;
pub use per_query::{
    OnlineLiftIntervals, PER_QUERY_FILE, PER_QUERY_FORMAT, PerQuery, QueryOutcomes, QuerySet,
    per_query_path, query_identity, recall_intervals,
};
pub use pipeline::{PipelineRequest, report_json, report_table, run_w3};
pub use report::{ReportFiles, default_report_dir, write_report};
pub use run::{
    Evaluation, Interrupted, RunControl, RunOutput, Verbosity, default_run_dir, evaluate,
    feature_tables, resume, train, train_data, train_loaded, train_model, train_source,
};
pub use synth::{MANIFEST_FILE, SynthManifest, SynthRequest, SynthSummary, scale_to_events, synth};
