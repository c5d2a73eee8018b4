//! Row-wise L2 normalisation.

use convcg_kernels::{self as k, RowsMut};

use super::Node;
use crate::params::ParamStore;
use crate::tape::pool::{Pools, capacity_bytes};
use crate::tape::{Backward, Tape, Value, ValueId};

/// `x / ‖x‖` row by row, saving the row norms.
#[derive(Debug)]
pub(in crate::tape) struct L2Norm {
    x: ValueId,
    norms: Vec<f32>,
}

impl Tape {
    /// Row-wise L2 normalisation.
    pub fn l2_normalize(&mut self, x: ValueId) -> ValueId {
        let (n, d) = self.shape(x);
        let mut y = self.scratch(n * d);
        let mut norms = self.scratch(n);
        k::l2norm_forward(
            RowsMut::new(&mut y, n, d),
            &mut norms,
            self.view(x),
            1e-12,
            self.par,
        );
        let needs_grad = self.values[x.0].needs_grad;
        self.push(y, n, d, needs_grad, L2Norm { x, norms })
    }
}

impl Node for L2Norm {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let par = cx.tape.par;
        if let Some(dx) = cx.slots.out(self.x) {
            k::l2norm_backward(dx, y.view(), &self.norms, y.shaped(dy), par);
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        "l2_normalize".to_owned()
    }

    fn saved_bytes(&self) -> usize {
        capacity_bytes(&self.norms)
    }

    fn recycle(self, pools: &mut Pools) {
        pools.f32s.give(self.norms);
    }
}
