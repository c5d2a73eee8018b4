//! ReLU, forward and backward.

use faer::{Accum, Par};

use crate::par::for_rows;
use crate::shape::check_shape;
use crate::view::{InputGrad, Rows, RowsMut};

/// `y = max(x, 0)` elementwise. NaN stays NaN so that a diverging model is not silently masked.
///
/// # Panics
///
/// If `y` is not `x`'s shape.
#[track_caller]
pub fn relu_forward(mut y: RowsMut<'_>, x: Rows<'_>, par: Par) {
    check_shape("relu_forward", "y", y.shape(), x.shape());
    let x = x.data();
    for_rows(par, x.len(), y.data(), 1, |first, y| {
        for (y, &x) in y.iter_mut().zip(&x[first..]) {
            *y = if x < 0.0 { 0.0 } else { x };
        }
    });
}

/// `dx (=|+= per its accum) dy` where `y > 0`, else 0. Takes the forward's OUTPUT `y`, so the
/// input need not be kept.
///
/// # Panics
///
/// If `dy` or `dx` is not `y`'s shape.
#[track_caller]
pub fn relu_backward(dx: InputGrad<'_>, y: Rows<'_>, dy: Rows<'_>, par: Par) {
    check_shape("relu_backward", "dy", dy.shape(), y.shape());
    dx.check("relu_backward", "dx", y.shape());
    let InputGrad { mut dx, accum, .. } = dx;
    let (y, dy) = (y.data(), dy.data());
    for_rows(par, y.len(), dx.data(), 1, |first, dx| {
        let (y, dy) = (&y[first..], &dy[first..]);
        match accum {
            Accum::Replace => {
                for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                    *dx = if y > 0.0 { dy } else { 0.0 };
                }
            }
            // A select, not a branch: about half of the units are off, at random, so a branch
            // mispredicts often, and the select vectorises.
            Accum::Add => {
                for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                    *dx += if y > 0.0 { dy } else { 0.0 };
                }
            }
        }
    });
}

/// `dy = 0` where `y <= 0`, in place: the backward of a ReLU whose output gradient may be
/// overwritten by its input gradient (a [`linear_relu_forward`](crate::linear_relu_forward)
/// layer's), without a second buffer.
///
/// # Panics
///
/// If `dy` is not `y`'s shape.
#[track_caller]
pub fn relu_mask(mut dy: RowsMut<'_>, y: Rows<'_>, par: Par) {
    check_shape("relu_mask", "dy", dy.shape(), y.shape());
    let y = y.data();
    for_rows(par, y.len(), dy.data(), 1, |first, dy| {
        for (dy, &y) in dy.iter_mut().zip(&y[first..]) {
            *dy = if y > 0.0 { *dy } else { 0.0 };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, DS, NS, assert_close, destination, dot, fd_check, pars, rng, rows, rows_mut,
        to_f64, uniform,
    };

    fn naive_relu(x: &[f64]) -> Vec<f64> {
        x.iter().map(|&v| v.max(0.0)).collect()
    }

    #[test]
    fn forward_and_backward_match_naive() {
        let mut rng = rng(3);
        for &n in &NS {
            for &d in &DS {
                let x = uniform(&mut rng, n * d);
                let dy = uniform(&mut rng, n * d);
                let y_ref = naive_relu(&to_f64(&x));
                let dx_ref: Vec<f64> = x
                    .iter()
                    .zip(&dy)
                    .map(|(&x, &g)| if x > 0.0 { f64::from(g) } else { 0.0 })
                    .collect();
                for par in pars() {
                    let mut y = vec![f32::NAN; n * d];
                    relu_forward(rows_mut(&mut y, d), rows(&x, d), par);
                    assert_close(&format!("y n={n} d={d} {par:?}"), &y, &y_ref, 0.0);
                    let mut masked = dy.clone();
                    relu_mask(rows_mut(&mut masked, d), rows(&y, d), par);
                    assert_close(&format!("mask n={n} d={d} {par:?}"), &masked, &dx_ref, 0.0);
                    for accum in ACCUMS {
                        let (mut dx, base) = destination(&mut rng, n * d, accum);
                        let grad = InputGrad::new(rows_mut(&mut dx, d), accum);
                        relu_backward(grad, rows(&y, d), rows(&dy, d), par);
                        let expected: Vec<f64> =
                            base.iter().zip(&dx_ref).map(|(a, b)| a + b).collect();
                        assert_close(
                            &format!("dx n={n} d={d} {accum:?} {par:?}"),
                            &dx,
                            &expected,
                            1e-7,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn propagates_nan() {
        let mut y = [0.0; 2];
        relu_forward(rows_mut(&mut y, 2), rows(&[f32::NAN, -1.0], 2), Par::Seq);
        assert!(y[0].is_nan());
        assert_eq!(y[1], 0.0);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = rng(4);
        // Keep inputs away from the kink at 0, where a central difference is meaningless.
        let x: Vec<f32> = uniform(&mut rng, 40)
            .into_iter()
            .map(|v| v + 0.01f32.copysign(v))
            .collect();
        let r = uniform(&mut rng, 40);
        let mut y = vec![0.0; 40];
        relu_forward(rows_mut(&mut y, 8), rows(&x, 8), Par::Seq);
        let mut dx = vec![0.0; 40];
        let grad = InputGrad::new(rows_mut(&mut dx, 8), Accum::Replace);
        relu_backward(grad, rows(&y, 8), rows(&r, 8), Par::Seq);
        let r64 = to_f64(&r);
        fd_check(&["x"], &[to_f64(&x)], &[&dx], |p| {
            dot(&r64, &naive_relu(&p[0]))
        });
    }
}
