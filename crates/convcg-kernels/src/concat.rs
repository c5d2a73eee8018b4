//! Column concatenation of row-major blocks, forward and backward.

use faer::Accum;

use crate::shape::check_shape;
use crate::view::{InputGrad, Rows, RowsMut};

/// Column concatenation: `out` is `[n, Σ width_i]`, row `r` being the parts' rows `r` side by
/// side in order.
///
/// # Panics
///
/// If some part does not have `out`'s rows or `out` is not as wide as the parts together.
#[track_caller]
pub fn concat_cols_forward(mut out: RowsMut<'_>, parts: &[Rows<'_>]) {
    let n = out.rows();
    let total: usize = parts.iter().map(|p| p.cols()).sum();
    check_shape("concat_cols_forward", "out", out.shape(), (n, total));
    for (i, p) in parts.iter().enumerate() {
        check_shape(
            "concat_cols_forward",
            format_args!("parts[{i}]"),
            p.shape(),
            (n, p.cols()),
        );
    }
    if total == 0 {
        return;
    }
    for (r, out_row) in out.data().chunks_exact_mut(total).enumerate() {
        let mut off = 0;
        for p in parts {
            let (data, w) = (p.data(), p.cols());
            out_row[off..off + w].copy_from_slice(&data[r * w..(r + 1) * w]);
            off += w;
        }
    }
}

/// Backward of [`concat_cols_forward`]: splits `dout` (`[n, Σ width_i]`) into the parts'
/// gradients, each written or added per its own accumulation.
///
/// # Panics
///
/// If some part's gradient does not have `dout`'s rows or `dout` is not as wide as the parts
/// together.
#[track_caller]
pub fn concat_cols_backward(parts: &mut [InputGrad<'_>], dout: Rows<'_>) {
    let n = dout.rows();
    let total: usize = parts.iter().map(|p| p.dx.cols()).sum();
    check_shape("concat_cols_backward", "dout", dout.shape(), (n, total));
    let mut off = 0;
    for (i, part) in parts.iter_mut().enumerate() {
        let w = part.dx.cols();
        part.check("concat_cols_backward", format_args!("parts[{i}]"), (n, w));
        let accum = part.accum;
        if w > 0 {
            let rows = part.dx.data().chunks_exact_mut(w);
            for (g, d) in rows.zip(dout.data().chunks_exact(total)) {
                let d = &d[off..off + w];
                match accum {
                    Accum::Replace => g.copy_from_slice(d),
                    Accum::Add => g.iter_mut().zip(d).for_each(|(g, &d)| *g += d),
                }
            }
        }
        off += w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, NS, add, assert_close, destination, dot, fd_check, rng, to_f64, uniform,
    };

    fn naive_concat(parts: &[(Vec<f64>, usize)], n: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for r in 0..n {
            for (data, w) in parts {
                out.extend_from_slice(&data[r * w..(r + 1) * w]);
            }
        }
        out
    }

    const WIDTHS: [&[usize]; 4] = [&[1], &[7, 16], &[15, 0, 33, 1], &[128, 17, 16]];

    #[test]
    fn forward_and_backward_match_naive() {
        let mut rng = rng(5);
        for &n in &NS {
            for widths in WIDTHS {
                let total: usize = widths.iter().sum();
                let data: Vec<Vec<f32>> =
                    widths.iter().map(|&w| uniform(&mut rng, n * w)).collect();
                let parts: Vec<Rows<'_>> = data
                    .iter()
                    .zip(widths.iter().copied())
                    .map(|(d, w)| Rows::new(d, n, w))
                    .collect();
                let parts64: Vec<(Vec<f64>, usize)> = data
                    .iter()
                    .map(|d| to_f64(d))
                    .zip(widths.iter().copied())
                    .collect();
                let mut out = vec![f32::NAN; n * total];
                concat_cols_forward(RowsMut::new(&mut out, n, total), &parts);
                assert_close(
                    &format!("out n={n} {widths:?}"),
                    &out,
                    &naive_concat(&parts64, n),
                    0.0,
                );

                // The backward of a concatenation is the split, i.e. the forward's inverse.
                let dout = uniform(&mut rng, n * total);
                for accum in ACCUMS {
                    let mut grads: Vec<(Vec<f32>, Vec<f64>)> = widths
                        .iter()
                        .map(|&w| destination(&mut rng, n * w, accum))
                        .collect();
                    let mut views: Vec<InputGrad<'_>> = grads
                        .iter_mut()
                        .zip(widths.iter().copied())
                        .map(|((g, _), w)| InputGrad::new(RowsMut::new(g, n, w), accum))
                        .collect();
                    concat_cols_backward(&mut views, Rows::new(&dout, n, total));
                    let parts_of_dout: Vec<(Vec<f64>, usize)> = {
                        let mut off = 0;
                        widths
                            .iter()
                            .map(|&w| {
                                let g: Vec<f64> = (0..n)
                                    .flat_map(|r| {
                                        dout[r * total + off..r * total + off + w]
                                            .iter()
                                            .map(|&v| f64::from(v))
                                    })
                                    .collect();
                                off += w;
                                (g, w)
                            })
                            .collect()
                    };
                    for (i, ((g, base), (expected, _))) in
                        grads.iter().zip(&parts_of_dout).enumerate()
                    {
                        assert_close(
                            &format!("part {i} n={n} {widths:?} {accum:?}"),
                            g,
                            &add(base, expected),
                            0.0,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng(6);
        let (n, widths) = (3, [2usize, 5, 1]);
        let data: Vec<Vec<f32>> = widths.iter().map(|&w| uniform(&mut rng, n * w)).collect();
        let r = uniform(&mut rng, n * 8);
        let mut grads: Vec<Vec<f32>> = widths.iter().map(|&w| vec![0.0; n * w]).collect();
        let mut views: Vec<InputGrad<'_>> = grads
            .iter_mut()
            .zip(widths)
            .map(|(g, w)| InputGrad::new(RowsMut::new(g, n, w), Accum::Replace))
            .collect();
        concat_cols_backward(&mut views, Rows::new(&r, n, 8));
        let r64 = to_f64(&r);
        let inputs: Vec<Vec<f64>> = data.iter().map(|d| to_f64(d)).collect();
        let analytic: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        fd_check(&["a", "b", "c"], &inputs, &analytic, |p| {
            let parts: Vec<(Vec<f64>, usize)> = p.iter().cloned().zip(widths).collect();
            dot(&r64, &naive_concat(&parts, n))
        });
    }
}
