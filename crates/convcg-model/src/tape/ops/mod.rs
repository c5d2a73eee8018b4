//! The ops a [`Tape`](super::Tape) records, one module per family. Each op is a struct holding
//! exactly the state its backward reads (its inputs' ids, the parameters it used, saved
//! buffers), recorded by a `Tape` method in the same module, next to its [`Node`] impl.

mod cross;
mod dense;
mod elementwise;
mod embed;
mod gate;
mod gather;
mod group;
mod loss;
mod norm;

use convcg_kernels::Rows;

use super::pool::Pools;
use super::{Backward, Value};
use crate::params::{DenseParam, Grads, ParamId, ParamStore};

pub use embed::EmbedInput;

/// What the tape needs of a recorded op.
pub(super) trait Node {
    /// Accumulates the op's contributions to its inputs' gradients (`cx.slots`) and its
    /// parameters' (`cx.grads`) from `dy`, the gradient of its output `y`. It may overwrite
    /// `dy`, which is recycled afterwards.
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>);

    /// What the op is, for [`Tape::profile`](super::Tape::profile): its name, and the weight
    /// or table it reads where it has one.
    fn label(&self, params: &ParamStore) -> String;

    /// Bytes of the buffers the op saved for its backward.
    fn saved_bytes(&self) -> usize {
        0
    }

    /// Gives the buffers the op saved back to `pools`.
    fn recycle(self, _pools: &mut Pools)
    where
        Self: Sized,
    {
    }
}

/// Declares [`Op`], one variant per op struct, with the one match that reaches each op's
/// [`Node`] impl, and `From` each op struct, so that a new op is one name in the list.
macro_rules! ops {
    ($($op:ident),* $(,)?) => {
        /// A recorded op.
        #[derive(Debug)]
        pub(super) enum Op {
            $($op($op),)*
        }

        impl Op {
            pub(super) fn node(&self) -> &dyn Node {
                match self {
                    $(Self::$op(op) => op,)*
                }
            }

            pub(super) fn recycle(self, pools: &mut Pools) {
                match self {
                    $(Self::$op(op) => op.recycle(pools),)*
                }
            }
        }

        $(
            impl From<$op> for Op {
                fn from(op: $op) -> Self {
                    Self::$op(op)
                }
            }
        )*
    };
}

use cross::Cross;
use dense::{Linear, Relu};
use elementwise::{Add, Concat, Mul};
use embed::{Embed, Input};
use gate::{Mix, RowSoftmax};
use gather::GatherRows;
use group::SegmentMean;
use loss::{SoftmaxXent, WeightedSum};
use norm::L2Norm;

ops!(
    Input,
    Embed,
    Concat,
    Linear,
    Relu,
    Cross,
    L2Norm,
    SoftmaxXent,
    Mul,
    Add,
    RowSoftmax,
    Mix,
    SegmentMean,
    WeightedSum,
    GatherRows,
);

/// A dense parameter as a matrix.
fn weight(p: &DenseParam) -> Rows<'_> {
    Rows::new(&p.value, p.rows, p.cols)
}

/// Mutable gradients of a weight and its optional bias at once.
fn dense_pair(
    grads: &mut Grads,
    w: ParamId,
    b: Option<ParamId>,
) -> (&mut [f32], Option<&mut [f32]>) {
    match b {
        None => (grads.dense[w.0].as_mut_slice(), None),
        Some(b) => {
            assert_ne!(w.0, b.0, "a weight cannot be its own bias");
            let (lo, hi) = grads.dense.split_at_mut(w.0.max(b.0));
            let (first, second) = (&mut lo[w.0.min(b.0)], &mut hi[0]);
            if w.0 < b.0 {
                (first.as_mut_slice(), Some(second.as_mut_slice()))
            } else {
                (second.as_mut_slice(), Some(first.as_mut_slice()))
            }
        }
    }
}
