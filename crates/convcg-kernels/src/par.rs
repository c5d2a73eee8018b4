//! Row-blocked loops that run inline under `Par::Seq` and on rayon under `Par::Rayon`.
//!
//! Work is split only into blocks of whole rows (or whole columns for column sums), so every
//! element is computed by the same sequence of operations whatever the thread count: results
//! are bit-identical between `Par::Seq` and any `Par::Rayon(_)`.

use faer::Par;
use rayon::prelude::*;

/// Below this many elements a task costs more to schedule than it saves.
const MIN_TASK_ELEMS: usize = 4096;

/// Rows per task when `n` rows of `row_cost` elements each run under `par`, or `None` to run
/// them inline. Splits into at most one block per requested thread so that `Par::Rayon(t)`
/// keeps about `t` threads busy, not the whole pool.
pub(crate) fn rows_per_task(par: Par, n: usize, row_cost: usize) -> Option<usize> {
    let Par::Rayon(threads) = par else {
        return None;
    };
    let threads = threads.get();
    if threads < 2 || n.saturating_mul(row_cost) < 2 * MIN_TASK_ELEMS {
        return None;
    }
    let min_rows = MIN_TASK_ELEMS.div_ceil(row_cost.max(1));
    let rows = n.div_ceil(threads).max(min_rows);
    (rows < n).then_some(rows)
}

/// Calls `f(first_row, block)` on consecutive row blocks of `a`, an `[n, wa]` matrix.
pub(crate) fn for_rows<F>(par: Par, n: usize, a: &mut [f32], wa: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    match rows_per_task(par, n, wa) {
        Some(rows) if wa > 0 => a
            .par_chunks_mut(rows * wa)
            .enumerate()
            .for_each(|(t, a)| f(t * rows, a)),
        _ => f(0, a),
    }
}

/// Like [`for_rows`] over two matrices with the same rows: `a` is `[n, wa]`, `b` is `[n, wb]`.
pub(crate) fn for_rows2<F>(
    par: Par,
    n: usize,
    a: &mut [f32],
    wa: usize,
    b: &mut [f32],
    wb: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    match rows_per_task(par, n, wa + wb) {
        Some(rows) if wa > 0 && wb > 0 => a
            .par_chunks_mut(rows * wa)
            .zip(b.par_chunks_mut(rows * wb))
            .enumerate()
            .for_each(|(t, (a, b))| f(t * rows, a, b)),
        _ => f(0, a, b),
    }
}

/// Like [`for_rows`] over three matrices of the same width `w` and the same rows.
pub(crate) fn for_rows3<F>(
    par: Par,
    n: usize,
    w: usize,
    a: &mut [f32],
    b: &mut [f32],
    c: &mut [f32],
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync + Send,
{
    match rows_per_task(par, n, 3 * w) {
        Some(rows) if w > 0 => a
            .par_chunks_mut(rows * w)
            .zip(b.par_chunks_mut(rows * w))
            .zip(c.par_chunks_mut(rows * w))
            .enumerate()
            .for_each(|(t, ((a, b), c))| f(t * rows, a, b, c)),
        _ => f(0, a, b, c),
    }
}

/// `dst[j] += Σ_i src[i, j]` for `src` an `[n, d]` matrix.
///
/// Tasks own column blocks, never row blocks, so each column is summed over the rows in order
/// and the result does not depend on the thread count.
pub(crate) fn add_col_sums(dst: &mut [f32], src: &[f32], n: usize, d: usize, par: Par) {
    if d == 0 {
        return;
    }
    let sum_block = |c0: usize, dst: &mut [f32]| {
        let width = dst.len();
        for row in src.chunks_exact(d) {
            for (acc, &v) in dst.iter_mut().zip(&row[c0..c0 + width]) {
                *acc += v;
            }
        }
    };
    match rows_per_task(par, d, n) {
        Some(cols) => dst
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(t, dst)| sum_block(t * cols, dst)),
        None => sum_block(0, dst),
    }
}
