//! The convcg model: an autograd-lite tape, parameters, the two towers, the two-tower model,
//! its losses and its optimisers.
//!
//! The tape ([`Tape`]) records only the fixed set of ops the towers and losses need — embedding
//! gather and bags, concat, linear, ReLU, DCN v2 cross layer, L2 normalisation, sampled softmax
//! cross-entropy and weighted sums of losses — each saving exactly what its backward reads. All
//! arithmetic runs in `convcg-kernels`; this crate composes it.
//!
//! ```
//! use convcg_model::{FeatureTables, ModelConfig, TableDef, TowerInput, TwoTowerModel};
//! use convcg_kernels::Par;
//!
//! let tables = FeatureTables {
//!     sparse: vec![TableDef { name: "id".into(), rows: 10 }],
//!     bags: vec![],
//!     dense: 2,
//! };
//! let model = TwoTowerModel::new(&ModelConfig::default(), &tables, &tables, 7).unwrap();
//! let ids = [1u32, 2, 3];
//! let dense = [0.5f32; 6];
//! let input = TowerInput { n: 3, sparse: vec![&ids], bags: vec![], dense: &dense };
//! let emb = model.embed_pins(&input, 1024, Par::Seq).unwrap();
//! assert_eq!(emb.dim(), (3, 64));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod model;
mod optim;
mod params;
mod tape;
mod tower;

pub use error::{Error, Result};
pub use model::{ModelConfig, TrainBatch, TwoTowerModel};
pub use optim::{OptimConfig, Optimizer};
pub use params::{DenseParam, EmbeddingTable, Grads, ParamId, ParamStore, TableId};
pub use tape::{SoftmaxArgs, Tape, ValueId};
pub use tower::{FeatureTables, Structure, TableDef, Tower, TowerConfig, TowerInput};

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
        par: convcg_kernels::Par,
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
        par: convcg_kernels::Par,
    ) -> Result<f32> {
        tape.reset(par);
        let loss = self.loss(tape, batch)?;
        grads.zero();
        tape.backward(loss, self.params(), grads);
        optimizer.step(self.params_mut(), grads, par);
        Ok(tape.scalar(loss))
    }
}
