//! The run configuration: one TOML file with a section per layer, validated once.

mod check;
mod commented;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use convcg_data::{DatasetConfig, SynthConfig};
use convcg_eval::AuctionConfig;
use convcg_model::{ModelConfig, OptimConfig};

/// Everything a `convcg train` run uses. `convcg config` prints the defaults; a config file
/// overrides any subset; unknown keys are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// The simulated serving of the eval queries' and the traffic requests' conversion top K
    /// (synthetic marketplace only): `candidates` (the K), `slots`, `reserve` (least expected
    /// cost per impression under the ad's objective, `p_click x bid` or
    /// `target_cpa x p_click x p_conv|click`), `position_decay` (examination
    /// `(1 + slot)^-position_decay`) and `traffic_requests` (the A/B on traffic; 0 turns it off).
    pub online: AuctionConfig,
}

/// The full model's `[data] advertiser_rate_prior`: an advertiser's conversion rate is shrunk
/// towards the catalogue's by this many engagements' worth of it.
pub const ADVERTISER_RATE_PRIOR: f32 = 200.0;

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            threads: 0,
            synth: SynthConfig::default(),
            // Two weeks of the marketplace's four are the eval window, for enough conversion
            // queries to resolve a few percent; the engagement task, with more relevant pins per
            // query, is subsampled to 10,000 queries.
            // The recipe (docs/results.md, "What each lever buys"): engagement positives weighed
            // by their advertiser's conversion rate, and no hard negatives, which cost
            // conversion recall on this marketplace.
            data: DatasetConfig {
                eval_window_days: 14.0,
                max_eval_queries: 10_000,
                advertiser_rate_prior: ADVERTISER_RATE_PRIOR,
                hard_negatives_per_positive: 0,
                ..DatasetConfig::default()
            },
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            train: TrainConfig::default(),
            online: AuctionConfig::default(),
        }
    }
}

/// `[train] min_steps` by default: three passes over a log of 30-odd batches.
pub const DEFAULT_MIN_STEPS: usize = 100;

/// The training loop's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Positive pairs per batch (each row's in-batch negatives are the other rows' pins).
    pub batch_size: usize,
    /// Passes over the training examples (fractional allowed).
    pub epochs: f64,
    /// Fewest optimisation steps, whatever `epochs` gives: a small log (a few dozen batches an
    /// epoch) then trains for several passes instead of stopping half-trained.
    pub min_steps: usize,
    /// Record the mean training loss every this many steps, or more often in a run too short
    /// for [`MIN_LOSS_POINTS`] points at this cadence ([`TrainConfig::log_interval`]).
    pub log_every: usize,
    /// What a step that meets a NaN or an infinity (loss or gradient) does.
    pub on_nonfinite: OnNonFinite,
    /// Corpus negatives drawn uniformly per batch beside the in-batch and hard negatives, each
    /// corrected by its own log probability, `-ln(pins)` (mixed negative sampling); 0 = none.
    pub uniform_negatives: usize,
    /// Write a checkpoint every this many steps (0: never, except on Ctrl-C). The newest two
    /// are kept in `RUN_DIR/checkpoints/`; `convcg train --resume RUN_DIR` continues from them.
    pub checkpoint_every: usize,
    /// Also write a checkpoint when this many seconds have passed since the last one (or since
    /// training began), so that a killed run loses at most about this much work whatever its
    /// length; 0 turns it off.
    pub checkpoint_every_s: f64,
    /// The precision of the towers' and the loss's matrix products: `f32`, or `bf16` (operands
    /// rounded to bfloat16, products summed in f32; weights, optimiser state, activations,
    /// weight gradients and the softmax stay f32). `bf16` runs on CPUs with AMX (Intel Sapphire
    /// Rapids and later); elsewhere the run says so and trains in f32.
    pub precision: TrainPrecision,
}

/// `[train] precision`: the precision of a training step's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainPrecision {
    /// Every product in f32 (the default).
    #[default]
    F32,
    /// Products with bfloat16 operands and f32 sums, where the CPU has AMX.
    Bf16,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 1024,
            epochs: 1.0,
            min_steps: DEFAULT_MIN_STEPS,
            log_every: 50,
            on_nonfinite: OnNonFinite::Error,
            uniform_negatives: 0,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_every_s: DEFAULT_CHECKPOINT_EVERY_S,
            precision: TrainPrecision::F32,
        }
    }
}

/// The fewest points a loss curve gets when its run has at least as many steps.
pub const MIN_LOSS_POINTS: usize = 20;

impl TrainConfig {
    /// Optimisation steps on `examples` training rows: `epochs` passes of `batch_size`, and at
    /// least `min_steps`.
    pub fn steps(&self, examples: usize) -> usize {
        let passes = ((self.epochs * examples as f64) / self.batch_size as f64).ceil() as usize;
        passes.max(self.min_steps)
    }

    /// Steps between loss-curve points in a run of `steps`: `log_every`, shortened so that the
    /// curve has at least [`MIN_LOSS_POINTS`] points (every step in a run of fewer).
    pub fn log_interval(&self, steps: usize) -> usize {
        self.log_every.min(steps / MIN_LOSS_POINTS).max(1)
    }
}

/// The default `[train] checkpoint_every`: rare enough that writing checkpoints costs little of
/// a run, often enough that a crash loses little training (docs/reliability.md, "Why 500 steps
/// by default", has the measurement).
pub const DEFAULT_CHECKPOINT_EVERY: usize = 500;

/// The default `[train] checkpoint_every_s`: no kill loses more than about a minute of training.
pub const DEFAULT_CHECKPOINT_EVERY_S: f64 = 60.0;

/// What a training step that meets a NaN or an infinity does (`[train] on_nonfinite`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// Stop the run with an error naming the step and where the value was (the default).
    #[default]
    Error,
    /// Skip the batch (the parameters are untouched: the check runs before the update), count
    /// it, and go on; the run still stops if a parameter itself turns non-finite.
    Skip,
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
    /// Parses TOML text (a subset of keys; the rest keep [`RunConfig::default`]'s values, which
    /// for `[data]` are not the data crate's own defaults: see `Default`).
    ///
    /// # Errors
    /// If `text` is not TOML or sets an unknown key or a value of the wrong type; the error
    /// cites the text's own line and key.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Self::parse(text, "the config")
    }

    /// [`RunConfig::from_toml`] of the config file `origin`, which its errors name.
    ///
    /// # Errors
    /// As [`RunConfig::from_toml`].
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        // Parsed alone first, so that an error points into `text` rather than the merged table.
        let _: RunConfig = check::parse(text, origin, &Self::keys())?;
        RunConfig::default().overridden_by(text)
    }

    /// [`RunConfig::parse`] of the file at `path`.
    ///
    /// # Errors
    /// If the file cannot be read, or as [`RunConfig::from_toml`].
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        Self::parse(&read_config(path)?, &path.display().to_string())
    }

    /// Every key of the configuration, dotted (`train.epochs`).
    fn keys() -> Vec<String> {
        RunConfig::default()
            .key_values()
            .map(|kv| kv.into_keys().collect())
            .unwrap_or_default()
    }

    /// Every key, dotted (`train.epochs`, `data.click_weight.max`), with its value written as
    /// TOML.
    ///
    /// # Errors
    /// If the configuration does not serialise (it always does).
    pub fn key_values(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(check::leaves(&toml::Value::try_from(self)?))
    }

    /// The configuration of a run on a dataset directory: the defaults, overridden by the
    /// dataset's `dataset.toml` (`[data]` only), overridden by the user's config file. The two
    /// `[data]` tables are merged key by key (recursively for sub-tables such as
    /// `[data.click_weight]`) before deserialising, so that a key the user sets wins and the rest
    /// come from `dataset.toml`. Unknown keys, in either file, are errors naming the file, line
    /// and key.
    ///
    /// # Errors
    /// If either text is not TOML, `dataset.toml` has anything but a `[data]` table, or either
    /// does not deserialise.
    pub fn for_dataset(
        dataset: Option<ConfigText<'_>>,
        user: Option<ConfigText<'_>>,
    ) -> anyhow::Result<Layered> {
        let keys = Self::keys();
        let mut merged = match &user {
            Some(u) => {
                let _: RunConfig = check::parse(u.text, u.origin, &keys)?;
                toml::from_str::<toml::Table>(u.text)?
            }
            None => toml::Table::new(),
        };
        let mut from_dataset = BTreeMap::new();
        let mut overridden = Vec::new();
        if let Some(d) = &dataset {
            let mut table = toml::from_str::<toml::Table>(d.text)
                .map_err(|e| anyhow::anyhow!("in {}: {e}", d.origin))?;
            if let Some(key) = table.keys().find(|k| k.as_str() != "data") {
                anyhow::bail!(
                    "{} may only hold a [data] table, but it sets `{key}` (put run settings in the --config file)",
                    d.origin
                );
            }
            let _: DatasetFile = check::parse(d.text, d.origin, &keys)?;
            let data = match table.remove("data") {
                Some(toml::Value::Table(t)) => t,
                _ => toml::Table::new(),
            };
            let user_data = match merged.remove("data") {
                Some(toml::Value::Table(t)) => t,
                _ => toml::Table::new(),
            };
            let theirs = check::leaves(&toml::Value::Table(data.clone()));
            let ours = check::leaves(&toml::Value::Table(user_data.clone()));
            for (key, value) in &theirs {
                let key = format!("data.{key}");
                match ours.get(&key["data.".len()..]) {
                    Some(user_value) if user_value != value => overridden.push(Override {
                        key,
                        dataset: value.clone(),
                        user: user_value.clone(),
                    }),
                    Some(_) => {}
                    None => {
                        from_dataset.insert(key, format!("set by {}", d.origin));
                    }
                }
            }
            merged.insert("data".into(), toml::Value::Table(overlay(data, user_data)));
        }
        let config = toml::from_str(&toml::to_string(&merged)?)?;
        Ok(Layered {
            config,
            overridden,
            from_dataset,
        })
    }

    /// [`RunConfig::for_dataset`] with `data_dir/dataset.toml` (if present) and the user's
    /// config file (if given).
    ///
    /// # Errors
    /// If `data_dir` is not a directory, a file cannot be read, or [`RunConfig::for_dataset`]
    /// fails.
    pub fn for_dataset_dir(data_dir: &Path, user_config: Option<&Path>) -> anyhow::Result<Layered> {
        if !data_dir.is_dir() {
            anyhow::bail!(
                "{} is not a dataset directory (no such directory)",
                data_dir.display()
            );
        }
        let dataset_path = data_dir.join(crate::DATASET_CONFIG_FILE);
        let dataset = if dataset_path.is_file() {
            Some(read_config(&dataset_path)?)
        } else {
            None
        };
        let user = user_config.map(read_config).transpose()?;
        let (dataset_origin, user_origin) = (
            dataset_path.display().to_string(),
            user_config.map(|p| p.display().to_string()),
        );
        Self::for_dataset(
            dataset.as_deref().map(|text| ConfigText {
                text,
                origin: &dataset_origin,
            }),
            user.as_deref()
                .zip(user_origin.as_deref())
                .map(|(text, origin)| ConfigText { text, origin }),
        )
    }

    /// This configuration with any subset of its keys overridden by the TOML `text`, table by
    /// table (a key the text sets wins, the rest keep this configuration's values). Unknown
    /// keys are errors naming the key.
    ///
    /// # Errors
    /// If `text` is not TOML or the merged table does not deserialise.
    pub fn overridden_by(&self, text: &str) -> anyhow::Result<Self> {
        let base = toml::Table::try_from(self)?;
        let top = toml::from_str::<toml::Table>(text)?;
        Ok(toml::from_str(&toml::to_string(&overlay(base, top))?)?)
    }

    /// The full configuration as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// The full configuration as TOML with each key's meaning and what it accepts as comments
    /// above it, and `notes` (by dotted key, such as [`Layered::from_dataset`]) beside them.
    ///
    /// # Errors
    /// If the configuration does not serialise (it always does).
    pub fn to_commented_toml(&self, notes: &BTreeMap<String, String>) -> anyhow::Result<String> {
        commented::commented_toml(self, notes)
    }

    /// The dotted keys whose values differ between `self` and `other`.
    ///
    /// # Errors
    /// If either does not serialise (they always do).
    pub fn differing_keys(&self, other: &RunConfig) -> anyhow::Result<Vec<String>> {
        let (a, b) = (self.key_values()?, other.key_values()?);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        Ok(keys
            .into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect())
    }

    /// Checks every section, naming the first bad key.
    pub fn validate(&self) -> anyhow::Result<()> {
        // The data crate names a key within its section; say which section.
        self.synth.validate().context("in the [synth] section")?;
        self.data.validate().context("in the [data] section")?;
        self.model.validate()?;
        self.optim.validate()?;
        self.online.validate().context("in the [online] section")?;
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
        if t.min_steps > 1_000_000 {
            return Err(bad(
                "train.min_steps",
                t.min_steps.to_string(),
                "an integer in 0..=1000000",
            )
            .into());
        }
        if t.log_every == 0 {
            return Err(bad("train.log_every", "0".into(), "an integer >= 1").into());
        }
        if !(t.checkpoint_every_s.is_finite() && t.checkpoint_every_s >= 0.0) {
            return Err(bad(
                "train.checkpoint_every_s",
                t.checkpoint_every_s.to_string(),
                "a number of seconds, 0 (off) or more",
            )
            .into());
        }
        if t.uniform_negatives > 1 << 16 {
            return Err(bad(
                "train.uniform_negatives",
                t.uniform_negatives.to_string(),
                "an integer in 0..=65536",
            )
            .into());
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

/// A config file's text and the name its errors cite (its path).
#[derive(Clone, Copy, Debug)]
pub struct ConfigText<'a> {
    /// The TOML.
    pub text: &'a str,
    /// Where it came from, as its errors name it.
    pub origin: &'a str,
}

/// A run's configuration on a dataset directory ([`RunConfig::for_dataset`]).
#[derive(Clone, Debug)]
pub struct Layered {
    /// The effective configuration.
    pub config: RunConfig,
    /// The keys of `dataset.toml` that the user's file set to another value.
    pub overridden: Vec<Override>,
    /// The keys that `dataset.toml` set and the user's file left alone (dotted key → a note
    /// naming the file, for [`RunConfig::to_commented_toml`]).
    pub from_dataset: BTreeMap<String, String>,
}

/// A key of `dataset.toml` that the user's config file set otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// Dotted key (`data.eval_window_days`).
    pub key: String,
    /// Its value in `dataset.toml`, as TOML.
    pub dataset: String,
    /// The value the user's file gave it, which the run uses.
    pub user: String,
}

/// The shape of `dataset.toml`: a `[data]` table only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetFile {
    #[serde(default)]
    data: DatasetConfig,
}

/// The `[data]` settings of `dir/dataset.toml` over the data crate's own defaults (not the
/// run's: for tools that apply a dataset's rules without a run, such as `convcg pipeline`), or
/// `None` when the directory has no such file.
///
/// # Errors
/// If the file cannot be read or does not parse; the error names its line and key.
pub fn read_dataset_toml(dir: &Path) -> anyhow::Result<Option<DatasetConfig>> {
    let path = dir.join(crate::DATASET_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_config(&path)?;
    let file: DatasetFile = check::parse(&text, &path.display().to_string(), &RunConfig::keys())?;
    Ok(Some(file.data))
}

/// The text of a config file, or an error naming it.
fn read_config(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `base` with every key of `top` set over it; where both hold a table, the tables merge the
/// same way.
fn overlay(mut base: toml::Table, top: toml::Table) -> toml::Table {
    for (key, value) in top {
        let merged = match (base.remove(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => {
                toml::Value::Table(overlay(b, t))
            }
            (_, v) => v,
        };
        base.insert(key, merged);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small log trains `min_steps` and logs a curve of at least [`MIN_LOSS_POINTS`] points;
    /// a long run keeps `epochs` and `log_every`.
    #[test]
    fn small_logs_train_min_steps_and_log_a_curve_of_many_points() {
        let t = TrainConfig::default();
        // tmall at the defaults: 8,101 examples are 8 batches of 1,024.
        assert_eq!(t.steps(8_101), DEFAULT_MIN_STEPS);
        assert_eq!(t.steps(1_000_000), 977);
        let points = |steps: usize| steps.div_ceil(t.log_interval(steps));
        assert_eq!(t.log_interval(100), 5);
        assert!(points(100) >= MIN_LOSS_POINTS);
        assert_eq!(t.log_interval(12), 1, "every step of a very short run");
        assert_eq!(t.log_interval(977), 48);
        assert_eq!(t.log_interval(100_000), t.log_every);
        let none = TrainConfig {
            min_steps: 0,
            ..TrainConfig::default()
        };
        assert_eq!(none.steps(8_101), 8);
    }

    #[test]
    fn a_config_file_keeps_the_run_defaults_of_the_keys_it_does_not_set() {
        let cfg = RunConfig::from_toml("[data]\nhistory_len = 7\n").unwrap();
        let want = RunConfig::default();
        assert_eq!(cfg.data.history_len, 7);
        // The run's [data] defaults, not the data crate's own.
        assert_eq!(cfg.data.eval_window_days, want.data.eval_window_days);
        assert_eq!(cfg.data.max_eval_queries, want.data.max_eval_queries);
        assert_ne!(
            want.data.eval_window_days,
            DatasetConfig::default().eval_window_days
        );
        let err = RunConfig::from_toml("[data]\nhistory_len = \"seven\"\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn overrides_keep_the_base_and_reject_unknown_keys() {
        let mut base = RunConfig::default();
        base.synth.num_pins = 777;
        base.data.history_len = 3;
        let cfg = base
            .overridden_by("seed = 5\n[data]\nhistory_len = 9\n[data.click_weight]\nmax = 2.0\n")
            .unwrap();
        assert_eq!(cfg.seed, 5);
        assert_eq!(cfg.synth.num_pins, 777);
        assert_eq!(cfg.data.history_len, 9);
        assert_eq!(cfg.data.click_weight.max, 2.0);
        assert_eq!(
            cfg.data.click_weight.reference_s,
            base.data.click_weight.reference_s
        );
        let err = base
            .overridden_by("[model]\nno_such_key = 1\n")
            .unwrap_err();
        assert!(format!("{err:#}").contains("no_such_key"), "{err:#}");
    }

    #[test]
    fn on_nonfinite_reads_error_or_skip_and_rejects_anything_else() {
        let cfg = RunConfig::from_toml("[train]\non_nonfinite = \"skip\"\n").unwrap();
        assert_eq!(cfg.train.on_nonfinite, OnNonFinite::Skip);
        assert_eq!(RunConfig::default().train.on_nonfinite, OnNonFinite::Error);
        let back = RunConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(back, cfg);
        let err = RunConfig::from_toml("[train]\non_nonfinite = \"ignore\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("on_nonfinite") || err.contains("ignore"),
            "{err}"
        );
        assert!(err.contains("error") && err.contains("skip"), "{err}");
    }
}
