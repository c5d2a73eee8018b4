//! Elementwise product, forward and backward: the `x0 ⊙ (·)` of low-rank and mixture cross
//! layers, whose inner map is built from other kernels.

use faer::{Accum, Par};

use crate::par::{for_rows, for_rows2};
use crate::shape::check_shape;
use crate::view::{InputGrad, Rows, RowsMut};

/// `out = a ⊙ b` elementwise.
///
/// # Panics
///
/// If `b` or `out` is not `a`'s shape.
#[track_caller]
pub fn mul_forward(mut out: RowsMut<'_>, a: Rows<'_>, b: Rows<'_>, par: Par) {
    check_shape("mul_forward", "b", b.shape(), a.shape());
    check_shape("mul_forward", "out", out.shape(), a.shape());
    let (a, b) = (a.data(), b.data());
    for_rows(par, a.len(), out.data(), 1, |first, out| {
        for ((o, &x), &y) in out.iter_mut().zip(&a[first..]).zip(&b[first..]) {
            *o = x * y;
        }
    });
}

/// Backward of [`mul_forward`]: `da (=|+= per its accum) dy ⊙ b`, `db (=|+= per its accum)
/// dy ⊙ a`.
///
/// # Panics
///
/// If `b`, `dy`, `da` or `db` is not `a`'s shape.
#[track_caller]
pub fn mul_backward(
    da: InputGrad<'_>,
    db: InputGrad<'_>,
    a: Rows<'_>,
    b: Rows<'_>,
    dy: Rows<'_>,
    par: Par,
) {
    const K: &str = "mul_backward";
    let shape = a.shape();
    check_shape(K, "b", b.shape(), shape);
    check_shape(K, "dy", dy.shape(), shape);
    da.check(K, "da", shape);
    db.check(K, "db", shape);
    let (a, b, dy) = (a.data(), b.data(), dy.data());
    let n = a.len();
    let InputGrad {
        dx: mut da,
        accum: da_accum,
        ..
    } = da;
    let InputGrad {
        dx: mut db,
        accum: db_accum,
        ..
    } = db;
    for_rows2(par, n, da.data(), 1, db.data(), 1, |first, da, db| {
        let (a, b, dy) = (&a[first..], &b[first..], &dy[first..]);
        for (i, (da, db)) in da.iter_mut().zip(db.iter_mut()).enumerate() {
            let (ga, gb) = (dy[i] * b[i], dy[i] * a[i]);
            match da_accum {
                Accum::Replace => *da = ga,
                Accum::Add => *da += ga,
            }
            match db_accum {
                Accum::Replace => *db = gb,
                Accum::Add => *db += gb,
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

    #[test]
    fn forward_matches_naive() {
        let mut r = rng(1);
        for len in [1, 7, 4097, 20_000] {
            let (a, b) = (uniform(&mut r, len), uniform(&mut r, len));
            let want: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .collect();
            for par in pars() {
                let mut out = vec![f32::NAN; len];
                mul_forward(rows_mut(&mut out, len), rows(&a, len), rows(&b, len), par);
                assert_close("mul", &out, &want, 1e-6);
            }
        }
    }

    #[test]
    fn backward_matches_naive_under_both_accumulations() {
        let mut r = rng(2);
        for len in [1, 17, 9000] {
            let (a, b, dy) = (
                uniform(&mut r, len),
                uniform(&mut r, len),
                uniform(&mut r, len),
            );
            for par in pars() {
                for acc in ACCUMS {
                    let (mut da, base_a) = destination(&mut r, len, acc);
                    let (mut db, base_b) = destination(&mut r, len, acc);
                    mul_backward(
                        InputGrad::new(rows_mut(&mut da, len), acc),
                        InputGrad::new(rows_mut(&mut db, len), acc),
                        rows(&a, len),
                        rows(&b, len),
                        rows(&dy, len),
                        par,
                    );
                    let want_a: Vec<f64> = (0..len)
                        .map(|i| base_a[i] + f64::from(dy[i]) * f64::from(b[i]))
                        .collect();
                    let want_b: Vec<f64> = (0..len)
                        .map(|i| base_b[i] + f64::from(dy[i]) * f64::from(a[i]))
                        .collect();
                    assert_close("da", &da, &want_a, 1e-6);
                    assert_close("db", &db, &want_b, 1e-6);
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut r = rng(3);
        let len = 13;
        let (a, b, w) = (
            uniform(&mut r, len),
            uniform(&mut r, len),
            uniform(&mut r, len),
        );
        let (mut da, mut db) = (vec![0.0; len], vec![0.0; len]);
        mul_backward(
            InputGrad::new(rows_mut(&mut da, len), Accum::Replace),
            InputGrad::new(rows_mut(&mut db, len), Accum::Replace),
            rows(&a, len),
            rows(&b, len),
            rows(&w, len),
            Par::Seq,
        );
        let w = to_f64(&w);
        fd_check(&["a", "b"], &[to_f64(&a), to_f64(&b)], &[&da, &db], |x| {
            (0..len).map(|i| w[i] * x[0][i] * x[1][i]).sum()
        });
    }
}
