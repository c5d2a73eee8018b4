//! DCN v2 full-rank cross layer `out = x0 ⊙ (xl · w + b) + xl`, forward and backward.

use faer::{Accum, Par};

use crate::linear::{linear_backward, linear_forward};
use crate::par::{for_rows, for_rows2};
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
    linear_forward(xl, w, Some(b), z, n, d, d, par);
    let z = &*z;
    for_rows(par, n, out, d, |first, out| {
        let at = first * d;
        let (x0, xl, z) = (&x0[at..], &xl[at..], &z[at..]);
        for (i, o) in out.iter_mut().enumerate() {
            *o = x0[i] * z[i] + xl[i];
        }
    });
}

/// Backward of [`cross_forward`] given `dout`.
///
/// - `dz = dout ⊙ x0`, written into the caller's scratch `dz` (`[n, d]`);
/// - `dx0 += dout ⊙ z` (always accumulates: `x0` feeds every layer of the cross network);
/// - `dxl (=|+= per dxl_accum) dz · wᵀ + dout`;
/// - `dw += xlᵀ · dz`; `db += colsum(dz)`.
///
/// For the first layer, where `xl` is `x0`, pass two different buffers for `dx0` and `dxl` and
/// add them afterwards (Rust forbids aliasing them).
///
/// # Panics
///
/// If any of `x0`, `xl`, `z`, `dout`, `dz`, `dx0`, `dxl` is not `n * d` long, `w` or `dw` is not
/// `d * d` long, or `db.len() != d`.
#[track_caller]
pub fn cross_backward(
    x0: &[f32],
    xl: &[f32],
    w: &[f32],
    z: &[f32],
    dout: &[f32],
    dz: &mut [f32],
    dx0: &mut [f32],
    dxl: &mut [f32],
    dxl_accum: Accum,
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
    ] {
        check_len("cross_backward", arg, len, n * d);
    }
    for (arg, len) in [("dz", dz.len()), ("dx0", dx0.len()), ("dxl", dxl.len())] {
        check_len("cross_backward", arg, len, n * d);
    }
    check_len("cross_backward", "w", w.len(), d * d);
    check_len("cross_backward", "dw", dw.len(), d * d);
    check_len("cross_backward", "db", db.len(), d);
    for_rows2(par, n, dz, d, dx0, d, |first, dz, dx0| {
        let at = first * d;
        let (x0, z, dout) = (&x0[at..], &z[at..], &dout[at..]);
        for (i, (dz, dx0)) in dz.iter_mut().zip(dx0.iter_mut()).enumerate() {
            *dz = dout[i] * x0[i];
            *dx0 += dout[i] * z[i];
        }
    });
    linear_backward(
        xl,
        w,
        dz,
        Some(&mut *dxl),
        dxl_accum,
        dw,
        Some(db),
        n,
        d,
        d,
        par,
    );
    for_rows(par, n, dxl, d, |first, dxl| {
        for (g, &o) in dxl.iter_mut().zip(&dout[first * d..]) {
            *g += o;
        }
    });
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
                    for accum in ACCUMS {
                        let mut dz = vec![f32::NAN; n * d];
                        let (mut dx0, dx0_base) = destination(&mut rng, n * d, Accum::Add);
                        let (mut dxl, dxl_base) = destination(&mut rng, n * d, accum);
                        let (mut dw, dw_base) = destination(&mut rng, d * d, Accum::Add);
                        let (mut db, db_base) = destination(&mut rng, d, Accum::Add);
                        cross_backward(
                            &x0, &xl, &w, &z, &dout, &mut dz, &mut dx0, &mut dxl, accum, &mut dw,
                            &mut db, n, d, par,
                        );
                        let what = format!("{accum:?} {what}");
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
            let mut dz = vec![0.0; n * d];
            let mut dx0 = vec![0.0; n * d];
            let mut dxl = vec![0.0; n * d];
            let mut dw = vec![0.0; d * d];
            let mut db = vec![0.0; d];
            cross_backward(
                &x0,
                &xl,
                &w,
                &z,
                &r,
                &mut dz,
                &mut dx0,
                &mut dxl,
                Accum::Replace,
                &mut dw,
                &mut db,
                n,
                d,
                Par::Seq,
            );
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
