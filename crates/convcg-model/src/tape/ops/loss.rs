//! Losses: the sampled softmax cross-entropy, the softmax over explicit targets (the
//! advertiser-level loss), and weighted sums of losses.

use convcg_kernels::{self as k, Accum, InputGrad, Rows, RowsMut, SoftmaxArgs};

use super::{Node, Op};
use crate::params::ParamStore;
use crate::tape::pool::{Pools, capacity_bytes};
use crate::tape::{Backward, Tape, Value, ValueId};

/// A softmax cross-entropy of `users` against `cands` (either loss: the backward reads only the
/// logits' gradient, which the forward saves).
#[derive(Debug)]
pub(in crate::tape) struct SoftmaxXent {
    users: ValueId,
    cands: ValueId,
    inv_temp: f32,
    dlogits: Vec<f32>,
}

/// Σ_i c_i · s_i over scalar values.
#[derive(Debug)]
pub(in crate::tape) struct WeightedSum {
    terms: Vec<(ValueId, f32)>,
}

impl Tape {
    /// Sampled softmax cross-entropy of `users` `[b, d]` against `cands` `[c, d]`, candidate `i`
    /// being row `i`'s positive; a scalar (the weighted mean loss).
    ///
    /// # Panics
    /// If the widths differ, `c < b`, or the per-candidate/per-row slices have the wrong length.
    #[track_caller]
    pub fn softmax_xent(
        &mut self,
        users: ValueId,
        cands: ValueId,
        args: SoftmaxArgs<'_>,
    ) -> ValueId {
        let (b, d) = self.shape(users);
        let (c, dc) = self.shape(cands);
        assert_eq!(d, dc, "softmax: users and candidates differ in width");
        assert!(c >= b, "softmax: fewer candidates than rows");
        let mut dlogits = self.scratch(b * c);
        let out = RowsMut::new(&mut dlogits, b, c);
        let (u, c) = (self.view(users), self.view(cands));
        let loss = k::softmax_xent_forward(out, u, c, args, self.precision, self.par);
        let op = SoftmaxXent {
            users,
            cands,
            inv_temp: args.inv_temp,
            dlogits,
        };
        self.push_scalar(loss, op)
    }

    /// Softmax cross-entropy of `users` `[b, d]` against every row of `cands` `[c, d]`, row `i`'s
    /// right candidate being `targets[i]` (shared targets allowed, no masking, no logQ); a scalar
    /// (the weighted mean loss). The advertiser-level loss.
    ///
    /// # Panics
    /// If the widths differ, a target is out of range, or `targets`/`weights` are not `b` long.
    #[track_caller]
    pub fn softmax_targets(
        &mut self,
        users: ValueId,
        cands: ValueId,
        inv_temp: f32,
        targets: &[u32],
        weights: Option<&[f32]>,
    ) -> ValueId {
        let (b, d) = self.shape(users);
        let (c, dc) = self.shape(cands);
        assert_eq!(
            d, dc,
            "softmax_targets: users and candidates differ in width"
        );
        let mut dlogits = self.scratch(b * c);
        let loss = k::softmax_targets_forward(
            RowsMut::new(&mut dlogits, b, c),
            self.view(users),
            self.view(cands),
            targets,
            weights,
            inv_temp,
            self.par,
        );
        let op = SoftmaxXent {
            users,
            cands,
            inv_temp,
            dlogits,
        };
        self.push_scalar(loss, op)
    }

    /// Σ coefficient · scalar, for combining losses.
    ///
    /// # Panics
    /// If a term is not a scalar.
    #[track_caller]
    pub fn weighted_sum(&mut self, terms: &[(ValueId, f32)]) -> ValueId {
        let total = terms.iter().map(|&(v, c)| c * self.scalar(v)).sum();
        let op = WeightedSum {
            terms: terms.to_vec(),
        };
        self.push_scalar(total, op)
    }

    /// Records a node whose output is the scalar `value`, made by `op`.
    fn push_scalar(&mut self, value: f32, op: impl Into<Op>) -> ValueId {
        let mut out = self.zeros(1);
        out[0] = value;
        self.push(out, 1, 1, true, op)
    }
}

impl Node for SoftmaxXent {
    fn backward(&self, _y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let tape = cx.tape;
        let (b, dim) = tape.shape(self.users);
        let c = tape.values[self.cands.0].rows;
        let scale = dy[0];
        let mut scaled = Vec::new();
        let dl = if scale == 1.0 {
            self.dlogits.as_slice()
        } else {
            scaled = tape.scratch(self.dlogits.len());
            for (s, g) in scaled.iter_mut().zip(&self.dlogits) {
                *s = g * scale;
            }
            &scaled
        };
        let mut du = tape.scratch(b * dim);
        let mut dc = tape.scratch(c * dim);
        k::softmax_xent_backward(
            InputGrad::new(RowsMut::new(&mut du, b, dim), Accum::Replace),
            InputGrad::new(RowsMut::new(&mut dc, c, dim), Accum::Replace),
            tape.view(self.users),
            tape.view(self.cands),
            Rows::new(dl, b, c),
            self.inv_temp,
            tape.precision,
            tape.par,
        );
        cx.slots.accumulate(self.users, du);
        cx.slots.accumulate(self.cands, dc);
        tape.recycle(scaled);
    }

    fn label(&self, _params: &ParamStore) -> String {
        "softmax_xent".to_owned()
    }

    fn saved_bytes(&self) -> usize {
        capacity_bytes(&self.dlogits)
    }

    fn recycle(self, pools: &mut Pools) {
        pools.f32s.give(self.dlogits);
    }
}

impl Node for WeightedSum {
    fn backward(&self, _y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        for &(v, c) in &self.terms {
            if let Some(slot) = cx.slots.zeroed(v) {
                slot[0] += c * dy[0];
            }
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        format!("weighted_sum of {}", self.terms.len())
    }
}
