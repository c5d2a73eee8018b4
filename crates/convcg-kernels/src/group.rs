//! Pooling rows by group and a softmax over the groups: the advertiser-level loss scores each
//! query against the mean embedding of every advertiser's pins in the batch.

use faer::{Accum, Par};

use crate::gemm::{Trans, gemm};
use crate::shape::check_len;

/// `out[g, :] = mean of x[r, :] over the rows r with groups[r] == g`, for `g < n_groups`; rows
/// whose group is `>= n_groups` are left out (e.g. absent candidates), and a group without rows
/// gets zeros. `counts[g]` receives the number of rows pooled into group `g`, for the backward.
///
/// # Panics
///
/// If `x` is not `groups.len() * d` long, `out` not `n_groups * d`, or `counts` not `n_groups`.
#[track_caller]
pub fn segment_mean_forward(
    x: &[f32],
    groups: &[u32],
    n_groups: usize,
    d: usize,
    out: &mut [f32],
    counts: &mut [u32],
) {
    const K: &str = "segment_mean_forward";
    check_len(K, "x", x.len(), groups.len() * d);
    check_len(K, "out", out.len(), n_groups * d);
    check_len(K, "counts", counts.len(), n_groups);
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

/// Backward of [`segment_mean_forward`]: `dx[r, :] (=|+= per accum) dy[groups[r], :] /
/// counts[groups[r]]`, and nothing (`Replace`: 0) for a row left out.
///
/// # Panics
///
/// If `dx` is not `groups.len() * d` long, `dy` not `counts.len() * d`.
#[track_caller]
pub fn segment_mean_backward(
    groups: &[u32],
    counts: &[u32],
    dy: &[f32],
    d: usize,
    dx: &mut [f32],
    accum: Accum,
) {
    const K: &str = "segment_mean_backward";
    let n_groups = counts.len();
    check_len(K, "dy", dy.len(), n_groups * d);
    check_len(K, "dx", dx.len(), groups.len() * d);
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

/// Softmax cross-entropy of each of `b` queries against all `c` candidates, the right one
/// given by `targets[i] < c` (several rows may share a target):
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
/// If a length does not match, a target is `>= c`, or a weight is negative or not finite.
#[track_caller]
pub fn softmax_targets_forward(
    users: &[f32],
    cands: &[f32],
    b: usize,
    c: usize,
    d: usize,
    inv_temp: f32,
    targets: &[u32],
    weights: Option<&[f32]>,
    dlogits: &mut [f32],
    par: Par,
) -> f32 {
    const K: &str = "softmax_targets_forward";
    check_len(K, "users", users.len(), b * d);
    check_len(K, "cands", cands.len(), c * d);
    check_len(K, "targets", targets.len(), b);
    check_len(K, "dlogits", dlogits.len(), b * c);
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
        dlogits.fill(0.0);
        return 0.0;
    }
    gemm(
        dlogits,
        b,
        c,
        d,
        Accum::Replace,
        users,
        Trans::No,
        cands,
        Trans::Yes,
        inv_temp,
        par,
    );
    let mut loss = 0.0f64;
    for (i, row) in dlogits.chunks_exact_mut(c).enumerate() {
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
    use crate::softmax::softmax_xent_backward;
    use crate::testing::{ACCUMS, assert_close, destination, fd_check, rng, to_f64, uniform};
    use rand::Rng;

    #[test]
    fn segment_mean_pools_by_group_and_skips_rows_outside() {
        let d = 2;
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        // Rows 0 and 2 form group 1, row 1 group 0, row 3 is left out; group 2 is empty.
        let groups = [1, 0, 1, 9];
        let mut out = [f32::NAN; 6];
        let mut counts = [7; 3];
        segment_mean_forward(&x, &groups, 3, d, &mut out, &mut counts);
        assert_eq!(out, [3.0, 4.0, 3.0, 4.0, 0.0, 0.0]);
        assert_eq!(counts, [1, 2, 0]);
        let dy = [1.0, -1.0, 2.0, 4.0, 9.0, 9.0];
        let mut dx = [f32::NAN; 8];
        segment_mean_backward(&groups, &counts, &dy, d, &mut dx, Accum::Replace);
        assert_eq!(dx, [1.0, 2.0, 1.0, -1.0, 1.0, 2.0, 0.0, 0.0]);
        let mut dx = [1.0; 8];
        segment_mean_backward(&groups, &counts, &dy, d, &mut dx, Accum::Add);
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
        segment_mean_forward(&x, &groups, g, d, &mut out, &mut counts);
        for acc in ACCUMS {
            let (mut dx, base) = destination(&mut r, n * d, acc);
            segment_mean_backward(&groups, &counts, &w, d, &mut dx, acc);
            let mut plain = vec![0.0; n * d];
            segment_mean_backward(&groups, &counts, &w, d, &mut plain, Accum::Replace);
            let want: Vec<f64> = base
                .iter()
                .zip(&plain)
                .map(|(b, p)| b + f64::from(*p))
                .collect();
            assert_close("dx", &dx, &want, 1e-6);
        }
        let mut dx = vec![0.0; n * d];
        segment_mean_backward(&groups, &counts, &w, d, &mut dx, Accum::Replace);
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

    /// The loss in f64, straight from the definition.
    fn naive_loss(
        u: &[f64],
        c: &[f64],
        b: usize,
        n_c: usize,
        d: usize,
        inv_temp: f64,
        targets: &[u32],
        w: &[f64],
    ) -> f64 {
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
            let loss = softmax_targets_forward(
                &users,
                &cands,
                b,
                n_c,
                d,
                inv_temp,
                &targets,
                wts,
                &mut dlogits,
                Par::Seq,
            );
            let want = naive_loss(
                &to_f64(&users),
                &to_f64(&cands),
                b,
                n_c,
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
                &users,
                &cands,
                &dlogits,
                b,
                n_c,
                d,
                inv_temp,
                &mut du,
                Accum::Replace,
                &mut dc,
                Accum::Replace,
                Par::Seq,
            );
            fd_check(
                &["users", "cands"],
                &[to_f64(&users), to_f64(&cands)],
                &[&du, &dc],
                |v| {
                    naive_loss(
                        &v[0],
                        &v[1],
                        b,
                        n_c,
                        d,
                        f64::from(inv_temp),
                        &targets,
                        &w_used,
                    )
                },
            );
        }
    }

    #[test]
    fn targeted_softmax_with_zero_total_weight_is_zero() {
        let mut dlogits = vec![f32::NAN; 4];
        let loss = softmax_targets_forward(
            &[1.0, 2.0],
            &[1.0, 0.0],
            2,
            2,
            1,
            1.0,
            &[0, 1],
            Some(&[0.0, 0.0]),
            &mut dlogits,
            Par::Seq,
        );
        assert_eq!(loss, 0.0);
        assert_eq!(dlogits, [0.0; 4]);
    }
}
