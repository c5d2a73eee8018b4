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
pub mod checkpoint;
mod compare;
mod config;
pub mod dist;
mod embed;
mod export;
// The fault-injection seam the reliability tests drive through the `CONVCG_FAULT` environment
// variable; public for them and for the binary, not part of the library's interface.
#[doc(hidden)]
pub mod fault;
mod headroom;
mod import;
mod metrics;
mod online;
mod output;
mod per_query;
mod pipeline;
mod progress;
mod report;
mod run;
pub mod serve;
mod synth;

pub use ablate::{
    AblationReport, AblationRequest, Ladder, Spread, VariantResult, ablation_config,
    ablation_config_with, run_ablation,
};
pub use checkpoint::{MODEL_FILE, load_model};
pub use compare::{
    Comparison, METRICS_FILE, OnlineComparison, RecallDelta, compare_runs, read_metrics,
};
pub use config::{
    ConfigError, ConfigText, DEFAULT_CHECKPOINT_EVERY, Layered, OnNonFinite, Override, RunConfig,
    TrainConfig, read_dataset_toml,
};
pub use embed::{
    EMBED_FILES, EmbedSummary, Retrievals, RetrieveOptions, Retrieved, SourceIds, embed_run,
    read_user_ids, retrieve, retrieved_csv,
};
pub use export::{DESCRIPTION_FILE, DESCRIPTION_FORMAT, Exported, WEIGHTS_FILE, export_run};
pub use headroom::{Headroom, headroom};
pub use import::{DATASET_CONFIG_FILE, import_dataset};
pub use metrics::{
    EvalSummary, LossPoint, Metrics, QueryRecalls, RetrieverMetrics, TrainingSummary,
};
pub use online::{LIFT_BASELINE, OnlineFigures, OnlineMetrics};
pub use output::write_atomic;
pub use per_query::{OnlineLiftIntervals, PER_QUERY_FILE, PerQuery, QueryOutcomes, QuerySet};
pub use pipeline::{PipelineRequest, report_json, report_table, run_w3};
pub use report::{ReportFiles, default_report_dir, write_report};
pub use run::{
    Interrupted, RunControl, RunOutput, TrainData, TrainRequest, Verbosity, default_run_dir,
};
pub use synth::{MANIFEST_FILE, SynthManifest, SynthRequest, SynthSummary, synth};
