//! DCN v2 full-rank cross layer `out = x0 ⊙ (xl · w + b) + xl`, forward and backward.

use faer::{Accum, Par};

use crate::linear::{InputGrad, linear_backward, linear_forward};
use crate::par::{for_rows2, for_rows3};
use crate::shape::check_len;

/// DCN v2 full-rank cross layer: `z = xl · w + b`; `out = x0 ⊙ z + xl`.
///
/// `x0` is the tower input, `xl` this layer's input (`x0` itself for the first layer), `w` is
/// `[d, d]`, `b` is `[d]`. `z` (`[n, d]`, caller-owned) receives the pre-gate activation that
/// [`cross_backward`] needs; `z` and `out` are overwritten.
///
/// # Panics
///
/// If any of `x0`, `xl`, `z`, `out` is not `n * d` long, `w.len() != d * d` or `b.len() != d`.
#[track_caller]
pub fn cross_forward(
    x0: &[f32],
    xl: &[f32],
    w: &[f32],
    b: &[f32],
    z: &mut [f32],
    out: &mut [f32],
    n: usize,
    d: usize,
    par: Par,
) {
    check_len("cross_forward", "x0", x0.len(), n * d);
    check_len("cross_forward", "xl", xl.len(), n * d);
    check_len("cross_forward", "z", z.len(), n * d);
    check_len("cross_forward", "out", out.len(), n * d);
    check_len("cross_forward", "w", w.len(), d * d);
    check_len("cross_forward", "b", b.len(), d);
    // The bias joins in the elementwise pass rather than filling `z` before the product.
    linear_forward(xl, w, None, z, n, d, d, par);
    for_rows2(par, n, z, d, out, d, |first, z, out| {
        let rows = z.chunks_exact_mut(d).zip(out.chunks_exact_mut(d));
        let inputs = x0[first * d..]
            .chunks_exact(d)
            .zip(xl[first * d..].chunks_exact(d));
        for ((z, out), (x0, xl)) in rows.zip(inputs) {
            for j in 0..d {
                z[j] += b[j];
                out[j] = x0[j] * z[j] + xl[j];
            }
        }
    });
}

/// Where [`cross_backward`] puts the gradients of a cross layer's two inputs, each written
/// (`Accum::Replace`) or added (`Accum::Add`) per its own mode.
#[derive(Debug)]
pub enum CrossInputGrads<'a> {
    /// `xl` is another value than `x0` (every layer after the first).
    Two {
        /// Gradient of `x0`, `[n, d]`.
        dx0: &'a mut [f32],
        /// How `dx0` receives it.
        dx0_accum: Accum,
        /// Gradient of `xl`, `[n, d]`.
        dxl: &'a mut [f32],
        /// How `dxl` receives it.
        dxl_accum: Accum,
        /// The leading columns of `dxl` wanted ([`InputGrad::cols`]); the product `dz · wᵀ`
        /// skips the others.
        dxl_cols: usize,
    },
    /// `xl` is `x0` (a network's first layer): `dx0` receives the sum of both gradients.
    One {
        /// Gradient of `x0`, `[n, d]`.
        dx0: &'a mut [f32],
        /// How `dx0` receives it.
        accum: Accum,
        /// The leading columns of `dx0` wanted ([`InputGrad::cols`]); the product `dz · wᵀ`
        /// skips the others, which get only the elementwise part.
        cols: usize,
    },
}

/// Backward of [`cross_forward`] given `dout`.
///
/// - `dz = dout ⊙ x0`, written into the caller's scratch `dz` (`[n, d]`);
/// - `dx0 (=|+=) dout ⊙ z`;
/// - `dxl (=|+=) dz · wᵀ + dout`, the product in its first `dxl_cols` columns only;
/// - `dw += xlᵀ · dz`; `db += colsum(dz)`.
///
/// Under [`CrossInputGrads::One`] (`xl` is `x0`) `dx0` receives `dout ⊙ z + dz · wᵀ + dout`,
/// the product in its first `cols` columns only.
/// One pass over the rows writes `dz` and the elementwise parts of both input gradients; the
/// products then add into them.
///
/// # Panics
///
/// If any of `x0`, `xl`, `z`, `dout`, `dz` or an input gradient is not `n * d` long, `w` or `dw`
/// is not `d * d` long, or `db.len() != d`.
#[track_caller]
pub fn cross_backward(
    x0: &[f32],
    xl: &[f32],
    w: &[f32],
    z: &[f32],
    dout: &[f32],
    dz: &mut [f32],
    grads: CrossInputGrads<'_>,
    dw: &mut [f32],
    db: &mut [f32],
    n: usize,
    d: usize,
    par: Par,
) {
    for (arg, len) in [
        ("x0", x0.len()),
        ("xl", xl.len()),
        ("z", z.len()),
        ("dout", dout.len()),
        ("dz", dz.len()),
    ] {
        check_len("cross_backward", arg, len, n * d);
    }
    check_len("cross_backward", "w", w.len(), d * d);
    check_len("cross_backward", "dw", dw.len(), d * d);
    check_len("cross_backward", "db", db.len(), d);
    // `g = g * keep + v`: with `keep` 0 for `Accum::Replace` the old contents (maybe NaN) must
    // not be read, hence the branch rather than a multiply.
    let put = |g: &mut f32, add: bool, v: f32| *g = if add { *g + v } else { v };
    let (dxl, cols) = match grads {
        CrossInputGrads::Two {
            dx0,
            dx0_accum,
            dxl,
            dxl_accum,
            dxl_cols,
        } => {
            check_len("cross_backward", "dx0", dx0.len(), n * d);
            check_len("cross_backward", "dxl", dxl.len(), n * d);
            let (add0, addl) = (dx0_accum == Accum::Add, dxl_accum == Accum::Add);
            for_rows3(par, n, d, dz, dx0, dxl, |first, dz, dx0, dxl| {
                let at = first * d;
                let (x0, z, dout) = (&x0[at..], &z[at..], &dout[at..]);
                for (i, ((dz, dx0), dxl)) in dz.iter_mut().zip(dx0).zip(dxl).enumerate() {
                    *dz = dout[i] * x0[i];
                    put(dx0, add0, dout[i] * z[i]);
                    put(dxl, addl, dout[i]);
                }
            });
            (dxl, dxl_cols)
        }
        CrossInputGrads::One { dx0, accum, cols } => {
            check_len("cross_backward", "dx0", dx0.len(), n * d);
            let add = accum == Accum::Add;
            for_rows2(par, n, dz, d, dx0, d, |first, dz, dx0| {
                let at = first * d;
                let (x0, z, dout) = (&x0[at..], &z[at..], &dout[at..]);
                for (i, (dz, dx0)) in dz.iter_mut().zip(dx0).enumerate() {
                    *dz = dout[i] * x0[i];
                    put(dx0, add, dout[i] * z[i] + dout[i]);
                }
            });
            (dx0, cols)
        }
    };
    let dxl = InputGrad {
        dx: dxl,
        accum: Accum::Add,
        cols,
    };
    linear_backward(xl, w, dz, Some(dxl), dw, Some(db), n, d, d, par);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::tests::naive_linear;
    use crate::testing::{
        ACCUMS, DS, NS, add, assert_close, destination, dot, fd_check, naive_matmul, pars, rng,
        to_f64, transpose, uniform,
    };

    /// `(z, out)` of a cross layer, in f64.
    fn naive_cross(
        x0: &[f64],
        xl: &[f64],
        w: &[f64],
        b: &[f64],
        n: usize,
        d: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let z = naive_linear(xl, w, Some(b), n, d, d);
        let out = (0..n * d).map(|i| x0[i] * z[i] + xl[i]).collect();
        (z, out)
    }

    #[test]
    fn forward_and_backward_match_naive() {
        let mut rng = rng(7);
        for &n in &NS {
            for &d in &DS {
                let [x0, xl, dout] = [0; 3].map(|_| uniform(&mut rng, n * d));
                let w = uniform(&mut rng, d * d);
                let b = uniform(&mut rng, d);
                let (x0_64, xl_64, w64, dout64) =
                    (to_f64(&x0), to_f64(&xl), to_f64(&w), to_f64(&dout));
                let (z_ref, out_ref) = naive_cross(&x0_64, &xl_64, &w64, &to_f64(&b), n, d);
                let dz_ref: Vec<f64> = (0..n * d).map(|i| dout64[i] * x0_64[i]).collect();
                let dx0_ref: Vec<f64> = (0..n * d).map(|i| dout64[i] * z_ref[i]).collect();
                let dxl_ref = add(
                    &naive_matmul(&dz_ref, &transpose(&w64, d, d), n, d, d),
                    &dout64,
                );
                let dw_ref = naive_matmul(&transpose(&xl_64, n, d), &dz_ref, d, n, d);
                let db_ref: Vec<f64> = (0..d)
                    .map(|j| (0..n).map(|i| dz_ref[i * d + j]).sum())
                    .collect();
                for par in pars() {
                    let what = format!("n={n} d={d} {par:?}");
                    let mut z = vec![f32::NAN; n * d];
                    let mut out = vec![f32::NAN; n * d];
                    cross_forward(&x0, &xl, &w, &b, &mut z, &mut out, n, d, par);
                    assert_close(&format!("z {what}"), &z, &z_ref, 1e-5);
                    assert_close(&format!("out {what}"), &out, &out_ref, 1e-5);
                    for (acc0, accl) in ACCUMS.into_iter().flat_map(|a| ACCUMS.map(|b| (a, b))) {
                        let mut dz = vec![f32::NAN; n * d];
                        let (mut dx0, dx0_base) = destination(&mut rng, n * d, acc0);
                        let (mut dxl, dxl_base) = destination(&mut rng, n * d, accl);
                        let (mut dw, dw_base) = destination(&mut rng, d * d, Accum::Add);
                        let (mut db, db_base) = destination(&mut rng, d, Accum::Add);
                        let grads = CrossInputGrads::Two {
                            dx0: &mut dx0,
                            dx0_accum: acc0,
                            dxl: &mut dxl,
                            dxl_accum: accl,
                            dxl_cols: d,
                        };
                        cross_backward(
                            &x0, &xl, &w, &z, &dout, &mut dz, grads, &mut dw, &mut db, n, d, par,
                        );
                        let what = format!("{acc0:?}/{accl:?} {what}");
                        assert_close(&format!("dz {what}"), &dz, &dz_ref, 1e-5);
                        assert_close(
                            &format!("dx0 {what}"),
                            &dx0,
                            &add(&dx0_base, &dx0_ref),
                            1e-5,
                        );
                        assert_close(
                            &format!("dxl {what}"),
                            &dxl,
                            &add(&dxl_base, &dxl_ref),
                            1e-5,
                        );
                        assert_close(&format!("dw {what}"), &dw, &add(&dw_base, &dw_ref), 1e-5);
                        assert_close(&format!("db {what}"), &db, &add(&db_base, &db_ref), 1e-5);
                    }
                }
            }
        }
    }

    /// `(dx0, dxl, dw, db)` of [`cross_backward`] into fresh buffers (`Accum::Replace` for
    /// both inputs), one thread.
    fn backward_two(
        x0: &[f32],
        xl: &[f32],
        w: &[f32],
        z: &[f32],
        dout: &[f32],
        n: usize,
        d: usize,
    ) -> [Vec<f32>; 4] {
        let (mut dz, mut dx0, mut dxl) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d]);
        let (mut dw, mut db) = (vec![0.0; d * d], vec![0.0; d]);
        let grads = CrossInputGrads::Two {
            dx0: &mut dx0,
            dx0_accum: Accum::Replace,
            dxl: &mut dxl,
            dxl_accum: Accum::Replace,
            dxl_cols: d,
        };
        cross_backward(
            x0,
            xl,
            w,
            z,
            dout,
            &mut dz,
            grads,
            &mut dw,
            &mut db,
            n,
            d,
            Par::Seq,
        );
        [dx0, dxl, dw, db]
    }

    /// A first layer (`xl` is `x0`): [`CrossInputGrads::One`] gives `dx0` the sum of the two
    /// gradients that [`CrossInputGrads::Two`] gives separately (checked against the naive
    /// layer above), written or added, and the same `dw`, `db`. With fewer `cols` than `d`, the
    /// columns past them get only the elementwise part, `dout ⊙ z + dout`.
    #[test]
    fn first_layer_gets_the_sum_of_both_input_gradients() {
        let mut rng = rng(9);
        for &n in &NS {
            for &d in &DS {
                let [x0, dout] = [0; 2].map(|_| uniform(&mut rng, n * d));
                let w = uniform(&mut rng, d * d);
                let b = uniform(&mut rng, d);
                let (mut z, mut out) = (vec![0.0; n * d], vec![0.0; n * d]);
                cross_forward(&x0, &x0, &w, &b, &mut z, &mut out, n, d, Par::Seq);
                let [dx0, dxl, dw_two, db_two] = backward_two(&x0, &x0, &w, &z, &dout, n, d);
                let mut dz = vec![0.0; n * d];
                let sum = add(&to_f64(&dx0), &to_f64(&dxl));
                let elementwise = add(&to_f64(&dx0), &to_f64(&dout));
                for par in pars() {
                    for (accum, cols) in ACCUMS.into_iter().flat_map(|a| [(a, d), (a, d / 2)]) {
                        let (mut g, base) = destination(&mut rng, n * d, accum);
                        let (mut dw, mut db) = (vec![0.0; d * d], vec![0.0; d]);
                        let grads = CrossInputGrads::One {
                            dx0: &mut g,
                            accum,
                            cols,
                        };
                        cross_backward(
                            &x0, &x0, &w, &z, &dout, &mut dz, grads, &mut dw, &mut db, n, d, par,
                        );
                        let what = format!("n={n} d={d} {accum:?} cols={cols} {par:?}");
                        let want: Vec<f64> = (0..n * d)
                            .map(|i| base[i] + if i % d < cols { sum[i] } else { elementwise[i] })
                            .collect();
                        assert_close(&format!("dx0 {what}"), &g, &want, 1e-5);
                        assert_close(&format!("dw {what}"), &dw, &to_f64(&dw_two), 1e-5);
                        assert_close(&format!("db {what}"), &db, &to_f64(&db_two), 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng(8);
        for &(n, d) in &[(1, 1), (3, 7), (4, 17)] {
            let [x0, xl, r] = [0; 3].map(|_| uniform(&mut rng, n * d));
            let w = uniform(&mut rng, d * d);
            let b = uniform(&mut rng, d);
            let mut z = vec![0.0; n * d];
            let mut out = vec![0.0; n * d];
            cross_forward(&x0, &xl, &w, &b, &mut z, &mut out, n, d, Par::Seq);
            let [dx0, dxl, dw, db] = backward_two(&x0, &xl, &w, &z, &r, n, d);
            let r64 = to_f64(&r);
            fd_check(
                &["x0", "xl", "w", "b"],
                &[to_f64(&x0), to_f64(&xl), to_f64(&w), to_f64(&b)],
                &[&dx0, &dxl, &dw, &db],
                |p| dot(&r64, &naive_cross(&p[0], &p[1], &p[2], &p[3], n, d).1),
            );
        }
    }
}
