//! The two-tower model and its training losses.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::params::{Grads, ParamStore};
use crate::tape::{SoftmaxArgs, Tape, ValueId};
use crate::tower::{FeatureTables, Tower, TowerConfig, TowerInput, config_error};
use convcg_kernels::Par;

/// Shape and loss settings of the two-tower model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The query (user) tower.
    pub query: TowerConfig,
    /// The pin tower.
    pub pin: TowerConfig,
    /// Width of the final, L2-normalised embeddings.
    pub out_dim: usize,
    /// Softmax temperature: logits are cosine similarities divided by it.
    pub temperature: f32,
    /// Subtract each candidate's log sampling probability from its logit (logQ correction).
    /// An infinite log q (an absent candidate) removes the candidate either way.
    pub logq_correction: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            query: TowerConfig::default(),
            pin: TowerConfig::default(),
            out_dim: 64,
            temperature: 0.05,
            logq_correction: true,
        }
    }
}

impl ModelConfig {
    /// Checks every value, naming the key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.query.validate("model.query")?;
        self.pin.validate("model.pin")?;
        if self.out_dim == 0 || self.out_dim > 4096 {
            return Err(config_error(
                "model.out_dim".into(),
                self.out_dim,
                "an integer in 1..=4096",
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= 10.0) {
            return Err(config_error(
                "model.temperature".into(),
                self.temperature,
                "a number in (0, 10]",
            ));
        }
        Ok(())
    }
}

/// One training batch: B positive (query, pin) pairs and C >= B candidates, candidate i < B
/// being row i's positive and the rest extra negatives (e.g. hard negatives) shared by all rows.
#[derive(Clone, Debug)]
pub struct TrainBatch<'a> {
    /// Query-tower inputs, B rows.
    pub query: TowerInput<'a>,
    /// Pin-tower inputs of the C candidates: the B positives, then any extra negatives.
    pub pins: TowerInput<'a>,
    /// Item id of each candidate (C), for accidental-hit masking.
    pub pin_ids: &'a [u32],
    /// Log sampling probability of each candidate (C). `+inf` marks a candidate that must not
    /// count (an empty hard-negative slot): its logit is `-inf`, so it takes no probability mass
    /// and gets no gradient, whether or not the logQ correction is on.
    pub log_q: &'a [f32],
    /// Per-row example weights (B).
    pub weights: &'a [f32],
}

/// The two-tower retrieval model: a query tower and a pin tower whose normalised embeddings
/// score by inner product.
#[derive(Clone, Debug)]
pub struct TwoTowerModel {
    cfg: ModelConfig,
    params: ParamStore,
    query: Tower,
    pin: Tower,
}

impl TwoTowerModel {
    /// Builds a model whose parameters are seeded by `seed`.
    pub fn new(
        cfg: &ModelConfig,
        query_tables: &FeatureTables,
        pin_tables: &FeatureTables,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let query = Tower::new(
            "query",
            &cfg.query,
            query_tables,
            cfg.out_dim,
            &mut params,
            &mut rng,
        );
        let pin = Tower::new(
            "pin",
            &cfg.pin,
            pin_tables,
            cfg.out_dim,
            &mut params,
            &mut rng,
        );
        Ok(Self {
            cfg: cfg.clone(),
            params,
            query,
            pin,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The parameters.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// The parameters, for optimisers.
    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    /// The query tower.
    pub fn query_tower(&self) -> &Tower {
        &self.query
    }

    /// The pin tower.
    pub fn pin_tower(&self) -> &Tower {
        &self.pin
    }

    /// Records the forward pass and the in-batch softmax loss of `batch` on `tape`; returns the
    /// scalar loss value.
    pub fn loss(&self, tape: &mut Tape, batch: &TrainBatch<'_>) -> Result<ValueId> {
        self.query.check_input(&batch.query)?;
        self.pin.check_input(&batch.pins)?;
        let b = batch.query.n;
        let mismatch = |what: String| Error::Input { tower: "pin", what };
        let c = batch.pins.n;
        if c < b {
            return Err(mismatch(format!("{c} candidates for {b} queries")));
        }
        if batch.pin_ids.len() != c || batch.log_q.len() != c || batch.weights.len() != b {
            return Err(mismatch(format!(
                "pin_ids/log_q/weights have {}/{}/{} entries for {b} rows and {c} candidates",
                batch.pin_ids.len(),
                batch.log_q.len(),
                batch.weights.len()
            )));
        }
        if let Some(j) = (0..c).find(|&j| {
            let q = batch.log_q[j];
            q.is_nan() || (j < b && q.is_infinite())
        }) {
            return Err(mismatch(format!(
                "log_q[{j}] = {} (NaN, or infinite for a positive)",
                batch.log_q[j]
            )));
        }
        let u = self.query.forward(tape, &self.params, &batch.query);
        let p = self.pin.forward(tape, &self.params, &batch.pins);
        // Without the correction, only the `+inf` marks of absent candidates are kept.
        let masks_only: Option<Vec<f32>> =
            (!self.cfg.logq_correction && batch.log_q.contains(&f32::INFINITY)).then(|| {
                batch
                    .log_q
                    .iter()
                    .map(|&q| if q == f32::INFINITY { q } else { 0.0 })
                    .collect()
            });
        let log_q = match &masks_only {
            Some(m) => Some(m.as_slice()),
            None => self.cfg.logq_correction.then_some(batch.log_q),
        };
        let args = SoftmaxArgs {
            inv_temp: 1.0 / self.cfg.temperature,
            log_q,
            cand_ids: batch.pin_ids,
            weights: Some(batch.weights),
        };
        Ok(tape.softmax_xent(u, p, args))
    }

    /// Query embeddings `[n, out_dim]`, computed in chunks of `chunk` rows.
    pub fn embed_queries(
        &self,
        input: &TowerInput<'_>,
        chunk: usize,
        par: Par,
    ) -> Result<Array2<f32>> {
        self.embed(&self.query, input, chunk, par)
    }

    /// Pin embeddings `[n, out_dim]`, computed in chunks of `chunk` rows.
    pub fn embed_pins(
        &self,
        input: &TowerInput<'_>,
        chunk: usize,
        par: Par,
    ) -> Result<Array2<f32>> {
        self.embed(&self.pin, input, chunk, par)
    }

    fn embed(
        &self,
        tower: &Tower,
        input: &TowerInput<'_>,
        chunk: usize,
        par: Par,
    ) -> Result<Array2<f32>> {
        tower.check_input(input)?;
        let d = self.cfg.out_dim;
        let chunk = chunk.max(1);
        let mut out = Vec::with_capacity(input.n * d);
        let dense_w = tower.tables().dense;
        let mut tape = Tape::new(par);
        for start in (0..input.n).step_by(chunk) {
            let end = (start + chunk).min(input.n);
            let rebased: Vec<Vec<usize>> = input
                .bags
                .iter()
                .map(|(_, offs)| offs[start..=end].iter().map(|o| o - offs[start]).collect())
                .collect();
            let part = TowerInput {
                n: end - start,
                sparse: input.sparse.iter().map(|ids| &ids[start..end]).collect(),
                bags: input
                    .bags
                    .iter()
                    .zip(&rebased)
                    .map(|(&(ids, offs), r)| (&ids[offs[start]..offs[end]], r.as_slice()))
                    .collect(),
                dense: &input.dense[start * dense_w..end * dense_w],
            };
            tape.reset(par);
            let e = tower.forward(&mut tape, &self.params, &part);
            out.extend_from_slice(tape.data(e));
        }
        Array2::from_shape_vec((input.n, d), out).map_err(|e| Error::Input {
            tower: tower.name(),
            what: format!("embedding output has the wrong size: {e}"),
        })
    }
}

impl TwoTowerModel {
    /// One optimisation step on `batch`: forward, backward into `grads` (zeroed first), then the
    /// optimiser update. Returns the batch loss.
    ///
    /// Allocates a fresh tape; a training loop should keep one and call
    /// [`TwoTowerModel::train_step_with`] instead.
    pub fn train_step(
        &mut self,
        batch: &TrainBatch<'_>,
        grads: &mut Grads,
        optimizer: &mut Optimizer,
        par: Par,
    ) -> Result<f32> {
        self.train_step_with(&mut Tape::new(par), batch, grads, optimizer, par)
    }

    /// [`TwoTowerModel::train_step`] recording on `tape`, which is [reset](Tape::reset) first, so
    /// a tape kept across steps reuses its buffers: steps of the same shapes allocate nothing
    /// after the first. The result is bit-identical to a step on a fresh tape. On return the tape
    /// still holds this step's values, until the next reset.
    pub fn train_step_with(
        &mut self,
        tape: &mut Tape,
        batch: &TrainBatch<'_>,
        grads: &mut Grads,
        optimizer: &mut Optimizer,
        par: Par,
    ) -> Result<f32> {
        tape.reset(par);
        let loss = self.loss(tape, batch)?;
        grads.zero();
        tape.backward(loss, self.params(), grads);
        let value = tape.scalar(loss);
        // Nothing non-finite reaches the parameters: the step stops before the update, and the
        // caller may skip the batch.
        // On this (rare) path the whole model is scanned too, so that a parameter that was
        // already broken is named as the cause.
        let before = |what: String| Error::NonFinite {
            what: match self.first_non_finite_parameter() {
                Some(name) => format!("{what}, from parameter {name}, which holds one"),
                None => what,
            },
            parameters_untouched: true,
        };
        if !value.is_finite() {
            return Err(before(format!("the loss ({value})")));
        }
        if let Some(name) = self.first_non_finite_gradient(grads) {
            return Err(before(format!("the gradient of {name}")));
        }
        optimizer.step(self.params_mut(), grads, par);
        if let Some(name) = self.first_non_finite_update(grads) {
            return Err(Error::NonFinite {
                what: format!("parameter {name} (after the update)"),
                parameters_untouched: false,
            });
        }
        Ok(value)
    }

    /// The name of the first parameter holding a NaN or an infinity (a scan of the whole model).
    fn first_non_finite_parameter(&self) -> Option<&str> {
        let params = self.params();
        let dense = params.dense_params().iter().map(|p| (&p.name, &p.value));
        let tables = params.tables().iter().map(|t| (&t.name, &t.value));
        dense
            .chain(tables)
            .find(|(_, v)| !all_finite(v))
            .map(|(name, _)| name.as_str())
    }

    /// The name of the first parameter whose gradient holds a NaN or an infinity.
    fn first_non_finite_gradient(&self, grads: &Grads) -> Option<&str> {
        let params = self.params();
        let dense = params
            .dense_params()
            .iter()
            .zip(grads.dense_all())
            .find(|(_, g)| !all_finite(g))
            .map(|(p, _)| p.name.as_str());
        dense.or_else(|| {
            params
                .tables()
                .iter()
                .zip(grads.tables_all())
                .find(|(_, g)| !all_finite(g.values()))
                .map(|(t, _)| t.name.as_str())
        })
    }

    /// The name of the first parameter the last update (dense weights, and the table rows the
    /// batch touched) left with a NaN or an infinity.
    fn first_non_finite_update(&self, grads: &Grads) -> Option<&str> {
        let params = self.params();
        let dense = params
            .dense_params()
            .iter()
            .find(|p| !all_finite(&p.value))
            .map(|p| p.name.as_str());
        dense.or_else(|| {
            params
                .tables()
                .iter()
                .zip(grads.tables_all())
                .find(|(t, g)| {
                    g.rows().iter().any(|&r| {
                        let at = r as usize * t.dim;
                        !all_finite(&t.value[at..at + t.dim])
                    })
                })
                .map(|(t, _)| t.name.as_str())
        })
    }
}

/// Whether every value is finite: `x * 0` is 0 for a finite `x` and NaN for an infinite or NaN
/// one, so the sums are 0 exactly when all are finite. Eight independent lanes and no early exit,
/// so that the loop vectorises (the guard costs well under 1% of a W1 step).
fn all_finite(values: &[f32]) -> bool {
    const LANES: usize = 8;
    let (chunks, tail) = values.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for chunk in chunks {
        for k in 0..LANES {
            acc[k] += chunk[k] * 0.0;
        }
    }
    acc.iter().chain(tail).all(|&x| x * 0.0 == 0.0)
}
