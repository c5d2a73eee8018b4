//! One tower: embeddings and dense features, a DCN v2 cross network (full-rank, low-rank or a
//! mixture of low-rank experts) beside (or before) an MLP, one linear head per task (or one
//! shared head) and L2 normalisation; an identity code, where the inputs carry one, joins the
//! output beside the head's.

use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::params::{ParamId, ParamStore, TableId};
use crate::tape::{EmbedInput, Tape, ValueId};

/// How the cross network and the MLP are arranged in a tower body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Structure {
    /// Both read x0; their outputs are concatenated (the source paper's architecture).
    Parallel,
    /// The MLP reads the cross network's output (the baseline).
    Stacked,
}

/// The kind of every DCN v2 cross layer of a tower (Wang et al. 2021), each computing
/// `x_{l+1} = x0 ⊙ f(x_l) + x_l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrossKind {
    /// `f(x) = x W + b`, `W` being `[d, d]`.
    Full,
    /// `f(x) = (x V) U + b`, `V` `[d, r]` and `U` `[r, d]` with `r = cross_rank`: `2dr` weights
    /// instead of `d²`.
    LowRank,
    /// A mixture of `cross_experts` low-rank experts, each with its own `V_i`, `U_i`, `b_i`,
    /// weighted per row by a softmax gate on `x_l`:
    /// `x_{l+1} = Σ_i g_i(x_l) (x0 ⊙ ((x_l V_i) U_i + b_i)) + x_l`.
    Mixture,
}

/// Shape of one tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TowerConfig {
    /// Width of every embedding table.
    pub embedding_dim: usize,
    /// Number of DCN v2 cross layers.
    pub cross_layers: usize,
    /// Full-rank, low-rank or mixture-of-experts cross layers.
    pub cross_kind: CrossKind,
    /// Rank `r` of a low-rank cross layer and of each mixture expert.
    pub cross_rank: usize,
    /// Experts per mixture cross layer.
    pub cross_experts: usize,
    /// Widths of the MLP's hidden layers, each followed by a ReLU.
    pub mlp: Vec<usize>,
    /// Parallel or stacked body.
    pub structure: Structure,
}

impl Default for TowerConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 16,
            cross_layers: 2,
            cross_kind: CrossKind::Full,
            cross_rank: 16,
            cross_experts: 4,
            mlp: vec![256, 128],
            structure: Structure::Parallel,
        }
    }
}

impl TowerConfig {
    /// Checks every value; `prefix` names the section in messages (e.g. `model.query`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.embedding_dim == 0 || self.embedding_dim > 1024 {
            return Err(config_error(
                format!("{prefix}.embedding_dim"),
                self.embedding_dim,
                "an integer in 1..=1024",
            ));
        }
        if self.cross_layers > 16 {
            return Err(config_error(
                format!("{prefix}.cross_layers"),
                self.cross_layers,
                "an integer in 0..=16",
            ));
        }
        if self.cross_rank == 0 || self.cross_rank > 1024 {
            return Err(config_error(
                format!("{prefix}.cross_rank"),
                self.cross_rank,
                "an integer in 1..=1024",
            ));
        }
        if self.cross_experts == 0 || self.cross_experts > 64 {
            return Err(config_error(
                format!("{prefix}.cross_experts"),
                self.cross_experts,
                "an integer in 1..=64",
            ));
        }
        if let Some(w) = self.mlp.iter().find(|&&w| w == 0 || w > 8192) {
            return Err(config_error(
                format!("{prefix}.mlp"),
                w,
                "hidden widths in 1..=8192",
            ));
        }
        Ok(())
    }
}

pub(crate) fn config_error(key: String, value: impl std::fmt::Display, allowed: &str) -> Error {
    Error::Config {
        key,
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

/// A named id table a tower reads: `rows` includes the out-of-vocabulary row 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Feature name.
    pub name: String,
    /// Rows, the out-of-vocabulary row included.
    pub rows: usize,
    /// A query-tower feature whose ids are rows of a pin feature's table names that pin
    /// feature: the query tower then reads the pin tower's table (one table, trained by both
    /// towers) instead of creating its own. `None` for a table of the feature's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_table: Option<String>,
}

impl TableDef {
    /// A feature with a table of its own.
    pub fn new(name: impl Into<String>, rows: usize) -> Self {
        Self {
            name: name.into(),
            rows,
            pin_table: None,
        }
    }
}

/// The inputs a tower expects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureTables {
    /// One-id-per-example features.
    pub sparse: Vec<TableDef>,
    /// Mean-pooled bag features.
    pub bags: Vec<TableDef>,
    /// Number of dense floats.
    pub dense: usize,
    /// How many of the last dense floats are an identity code (0: none): a fixed vector per
    /// pin on the pin tower, the mean code of the user's recent pins on the query tower. The
    /// code bypasses the tower's body and joins its output (see [`Tower::forward_heads`]).
    #[serde(default)]
    pub id_code: usize,
}

/// One batch of tower inputs, borrowed from the caller's arrays.
#[derive(Clone, Debug)]
pub struct TowerInput<'a> {
    /// Rows in the batch.
    pub n: usize,
    /// Table rows of each sparse feature, `n` each, in [`FeatureTables::sparse`] order.
    pub sparse: Vec<&'a [u32]>,
    /// `(ids, offsets)` of each bag feature; `offsets` has `n + 1` entries.
    pub bags: Vec<(&'a [u32], &'a [usize])>,
    /// `[n, dense]` row-major dense features.
    pub dense: &'a [f32],
}

/// The weights of one low-rank map `(x V) U + b`.
#[derive(Clone, Copy, Debug)]
struct LowRankMap {
    v: ParamId,
    u: ParamId,
    b: ParamId,
}

/// The parameters of one cross layer.
#[derive(Clone, Debug)]
enum CrossLayer {
    Full {
        w: ParamId,
        b: ParamId,
    },
    LowRank(LowRankMap),
    Mixture {
        gate: ParamId,
        experts: Vec<LowRankMap>,
    },
}

/// The parameters of one tower and how to run it.
#[derive(Clone, Debug)]
pub struct Tower {
    name: &'static str,
    tables: FeatureTables,
    sparse: Vec<TableId>,
    bags: Vec<TableId>,
    cross: Vec<CrossLayer>,
    mlp: Vec<(ParamId, ParamId)>,
    heads: Vec<(ParamId, ParamId)>,
    structure: Structure,
    /// What the unit identity code is scaled by before it joins the output (1 unless set).
    code_weight: f32,
}

impl Tower {
    /// Creates the tower's parameters in `params`, with one linear head to `out_dim` per entry
    /// of `heads` (named `{name}.{label}`); the last head is the one [`Tower::forward`] serves.
    /// A feature with a [`TableDef::pin_table`] reads the pin tower's table of that feature: the
    /// first of the two towers to be built creates it (`pin.emb.{feature}`), the other reads it.
    /// [`TwoTowerModel::new`](crate::TwoTowerModel::new) checks that the sharing fits.
    ///
    /// # Panics
    /// If `heads` is empty.
    #[track_caller]
    pub fn new(
        name: &'static str,
        cfg: &TowerConfig,
        tables: &FeatureTables,
        out_dim: usize,
        heads: &[&str],
        params: &mut ParamStore,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        assert!(!heads.is_empty(), "a tower needs at least one head");
        let e = cfg.embedding_dim;
        // A table another tower already created (a shared pin table) is read, not created again.
        let mut table = |kind: &str, t: &TableDef| {
            let label = match &t.pin_table {
                Some(feature) => table_name("pin", "emb", feature),
                None => table_name(name, kind, &t.name),
            };
            match params.table_id(&label) {
                Some(id) => id,
                None => params.add_table(label, t.rows, e, rng),
            }
        };
        let sparse = tables.sparse.iter().map(|t| table("emb", t)).collect();
        let bags = tables.bags.iter().map(|t| table("bag", t)).collect();
        let body_dense = tables.dense - tables.id_code;
        let d0 = e * (tables.sparse.len() + tables.bags.len()) + body_dense;
        let cross = (0..cfg.cross_layers)
            .map(|l| {
                let label = format!("{name}.cross.{l}");
                match cfg.cross_kind {
                    CrossKind::Full => {
                        let (w, b) = linear(params, rng, &label, d0, d0);
                        CrossLayer::Full { w, b }
                    }
                    CrossKind::LowRank => {
                        CrossLayer::LowRank(low_rank(params, rng, &label, d0, cfg.cross_rank))
                    }
                    CrossKind::Mixture => CrossLayer::Mixture {
                        gate: init(
                            params,
                            rng,
                            format!("{label}.gate"),
                            d0,
                            cfg.cross_experts,
                            d0,
                        ),
                        experts: (0..cfg.cross_experts)
                            .map(|i| {
                                let label = format!("{label}.expert.{i}");
                                low_rank(params, rng, &label, d0, cfg.cross_rank)
                            })
                            .collect(),
                    },
                }
            })
            .collect();
        let mut width = d0;
        let mlp = cfg
            .mlp
            .iter()
            .enumerate()
            .map(|(l, &w)| {
                let layer = linear(params, rng, &format!("{name}.mlp.{l}"), width, w);
                width = w;
                layer
            })
            .collect();
        // A parallel body with neither branch is x0 alone, not x0 beside itself.
        let body = match cfg.structure {
            Structure::Parallel if cfg.cross_layers > 0 || !cfg.mlp.is_empty() => d0 + width,
            _ => width,
        };
        let heads = heads
            .iter()
            .map(|label| linear(params, rng, &format!("{name}.{label}"), body, out_dim))
            .collect();
        Self {
            name,
            tables: tables.clone(),
            sparse,
            bags,
            cross,
            mlp,
            heads,
            structure: cfg.structure,
            code_weight: 1.0,
        }
    }

    /// Scales the tower's unit identity code by `weight` (the query tower's, by
    /// [`ModelConfig::id_code_weight`](crate::ModelConfig::id_code_weight)): two towers'
    /// outputs then score `head · head + weight · code · code`.
    pub(crate) fn weigh_code(&mut self, weight: f32) {
        self.code_weight = weight;
    }

    /// `query` or `pin`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The inputs this tower expects.
    pub fn tables(&self) -> &FeatureTables {
        &self.tables
    }

    /// Checks that a batch has the features and lengths this tower expects.
    pub fn check_input(&self, input: &TowerInput<'_>) -> Result<()> {
        let err = |what: String| Error::Input {
            tower: self.name,
            what,
        };
        if input.sparse.len() != self.tables.sparse.len() {
            return Err(err(format!(
                "{} sparse features given, {} expected",
                input.sparse.len(),
                self.tables.sparse.len()
            )));
        }
        for (ids, t) in input.sparse.iter().zip(&self.tables.sparse) {
            if ids.len() != input.n {
                return Err(err(format!(
                    "feature `{}` has {} ids for {} rows",
                    t.name,
                    ids.len(),
                    input.n
                )));
            }
            if let Some(bad) = ids.iter().find(|&&r| r as usize >= t.rows) {
                return Err(err(format!(
                    "feature `{}` row {bad} is outside its {} rows",
                    t.name, t.rows
                )));
            }
        }
        if input.bags.len() != self.tables.bags.len() {
            return Err(err(format!(
                "{} bag features given, {} expected",
                input.bags.len(),
                self.tables.bags.len()
            )));
        }
        for ((ids, offsets), t) in input.bags.iter().zip(&self.tables.bags) {
            let ok = offsets.len() == input.n + 1
                && offsets.first() == Some(&0)
                && offsets.last() == Some(&ids.len())
                && offsets.windows(2).all(|w| w[0] <= w[1]);
            if !ok {
                return Err(err(format!("bag `{}` has malformed offsets", t.name)));
            }
            if let Some(bad) = ids.iter().find(|&&r| r as usize >= t.rows) {
                return Err(err(format!(
                    "bag `{}` row {bad} is outside its {} rows",
                    t.name, t.rows
                )));
            }
        }
        if input.dense.len() != input.n * self.tables.dense {
            return Err(err(format!(
                "{} dense values for {} rows of {}",
                input.dense.len(),
                input.n,
                self.tables.dense
            )));
        }
        Ok(())
    }

    /// Records the tower's forward pass on `tape`; returns the L2-normalised embeddings `[n, out]`
    /// of the serving (last) head. The input must have passed [`Tower::check_input`].
    pub fn forward(&self, tape: &mut Tape, params: &ParamStore, input: &TowerInput<'_>) -> ValueId {
        let heads = self.forward_heads(tape, params, input);
        heads[heads.len() - 1]
    }

    /// Records the tower's forward pass on `tape`, the body once and every head on it; returns
    /// each head's L2-normalised embeddings `[n, out]`, in the order the heads were created.
    /// With an identity code ([`FeatureTables::id_code`] columns), each head's unit output is
    /// followed by the unit code (scaled by [`Tower::weigh_code`]'s weight), `[n, out +
    /// id_code]`: two towers' outputs then score `head · head + weight · code · code`, the
    /// heads' cosine plus the weighted cosine of a pin's code with the mean code of the user's
    /// recent pins (an all-zero code, an empty bag, adds nothing). The input must have passed
    /// [`Tower::check_input`].
    pub fn forward_heads(
        &self,
        tape: &mut Tape,
        params: &ParamStore,
        input: &TowerInput<'_>,
    ) -> Vec<ValueId> {
        // x0: the lookups, bags and dense inputs side by side, each written into its columns.
        let mut parts = Vec::with_capacity(self.sparse.len() + self.bags.len() + 1);
        for (&table, &ids) in self.sparse.iter().zip(&input.sparse) {
            parts.push(EmbedInput::Rows { table, ids });
        }
        for (&table, &(ids, offsets)) in self.bags.iter().zip(&input.bags) {
            parts.push(EmbedInput::Bags {
                table,
                ids,
                offsets,
            });
        }
        let code_cols = self.tables.id_code;
        let body_cols = self.tables.dense - code_cols;
        let (body_dense, code) = if code_cols > 0 {
            let mut body_dense = Vec::with_capacity(input.n * body_cols);
            let mut code = Vec::with_capacity(input.n * code_cols);
            for row in input.dense.chunks_exact(self.tables.dense) {
                body_dense.extend_from_slice(&row[..body_cols]);
                code.extend_from_slice(&row[body_cols..]);
            }
            (Cow::Owned(body_dense), Some(code))
        } else {
            (Cow::Borrowed(input.dense), None)
        };
        if body_cols > 0 {
            parts.push(EmbedInput::Dense {
                values: &body_dense,
                cols: body_cols,
            });
        }
        let x0 = tape.embed(params, input.n, &parts);
        let mut xl = x0;
        for layer in &self.cross {
            xl = match layer {
                CrossLayer::Full { w, b } => tape.cross(params, x0, xl, *w, *b),
                CrossLayer::LowRank(map) => {
                    let f = low_rank_forward(tape, params, xl, map);
                    let gated = tape.mul(x0, f);
                    tape.add(gated, xl)
                }
                CrossLayer::Mixture { gate, experts } => {
                    let scores = tape.linear(params, xl, *gate, None);
                    let gates = tape.row_softmax(scores);
                    let outputs: Vec<ValueId> = experts
                        .iter()
                        .map(|map| {
                            let f = low_rank_forward(tape, params, xl, map);
                            tape.mul(x0, f)
                        })
                        .collect();
                    let mixed = tape.mix(gates, &outputs);
                    tape.add(mixed, xl)
                }
            };
        }
        let mut h = match self.structure {
            Structure::Parallel => x0,
            Structure::Stacked => xl,
        };
        for &(w, b) in &self.mlp {
            h = tape.linear_relu(params, h, w, Some(b));
        }
        // The parallel body's two outputs meet the head as one concatenation; `linear_cat`
        // multiplies each by its band of the head's rows instead of copying them side by side.
        let body = match self.structure {
            Structure::Parallel if xl != h => vec![xl, h],
            _ => vec![h],
        };
        let code = code.map(|code| {
            let code = tape.input(&code, input.n, code_cols);
            let unit = tape.l2_normalize(code);
            if self.code_weight == 1.0 {
                unit
            } else {
                let weight = vec![self.code_weight; input.n * code_cols];
                let weight = tape.input(&weight, input.n, code_cols);
                tape.mul(unit, weight)
            }
        });
        self.heads
            .iter()
            .map(|&(w, b)| {
                let out = tape.linear_cat(params, &body, w, Some(b));
                let out = tape.l2_normalize(out);
                match code {
                    Some(code) => tape.concat(&[out, code]),
                    None => out,
                }
            })
            .collect()
    }
}

/// The parameter name of a tower's table: `{tower}.{kind}.{feature}`, `kind` being `emb` for a
/// one-id feature and `bag` for a bag.
fn table_name(tower: &str, kind: &str, feature: &str) -> String {
    format!("{tower}.{kind}.{feature}")
}

/// A new `[rows, cols]` parameter initialised as PyTorch's `Linear` does, U(±1/sqrt(fan_in)).
fn init(
    params: &mut ParamStore,
    rng: &mut ChaCha8Rng,
    name: String,
    rows: usize,
    cols: usize,
    fan_in: usize,
) -> ParamId {
    let bound = 1.0 / (fan_in as f32).sqrt();
    params.add_dense(name, rows, cols, bound, rng)
}

/// A linear layer's weight `{label}.w` `[d_in, d_out]` and bias `{label}.b` `[1, d_out]`.
fn linear(
    params: &mut ParamStore,
    rng: &mut ChaCha8Rng,
    label: &str,
    d_in: usize,
    d_out: usize,
) -> (ParamId, ParamId) {
    let w = init(params, rng, format!("{label}.w"), d_in, d_out, d_in);
    let b = init(params, rng, format!("{label}.b"), 1, d_out, d_in);
    (w, b)
}

/// The weights of a low-rank map `(x V) U + b` from width `d` through rank `r`, named
/// `{label}.v`, `{label}.u`, `{label}.b`.
fn low_rank(
    params: &mut ParamStore,
    rng: &mut ChaCha8Rng,
    label: &str,
    d: usize,
    r: usize,
) -> LowRankMap {
    LowRankMap {
        v: init(params, rng, format!("{label}.v"), d, r, d),
        u: init(params, rng, format!("{label}.u"), r, d, r),
        b: init(params, rng, format!("{label}.b"), 1, d, r),
    }
}

/// Records `(x V) U + b`.
fn low_rank_forward(tape: &mut Tape, params: &ParamStore, x: ValueId, map: &LowRankMap) -> ValueId {
    let t = tape.linear(params, x, map.v, None);
    tape.linear(params, t, map.u, Some(map.b))
}
