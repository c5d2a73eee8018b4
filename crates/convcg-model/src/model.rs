//! The two-tower model and its training losses.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::collective::{Collective, SegmentLayout};
use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::params::{Grads, ParamStore};
use crate::tape::{Tape, ValueId};
use crate::tower::{FeatureTables, Tower, TowerConfig, TowerInput, config_error};
use convcg_kernels::{Par, SoftmaxArgs};

/// Shape and loss settings of the two-tower model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// One embedding per tower for both tasks, or a head per task on shared tower bodies.
    pub heads: Heads,
    /// Weight of the advertiser-level loss beside the conversion task's (0 turns it off).
    pub advertiser_loss_weight: f32,
    /// Weight of the identity codes' cosine beside the heads' in a score, where the inputs
    /// carry codes ([`FeatureTables::id_code`]): the query tower scales its unit code by it.
    pub id_code_weight: f32,
}

/// How the two tasks share the towers' outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Heads {
    /// One embedding per tower, trained by the engagement and the conversion losses together
    /// (the source paper's unified single head).
    Unified,
    /// A projection head per task on shared tower bodies, each trained by its task's loss;
    /// serving and evaluation use the conversion head.
    PerTask,
}

impl Heads {
    /// The heads' parameter labels, the serving (conversion) head last.
    fn labels(self) -> &'static [&'static str] {
        match self {
            Heads::Unified => &["head"],
            Heads::PerTask => &["head.engagement", "head.conversion"],
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            query: TowerConfig::default(),
            pin: TowerConfig::default(),
            out_dim: 64,
            temperature: 0.05,
            logq_correction: true,
            heads: Heads::Unified,
            advertiser_loss_weight: 0.5,
            id_code_weight: 2.0,
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
        for (key, w) in [
            ("model.advertiser_loss_weight", self.advertiser_loss_weight),
            ("model.id_code_weight", self.id_code_weight),
        ] {
            if !(w.is_finite() && (0.0..=100.0).contains(&w)) {
                return Err(config_error(key.into(), w, "a number in [0, 100]"));
            }
        }
        Ok(())
    }
}

/// Checks that both towers' identity codes are as wide and fit in their dense columns, that
/// every query feature that reads a pin table ([`TableDef::pin_table`]) names a one-id pin
/// feature with the same rows, that both towers' embeddings are as wide, and that no pin
/// feature names one.
fn check_tables(
    cfg: &ModelConfig,
    query_tables: &FeatureTables,
    pin_tables: &FeatureTables,
) -> Result<()> {
    let input = |tower, what: String| Err(Error::Input { tower, what });
    for (tower, t) in [("query", query_tables), ("pin", pin_tables)] {
        if t.id_code > t.dense {
            return input(
                tower,
                format!(
                    "an identity code of {} columns among {} dense ones",
                    t.id_code, t.dense
                ),
            );
        }
    }
    if query_tables.id_code != pin_tables.id_code {
        return input(
            "query",
            format!(
                "an identity code of {} columns, but the pin tower's has {}",
                query_tables.id_code, pin_tables.id_code
            ),
        );
    }
    if let Some(t) = pin_tables
        .sparse
        .iter()
        .chain(&pin_tables.bags)
        .find(|t| t.pin_table.is_some())
    {
        return input(
            "pin",
            format!(
                "feature `{}` names a pin table; only query features may",
                t.name
            ),
        );
    }
    for t in query_tables.sparse.iter().chain(&query_tables.bags) {
        let Some(feature) = &t.pin_table else {
            continue;
        };
        let Some(owner) = pin_tables.sparse.iter().find(|p| &p.name == feature) else {
            return input(
                "query",
                format!(
                    "feature `{}` reads pin table `{feature}`, which the pin tower does not have",
                    t.name
                ),
            );
        };
        if owner.rows != t.rows {
            return input(
                "query",
                format!(
                    "feature `{}` has {} rows but reads pin table `{feature}` of {} rows",
                    t.name, t.rows, owner.rows
                ),
            );
        }
        if cfg.query.embedding_dim != cfg.pin.embedding_dim {
            return Err(config_error(
                "model.query.embedding_dim".into(),
                cfg.query.embedding_dim,
                &format!(
                    "equal to model.pin.embedding_dim ({}), because query feature `{}` reads the pin tower's table `{feature}`",
                    cfg.pin.embedding_dim, t.name
                ),
            ));
        }
    }
    Ok(())
}

/// The rows of one task in a batch: each row's weight in the task's loss (0 for a row without
/// the task's label) and the task's weight beside the other task.
#[derive(Clone, Copy, Debug)]
pub struct TaskRows<'a> {
    /// Per-row weights (B), finite and non-negative.
    pub weights: &'a [f32],
    /// The task's weight: in the batch loss each row of the task counts `task_weight` times its
    /// row weight, over the batch's total of those products ([`TwoTowerModel::loss`]).
    pub task_weight: f32,
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
    /// The engagement task's rows, or none (no engagement loss).
    pub engagement: Option<TaskRows<'a>>,
    /// The conversion task's rows, or none (no conversion loss, no advertiser-level loss).
    pub conversion: Option<TaskRows<'a>>,
    /// Advertiser of each candidate (C), for the advertiser-level loss; required when
    /// [`ModelConfig::advertiser_loss_weight`] is positive and conversion rows are given.
    pub advertisers: Option<&'a [u32]>,
}

/// Where this rank's part of a data-parallel step sits in the global batch
/// ([`TwoTowerModel::shard_loss`]).
#[derive(Clone, Copy, Debug)]
pub struct Shard<'a> {
    /// The ranks.
    pub comm: &'a Arc<dyn Collective>,
    /// The rank's candidates as consecutive segments of rows, the same number of segments on
    /// every rank: the first is the rank's positives (one per row of the batch); say, hard
    /// negatives and corpus negatives follow. The global batch holds each segment of every
    /// rank in turn ([`SegmentLayout`]).
    pub segments: &'a [usize],
}

/// The candidates' advertisers and log q, and where row 0's positive is among them, for
/// [`TwoTowerModel::advertiser_loss`].
#[derive(Clone, Copy, Debug)]
pub struct Candidates<'a> {
    /// Advertiser of each candidate.
    pub advertisers: &'a [u32],
    /// Log q of each candidate: `+inf` marks an absent one, left out of every pool.
    pub log_q: &'a [f32],
    /// Row `i`'s positive is candidate `first_positive + i`.
    pub first_positive: usize,
}

/// The global batch's candidate data, gathered from every rank.
struct GlobalCandidates {
    layout: SegmentLayout,
    pin_ids: Vec<u32>,
    log_q: Vec<f32>,
    advertisers: Option<Vec<u32>>,
    /// Where this rank's positives start.
    first_positive: usize,
}

impl GlobalCandidates {
    fn gather(shard: &Shard<'_>, batch: &TrainBatch<'_>) -> Result<GlobalCandidates> {
        let comm = &**shard.comm;
        let (b, c) = (batch.query.n, batch.pins.n);
        let total: usize = shard.segments.iter().sum();
        if shard.segments.first() != Some(&b) || total != c {
            return Err(Error::Input {
                tower: "pin",
                what: format!(
                    "the shard's segments {:?} do not start with the {b} positives and cover the {c} candidates",
                    shard.segments
                ),
            });
        }
        let layout = SegmentLayout::gather(comm, shard.segments);
        let ids = |local: &[u32]| layout.arrange(&comm.all_gather_u32(local).data, 1);
        Ok(GlobalCandidates {
            pin_ids: ids(batch.pin_ids),
            log_q: layout.arrange(&comm.all_gather(batch.log_q).data, 1),
            advertisers: batch.advertisers.map(ids),
            first_positive: layout.global_start(comm.rank(), 0),
            layout,
        })
    }
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
        check_tables(cfg, query_tables, pin_tables)?;
        let heads = cfg.heads.labels();
        let mut query = Tower::new(
            "query",
            &cfg.query,
            query_tables,
            cfg.out_dim,
            heads,
            &mut params,
            &mut rng,
        );
        let pin = Tower::new(
            "pin",
            &cfg.pin,
            pin_tables,
            cfg.out_dim,
            heads,
            &mut params,
            &mut rng,
        );
        query.weigh_code(cfg.id_code_weight);
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

    /// Records the forward pass and the training loss of `batch` on `tape`; returns the scalar
    /// loss, in which every row counts with its weight in each task:
    /// `(Σ_task Σ_i t_task w_task,i ℓ_task,i + a · t_conv Σ_i w_conv,i ℓ_adv,i) / Σ_task Σ_i
    /// t_task w_task,i`, where `t_task` is the task weight, `w_task,i` the row's weight in the
    /// task, `a` the advertiser-loss weight, `ℓ_task,i` the row's in-batch sampled softmax loss
    /// (logQ correction, accidental-hit masking, candidates with infinite log q removed) on the
    /// task's head (the shared one when unified, where both tasks' terms of a row are the same
    /// softmax, computed once with the row's summed weight), and `ℓ_adv,i` its advertiser-level
    /// loss (see [`TwoTowerModel::advertiser_loss`]). A batch with no weight in any task has a
    /// loss of 0 and no gradient.
    pub fn loss(&self, tape: &mut Tape, batch: &TrainBatch<'_>) -> Result<ValueId> {
        self.loss_in(tape, batch, None)
    }

    /// [`TwoTowerModel::loss`] of this rank's part of a data-parallel step: `batch` holds the
    /// rank's rows and its candidates, `shard` how they sit in the global batch. Candidate
    /// embeddings, ids, log q and advertisers are gathered from every rank, so each row's
    /// softmax sees the global batch's candidates; weights are normalised by the global batch's
    /// totals. The loss is this rank's share: the ranks' losses sum to the loss of the global
    /// batch in one process, and so do their gradients.
    pub fn shard_loss(
        &self,
        tape: &mut Tape,
        batch: &TrainBatch<'_>,
        shard: &Shard<'_>,
    ) -> Result<ValueId> {
        self.loss_in(tape, batch, Some(shard))
    }

    fn loss_in(
        &self,
        tape: &mut Tape,
        batch: &TrainBatch<'_>,
        shard: Option<&Shard<'_>>,
    ) -> Result<ValueId> {
        self.check_batch(batch)?;
        let b = batch.query.n;
        let us = self.query.forward_heads(tape, &self.params, &batch.query);
        let mut ps = self.pin.forward_heads(tape, &self.params, &batch.pins);
        let global = match shard {
            None => None,
            Some(shard) => {
                let g = GlobalCandidates::gather(shard, batch)?;
                for p in &mut ps {
                    *p = tape.gather_rows(*p, shard.comm, &g.layout);
                }
                Some(g)
            }
        };
        let (pin_ids, batch_log_q, advertisers, first_positive) = match &global {
            None => (batch.pin_ids, batch.log_q, batch.advertisers, 0),
            Some(g) => (
                g.pin_ids.as_slice(),
                g.log_q.as_slice(),
                g.advertisers.as_deref(),
                g.first_positive,
            ),
        };
        // Without the correction, only the `+inf` marks of absent candidates are kept.
        let masks_only: Option<Vec<f32>> =
            (!self.cfg.logq_correction && batch_log_q.contains(&f32::INFINITY)).then(|| {
                batch_log_q
                    .iter()
                    .map(|&q| if q == f32::INFINITY { q } else { 0.0 })
                    .collect()
            });
        let log_q = match &masks_only {
            Some(m) => Some(m.as_slice()),
            None => self.cfg.logq_correction.then_some(batch_log_q),
        };
        let inv_temp = 1.0 / self.cfg.temperature;
        let softmax = |tape: &mut Tape, u: ValueId, p: ValueId, weights: &[f32]| {
            let args = SoftmaxArgs {
                inv_temp,
                log_q,
                cand_ids: pin_ids,
                weights: Some(weights),
                first_positive,
            };
            tape.softmax_xent(u, p, args)
        };
        // Each task's weight Σ_i w_task,i in these rows and, data-parallel, in the global batch.
        let task_rows = [batch.engagement, batch.conversion];
        let local: Vec<f64> = task_rows
            .iter()
            .map(|rows| rows.map_or(0.0, |r| r.weights.iter().map(|&w| f64::from(w)).sum()))
            .collect();
        let mut whole = local.clone();
        if let Some(shard) = shard {
            shard.comm.all_reduce_sum_f64(&mut whole);
        }
        // Tasks with weight in the (global) batch, by head index (engagement 0, conversion 1),
        // with their mass t_task Σ_i w_task,i, and the share of it in these rows (1 in one
        // process).
        let tasks: Vec<(usize, TaskRows<'_>, f64, f64)> = task_rows
            .into_iter()
            .enumerate()
            .filter_map(|(t, rows)| rows.map(|r| (t, r)))
            .map(|(t, r)| {
                let mass = f64::from(r.task_weight) * whole[t];
                (t, r, mass, local[t] / whole[t])
            })
            .filter(|&(_, _, mass, _)| mass > 0.0)
            .collect();
        let total: f64 = tasks.iter().map(|&(_, _, mass, _)| mass).sum();
        let mut terms = Vec::with_capacity(3);
        match self.cfg.heads {
            Heads::Unified => {
                // One softmax on the shared embeddings, each row weighted by Σ_task t w: the
                // kernel's weighted mean is exactly the loss above, over these rows.
                let mut combined = vec![0.0f32; b];
                for (_, rows, _, _) in &tasks {
                    for (c, &w) in combined.iter_mut().zip(rows.weights) {
                        *c += rows.task_weight * w;
                    }
                }
                if !tasks.is_empty() {
                    let here: f64 = tasks.iter().map(|&(_, _, mass, share)| mass * share).sum();
                    let l = softmax(tape, us[0], ps[0], &combined);
                    terms.push((l, (here / total) as f32));
                }
            }
            Heads::PerTask => {
                for &(head, rows, mass, share) in &tasks {
                    let l = softmax(tape, us[head], ps[head], rows.weights);
                    terms.push((l, (mass / total * share) as f32));
                }
            }
        }
        let conversion = tasks.iter().find(|(t, _, _, _)| *t == 1);
        if let Some(&(_, rows, mass, share)) =
            conversion.filter(|_| self.cfg.advertiser_loss_weight > 0.0)
        {
            let advertisers = advertisers.ok_or_else(|| Error::Input {
                tower: "pin",
                what: "the advertiser-level loss is on, but the batch names no advertisers".into(),
            })?;
            let (u, p) = (us[us.len() - 1], ps[ps.len() - 1]);
            let groups = Candidates {
                advertisers,
                log_q: batch_log_q,
                first_positive,
            };
            let l = self.advertiser_loss(tape, u, p, groups, rows.weights);
            let share = (mass / total * share) as f32;
            terms.push((l, self.cfg.advertiser_loss_weight * share));
        }
        Ok(match terms.as_slice() {
            // A lone term of weight 1 is the loss itself: no extra node, and its backward skips
            // a pass that would scale the logits' gradient by 1.
            [(l, c)] if *c == 1.0 => *l,
            _ => tape.weighted_sum(&terms),
        })
    }

    /// Records the advertiser-level loss: each candidate present in the batch (finite log q)
    /// is pooled with the other candidates of its advertiser into their mean embedding, L2
    /// normalised; each row's query embedding `u` is scored against every pooled advertiser at
    /// the model's temperature, and the row's loss is the softmax cross-entropy of its positive
    /// pin's (candidate `first_positive + i`'s) advertiser, weighted by `weights` (the
    /// conversion rows).
    pub fn advertiser_loss(
        &self,
        tape: &mut Tape,
        u: ValueId,
        p: ValueId,
        cands: Candidates<'_>,
        weights: &[f32],
    ) -> ValueId {
        let b = weights.len();
        let mut dense_id: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        let groups: Vec<u32> = cands
            .advertisers
            .iter()
            .zip(cands.log_q)
            .map(|(&a, &q)| {
                if q == f32::INFINITY {
                    return u32::MAX;
                }
                let next = dense_id.len() as u32;
                *dense_id.entry(a).or_insert(next)
            })
            .collect();
        // A positive always has a finite log q, so every row has its advertiser's group.
        let targets = &groups[cands.first_positive..cands.first_positive + b];
        let pooled = tape.segment_mean(p, &groups, dense_id.len());
        let pooled = tape.l2_normalize(pooled);
        tape.softmax_targets(
            u,
            pooled,
            1.0 / self.cfg.temperature,
            targets,
            Some(weights),
        )
    }

    /// Checks a batch's shapes and values against the towers and each other.
    fn check_batch(&self, batch: &TrainBatch<'_>) -> Result<()> {
        self.query.check_input(&batch.query)?;
        self.pin.check_input(&batch.pins)?;
        let b = batch.query.n;
        let mismatch = |what: String| Error::Input { tower: "pin", what };
        let c = batch.pins.n;
        if c < b {
            return Err(mismatch(format!("{c} candidates for {b} queries")));
        }
        if batch.pin_ids.len() != c || batch.log_q.len() != c {
            return Err(mismatch(format!(
                "pin_ids/log_q have {}/{} entries for {c} candidates",
                batch.pin_ids.len(),
                batch.log_q.len(),
            )));
        }
        if let Some(a) = batch.advertisers.filter(|a| a.len() != c) {
            return Err(mismatch(format!(
                "advertisers has {} entries for {c} candidates",
                a.len()
            )));
        }
        for (task, rows) in [
            ("engagement", batch.engagement),
            ("conversion", batch.conversion),
        ] {
            let Some(rows) = rows else { continue };
            if rows.weights.len() != b {
                return Err(mismatch(format!(
                    "{task} weights have {} entries for {b} rows",
                    rows.weights.len()
                )));
            }
            let bad = |w: f32| !(w.is_finite() && w >= 0.0);
            if let Some(i) = rows.weights.iter().position(|&w| bad(w)) {
                return Err(mismatch(format!(
                    "{task} weight of row {i} is {} (must be finite and non-negative)",
                    rows.weights[i]
                )));
            }
            if bad(rows.task_weight) {
                return Err(mismatch(format!(
                    "{task} task weight is {} (must be finite and non-negative)",
                    rows.task_weight
                )));
            }
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
        Ok(())
    }

    /// Query embeddings `[n, out_dim + id_code]`, computed in chunks of `chunk` rows.
    pub fn embed_queries(
        &self,
        input: &TowerInput<'_>,
        chunk: usize,
        par: Par,
    ) -> Result<Array2<f32>> {
        self.embed(&self.query, input, chunk, par)
    }

    /// Pin embeddings `[n, out_dim + id_code]`, computed in chunks of `chunk` rows.
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
        let d = self.cfg.out_dim + tower.tables().id_code;
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
        self.step_in(tape, batch, None, grads, optimizer, par)
    }

    /// [`TwoTowerModel::train_step_with`] for this rank's part of a data-parallel step
    /// ([`TwoTowerModel::shard_loss`]): after the backward, the gradients are summed over the
    /// ranks ([`Grads::all_reduce`]), so every rank applies the same update and the ranks'
    /// parameters stay identical. Returns the global batch's loss. Every rank must call it,
    /// with the same model, the same kind of batch and the same `shard.comm`.
    pub fn train_shard_step_with(
        &mut self,
        tape: &mut Tape,
        batch: &TrainBatch<'_>,
        shard: &Shard<'_>,
        grads: &mut Grads,
        optimizer: &mut Optimizer,
        par: Par,
    ) -> Result<f32> {
        self.step_in(tape, batch, Some(shard), grads, optimizer, par)
    }

    fn step_in(
        &mut self,
        tape: &mut Tape,
        batch: &TrainBatch<'_>,
        shard: Option<&Shard<'_>>,
        grads: &mut Grads,
        optimizer: &mut Optimizer,
        par: Par,
    ) -> Result<f32> {
        tape.reset(par);
        let loss = self.loss_in(tape, batch, shard)?;
        grads.zero();
        tape.backward(loss, self.params(), grads);
        let mut value = tape.scalar(loss);
        if let Some(shard) = shard {
            // After the sums every rank sees the same loss and gradients, so all of them take
            // the same branch below.
            grads.all_reduce(&**shard.comm);
            let mut total = [value];
            shard.comm.all_reduce_sum(&mut total);
            value = total[0];
        }
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
/// so that the loop vectorises and the guard stays cheap beside a step.
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
