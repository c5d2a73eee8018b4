//! Embedding lookups (single ids and mean-pooled bags) and their sparse row gradients.

use std::fmt;

use faer::Par;

use crate::par::for_rows;
use crate::shape::check_len;

/// The number of rows of `table` (`[rows, dim]`), checking that `dim` divides it.
#[track_caller]
fn table_rows(kernel: &str, table: &[f32], dim: usize) -> usize {
    assert!(dim > 0, "{kernel}: `dim` must be positive");
    assert!(
        table.len().is_multiple_of(dim),
        "{kernel}: `table` has {} elements, not a multiple of dim = {dim}",
        table.len()
    );
    table.len() / dim
}

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

/// `out[i, :] = table[ids[i], :]`, where `table` is `[rows, dim]` and `out` is `[ids.len(), dim]`.
///
/// # Panics
///
/// If `dim == 0`, `table.len()` is not a multiple of `dim`, `out.len() != ids.len() * dim`, or
/// an id is not below the table's row count.
#[track_caller]
pub fn gather_forward(table: &[f32], dim: usize, ids: &[u32], out: &mut [f32], par: Par) {
    let rows = table_rows("gather_forward", table, dim);
    check_len("gather_forward", "out", out.len(), ids.len() * dim);
    check_ids("gather_forward", ids, rows);
    for_rows(par, ids.len(), out, dim, |first, out| {
        for (out, &id) in out.chunks_exact_mut(dim).zip(&ids[first..]) {
            let at = id as usize * dim;
            out.copy_from_slice(&table[at..at + dim]);
        }
    });
}

/// Mean-pooled bags: bag `i` is `ids[offsets[i]..offsets[i + 1]]` and `out[i]` is the mean of
/// its rows of `table` (`[rows, dim]`), all zeros for an empty bag. `out` is `[n, dim]`.
///
/// `offsets` has `n + 1` entries: `offsets[0] = 0`, non-decreasing, the last is `ids.len()`.
///
/// # Panics
///
/// If `dim == 0`, `table.len()` is not a multiple of `dim`, `offsets` breaks the contract
/// above, `out.len() != n * dim`, or an id is not below the table's row count.
#[track_caller]
pub fn bag_mean_forward(
    table: &[f32],
    dim: usize,
    ids: &[u32],
    offsets: &[usize],
    out: &mut [f32],
    par: Par,
) {
    let rows = table_rows("bag_mean_forward", table, dim);
    let n = check_offsets("bag_mean_forward", offsets, ids.len());
    check_len("bag_mean_forward", "out", out.len(), n * dim);
    check_ids("bag_mean_forward", ids, rows);
    for_rows(par, n, out, dim, |first, out| {
        for (i, out) in out.chunks_exact_mut(dim).enumerate() {
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
    });
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

/// Scatter-add backward of [`gather_forward`]: `grad[ids[i]] += dout[i]`.
///
/// # Panics
///
/// If `dout.len() != ids.len() * grad.dim()` or an id is not below `grad.num_rows()`.
#[track_caller]
pub fn gather_backward(ids: &[u32], dout: &[f32], grad: &mut SparseRowGrad) {
    let dim = grad.dim();
    check_len("gather_backward", "dout", dout.len(), ids.len() * dim);
    check_ids("gather_backward", ids, grad.num_rows());
    for (i, &id) in ids.iter().enumerate() {
        grad.add_row(id, &dout[i * dim..(i + 1) * dim], 1.0);
    }
}

/// Scatter-add backward of [`bag_mean_forward`]: each id of bag `i` gets `dout[i] / bag_len`
/// added to its row (once per occurrence); empty bags contribute nothing.
///
/// # Panics
///
/// If `offsets` breaks the contract of [`bag_mean_forward`], `dout.len() != n * grad.dim()`, or
/// an id is not below `grad.num_rows()`.
#[track_caller]
pub fn bag_mean_backward(ids: &[u32], offsets: &[usize], dout: &[f32], grad: &mut SparseRowGrad) {
    let dim = grad.dim();
    let n = check_offsets("bag_mean_backward", offsets, ids.len());
    check_len("bag_mean_backward", "dout", dout.len(), n * dim);
    check_ids("bag_mean_backward", ids, grad.num_rows());
    for (i, bag) in offsets.windows(2).enumerate() {
        let bag = &ids[bag[0]..bag[1]];
        let scale = 1.0 / bag.len() as f32;
        for &id in bag {
            grad.add_row(id, &dout[i * dim..(i + 1) * dim], scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{DS, NS, assert_close, dot, fd_check, pars, rng, to_f64, uniform};
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
                let rows = 7;
                let table = uniform(&mut rng, rows * dim);
                let table64 = to_f64(&table);
                let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..rows as u32)).collect();
                let one_per_bag: Vec<usize> = (0..=n).collect();
                let gathered = naive_bag_mean(&table64, dim, &ids, &one_per_bag);
                let (bag_ids, offsets) = bags(&mut rng, n, rows);
                let pooled = naive_bag_mean(&table64, dim, &bag_ids, &offsets);
                for par in pars() {
                    let mut out = vec![f32::NAN; n * dim];
                    gather_forward(&table, dim, &ids, &mut out, par);
                    assert_close(
                        &format!("gather n={n} dim={dim} {par:?}"),
                        &out,
                        &gathered,
                        0.0,
                    );
                    bag_mean_forward(&table, dim, &bag_ids, &offsets, &mut out, par);
                    assert_close(&format!("bag n={n} dim={dim} {par:?}"), &out, &pooled, 1e-6);
                }
            }
        }
    }

    #[test]
    fn backwards_match_naive_scatter() {
        let mut rng = rng(12);
        let rows = 9;
        for &n in &NS {
            for &dim in &DS {
                let dout = uniform(&mut rng, n * dim);
                let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..rows as u32)).collect();
                let (bag_ids, offsets) = bags(&mut rng, n, rows);
                let mut gather_ref = vec![0.0; rows * dim];
                let mut bag_ref = vec![0.0; rows * dim];
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
                let mut grad = SparseRowGrad::new(rows, dim);
                gather_backward(&ids, &dout, &mut grad);
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
                bag_mean_backward(&bag_ids, &offsets, &dout, &mut grad);
                assert_eq!(grad.rows(), first_touch(&bag_ids), "bag rows {what}");
                assert_close(&format!("bag grad {what}"), &densify(&grad), &bag_ref, 1e-6);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng(13);
        let (rows, dim, n) = (6, 5, 7);
        let table = uniform(&mut rng, rows * dim);
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..rows as u32)).collect();
        let (bag_ids, offsets) = bags(&mut rng, n, rows);
        let r = uniform(&mut rng, n * dim);
        let r64 = to_f64(&r);

        let mut grad = SparseRowGrad::new(rows, dim);
        gather_backward(&ids, &r, &mut grad);
        let one_per_bag: Vec<usize> = (0..=n).collect();
        fd_check(
            &["table (gather)"],
            &[to_f64(&table)],
            &[&densify(&grad)],
            |p| dot(&r64, &naive_bag_mean(&p[0], dim, &ids, &one_per_bag)),
        );

        grad.clear();
        bag_mean_backward(&bag_ids, &offsets, &r, &mut grad);
        fd_check(
            &["table (bag mean)"],
            &[to_f64(&table)],
            &[&densify(&grad)],
            |p| dot(&r64, &naive_bag_mean(&p[0], dim, &bag_ids, &offsets)),
        );
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
        gather_forward(&[0.0; 6], 2, &[0, 3], &mut out, Par::Seq);
    }

    #[test]
    #[should_panic(expected = "bag_mean_forward: offsets decrease at index 2: 3 > 1")]
    fn bag_panics_on_decreasing_offsets() {
        let mut out = vec![0.0; 6];
        bag_mean_forward(&[0.0; 6], 2, &[0, 1, 2], &[0, 3, 1, 3], &mut out, Par::Seq);
    }
}
