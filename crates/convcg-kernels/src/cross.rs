//! DCN v2 full-rank cross layer `out = x0 ⊙ (xl · w + b) + xl`, forward and backward.

use faer::{Accum, Par};

use crate::bf16::Precision;
use crate::linear::{WeightGrads, linear_backward, linear_forward};
use crate::par::{for_rows2, for_rows3};
use crate::shape::{check_len, check_shape};
use crate::view::{InputGrad, Rows, RowsMut};

/// DCN v2 full-rank cross layer: `z = xl · w + b`; `out = x0 ⊙ z + xl`.
///
/// `x0` is the tower input, `xl` this layer's input (`x0` itself for the first layer), both
/// `[n, d]`; `w` is `[d, d]`, `b` is `[d]`. `z` (`[n, d]`, caller-owned) receives the pre-gate
/// activation that [`cross_backward`] needs; `z` and `out` are overwritten. The product runs in
/// `precision`.
///
/// # Panics
///
/// If `xl`, `z` or `out` is not `x0`'s shape, `w` is not `[d, d]` or `b.len() != d`.
#[track_caller]
// Each argument is its own view or setting, in faer's order (the crate's conventions).
#[allow(clippy::too_many_arguments)]
pub fn cross_forward(
    mut out: RowsMut<'_>,
    mut z: RowsMut<'_>,
    x0: Rows<'_>,
    xl: Rows<'_>,
    w: Rows<'_>,
    b: &[f32],
    precision: Precision,
    par: Par,
) {
    const K: &str = "cross_forward";
    let (n, d) = x0.shape();
    check_shape(K, "xl", xl.shape(), (n, d));
    check_shape(K, "z", z.shape(), (n, d));
    check_shape(K, "out", out.shape(), (n, d));
    check_shape(K, "w", w.shape(), (d, d));
    check_len(K, "b", b.len(), d);
    // The bias joins in the elementwise pass rather than filling `z` before the product.
    linear_forward(z.rb_mut(), xl, w, None, precision, par);
    let (x0, xl) = (x0.data(), xl.data());
    for_rows2(par, n, z.data(), d, out.data(), d, |first, z, out| {
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

/// What [`cross_backward`] reads: the layer's inputs and weight, and the pre-activation `z` its
/// forward saved.
#[derive(Clone, Copy, Debug)]
pub struct CrossSaved<'a> {
    /// The tower input, `[n, d]`.
    pub x0: Rows<'a>,
    /// The layer's input, `[n, d]`.
    pub xl: Rows<'a>,
    /// The weight, `[d, d]`.
    pub w: Rows<'a>,
    /// `xl · w + b`, `[n, d]`.
    pub z: Rows<'a>,
}

/// Backward of [`cross_forward`] given `dout`.
///
/// - `dz = dout ⊙ x0`, written into the caller's scratch `dz` (`[n, d]`);
/// - `dx0 (=|+=) dout ⊙ z`;
/// - `dxl (=|+=) dz · wᵀ + dout`, the product in `dxl`'s leading columns only
///   ([`InputGrad::leading`]);
/// - `dw += xlᵀ · dz`; `db += colsum(dz)`.
///
/// The product `dz · wᵀ` runs in `precision`, `dw`'s in f32.
///
/// `dxl: None` says that `xl` is `x0` (a network's first layer): then `dx0` receives
/// `dout ⊙ z + dz · wᵀ + dout`, the product in its leading columns only. One pass over the rows
/// writes `dz` and the elementwise parts of both input gradients; the products then add into
/// them.
///
/// # Panics
///
/// If `xl`, `z`, `dout`, `dz` or an input gradient is not `x0`'s shape, `w` or `dw` is not
/// `[d, d]`, or `db` is given and `db.len() != d`.
#[track_caller]
// Each argument is its own view or setting, in faer's order (the crate's conventions).
#[allow(clippy::too_many_arguments)]
pub fn cross_backward(
    dx0: InputGrad<'_>,
    dxl: Option<InputGrad<'_>>,
    weights: WeightGrads<'_>,
    mut dz: RowsMut<'_>,
    saved: CrossSaved<'_>,
    dout: Rows<'_>,
    precision: Precision,
    par: Par,
) {
    const K: &str = "cross_backward";
    let CrossSaved { x0, xl, w, z } = saved;
    let (n, d) = x0.shape();
    for (arg, view) in [("xl", xl), ("z", z), ("dout", dout)] {
        check_shape(K, arg, view.shape(), (n, d));
    }
    check_shape(K, "dz", dz.shape(), (n, d));
    check_shape(K, "w", w.shape(), (d, d));
    check_shape(K, "dw", weights.dw.shape(), (d, d));
    if let Some(db) = &weights.db {
        check_len(K, "db", db.len(), d);
    }
    dx0.check(K, "dx0", (n, d));
    // `g = g * keep + v`: with `keep` 0 for `Accum::Replace` the old contents (maybe NaN) must
    // not be read, hence the branch rather than a multiply.
    let put = |g: &mut f32, add: bool, v: f32| *g = if add { *g + v } else { v };
    let (x0, z, dout_data) = (x0.data(), z.data(), dout.data());
    let InputGrad {
        dx: mut dx0,
        accum: dx0_accum,
        cols: dx0_cols,
    } = dx0;
    let dxl = match dxl {
        Some(dxl) => {
            dxl.check(K, "dxl", (n, d));
            let InputGrad {
                dx: mut dxl,
                accum: dxl_accum,
                cols,
            } = dxl;
            let (add0, addl) = (dx0_accum == Accum::Add, dxl_accum == Accum::Add);
            for_rows3(
                par,
                n,
                d,
                dz.data(),
                dx0.data(),
                dxl.data(),
                |first, dz, dx0, dxl| {
                    let at = first * d;
                    let (x0, z, dout) = (&x0[at..], &z[at..], &dout_data[at..]);
                    for (i, ((dz, dx0), dxl)) in dz.iter_mut().zip(dx0).zip(dxl).enumerate() {
                        *dz = dout[i] * x0[i];
                        put(dx0, add0, dout[i] * z[i]);
                        put(dxl, addl, dout[i]);
                    }
                },
            );
            InputGrad {
                dx: dxl,
                accum: Accum::Add,
                cols,
            }
        }
        None => {
            let add = dx0_accum == Accum::Add;
            for_rows2(par, n, dz.data(), d, dx0.data(), d, |first, dz, dx0| {
                let at = first * d;
                let (x0, z, dout) = (&x0[at..], &z[at..], &dout_data[at..]);
                for (i, (dz, dx0)) in dz.iter_mut().zip(dx0).enumerate() {
                    *dz = dout[i] * x0[i];
                    put(dx0, add, dout[i] * z[i] + dout[i]);
                }
            });
            InputGrad {
                dx: dx0,
                accum: Accum::Add,
                cols: dx0_cols,
            }
        }
    };
    linear_backward(Some(dxl), weights, xl, w, dz.rb(), precision, par);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::tests::naive_linear;
    use crate::testing::{
        ACCUMS, DS, NS, add, assert_close, destination, dot, fd_check, naive_matmul, pars, rng,
        rows, rows_mut, to_f64, transpose, uniform,
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
                    let (x0v, xlv, wv) = (Rows::new(&x0, n, d), Rows::new(&xl, n, d), rows(&w, d));
                    cross_forward(
                        rows_mut(&mut out, d),
                        rows_mut(&mut z, d),
                        x0v,
                        xlv,
                        wv,
                        &b,
                        Precision::F32,
                        par,
                    );
                    assert_close(&format!("z {what}"), &z, &z_ref, 1e-5);
                    assert_close(&format!("out {what}"), &out, &out_ref, 1e-5);
                    for (acc0, accl) in ACCUMS.into_iter().flat_map(|a| ACCUMS.map(|b| (a, b))) {
                        let (mut dx0, dx0_base) = destination(&mut rng, n * d, acc0);
                        let (mut dxl, dxl_base) = destination(&mut rng, n * d, accl);
                        let (mut dw, dw_base) = destination(&mut rng, d * d, Accum::Add);
                        let (mut db, db_base) = destination(&mut rng, d, Accum::Add);
                        let saved = CrossSaved {
                            x0: x0v,
                            xl: xlv,
                            w: wv,
                            z: Rows::new(&z, n, d),
                        };
                        let dz = backward(
                            saved,
                            &dout,
                            InputGrad::new(rows_mut(&mut dx0, d), acc0),
                            Some(InputGrad::new(rows_mut(&mut dxl, d), accl)),
                            [&mut dw, &mut db],
                            par,
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

    /// [`cross_backward`] of the layer `saved` from `dout` into the input gradients, adding
    /// into `[dw, db]`; returns `dz`, written into a NaN-filled buffer.
    fn backward(
        saved: CrossSaved<'_>,
        dout: &[f32],
        dx0: InputGrad<'_>,
        dxl: Option<InputGrad<'_>>,
        [dw, db]: [&mut [f32]; 2],
        par: Par,
    ) -> Vec<f32> {
        let (n, d) = saved.x0.shape();
        let mut dz = vec![f32::NAN; n * d];
        let weights = WeightGrads {
            dw: rows_mut(dw, d),
            db: Some(db),
        };
        let (dz_view, dout) = (rows_mut(&mut dz, d), Rows::new(dout, n, d));
        cross_backward(dx0, dxl, weights, dz_view, saved, dout, Precision::F32, par);
        dz
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
        let (mut dx0, mut dxl) = (vec![0.0; n * d], vec![0.0; n * d]);
        let (mut dw, mut db) = (vec![0.0; d * d], vec![0.0; d]);
        let saved = CrossSaved {
            x0: Rows::new(x0, n, d),
            xl: Rows::new(xl, n, d),
            w: rows(w, d),
            z: Rows::new(z, n, d),
        };
        backward(
            saved,
            dout,
            InputGrad::new(rows_mut(&mut dx0, d), Accum::Replace),
            Some(InputGrad::new(rows_mut(&mut dxl, d), Accum::Replace)),
            [&mut dw, &mut db],
            Par::Seq,
        );
        [dx0, dxl, dw, db]
    }

    /// A first layer (`xl` is `x0`, no `dxl`): `dx0` gets the sum of the two gradients that
    /// two input gradients get separately (checked against the naive layer above), written or
    /// added, and the same `dw`, `db`. With fewer leading columns than `d`, the columns past
    /// them get only the elementwise part, `dout ⊙ z + dout`.
    #[test]
    fn first_layer_gets_the_sum_of_both_input_gradients() {
        let mut rng = rng(9);
        for &n in &NS {
            for &d in &DS {
                let [x0, dout] = [0; 2].map(|_| uniform(&mut rng, n * d));
                let w = uniform(&mut rng, d * d);
                let b = uniform(&mut rng, d);
                let (mut z, mut out) = (vec![0.0; n * d], vec![0.0; n * d]);
                let (x0v, wv) = (Rows::new(&x0, n, d), rows(&w, d));
                cross_forward(
                    rows_mut(&mut out, d),
                    rows_mut(&mut z, d),
                    x0v,
                    x0v,
                    wv,
                    &b,
                    Precision::F32,
                    Par::Seq,
                );
                let [dx0, dxl, dw_two, db_two] = backward_two(&x0, &x0, &w, &z, &dout, n, d);
                let sum = add(&to_f64(&dx0), &to_f64(&dxl));
                let elementwise = add(&to_f64(&dx0), &to_f64(&dout));
                for par in pars() {
                    for (accum, cols) in ACCUMS.into_iter().flat_map(|a| [(a, d), (a, d / 2)]) {
                        let (mut g, base) = destination(&mut rng, n * d, accum);
                        let (mut dw, mut db) = (vec![0.0; d * d], vec![0.0; d]);
                        let saved = CrossSaved {
                            x0: x0v,
                            xl: x0v,
                            w: wv,
                            z: Rows::new(&z, n, d),
                        };
                        backward(
                            saved,
                            &dout,
                            InputGrad::new(rows_mut(&mut g, d), accum).leading(cols),
                            None,
                            [&mut dw, &mut db],
                            par,
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
            let (x0v, xlv) = (Rows::new(&x0, n, d), Rows::new(&xl, n, d));
            let (outv, zv) = (rows_mut(&mut out, d), rows_mut(&mut z, d));
            cross_forward(
                outv,
                zv,
                x0v,
                xlv,
                rows(&w, d),
                &b,
                Precision::F32,
                Par::Seq,
            );
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
