//! The gate of a mixture of experts (a row-wise softmax) and the gated sum of the experts.

use convcg_kernels::{self as k, Accum, InputGrad, Rows, RowsMut};

use super::Node;
use crate::params::ParamStore;
use crate::tape::{Backward, Tape, Value, ValueId};

/// Softmax of each row; the backward reads the output.
#[derive(Debug)]
pub(in crate::tape) struct RowSoftmax {
    x: ValueId,
}

/// `Σ_i gates[:, i] ⊙ experts[i]`; the backward reads the gates and the experts.
#[derive(Debug)]
pub(in crate::tape) struct Mix {
    gates: ValueId,
    experts: Vec<ValueId>,
}

impl Tape {
    /// Row-wise softmax (the gate of a mixture of experts).
    pub fn row_softmax(&mut self, x: ValueId) -> ValueId {
        let (n, e) = self.shape(x);
        let mut y = self.scratch(n * e);
        k::row_softmax_forward(RowsMut::new(&mut y, n, e), self.view(x), self.par);
        let needs_grad = self.values[x.0].needs_grad;
        self.push(y, n, e, needs_grad, RowSoftmax { x })
    }

    /// The gated sum `Σ_i gates[:, i] ⊙ experts[i]`, `gates` being `[n, experts.len()]` and
    /// every expert `[n, d]`.
    ///
    /// # Panics
    /// If there is no expert, or the shapes disagree.
    #[track_caller]
    pub fn mix(&mut self, gates: ValueId, experts: &[ValueId]) -> ValueId {
        assert!(!experts.is_empty(), "mix: no expert");
        let (n, d) = self.shape(experts[0]);
        assert_eq!(
            self.shape(gates),
            (n, experts.len()),
            "mix: gates are not [n, experts]"
        );
        assert!(
            experts.iter().all(|&x| self.shape(x) == (n, d)),
            "mix: experts differ in shape"
        );
        let mut out = self.scratch(n * d);
        let views: Vec<Rows<'_>> = experts.iter().map(|&x| self.view(x)).collect();
        k::mix_forward(
            RowsMut::new(&mut out, n, d),
            self.view(gates),
            &views,
            self.par,
        );
        let needs_grad = std::iter::once(gates)
            .chain(experts.iter().copied())
            .any(|v| self.values[v.0].needs_grad);
        let op = Mix {
            gates,
            experts: experts.to_vec(),
        };
        self.push(out, n, d, needs_grad, op)
    }
}

impl Node for RowSoftmax {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let par = cx.tape.par;
        if let Some(dx) = cx.slots.out(self.x) {
            k::row_softmax_backward(dx, y.view(), y.shaped(dy), par);
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        "row_softmax".to_owned()
    }
}

impl Node for Mix {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let (tape, par) = (cx.tape, cx.tape.par);
        let n = y.rows;
        let e = self.experts.len();
        let dy = y.shaped(dy);
        if tape.values[self.gates.0].needs_grad {
            let views: Vec<Rows<'_>> = self.experts.iter().map(|&x| tape.view(x)).collect();
            let mut dg = tape.scratch(n * e);
            let dgates = InputGrad::new(RowsMut::new(&mut dg, n, e), Accum::Replace);
            k::mix_backward_gates(dgates, &views, dy, par);
            cx.slots.accumulate(self.gates, dg);
        }
        for (i, &x) in self.experts.iter().enumerate() {
            if let Some(dx) = cx.slots.out(x) {
                k::mix_backward_expert(dx, tape.view(self.gates), dy, i, par);
            }
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        format!("mix of {}", self.experts.len())
    }
}
