//! Affine map `y = x · w + b`, forward and backward.

use faer::{Accum, Par};

use crate::gemm::{Trans, gemm, gemm_ld};
use crate::par::{add_col_sums, for_rows};
use crate::shape::check_len;

/// `y[n, d_out] = x[n, d_in] · w[d_in, d_out] (+ b[d_out])`.
///
/// `y` is overwritten; its old contents are never read.
///
/// # Panics
///
/// If `x.len() != n * d_in`, `w.len() != d_in * d_out`, `y.len() != n * d_out`, or `b` is given
/// and `b.len() != d_out`.
#[track_caller]
pub fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    par: Par,
) {
    check_forward("linear_forward", x, w, b, y, n, d_in, d_out);
    let accum = match b {
        Some(b) => {
            for_rows(par, n, y, d_out, |_, y| {
                for row in y.chunks_exact_mut(d_out) {
                    row.copy_from_slice(b);
                }
            });
            Accum::Add
        }
        None => Accum::Replace,
    };
    gemm(
        y,
        n,
        d_out,
        d_in,
        accum,
        x,
        Trans::No,
        w,
        Trans::No,
        1.0,
        par,
    );
}

/// The operand lengths of a forward of `n` rows from `d_in` to `d_out` columns.
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn check_forward(
    kernel: &str,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &[f32],
    n: usize,
    d_in: usize,
    d_out: usize,
) {
    check_len(kernel, "x", x.len(), n * d_in);
    check_len(kernel, "w", w.len(), d_in * d_out);
    check_len(kernel, "y", y.len(), n * d_out);
    if let Some(b) = b {
        check_len(kernel, "b", b.len(), d_out);
    }
}

/// Rows per block of [`linear_relu_forward`]: 256 rows of a 256-wide output are 256 KiB, which
/// stay in the L2 cache from the product to the ReLU.
const RELU_BLOCK_ROWS: usize = 256;

/// `y[n, d_out] = max(x[n, d_in] · w[d_in, d_out] (+ b[d_out]), 0)`: [`linear_forward`] and
/// [`relu_forward`](crate::relu_forward) in one, the same values (NaN stays NaN).
///
/// Each thread takes a contiguous run of rows and works through it in blocks of 256 rows:
/// bias, product and ReLU on one block while it is in the L2 cache, so the output goes to memory
/// once instead of three times (bias, product, ReLU).
///
/// # Panics
///
/// As [`linear_forward`].
#[track_caller]
pub fn linear_relu_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    par: Par,
) {
    check_forward("linear_relu_forward", x, w, b, y, n, d_in, d_out);
    if d_out == 0 {
        return;
    }
    for_rows(par, n, y, d_out, |first, y| {
        for (i, block) in y.chunks_mut(RELU_BLOCK_ROWS * d_out).enumerate() {
            let r0 = first + i * RELU_BLOCK_ROWS;
            let rows = block.len() / d_out;
            let x_blk = &x[r0 * d_in..(r0 + rows) * d_in];
            linear_forward(x_blk, w, b, block, rows, d_in, d_out, Par::Seq);
            for v in block.iter_mut() {
                *v = if *v < 0.0 { 0.0 } else { *v };
            }
        }
    });
}

/// Where a backward kernel puts the gradient of an input, `[n, width]`.
#[derive(Debug)]
pub struct InputGrad<'a> {
    /// The gradient, `[n, width]`.
    pub dx: &'a mut [f32],
    /// How it receives the kernel's contribution.
    pub accum: Accum,
    /// How many leading columns are computed, at most `width`; the others are neither read nor
    /// written. The full width unless nothing reads the gradient of the trailing columns (the
    /// constant inputs at the end of a tower's x0).
    pub cols: usize,
}

/// Backward of [`linear_forward`]: `dx (=|+= per its accum) dy · wᵀ`, its first `cols` columns
/// only; `dw += xᵀ · dy`; `db += column sums of dy`.
///
/// Pass `dx: None` when the input needs no gradient (a leaf such as a batch of features), and
/// `db: None` when the forward had no bias.
///
/// # Panics
///
/// If `x.len() != n * d_in`, `w.len() != d_in * d_out`, `dy.len() != n * d_out`,
/// `dw.len() != d_in * d_out`, `dx` is given and `dx.len() != n * d_in` or its `cols > d_in`,
/// or `db` is given and `db.len() != d_out`.
#[track_caller]
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<InputGrad<'_>>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    n: usize,
    d_in: usize,
    d_out: usize,
    par: Par,
) {
    check_len("linear_backward", "x", x.len(), n * d_in);
    check_len("linear_backward", "w", w.len(), d_in * d_out);
    check_len("linear_backward", "dy", dy.len(), n * d_out);
    check_len("linear_backward", "dw", dw.len(), d_in * d_out);
    if let Some(InputGrad { dx, accum, cols }) = dx {
        check_len("linear_backward", "dx", dx.len(), n * d_in);
        assert!(
            cols <= d_in,
            "linear_backward: {cols} columns of dx wanted, it has {d_in}"
        );
        // Column j of dx is dy times row j of w: the first `cols` rows of w give the first
        // `cols` columns.
        gemm_ld(
            dx,
            d_in,
            n,
            cols,
            d_out,
            accum,
            dy,
            Trans::No,
            &w[..cols * d_out],
            Trans::Yes,
            1.0,
            par,
        );
    }
    if let Some(db) = db {
        check_len("linear_backward", "db", db.len(), d_out);
        add_col_sums(db, dy, n, d_out, par);
    }
    gemm(
        dw,
        d_in,
        d_out,
        n,
        Accum::Add,
        x,
        Trans::Yes,
        dy,
        Trans::No,
        1.0,
        par,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, DS, NS, add, assert_close, destination, dot, fd_check, naive_matmul, pars, rng,
        to_f64, transpose, uniform,
    };

    /// `x · w (+ b)` in f64.
    pub(crate) fn naive_linear(
        x: &[f64],
        w: &[f64],
        b: Option<&[f64]>,
        n: usize,
        d_in: usize,
        d_out: usize,
    ) -> Vec<f64> {
        let mut y = naive_matmul(x, w, n, d_in, d_out);
        if let Some(b) = b {
            for row in y.chunks_exact_mut(d_out) {
                for (v, bj) in row.iter_mut().zip(b) {
                    *v += bj;
                }
            }
        }
        y
    }

    #[test]
    fn forward_and_backward_match_naive() {
        let mut rng = rng(1);
        for &n in &NS {
            for (&d_in, &d_out) in DS.iter().zip(DS.iter().rev()) {
                let x = uniform(&mut rng, n * d_in);
                let w = uniform(&mut rng, d_in * d_out);
                let b = uniform(&mut rng, d_out);
                let dy = uniform(&mut rng, n * d_out);
                let (x64, w64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&dy));
                let y_ref = naive_linear(&x64, &w64, Some(&to_f64(&b)), n, d_in, d_out);
                let y_nobias_ref = naive_linear(&x64, &w64, None, n, d_in, d_out);
                let dx_ref = naive_matmul(&dy64, &transpose(&w64, d_in, d_out), n, d_out, d_in);
                let dw_ref = naive_matmul(&transpose(&x64, n, d_in), &dy64, d_in, n, d_out);
                let db_ref: Vec<f64> = (0..d_out)
                    .map(|j| (0..n).map(|i| dy64[i * d_out + j]).sum())
                    .collect();
                for par in pars() {
                    let what = format!("n={n} d_in={d_in} d_out={d_out} {par:?}");
                    let mut y = vec![f32::NAN; n * d_out];
                    linear_forward(&x, &w, Some(&b), &mut y, n, d_in, d_out, par);
                    assert_close(&format!("y {what}"), &y, &y_ref, 1e-5);
                    linear_forward(&x, &w, None, &mut y, n, d_in, d_out, par);
                    assert_close(&format!("y (no bias) {what}"), &y, &y_nobias_ref, 1e-5);
                    for (accum, cols) in ACCUMS.into_iter().flat_map(|a| [(a, d_in), (a, d_in / 2)])
                    {
                        let (mut dx, dx_base) = destination(&mut rng, n * d_in, accum);
                        let (mut dw, dw_base) = destination(&mut rng, d_in * d_out, Accum::Add);
                        let (mut db, db_base) = destination(&mut rng, d_out, Accum::Add);
                        let untouched = dx.clone();
                        let grad = InputGrad {
                            dx: &mut dx,
                            accum,
                            cols,
                        };
                        linear_backward(
                            &x,
                            &w,
                            &dy,
                            Some(grad),
                            &mut dw,
                            Some(&mut db),
                            n,
                            d_in,
                            d_out,
                            par,
                        );
                        // The first `cols` columns get the gradient; the others keep what
                        // they held (NaN under `Replace`), bit for bit.
                        let dx_want = add(&dx_base, &dx_ref);
                        for i in 0..n {
                            let row = i * d_in..(i + 1) * d_in;
                            let (got, want) = (&dx[row.clone()], &dx_want[row.clone()]);
                            let what = format!("dx row {i} {accum:?} cols={cols} {what}");
                            assert_close(&what, &got[..cols], &want[..cols], 1e-5);
                            let (kept, before) = (&got[cols..], &untouched[row][cols..]);
                            assert!(
                                kept.iter()
                                    .zip(before)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{what}: columns past cols changed"
                            );
                        }
                        assert_close(&format!("dw {what}"), &dw, &add(&dw_base, &dw_ref), 1e-5);
                        assert_close(&format!("db {what}"), &db, &add(&db_base, &db_ref), 1e-5);
                    }
                    let (mut dw, dw_base) = destination(&mut rng, d_in * d_out, Accum::Add);
                    linear_backward(&x, &w, &dy, None, &mut dw, None, n, d_in, d_out, par);
                    assert_close(
                        &format!("dw (no dx, db) {what}"),
                        &dw,
                        &add(&dw_base, &dw_ref),
                        1e-5,
                    );
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng(2);
        for &(n, d_in, d_out) in &[(1, 1, 1), (3, 7, 5), (5, 17, 16)] {
            let x = uniform(&mut rng, n * d_in);
            let w = uniform(&mut rng, d_in * d_out);
            let b = uniform(&mut rng, d_out);
            let r = uniform(&mut rng, n * d_out);
            let mut dx = vec![0.0; n * d_in];
            let mut dw = vec![0.0; d_in * d_out];
            let mut db = vec![0.0; d_out];
            linear_backward(
                &x,
                &w,
                &r,
                Some(InputGrad {
                    dx: &mut dx,
                    accum: Accum::Replace,
                    cols: d_in,
                }),
                &mut dw,
                Some(&mut db),
                n,
                d_in,
                d_out,
                Par::Seq,
            );
            let r64 = to_f64(&r);
            fd_check(
                &["x", "w", "b"],
                &[to_f64(&x), to_f64(&w), to_f64(&b)],
                &[&dx, &dw, &db],
                |p| {
                    dot(
                        &r64,
                        &naive_linear(&p[0], &p[1], Some(&p[2]), n, d_in, d_out),
                    )
                },
            );
        }
    }

    /// The fused layer against the naive `max(x · w + b, 0)`, over several row blocks (the last
    /// partial) and thread counts, with and without a bias; NaN stays NaN.
    #[test]
    fn linear_relu_matches_naive() {
        let mut rng = rng(4);
        for &(n, d_in, d_out) in &[(1, 3, 5), (129, 17, 16), (600, 33, 40)] {
            let x = uniform(&mut rng, n * d_in);
            let w = uniform(&mut rng, d_in * d_out);
            let b = uniform(&mut rng, d_out);
            let (x64, w64) = (to_f64(&x), to_f64(&w));
            for bias in [Some(b.as_slice()), None] {
                let b64 = bias.map(to_f64);
                let expected: Vec<f64> = naive_linear(&x64, &w64, b64.as_deref(), n, d_in, d_out)
                    .into_iter()
                    .map(|v| v.max(0.0))
                    .collect();
                for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                    let mut y = vec![f32::NAN; n * d_out];
                    linear_relu_forward(&x, &w, bias, &mut y, n, d_in, d_out, par);
                    let what =
                        format!("n={n} d_in={d_in} d_out={d_out} {par:?} {}", bias.is_some());
                    assert_close(&what, &y, &expected, 1e-5);
                }
            }
        }
        let mut y = [0.0; 2];
        linear_relu_forward(&[f32::NAN], &[1.0, 1.0], None, &mut y, 1, 1, 2, Par::Seq);
        assert!(y.iter().all(|v| v.is_nan()));
    }

    #[test]
    #[should_panic(expected = "linear_forward: `b` has 2 elements, expected 3")]
    fn panics_on_wrong_bias_length() {
        let mut y = vec![0.0; 3];
        linear_forward(
            &[1.0; 2],
            &[1.0; 6],
            Some(&[0.0; 2]),
            &mut y,
            1,
            2,
            3,
            Par::Seq,
        );
    }
}
