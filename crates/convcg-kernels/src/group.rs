//! Pooling rows by group and a softmax over the groups: the advertiser-level loss scores each
//! query against the mean embedding of every advertiser's pins in the batch.

use faer::{Accum, Par};

use crate::gemm::gemm;
use crate::shape::{check_len, check_shape};
use crate::view::{InputGrad, Rows, RowsMut};

/// `out[g, :] = mean of x[r, :] over the rows r with groups[r] == g`, for the `n_groups` rows
/// `g` of `out`; rows whose group is `>= n_groups` are left out (e.g. absent candidates), and a
/// group without rows gets zeros. `counts[g]` receives the number of rows pooled into group
/// `g`, for the backward.
///
/// # Panics
///
/// If `x` does not have one row per group entry, `out` is not `x`'s width, or `counts` is not
/// `n_groups` long.
#[track_caller]
pub fn segment_mean_forward(mut out: RowsMut<'_>, counts: &mut [u32], x: Rows<'_>, groups: &[u32]) {
    const K: &str = "segment_mean_forward";
    let (n_groups, d) = out.shape();
    check_shape(K, "x", x.shape(), (groups.len(), d));
    check_len(K, "counts", counts.len(), n_groups);
    let (out, x) = (out.data(), x.data());
    out.fill(0.0);
    counts.fill(0);
    for (r, &g) in groups.iter().enumerate() {
        let g = g as usize;
        if g >= n_groups {
            continue;
        }
        counts[g] += 1;
        for (o, &v) in out[g * d..(g + 1) * d]
            .iter_mut()
            .zip(&x[r * d..(r + 1) * d])
        {
            *o += v;
        }
    }
    for (g, &c) in counts.iter().enumerate() {
        if c > 1 {
            let inv = 1.0 / c as f32;
            for o in &mut out[g * d..(g + 1) * d] {
                *o *= inv;
            }
        }
    }
}

/// Backward of [`segment_mean_forward`]: `dx[r, :] (=|+= per its accum) dy[groups[r], :] /
/// counts[groups[r]]`, and nothing (`Replace`: 0) for a row left out.
///
/// # Panics
///
/// If `dy` does not have one row per count, or `dx` is not `[groups.len(), d]`.
#[track_caller]
pub fn segment_mean_backward(dx: InputGrad<'_>, dy: Rows<'_>, groups: &[u32], counts: &[u32]) {
    const K: &str = "segment_mean_backward";
    let n_groups = counts.len();
    let d = dy.cols();
    check_shape(K, "dy", dy.shape(), (n_groups, d));
    dx.check(K, "dx", (groups.len(), d));
    let InputGrad { mut dx, accum, .. } = dx;
    let (dx, dy) = (dx.data(), dy.data());
    for (r, &g) in groups.iter().enumerate() {
        let dx = &mut dx[r * d..(r + 1) * d];
        let g = g as usize;
        if g >= n_groups || counts[g] == 0 {
            if accum == Accum::Replace {
                dx.fill(0.0);
            }
            continue;
        }
        let inv = 1.0 / counts[g] as f32;
        for (dx, &dy) in dx.iter_mut().zip(&dy[g * d..(g + 1) * d]) {
            match accum {
                Accum::Replace => *dx = dy * inv,
                Accum::Add => *dx += dy * inv,
            }
        }
    }
}

/// Softmax cross-entropy of each of the `b` rows of `users` against all `c` rows of `cands`,
/// the right one given by `targets[i] < c` (several rows may share a target):
/// `logits[i, j] = inv_temp * <users_i, cands_j>`, row loss `-log softmax(logits_i)[targets[i]]`.
///
/// Returns the weighted mean loss `Σ w_i loss_i / Σ w_i` (`weights: None` means all 1; if
/// `Σ w = 0` the loss and gradient are 0) and writes into `dlogits` (`[b, c]`, overwritten) its
/// gradient with respect to the logits, scaled by `w_i / Σ w`, for
/// [`softmax_xent_backward`](crate::softmax_xent_backward), which computes the inputs' gradients
/// from it. Row maxima are subtracted before exponentiation; sums run in f64.
///
/// # Panics
///
/// If a shape or length does not match, a target is `>= c`, or a weight is negative or not
/// finite.
#[track_caller]
pub fn softmax_targets_forward(
    mut dlogits: RowsMut<'_>,
    users: Rows<'_>,
    cands: Rows<'_>,
    targets: &[u32],
    weights: Option<&[f32]>,
    inv_temp: f32,
    par: Par,
) -> f32 {
    const K: &str = "softmax_targets_forward";
    let (b, d) = users.shape();
    let c = cands.rows();
    check_shape(K, "cands", cands.shape(), (c, d));
    check_len(K, "targets", targets.len(), b);
    check_shape(K, "dlogits", dlogits.shape(), (b, c));
    if let Some(w) = weights {
        check_len(K, "weights", w.len(), b);
        assert!(
            w.iter().all(|w| w.is_finite() && *w >= 0.0),
            "{K}: weights must be finite and non-negative"
        );
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= c) {
        panic!("{K}: target {t} is outside the {c} candidates");
    }
    let weight = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    let total: f64 = (0..b).map(weight).sum();
    if b == 0 || c == 0 || total == 0.0 {
        dlogits.data().fill(0.0);
        return 0.0;
    }
    let (u, c_t) = (users.mat(), cands.mat().transpose());
    gemm(dlogits.rb_mut(), Accum::Replace, u, c_t, inv_temp, par);
    let mut loss = 0.0f64;
    for (i, row) in dlogits.data().chunks_exact_mut(c).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = row.iter().map(|&l| f64::from(l - max).exp()).sum();
        let t = targets[i] as usize;
        let w = weight(i);
        loss += w * (z.ln() - f64::from(row[t] - max));
        let scale = w / total;
        for l in row.iter_mut() {
            *l = (scale * f64::from(*l - max).exp() / z) as f32;
        }
        row[t] -= scale as f32;
    }
    (loss / total) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::Precision;
    use crate::softmax::softmax_xent_backward;
    use crate::testing::{
        ACCUMS, assert_close, destination, fd_check, rng, rows, rows_mut, to_f64, uniform,
    };
    use rand::Rng;

    #[test]
    fn segment_mean_pools_by_group_and_skips_rows_outside() {
        let d = 2;
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        // Rows 0 and 2 form group 1, row 1 group 0, row 3 is left out; group 2 is empty.
        let groups = [1, 0, 1, 9];
        let mut out = [f32::NAN; 6];
        let mut counts = [7; 3];
        segment_mean_forward(rows_mut(&mut out, d), &mut counts, rows(&x, d), &groups);
        assert_eq!(out, [3.0, 4.0, 3.0, 4.0, 0.0, 0.0]);
        assert_eq!(counts, [1, 2, 0]);
        let dy = [1.0, -1.0, 2.0, 4.0, 9.0, 9.0];
        let mut dx = [f32::NAN; 8];
        let grad = InputGrad::new(rows_mut(&mut dx, d), Accum::Replace);
        segment_mean_backward(grad, rows(&dy, d), &groups, &counts);
        assert_eq!(dx, [1.0, 2.0, 1.0, -1.0, 1.0, 2.0, 0.0, 0.0]);
        let mut dx = [1.0; 8];
        let grad = InputGrad::new(rows_mut(&mut dx, d), Accum::Add);
        segment_mean_backward(grad, rows(&dy, d), &groups, &counts);
        assert_eq!(dx, [2.0, 3.0, 2.0, 0.0, 2.0, 3.0, 1.0, 1.0]);
    }

    #[test]
    fn segment_mean_gradients_match_finite_differences() {
        let mut r = rng(7);
        let (n, d, g) = (9, 3, 4);
        let groups: Vec<u32> = (0..n).map(|_| r.random_range(0..g as u32 + 1)).collect();
        let x = uniform(&mut r, n * d);
        let w = uniform(&mut r, g * d);
        let (mut out, mut counts) = (vec![0.0; g * d], vec![0; g]);
        segment_mean_forward(rows_mut(&mut out, d), &mut counts, rows(&x, d), &groups);
        let backward = |dx: &mut [f32], accum| {
            let grad = InputGrad::new(rows_mut(dx, d), accum);
            segment_mean_backward(grad, rows(&w, d), &groups, &counts);
        };
        for acc in ACCUMS {
            let (mut dx, base) = destination(&mut r, n * d, acc);
            backward(&mut dx, acc);
            let mut plain = vec![0.0; n * d];
            backward(&mut plain, Accum::Replace);
            let want: Vec<f64> = base
                .iter()
                .zip(&plain)
                .map(|(b, p)| b + f64::from(*p))
                .collect();
            assert_close("dx", &dx, &want, 1e-6);
        }
        let mut dx = vec![0.0; n * d];
        backward(&mut dx, Accum::Replace);
        let w = to_f64(&w);
        fd_check(&["x"], &[to_f64(&x)], &[&dx], |v| {
            let mut sums = vec![0.0; g * d];
            let mut c = vec![0.0; g];
            for (row, &grp) in groups.iter().enumerate() {
                let grp = grp as usize;
                if grp < g {
                    c[grp] += 1.0;
                    for k in 0..d {
                        sums[grp * d + k] += v[0][row * d + k];
                    }
                }
            }
            (0..g * d)
                .map(|k| {
                    let n = c[k / d];
                    if n > 0.0 { w[k] * sums[k] / n } else { 0.0 }
                })
                .sum()
        });
    }

    /// The loss in f64, straight from the definition, for `[b, d]` users `u` (`b` targets) and
    /// `[n_c, d]` candidates `c`.
    fn naive_loss(
        u: &[f64],
        c: &[f64],
        d: usize,
        inv_temp: f64,
        targets: &[u32],
        w: &[f64],
    ) -> f64 {
        let (b, n_c) = (targets.len(), c.len() / d);
        let mut total = 0.0;
        for i in 0..b {
            let logits: Vec<f64> = (0..n_c)
                .map(|j| inv_temp * (0..d).map(|k| u[i * d + k] * c[j * d + k]).sum::<f64>())
                .collect();
            let z: f64 = logits.iter().map(|l| l.exp()).sum();
            total += w[i] * (z.ln() - logits[targets[i] as usize]);
        }
        total / w.iter().sum::<f64>()
    }

    #[test]
    fn targeted_softmax_matches_naive_loss_and_gradients() {
        let mut r = rng(8);
        for (b, n_c, d) in [(1, 2, 1), (4, 3, 5), (37, 11, 8)] {
            let users = uniform(&mut r, b * d);
            let cands = uniform(&mut r, n_c * d);
            // Targets repeat: several queries share an advertiser.
            let targets: Vec<u32> = (0..b).map(|_| r.random_range(0..n_c as u32)).collect();
            // Unequal weights, one of them zero.
            let weights: Vec<f32> = (0..b)
                .map(|i| (i % 3) as f32 * 0.5 + 0.5 * f32::from(i == 0))
                .collect();
            let w_used = to_f64(&weights);
            let wts = Some(weights.as_slice());
            let inv_temp = 2.0;
            let mut dlogits = vec![f32::NAN; b * n_c];
            let (u, c) = (rows(&users, d), rows(&cands, d));
            let loss = softmax_targets_forward(
                rows_mut(&mut dlogits, n_c),
                u,
                c,
                &targets,
                wts,
                inv_temp,
                Par::Seq,
            );
            let want = naive_loss(
                &to_f64(&users),
                &to_f64(&cands),
                d,
                f64::from(inv_temp),
                &targets,
                &w_used,
            );
            assert!(
                (f64::from(loss) - want).abs() <= 1e-5 * want.abs().max(1.0),
                "loss {loss} vs {want}"
            );
            let (mut du, mut dc) = (vec![0.0; b * d], vec![0.0; n_c * d]);
            softmax_xent_backward(
                InputGrad::new(rows_mut(&mut du, d), Accum::Replace),
                InputGrad::new(rows_mut(&mut dc, d), Accum::Replace),
                u,
                c,
                rows(&dlogits, n_c),
                inv_temp,
                Precision::F32,
                Par::Seq,
            );
            fd_check(
                &["users", "cands"],
                &[to_f64(&users), to_f64(&cands)],
                &[&du, &dc],
                |v| naive_loss(&v[0], &v[1], d, f64::from(inv_temp), &targets, &w_used),
            );
        }
    }

    #[test]
    fn targeted_softmax_with_zero_total_weight_is_zero() {
        let mut dlogits = vec![f32::NAN; 4];
        let loss = softmax_targets_forward(
            rows_mut(&mut dlogits, 2),
            rows(&[1.0, 2.0], 1),
            rows(&[1.0, 0.0], 1),
            &[0, 1],
            Some(&[0.0, 0.0]),
            1.0,
            Par::Seq,
        );
        assert_eq!(loss, 0.0);
        assert_eq!(dlogits, [0.0; 4]);
    }
}
