//! Affine map `y = x · w + b`, forward and backward.

use faer::{Accum, Par};

use crate::bf16::Precision;
use crate::gemm::gemm;
use crate::par::{add_col_sums, for_rows};
use crate::shape::{check_len, check_shape};
use crate::view::{InputGrad, Rows, RowsMut};

/// `y[n, d_out] = x[n, d_in] · w[d_in, d_out] (+ b[d_out])`, the product in `precision`.
///
/// `y` is overwritten; its old contents are never read.
///
/// # Panics
///
/// If `w` does not have `x`'s width as rows, `y` is not `[n, d_out]`, or `b` is given and
/// `b.len() != d_out`.
#[track_caller]
pub fn linear_forward(
    mut y: RowsMut<'_>,
    x: Rows<'_>,
    w: Rows<'_>,
    b: Option<&[f32]>,
    precision: Precision,
    par: Par,
) {
    check_forward("linear_forward", &y, x, w, b);
    let (n, d_out) = y.shape();
    let accum = match b {
        Some(b) => {
            for_rows(par, n, y.data(), d_out, |_, y| {
                for row in y.chunks_exact_mut(d_out) {
                    row.copy_from_slice(b);
                }
            });
            Accum::Add
        }
        None => Accum::Replace,
    };
    precision.gemm(y, accum, x.mat(), w.mat(), 1.0, par);
}

/// The operand shapes of a forward from `x` through `w` (and `b`) into `y`.
#[track_caller]
fn check_forward(kernel: &str, y: &RowsMut<'_>, x: Rows<'_>, w: Rows<'_>, b: Option<&[f32]>) {
    let (n, d_in) = x.shape();
    let d_out = w.cols();
    check_shape(kernel, "w", w.shape(), (d_in, d_out));
    check_shape(kernel, "y", y.shape(), (n, d_out));
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
/// In f32 each thread takes a contiguous run of rows and works through it in blocks of 256 rows:
/// bias, product and ReLU on one block while it is in the L2 cache, so the output goes to memory
/// once instead of three times (bias, product, ReLU).
///
/// # Panics
///
/// As [`linear_forward`].
#[track_caller]
pub fn linear_relu_forward(
    mut y: RowsMut<'_>,
    x: Rows<'_>,
    w: Rows<'_>,
    b: Option<&[f32]>,
    precision: Precision,
    par: Par,
) {
    check_forward("linear_relu_forward", &y, x, w, b);
    let (n, d_out) = y.shape();
    let d_in = x.cols();
    if d_out == 0 {
        return;
    }
    if precision == Precision::Bf16 {
        // The bf16 product packs `w` once for all rows, so it runs whole, then one pass applies
        // the ReLU.
        linear_forward(y.rb_mut(), x, w, b, precision, par);
        for_rows(par, n, y.data(), d_out, |_, y| relu_in_place(y));
        return;
    }
    for_rows(par, n, y.data(), d_out, |first, y| {
        for (i, block) in y.chunks_mut(RELU_BLOCK_ROWS * d_out).enumerate() {
            let r0 = first + i * RELU_BLOCK_ROWS;
            let rows = block.len() / d_out;
            let x_blk = Rows::new(&x.data()[r0 * d_in..(r0 + rows) * d_in], rows, d_in);
            let out = RowsMut::new(block, rows, d_out);
            linear_forward(out, x_blk, w, b, Precision::F32, Par::Seq);
            relu_in_place(block);
        }
    });
}

/// `max(v, 0)` for each `v` of `y`, in place (NaN stays NaN).
fn relu_in_place(y: &mut [f32]) {
    for v in y.iter_mut() {
        *v = if *v < 0.0 { 0.0 } else { *v };
    }
}

/// Where a backward kernel accumulates the gradients of a weight and of its bias, if any.
/// Parameter gradients always accumulate (`+=`): a parameter may serve several times a step.
#[derive(Debug)]
pub struct WeightGrads<'a> {
    /// The weight's gradient, of the weight's shape.
    pub dw: RowsMut<'a>,
    /// The bias's gradient, one per output column; `None` when there is no bias.
    pub db: Option<&'a mut [f32]>,
}

/// Backward of [`linear_forward`] from the output gradient `dy`: `dx (=|+= per its accum)
/// dy · wᵀ` in its leading columns ([`InputGrad::leading`]), the others left as they were, the
/// product in `precision`; `dw += xᵀ · dy` in f32; `db += column sums of dy`.
///
/// Pass `dx: None` when the input needs no gradient (a leaf such as a batch of features), and
/// `db: None` when the forward had no bias.
///
/// # Panics
///
/// If `w` does not have `x`'s width as rows, `dy` is not `[n, d_out]`, `dw` is not `w`'s shape,
/// `dx` is given and is not `x`'s shape, or `db` is given and `db.len() != d_out`.
#[track_caller]
pub fn linear_backward(
    dx: Option<InputGrad<'_>>,
    grads: WeightGrads<'_>,
    x: Rows<'_>,
    w: Rows<'_>,
    dy: Rows<'_>,
    precision: Precision,
    par: Par,
) {
    const K: &str = "linear_backward";
    let (n, d_in) = x.shape();
    let d_out = w.cols();
    check_shape(K, "w", w.shape(), (d_in, d_out));
    check_shape(K, "dy", dy.shape(), (n, d_out));
    let WeightGrads { dw, db } = grads;
    check_shape(K, "dw", dw.shape(), (d_in, d_out));
    if let Some(dx) = dx {
        dx.check(K, "dx", (n, d_in));
        let InputGrad { dx, accum, cols } = dx;
        // Column j of dx is dy times row j of w: the first `cols` rows of w give the first
        // `cols` columns.
        let w_rows = Rows::new(&w.data()[..cols * d_out], cols, d_out);
        let w_t = w_rows.mat().transpose();
        precision.gemm_cols(dx, cols, accum, dy.mat(), w_t, 1.0, par);
    }
    if let Some(db) = db {
        check_len(K, "db", db.len(), d_out);
        add_col_sums(db, dy.data(), n, d_out, par);
    }
    gemm(dw, Accum::Add, x.mat().transpose(), dy.mat(), 1.0, par);
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
                    let (xv, wv) = (Rows::new(&x, n, d_in), Rows::new(&w, d_in, d_out));
                    let dyv = Rows::new(&dy, n, d_out);
                    let mut y = vec![f32::NAN; n * d_out];
                    linear_forward(
                        RowsMut::new(&mut y, n, d_out),
                        xv,
                        wv,
                        Some(&b),
                        Precision::F32,
                        par,
                    );
                    assert_close(&format!("y {what}"), &y, &y_ref, 1e-5);
                    linear_forward(
                        RowsMut::new(&mut y, n, d_out),
                        xv,
                        wv,
                        None,
                        Precision::F32,
                        par,
                    );
                    assert_close(&format!("y (no bias) {what}"), &y, &y_nobias_ref, 1e-5);
                    for (accum, cols) in ACCUMS.into_iter().flat_map(|a| [(a, d_in), (a, d_in / 2)])
                    {
                        let (mut dx, dx_base) = destination(&mut rng, n * d_in, accum);
                        let (mut dw, dw_base) = destination(&mut rng, d_in * d_out, Accum::Add);
                        let (mut db, db_base) = destination(&mut rng, d_out, Accum::Add);
                        let untouched = dx.clone();
                        let grad =
                            InputGrad::new(RowsMut::new(&mut dx, n, d_in), accum).leading(cols);
                        let weights = WeightGrads {
                            dw: RowsMut::new(&mut dw, d_in, d_out),
                            db: Some(&mut db),
                        };
                        linear_backward(Some(grad), weights, xv, wv, dyv, Precision::F32, par);
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
                    let weights = WeightGrads {
                        dw: RowsMut::new(&mut dw, d_in, d_out),
                        db: None,
                    };
                    linear_backward(None, weights, xv, wv, dyv, Precision::F32, par);
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

    /// `actual` against `value` within f32 summation error: `(k + 3) u` times `scale`, the sum
    /// of the magnitudes of each element's terms.
    fn assert_within_sums(what: &str, actual: &[f32], value: &[f64], scale: &[f64], k: usize) {
        for (i, ((&got, &want), &scale)) in actual.iter().zip(value).zip(scale).enumerate() {
            let tol = (k as f64 + 3.0) * f64::powi(2.0, -24) * scale + 1e-30;
            let got = f64::from(got);
            assert!(
                (got - want).abs() <= tol,
                "{what} [{i}]: {got} against {want}"
            );
        }
    }

    /// In bf16 the forward products and `dx` are the rounded operands' products summed in f32,
    /// `dw` stays the f32 product, on every engine the process would pick.
    #[test]
    fn bf16_products_are_the_rounded_operands_products() {
        use crate::bf16::bf16_round;
        let mut rng = rng(3);
        let round =
            |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(bf16_round(x))).collect() };
        let abs = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.abs()).collect() };
        for &(n, d_in, d_out) in &[(1, 1, 1), (33, 17, 40), (70, 128, 64)] {
            let x = uniform(&mut rng, n * d_in);
            let w = uniform(&mut rng, d_in * d_out);
            let b = uniform(&mut rng, d_out);
            let dy = uniform(&mut rng, n * d_out);
            let (xr, wr, dyr) = (round(&x), round(&w), round(&dy));
            let wr_t = transpose(&wr, d_in, d_out);
            let b64 = to_f64(&b);
            let y_ref = naive_linear(&xr, &wr, Some(&b64), n, d_in, d_out);
            let y_scale = naive_linear(&abs(&xr), &abs(&wr), Some(&abs(&b64)), n, d_in, d_out);
            let dx_ref = naive_matmul(&dyr, &wr_t, n, d_out, d_in);
            let dx_scale = naive_matmul(&abs(&dyr), &abs(&wr_t), n, d_out, d_in);
            let x_t = transpose(&to_f64(&x), n, d_in);
            let dw_ref = naive_matmul(&x_t, &to_f64(&dy), d_in, n, d_out);
            let dw_scale = naive_matmul(&abs(&x_t), &abs(&to_f64(&dy)), d_in, n, d_out);
            for par in pars() {
                let what = format!("n={n} d_in={d_in} d_out={d_out} {par:?}");
                let (xv, wv) = (Rows::new(&x, n, d_in), Rows::new(&w, d_in, d_out));
                let mut y = vec![f32::NAN; n * d_out];
                let out = RowsMut::new(&mut y, n, d_out);
                linear_forward(out, xv, wv, Some(&b), Precision::Bf16, par);
                assert_within_sums(&format!("y {what}"), &y, &y_ref, &y_scale, d_in);
                let out = RowsMut::new(&mut y, n, d_out);
                linear_relu_forward(out, xv, wv, Some(&b), Precision::Bf16, par);
                let relu_ref: Vec<f64> = y_ref.iter().map(|&v| v.max(0.0)).collect();
                assert_within_sums(&format!("relu {what}"), &y, &relu_ref, &y_scale, d_in);
                let mut dx = vec![f32::NAN; n * d_in];
                let mut dw = vec![0.0; d_in * d_out];
                let grad = InputGrad::new(RowsMut::new(&mut dx, n, d_in), Accum::Replace);
                let weights = WeightGrads {
                    dw: RowsMut::new(&mut dw, d_in, d_out),
                    db: None,
                };
                let dyv = Rows::new(&dy, n, d_out);
                linear_backward(Some(grad), weights, xv, wv, dyv, Precision::Bf16, par);
                assert_within_sums(&format!("dx {what}"), &dx, &dx_ref, &dx_scale, d_out);
                assert_within_sums(&format!("dw {what}"), &dw, &dw_ref, &dw_scale, n);
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
                Some(InputGrad::new(
                    RowsMut::new(&mut dx, n, d_in),
                    Accum::Replace,
                )),
                WeightGrads {
                    dw: RowsMut::new(&mut dw, d_in, d_out),
                    db: Some(&mut db),
                },
                Rows::new(&x, n, d_in),
                Rows::new(&w, d_in, d_out),
                Rows::new(&r, n, d_out),
                Precision::F32,
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
                    let (xv, wv) = (Rows::new(&x, n, d_in), Rows::new(&w, d_in, d_out));
                    linear_relu_forward(
                        RowsMut::new(&mut y, n, d_out),
                        xv,
                        wv,
                        bias,
                        Precision::F32,
                        par,
                    );
                    let what =
                        format!("n={n} d_in={d_in} d_out={d_out} {par:?} {}", bias.is_some());
                    assert_close(&what, &y, &expected, 1e-5);
                }
            }
        }
        let mut y = [0.0; 2];
        let (x, w) = (Rows::new(&[f32::NAN], 1, 1), Rows::new(&[1.0, 1.0], 1, 2));
        linear_relu_forward(
            RowsMut::new(&mut y, 1, 2),
            x,
            w,
            None,
            Precision::F32,
            Par::Seq,
        );
        assert!(y.iter().all(|v| v.is_nan()));
    }

    #[test]
    #[should_panic(expected = "linear_forward: `b` has 2 elements, expected 3")]
    fn panics_on_wrong_bias_length() {
        let mut y = vec![0.0; 3];
        let (x, w) = (Rows::new(&[1.0; 2], 1, 2), Rows::new(&[1.0; 6], 2, 3));
        linear_forward(
            RowsMut::new(&mut y, 1, 3),
            x,
            w,
            Some(&[0.0; 2]),
            Precision::F32,
            Par::Seq,
        );
    }
}
