//! Elementwise products and sums, and column concatenation.

use convcg_kernels::{self as k, Accum, InputGrad, Rows, RowsMut};

use super::Node;
use crate::params::ParamStore;
use crate::tape::{Backward, Tape, Value, ValueId};

/// `a ⊙ b`; the backward reads both operands.
#[derive(Debug)]
pub(in crate::tape) struct Mul {
    a: ValueId,
    b: ValueId,
}

/// `a + b`.
#[derive(Debug)]
pub(in crate::tape) struct Add {
    a: ValueId,
    b: ValueId,
}

/// The parts' columns side by side.
#[derive(Debug)]
pub(in crate::tape) struct Concat {
    parts: Vec<ValueId>,
}

impl Tape {
    /// Elementwise product `a ⊙ b` (the `x0 ⊙ (·)` of low-rank and mixture cross layers).
    ///
    /// # Panics
    /// If `a` and `b` differ in shape.
    #[track_caller]
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (n, d) = self.shape(a);
        assert_eq!(self.shape(b), (n, d), "mul: operands differ in shape");
        let mut out = self.scratch(n * d);
        k::mul_forward(
            RowsMut::new(&mut out, n, d),
            self.view(a),
            self.view(b),
            self.par,
        );
        let needs_grad = self.values[a.0].needs_grad || self.values[b.0].needs_grad;
        self.push(out, n, d, needs_grad, Mul { a, b })
    }

    /// Elementwise sum `a + b` (a residual connection).
    ///
    /// # Panics
    /// If `a` and `b` differ in shape.
    #[track_caller]
    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (n, d) = self.shape(a);
        assert_eq!(self.shape(b), (n, d), "add: operands differ in shape");
        let mut out = self.pools().f32s.copy_of(self.data(a));
        for (o, &y) in out.iter_mut().zip(self.data(b)) {
            *o += y;
        }
        let needs_grad = self.values[a.0].needs_grad || self.values[b.0].needs_grad;
        self.push(out, n, d, needs_grad, Add { a, b })
    }

    /// Column concatenation of values with the same number of rows.
    ///
    /// # Panics
    /// If the parts disagree on their row count, repeat a value, or there are none.
    #[track_caller]
    pub fn concat(&mut self, parts: &[ValueId]) -> ValueId {
        assert!(!parts.is_empty(), "concat of nothing");
        assert!(
            parts
                .iter()
                .enumerate()
                .all(|(i, p)| !parts[..i].contains(p)),
            "concat parts must be distinct values"
        );
        let n = self.values[parts[0].0].rows;
        let blocks: Vec<Rows<'_>> = parts
            .iter()
            .map(|p| {
                let v = &self.values[p.0];
                assert_eq!(v.rows, n, "concat parts disagree on rows");
                v.view()
            })
            .collect();
        let width: usize = blocks.iter().map(|b| b.cols()).sum();
        let mut out = self.scratch(n * width);
        k::concat_cols_forward(RowsMut::new(&mut out, n, width), &blocks);
        let needs_grad = parts.iter().any(|p| self.values[p.0].needs_grad);
        let op = Concat {
            parts: parts.to_vec(),
        };
        self.push(out, n, width, needs_grad, op)
    }
}

impl Node for Mul {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let tape = cx.tape;
        let len = y.rows * y.cols;
        // Each operand's gradient reads the other operand; a temporary per operand keeps
        // `mul(x, x)` correct.
        let mut da = tape.scratch(len);
        let mut db = tape.scratch(len);
        k::mul_backward(
            InputGrad::new(y.shaped_mut(&mut da), Accum::Replace),
            InputGrad::new(y.shaped_mut(&mut db), Accum::Replace),
            tape.view(self.a),
            tape.view(self.b),
            y.shaped(dy),
            tape.par,
        );
        cx.slots.accumulate(self.a, da);
        cx.slots.accumulate(self.b, db);
    }

    fn label(&self, _params: &ParamStore) -> String {
        "mul".to_owned()
    }
}

impl Node for Add {
    fn backward(&self, _y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        for v in [self.a, self.b] {
            if cx.tape.values[v.0].needs_grad {
                let g = cx.tape.pools().f32s.copy_of(dy);
                cx.slots.accumulate(v, g);
            }
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        "add".to_owned()
    }
}

impl Node for Concat {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let tape = cx.tape;
        // Parts that need no gradient still get a buffer: the kernel splits every column.
        let mut bufs: Vec<Vec<f32>> = self
            .parts
            .iter()
            .map(|p| {
                let v = &tape.values[p.0];
                match cx.slots.grads[p.0].take() {
                    Some(g) => g,
                    None => tape.zeros(v.rows * v.cols),
                }
            })
            .collect();
        let mut blocks: Vec<InputGrad<'_>> = bufs
            .iter_mut()
            .zip(&self.parts)
            .map(|(g, p)| InputGrad::new(tape.values[p.0].shaped_mut(g), Accum::Add))
            .collect();
        k::concat_cols_backward(&mut blocks, y.shaped(dy));
        drop(blocks);
        for (p, g) in self.parts.iter().zip(bufs) {
            cx.slots.put(*p, g);
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        format!("concat of {}", self.parts.len())
    }
}
