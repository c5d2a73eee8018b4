//! Embedding lookups (single ids and mean-pooled bags) and their sparse row gradients.

use std::fmt;

use faer::Par;
use rayon::prelude::*;

use crate::par::for_rows;
use crate::shape::{check_len, check_shape};
use crate::view::{Rows, RowsMut};

#[track_caller]
fn check_ids(kernel: &str, ids: &[u32], rows: usize) {
    if let Some(pos) = ids.iter().position(|&id| id as usize >= rows) {
        panic!(
            "{kernel}: ids[{pos}] = {} is out of range for a table of {rows} rows",
            ids[pos]
        );
    }
}

/// Checks the bag offsets contract and returns the number of bags.
#[track_caller]
fn check_offsets(kernel: &str, offsets: &[usize], num_ids: usize) -> usize {
    assert!(
        !offsets.is_empty(),
        "{kernel}: `offsets` needs n + 1 >= 1 entries"
    );
    assert!(
        offsets[0] == 0,
        "{kernel}: offsets[0] is {}, expected 0",
        offsets[0]
    );
    if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1]) {
        panic!(
            "{kernel}: offsets decrease at index {}: {} > {}",
            i + 1,
            offsets[i],
            offsets[i + 1]
        );
    }
    let last = offsets[offsets.len() - 1];
    assert!(
        last == num_ids,
        "{kernel}: the last offset is {last}, expected ids.len() = {num_ids}"
    );
    offsets.len() - 1
}

/// The rows of an embedding table that make one block of columns: row `i` of the block is
/// `table[ids[i]]`, or the mean of bag `i`'s rows.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// One id per row.
    Rows(&'a [u32]),
    /// Bag `i` is `ids[offsets[i]..offsets[i + 1]]`; `offsets` has `n + 1` entries: `offsets[0]
    /// = 0`, non-decreasing, the last is `ids.len()`. An empty bag's row is all zeros.
    Bags {
        /// The bags' ids, one after another.
        ids: &'a [u32],
        /// Where each bag starts, and the end of the last.
        offsets: &'a [usize],
    },
}

impl Lookup<'_> {
    /// Checks the lookup against a table of `rows` rows; returns its number of output rows.
    #[track_caller]
    fn check(&self, kernel: &str, rows: usize) -> usize {
        match *self {
            Lookup::Rows(ids) => {
                check_ids(kernel, ids, rows);
                ids.len()
            }
            Lookup::Bags { ids, offsets } => {
                let n = check_offsets(kernel, offsets, ids.len());
                check_ids(kernel, ids, rows);
                n
            }
        }
    }
}

/// One block of columns of [`embed_forward`]'s output.
#[derive(Clone, Copy, Debug)]
pub enum EmbedBlock<'a> {
    /// Rows of `table` (`[rows, dim]`), `dim` columns.
    Table {
        /// The embedding table.
        table: Rows<'a>,
        /// Which rows.
        lookup: Lookup<'a>,
    },
    /// Given values, `[n, cols]`, copied as they are.
    Dense(Rows<'a>),
}

impl EmbedBlock<'_> {
    /// The block's number of columns.
    pub fn width(&self) -> usize {
        match *self {
            EmbedBlock::Table { table, .. } => table.cols(),
            EmbedBlock::Dense(values) => values.cols(),
        }
    }
}

/// The concatenation of embedding lookups and dense inputs, block after block of columns:
/// `out` is `[n, Σ widths]`, each block writes its own columns, and no block is ever copied on
/// its own. A lookup of single ids copies rows; a bag writes the mean of its rows (summed in the
/// bag's order, then scaled by `1 / len`), all zeros for an empty bag.
///
/// # Panics
///
/// If an id is not below its table's row count, a bag's `offsets` break [`Lookup::Bags`]'
/// contract, a block does not have `out`'s rows, or `out` is not as wide as the blocks
/// together.
#[track_caller]
pub fn embed_forward(out: RowsMut<'_>, blocks: &[EmbedBlock<'_>], par: Par) {
    embed_forward_named("embed_forward", out, blocks, par);
}

#[track_caller]
fn embed_forward_named(kernel: &str, mut out: RowsMut<'_>, blocks: &[EmbedBlock<'_>], par: Par) {
    let n = out.rows();
    let width: usize = blocks.iter().map(EmbedBlock::width).sum();
    for (b, block) in blocks.iter().enumerate() {
        let rows = match *block {
            EmbedBlock::Table { table, lookup } => lookup.check(kernel, table.rows()),
            EmbedBlock::Dense(values) => values.rows(),
        };
        assert!(
            rows == n,
            "{kernel}: blocks[{b}] has {rows} rows, expected {n}"
        );
    }
    check_shape(kernel, "out", out.shape(), (n, width));
    if width == 0 {
        return;
    }
    for_rows(par, n, out.data(), width, |first, out| {
        let mut col = 0;
        for block in blocks {
            let w = block.width();
            let rows = out
                .chunks_exact_mut(width)
                .map(|row| &mut row[col..col + w]);
            match *block {
                EmbedBlock::Table {
                    table,
                    lookup: Lookup::Rows(ids),
                } => {
                    let (table, dim) = (table.data(), table.cols());
                    for (out, &id) in rows.zip(&ids[first..]) {
                        let at = id as usize * dim;
                        out.copy_from_slice(&table[at..at + dim]);
                    }
                }
                EmbedBlock::Table {
                    table,
                    lookup: Lookup::Bags { ids, offsets },
                } => {
                    let (table, dim) = (table.data(), table.cols());
                    for (i, out) in rows.enumerate() {
                        let bag = &ids[offsets[first + i]..offsets[first + i + 1]];
                        out.fill(0.0);
                        if bag.is_empty() {
                            continue;
                        }
                        for &id in bag {
                            let at = id as usize * dim;
                            for (o, &t) in out.iter_mut().zip(&table[at..at + dim]) {
                                *o += t;
                            }
                        }
                        let inv = 1.0 / bag.len() as f32;
                        out.iter_mut().for_each(|o| *o *= inv);
                    }
                }
                EmbedBlock::Dense(values) => {
                    let (values, cols) = (values.data(), values.cols());
                    for (out, v) in rows.zip(values[first * cols..].chunks_exact(cols)) {
                        out.copy_from_slice(v);
                    }
                }
            }
            col += w;
        }
    });
}

/// `out[i, :] = table[ids[i], :]`, where `table` is `[rows, dim]` and `out` is `[ids.len(), dim]`:
/// [`embed_forward`] of one block.
///
/// # Panics
///
/// If `out` is not `[ids.len(), dim]` or an id is not below the table's row count.
#[track_caller]
pub fn gather_forward(out: RowsMut<'_>, table: Rows<'_>, ids: &[u32], par: Par) {
    let block = EmbedBlock::Table {
        table,
        lookup: Lookup::Rows(ids),
    };
    embed_forward_named("gather_forward", out, &[block], par);
}

/// Mean-pooled bags: bag `i` is `ids[offsets[i]..offsets[i + 1]]` and `out[i]` is the mean of
/// its rows of `table` (`[rows, dim]`), all zeros for an empty bag. `out` is `[n, dim]`:
/// [`embed_forward`] of one block.
///
/// `offsets` has `n + 1` entries: `offsets[0] = 0`, non-decreasing, the last is `ids.len()`.
///
/// # Panics
///
/// If `offsets` breaks the contract above, `out` is not `[n, dim]`, or an id is not below the
/// table's row count.
#[track_caller]
pub fn bag_mean_forward(
    out: RowsMut<'_>,
    table: Rows<'_>,
    ids: &[u32],
    offsets: &[usize],
    par: Par,
) {
    // The block's own check of the offsets names this kernel if they break the contract.
    let block = EmbedBlock::Table {
        table,
        lookup: Lookup::Bags { ids, offsets },
    };
    embed_forward_named("bag_mean_forward", out, &[block], par);
}

/// Marks a row of the slot index that no touched row occupies.
const UNTOUCHED: u32 = u32::MAX;

/// A sparse gradient of an embedding table: the rows a batch touched, duplicates summed.
///
/// Holds a dense slot index (one `u32` per table row) so that adding a row is O(1) without
/// hashing or sorting, plus the touched rows in first-touch order and their gradient rows.
/// Keep one per table and [`clear`](Self::clear) it every step: clearing costs only the rows
/// touched, and the buffers keep their capacity.
#[derive(Clone)]
pub struct SparseRowGrad {
    dim: usize,
    /// `slot[row]` is the index of `row` in `rows`, or `UNTOUCHED`.
    slot: Vec<u32>,
    rows: Vec<u32>,
    values: Vec<f32>,
}

impl SparseRowGrad {
    /// An empty gradient for a `[num_rows, dim]` table.
    ///
    /// # Panics
    ///
    /// If `num_rows > u32::MAX` (rows are `u32` ids and `u32::MAX` marks an untouched row).
    #[track_caller]
    pub fn new(num_rows: usize, dim: usize) -> Self {
        assert!(
            num_rows <= UNTOUCHED as usize,
            "SparseRowGrad::new: {num_rows} rows exceed the u32 id space"
        );
        Self {
            dim,
            slot: vec![UNTOUCHED; num_rows],
            rows: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Bytes held: the slot index (4 per table row) and the touched rows' ids and gradients.
    pub fn held_bytes(&self) -> usize {
        4 * (self.slot.capacity() + self.rows.capacity() + self.values.capacity())
    }

    /// The width of a gradient row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of rows of the table this gradient belongs to.
    pub fn num_rows(&self) -> usize {
        self.slot.len()
    }

    /// The number of distinct rows touched.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row has been touched since creation or the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Forgets the touched rows, in time proportional to the rows touched, not to `num_rows`.
    pub fn clear(&mut self) {
        for &row in &self.rows {
            self.slot[row as usize] = UNTOUCHED;
        }
        self.rows.clear();
        self.values.clear();
    }

    /// `grad[row] += scale * g`.
    ///
    /// # Panics
    ///
    /// If `row >= num_rows()` or `g.len() != dim()`.
    #[track_caller]
    pub fn add_row(&mut self, row: u32, g: &[f32], scale: f32) {
        check_len("SparseRowGrad::add_row", "g", g.len(), self.dim);
        let num_rows = self.slot.len();
        let Some(slot) = self.slot.get_mut(row as usize) else {
            panic!(
                "SparseRowGrad::add_row: row {row} is out of range for a table of {num_rows} rows"
            );
        };
        if *slot == UNTOUCHED {
            // Cannot overflow: at most num_rows <= u32::MAX rows are ever touched.
            *slot = self.rows.len() as u32;
            self.rows.push(row);
            self.values.extend(g.iter().map(|&v| scale * v));
        } else {
            let at = *slot as usize * self.dim;
            for (acc, &v) in self.values[at..at + self.dim].iter_mut().zip(g) {
                *acc += scale * v;
            }
        }
    }

    /// The touched rows, in first-touch order.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// The gradient rows, parallel to [`rows`](Self::rows): `values()[i * dim..(i + 1) * dim]`
    /// belongs to `rows()[i]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The gradient of `row`, or `None` if it was not touched (or is out of range).
    pub fn get(&self, row: u32) -> Option<&[f32]> {
        match self.slot.get(row as usize) {
            Some(&slot) if slot != UNTOUCHED => {
                let at = slot as usize * self.dim;
                Some(&self.values[at..at + self.dim])
            }
            _ => None,
        }
    }
}

impl fmt::Debug for SparseRowGrad {
    // The slot index is as long as the table: print its size, not its contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseRowGrad")
            .field("num_rows", &self.num_rows())
            .field("dim", &self.dim)
            .field("rows", &self.rows)
            .field("values", &self.values)
            .finish()
    }
}

/// Scatter-add backward of one lookup of [`embed_forward`]: `dout` is the `[n, width]` gradient
/// of the whole output and the lookup's block starts at column `col`. Row `i` of the block adds
/// `dout[i, col..col + dim]` into `grad[ids[i]]`, or that divided by the bag's length into the
/// row of each id of bag `i` (once per occurrence), in the order of the ids.
///
/// # Panics
///
/// If the block does not fit in `dout`'s width, the lookup does not have `dout`'s rows, its
/// offsets break [`Lookup::Bags`]' contract, or an id is not below `grad.num_rows()`.
#[track_caller]
pub fn lookup_backward(grad: &mut SparseRowGrad, lookup: Lookup<'_>, dout: Rows<'_>, col: usize) {
    lookup_backward_named("lookup_backward", grad, lookup, dout, col);
}

#[track_caller]
fn lookup_backward_named(
    kernel: &str,
    grad: &mut SparseRowGrad,
    lookup: Lookup<'_>,
    dout: Rows<'_>,
    col: usize,
) {
    let dim = grad.dim();
    let width = dout.cols();
    assert!(
        col + dim <= width,
        "{kernel}: columns {col}..{} do not fit in a width of {width}",
        col + dim
    );
    let n = lookup.check(kernel, grad.num_rows());
    check_shape(kernel, "dout", dout.shape(), (n, width));
    let rows = dout
        .data()
        .chunks_exact(width)
        .map(|row| &row[col..col + dim]);
    match lookup {
        Lookup::Rows(ids) => {
            for (g, &id) in rows.zip(ids) {
                grad.add_row(id, g, 1.0);
            }
        }
        Lookup::Bags { ids, offsets } => {
            for (g, bag) in rows.zip(offsets.windows(2)) {
                let bag = &ids[bag[0]..bag[1]];
                let scale = 1.0 / bag.len() as f32;
                for &id in bag {
                    grad.add_row(id, g, scale);
                }
            }
        }
    }
}

/// The lookups of one table in an [`embed_forward`] output, and the table's gradient: a task of
/// [`embed_backward`].
#[derive(Debug)]
pub struct TableScatter<'a> {
    /// The table's sparse gradient.
    pub grad: &'a mut SparseRowGrad,
    /// Its lookups with the column each one's block starts at, scattered in this order.
    pub lookups: Vec<(Lookup<'a>, usize)>,
}

/// Backward of [`embed_forward`] into the tables' gradients: [`lookup_backward`] for every
/// lookup of every task, the tasks (one per table) on rayon's threads under `Par::Rayon`.
/// A table's lookups run in their given order on one thread, so the result does not depend on
/// the thread count.
///
/// # Panics
///
/// As [`lookup_backward`], for any lookup.
#[track_caller]
pub fn embed_backward(tasks: &mut [TableScatter<'_>], dout: Rows<'_>, par: Par) {
    let run = |task: &mut TableScatter<'_>| {
        for &(lookup, col) in &task.lookups {
            lookup_backward_named("embed_backward", task.grad, lookup, dout, col);
        }
    };
    match par {
        Par::Rayon(threads) if threads.get() > 1 && tasks.len() > 1 => {
            tasks.par_iter_mut().for_each(run);
        }
        _ => tasks.iter_mut().for_each(run),
    }
}

/// Scatter-add backward of [`gather_forward`]: `grad[ids[i]] += dout[i]`.
///
/// # Panics
///
/// If `dout` is not `[ids.len(), grad.dim()]` or an id is not below `grad.num_rows()`.
#[track_caller]
pub fn gather_backward(grad: &mut SparseRowGrad, ids: &[u32], dout: Rows<'_>) {
    const K: &str = "gather_backward";
    check_shape(K, "dout", dout.shape(), (ids.len(), grad.dim()));
    lookup_backward_named(K, grad, Lookup::Rows(ids), dout, 0);
}

/// Scatter-add backward of [`bag_mean_forward`]: each id of bag `i` gets `dout[i] / bag_len`
/// added to its row (once per occurrence); empty bags contribute nothing.
///
/// # Panics
///
/// If `offsets` breaks the contract of [`bag_mean_forward`], `dout` is not `[n, grad.dim()]`,
/// or an id is not below `grad.num_rows()`.
#[track_caller]
pub fn bag_mean_backward(grad: &mut SparseRowGrad, ids: &[u32], offsets: &[usize], dout: Rows<'_>) {
    const K: &str = "bag_mean_backward";
    check_shape(K, "dout", dout.shape(), (dout.rows(), grad.dim()));
    lookup_backward_named(K, grad, Lookup::Bags { ids, offsets }, dout, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        DS, NS, assert_close, dot, fd_check, pars, rng, rows, rows_mut, to_f64, uniform,
    };
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    /// Bags of 0 to 4 ids from a small table, so that ids repeat within and across bags.
    fn bags(rng: &mut ChaCha8Rng, n: usize, rows: usize) -> (Vec<u32>, Vec<usize>) {
        let mut ids = Vec::new();
        let mut offsets = vec![0];
        for _ in 0..n {
            for _ in 0..rng.random_range(0..5) {
                ids.push(rng.random_range(0..rows as u32));
            }
            offsets.push(ids.len());
        }
        (ids, offsets)
    }

    fn naive_bag_mean(table: &[f64], dim: usize, ids: &[u32], offsets: &[usize]) -> Vec<f64> {
        let n = offsets.len() - 1;
        let mut out = vec![0.0; n * dim];
        for i in 0..n {
            let bag = &ids[offsets[i]..offsets[i + 1]];
            for &id in bag {
                for j in 0..dim {
                    out[i * dim + j] += table[id as usize * dim + j] / bag.len() as f64;
                }
            }
        }
        out
    }

    /// The dense `[num_rows, dim]` form of a sparse gradient, checking its bookkeeping.
    fn densify(grad: &SparseRowGrad) -> Vec<f32> {
        let dim = grad.dim();
        let mut dense = vec![0.0; grad.num_rows() * dim];
        let mut seen = vec![false; grad.num_rows()];
        assert_eq!(grad.values().len(), grad.rows().len() * dim);
        for (i, &row) in grad.rows().iter().enumerate() {
            assert!(!seen[row as usize], "row {row} listed twice");
            seen[row as usize] = true;
            let g = &grad.values()[i * dim..(i + 1) * dim];
            assert_eq!(grad.get(row), Some(g));
            dense[row as usize * dim..(row as usize + 1) * dim].copy_from_slice(g);
        }
        dense
    }

    /// First-touch order of the ids.
    fn first_touch(ids: &[u32]) -> Vec<u32> {
        let mut order = Vec::new();
        for &id in ids {
            if !order.contains(&id) {
                order.push(id);
            }
        }
        order
    }

    #[test]
    fn forwards_match_naive_with_duplicate_ids() {
        let mut rng = rng(11);
        for &n in &NS {
            for &dim in &DS {
                let table_rows = 7;
                let table = uniform(&mut rng, table_rows * dim);
                let table64 = to_f64(&table);
                let ids: Vec<u32> = (0..n)
                    .map(|_| rng.random_range(0..table_rows as u32))
                    .collect();
                let one_per_bag: Vec<usize> = (0..=n).collect();
                let gathered = naive_bag_mean(&table64, dim, &ids, &one_per_bag);
                let (bag_ids, offsets) = bags(&mut rng, n, table_rows);
                let pooled = naive_bag_mean(&table64, dim, &bag_ids, &offsets);
                for par in pars() {
                    let mut out = vec![f32::NAN; n * dim];
                    gather_forward(rows_mut(&mut out, dim), rows(&table, dim), &ids, par);
                    assert_close(
                        &format!("gather n={n} dim={dim} {par:?}"),
                        &out,
                        &gathered,
                        0.0,
                    );
                    let (dst, table) = (rows_mut(&mut out, dim), rows(&table, dim));
                    bag_mean_forward(dst, table, &bag_ids, &offsets, par);
                    assert_close(&format!("bag n={n} dim={dim} {par:?}"), &out, &pooled, 1e-6);
                }
            }
        }
    }

    #[test]
    fn backwards_match_naive_scatter() {
        let mut rng = rng(12);
        let table_rows = 9;
        for &n in &NS {
            for &dim in &DS {
                let dout = uniform(&mut rng, n * dim);
                let ids: Vec<u32> = (0..n)
                    .map(|_| rng.random_range(0..table_rows as u32))
                    .collect();
                let (bag_ids, offsets) = bags(&mut rng, n, table_rows);
                let mut gather_ref = vec![0.0; table_rows * dim];
                let mut bag_ref = vec![0.0; table_rows * dim];
                for i in 0..n {
                    let bag = &bag_ids[offsets[i]..offsets[i + 1]];
                    for j in 0..dim {
                        let g = f64::from(dout[i * dim + j]);
                        gather_ref[ids[i] as usize * dim + j] += g;
                        for &id in bag {
                            bag_ref[id as usize * dim + j] += g / bag.len() as f64;
                        }
                    }
                }
                let what = format!("n={n} dim={dim}");
                let mut grad = SparseRowGrad::new(table_rows, dim);
                gather_backward(&mut grad, &ids, rows(&dout, dim));
                assert_eq!(grad.rows(), first_touch(&ids), "gather rows {what}");
                assert_close(
                    &format!("gather grad {what}"),
                    &densify(&grad),
                    &gather_ref,
                    1e-6,
                );
                // The same buffer, cleared, must behave like a fresh one.
                grad.clear();
                assert!(grad.is_empty() && grad.values().is_empty());
                bag_mean_backward(&mut grad, &bag_ids, &offsets, rows(&dout, dim));
                assert_eq!(grad.rows(), first_touch(&bag_ids), "bag rows {what}");
                assert_close(&format!("bag grad {what}"), &densify(&grad), &bag_ref, 1e-6);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng(13);
        let (table_rows, dim, n) = (6, 5, 7);
        let table = uniform(&mut rng, table_rows * dim);
        let ids: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..table_rows as u32))
            .collect();
        let (bag_ids, offsets) = bags(&mut rng, n, table_rows);
        let r = uniform(&mut rng, n * dim);
        let r64 = to_f64(&r);

        let mut grad = SparseRowGrad::new(table_rows, dim);
        gather_backward(&mut grad, &ids, rows(&r, dim));
        let one_per_bag: Vec<usize> = (0..=n).collect();
        fd_check(
            &["table (gather)"],
            &[to_f64(&table)],
            &[&densify(&grad)],
            |p| dot(&r64, &naive_bag_mean(&p[0], dim, &ids, &one_per_bag)),
        );

        grad.clear();
        bag_mean_backward(&mut grad, &bag_ids, &offsets, rows(&r, dim));
        fd_check(
            &["table (bag mean)"],
            &[to_f64(&table)],
            &[&densify(&grad)],
            |p| dot(&r64, &naive_bag_mean(&p[0], dim, &bag_ids, &offsets)),
        );
    }

    /// `n` table_rows of four blocks: table 0 by single ids, table 1 by bags, dense inputs, and
    /// table 0 again by other ids (a table looked up twice).
    struct Mixed {
        tables: [Vec<f32>; 2],
        dims: [usize; 2],
        ids: Vec<u32>,
        bag_ids: Vec<u32>,
        offsets: Vec<usize>,
        last_ids: Vec<u32>,
        dense: Vec<f32>,
    }

    const MIXED_ROWS: usize = 11;
    const DENSE_COLS: usize = 5;

    impl Mixed {
        fn new(rng: &mut ChaCha8Rng, n: usize) -> Self {
            let dims = [3, 16];
            let ids = |rng: &mut ChaCha8Rng| -> Vec<u32> {
                (0..n)
                    .map(|_| rng.random_range(0..MIXED_ROWS as u32))
                    .collect()
            };
            let (bag_ids, offsets) = bags(rng, n, MIXED_ROWS);
            Self {
                tables: dims.map(|d| uniform(rng, MIXED_ROWS * d)),
                dims,
                ids: ids(rng),
                bag_ids,
                offsets,
                last_ids: ids(rng),
                dense: uniform(rng, n * DENSE_COLS),
            }
        }

        fn blocks(&self) -> [EmbedBlock<'_>; 4] {
            let [a, b] = &self.tables;
            let [da, db] = self.dims;
            let (a, b) = (rows(a, da), rows(b, db));
            [
                EmbedBlock::Table {
                    table: a,
                    lookup: Lookup::Rows(&self.ids),
                },
                EmbedBlock::Table {
                    table: b,
                    lookup: Lookup::Bags {
                        ids: &self.bag_ids,
                        offsets: &self.offsets,
                    },
                },
                EmbedBlock::Dense(rows(&self.dense, DENSE_COLS)),
                EmbedBlock::Table {
                    table: a,
                    lookup: Lookup::Rows(&self.last_ids),
                },
            ]
        }

        fn width(&self) -> usize {
            2 * self.dims[0] + self.dims[1] + DENSE_COLS
        }
    }

    #[test]
    fn embed_forward_writes_each_block_in_its_columns() {
        let mut rng = rng(14);
        for n in [1, 17, 129, 1000] {
            let m = Mixed::new(&mut rng, n);
            let [da, db] = m.dims;
            let width = m.width();
            // Each block on its own, by the single-block kernels, then side by side.
            let mut parts = [vec![0.0; n * da], vec![0.0; n * db], vec![0.0; n * da]];
            let (ta, tb) = (rows(&m.tables[0], da), rows(&m.tables[1], db));
            let [p0, p1, p2] = &mut parts;
            gather_forward(rows_mut(p0, da), ta, &m.ids, Par::Seq);
            bag_mean_forward(rows_mut(p1, db), tb, &m.bag_ids, &m.offsets, Par::Seq);
            gather_forward(rows_mut(p2, da), ta, &m.last_ids, Par::Seq);
            let mut expected = Vec::with_capacity(n * width);
            for i in 0..n {
                expected.extend_from_slice(&parts[0][i * da..(i + 1) * da]);
                expected.extend_from_slice(&parts[1][i * db..(i + 1) * db]);
                expected.extend_from_slice(&m.dense[i * DENSE_COLS..(i + 1) * DENSE_COLS]);
                expected.extend_from_slice(&parts[2][i * da..(i + 1) * da]);
            }
            for par in pars() {
                let mut out = vec![f32::NAN; n * width];
                embed_forward(rows_mut(&mut out, width), &m.blocks(), par);
                assert_eq!(out, expected, "n={n} {par:?}");
            }
        }
    }

    #[test]
    fn embed_backward_scatters_each_block_into_its_table() {
        let mut rng = rng(15);
        for n in [1, 17, 129, 1000] {
            let m = Mixed::new(&mut rng, n);
            let [da, db] = m.dims;
            let width = m.width();
            let dout = uniform(&mut rng, n * width);
            let (col_bags, col_last) = (da, da + db + DENSE_COLS);
            let mut a_ref = vec![0.0; MIXED_ROWS * da];
            let mut b_ref = vec![0.0; MIXED_ROWS * db];
            for i in 0..n {
                let row = &dout[i * width..(i + 1) * width];
                for j in 0..da {
                    a_ref[m.ids[i] as usize * da + j] += f64::from(row[j]);
                    a_ref[m.last_ids[i] as usize * da + j] += f64::from(row[col_last + j]);
                }
                let bag = &m.bag_ids[m.offsets[i]..m.offsets[i + 1]];
                for &id in bag {
                    for j in 0..db {
                        b_ref[id as usize * db + j] +=
                            f64::from(row[col_bags + j]) / bag.len() as f64;
                    }
                }
            }
            let mut results = Vec::new();
            for par in pars() {
                let (mut a, mut b) = (
                    SparseRowGrad::new(MIXED_ROWS, da),
                    SparseRowGrad::new(MIXED_ROWS, db),
                );
                let mut tasks = [
                    TableScatter {
                        grad: &mut a,
                        lookups: vec![
                            (Lookup::Rows(&m.last_ids), col_last),
                            (Lookup::Rows(&m.ids), 0),
                        ],
                    },
                    TableScatter {
                        grad: &mut b,
                        lookups: vec![(
                            Lookup::Bags {
                                ids: &m.bag_ids,
                                offsets: &m.offsets,
                            },
                            col_bags,
                        )],
                    },
                ];
                embed_backward(&mut tasks, rows(&dout, width), par);
                let what = format!("n={n} {par:?}");
                let touched: Vec<u32> = m.last_ids.iter().chain(&m.ids).copied().collect();
                assert_eq!(a.rows(), first_touch(&touched), "rows of a, {what}");
                assert_eq!(b.rows(), first_touch(&m.bag_ids), "rows of b, {what}");
                assert_close(&format!("a {what}"), &densify(&a), &a_ref, 1e-5);
                assert_close(&format!("b {what}"), &densify(&b), &b_ref, 1e-5);
                results.push((densify(&a), densify(&b)));
            }
            assert_eq!(results[0], results[1], "threads change the bits, n={n}");
        }
    }

    #[test]
    #[should_panic(expected = "embed_forward: blocks[1] has 3 rows, expected 2")]
    fn embed_panics_on_a_block_of_other_rows() {
        let table = rows(&[0.0; 6], 2);
        let blocks = [
            EmbedBlock::Table {
                table,
                lookup: Lookup::Rows(&[0, 1]),
            },
            EmbedBlock::Table {
                table,
                lookup: Lookup::Rows(&[0, 1, 2]),
            },
        ];
        embed_forward(rows_mut(&mut [0.0; 8], 4), &blocks, Par::Seq);
    }

    #[test]
    #[should_panic(expected = "lookup_backward: columns 3..5 do not fit in a width of 4")]
    fn lookup_backward_panics_on_a_block_past_the_width() {
        let mut grad = SparseRowGrad::new(3, 2);
        lookup_backward(&mut grad, Lookup::Rows(&[0]), rows(&[0.0; 4], 4), 3);
    }

    #[test]
    fn sparse_grad_sums_duplicates_and_scales() {
        let mut grad = SparseRowGrad::new(1000, 2);
        grad.add_row(7, &[1.0, 2.0], 1.0);
        grad.add_row(3, &[1.0, 1.0], 0.5);
        grad.add_row(7, &[1.0, -1.0], 2.0);
        assert_eq!(grad.rows(), [7, 3]);
        assert_eq!(grad.values(), [3.0, 0.0, 0.5, 0.5]);
        assert_eq!(grad.len(), 2);
        assert_eq!(grad.get(0), None);
        assert_eq!(grad.get(5000), None);
        grad.clear();
        assert_eq!(grad.get(7), None);
        grad.add_row(3, &[4.0, 4.0], 1.0);
        assert_eq!(grad.rows(), [3]);
        assert_eq!(grad.get(3), Some(&[4.0, 4.0][..]));
    }

    #[test]
    #[should_panic(expected = "gather_forward: ids[1] = 3 is out of range for a table of 3 rows")]
    fn gather_panics_on_out_of_range_id() {
        let mut out = vec![0.0; 4];
        gather_forward(rows_mut(&mut out, 2), rows(&[0.0; 6], 2), &[0, 3], Par::Seq);
    }

    #[test]
    #[should_panic(expected = "bag_mean_forward: offsets decrease at index 2: 3 > 1")]
    fn bag_panics_on_decreasing_offsets() {
        let mut out = vec![0.0; 6];
        let (out, table) = (rows_mut(&mut out, 2), rows(&[0.0; 6], 2));
        bag_mean_forward(out, table, &[0, 1, 2], &[0, 3, 1, 3], Par::Seq);
    }
}
