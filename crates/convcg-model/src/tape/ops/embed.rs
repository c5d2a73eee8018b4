//! The leaves of the tape: constant inputs, and embedding lookups and bags written side by side
//! with constant inputs (a tower's x0).

use convcg_kernels::{self as k, Rows, RowsMut};

use super::Node;
use crate::params::{ParamStore, TableId};
use crate::tape::pool::{Pools, capacity_bytes};
use crate::tape::{Backward, Tape, Value, ValueId};

/// A constant input (dense features); no gradient flows into it.
#[derive(Debug)]
pub(in crate::tape) struct Input;

impl Node for Input {
    fn backward(&self, _y: &Value, _dy: &mut [f32], _cx: &mut Backward<'_>) {}

    fn label(&self, _params: &ParamStore) -> String {
        "input".to_owned()
    }
}

/// Embedding lookups and constant inputs side by side ([`Tape::embed`]); the lookups' ids, with
/// where each block starts, are what the backward scatters by.
#[derive(Debug)]
pub(in crate::tape) struct Embed {
    lookups: Vec<SavedLookup>,
}

/// One lookup block of an [`Embed`].
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

impl Tape {
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
        self.push(data, rows, cols, false, Input)
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
                EmbedInput::Rows { table, ids } => k::EmbedBlock::Table {
                    table: table_view(params, table),
                    lookup: k::Lookup::Rows(ids),
                },
                EmbedInput::Bags {
                    table,
                    ids,
                    offsets,
                } => k::EmbedBlock::Table {
                    table: table_view(params, table),
                    lookup: k::Lookup::Bags { ids, offsets },
                },
                EmbedInput::Dense { values, cols } => {
                    k::EmbedBlock::Dense(Rows::new(values, n, cols))
                }
            })
            .collect();
        let width: usize = blocks.iter().map(k::EmbedBlock::width).sum();
        let mut out = self.scratch(n * width);
        k::embed_forward(RowsMut::new(&mut out, n, width), &blocks, self.par);
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
        let id = self.push(out, n, width, needs_grad, Embed { lookups });
        self.values[id.0].grad_cols = grad_cols;
        id
    }
}

/// An embedding table as a matrix.
fn table_view(params: &ParamStore, table: TableId) -> Rows<'_> {
    let t = params.table(table);
    Rows::new(&t.value, t.rows, t.dim)
}

impl Node for Embed {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        // One task per table, its lookups in reverse order (the order in which a backward pass
        // meets lookups recorded one by one), the tables on rayon's threads.
        let mut tasks: Vec<k::TableScatter<'_>> = cx
            .grads
            .tables
            .iter_mut()
            .enumerate()
            .filter_map(|(t, grad)| {
                let mine: Vec<(k::Lookup<'_>, usize)> = self
                    .lookups
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
        k::embed_backward(&mut tasks, y.shaped(dy), cx.tape.par);
    }

    fn label(&self, params: &ParamStore) -> String {
        let table = |t: TableId| &params.table(t).name;
        match self.lookups.as_slice() {
            [one] if one.offsets.is_none() => format!("gather {}", table(one.table)),
            [one] => format!("bag_mean {}", table(one.table)),
            _ => format!("embed of {} lookups", self.lookups.len()),
        }
    }

    fn saved_bytes(&self) -> usize {
        self.lookups
            .iter()
            .map(|l| capacity_bytes(&l.ids) + l.offsets.as_ref().map_or(0, capacity_bytes))
            .sum()
    }

    fn recycle(self, pools: &mut Pools) {
        for l in self.lookups {
            pools.ids.give(l.ids);
            if let Some(offsets) = l.offsets {
                pools.offsets.give(offsets);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use convcg_kernels::Par;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::tape::testing::{IDS, step, step_on};

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
}
