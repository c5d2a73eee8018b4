//! Checkpoints: a run's training state on disk, written atomically, checked when read back.
//!
//! The format (`format`: the bytes of one file) and the files (`files`: their names in a run
//! directory, listing, pruning, the newest usable one) are separate modules; this one holds
//! what a checkpoint contains and how a model is loaded from one. `frame` is the envelope both
//! checkpoints and the feature state file (`state`) are written in.
//!
//! # Format (version 2, little-endian)
//!
//! ```text
//! magic "CONVCGCK" | version u32 | body length u64 | body | CRC-32 (IEEE) u32 of all before it
//! ```
//!
//! The body is a sequence of sections, each `tag [u8; 4] | length u64 | payload`, in this order:
//! `CONF` (the run config as TOML text), `SRCE` (where the event log came from), `FEAT` (the
//! towers' feature tables, each with the pin table it reads if any: what [`load_model`] needs
//! to rebuild them), `PARM` (every parameter
//! by name with its shape and values), `TRST` (the training state: a presence byte, then step,
//! loss-curve accumulators and points, skipped batches, sampler and RNG position, log-q state
//! and optimiser state; absent in `model.ckpt`). Strings and vectors are a `u64` count then
//! their items. A reader checks the magic, the version, the body length against the file's
//! length (a short file is "truncated"), the checksum, then every count against the bytes left
//! before allocating, and names the file and what is wrong.
//!
//! # Policy
//!
//! A run directory holds `checkpoints/step-NNNNNNNN.ckpt`, the newest [`KEEP`] of them (the
//! older one is the fallback if the newest turns out unreadable), and `model.ckpt` (the final
//! parameters) once training ends. Every file goes through the atomic writer (`output`): temporary
//! file, write, fsync, rename, fsync of the directory.

mod files;
mod format;
mod frame;
mod state;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use convcg_data::{BatcherState, LogQState};
use convcg_model::{FeatureTables, OptimizerState, ParamStore, TwoTowerModel};

use crate::config::RunConfig;
use crate::metrics::LossPoint;

pub use files::{CHECKPOINT_DIR, KEEP, checkpoint_name, list_checkpoints};
pub(crate) use files::{newest_usable, prune, remove_stale_temp_files};
pub use format::{CHECKPOINT_MAGIC, CHECKPOINT_VERSION};
pub(crate) use frame::read_file;
pub use state::{
    FEATURE_STATE_FILE, FEATURE_STATE_MAGIC, FEATURE_STATE_VERSION, decode_feature_state,
    encode_feature_state, read_feature_state, write_feature_state,
};

/// The final parameters in a run directory.
pub const MODEL_FILE: &str = "model.ckpt";
/// Where a run directory records the source of its event log (see [`RunSource`]).
pub const SOURCE_FILE: &str = "source.toml";

/// Where a run's event log came from, so that a resumed run can rebuild the same dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunSource {
    /// The synthetic marketplace of the run config's `[synth]` (regenerated from the seed).
    Synthetic,
    /// A canonical-schema dataset directory (an absolute path).
    Directory {
        /// The directory.
        path: PathBuf,
    },
    /// A log the caller had in memory (`convcg ablate`, which makes or reads its data once for
    /// many runs): nothing in the run directory rebuilds it, so such a run cannot be resumed.
    Supplied,
}

impl RunSource {
    /// `source.toml` text.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Reads `source.toml` of `run_dir`.
    ///
    /// # Errors
    /// If the file is missing (the error says the directory is not a resumable run) or
    /// malformed.
    pub fn read(run_dir: &Path) -> Result<RunSource> {
        let path = run_dir.join(SOURCE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: {} is not a run directory that `convcg train --resume` can continue",
                path.display(),
                run_dir.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }
}

/// The state of a training loop between two steps.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    /// Steps done.
    pub step: u64,
    /// Steps the run takes in all.
    pub total_steps: u64,
    /// Worker threads of the run that wrote it (results are bit-identical only with as many).
    pub threads: u64,
    /// Training examples of the dataset.
    pub examples: u64,
    /// The fingerprint of the dataset's training examples (their pins, weights and times).
    pub data_fingerprint: u64,
    /// Sum of the batch losses since the last loss-curve point.
    pub loss_sum: f64,
    /// Batches in that sum.
    pub loss_count: u64,
    /// Batches skipped for a non-finite loss or gradient so far.
    pub skipped: u64,
    /// The loss curve so far.
    pub loss_curve: Vec<LossPoint>,
    /// The batch sampler, with its RNG position.
    pub sampler: BatcherState,
    /// The log-q estimator.
    pub log_q: LogQState,
    /// Both optimisers.
    pub optimizer: OptimizerState,
}

/// One checkpoint file's contents.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The run config as TOML (as in the run directory's `config.toml`).
    pub config_toml: String,
    /// Where the event log came from.
    pub source: RunSource,
    /// The query tower's feature tables.
    pub query_tables: FeatureTables,
    /// The pin tower's feature tables.
    pub pin_tables: FeatureTables,
    /// Every parameter.
    pub params: ParamStore,
    /// The training loop's state; `None` in `model.ckpt`.
    pub training: Option<TrainingState>,
}

/// A checkpoint that cannot be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {} is unusable: {problem}", path.display())]
pub struct CheckpointError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl Checkpoint {
    /// The model it holds: towers built from `cfg`'s `[model]` (the config it was saved with)
    /// and its feature tables, with its parameters; `path` names the file in errors.
    ///
    /// # Errors
    /// If the parameters do not fit those towers by name and shape.
    pub fn model(&self, cfg: &RunConfig, path: &Path) -> Result<TwoTowerModel> {
        let mut model = TwoTowerModel::new(&cfg.model, &self.query_tables, &self.pin_tables, 0)?;
        model
            .params_mut()
            .assign_from(&self.params)
            .with_context(|| format!("the parameters in {}", path.display()))?;
        Ok(model)
    }
}

/// Loads a model saved by training (`RUN_DIR/model.ckpt`, or any checkpoint): its run config
/// and the model with the saved parameters. The towers are rebuilt from the saved config's
/// `[model]` and the feature tables stored beside the parameters (table names and row counts,
/// dense widths); the parameters must then match them by name and shape.
///
/// # Errors
/// If the file is unusable ([`CheckpointError`]), its config does not parse, or the
/// parameters do not fit the towers the config and tables describe.
pub fn load_model(path: &Path) -> Result<(RunConfig, TwoTowerModel)> {
    let ckpt = Checkpoint::read(path)?;
    let cfg = RunConfig::from_toml(&ckpt.config_toml)
        .with_context(|| format!("in the config saved in {}", path.display()))?;
    let model = ckpt.model(&cfg, path)?;
    Ok((cfg, model))
}

/// A cheap fingerprint of a dataset's training examples (their pins and weights, in order),
/// so that a resumed run notices data that changed under it.
pub(crate) fn data_fingerprint(examples: &[convcg_data::Example]) -> u64 {
    // FNV-1a over the fields' bytes: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&(examples.len() as u64).to_le_bytes());
    for e in examples {
        eat(&e.pin.to_le_bytes());
        eat(&e.weight.to_bits().to_le_bytes());
        eat(&e.key.ts.to_le_bytes());
    }
    h
}
