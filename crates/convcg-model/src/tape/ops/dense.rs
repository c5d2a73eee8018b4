//! Affine maps (of one input, or of several read as their concatenation), alone or fused with
//! their ReLU, and the ReLU.

use convcg_kernels::{self as k, Accum, Rows, RowsMut, WeightGrads};

use super::{Node, dense_pair, weight};
use crate::params::{ParamId, ParamStore};
use crate::tape::{Backward, Tape, Value, ValueId};

/// `concat(xs) · w + b`: `w`'s rows split among the inputs in order; with `relu`, the output is
/// `max(·, 0)` of that.
#[derive(Debug)]
pub(in crate::tape) struct Linear {
    xs: Vec<ValueId>,
    w: ParamId,
    b: Option<ParamId>,
    relu: bool,
}

/// `max(x, 0)`; the backward reads the output.
#[derive(Debug)]
pub(in crate::tape) struct Relu {
    x: ValueId,
}

impl Tape {
    /// `x · w + b` with `w` of shape `[cols(x), out]`.
    ///
    /// # Panics
    /// If `x`'s width is not `w`'s row count.
    #[track_caller]
    pub fn linear(
        &mut self,
        params: &ParamStore,
        x: ValueId,
        w: ParamId,
        b: Option<ParamId>,
    ) -> ValueId {
        self.linear_cat(params, &[x], w, b)
    }

    /// `concat(xs) · w + b` without the concatenation: input `i` meets its own band of `w`'s
    /// rows (rows `c_0 + … + c_{i-1}` onwards, `c_j` the inputs' widths) and each product adds
    /// into the output. The same value as `linear(concat(xs))`, without writing the
    /// concatenated matrix in the forward or splitting its gradient in the backward.
    ///
    /// # Panics
    /// If `xs` is empty, the inputs disagree on rows, or their widths do not sum to `w`'s row
    /// count.
    #[track_caller]
    pub fn linear_cat(
        &mut self,
        params: &ParamStore,
        xs: &[ValueId],
        w: ParamId,
        b: Option<ParamId>,
    ) -> ValueId {
        assert!(!xs.is_empty(), "linear of nothing");
        let n = self.values[xs[0].0].rows;
        let wp = params.dense(w);
        let mut d_in = 0;
        for x in xs {
            let v = &self.values[x.0];
            assert_eq!(v.rows, n, "linear {}: inputs disagree on rows", wp.name);
            d_in += v.cols;
        }
        assert_eq!(wp.rows, d_in, "linear {}: input width mismatch", wp.name);
        let d_out = wp.cols;
        let mut y = self.scratch(n * d_out);
        let bias = b.map(|b| params.dense(b).value.as_slice());
        let mut row = 0;
        for (i, x) in xs.iter().enumerate() {
            let x = self.view(*x);
            let width = x.cols();
            let band = Rows::new(&wp.value[row * d_out..(row + width) * d_out], width, d_out);
            let out = RowsMut::new(&mut y, n, d_out);
            if i == 0 {
                k::linear_forward(out, x, band, bias, self.precision, self.par);
            } else {
                let (x, band) = (x.mat(), band.mat());
                self.precision.gemm(out, Accum::Add, x, band, 1.0, self.par);
            }
            row += width;
        }
        let op = Linear {
            xs: xs.to_vec(),
            w,
            b,
            relu: false,
        };
        self.push(y, n, d_out, true, op)
    }

    /// `max(x · w + b, 0)`: [`Tape::linear`] and [`Tape::relu`] as one node. The product and
    /// the ReLU run block by block while the output is in cache, and the backward zeroes the
    /// gradient where the unit is off in place, so no pre-activation is stored.
    ///
    /// # Panics
    /// If `x`'s width is not `w`'s row count.
    #[track_caller]
    pub fn linear_relu(
        &mut self,
        params: &ParamStore,
        x: ValueId,
        w: ParamId,
        b: Option<ParamId>,
    ) -> ValueId {
        let (n, d_in) = self.shape(x);
        let wp = params.dense(w);
        assert_eq!(wp.rows, d_in, "linear {}: input width mismatch", wp.name);
        let d_out = wp.cols;
        let mut h = self.scratch(n * d_out);
        let bias = b.map(|b| params.dense(b).value.as_slice());
        let out = RowsMut::new(&mut h, n, d_out);
        let precision = self.precision;
        k::linear_relu_forward(out, self.view(x), weight(wp), bias, precision, self.par);
        let op = Linear {
            xs: vec![x],
            w,
            b,
            relu: true,
        };
        self.push(h, n, d_out, true, op)
    }

    /// Elementwise max(x, 0).
    pub fn relu(&mut self, x: ValueId) -> ValueId {
        let (n, d) = self.shape(x);
        let mut y = self.scratch(n * d);
        k::relu_forward(RowsMut::new(&mut y, n, d), self.view(x), self.par);
        let needs_grad = self.values[x.0].needs_grad;
        self.push(y, n, d, needs_grad, Relu { x })
    }
}

impl Node for Linear {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let (tape, par, precision) = (cx.tape, cx.tape.par, cx.tape.precision);
        let d = y.cols;
        if self.relu {
            // The gradient of the pre-activation, where the unit is on.
            k::relu_mask(y.shaped_mut(dy), y.view(), par);
        }
        let dy = y.shaped(dy);
        let (dw, mut db) = dense_pair(cx.grads, self.w, self.b);
        let w = &cx.params.dense(self.w).value;
        let mut row = 0;
        for x in &self.xs {
            let xv = tape.view(*x);
            let width = xv.cols();
            let band = row * d..(row + width) * d;
            let weights = WeightGrads {
                dw: RowsMut::new(&mut dw[band.clone()], width, d),
                db: db.take(),
            };
            let w_band = Rows::new(&w[band], width, d);
            k::linear_backward(cx.slots.out(*x), weights, xv, w_band, dy, precision, par);
            row += width;
        }
    }

    fn label(&self, params: &ParamStore) -> String {
        let w = &params.dense(self.w).name;
        if self.xs.len() > 1 {
            format!("linear_cat {w}")
        } else if self.relu {
            format!("linear_relu {w}")
        } else {
            format!("linear {w}")
        }
    }
}

impl Node for Relu {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        let par = cx.tape.par;
        if let Some(dx) = cx.slots.out(self.x) {
            k::relu_backward(dx, y.view(), y.shaped(dy), par);
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        "relu".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use convcg_kernels::Par;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::params::TableId;
    use crate::tape::testing::{IDS, close, step};

    /// `linear_relu(x)` against `relu(linear(x))` through a loss: the same loss, and the same
    /// dense and table gradients, under one thread and two.
    #[test]
    fn linear_relu_is_relu_of_linear() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut params = ParamStore::new();
        let t = params.add_table("t", 9, 5, &mut rng);
        let w = params.add_dense("w", 5, 6, 0.5, &mut rng);
        let b = params.add_dense("b", 1, 6, 0.5, &mut rng);
        for par in [Par::Seq, Par::rayon(2)] {
            let fused = step(&params, par, |tape| {
                let x = tape.gather(&params, t, &IDS);
                tape.linear_relu(&params, x, w, Some(b))
            });
            let reference = step(&params, par, |tape| {
                let x = tape.gather(&params, t, &IDS);
                let y = tape.linear(&params, x, w, Some(b));
                tape.relu(y)
            });
            let off = fused.output.iter().filter(|&&v| v == 0.0).count();
            assert!(
                off > 0 && off < 30,
                "some units on and some off: {off} of 30 off"
            );
            close(&fused.output, &reference.output, "output");
            fused.assert_matches(&reference);
        }
    }

    /// `linear_cat(xs)` against `linear(concat(xs))` through a loss: the same loss, the same
    /// dense gradients and the same table gradients (which reach the inputs through the bands of
    /// `w`), under one thread and two.
    #[test]
    fn linear_cat_is_linear_of_the_concatenation() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut params = ParamStore::new();
        let widths = [3, 5, 4];
        let tables: Vec<TableId> = widths
            .iter()
            .enumerate()
            .map(|(i, &dim)| params.add_table(format!("t{i}"), 9, dim, &mut rng))
            .collect();
        let w = params.add_dense("w", 12, 6, 0.5, &mut rng);
        let b = params.add_dense("b", 1, 6, 0.5, &mut rng);
        let gathers = |tape: &mut Tape| -> Vec<ValueId> {
            tables
                .iter()
                .map(|&t| tape.gather(&params, t, &IDS))
                .collect()
        };
        for par in [Par::Seq, Par::rayon(2)] {
            let cat = step(&params, par, |tape| {
                let xs = gathers(tape);
                tape.linear_cat(&params, &xs, w, Some(b))
            });
            let reference = step(&params, par, |tape| {
                let xs = gathers(tape);
                let x = tape.concat(&xs);
                tape.linear(&params, x, w, Some(b))
            });
            cat.assert_matches(&reference);
        }
    }

    /// Widths that do not add up to `w`'s rows are refused.
    #[test]
    #[should_panic(expected = "input width mismatch")]
    fn linear_cat_checks_the_widths() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut params = ParamStore::new();
        let w = params.add_dense("w", 5, 2, 0.5, &mut rng);
        let mut tape = Tape::new(Par::Seq);
        let a = tape.input(&[0.0; 6], 2, 3);
        let b = tape.input(&[0.0; 4], 2, 2);
        let c = tape.input(&[0.0; 2], 2, 1);
        tape.linear_cat(&params, &[a, b, c], w, None);
    }
}
