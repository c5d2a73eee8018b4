//! The hand-written compute of convcg: dense and sparse kernels with their backward passes.
//!
//! This crate owns every numeric inner loop of training: matrix products (through faer's GEMM),
//! affine maps (alone or with their ReLU, in cache-sized row blocks), DCN v2 full-rank cross
//! layers (and the elementwise product, gate softmax and gated sum that low-rank and mixture
//! cross layers are built from), ReLU, column
//! concatenation, row-wise L2 normalisation, embedding lookups and mean-pooled bags with sparse
//! row gradients, the in-batch sampled softmax cross-entropy (logQ correction, accidental-hit
//! masking, example weights), the advertiser-level loss's pooling by group and softmax over
//! explicit targets, and the Adam and row-wise Adagrad updates. Kernels know nothing of models:
//! they take matrix views, and the caller (convcg-model's tape) decides what to save and when
//! to run them.
//!
//! # Conventions
//!
//! - **Arguments.** In faer's order: the destination first, then how it receives the result,
//!   the inputs, scalars, the [`Precision`] of the products where a kernel has them, and [`Par`]
//!   last. Every matrix is a view that carries its shape: a contiguous **row-major** [`Rows`] to
//!   read, [`RowsMut`] to write (`n` rows = the batch; a weight of a linear map from `d_in` to
//!   `d_out` is `[d_in, d_out]`, so that `y = x · w + b`), and a kernel checks that its views'
//!   shapes agree. Arguments that travel together are one
//!   struct ([`SoftmaxArgs`], [`CrossSaved`], [`WeightGrads`]).
//! - **Accumulation.** Parameter gradients (`dw`, `db`, [`SparseRowGrad`]) always accumulate
//!   (`+=`), because a parameter can be used several times in one step: zero them (or
//!   [`SparseRowGrad::clear`]) once per step. An input gradient is an [`InputGrad`]: a view and
//!   an [`Accum`], `Replace` writing (the old contents are never read), `Add` adding. Forward
//!   outputs and scratch buffers are overwritten.
//! - **Parallelism.** Every kernel that can run in parallel takes a [`Par`]. Products use
//!   faer's parallel GEMM through it; row and elementwise loops run on rayon under
//!   `Par::Rayon(t)`, in at most about `t` blocks of whole rows, and inline under `Par::Seq`.
//! - **Determinism.** Row loops and reductions split work only at fixed boundaries (whole rows,
//!   whole columns, fixed blocks of rows), so outside the GEMMs results do not depend on the
//!   thread count, and the same inputs and `Par` always give bit-identical results.
//! - **Preconditions.** Kernels panic, reporting the caller's location, when shapes do not
//!   agree (see each `# Panics`); they have no other failure mode, so the crate has no error
//!   type.
//! - **Allocation.** Kernels allocate nothing per call beyond a few partial sums; saved
//!   activations and scratch (`z`, `dz`, `norms`, `dlogits`) are caller-owned, and a
//!   [`SparseRowGrad`] is meant to be kept and cleared between steps.
//!
//! # Example
//!
//! A linear layer, ReLU, and their backward pass:
//!
//! ```
//! use convcg_kernels::{
//!     Accum, InputGrad, Par, Precision, Rows, RowsMut, WeightGrads, linear_backward,
//!     linear_forward, relu_backward, relu_forward,
//! };
//!
//! let (n, d_in, d_out) = (2, 3, 2);
//! let x = [1.0, 0.0, 2.0, /* row 2 */ -1.0, 1.0, 0.0];
//! let w = [1.0, -1.0, /* */ 0.5, 0.5, /* */ 1.0, 0.0];
//! let b = [0.0, 1.0];
//! let (x, w) = (Rows::new(&x, n, d_in), Rows::new(&w, d_in, d_out));
//! let mut h = [0.0; 4];
//! linear_forward(RowsMut::new(&mut h, n, d_out), x, w, Some(&b), Precision::F32, Par::Seq);
//! assert_eq!(h, [3.0, 0.0, -0.5, 2.5]);
//! let mut y = [0.0; 4];
//! relu_forward(RowsMut::new(&mut y, n, d_out), Rows::new(&h, n, d_out), Par::Seq);
//! assert_eq!(y, [3.0, 0.0, 0.0, 2.5]);
//!
//! let dy = [1.0; 4];
//! let mut dh = [0.0; 4];
//! let dh_grad = InputGrad::new(RowsMut::new(&mut dh, n, d_out), Accum::Replace);
//! let (y, dy) = (Rows::new(&y, n, d_out), Rows::new(&dy, n, d_out));
//! relu_backward(dh_grad, y, dy, Par::Seq);
//! let (mut dw, mut db) = ([0.0; 6], [0.0; 2]);
//! let weights = WeightGrads {
//!     dw: RowsMut::new(&mut dw, d_in, d_out),
//!     db: Some(&mut db),
//! };
//! let dh = Rows::new(&dh, n, d_out);
//! linear_backward(None, weights, x, w, dh, Precision::F32, Par::Seq);
//! assert_eq!(db, [1.0, 1.0]);
//! assert_eq!(dw, [1.0, -1.0, 0.0, 1.0, 2.0, 0.0]);
//! ```

#![deny(missing_docs)]
// Library code returns errors; `unwrap` and `expect` only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// `unsafe` only in `simd` (the call into code compiled for AVX2 + FMA after run-time detection)
// and `amx` (the tile instructions, as inline assembly).
#![deny(unsafe_code)]

mod activation;
mod amx;
mod bf16;
mod concat;
mod cross;
mod elementwise;
mod embedding;
mod gate;
mod gemm;
mod group;
mod l2norm;
mod linear;
mod optim;
mod par;
mod shape;
mod simd;
mod softmax;
#[cfg(test)]
mod testing;
mod view;
pub mod vmath;

pub use activation::{relu_backward, relu_forward, relu_mask};
pub use bf16::{Bf16Engine, Precision, bf16_bits, bf16_round, gemm_bf16};
pub use concat::{concat_cols_backward, concat_cols_forward};
pub use cross::{CrossSaved, cross_backward, cross_forward};
pub use elementwise::{mul_backward, mul_forward};
pub use embedding::{
    EmbedBlock, Lookup, SparseRowGrad, TableScatter, bag_mean_backward, bag_mean_forward,
    embed_backward, embed_forward, gather_backward, gather_forward, lookup_backward,
};
pub use faer::{Accum, MatRef, Par};
pub use gate::{
    mix_backward_expert, mix_backward_gates, mix_forward, row_softmax_backward, row_softmax_forward,
};
pub use gemm::gemm;
pub use group::{segment_mean_backward, segment_mean_forward, softmax_targets_forward};
pub use l2norm::{l2norm_backward, l2norm_forward};
pub use linear::{WeightGrads, linear_backward, linear_forward, linear_relu_forward};
pub use optim::{AdagradParams, AdamParams, adam_update, rowwise_adagrad_update};
pub use simd::{SimdLevel, simd_ceiling};
pub use softmax::{SoftmaxArgs, softmax_xent_backward, softmax_xent_forward};
pub use view::{InputGrad, Rows, RowsMut};
