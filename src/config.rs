//! The run configuration: one TOML file with a section per layer, validated once.

use serde::{Deserialize, Serialize};

use convcg_data::{DatasetConfig, SynthConfig};
use convcg_model::{ModelConfig, OptimConfig};

/// Everything a `convcg train` run uses. `convcg config` prints the defaults; a config file
/// overrides any subset; unknown keys are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of everything random in the run (marketplace, initialisation, batches).
    pub seed: u64,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// The synthetic marketplace.
    pub synth: SynthConfig,
    /// Labelled examples, time split and eval queries.
    pub data: DatasetConfig,
    /// The two-tower model.
    pub model: ModelConfig,
    /// Optimisers.
    pub optim: OptimConfig,
    /// The training loop.
    pub train: TrainConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            threads: 0,
            synth: SynthConfig::default(),
            data: DatasetConfig::default(),
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

/// The training loop's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Positive pairs per batch (each row's in-batch negatives are the other rows' pins).
    pub batch_size: usize,
    /// Passes over the training examples (fractional allowed).
    pub epochs: f64,
    /// Record the mean training loss every this many steps.
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 1024,
            epochs: 4.0,
            log_every: 50,
        }
    }
}

/// A bad configuration value.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: `{key}` = {value}: {allowed}")]
pub struct ConfigError {
    key: String,
    value: String,
    allowed: &'static str,
}

impl RunConfig {
    /// Parses TOML text (a subset of keys; the rest keep their defaults).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The full configuration as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Checks every section, naming the first bad key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.synth.validate()?;
        self.data.validate()?;
        self.model.validate()?;
        self.optim.validate()?;
        let bad = |key: &str, value: String, allowed| ConfigError {
            key: key.into(),
            value,
            allowed,
        };
        if self.threads > 1024 {
            return Err(bad(
                "threads",
                self.threads.to_string(),
                "0 (all cores) or 1..=1024",
            )
            .into());
        }
        let t = &self.train;
        if t.batch_size < 2 || t.batch_size > 1 << 16 {
            return Err(bad(
                "train.batch_size",
                t.batch_size.to_string(),
                "an integer in 2..=65536",
            )
            .into());
        }
        if !(t.epochs.is_finite() && t.epochs > 0.0 && t.epochs <= 1000.0) {
            return Err(bad(
                "train.epochs",
                t.epochs.to_string(),
                "a number in (0, 1000]",
            )
            .into());
        }
        if t.log_every == 0 {
            return Err(bad("train.log_every", "0".into(), "an integer >= 1").into());
        }
        Ok(())
    }

    /// The number of worker threads this run uses.
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}
