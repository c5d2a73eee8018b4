//! Autograd-lite: a tape of the fixed set of ops the towers and losses use.
//!
//! Every op appends one node holding its output value and exactly the state its backward needs
//! (ids for a gather, `z` for a cross layer, row norms for the L2 normalisation, the logits'
//! gradient for the softmax loss). [`Tape::backward`] walks the nodes in reverse, reading each
//! node's output gradient and accumulating into its inputs' gradients and the parameters'.
//!
//! A tape can be reused across steps: [`Tape::reset`] keeps every buffer it allocated (values,
//! saved state, gradients, scratch) in a pool, and later ops take from that pool, so a training
//! loop whose steps have the same shapes allocates no data buffer after its first step.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use convcg_kernels::{self as k, Accum, Par};

use crate::params::{Grads, ParamId, ParamStore, TableId};

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

/// What produced a value, with the state its backward needs.
#[derive(Debug)]
enum Op {
    /// A constant input (dense features); no gradient flows into it.
    Input,
    /// Embedding lookups and constant inputs side by side ([`Tape::embed`]); the lookups'
    /// ids, with where each block starts, are what the backward scatters by.
    Embed {
        lookups: Vec<SavedLookup>,
    },
    Concat {
        parts: Vec<ValueId>,
    },
    /// `concat(xs) · w + b`: `w`'s rows split among the inputs in order; with `relu`, the
    /// output is `max(·, 0)` of that.
    Linear {
        xs: Vec<ValueId>,
        w: ParamId,
        b: Option<ParamId>,
        relu: bool,
    },
    Relu {
        x: ValueId,
    },
    Cross {
        x0: ValueId,
        xl: ValueId,
        w: ParamId,
        b: ParamId,
        z: Vec<f32>,
    },
    L2Norm {
        x: ValueId,
        norms: Vec<f32>,
    },
    SoftmaxXent {
        users: ValueId,
        cands: ValueId,
        inv_temp: f32,
        dlogits: Vec<f32>,
    },
    Mul {
        a: ValueId,
        b: ValueId,
    },
    Add {
        a: ValueId,
        b: ValueId,
    },
    RowSoftmax {
        x: ValueId,
    },
    Mix {
        gates: ValueId,
        experts: Vec<ValueId>,
    },
    SegmentMean {
        x: ValueId,
        groups: Vec<u32>,
        counts: Vec<u32>,
    },
    /// Σ_i c_i · s_i over scalar values.
    WeightedSum {
        terms: Vec<(ValueId, f32)>,
    },
}

/// One lookup block of an [`Op::Embed`].
#[derive(Debug)]
struct SavedLookup {
    table: TableId,
    ids: Vec<u32>,
    /// The bags' offsets; `None` for one id per row.
    offsets: Option<Vec<usize>>,
    /// The block's first column.
    col: usize,
}

impl SavedLookup {
    fn lookup(&self) -> k::Lookup<'_> {
        match &self.offsets {
            None => k::Lookup::Rows(&self.ids),
            Some(offsets) => k::Lookup::Bags {
                ids: &self.ids,
                offsets,
            },
        }
    }
}

/// One block of columns of [`Tape::embed`].
#[derive(Clone, Copy, Debug)]
pub enum EmbedInput<'a> {
    /// One row of `table` per id.
    Rows {
        /// The table.
        table: TableId,
        /// One id per row.
        ids: &'a [u32],
    },
    /// The mean of each bag's rows of `table`; `offsets` has one more entry than there are bags
    /// (bag `i` is `ids[offsets[i]..offsets[i + 1]]`).
    Bags {
        /// The table.
        table: TableId,
        /// The bags' ids, one after another.
        ids: &'a [u32],
        /// Where each bag starts, and the end of the last.
        offsets: &'a [usize],
    },
    /// Constant inputs (dense features), `[n, cols]`; no gradient flows into them.
    Dense {
        /// The values, row-major.
        values: &'a [f32],
        /// Their width.
        cols: usize,
    },
}

/// Arguments of the sampled softmax loss beyond its two embedding inputs.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxArgs<'a> {
    /// 1 / temperature.
    pub inv_temp: f32,
    /// Log sampling probability of each candidate (logQ correction), or none.
    pub log_q: Option<&'a [f32]>,
    /// Item id of each candidate; equal ids to a row's positive are masked as accidental hits.
    pub cand_ids: &'a [u32],
    /// Per-row example weights, or none for all ones.
    pub weights: Option<&'a [f32]>,
}

/// Spare buffers kept for reuse. Steps repeat the same shapes, so a best fit by capacity finds
/// the buffer of exactly the size a previous step used at that point.
#[derive(Debug, Default)]
struct Pool<T> {
    free: Vec<Vec<T>>,
}

impl<T: Copy + Default> Pool<T> {
    /// A buffer of `len` default (zero) elements, reusing the smallest spare one that fits, or
    /// else growing the largest spare one, so the pool never holds more buffers than a step had
    /// alive at once.
    fn take(&mut self, len: usize) -> Vec<T> {
        let mut v = self.take_stale(len);
        v.fill(T::default());
        v
    }

    /// A buffer of `len` elements whose contents are whatever a previous step left there (zeros
    /// where it grew): only for outputs that a kernel overwrites entirely before anything reads
    /// them, which saves clearing the buffer first.
    fn take_stale(&mut self, len: usize) -> Vec<T> {
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let largest = || {
            self.free
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)
        };
        match fit.or_else(largest) {
            Some(i) => {
                let mut v = self.free.swap_remove(i);
                v.truncate(len);
                v.resize(len, T::default());
                v
            }
            None => vec![T::default(); len],
        }
    }

    /// A copy of `src` in a reused buffer.
    fn copy_of(&mut self, src: &[T]) -> Vec<T> {
        let mut v = self.take_stale(src.len());
        v.copy_from_slice(src);
        v
    }

    fn give(&mut self, v: Vec<T>) {
        if v.capacity() > 0 {
            self.free.push(v);
        }
    }
}

/// Wall time of one recorded node, from [`Tape::profile`].
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTiming {
    /// The node's position on the tape: the same for the same ops recorded in the same order,
    /// so timings of several steps line up by it.
    pub node: usize,
    /// What the node is: the op, and the parameter or table it reads where it has one
    /// (`linear query.head.w`, `gather pin.id`).
    pub label: String,
    /// The node's output shape `(rows, cols)`.
    pub shape: (usize, usize),
    /// Time from the previous node's end (or the reset) to this node's end while recording, so
    /// the caller's work between ops is counted with the op that follows it.
    pub forward: Duration,
    /// Time of the node's backward, zero if the last backward did not reach it (or none ran).
    pub backward: Duration,
}

/// Per-node clocks, kept only while profiling is on.
#[derive(Debug)]
struct Clock {
    /// End of the last recorded node, or the reset.
    mark: Instant,
    forward: Vec<Duration>,
    /// Behind a lock because [`Tape::backward`] borrows the tape shared.
    backward: Mutex<Vec<Duration>>,
}

impl Clock {
    fn new() -> Self {
        Self {
            mark: Instant::now(),
            forward: Vec::new(),
            backward: Mutex::new(Vec::new()),
        }
    }
}

/// The pools of a tape, one per element type it stores.
#[derive(Debug, Default)]
struct Pools {
    f32s: Pool<f32>,
    ids: Pool<u32>,
    offsets: Pool<usize>,
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
            pools: Mutex::new(Pools::default()),
            clock: None,
        }
    }

    /// Turns per-node timing on or off. While on, every recorded op and every node's backward is
    /// timed ([`Tape::profile`]); off (the default) costs nothing. Timing reads the clock once
    /// per recorded node and twice per node's backward, little beside the nodes' work.
    pub fn set_profiling(&mut self, on: bool) {
        self.clock = on.then(Clock::new);
    }

    /// The wall time of each node of the step recorded since the last reset, forward and
    /// backward, labelled with `params`' names; empty unless profiling is on.
    pub fn profile(&self, params: &ParamStore) -> Vec<NodeTiming> {
        let Some(clock) = &self.clock else {
            return Vec::new();
        };
        let backward = clock
            .backward
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.ops
            .iter()
            .enumerate()
            .map(|(node, op)| NodeTiming {
                node,
                label: op_label(op, params),
                shape: self.shape(ValueId(node)),
                forward: clock.forward.get(node).copied().unwrap_or_default(),
                backward: backward.get(node).copied().unwrap_or_default(),
            })
            .collect()
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
            match op {
                Op::Embed { lookups } => {
                    for l in lookups {
                        pools.ids.give(l.ids);
                        if let Some(offsets) = l.offsets {
                            pools.offsets.give(offsets);
                        }
                    }
                }
                Op::Cross { z, .. } => pools.f32s.give(z),
                Op::L2Norm { norms, .. } => pools.f32s.give(norms),
                Op::SoftmaxXent { dlogits, .. } => pools.f32s.give(dlogits),
                Op::SegmentMean { groups, counts, .. } => {
                    pools.ids.give(groups);
                    pools.ids.give(counts);
                }
                Op::Input
                | Op::Concat { .. }
                | Op::Linear { .. }
                | Op::Relu { .. }
                | Op::Mul { .. }
                | Op::Add { .. }
                | Op::RowSoftmax { .. }
                | Op::Mix { .. }
                | Op::WeightedSum { .. } => {}
            }
        }
    }

    /// Bytes of data the tape holds: recorded values, the state ops saved for the backward pass
    /// (ids, offsets, cross-layer pre-activations, norms, softmax logit gradients) and the spare
    /// buffers of its pool. Read after a step (before the next reset), it is the memory one
    /// step's activations take.
    pub fn held_bytes(&self) -> usize {
        fn bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        let values: usize = self.values.iter().map(|v| bytes(&v.data)).sum();
        let saved: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Embed { lookups } => lookups
                    .iter()
                    .map(|l| bytes(&l.ids) + l.offsets.as_ref().map_or(0, bytes))
                    .sum(),
                Op::Cross { z, .. } => bytes(z),
                Op::L2Norm { norms, .. } => bytes(norms),
                Op::SoftmaxXent { dlogits, .. } => bytes(dlogits),
                Op::SegmentMean { groups, counts, .. } => bytes(groups) + bytes(counts),
                Op::Input
                | Op::Concat { .. }
                | Op::Linear { .. }
                | Op::Relu { .. }
                | Op::Mul { .. }
                | Op::Add { .. }
                | Op::RowSoftmax { .. }
                | Op::Mix { .. }
                | Op::WeightedSum { .. } => 0,
            })
            .sum();
        let pools = self.pools();
        let spare = pools.f32s.free.iter().map(bytes).sum::<usize>()
            + pools.ids.free.iter().map(bytes).sum::<usize>()
            + pools.offsets.free.iter().map(bytes).sum::<usize>();
        values + saved + spare
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
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

    fn push(
        &mut self,
        data: Vec<f32>,
        rows: usize,
        cols: usize,
        needs_grad: bool,
        op: Op,
    ) -> ValueId {
        debug_assert_eq!(data.len(), rows * cols);
        if let Some(clock) = &mut self.clock {
            let now = Instant::now();
            clock.forward.push(now - clock.mark);
            clock.mark = now;
        }
        self.values.push(Value {
            data,
            rows,
            cols,
            needs_grad,
            grad_cols: cols,
        });
        self.ops.push(op);
        ValueId(self.values.len() - 1)
    }

    /// A value's data, row-major.
    pub fn data(&self, v: ValueId) -> &[f32] {
        &self.values[v.0].data
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

    /// A constant `[rows, cols]` input copied from `data` into a reused buffer.
    ///
    /// # Panics
    /// If `data.len() != rows * cols`.
    #[track_caller]
    pub fn input(&mut self, data: &[f32], rows: usize, cols: usize) -> ValueId {
        assert_eq!(
            data.len(),
            rows * cols,
            "input data does not match its shape"
        );
        let data = self.pools().f32s.copy_of(data);
        self.push(data, rows, cols, false, Op::Input)
    }

    /// Embedding lookup: one row of `table` per id ([`Tape::embed`] of one block).
    pub fn gather(&mut self, params: &ParamStore, table: TableId, ids: &[u32]) -> ValueId {
        self.embed(params, ids.len(), &[EmbedInput::Rows { table, ids }])
    }

    /// Mean-pooled embedding bags; `offsets` has one more entry than there are bags
    /// ([`Tape::embed`] of one block).
    pub fn bag_mean(
        &mut self,
        params: &ParamStore,
        table: TableId,
        ids: &[u32],
        offsets: &[usize],
    ) -> ValueId {
        let n = offsets.len().saturating_sub(1);
        self.embed(
            params,
            n,
            &[EmbedInput::Bags {
                table,
                ids,
                offsets,
            }],
        )
    }

    /// Embedding lookups, pooled bags and constant inputs side by side, `[n, Σ widths]`, each
    /// block written straight into its own columns: the same as [`Tape::concat`] of
    /// [`Tape::gather`]s, [`Tape::bag_mean`]s and [`Tape::input`]s, without the copy in either
    /// direction. The backward scatters each lookup's columns into its table's gradient, the
    /// tables on separate threads.
    ///
    /// # Panics
    /// If a block does not have `n` rows or an id is out of its table's range.
    #[track_caller]
    pub fn embed(&mut self, params: &ParamStore, n: usize, parts: &[EmbedInput<'_>]) -> ValueId {
        let blocks: Vec<k::EmbedBlock<'_>> = parts
            .iter()
            .map(|part| match *part {
                EmbedInput::Rows { table, ids } => {
                    let t = params.table(table);
                    k::EmbedBlock::Table {
                        table: &t.value,
                        dim: t.dim,
                        lookup: k::Lookup::Rows(ids),
                    }
                }
                EmbedInput::Bags {
                    table,
                    ids,
                    offsets,
                } => {
                    let t = params.table(table);
                    k::EmbedBlock::Table {
                        table: &t.value,
                        dim: t.dim,
                        lookup: k::Lookup::Bags { ids, offsets },
                    }
                }
                EmbedInput::Dense { values, cols } => k::EmbedBlock::Dense { values, cols },
            })
            .collect();
        let width: usize = blocks.iter().map(k::EmbedBlock::width).sum();
        let mut out = self.scratch(n * width);
        k::embed_forward(&blocks, n, &mut out, self.par);
        let mut pools = self.pools();
        let mut lookups = Vec::with_capacity(parts.len());
        let mut next_col = 0;
        for (part, block) in parts.iter().zip(&blocks) {
            let col = next_col;
            next_col += block.width();
            let (table, ids, offsets) = match *part {
                EmbedInput::Rows { table, ids } => (table, ids, None),
                EmbedInput::Bags {
                    table,
                    ids,
                    offsets,
                } => (table, ids, Some(pools.offsets.copy_of(offsets))),
                EmbedInput::Dense { .. } => continue,
            };
            lookups.push(SavedLookup {
                table,
                ids: pools.ids.copy_of(ids),
                offsets,
                col,
            });
        }
        drop(pools);
        let needs_grad = !lookups.is_empty();
        // Constant inputs after the last lookup need no gradient: products that compute x0's
        // gradient skip their columns.
        let grad_cols = lookups
            .last()
            .map_or(0, |l| l.col + params.table(l.table).dim);
        let id = self.push(out, n, width, needs_grad, Op::Embed { lookups });
        self.values[id.0].grad_cols = grad_cols;
        id
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
        let blocks: Vec<(&[f32], usize)> = parts
            .iter()
            .map(|p| {
                let v = &self.values[p.0];
                assert_eq!(v.rows, n, "concat parts disagree on rows");
                (v.data.as_slice(), v.cols)
            })
            .collect();
        let width: usize = blocks.iter().map(|b| b.1).sum();
        let mut out = self.scratch(n * width);
        k::concat_cols_forward(&blocks, &mut out, n);
        let needs_grad = parts.iter().any(|p| self.values[p.0].needs_grad);
        let op = Op::Concat {
            parts: parts.to_vec(),
        };
        self.push(out, n, width, needs_grad, op)
    }

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
            let width = self.values[x.0].cols;
            let band = &wp.value[row * d_out..(row + width) * d_out];
            if i == 0 {
                k::linear_forward(self.data(*x), band, bias, &mut y, n, width, d_out, self.par);
            } else {
                k::gemm(
                    &mut y,
                    n,
                    d_out,
                    width,
                    Accum::Add,
                    self.data(*x),
                    k::Trans::No,
                    band,
                    k::Trans::No,
                    1.0,
                    self.par,
                );
            }
            row += width;
        }
        let op = Op::Linear {
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
        k::linear_relu_forward(
            self.data(x),
            &wp.value,
            bias,
            &mut h,
            n,
            d_in,
            d_out,
            self.par,
        );
        let op = Op::Linear {
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
        k::relu_forward(self.data(x), &mut y, self.par);
        let needs_grad = self.values[x.0].needs_grad;
        self.push(y, n, d, needs_grad, Op::Relu { x })
    }

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
            self.data(x0),
            self.data(xl),
            &wp.value,
            &params.dense(b).value,
            &mut z,
            &mut out,
            n,
            d,
            self.par,
        );
        self.push(out, n, d, true, Op::Cross { x0, xl, w, b, z })
    }

    /// Row-wise L2 normalisation.
    pub fn l2_normalize(&mut self, x: ValueId) -> ValueId {
        let (n, d) = self.shape(x);
        let mut y = self.scratch(n * d);
        let mut norms = self.scratch(n);
        k::l2norm_forward(self.data(x), &mut y, &mut norms, n, d, 1e-12, self.par);
        let needs_grad = self.values[x.0].needs_grad;
        self.push(y, n, d, needs_grad, Op::L2Norm { x, norms })
    }

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
        let loss = k::softmax_xent_forward(
            self.data(users),
            self.data(cands),
            b,
            c,
            d,
            args.inv_temp,
            args.log_q,
            args.cand_ids,
            args.weights,
            &mut dlogits,
            self.par,
        );
        let op = Op::SoftmaxXent {
            users,
            cands,
            inv_temp: args.inv_temp,
            dlogits,
        };
        let mut out = self.zeros(1);
        out[0] = loss;
        self.push(out, 1, 1, true, op)
    }

    /// Elementwise product `a ⊙ b` (the `x0 ⊙ (·)` of low-rank and mixture cross layers).
    ///
    /// # Panics
    /// If `a` and `b` differ in shape.
    #[track_caller]
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (n, d) = self.shape(a);
        assert_eq!(self.shape(b), (n, d), "mul: operands differ in shape");
        let mut out = self.scratch(n * d);
        k::mul_forward(self.data(a), self.data(b), &mut out, self.par);
        let needs_grad = self.values[a.0].needs_grad || self.values[b.0].needs_grad;
        self.push(out, n, d, needs_grad, Op::Mul { a, b })
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
        self.push(out, n, d, needs_grad, Op::Add { a, b })
    }

    /// Row-wise softmax (the gate of a mixture of experts).
    pub fn row_softmax(&mut self, x: ValueId) -> ValueId {
        let (n, e) = self.shape(x);
        let mut y = self.scratch(n * e);
        k::row_softmax_forward(self.data(x), &mut y, n, e, self.par);
        let needs_grad = self.values[x.0].needs_grad;
        self.push(y, n, e, needs_grad, Op::RowSoftmax { x })
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
        let views: Vec<&[f32]> = experts.iter().map(|&x| self.data(x)).collect();
        k::mix_forward(self.data(gates), &views, &mut out, n, d, self.par);
        let needs_grad = std::iter::once(gates)
            .chain(experts.iter().copied())
            .any(|v| self.values[v.0].needs_grad);
        let op = Op::Mix {
            gates,
            experts: experts.to_vec(),
        };
        self.push(out, n, d, needs_grad, op)
    }

    /// The mean of the rows of `x` in each of `n_groups` groups, `groups[r]` being row `r`'s
    /// group; rows with a group `>= n_groups` are left out, and an empty group is zeros.
    ///
    /// # Panics
    /// If `groups` does not have one entry per row of `x`.
    #[track_caller]
    pub fn segment_mean(&mut self, x: ValueId, groups: &[u32], n_groups: usize) -> ValueId {
        let (n, d) = self.shape(x);
        assert_eq!(groups.len(), n, "segment_mean: one group per row");
        let mut out = self.scratch(n_groups * d);
        let mut counts = self.pools().ids.take_stale(n_groups);
        k::segment_mean_forward(self.data(x), groups, n_groups, d, &mut out, &mut counts);
        let groups = self.pools().ids.copy_of(groups);
        let needs_grad = self.values[x.0].needs_grad;
        let op = Op::SegmentMean { x, groups, counts };
        self.push(out, n_groups, d, needs_grad, op)
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
            self.data(users),
            self.data(cands),
            b,
            c,
            d,
            inv_temp,
            targets,
            weights,
            &mut dlogits,
            self.par,
        );
        // The backward reads only the logits' gradient, exactly as the in-batch softmax's.
        let op = Op::SoftmaxXent {
            users,
            cands,
            inv_temp,
            dlogits,
        };
        let mut out = self.zeros(1);
        out[0] = loss;
        self.push(out, 1, 1, true, op)
    }

    /// Σ coefficient · scalar, for combining losses.
    ///
    /// # Panics
    /// If a term is not a scalar.
    #[track_caller]
    pub fn weighted_sum(&mut self, terms: &[(ValueId, f32)]) -> ValueId {
        let total = terms.iter().map(|&(v, c)| c * self.scalar(v)).sum();
        let op = Op::WeightedSum {
            terms: terms.to_vec(),
        };
        let mut out = self.zeros(1);
        out[0] = total;
        self.push(out, 1, 1, true, op)
    }

    /// Backpropagates from the scalar `loss`, accumulating into `grads`.
    ///
    /// # Panics
    /// If `loss` is not a scalar.
    #[track_caller]
    pub fn backward(&self, loss: ValueId, params: &ParamStore, grads: &mut Grads) {
        assert_eq!(self.shape(loss), (1, 1), "backward from a non-scalar");
        let mut vgrads: Vec<Option<Vec<f32>>> = (0..self.values.len()).map(|_| None).collect();
        let mut seed = self.zeros(1);
        seed[0] = 1.0;
        vgrads[loss.0] = Some(seed);
        for node in (0..=loss.0).rev() {
            let Some(mut dy) = vgrads[node].take() else {
                continue;
            };
            let start = self.clock.is_some().then(Instant::now);
            self.backward_node(node, &mut dy, params, grads, &mut vgrads);
            if let (Some(clock), Some(start)) = (&self.clock, start) {
                let mut times = clock
                    .backward
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if times.len() < self.values.len() {
                    times.resize(self.values.len(), Duration::ZERO);
                }
                times[node] = start.elapsed();
            }
            self.recycle(dy);
        }
        let mut pools = self.pools();
        for g in vgrads.into_iter().flatten() {
            pools.f32s.give(g);
        }
    }

    /// The gradient buffer of `v`, zero-initialised on first use; `None` if `v` needs none.
    fn grad_slot<'g>(
        &self,
        vgrads: &'g mut [Option<Vec<f32>>],
        v: ValueId,
    ) -> Option<&'g mut Vec<f32>> {
        let val = &self.values[v.0];
        if !val.needs_grad {
            return None;
        }
        Some(vgrads[v.0].get_or_insert_with(|| self.zeros(val.rows * val.cols)))
    }

    /// Adds a temporary gradient `g` of `v` into `v`'s gradient slot (if `v` needs one) and
    /// returns the temporary to the pool.
    /// The first contribution becomes the slot itself, without a pass over it.
    fn accumulate(&self, vgrads: &mut [Option<Vec<f32>>], v: ValueId, g: Vec<f32>) {
        if !self.values[v.0].needs_grad {
            self.recycle(g);
            return;
        }
        match &mut vgrads[v.0] {
            Some(slot) => {
                for (s, gi) in slot.iter_mut().zip(&g) {
                    *s += gi;
                }
                self.recycle(g);
            }
            empty => *empty = Some(g),
        }
    }

    /// Where a kernel puts its contribution to `v`'s gradient, and how: the existing slot with
    /// `Accum::Add`, or, for the first contribution, a fresh slot with `Accum::Replace` (which
    /// saves zeroing it); `None` if `v` needs no gradient.
    fn grad_out<'g>(
        &self,
        vgrads: &'g mut [Option<Vec<f32>>],
        v: ValueId,
    ) -> Option<(&'g mut [f32], Accum)> {
        let val = &self.values[v.0];
        if !val.needs_grad {
            return None;
        }
        Some(match &mut vgrads[v.0] {
            Some(slot) => (slot.as_mut_slice(), Accum::Add),
            empty => (
                empty
                    .insert(self.scratch(val.rows * val.cols))
                    .as_mut_slice(),
                Accum::Replace,
            ),
        })
    }

    /// `v`'s gradient buffer taken out of its slot, with how a kernel must put its contribution
    /// there: added to the slot's contents, or written into a fresh buffer (which saves zeroing
    /// it) when this is the first contribution or `v` needs no gradient. Give it back with
    /// [`Tape::put_grad`].
    fn take_grad(&self, vgrads: &mut [Option<Vec<f32>>], v: ValueId) -> (Vec<f32>, Accum) {
        let val = &self.values[v.0];
        match vgrads[v.0].take() {
            Some(g) => (g, Accum::Add),
            None => (self.scratch(val.rows * val.cols), Accum::Replace),
        }
    }

    /// Puts back a buffer from [`Tape::take_grad`]: into `v`'s slot, or the pool if `v` needs no
    /// gradient.
    fn put_grad(&self, vgrads: &mut [Option<Vec<f32>>], v: ValueId, g: Vec<f32>) {
        if self.values[v.0].needs_grad {
            vgrads[v.0] = Some(g);
        } else {
            self.recycle(g);
        }
    }

    /// Accumulates node `node`'s contributions to its inputs' and parameters' gradients from its
    /// output gradient `dy`, which it may overwrite (the buffer is recycled afterwards).
    fn backward_node(
        &self,
        node: usize,
        dy: &mut [f32],
        params: &ParamStore,
        grads: &mut Grads,
        vgrads: &mut [Option<Vec<f32>>],
    ) {
        let par = self.par;
        let (n, d) = (self.values[node].rows, self.values[node].cols);
        match &self.ops[node] {
            Op::Input => {}
            Op::Embed { lookups } => {
                // One task per table, its lookups in reverse order (the order in which a
                // backward pass meets lookups recorded one by one), the tables on rayon's threads.
                let mut tasks: Vec<k::TableScatter<'_>> = grads
                    .tables
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(t, grad)| {
                        let mine: Vec<(k::Lookup<'_>, usize)> = lookups
                            .iter()
                            .rev()
                            .filter(|l| l.table.0 == t)
                            .map(|l| (l.lookup(), l.col))
                            .collect();
                        (!mine.is_empty()).then_some(k::TableScatter {
                            grad,
                            lookups: mine,
                        })
                    })
                    .collect();
                k::embed_backward(&mut tasks, dy, d, par);
            }
            Op::Concat { parts } => {
                // Parts that need no gradient still get a buffer: the kernel splits every column.
                let mut bufs: Vec<Vec<f32>> = parts
                    .iter()
                    .map(|p| {
                        let v = &self.values[p.0];
                        match vgrads[p.0].take() {
                            Some(g) => g,
                            None => self.zeros(v.rows * v.cols),
                        }
                    })
                    .collect();
                let mut blocks: Vec<(&mut [f32], usize)> = bufs
                    .iter_mut()
                    .zip(parts)
                    .map(|(g, p)| (g.as_mut_slice(), self.values[p.0].cols))
                    .collect();
                k::concat_cols_backward(dy, &mut blocks, n, Accum::Add);
                for (p, g) in parts.iter().zip(bufs) {
                    if self.values[p.0].needs_grad {
                        vgrads[p.0] = Some(g);
                    } else {
                        self.recycle(g);
                    }
                }
            }
            Op::Linear { xs, w, b, relu } => {
                if *relu {
                    // The gradient of the pre-activation, where the unit is on.
                    k::relu_mask(&self.values[node].data, dy, par);
                }
                let dy = &*dy;
                let (dw, mut db) = dense_pair(grads, *w, *b);
                let w = &params.dense(*w).value;
                let mut row = 0;
                for x in xs {
                    let width = self.values[x.0].cols;
                    let band = row * d..(row + width) * d;
                    let cols = self.values[x.0].grad_cols;
                    let dx = self.grad_out(vgrads, *x).map(|(dx, accum)| k::InputGrad {
                        dx,
                        accum,
                        cols,
                    });
                    k::linear_backward(
                        self.data(*x),
                        &w[band.clone()],
                        dy,
                        dx,
                        &mut dw[band],
                        db.take(),
                        n,
                        width,
                        d,
                        par,
                    );
                    row += width;
                }
            }
            Op::Relu { x } => {
                if let Some((g, accum)) = self.grad_out(vgrads, *x) {
                    k::relu_backward(&self.values[node].data, dy, g, accum, par);
                }
            }
            Op::Cross { x0, xl, w, b, z } => {
                let (dw, db) = dense_pair(grads, *w, Some(*b));
                let db = db.unwrap_or_else(|| unreachable!("a cross layer always has a bias"));
                let mut dz = self.scratch(n * d);
                // The kernel writes (first contribution) or adds into the inputs' gradient
                // slots; an input that needs none gets a scratch buffer, dropped afterwards.
                let (mut dx0, dx0_accum) = self.take_grad(vgrads, *x0);
                // The first layer reads x0 twice (xl is x0): one slot gets both gradients.
                let mut dxl = (xl != x0).then(|| self.take_grad(vgrads, *xl));
                let grads = match &mut dxl {
                    None => k::CrossInputGrads::One {
                        dx0: &mut dx0,
                        accum: dx0_accum,
                        cols: self.values[x0.0].grad_cols,
                    },
                    Some((dxl, dxl_accum)) => k::CrossInputGrads::Two {
                        dx0: &mut dx0,
                        dx0_accum,
                        dxl,
                        dxl_accum: *dxl_accum,
                        dxl_cols: self.values[xl.0].grad_cols,
                    },
                };
                k::cross_backward(
                    self.data(*x0),
                    self.data(*xl),
                    &params.dense(*w).value,
                    z,
                    dy,
                    &mut dz,
                    grads,
                    dw,
                    db,
                    n,
                    d,
                    par,
                );
                if let Some((g, _)) = dxl {
                    self.put_grad(vgrads, *xl, g);
                }
                self.put_grad(vgrads, *x0, dx0);
                self.recycle(dz);
            }
            Op::L2Norm { x, norms } => {
                if let Some((g, accum)) = self.grad_out(vgrads, *x) {
                    k::l2norm_backward(&self.values[node].data, norms, dy, g, n, d, accum, par);
                }
            }
            Op::SoftmaxXent {
                users,
                cands,
                inv_temp,
                dlogits,
            } => {
                let (b, dim) = self.shape(*users);
                let c = self.values[cands.0].rows;
                let scale = dy[0];
                let mut scaled = Vec::new();
                let dl = if scale == 1.0 {
                    dlogits.as_slice()
                } else {
                    scaled = self.scratch(dlogits.len());
                    for (s, g) in scaled.iter_mut().zip(dlogits) {
                        *s = g * scale;
                    }
                    &scaled
                };
                let mut du = self.scratch(b * dim);
                let mut dc = self.scratch(c * dim);
                k::softmax_xent_backward(
                    self.data(*users),
                    self.data(*cands),
                    dl,
                    b,
                    c,
                    dim,
                    *inv_temp,
                    &mut du,
                    Accum::Replace,
                    &mut dc,
                    Accum::Replace,
                    par,
                );
                self.accumulate(vgrads, *users, du);
                self.accumulate(vgrads, *cands, dc);
                self.recycle(scaled);
            }
            Op::Mul { a, b } => {
                // Each operand's gradient reads the other operand; a temporary per operand keeps
                // `mul(x, x)` correct.
                let mut da = self.scratch(n * d);
                let mut db = self.scratch(n * d);
                k::mul_backward(
                    self.data(*a),
                    self.data(*b),
                    dy,
                    &mut da,
                    Accum::Replace,
                    &mut db,
                    Accum::Replace,
                    par,
                );
                self.accumulate(vgrads, *a, da);
                self.accumulate(vgrads, *b, db);
            }
            Op::Add { a, b } => {
                for v in [*a, *b] {
                    if self.values[v.0].needs_grad {
                        let g = self.pools().f32s.copy_of(dy);
                        self.accumulate(vgrads, v, g);
                    }
                }
            }
            Op::RowSoftmax { x } => {
                if let Some((g, accum)) = self.grad_out(vgrads, *x) {
                    k::row_softmax_backward(&self.values[node].data, dy, g, n, d, accum, par);
                }
            }
            Op::Mix { gates, experts } => {
                let e = experts.len();
                if self.values[gates.0].needs_grad {
                    let views: Vec<&[f32]> = experts.iter().map(|&x| self.data(x)).collect();
                    let mut dg = self.scratch(n * e);
                    k::mix_backward_gates(&views, dy, &mut dg, n, d, Accum::Replace, par);
                    self.accumulate(vgrads, *gates, dg);
                }
                for (i, &x) in experts.iter().enumerate() {
                    if let Some((g, accum)) = self.grad_out(vgrads, x) {
                        k::mix_backward_expert(self.data(*gates), e, i, dy, g, n, d, accum, par);
                    }
                }
            }
            Op::SegmentMean { x, groups, counts } => {
                if let Some((g, accum)) = self.grad_out(vgrads, *x) {
                    k::segment_mean_backward(groups, counts, dy, d, g, accum);
                }
            }
            Op::WeightedSum { terms } => {
                for &(v, c) in terms {
                    if let Some(slot) = self.grad_slot(vgrads, v) {
                        slot[0] += c * dy[0];
                    }
                }
            }
        }
    }
}

/// A node's label for [`Tape::profile`]: the op, and the weight or table it reads.
fn op_label(op: &Op, params: &ParamStore) -> String {
    let table = |t: &TableId| &params.table(*t).name;
    let dense = |w: &ParamId| &params.dense(*w).name;
    match op {
        Op::Input => "input".to_owned(),
        Op::Embed { lookups } => match lookups.as_slice() {
            [one] if one.offsets.is_none() => format!("gather {}", table(&one.table)),
            [one] => format!("bag_mean {}", table(&one.table)),
            _ => format!("embed of {} lookups", lookups.len()),
        },
        Op::Concat { parts } => format!("concat of {}", parts.len()),
        Op::Linear { xs, w, .. } if xs.len() > 1 => format!("linear_cat {}", dense(w)),
        Op::Linear { w, relu: true, .. } => format!("linear_relu {}", dense(w)),
        Op::Linear { w, .. } => format!("linear {}", dense(w)),
        Op::Relu { .. } => "relu".to_owned(),
        Op::Cross { w, .. } => format!("cross {}", dense(w)),
        Op::L2Norm { .. } => "l2_normalize".to_owned(),
        Op::SoftmaxXent { .. } => "softmax_xent".to_owned(),
        Op::Mul { .. } => "mul".to_owned(),
        Op::Add { .. } => "add".to_owned(),
        Op::RowSoftmax { .. } => "row_softmax".to_owned(),
        Op::Mix { experts, .. } => format!("mix of {}", experts.len()),
        Op::SegmentMean { .. } => "segment_mean".to_owned(),
        Op::WeightedSum { terms } => format!("weighted_sum of {}", terms.len()),
    }
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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Asserts that `a` and `b` agree within `1e-5` relative.
    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    }

    /// What a test step leaves: the loss, every dense gradient, every table's gradient rows,
    /// and the `[5, 6]` value the loss was put on.
    #[derive(Debug)]
    struct Outcome {
        loss: f32,
        dense: Vec<Vec<f32>>,
        tables: Vec<Vec<f32>>,
        output: Vec<f32>,
    }

    impl Outcome {
        /// Asserts the same loss and gradients as `reference`, within [`close`].
        fn assert_matches(&self, reference: &Outcome) {
            assert_eq!(self.dense.len(), reference.dense.len());
            assert_eq!(self.tables.len(), reference.tables.len());
            close(&[self.loss], &[reference.loss], "loss");
            for (i, (g, r)) in self.dense.iter().zip(&reference.dense).enumerate() {
                close(g, r, &format!("dense gradient {i}"));
            }
            for (i, (g, r)) in self.tables.iter().zip(&reference.tables).enumerate() {
                close(g, r, &format!("table gradient {i}"));
            }
        }
    }

    /// Records `build`'s `[5, 6]` output on a fresh tape with `par`, puts the sampled softmax
    /// loss on it against seven fixed candidates, and runs the backward.
    fn step(params: &ParamStore, par: Par, build: impl FnOnce(&mut Tape) -> ValueId) -> Outcome {
        let outcome = step_on(&mut Tape::new(par), params, build);
        assert_eq!(outcome.output.len(), 5 * 6);
        outcome
    }

    /// [`step`] on `tape`, reset first, for an output of any width.
    fn step_on(
        tape: &mut Tape,
        params: &ParamStore,
        build: impl FnOnce(&mut Tape) -> ValueId,
    ) -> Outcome {
        tape.reset(tape.par);
        let y = build(tape);
        let width = tape.shape(y).1;
        let cands: Vec<f32> = (0..7 * width)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let cand_ids: Vec<u32> = (0..7).collect();
        let c = tape.input(&cands, 7, width);
        let args = SoftmaxArgs {
            inv_temp: 2.0,
            log_q: None,
            cand_ids: &cand_ids,
            weights: None,
        };
        let loss = tape.softmax_xent(y, c, args);
        let mut grads = params.zero_grads();
        tape.backward(loss, params, &mut grads);
        Outcome {
            loss: tape.scalar(loss),
            dense: grads.dense_all().to_vec(),
            tables: grads
                .tables_all()
                .iter()
                .map(|t| t.values().to_vec())
                .collect(),
            output: tape.data(y).to_vec(),
        }
    }

    /// The five ids every test step gathers.
    const IDS: [u32; 5] = [4, 0, 8, 4, 2];

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

    /// Five bags of 0 to 3 ids (one empty) from a 6-row table: the bags of the `embed` tests.
    const BAG_IDS: [u32; 7] = [5, 1, 5, 0, 2, 1, 1];
    const BAG_OFFSETS: [usize; 6] = [0, 2, 2, 5, 6, 7];

    /// The blocks of the `embed` tests' x0: [`IDS`] from `t`, the bags from `bag`, then `dense`
    /// as `cols` columns.
    fn x0_parts(t: TableId, bag: TableId, dense: &[f32], cols: usize) -> Vec<EmbedInput<'_>> {
        vec![
            EmbedInput::Rows {
                table: t,
                ids: &IDS,
            },
            EmbedInput::Bags {
                table: bag,
                ids: &BAG_IDS,
                offsets: &BAG_OFFSETS,
            },
            EmbedInput::Dense {
                values: dense,
                cols,
            },
        ]
    }

    /// The same blocks recorded one by one, for `concat`.
    fn x0_recorded(
        tape: &mut Tape,
        params: &ParamStore,
        t: TableId,
        bag: TableId,
        dense: &[f32],
        cols: usize,
    ) -> Vec<ValueId> {
        vec![
            tape.gather(params, t, &IDS),
            tape.bag_mean(params, bag, &BAG_IDS, &BAG_OFFSETS),
            tape.input(dense, 5, cols),
        ]
    }

    /// `embed` against `concat` of the same lookups, bag and inputs recorded one by one, with a
    /// table looked up twice: the same output, loss and table gradients (rows in the same
    /// order), under one thread and two.
    #[test]
    fn embed_is_the_concatenation_of_its_blocks() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut params = ParamStore::new();
        let t = params.add_table("t", 9, 2, &mut rng);
        let bag = params.add_table("bag", 6, 3, &mut rng);
        let last = [8, 4, 4, 1, 0];
        let dense = [0.5, -1.0, 2.0, 0.0, 1.5];
        for par in [Par::Seq, Par::rayon(2)] {
            let fused = step_on(&mut Tape::new(par), &params, |tape| {
                let mut parts = x0_parts(t, bag, &dense, 1);
                parts.push(EmbedInput::Rows {
                    table: t,
                    ids: &last,
                });
                tape.embed(&params, 5, &parts)
            });
            let reference = step_on(&mut Tape::new(par), &params, |tape| {
                let mut parts = x0_recorded(tape, &params, t, bag, &dense, 1);
                parts.push(tape.gather(&params, t, &last));
                tape.concat(&parts)
            });
            assert_eq!(fused.output, reference.output);
            assert_eq!(fused.output.len(), 5 * 8);
            fused.assert_matches(&reference);
            assert!(fused.tables.iter().all(|g| !g.is_empty()));
        }
    }

    /// An `embed` that ends in constant inputs, read by a first cross layer, a second one and an
    /// MLP layer as a tower reads x0: the products skip the constant columns' gradient, and the
    /// loss, the dense gradients and the table gradients are those of `concat` of the same
    /// lookups and inputs, whose gradient is computed in full; under one thread and two.
    #[test]
    fn embed_ending_in_inputs_skips_their_gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut params = ParamStore::new();
        let t = params.add_table("t", 9, 3, &mut rng);
        let bag = params.add_table("bag", 6, 2, &mut rng);
        let dense: Vec<f32> = (0..10).map(|i| i as f32 / 4.0 - 1.0).collect();
        let d = 3 + 2 + 2;
        let cross = [0, 1].map(|i| {
            let w = params.add_dense(format!("cross.{i}.w"), d, d, 0.5, &mut rng);
            (
                w,
                params.add_dense(format!("cross.{i}.b"), 1, d, 0.5, &mut rng),
            )
        });
        let mlp = params.add_dense("mlp.w", d, 4, 0.5, &mut rng);
        let head = params.add_dense("head.w", d + 4, 6, 0.5, &mut rng);
        let body = |tape: &mut Tape, x0: ValueId| {
            let x1 = tape.cross(&params, x0, x0, cross[0].0, cross[0].1);
            let x2 = tape.cross(&params, x0, x1, cross[1].0, cross[1].1);
            let h = tape.linear_relu(&params, x0, mlp, None);
            tape.linear_cat(&params, &[x2, h], head, None)
        };
        for par in [Par::Seq, Par::rayon(2)] {
            let fused = step(&params, par, |tape| {
                let x0 = tape.embed(&params, 5, &x0_parts(t, bag, &dense, 2));
                assert_eq!(tape.values[x0.0].grad_cols, 5);
                body(tape, x0)
            });
            let reference = step(&params, par, |tape| {
                let parts = x0_recorded(tape, &params, t, bag, &dense, 2);
                let x0 = tape.concat(&parts);
                body(tape, x0)
            });
            assert_eq!(fused.output, reference.output);
            fused.assert_matches(&reference);
            assert!(fused.tables.iter().all(|g| !g.is_empty()));
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

    /// Profiling labels every node of the step since the last reset, times the backward of
    /// exactly the nodes it reached, and changes no result; off, the profile is empty.
    #[test]
    fn profile_times_each_node_of_the_last_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut params = ParamStore::new();
        let t = params.add_table("ids", 9, 4, &mut rng);
        let w = params.add_dense("head.w", 4, 3, 0.5, &mut rng);
        let step = |tape: &mut Tape| {
            let outcome = step_on(tape, &params, |tape| {
                let x = tape.gather(&params, t, &[1, 2, 3]);
                let y = tape.linear(&params, x, w, None);
                tape.relu(y)
            });
            (outcome.loss, outcome.dense)
        };
        let mut plain = Tape::new(Par::Seq);
        let expected = step(&mut plain);
        assert!(plain.profile(&params).is_empty());

        let mut timed = Tape::new(Par::Seq);
        timed.set_profiling(true);
        for _ in 0..2 {
            assert_eq!(step(&mut timed), expected, "profiling changed a result");
            let profile = timed.profile(&params);
            let labels: Vec<&str> = profile.iter().map(|n| n.label.as_str()).collect();
            assert_eq!(
                labels,
                [
                    "gather ids",
                    "linear head.w",
                    "relu",
                    "input",
                    "softmax_xent"
                ]
            );
            assert_eq!(profile[1].shape, (3, 3));
            assert_eq!(
                profile.iter().map(|n| n.node).collect::<Vec<_>>(),
                [0, 1, 2, 3, 4]
            );
            // The input needs no gradient, so the backward never reaches it.
            assert_eq!(profile[3].backward, Duration::ZERO);
            assert!(profile[4].forward > Duration::ZERO);
            assert!(profile[4].backward > Duration::ZERO);
        }
        timed.reset(Par::Seq);
        assert!(
            timed.profile(&params).is_empty(),
            "a reset forgets the step"
        );
        timed.set_profiling(false);
        step(&mut timed);
        assert!(timed.profile(&params).is_empty());
    }
}
