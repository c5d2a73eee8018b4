//! The DCN v2 full-rank cross layer.

use convcg_kernels::{self as k, CrossSaved, RowsMut, WeightGrads};

use super::{Node, dense_pair, weight};
use crate::params::{ParamId, ParamStore};
use crate::tape::pool::{Pools, capacity_bytes};
use crate::tape::{Backward, Tape, Value, ValueId};

/// `x0 ⊙ (xl · w + b) + xl`, saving the pre-activation `z = xl · w + b`.
#[derive(Debug)]
pub(in crate::tape) struct Cross {
    x0: ValueId,
    xl: ValueId,
    w: ParamId,
    b: ParamId,
    z: Vec<f32>,
}

impl Tape {
    /// DCN v2 full-rank cross layer `x0 ⊙ (xl · w + b) + xl`.
    ///
    /// # Panics
    /// If `x0` and `xl` differ in shape or `w` is not `[d, d]`.
    #[track_caller]
    pub fn cross(
        &mut self,
        params: &ParamStore,
        x0: ValueId,
        xl: ValueId,
        w: ParamId,
        b: ParamId,
    ) -> ValueId {
        let (n, d) = self.shape(x0);
        assert_eq!(self.shape(xl), (n, d), "cross: x0 and xl differ in shape");
        let wp = params.dense(w);
        assert_eq!(
            (wp.rows, wp.cols),
            (d, d),
            "cross {}: weight is not [d, d]",
            wp.name
        );
        let mut z = self.scratch(n * d);
        let mut out = self.scratch(n * d);
        k::cross_forward(
            RowsMut::new(&mut out, n, d),
            RowsMut::new(&mut z, n, d),
            self.view(x0),
            self.view(xl),
            weight(wp),
            &params.dense(b).value,
            self.precision,
            self.par,
        );
        self.push(out, n, d, true, Cross { x0, xl, w, b, z })
    }
}

impl Node for Cross {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let tape = cx.tape;
        let (n, d) = (y.rows, y.cols);
        let (x0, xl) = (self.x0, self.xl);
        let (dw, db) = dense_pair(cx.grads, self.w, Some(self.b));
        let weights = WeightGrads {
            dw: RowsMut::new(dw, d, d),
            db,
        };
        let mut dz = tape.scratch(n * d);
        // The kernel writes (first contribution) or adds into the inputs' gradient slots; an
        // input that needs none gets a scratch buffer, dropped afterwards.
        let (mut dx0, dx0_accum) = cx.slots.take(x0);
        // The first layer reads x0 twice (xl is x0): one slot gets both gradients.
        let mut dxl = (xl != x0).then(|| cx.slots.take(xl));
        let saved = CrossSaved {
            x0: tape.view(x0),
            xl: tape.view(xl),
            w: weight(cx.params.dense(self.w)),
            z: y.shaped(&self.z),
        };
        k::cross_backward(
            tape.values[x0.0].grad(&mut dx0, dx0_accum),
            dxl.as_mut()
                .map(|(g, accum)| tape.values[xl.0].grad(g, *accum)),
            weights,
            RowsMut::new(&mut dz, n, d),
            saved,
            y.shaped(dy),
            tape.precision,
            tape.par,
        );
        if let Some((g, _)) = dxl {
            cx.slots.put(xl, g);
        }
        cx.slots.put(x0, dx0);
        tape.recycle(dz);
    }

    fn label(&self, params: &ParamStore) -> String {
        format!("cross {}", params.dense(self.w).name)
    }

    fn saved_bytes(&self) -> usize {
        capacity_bytes(&self.z)
    }

    fn recycle(self, pools: &mut Pools) {
        pools.f32s.give(self.z);
    }
}
