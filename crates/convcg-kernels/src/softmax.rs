//! In-batch sampled softmax cross-entropy with logQ correction and accidental-hit masking.

use faer::{Accum, Par};
use rayon::prelude::*;

use crate::gemm::{Trans, gemm};
use crate::shape::check_len;

/// Rows per partial loss sum. Fixed, so that the loss is summed in the same order whatever the
/// thread count.
const LOSS_BLOCK_ROWS: usize = 32;

/// In-batch sampled softmax cross-entropy, forward.
///
/// `users` is `[b, d]`, `cands` is `[c, d]` with `c >= b`; candidate `i < b` is row `i`'s
/// positive. `logits[i, j] = inv_temp * <users_i, cands_j> - log_q[j]` (`log_q` optional), and
/// `logits[i, j] = -inf` (an accidental hit, masked) when `j != i` and
/// `cand_ids[j] == cand_ids[i]`. Row loss is `-log softmax(logits_i)[i]`.
///
/// Returns the weighted mean loss `Σ w_i loss_i / Σ w_i` (`weights: None` means all 1; rows of
/// weight 0 are allowed; if `Σ w = 0` the loss and the gradient are 0). Writes into `dlogits`
/// (`[b, c]`, caller-owned scratch, overwritten) the gradient of the returned loss with respect
/// to the logits, already scaled by `w_i / Σ w`, for [`softmax_xent_backward`]. Masked logits
/// get a zero gradient.
///
/// Row maxima are subtracted before exponentiation; exponentials are summed and the loss is
/// accumulated in f64, in fixed row blocks, so the result does not depend on the thread count
/// beyond that of the logits GEMM.
///
/// # Panics
///
/// If `c < b`; `users.len() != b * d`; `cands.len() != c * d`; `cand_ids` or `log_q` is not `c`
/// long; `weights` is not `b` long or holds a negative or non-finite value; or
/// `dlogits.len() != b * c`.
#[track_caller]
pub fn softmax_xent_forward(
    users: &[f32],
    cands: &[f32],
    b: usize,
    c: usize,
    d: usize,
    inv_temp: f32,
    log_q: Option<&[f32]>,
    cand_ids: &[u32],
    weights: Option<&[f32]>,
    dlogits: &mut [f32],
    par: Par,
) -> f32 {
    const K: &str = "softmax_xent_forward";
    assert!(
        c >= b,
        "{K}: c = {c} candidates cannot include the b = {b} positives"
    );
    check_len(K, "users", users.len(), b * d);
    check_len(K, "cands", cands.len(), c * d);
    check_len(K, "cand_ids", cand_ids.len(), c);
    check_len(K, "dlogits", dlogits.len(), b * c);
    if let Some(log_q) = log_q {
        check_len(K, "log_q", log_q.len(), c);
    }
    let weight_sum = match weights {
        None => b as f64,
        Some(w) => {
            check_len(K, "weights", w.len(), b);
            if let Some(i) = w.iter().position(|&v| !(v.is_finite() && v >= 0.0)) {
                panic!(
                    "{K}: weights[{i}] = {} is not a finite non-negative number",
                    w[i]
                );
            }
            w.iter().map(|&v| f64::from(v)).sum()
        }
    };
    if b == 0 || weight_sum == 0.0 {
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

    // Turns row i of logits into its gradient and returns w_i * loss_i.
    let row_loss = |i: usize, row: &mut [f32]| -> f64 {
        let w_i = weights.map_or(1.0, |w| f64::from(w[i]));
        if w_i == 0.0 {
            row.fill(0.0);
            return 0.0;
        }
        let positive = cand_ids[i];
        let mut max = f32::NEG_INFINITY;
        for (j, l) in row.iter_mut().enumerate() {
            if j != i && cand_ids[j] == positive {
                *l = f32::NEG_INFINITY;
                continue;
            }
            if let Some(log_q) = log_q {
                *l -= log_q[j];
            }
            max = max.max(*l);
        }
        let margin = max - row[i];
        let mut sum = 0.0f64;
        for l in row.iter_mut() {
            let e = (*l - max).exp();
            *l = e;
            sum += f64::from(e);
        }
        let e_pos = f64::from(row[i]);
        let scale = w_i / weight_sum;
        let p_scale = scale / sum;
        for l in row.iter_mut() {
            *l = (f64::from(*l) * p_scale) as f32;
        }
        // p_i - 1 from the other candidates' mass: exact even when p_i rounds to 1.
        row[i] = (-(sum - e_pos) * p_scale) as f32;
        w_i * (f64::from(margin) + sum.ln())
    };
    let block_loss = |first: usize, block: &mut [f32]| -> f64 {
        block
            .chunks_exact_mut(c)
            .enumerate()
            .map(|(r, row)| row_loss(first + r, row))
            .sum()
    };
    let block_len = LOSS_BLOCK_ROWS * c;
    let total: f64 = match par {
        Par::Rayon(threads) if threads.get() > 1 && b > LOSS_BLOCK_ROWS => {
            let blocks_per_thread = b.div_ceil(LOSS_BLOCK_ROWS).div_ceil(threads.get());
            let partials: Vec<f64> = dlogits
                .par_chunks_mut(block_len)
                .enumerate()
                .with_min_len(blocks_per_thread)
                .map(|(k, block)| block_loss(k * LOSS_BLOCK_ROWS, block))
                .collect();
            partials.iter().sum()
        }
        _ => dlogits
            .chunks_mut(block_len)
            .enumerate()
            .map(|(k, block)| block_loss(k * LOSS_BLOCK_ROWS, block))
            .sum(),
    };
    (total / weight_sum) as f32
}

/// Backward of [`softmax_xent_forward`] from its `dlogits`:
/// `du (=|+= per du_accum) inv_temp * dlogits · cands`;
/// `dc (=|+= per dc_accum) inv_temp * dlogitsᵀ · users`.
///
/// # Panics
///
/// If `users` or `du` is not `b * d` long, `cands` or `dc` is not `c * d` long, or
/// `dlogits.len() != b * c`.
#[track_caller]
pub fn softmax_xent_backward(
    users: &[f32],
    cands: &[f32],
    dlogits: &[f32],
    b: usize,
    c: usize,
    d: usize,
    inv_temp: f32,
    du: &mut [f32],
    du_accum: Accum,
    dc: &mut [f32],
    dc_accum: Accum,
    par: Par,
) {
    const K: &str = "softmax_xent_backward";
    check_len(K, "users", users.len(), b * d);
    check_len(K, "cands", cands.len(), c * d);
    check_len(K, "dlogits", dlogits.len(), b * c);
    check_len(K, "du", du.len(), b * d);
    check_len(K, "dc", dc.len(), c * d);
    gemm(
        du,
        b,
        d,
        c,
        du_accum,
        dlogits,
        Trans::No,
        cands,
        Trans::No,
        inv_temp,
        par,
    );
    gemm(
        dc,
        c,
        d,
        b,
        dc_accum,
        dlogits,
        Trans::Yes,
        users,
        Trans::No,
        inv_temp,
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, DS, add, assert_close, destination, fd_check, naive_matmul, pars, rng, to_f64,
        transpose, uniform,
    };
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    struct Case {
        b: usize,
        c: usize,
        d: usize,
        users: Vec<f32>,
        cands: Vec<f32>,
        log_q: Option<Vec<f32>>,
        ids: Vec<u32>,
        weights: Option<Vec<f32>>,
    }

    const INV_TEMP: f32 = 5.0;

    /// Embeddings of norm about 1, ids from a pool small enough that accidental hits occur,
    /// and (optionally) weights of which some are 0.
    fn case(
        rng: &mut ChaCha8Rng,
        b: usize,
        c: usize,
        d: usize,
        with_q: bool,
        with_w: bool,
    ) -> Case {
        let scale = 1.0 / (d as f32).sqrt();
        let mut emb = |len| {
            uniform(rng, len)
                .into_iter()
                .map(|v| v * scale)
                .collect::<Vec<_>>()
        };
        let users = emb(b * d);
        let cands = emb(c * d);
        let pool = (c as u32 / 2).max(1);
        let ids = (0..c).map(|_| rng.random_range(0..pool)).collect();
        let log_q = with_q.then(|| (0..c).map(|_| rng.random_range(-9.0f32..-2.0)).collect());
        let weights = with_w.then(|| {
            (0..b)
                .map(|i| {
                    if i % 4 == 1 {
                        0.0
                    } else {
                        rng.random_range(0.1f32..3.0)
                    }
                })
                .collect()
        });
        Case {
            b,
            c,
            d,
            users,
            cands,
            log_q,
            ids,
            weights,
        }
    }

    /// `(loss, dlogits)` in f64, straight from the definition.
    fn naive(users: &[f64], cands: &[f64], k: &Case) -> (f64, Vec<f64>) {
        let (b, c) = (k.b, k.c);
        let dots = naive_matmul(users, &transpose(cands, c, k.d), b, k.d, c);
        let w: Vec<f64> = (0..b)
            .map(|i| k.weights.as_ref().map_or(1.0, |w| f64::from(w[i])))
            .collect();
        let w_sum: f64 = w.iter().sum();
        let mut grad = vec![0.0; b * c];
        if w_sum == 0.0 {
            return (0.0, grad);
        }
        let mut loss = 0.0;
        for i in 0..b {
            let logits: Vec<f64> = (0..c)
                .map(|j| {
                    if j != i && k.ids[j] == k.ids[i] {
                        f64::NEG_INFINITY
                    } else {
                        f64::from(INV_TEMP) * dots[i * c + j]
                            - k.log_q.as_ref().map_or(0.0, |q| f64::from(q[j]))
                    }
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            loss += w[i] * (lse - logits[i]);
            for j in 0..c {
                let p = (logits[j] - lse).exp();
                grad[i * c + j] = w[i] / w_sum * (p - if j == i { 1.0 } else { 0.0 });
            }
        }
        (loss / w_sum, grad)
    }

    fn forward(k: &Case, dlogits: &mut [f32], par: Par) -> f32 {
        softmax_xent_forward(
            &k.users,
            &k.cands,
            k.b,
            k.c,
            k.d,
            INV_TEMP,
            k.log_q.as_deref(),
            &k.ids,
            k.weights.as_deref(),
            dlogits,
            par,
        )
    }

    const SHAPES: [(usize, usize); 7] = [
        (1, 1),
        (1, 3),
        (3, 3),
        (17, 17),
        (17, 40),
        (64, 129),
        (129, 129),
    ];

    #[test]
    fn forward_and_backward_match_naive() {
        let mut rng = rng(14);
        for (s, &(b, c)) in SHAPES.iter().enumerate() {
            for (t, &d) in DS.iter().enumerate() {
                let k = case(&mut rng, b, c, d, (s + t) % 2 == 0, (s + t) % 3 != 0);
                let (users64, cands64) = (to_f64(&k.users), to_f64(&k.cands));
                let (loss_ref, dlogits_ref) = naive(&users64, &cands64, &k);
                for par in pars() {
                    let what = format!(
                        "b={b} c={c} d={d} q={} w={} {par:?}",
                        k.log_q.is_some(),
                        k.weights.is_some()
                    );
                    let mut dlogits = vec![f32::NAN; b * c];
                    let loss = forward(&k, &mut dlogits, par);
                    assert_close(&format!("loss {what}"), &[loss], &[loss_ref], 1e-5);
                    assert_close(&format!("dlogits {what}"), &dlogits, &dlogits_ref, 1e-5);
                    let dl64 = to_f64(&dlogits);
                    let it = f64::from(INV_TEMP);
                    let du_ref: Vec<f64> = naive_matmul(&dl64, &cands64, b, c, d)
                        .iter()
                        .map(|v| it * v)
                        .collect();
                    let dc_ref: Vec<f64> = naive_matmul(&transpose(&dl64, b, c), &users64, c, b, d)
                        .iter()
                        .map(|v| it * v)
                        .collect();
                    for accum in ACCUMS {
                        let (mut du, du_base) = destination(&mut rng, b * d, accum);
                        let (mut dc, dc_base) = destination(&mut rng, c * d, accum);
                        softmax_xent_backward(
                            &k.users, &k.cands, &dlogits, b, c, d, INV_TEMP, &mut du, accum,
                            &mut dc, accum, par,
                        );
                        assert_close(
                            &format!("du {accum:?} {what}"),
                            &du,
                            &add(&du_base, &du_ref),
                            1e-5,
                        );
                        assert_close(
                            &format!("dc {accum:?} {what}"),
                            &dc,
                            &add(&dc_base, &dc_ref),
                            1e-5,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn masks_accidental_hits_only_off_the_diagonal() {
        // Candidates 0 and 2 are the same item: row 0 must not see 2 and row 2 (b = 3) not 0.
        let k = Case {
            b: 3,
            c: 4,
            d: 1,
            users: vec![1.0, 1.0, 1.0],
            cands: vec![1.0, 1.0, 1.0, 1.0],
            log_q: None,
            ids: vec![5, 6, 5, 7],
            weights: None,
        };
        let mut dlogits = vec![0.0; 12];
        let loss = forward(&k, &mut dlogits, Par::Seq);
        // Equal logits: rows 0 and 2 choose among 3 candidates, row 1 among 4.
        let expected = (3f64.ln() * 2.0 + 4f64.ln()) / 3.0;
        assert_close("loss", &[loss], &[expected], 1e-6);
        assert_eq!(dlogits[2], 0.0);
        assert_eq!(dlogits[2 * 4], 0.0);
        assert!(dlogits[4 + 2] > 0.0);
    }

    #[test]
    fn zero_total_weight_gives_zero_loss_and_gradient() {
        let mut rng = rng(15);
        let mut k = case(&mut rng, 3, 5, 4, true, true);
        k.weights = Some(vec![0.0; 3]);
        let mut dlogits = vec![f32::NAN; 15];
        assert_eq!(forward(&k, &mut dlogits, Par::Seq), 0.0);
        assert_eq!(dlogits, vec![0.0; 15]);
    }

    #[test]
    fn stable_for_large_logits() {
        let k = Case {
            b: 2,
            c: 2,
            d: 1,
            users: vec![100.0, -100.0],
            cands: vec![100.0, -100.0],
            log_q: None,
            ids: vec![0, 1],
            weights: None,
        };
        let mut dlogits = vec![0.0; 4];
        let loss = forward(&k, &mut dlogits, Par::Seq);
        // The positive wins by 5 * 2e4 in both rows: the loss underflows to 0, never NaN.
        assert_eq!(loss, 0.0);
        assert!(dlogits.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn repeated_runs_are_bit_identical() {
        let mut rng = rng(16);
        let k = case(&mut rng, 129, 258, 33, true, true);
        let mut first = vec![0.0; 129 * 258];
        let mut again = vec![0.0; 129 * 258];
        for par in pars() {
            let l1 = forward(&k, &mut first, par);
            let l2 = forward(&k, &mut again, par);
            assert_eq!(l1.to_bits(), l2.to_bits());
            assert_eq!(first, again);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng(17);
        for &(b, c, d, q, w) in &[
            (1, 1, 1, false, false),
            (3, 3, 4, true, false),
            (4, 9, 5, true, true),
        ] {
            let k = case(&mut rng, b, c, d, q, w);
            let mut dlogits = vec![0.0; b * c];
            forward(&k, &mut dlogits, Par::Seq);
            let mut du = vec![0.0; b * d];
            let mut dc = vec![0.0; c * d];
            softmax_xent_backward(
                &k.users,
                &k.cands,
                &dlogits,
                b,
                c,
                d,
                INV_TEMP,
                &mut du,
                Accum::Replace,
                &mut dc,
                Accum::Replace,
                Par::Seq,
            );
            fd_check(
                &["users", "cands"],
                &[to_f64(&k.users), to_f64(&k.cands)],
                &[&du, &dc],
                |p| naive(&p[0], &p[1], &k).0,
            );
        }
    }
}
