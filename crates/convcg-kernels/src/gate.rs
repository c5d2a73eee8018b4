//! The gate of a mixture of experts: a row-wise softmax over the experts, and the gated sum of
//! the experts' outputs, forward and backward.

use faer::{Accum, Par};

use crate::par::for_rows;
use crate::shape::check_shape;
use crate::view::{InputGrad, Rows, RowsMut};

/// `y[r, :] = softmax(x[r, :])` for each row of the `[n, e]` matrix `x`, with the row maximum
/// subtracted before exponentiation.
///
/// # Panics
///
/// If `y` is not `x`'s shape.
#[track_caller]
pub fn row_softmax_forward(mut y: RowsMut<'_>, x: Rows<'_>, par: Par) {
    check_shape("row_softmax_forward", "y", y.shape(), x.shape());
    let (n, e) = x.shape();
    if e == 0 {
        return;
    }
    let x = x.data();
    for_rows(par, n, y.data(), e, |first, y| {
        for (r, y) in y.chunks_exact_mut(e).enumerate() {
            let x = &x[(first + r) * e..(first + r + 1) * e];
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - max).exp();
                sum += *y;
            }
            for y in y.iter_mut() {
                *y /= sum;
            }
        }
    });
}

/// Backward of [`row_softmax_forward`] from its output `y`:
/// `dx[r, j] (=|+= per its accum) y[r, j] * (dy[r, j] - Σ_k y[r, k] dy[r, k])`.
///
/// # Panics
///
/// If `dy` or `dx` is not `y`'s shape.
#[track_caller]
pub fn row_softmax_backward(dx: InputGrad<'_>, y: Rows<'_>, dy: Rows<'_>, par: Par) {
    const K: &str = "row_softmax_backward";
    check_shape(K, "dy", dy.shape(), y.shape());
    dx.check(K, "dx", y.shape());
    let (n, e) = y.shape();
    if e == 0 {
        return;
    }
    let InputGrad { mut dx, accum, .. } = dx;
    let (y, dy) = (y.data(), dy.data());
    for_rows(par, n, dx.data(), e, |first, dx| {
        for (r, dx) in dx.chunks_exact_mut(e).enumerate() {
            let at = (first + r) * e;
            let (y, dy) = (&y[at..at + e], &dy[at..at + e]);
            let inner: f32 = y.iter().zip(dy).map(|(y, dy)| y * dy).sum();
            for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                let g = y * (dy - inner);
                match accum {
                    Accum::Replace => *dx = g,
                    Accum::Add => *dx += g,
                }
            }
        }
    });
}

/// The gated sum `out[r, :] = Σ_i gates[r, i] * experts[i][r, :]` of `e = experts.len()` expert
/// outputs, each `[n, d]` like `out`, with `gates` `[n, e]`.
///
/// # Panics
///
/// If `gates` is not `[n, e]` or an expert is not `out`'s shape.
#[track_caller]
pub fn mix_forward(mut out: RowsMut<'_>, gates: Rows<'_>, experts: &[Rows<'_>], par: Par) {
    let (n, d) = out.shape();
    let e = experts.len();
    check_shape("mix_forward", "gates", gates.shape(), (n, e));
    for x in experts {
        check_shape("mix_forward", "expert", x.shape(), (n, d));
    }
    let gates = gates.data();
    for_rows(par, n, out.data(), d, |first, out| {
        for (r, out) in out.chunks_exact_mut(d.max(1)).enumerate() {
            let row = first + r;
            out.fill(0.0);
            for (i, x) in experts.iter().enumerate() {
                let g = gates[row * e + i];
                for (o, &x) in out.iter_mut().zip(&x.data()[row * d..(row + 1) * d]) {
                    *o += g * x;
                }
            }
        }
    });
}

/// Gate gradient of [`mix_forward`]:
/// `dgates[r, i] (=|+= per its accum) <dy[r, :], experts[i][r, :]>`.
///
/// # Panics
///
/// If `dgates` is not `[n, e]` or an expert is not `dy`'s shape.
#[track_caller]
pub fn mix_backward_gates(dgates: InputGrad<'_>, experts: &[Rows<'_>], dy: Rows<'_>, par: Par) {
    let (n, d) = dy.shape();
    let e = experts.len();
    dgates.check("mix_backward_gates", "dgates", (n, e));
    for x in experts {
        check_shape("mix_backward_gates", "expert", x.shape(), (n, d));
    }
    if e == 0 {
        return;
    }
    let InputGrad {
        dx: mut dgates,
        accum,
        ..
    } = dgates;
    let dy = dy.data();
    for_rows(par, n, dgates.data(), e, |first, dgates| {
        for (r, dg) in dgates.chunks_exact_mut(e).enumerate() {
            let span = (first + r) * d..(first + r + 1) * d;
            let dy = &dy[span.clone()];
            for (dg, x) in dg.iter_mut().zip(experts) {
                let g: f32 = dy
                    .iter()
                    .zip(&x.data()[span.clone()])
                    .map(|(a, b)| a * b)
                    .sum();
                match accum {
                    Accum::Replace => *dg = g,
                    Accum::Add => *dg += g,
                }
            }
        }
    });
}

/// Gradient of [`mix_forward`] with respect to expert `i` of the `e` columns of `gates`:
/// `dexpert[r, :] (=|+= per its accum) gates[r, i] * dy[r, :]`.
///
/// # Panics
///
/// If `i >= e`, `gates` does not have `dy`'s rows, or `dexpert` is not `dy`'s shape.
#[track_caller]
pub fn mix_backward_expert(
    dexpert: InputGrad<'_>,
    gates: Rows<'_>,
    dy: Rows<'_>,
    i: usize,
    par: Par,
) {
    let (n, d) = dy.shape();
    let e = gates.cols();
    assert!(i < e, "mix_backward_expert: expert {i} of {e}");
    check_shape("mix_backward_expert", "gates", gates.shape(), (n, e));
    dexpert.check("mix_backward_expert", "dexpert", (n, d));
    let InputGrad { mut dx, accum, .. } = dexpert;
    let (gates, dy) = (gates.data(), dy.data());
    for_rows(par, n, dx.data(), d, |first, dx| {
        for (r, dx) in dx.chunks_exact_mut(d.max(1)).enumerate() {
            let row = first + r;
            let g = gates[row * e + i];
            for (dx, &dy) in dx.iter_mut().zip(&dy[row * d..(row + 1) * d]) {
                match accum {
                    Accum::Replace => *dx = g * dy,
                    Accum::Add => *dx += g * dy,
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, assert_close, destination, fd_check, pars, rng, rows, rows_mut, to_f64, uniform,
    };

    fn naive_softmax(x: &[f64], n: usize, e: usize) -> Vec<f64> {
        let mut y = vec![0.0; n * e];
        for r in 0..n {
            let row = &x[r * e..(r + 1) * e];
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            for j in 0..e {
                y[r * e + j] = row[j].exp() / z;
            }
        }
        y
    }

    #[test]
    fn softmax_matches_naive_and_survives_large_logits() {
        let mut r = rng(4);
        for (n, e) in [(1, 1), (3, 4), (129, 7), (2000, 3)] {
            let mut x = uniform(&mut r, n * e);
            // A large logit must not overflow: the maximum is subtracted first.
            x[0] = 80.0;
            let want = naive_softmax(&to_f64(&x), n, e);
            for par in pars() {
                let mut y = vec![f32::NAN; n * e];
                row_softmax_forward(rows_mut(&mut y, e), rows(&x, e), par);
                assert_close("softmax", &y, &want, 1e-5);
            }
        }
    }

    #[test]
    fn softmax_backward_matches_naive_and_finite_differences() {
        let mut r = rng(5);
        let (n, e) = (5, 4);
        let x = uniform(&mut r, n * e);
        let w = uniform(&mut r, n * e);
        let mut y = vec![0.0; n * e];
        row_softmax_forward(rows_mut(&mut y, e), rows(&x, e), Par::Seq);
        for par in pars() {
            for acc in ACCUMS {
                let (mut dx, base) = destination(&mut r, n * e, acc);
                let grad = InputGrad::new(rows_mut(&mut dx, e), acc);
                row_softmax_backward(grad, rows(&y, e), rows(&w, e), par);
                let want: Vec<f64> = (0..n * e)
                    .map(|k| {
                        let row = k / e;
                        let inner: f64 = (0..e)
                            .map(|j| f64::from(y[row * e + j]) * f64::from(w[row * e + j]))
                            .sum();
                        base[k] + f64::from(y[k]) * (f64::from(w[k]) - inner)
                    })
                    .collect();
                assert_close("dx", &dx, &want, 1e-5);
            }
        }
        let mut dx = vec![0.0; n * e];
        let grad = InputGrad::new(rows_mut(&mut dx, e), Accum::Replace);
        row_softmax_backward(grad, rows(&y, e), rows(&w, e), Par::Seq);
        let w = to_f64(&w);
        fd_check(&["x"], &[to_f64(&x)], &[&dx], |v| {
            let y = naive_softmax(&v[0], n, e);
            y.iter().zip(&w).map(|(a, b)| a * b).sum()
        });
    }

    #[test]
    fn mix_forward_and_backward_match_naive_and_finite_differences() {
        let mut r = rng(6);
        for (n, d, e) in [(1, 1, 1), (3, 5, 2), (70, 33, 4)] {
            let gates = uniform(&mut r, n * e);
            let experts: Vec<Vec<f32>> = (0..e).map(|_| uniform(&mut r, n * d)).collect();
            let views: Vec<Rows<'_>> = experts.iter().map(|x| rows(x, d)).collect();
            let want: Vec<f64> = (0..n * d)
                .map(|k| {
                    let row = k / d;
                    (0..e)
                        .map(|i| f64::from(gates[row * e + i]) * f64::from(experts[i][k]))
                        .sum()
                })
                .collect();
            let dy = uniform(&mut r, n * d);
            for par in pars() {
                let mut out = vec![f32::NAN; n * d];
                mix_forward(rows_mut(&mut out, d), rows(&gates, e), &views, par);
                assert_close("mix", &out, &want, 1e-5);
                for acc in ACCUMS {
                    let (mut dg, base) = destination(&mut r, n * e, acc);
                    let grad = InputGrad::new(rows_mut(&mut dg, e), acc);
                    mix_backward_gates(grad, &views, rows(&dy, d), par);
                    let want_g: Vec<f64> = (0..n * e)
                        .map(|k| {
                            let (row, i) = (k / e, k % e);
                            base[k]
                                + (0..d)
                                    .map(|c| {
                                        f64::from(dy[row * d + c])
                                            * f64::from(experts[i][row * d + c])
                                    })
                                    .sum::<f64>()
                        })
                        .collect();
                    assert_close("dgates", &dg, &want_g, 1e-5);
                    let (mut dx, base) = destination(&mut r, n * d, acc);
                    let grad = InputGrad::new(rows_mut(&mut dx, d), acc);
                    mix_backward_expert(grad, rows(&gates, e), rows(&dy, d), e - 1, par);
                    let want_x: Vec<f64> = (0..n * d)
                        .map(|k| base[k] + f64::from(gates[(k / d) * e + e - 1]) * f64::from(dy[k]))
                        .collect();
                    assert_close("dexpert", &dx, &want_x, 1e-5);
                }
            }
        }
        // Finite differences through the whole gated sum.
        let (n, d, e) = (3, 4, 3);
        let gates = uniform(&mut r, n * e);
        let experts: Vec<Vec<f32>> = (0..e).map(|_| uniform(&mut r, n * d)).collect();
        let views: Vec<Rows<'_>> = experts.iter().map(|x| rows(x, d)).collect();
        let w = uniform(&mut r, n * d);
        let mut dg = vec![0.0; n * e];
        let grad = InputGrad::new(rows_mut(&mut dg, e), Accum::Replace);
        mix_backward_gates(grad, &views, rows(&w, d), Par::Seq);
        let dx: Vec<Vec<f32>> = (0..e)
            .map(|i| {
                let mut dx = vec![0.0; n * d];
                let grad = InputGrad::new(rows_mut(&mut dx, d), Accum::Replace);
                mix_backward_expert(grad, rows(&gates, e), rows(&w, d), i, Par::Seq);
                dx
            })
            .collect();
        let mut inputs = vec![to_f64(&gates)];
        inputs.extend(experts.iter().map(|x| to_f64(x)));
        let mut analytic: Vec<&[f32]> = vec![&dg];
        analytic.extend(dx.iter().map(Vec::as_slice));
        let w = to_f64(&w);
        fd_check(&["gates", "e0", "e1", "e2"], &inputs, &analytic, |v| {
            (0..n * d)
                .map(|k| {
                    let row = k / d;
                    w[k] * (0..e).map(|i| v[0][row * e + i] * v[1 + i][k]).sum::<f64>()
                })
                .sum()
        });
    }
}
