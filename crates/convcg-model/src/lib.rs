//! The convcg model: an autograd-lite tape, parameters, the two towers, the two-tower model,
//! its losses and its optimisers.
//!
//! The tape ([`Tape`]) records only the fixed set of ops the towers and losses need — embedding
//! lookups, bags and constant inputs side by side (a tower's x0, [`Tape::embed`]; a constant
//! block at the end gets no gradient), concat, linear (of one input, or of several read as their
//! concatenation),
//! ReLU, a linear layer and its ReLU as one node (the MLP layers), the DCN v2 full-rank cross
//! layer, the elementwise product, sum, gate softmax and gated sum that low-rank and mixture cross
//! layers are built from, L2 normalisation, sampled softmax cross-entropy, pooling rows by group
//! and a softmax over explicit targets (the advertiser-level loss), and weighted sums of losses —
//! each saving exactly what its backward reads. All
//! arithmetic runs in `convcg-kernels`; this crate composes it.
//!
//! The model's choices are configuration ([`ModelConfig`], [`TowerConfig`]): a unified head or
//! a head per task ([`Heads`]), the advertiser-level loss's weight, full-rank, low-rank or
//! mixture-of-experts cross layers ([`CrossKind`]), and a parallel or stacked body
//! ([`Structure`]).
//!
//! ```
//! use convcg_model::{FeatureTables, ModelConfig, Par, TableDef, TowerInput, TwoTowerModel};
//!
//! let tables = FeatureTables {
//!     sparse: vec![TableDef::new("id", 10)],
//!     bags: vec![],
//!     dense: 2,
//!     id_code: 0,
//! };
//! let model = TwoTowerModel::new(&ModelConfig::default(), &tables, &tables, 7).unwrap();
//! let ids = [1u32, 2, 3];
//! let dense = [0.5f32; 6];
//! let input = TowerInput { n: 3, sparse: vec![&ids], bags: vec![], dense: &dense };
//! let emb = model.embed_pins(&input, 1024, Par::Seq).unwrap();
//! assert_eq!(emb.dim(), (3, 64));
//! ```
#![deny(missing_docs)]
// Library code returns errors; `unwrap` and `expect` only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

pub mod collective;
mod error;
mod model;
mod optim;
mod params;
mod tape;
mod tower;

pub use collective::{Collective, LocalGroup, SegmentLayout, Solo};
pub use convcg_kernels::{Par, SoftmaxArgs};
pub use error::{Error, Result};
pub use model::{Candidates, Heads, ModelConfig, Shard, TaskRows, TrainBatch, TwoTowerModel};
pub use optim::{OptimConfig, Optimizer, OptimizerState};
pub use params::{DenseParam, EmbeddingTable, Grads, ParamId, ParamStore, TableId};
pub use tape::{EmbedInput, NodeTiming, Tape, ValueId};
pub use tower::{CrossKind, FeatureTables, Structure, TableDef, Tower, TowerConfig, TowerInput};
