//! Row-wise L2 normalisation with a clamped norm, forward and backward.

use faer::{Accum, Par};

use crate::par::{for_rows, for_rows2};
use crate::shape::{check_len, check_shape};
use crate::view::{InputGrad, Rows, RowsMut};

/// A row whose output has `‖y‖² <` this was clamped: an unclamped output has unit norm up to
/// rounding (about 1e-7 relative, with the f64 sum used here), a clamped one has `‖x‖ / eps`.
const CLAMPED_BELOW: f64 = 1.0 - 1e-4;

/// Row-wise L2 normalisation: `y = x / max(‖x‖, eps)`; `norms[i] = max(‖x_i‖, eps)`.
///
/// `x`, `y` are `[n, d]`, `norms` is `[n]`; `y` and `norms` are overwritten. Squared norms are
/// summed in f64.
///
/// # Panics
///
/// If `y` is not `x`'s shape, `norms.len() != n`, or `eps` is not positive (a zero row would
/// then divide by zero).
#[track_caller]
pub fn l2norm_forward(mut y: RowsMut<'_>, norms: &mut [f32], x: Rows<'_>, eps: f32, par: Par) {
    let (n, d) = x.shape();
    check_shape("l2norm_forward", "y", y.shape(), (n, d));
    check_len("l2norm_forward", "norms", norms.len(), n);
    assert!(eps > 0.0, "l2norm_forward: eps must be positive, got {eps}");
    if d == 0 {
        norms.fill(eps);
        return;
    }
    let x = x.data();
    for_rows2(par, n, y.data(), d, norms, 1, |first, y, norms| {
        for ((y, norm), x) in y
            .chunks_exact_mut(d)
            .zip(norms)
            .zip(x[first * d..].chunks_exact(d))
        {
            let sum_sq: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            *norm = sum_sq.sqrt().max(f64::from(eps)) as f32;
            let inv = 1.0 / *norm;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * inv;
            }
        }
    });
}

/// Backward of [`l2norm_forward`] from its outputs `y` and `norms`, row by row:
/// `dx (=|+= per its accum) (dy - y (y·dy)) / norm`.
///
/// Where the norm was clamped to `eps` the forward is the linear map `x / eps`, so there
/// `dx (=|+=) dy / eps`. A row counts as clamped when `‖y‖² < 1 - 1e-4`; rows whose true norm
/// lies within 5e-5 relative below `eps` are treated as unclamped, which at that kink is as
/// valid a (sub)gradient as the other.
///
/// # Panics
///
/// If `dy` or `dx` is not `y`'s shape or `norms` does not have one entry per row.
#[track_caller]
pub fn l2norm_backward(dx: InputGrad<'_>, y: Rows<'_>, norms: &[f32], dy: Rows<'_>, par: Par) {
    let (n, d) = y.shape();
    check_len("l2norm_backward", "norms", norms.len(), n);
    check_shape("l2norm_backward", "dy", dy.shape(), (n, d));
    dx.check("l2norm_backward", "dx", (n, d));
    if d == 0 {
        return;
    }
    let InputGrad { mut dx, accum, .. } = dx;
    let (y, dy) = (y.data(), dy.data());
    for_rows(par, n, dx.data(), d, |first, dx| {
        let rows = dx
            .chunks_exact_mut(d)
            .zip(y[first * d..].chunks_exact(d))
            .zip(dy[first * d..].chunks_exact(d))
            .zip(&norms[first..]);
        for (((dx, y), dy), &norm) in rows {
            let (mut yy, mut ydy) = (0.0f64, 0.0f64);
            for (&y, &g) in y.iter().zip(dy) {
                yy += f64::from(y) * f64::from(y);
                ydy += f64::from(y) * f64::from(g);
            }
            // A clamped row has no projection term: its forward is linear in x.
            let proj = if yy < CLAMPED_BELOW { 0.0 } else { ydy as f32 };
            let inv = 1.0 / norm;
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
                let v = (g - y * proj) * inv;
                match accum {
                    Accum::Replace => *dx = v,
                    Accum::Add => *dx += v,
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, DS, NS, add, assert_close, destination, dot, fd_check, pars, rng, rows, rows_mut,
        to_f64, uniform,
    };

    /// `(y, norms)` in f64.
    fn naive_l2norm(x: &[f64], n: usize, d: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; n * d];
        let mut norms = vec![0.0; n];
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            norms[i] = dot(row, row).sqrt().max(eps);
            for j in 0..d {
                y[i * d + j] = row[j] / norms[i];
            }
        }
        (y, norms)
    }

    fn naive_backward(
        y: &[f64],
        norms: &[f64],
        dy: &[f64],
        n: usize,
        d: usize,
        eps: f64,
    ) -> Vec<f64> {
        let mut dx = vec![0.0; n * d];
        for i in 0..n {
            let (y, dy) = (&y[i * d..(i + 1) * d], &dy[i * d..(i + 1) * d]);
            let proj = if norms[i] > eps { dot(y, dy) } else { 0.0 };
            for j in 0..d {
                dx[i * d + j] = (dy[j] - y[j] * proj) / norms[i];
            }
        }
        dx
    }

    /// Rows of uniform values, every third one shrunk far below `eps` so it is clamped.
    fn input(rng: &mut rand_chacha::ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
        let mut x = uniform(rng, n * d);
        for (i, row) in x.chunks_exact_mut(d).enumerate() {
            if i % 3 == 2 {
                row.iter_mut().for_each(|v| *v *= 1e-4);
            }
        }
        x
    }

    const EPS: f32 = 1e-2;

    #[test]
    fn forward_and_backward_match_naive() {
        let mut rng = rng(9);
        for &n in &NS {
            for &d in &DS {
                let x = input(&mut rng, n, d);
                let dy = uniform(&mut rng, n * d);
                let (y_ref, norms_ref) = naive_l2norm(&to_f64(&x), n, d, f64::from(EPS));
                for par in pars() {
                    let what = format!("n={n} d={d} {par:?}");
                    let mut y = vec![f32::NAN; n * d];
                    let mut norms = vec![f32::NAN; n];
                    l2norm_forward(rows_mut(&mut y, d), &mut norms, rows(&x, d), EPS, par);
                    assert_close(&format!("y {what}"), &y, &y_ref, 1e-6);
                    assert_close(&format!("norms {what}"), &norms, &norms_ref, 1e-6);
                    let dx_ref = naive_backward(
                        &to_f64(&y),
                        &to_f64(&norms),
                        &to_f64(&dy),
                        n,
                        d,
                        f64::from(EPS),
                    );
                    for accum in ACCUMS {
                        let (mut dx, base) = destination(&mut rng, n * d, accum);
                        let grad = InputGrad::new(rows_mut(&mut dx, d), accum);
                        l2norm_backward(grad, rows(&y, d), &norms, rows(&dy, d), par);
                        assert_close(
                            &format!("dx {accum:?} {what}"),
                            &dx,
                            &add(&base, &dx_ref),
                            1e-5,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn clamped_rows_scale_by_eps() {
        let x = [1e-4f32, -2e-4, 0.0, 0.0, 3.0, 4.0];
        let mut y = [0.0; 6];
        let mut norms = [0.0; 3];
        l2norm_forward(rows_mut(&mut y, 2), &mut norms, rows(&x, 2), EPS, Par::Seq);
        assert_eq!(norms[..2], [EPS, EPS]);
        assert_eq!(norms[2], 5.0);
        assert_close("y", &y, &[1e-2, -2e-2, 0.0, 0.0, 0.6, 0.8], 1e-6);
        let dy = [1.0f32, 2.0, 3.0, 4.0, 1.0, 0.0];
        let mut dx = [0.0; 6];
        let grad = InputGrad::new(rows_mut(&mut dx, 2), Accum::Replace);
        l2norm_backward(grad, rows(&y, 2), &norms, rows(&dy, 2), Par::Seq);
        // Last row: (dy - y (y·dy)) / 5 with y·dy = 0.6.
        let expected = [100.0, 200.0, 300.0, 400.0, (1.0 - 0.36) / 5.0, -0.48 / 5.0];
        assert_close("dx", &dx, &expected, 1e-5);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = rng(10);
        for &(n, d) in &[(1, 1), (3, 7), (6, 17)] {
            let x = input(&mut rng, n, d);
            let r = uniform(&mut rng, n * d);
            let mut y = vec![0.0; n * d];
            let mut norms = vec![0.0; n];
            l2norm_forward(rows_mut(&mut y, d), &mut norms, rows(&x, d), EPS, Par::Seq);
            let mut dx = vec![0.0; n * d];
            let grad = InputGrad::new(rows_mut(&mut dx, d), Accum::Replace);
            l2norm_backward(grad, rows(&y, d), &norms, rows(&r, d), Par::Seq);
            let r64 = to_f64(&r);
            fd_check(&["x"], &[to_f64(&x)], &[&dx], |p| {
                dot(&r64, &naive_l2norm(&p[0], n, d, f64::from(EPS)).0)
            });
        }
    }
}
