//! Optimisers: Adam for dense weights, row-wise Adagrad for the embedding rows a batch touched.

use convcg_kernels::{self as k, AdamParams, Par};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::params::{Grads, ParamStore};
use crate::tower::config_error;

/// Learning rates and constants of both optimisers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        Ok(())
    }
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

impl Optimizer {
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
                k::rowwise_adagrad_update(
                    &mut t.value,
                    &mut self.row_state[i],
                    g,
                    self.cfg.adagrad_lr,
                    self.cfg.adagrad_eps,
                    par,
                );
            }
        }
    }
}
