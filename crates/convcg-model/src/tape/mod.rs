//! Autograd-lite: a tape of the fixed set of ops the towers and losses use.
//!
//! Every op appends one node holding its output value and exactly the state its backward needs
//! (ids for a gather, `z` for a cross layer, row norms for the L2 normalisation, the logits'
//! gradient for the softmax loss). [`Tape::backward`] walks the nodes in reverse, reading each
//! node's output gradient and accumulating into its inputs' gradients and the parameters'.
//!
//! This module is the tape's core: values, the reverse walk and the gradient slots it fills.
//! The ops live in [`ops`], one module per family, each with the state it saves, its forward
//! (the `Tape` method that records it) and its backward side by side; the tape drives them
//! through the [`Node`](ops::Node) trait.
//!
//! A tape can be reused across steps: [`Tape::reset`] keeps every buffer it allocated (values,
//! saved state, gradients, scratch) in a pool ([`pool`]), and later ops take from that pool, so
//! a training loop whose steps have the same shapes allocates no data buffer after its first
//! step.

mod ops;
mod pool;
mod profile;
#[cfg(test)]
mod testing;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use convcg_kernels::{Accum, InputGrad, Par, Precision, Rows, RowsMut};

use crate::params::{Grads, ParamStore};
use ops::Op;
use pool::{Pools, capacity_bytes};
use profile::Clock;

pub use ops::EmbedInput;
pub use profile::NodeTiming;

/// Handle of a value on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueId(usize);

/// A `[rows, cols]` row-major value.
#[derive(Debug)]
struct Value {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    /// Whether any parameter influences it, so whether its gradient is worth computing.
    needs_grad: bool,
    /// The leading columns whose gradient anything reads: `cols`, except for an
    /// [`Tape::embed`] that ends in constant inputs. Kernels may leave the gradient of the
    /// columns past it unwritten, so its contents there are unspecified.
    grad_cols: usize,
}

impl Value {
    /// The value as a matrix.
    fn view(&self) -> Rows<'_> {
        self.shaped(&self.data)
    }

    /// `data` (the value's gradient, say) as a matrix of the value's shape.
    fn shaped<'a>(&self, data: &'a [f32]) -> Rows<'a> {
        Rows::new(data, self.rows, self.cols)
    }

    /// `data` as a mutable matrix of the value's shape.
    fn shaped_mut<'a>(&self, data: &'a mut [f32]) -> RowsMut<'a> {
        RowsMut::new(data, self.rows, self.cols)
    }

    /// `g` as the value's gradient, receiving a kernel's contribution per `accum`, of which
    /// only the columns anything reads are wanted.
    fn grad<'a>(&self, g: &'a mut [f32], accum: Accum) -> InputGrad<'a> {
        InputGrad::new(self.shaped_mut(g), accum).leading(self.grad_cols)
    }
}

/// The tape: values in creation order, each with the op that made it.
///
/// # Reuse
/// A tape may record one step, be [`reset`](Tape::reset), and record the next: reset forgets
/// every value (their [`ValueId`]s become invalid) but keeps their buffers for the next step's
/// ops. Results are the same as with a fresh tape: a reused buffer is zeroed exactly as a fresh
/// one would be, except where the kernel that fills it overwrites every element (the forward
/// outputs, and the backward temporaries written with `Accum::Replace`), which skips the clear.
#[derive(Debug)]
pub struct Tape {
    values: Vec<Value>,
    ops: Vec<Op>,
    par: Par,
    /// The precision of the products of every op (linear layers, cross layers, the loss).
    precision: Precision,
    /// Behind a lock because [`Tape::backward`] borrows the tape shared.
    pools: Mutex<Pools>,
    /// Per-node wall times, when profiling ([`Tape::set_profiling`]).
    clock: Option<Clock>,
}

impl Tape {
    /// An empty tape whose kernels run with `par`.
    pub fn new(par: Par) -> Self {
        Self {
            values: Vec::new(),
            ops: Vec::new(),
            par,
            precision: Precision::F32,
            pools: Mutex::new(Pools::default()),
            clock: None,
        }
    }

    /// Sets the precision of the products that ops record from now on, forward and backward
    /// ([`Precision`]: f32 by default; with bf16, the products its documentation names take
    /// bfloat16 operands). Kept across resets.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The precision of the products ops record ([`Tape::set_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Turns per-node timing on or off. While on, every recorded op and every node's backward is
    /// timed ([`Tape::profile`]); off (the default) costs nothing. Timing reads the clock once
    /// per recorded node and twice per node's backward.
    pub fn set_profiling(&mut self, on: bool) {
        self.clock = on.then(Clock::new);
    }

    /// The wall time of each node of the step recorded since the last reset, forward and
    /// backward, labelled with `params`' names; empty unless profiling is on.
    pub fn profile(&self, params: &ParamStore) -> Vec<NodeTiming> {
        let Some(clock) = &self.clock else {
            return Vec::new();
        };
        clock.timings(
            self.ops
                .iter()
                .zip(&self.values)
                .map(|(op, v)| (op.node().label(params), (v.rows, v.cols))),
        )
    }

    /// Forgets every recorded value, keeping their buffers for reuse by later ops, and runs
    /// later kernels with `par`. Every [`ValueId`] issued so far becomes invalid.
    pub fn reset(&mut self, par: Par) {
        self.par = par;
        if self.clock.is_some() {
            self.clock = Some(Clock::new());
        }
        let pools = self.pools.get_mut().unwrap_or_else(PoisonError::into_inner);
        for v in self.values.drain(..) {
            pools.f32s.give(v.data);
        }
        for op in self.ops.drain(..) {
            op.recycle(pools);
        }
    }

    /// Bytes of data the tape holds: recorded values, the state ops saved for the backward pass
    /// (ids, offsets, cross-layer pre-activations, norms, softmax logit gradients) and the spare
    /// buffers of its pool. Read after a step (before the next reset), it is the memory one
    /// step's activations take.
    pub fn held_bytes(&self) -> usize {
        let values: usize = self.values.iter().map(|v| capacity_bytes(&v.data)).sum();
        let saved: usize = self.ops.iter().map(|op| op.node().saved_bytes()).sum();
        values + saved + self.pools().spare_bytes()
    }

    fn pools(&self) -> MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A zeroed `f32` buffer of `len` elements, reused where possible.
    fn zeros(&self, len: usize) -> Vec<f32> {
        self.pools().f32s.take(len)
    }

    /// An `f32` buffer of `len` elements with stale contents, reused where possible, for a
    /// kernel output that is overwritten entirely (`Accum::Replace`, or a forward kernel whose
    /// contract says so).
    fn scratch(&self, len: usize) -> Vec<f32> {
        self.pools().f32s.take_stale(len)
    }

    /// Returns a buffer to the pool.
    fn recycle(&self, v: Vec<f32>) {
        self.pools().f32s.give(v);
    }

    /// Records a node: its output `data` of shape `[rows, cols]` and the op that made it.
    fn push(
        &mut self,
        data: Vec<f32>,
        rows: usize,
        cols: usize,
        needs_grad: bool,
        op: impl Into<Op>,
    ) -> ValueId {
        debug_assert_eq!(data.len(), rows * cols);
        if let Some(clock) = &mut self.clock {
            clock.lap();
        }
        self.values.push(Value {
            data,
            rows,
            cols,
            needs_grad,
            grad_cols: cols,
        });
        self.ops.push(op.into());
        ValueId(self.values.len() - 1)
    }

    /// A value's data, row-major.
    pub fn data(&self, v: ValueId) -> &[f32] {
        &self.values[v.0].data
    }

    /// A value as a matrix.
    fn view(&self, v: ValueId) -> Rows<'_> {
        self.values[v.0].view()
    }

    /// A value's shape `(rows, cols)`.
    pub fn shape(&self, v: ValueId) -> (usize, usize) {
        let val = &self.values[v.0];
        (val.rows, val.cols)
    }

    /// The scalar held by a `[1, 1]` value.
    ///
    /// # Panics
    /// If the value is not a scalar.
    #[track_caller]
    pub fn scalar(&self, v: ValueId) -> f32 {
        let val = &self.values[v.0];
        assert_eq!((val.rows, val.cols), (1, 1), "value is not a scalar");
        val.data[0]
    }

    /// Backpropagates from the scalar `loss`, accumulating into `grads`.
    ///
    /// # Panics
    /// If `loss` is not a scalar.
    #[track_caller]
    pub fn backward(&self, loss: ValueId, params: &ParamStore, grads: &mut Grads) {
        assert_eq!(self.shape(loss), (1, 1), "backward from a non-scalar");
        let mut cx = Backward {
            tape: self,
            params,
            grads,
            slots: Slots {
                tape: self,
                grads: (0..self.values.len()).map(|_| None).collect(),
            },
        };
        let mut seed = self.zeros(1);
        seed[0] = 1.0;
        cx.slots.grads[loss.0] = Some(seed);
        for node in (0..=loss.0).rev() {
            let Some(mut dy) = cx.slots.grads[node].take() else {
                continue;
            };
            let start = self.clock.is_some().then(Instant::now);
            self.ops[node]
                .node()
                .backward(&self.values[node], &mut dy, &mut cx);
            if let (Some(clock), Some(start)) = (&self.clock, start) {
                clock.set_backward(node, self.values.len(), start.elapsed());
            }
            self.recycle(dy);
        }
        let mut pools = self.pools();
        for g in cx.slots.grads.into_iter().flatten() {
            pools.f32s.give(g);
        }
    }
}

/// A backward pass in progress: what a node's backward reads besides its own saved state, and
/// where it accumulates.
struct Backward<'a> {
    tape: &'a Tape,
    params: &'a ParamStore,
    /// The parameters' gradients.
    grads: &'a mut Grads,
    /// The values' gradients.
    slots: Slots<'a>,
}

/// The gradient of each value of a tape during a backward pass, allocated (from the tape's
/// pool) by the first contribution to it.
struct Slots<'a> {
    tape: &'a Tape,
    grads: Vec<Option<Vec<f32>>>,
}

impl Slots<'_> {
    /// The gradient buffer of `v`, zero-initialised on first use; `None` if `v` needs none.
    fn zeroed(&mut self, v: ValueId) -> Option<&mut Vec<f32>> {
        let val = &self.tape.values[v.0];
        if !val.needs_grad {
            return None;
        }
        Some(self.grads[v.0].get_or_insert_with(|| self.tape.zeros(val.rows * val.cols)))
    }

    /// Adds a temporary gradient `g` of `v` into `v`'s gradient slot (if `v` needs one) and
    /// returns the temporary to the pool.
    /// The first contribution becomes the slot itself, without a pass over it.
    fn accumulate(&mut self, v: ValueId, g: Vec<f32>) {
        if !self.tape.values[v.0].needs_grad {
            self.tape.recycle(g);
            return;
        }
        match &mut self.grads[v.0] {
            Some(slot) => {
                for (s, gi) in slot.iter_mut().zip(&g) {
                    *s += gi;
                }
                self.tape.recycle(g);
            }
            empty => *empty = Some(g),
        }
    }

    /// Where a kernel puts its contribution to `v`'s gradient, and how: the existing slot with
    /// `Accum::Add`, or, for the first contribution, a fresh slot with `Accum::Replace` (which
    /// saves zeroing it); only the columns anything reads are wanted. `None` if `v` needs no
    /// gradient.
    fn out(&mut self, v: ValueId) -> Option<InputGrad<'_>> {
        let val = &self.tape.values[v.0];
        if !val.needs_grad {
            return None;
        }
        let (slot, accum) = match &mut self.grads[v.0] {
            Some(slot) => (slot, Accum::Add),
            empty => (
                empty.insert(self.tape.scratch(val.rows * val.cols)),
                Accum::Replace,
            ),
        };
        Some(val.grad(slot, accum))
    }

    /// `v`'s gradient buffer taken out of its slot, with how a kernel must put its contribution
    /// there: added to the slot's contents, or written into a fresh buffer (which saves zeroing
    /// it) when this is the first contribution or `v` needs no gradient. Give it back with
    /// [`Slots::put`].
    fn take(&mut self, v: ValueId) -> (Vec<f32>, Accum) {
        let val = &self.tape.values[v.0];
        match self.grads[v.0].take() {
            Some(g) => (g, Accum::Add),
            None => (self.tape.scratch(val.rows * val.cols), Accum::Replace),
        }
    }

    /// Puts back a buffer from [`Slots::take`]: into `v`'s slot, or the pool if `v` needs no
    /// gradient.
    fn put(&mut self, v: ValueId, g: Vec<f32>) {
        if self.tape.values[v.0].needs_grad {
            self.grads[v.0] = Some(g);
        } else {
            self.tape.recycle(g);
        }
    }
}
