//! General matrix product of faer views into a row-major destination, through faer.
//!
//! Under `Par::Rayon(t)` a product big enough to pay for it is split here into `t` independent
//! sequential faer products, one per thread, instead of handing the threads to faer: faer's own
//! parallel kernel synchronises its threads at barriers many times per product, which on W1's
//! small shapes keeps the threads waiting at them. Tall products split by rows of the result;
//! products with a long inner dimension and a small result (weight gradients,
//! `[128 x 2048] x [2048 x 128]`) split the inner dimension, each part into its own buffer, and
//! add the parts in a fixed order.

use std::cell::Cell;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::shape::check_shape;
use crate::view::RowsMut;

/// `dst[m, n] (=|+=) alpha * a · b`, where `a` is `[m, k]` and `b` is `[k, n]`: faer views, so a
/// transposed operand is a view's `.transpose()` ([`Rows::mat`](crate::Rows::mat) of the stored
/// matrix). With `Accum::Replace` the old contents of `dst` are never read (they may be NaN);
/// with `k == 0` the product is zero.
///
/// # Panics
///
/// If `a` does not have `dst`'s rows, or `b` is not `[a.ncols(), dst.cols()]`.
#[track_caller]
pub fn gemm(
    dst: RowsMut<'_>,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    let n = dst.cols();
    gemm_cols(dst, n, accum, a, b, alpha, par);
}

/// [`gemm`] into the first `n` columns of `dst` (`n <= dst.cols()`); its other columns are
/// neither read nor written.
///
/// # Panics
///
/// If `n > dst.cols()`, `a` does not have `dst`'s rows, or `b` is not `[a.ncols(), n]`.
#[track_caller]
pub(crate) fn gemm_cols(
    dst: RowsMut<'_>,
    n: usize,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    let (m, ld) = dst.shape();
    assert!(n <= ld, "gemm: {n} columns do not fit in rows of {ld}");
    let k = a.ncols();
    check_shape("gemm", "a", (a.nrows(), k), (m, k));
    check_shape("gemm", "b", (b.nrows(), b.ncols()), (k, n));
    let dst = Dst {
        data: dst.into_data(),
        ld,
    };
    // One step along the inner dimension jumps this far in memory in a and in b.
    let stride = a
        .col_stride()
        .unsigned_abs()
        .max(b.row_stride().unsigned_abs());
    if stride >= PAGE_FLOATS && k > DEPTH_CHUNK {
        // Every step of the inner dimension lands on another page (dlogitsᵀ · users in the
        // loss backward: [4096 x 2048] x [2048 x 64] from a row-major [2048 x 4096]). Over
        // thousands of steps the pages outrun the TLB and faer slows down; in chunks of
        // DEPTH_CHUNK steps, each added to the last, they stay within it (docs/performance.md).
        let mut dst = dst;
        for (i, k0) in (0..k).step_by(DEPTH_CHUNK).enumerate() {
            let len = DEPTH_CHUNK.min(k - k0);
            let acc = if i == 0 { accum } else { Accum::Add };
            let (a_i, b_i) = (a.subcols(k0, len), b.subrows(k0, len));
            gemm_views(dst.reborrow(), acc, a_i, b_i, alpha, par, MIN_SPLIT_FLOPS);
        }
        return;
    }
    gemm_views(dst, accum, a, b, alpha, par, MIN_SPLIT_FLOPS);
}

/// A row-major destination whose rows start `ld` elements apart.
struct Dst<'a> {
    data: &'a mut [f32],
    ld: usize,
}

impl Dst<'_> {
    fn reborrow(&mut self) -> Dst<'_> {
        Dst {
            data: self.data,
            ld: self.ld,
        }
    }

    /// The first `n` columns of its `m` rows as a faer view.
    fn view(&mut self, m: usize, n: usize) -> MatMut<'_, f32> {
        // The transpose of a column-major view, not faer 0.24's
        // `from_row_major_slice_with_stride_mut`, which builds a column-major view with the
        // row-major bounds check and so writes past the rows (faer-rs pull request 267).
        MatMut::from_column_major_slice_with_stride_mut(self.data, n, m, self.ld).transpose_mut()
    }
}

/// A stride (in `f32`s) at or above which one step of the inner dimension is a new 4 KiB page.
const PAGE_FLOATS: usize = 1024;
/// Steps of the inner dimension per product when they are that far apart: few enough pages to
/// stay within the TLB, enough depth for faer's kernels (`examples/gemm_shapes.rs` times the
/// alternatives: longer chunks fall back to the slow rate).
const DEPTH_CHUNK: usize = 256;

/// Below this many multiply-adds a product runs on one thread: splitting costs more than it saves.
const MIN_SPLIT_FLOPS: usize = 1 << 20;
/// Fewest rows of the result (or of the inner dimension) a part of a split product gets.
const MIN_PART: usize = 16;

/// How [`gemm`] shares a product among threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// One faer call with the requested parallelism.
    Whole,
    /// This many parts by rows of the result.
    Rows(usize),
    /// This many parts of the inner dimension.
    Depth(usize),
}

fn split(par: Par, m: usize, n: usize, k: usize, min_flops: usize) -> Split {
    let Par::Rayon(threads) = par else {
        return Split::Whole;
    };
    let t = threads.get();
    if t < 2 || m.saturating_mul(n).saturating_mul(k) < min_flops {
        return Split::Whole;
    }
    if k >= t * MIN_PART && k >= 4 * m.max(n) {
        Split::Depth(t)
    } else if m >= t * MIN_PART {
        Split::Rows(t)
    } else {
        Split::Whole
    }
}

thread_local! {
    /// Partial products of a depth split, kept by the calling thread across calls so that the
    /// steady state allocates nothing. Taken out while in use, so a nested call on the same
    /// thread (rayon may run another task while this one waits) just allocates its own.
    static PARTIALS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Bounds of part `i` of `parts` near-equal parts of `len`.
fn part(len: usize, parts: usize, i: usize) -> (usize, usize) {
    (len * i / parts, len * (i + 1) / parts)
}

/// `dst[m, n] (=|+=) alpha * a · b`, `m`, `n` and `k` being the views' dimensions, split among
/// threads when the product has at least `min_flops` multiply-adds.
fn gemm_views(
    mut dst: Dst<'_>,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
    min_flops: usize,
) {
    let (m, n, k) = (a.nrows(), b.ncols(), a.ncols());
    let ld = dst.ld;
    match split(par, m, n, k, min_flops) {
        Split::Whole => matmul(dst.view(m, n), accum, a, b, alpha, par),
        Split::Rows(t) => {
            let mut pieces = Vec::with_capacity(t);
            let mut rest = dst.data;
            for i in 0..t {
                let (r0, r1) = part(m, t, i);
                let (head, tail) = rest.split_at_mut((r1 - r0) * ld);
                pieces.push((r0, r1, head));
                rest = tail;
            }
            pieces.into_par_iter().for_each(|(r0, r1, data)| {
                let mut d = Dst { data, ld };
                matmul(
                    d.view(r1 - r0, n),
                    accum,
                    a.subrows(r0, r1 - r0),
                    b,
                    alpha,
                    Par::Seq,
                );
            });
        }
        Split::Depth(t) => {
            let mut partials = PARTIALS.with(Cell::take);
            partials.clear();
            partials.resize((t - 1) * m * n, 0.0);
            let mut outs: Vec<(usize, Accum, Dst<'_>)> = Vec::with_capacity(t);
            outs.push((0, accum, dst.reborrow()));
            outs.extend(
                partials
                    .chunks_exact_mut(m * n)
                    .enumerate()
                    .map(|(i, p)| (i + 1, Accum::Replace, Dst { data: p, ld: n })),
            );
            outs.into_par_iter().for_each(|(i, acc, mut d)| {
                let (k0, k1) = part(k, t, i);
                let (a_i, b_i) = (a.subcols(k0, k1 - k0), b.subrows(k0, k1 - k0));
                matmul(d.view(m, n), acc, a_i, b_i, alpha, Par::Seq);
            });
            for p in partials.chunks_exact(m * n) {
                for (d, x) in dst.data.chunks_mut(ld).zip(p.chunks_exact(n)) {
                    d[..n].iter_mut().zip(x).for_each(|(d, x)| *d += x);
                }
            }
            PARTIALS.with(|cell| cell.set(partials));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, DS, NS, assert_close, destination, naive_matmul, operand, pars, rng, to_f64,
        transpose, uniform,
    };
    use crate::view::Rows;
    use proptest::prelude::*;

    /// Checks every storage layout, accumulation mode and parallelism for one shape.
    fn check_shape(m: usize, n: usize, k: usize, seed: u64) {
        let mut rng = rng(seed);
        let a = uniform(&mut rng, m * k);
        let b = uniform(&mut rng, k * n);
        let alpha = 0.75;
        let product: Vec<f64> = naive_matmul(&to_f64(&a), &to_f64(&b), m, k, n)
            .into_iter()
            .map(|v| f64::from(alpha) * v)
            .collect();
        let a_stored = [(a.clone(), false), (transpose(&a, m, k), true)];
        let b_stored = [(b.clone(), false), (transpose(&b, k, n), true)];
        for (a_s, a_t) in &a_stored {
            for (b_s, b_t) in &b_stored {
                for accum in ACCUMS {
                    for par in pars() {
                        let (mut dst, base) = destination(&mut rng, m * n, accum);
                        let (a_v, b_v) = (operand(a_s, m, k, *a_t), operand(b_s, k, n, *b_t));
                        let out = RowsMut::new(&mut dst, m, n);
                        gemm(out, accum, a_v, b_v, alpha, par);
                        let expected: Vec<f64> =
                            base.iter().zip(&product).map(|(x, y)| x + y).collect();
                        let what = format!(
                            "gemm m={m} n={n} k={k} transposed {a_t}/{b_t} {accum:?} {par:?}"
                        );
                        assert_close(&what, &dst, &expected, 1e-5);
                    }
                }
            }
        }
    }

    /// Every split of [`gemm_views`] (forced with a zero threshold) against the naive product.
    #[test]
    fn splits_match_naive() {
        let mut rng = rng(5);
        for (m, n, k) in [
            (33, 7, 5),
            (5, 9, 200),
            (64, 64, 64),
            (17, 3, 129),
            (200, 1, 1),
        ] {
            let a = uniform(&mut rng, m * k);
            let b = uniform(&mut rng, k * n);
            let product = naive_matmul(&to_f64(&a), &to_f64(&b), m, k, n);
            for threads in [2, 3] {
                let par = Par::rayon(threads);
                // A destination as wide as the product, and one with 3 more columns per row,
                // which no split may touch.
                for (accum, ld) in ACCUMS.into_iter().flat_map(|a| [(a, n), (a, n + 3)]) {
                    let (mut dst, base) = destination(&mut rng, m * ld, accum);
                    let before = dst.clone();
                    let (av, bv) = (Rows::new(&a, m, k).mat(), Rows::new(&b, k, n).mat());
                    let out = Dst { data: &mut dst, ld };
                    gemm_views(out, accum, av, bv, 1.0, par, 0);
                    let what = format!(
                        "split {:?} m={m} n={n} k={k} ld={ld} {accum:?}",
                        split(par, m, n, k, 0)
                    );
                    for i in 0..m {
                        let row = i * ld..(i + 1) * ld;
                        let expected: Vec<f64> = base[row.clone()]
                            .iter()
                            .zip(&product[i * n..(i + 1) * n])
                            .map(|(x, y)| x + y)
                            .collect();
                        assert_close(
                            &format!("{what} row {i}"),
                            &dst[row.clone()][..n],
                            &expected,
                            1e-5,
                        );
                        let (kept, was) = (&dst[row.clone()][n..], &before[row][n..]);
                        assert!(
                            kept.iter()
                                .zip(was)
                                .all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{what} row {i}: columns past n changed"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn split_choice_follows_the_shape() {
        let two = Par::rayon(2);
        assert_eq!(split(Par::Seq, 4096, 128, 128, 0), Split::Whole);
        assert_eq!(split(two, 4, 4, 4, MIN_SPLIT_FLOPS), Split::Whole);
        assert_eq!(split(two, 2048, 128, 128, MIN_SPLIT_FLOPS), Split::Rows(2));
        assert_eq!(split(two, 128, 128, 2048, MIN_SPLIT_FLOPS), Split::Depth(2));
        assert_eq!(split(two, 2048, 4096, 64, MIN_SPLIT_FLOPS), Split::Rows(2));
        assert_eq!(split(two, 4096, 64, 2048, MIN_SPLIT_FLOPS), Split::Rows(2));
        assert_eq!(split(two, 8, 4096, 2048, MIN_SPLIT_FLOPS), Split::Whole);
    }

    #[test]
    fn matches_naive_at_awkward_sizes() {
        for (i, &m) in NS.iter().enumerate() {
            for (j, &n) in DS.iter().enumerate() {
                for &k in &[1, 17, 128] {
                    check_shape(m, n, k, (i * 100 + j * 10 + k) as u64);
                }
            }
        }
    }

    /// Operands whose inner-dimension steps are a page apart go through the depth chunks: a
    /// transposed `a` with `m >= 1024` columns stored, a plain `b` with `n >= 1024`, and a depth
    /// that is not a multiple of the chunk.
    #[test]
    fn page_strided_operands_in_depth_chunks_match_naive() {
        check_shape(PAGE_FLOATS + 3, 2, DEPTH_CHUNK * 2 + 5, 41);
        check_shape(2, PAGE_FLOATS, DEPTH_CHUNK + 1, 42);
    }

    #[test]
    fn empty_inner_dimension_gives_zero() {
        let mut dst = vec![f32::NAN; 6];
        let out = RowsMut::new(&mut dst, 2, 3);
        let (a, b) = (operand(&[], 2, 0, false), operand(&[], 0, 3, true));
        gemm(out, Accum::Replace, a, b, 1.0, Par::Seq);
        assert_eq!(dst, vec![0.0; 6]);
        let mut dst = vec![2.0; 6];
        let out = RowsMut::new(&mut dst, 2, 3);
        let (a, b) = (operand(&[], 2, 0, true), operand(&[], 0, 3, false));
        gemm(out, Accum::Add, a, b, 1.0, Par::rayon(2));
        assert_eq!(dst, vec![2.0; 6]);
    }

    #[test]
    #[should_panic(expected = "gemm: `b` is 2 x 2, expected 3 x 2")]
    fn panics_on_wrong_shape() {
        let mut dst = vec![0.0; 4];
        let out = RowsMut::new(&mut dst, 2, 2);
        let (a, b) = (Rows::new(&[0.0; 6], 2, 3), Rows::new(&[0.0; 4], 2, 2));
        gemm(out, Accum::Replace, a.mat(), b.mat(), 1.0, Par::Seq);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_on_random_shapes(m in 1usize..40, n in 1usize..40, k in 1usize..70, seed in any::<u64>()) {
            check_shape(m, n, k, seed);
        }
    }
}
