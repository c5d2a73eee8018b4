//! Column concatenation of row-major blocks, forward and backward.

use faer::Accum;

use crate::shape::check_len;

/// Column concatenation: `parts[i]` is (`[n, width_i]` data, `width_i`); `out` is
/// `[n, Σ width_i]`, row `r` being the parts' rows `r` side by side in order.
///
/// # Panics
///
/// If some part's data is not `n * width_i` long or `out.len() != n * Σ width_i`.
#[track_caller]
pub fn concat_cols_forward(parts: &[(&[f32], usize)], out: &mut [f32], n: usize) {
    let total: usize = parts.iter().map(|&(_, w)| w).sum();
    check_len("concat_cols_forward", "out", out.len(), n * total);
    for (i, &(data, w)) in parts.iter().enumerate() {
        check_len(
            "concat_cols_forward",
            format_args!("parts[{i}]"),
            data.len(),
            n * w,
        );
    }
    if total == 0 {
        return;
    }
    for (r, out_row) in out.chunks_exact_mut(total).enumerate() {
        let mut off = 0;
        for &(data, w) in parts {
            out_row[off..off + w].copy_from_slice(&data[r * w..(r + 1) * w]);
            off += w;
        }
    }
}

/// Backward of [`concat_cols_forward`]: splits `dout` (`[n, Σ width_i]`) into the parts'
/// gradients, each written (`Replace`) or added (`Add`) per `accum`.
///
/// # Panics
///
/// If some part's gradient is not `n * width_i` long or `dout.len() != n * Σ width_i`.
#[track_caller]
pub fn concat_cols_backward(
    dout: &[f32],
    parts: &mut [(&mut [f32], usize)],
    n: usize,
    accum: Accum,
) {
    let total: usize = parts.iter().map(|(_, w)| *w).sum();
    check_len("concat_cols_backward", "dout", dout.len(), n * total);
    let mut off = 0;
    for (i, (grad, w)) in parts.iter_mut().enumerate() {
        let w = *w;
        check_len(
            "concat_cols_backward",
            format_args!("parts[{i}]"),
            grad.len(),
            n * w,
        );
        if w > 0 {
            for (g, d) in grad.chunks_exact_mut(w).zip(dout.chunks_exact(total)) {
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
                let parts: Vec<(&[f32], usize)> = data
                    .iter()
                    .map(Vec::as_slice)
                    .zip(widths.iter().copied())
                    .collect();
                let parts64: Vec<(Vec<f64>, usize)> = data
                    .iter()
                    .map(|d| to_f64(d))
                    .zip(widths.iter().copied())
                    .collect();
                let mut out = vec![f32::NAN; n * total];
                concat_cols_forward(&parts, &mut out, n);
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
                    let mut views: Vec<(&mut [f32], usize)> = grads
                        .iter_mut()
                        .map(|(g, _)| g.as_mut_slice())
                        .zip(widths.iter().copied())
                        .collect();
                    concat_cols_backward(&dout, &mut views, n, accum);
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
        let mut views: Vec<(&mut [f32], usize)> = grads
            .iter_mut()
            .map(Vec::as_mut_slice)
            .zip(widths)
            .collect();
        concat_cols_backward(&r, &mut views, n, Accum::Replace);
        let r64 = to_f64(&r);
        let inputs: Vec<Vec<f64>> = data.iter().map(|d| to_f64(d)).collect();
        let analytic: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        fd_check(&["a", "b", "c"], &inputs, &analytic, |p| {
            let parts: Vec<(Vec<f64>, usize)> = p.iter().cloned().zip(widths).collect();
            dot(&r64, &naive_concat(&parts, n))
        });
    }
}
