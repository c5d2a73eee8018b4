//! Optimisers: Adam for dense weights, row-wise Adagrad for the embedding rows a batch touched.

use convcg_kernels::{self as k, AdamParams, Par};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::{Grads, ParamStore};
use crate::tower::config_error;

/// Learning rates and constants of both optimisers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Adam learning rate (dense weights).
    pub adam_lr: f32,
    /// Adam β1.
    pub adam_beta1: f32,
    /// Adam β2.
    pub adam_beta2: f32,
    /// Adam ε.
    pub adam_eps: f32,
    /// Row-wise Adagrad learning rate (embedding tables).
    pub adagrad_lr: f32,
    /// Row-wise Adagrad ε.
    pub adagrad_eps: f32,
    /// L2 weight decay of the embedding rows a batch touches (0: none): each touched row's
    /// gradient gains `adagrad_weight_decay * row`, which keeps the ids seen in few examples
    /// from being fitted to them.
    pub adagrad_weight_decay: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            adam_lr: 1e-3,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            adagrad_lr: 0.05,
            adagrad_eps: 1e-8,
            adagrad_weight_decay: 0.0,
        }
    }
}

impl OptimConfig {
    /// Checks every value, naming the key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("optim.adam_lr", self.adam_lr),
            ("optim.adam_eps", self.adam_eps),
            ("optim.adagrad_lr", self.adagrad_lr),
            ("optim.adagrad_eps", self.adagrad_eps),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0 && v <= 10.0) {
                return Err(config_error(key.into(), v, "a number in (0, 10]"));
            }
        }
        for (key, v) in [
            ("optim.adam_beta1", self.adam_beta1),
            ("optim.adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(config_error(key.into(), v, "a number in [0, 1)"));
            }
        }
        let decay = self.adagrad_weight_decay;
        if !(decay.is_finite() && (0.0..=1.0).contains(&decay)) {
            return Err(config_error(
                "optim.adagrad_weight_decay".into(),
                decay,
                "a number in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// Checks that `state` holds one vector per `(name, len)` of `expected`, each `len` long.
fn check_state(what: &str, expected: &[(&str, usize)], state: &[Vec<f32>]) -> Result<()> {
    if expected.len() != state.len() {
        return Err(Error::StateMismatch {
            what: format!(
                "{} parameters but {} vectors of {what}",
                expected.len(),
                state.len()
            ),
        });
    }
    for ((name, len), s) in expected.iter().zip(state) {
        if *len != s.len() {
            return Err(Error::StateMismatch {
                what: format!(
                    "the {what} of `{name}` has {} values, the parameter needs {len}",
                    s.len()
                ),
            });
        }
    }
    Ok(())
}

/// State of Adam (per dense parameter) and row-wise Adagrad (per table row).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    cfg: OptimConfig,
    step: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    row_state: Vec<Vec<f32>>,
}

/// Everything an [`Optimizer`] carries from step to step, for checkpoints: restoring it with
/// [`Optimizer::from_state`] continues exactly where [`Optimizer::state`] left off.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Updates applied so far (Adam's bias correction depends on it).
    pub step: u64,
    /// Adam's first moments, one vector per dense parameter (in [`ParamStore::dense_params`]
    /// order, each as long as the parameter).
    pub m: Vec<Vec<f32>>,
    /// Adam's second moments, shaped like `m`.
    pub v: Vec<Vec<f32>>,
    /// Row-wise Adagrad's accumulators, one vector per embedding table (in
    /// [`ParamStore::tables`] order), one value per row.
    pub row_state: Vec<Vec<f32>>,
}

impl Optimizer {
    /// A copy of the state (not the config), for checkpoints.
    pub fn state(&self) -> OptimizerState {
        OptimizerState {
            step: self.step,
            m: self.m.clone(),
            v: self.v.clone(),
            row_state: self.row_state.clone(),
        }
    }

    /// An optimiser with settings `cfg` that continues from `state`, checked against `params`.
    ///
    /// # Errors
    /// If `cfg` is invalid, or [`Error::StateMismatch`] if a moment or accumulator vector is
    /// missing or not shaped like its parameter (the error names the parameter and both sizes).
    pub fn from_state(
        cfg: &OptimConfig,
        params: &ParamStore,
        state: OptimizerState,
    ) -> Result<Self> {
        cfg.validate()?;
        let dense: Vec<(&str, usize)> = params
            .dense_params()
            .iter()
            .map(|p| (p.name.as_str(), p.value.len()))
            .collect();
        let tables: Vec<(&str, usize)> = params
            .tables()
            .iter()
            .map(|t| (t.name.as_str(), t.rows))
            .collect();
        check_state("Adam first moment", &dense, &state.m)?;
        check_state("Adam second moment", &dense, &state.v)?;
        check_state("Adagrad accumulator", &tables, &state.row_state)?;
        Ok(Self {
            cfg: cfg.clone(),
            step: state.step,
            m: state.m,
            v: state.v,
            row_state: state.row_state,
        })
    }

    /// Bytes of optimiser state: Adam's two moments per dense weight and row-wise Adagrad's one
    /// accumulator per embedding row.
    pub fn state_bytes(&self) -> usize {
        let floats: usize = [&self.m, &self.v, &self.row_state]
            .iter()
            .flat_map(|s| s.iter())
            .map(Vec::len)
            .sum();
        floats * std::mem::size_of::<f32>()
    }

    /// Zero state shaped like `params`.
    pub fn new(cfg: &OptimConfig, params: &ParamStore) -> Result<Self> {
        cfg.validate()?;
        let zeros = |n: usize| vec![0.0f32; n];
        Ok(Self {
            cfg: cfg.clone(),
            step: 0,
            m: params
                .dense_params()
                .iter()
                .map(|p| zeros(p.value.len()))
                .collect(),
            v: params
                .dense_params()
                .iter()
                .map(|p| zeros(p.value.len()))
                .collect(),
            row_state: params.tables().iter().map(|t| zeros(t.rows)).collect(),
        })
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Applies one update from `grads`.
    pub fn step(&mut self, params: &mut ParamStore, grads: &Grads, par: Par) {
        self.step += 1;
        let adam = AdamParams {
            lr: self.cfg.adam_lr,
            beta1: self.cfg.adam_beta1,
            beta2: self.cfg.adam_beta2,
            eps: self.cfg.adam_eps,
        };
        for (i, p) in params.dense_params_mut().iter_mut().enumerate() {
            k::adam_update(
                &mut p.value,
                &grads.dense[i],
                &mut self.m[i],
                &mut self.v[i],
                self.step,
                adam,
                par,
            );
        }
        for (i, t) in params.tables_mut().iter_mut().enumerate() {
            let g = &grads.tables[i];
            if !g.is_empty() {
                let p = k::AdagradParams {
                    lr: self.cfg.adagrad_lr,
                    eps: self.cfg.adagrad_eps,
                    weight_decay: self.cfg.adagrad_weight_decay,
                };
                k::rowwise_adagrad_update(&mut t.value, &mut self.row_state[i], g, p, par);
            }
        }
    }
}
