//! Optimiser updates: Adam for dense parameters, row-wise Adagrad for embedding rows.

use faer::Par;
use rayon::prelude::*;

use crate::embedding::SparseRowGrad;
use crate::par::{for_rows3, rows_per_task};
use crate::shape::check_len;

/// Hyper-parameters of Adam.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first-moment estimate.
    pub beta1: f32,
    /// Decay of the second-moment estimate.
    pub beta2: f32,
    /// Added to the root of the second moment to keep the step finite.
    pub eps: f32,
}

impl Default for AdamParams {
    /// The values of the Adam paper: `lr = 1e-3`, `beta1 = 0.9`, `beta2 = 0.999`, `eps = 1e-8`.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One Adam step with bias correction on a dense parameter; `step` is 1-based.
///
/// `m = β1 m + (1 - β1) g`; `v = β2 v + (1 - β2) g²`;
/// `w -= lr / (1 - β1^step) * m / (sqrt(v / (1 - β2^step)) + eps)` (the PyTorch form).
///
/// # Panics
///
/// If `g`, `m` or `v` is not as long as `w`, or `step == 0`.
#[track_caller]
pub fn adam_update(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: u64,
    p: AdamParams,
    par: Par,
) {
    check_len("adam_update", "g", g.len(), w.len());
    check_len("adam_update", "m", m.len(), w.len());
    check_len("adam_update", "v", v.len(), w.len());
    assert!(step >= 1, "adam_update: `step` is 1-based, got 0");
    let correction = |beta: f32| 1.0 - f64::from(beta).powf(step as f64);
    let step_size = (f64::from(p.lr) / correction(p.beta1)) as f32;
    let inv_sqrt_c2 = (1.0 / correction(p.beta2).sqrt()) as f32;
    let AdamParams {
        beta1, beta2, eps, ..
    } = p;
    for_rows3(par, w.len(), 1, w, m, v, |first, w, m, v| {
        for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(&g[first..]) {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *w -= step_size * *m / (v.sqrt() * inv_sqrt_c2 + eps);
        }
    });
}

/// The settings of [`rowwise_adagrad_update`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradParams {
    /// Learning rate.
    pub lr: f32,
    /// Added to the root of the accumulated squares to keep the step finite.
    pub eps: f32,
    /// L2 penalty `weight_decay / 2 * |w_r|²` of each touched row, added to its gradient as
    /// `weight_decay * w_r` (0: none). Only rows a batch touches decay, so a rare id is pulled
    /// towards 0 only when it is seen, in proportion to how often it is.
    pub weight_decay: f32,
}

/// FBGEMM-style exact row-wise Adagrad on the rows in `grad` only: per touched row `r`, with
/// `g_r` its gradient plus `weight_decay * w_r`, `state[r] += mean(g_r²)`;
/// `table[r] -= lr * g_r / (sqrt(state[r]) + eps)`.
///
/// `table` is `[rows, dim]` and `state` is `[rows]`, where `rows = grad.num_rows()` and
/// `dim = grad.dim()`. Untouched rows are not written.
///
/// # Panics
///
/// If `state.len() != grad.num_rows()` or `table.len() != grad.num_rows() * grad.dim()`.
#[track_caller]
pub fn rowwise_adagrad_update(
    table: &mut [f32],
    state: &mut [f32],
    grad: &SparseRowGrad,
    p: AdagradParams,
    par: Par,
) {
    let (rows, dim) = (grad.num_rows(), grad.dim());
    check_len("rowwise_adagrad_update", "state", state.len(), rows);
    check_len("rowwise_adagrad_update", "table", table.len(), rows * dim);
    if dim == 0 || grad.is_empty() {
        return;
    }
    let AdagradParams {
        lr,
        eps,
        weight_decay,
    } = p;
    // The decayed gradient `g + weight_decay * w` is formed as it is used: the first pass reads
    // the row before the second writes it (with no decay it is `g` itself).
    let update = |g: &[f32], row: &mut [f32], state: &mut f32| {
        let decayed = |g: f32, w: f32| g + weight_decay * w;
        let mean_sq = g
            .iter()
            .zip(row.iter())
            .map(|(&g, &w)| {
                let d = f64::from(decayed(g, w));
                d * d
            })
            .sum::<f64>()
            / dim as f64;
        *state += mean_sq as f32;
        let rate = lr / (state.sqrt() + eps);
        for (w, &g) in row.iter_mut().zip(g) {
            *w -= rate * decayed(g, *w);
        }
    };
    let touched = grad.rows().iter().zip(grad.values().chunks_exact(dim));
    match (par, rows_per_task(par, grad.len(), dim)) {
        (Par::Rayon(threads), Some(_)) => {
            // Touched rows are distinct but scattered: each task owns a contiguous shard of
            // the table and scans the (short) touched list for its rows, which needs no
            // unsafe disjoint-row access.
            let shard = rows.div_ceil(threads.get());
            table
                .par_chunks_mut(shard * dim)
                .zip(state.par_chunks_mut(shard))
                .enumerate()
                .for_each(|(s, (table, state))| {
                    let lo = s * shard;
                    for (&r, g) in touched.clone() {
                        if let Some(local) =
                            (r as usize).checked_sub(lo).filter(|&l| l < state.len())
                        {
                            update(
                                g,
                                &mut table[local * dim..(local + 1) * dim],
                                &mut state[local],
                            );
                        }
                    }
                });
        }
        _ => {
            for (&r, g) in touched {
                let r = r as usize;
                update(g, &mut table[r * dim..(r + 1) * dim], &mut state[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, pars, rng, to_f64, uniform};
    use rand::Rng;

    #[test]
    fn adam_first_step_moves_by_lr_times_sign() {
        let p = AdamParams {
            lr: 0.01,
            ..AdamParams::default()
        };
        let mut w = [1.0f32, -2.0, 0.5];
        let mut m = [0.0; 3];
        let mut v = [0.0; 3];
        adam_update(&mut w, &[0.1, -0.2, 0.0], &mut m, &mut v, 1, p, Par::Seq);
        // m̂ = g, v̂ = g², so each weight moves by lr * g / (|g| + eps).
        assert_close(
            "w",
            &w,
            &[
                1.0 - 0.01 * 0.1 / (0.1 + 1e-8),
                -2.0 + 0.01 * 0.2 / (0.2 + 1e-8),
                0.5,
            ],
            1e-7,
        );
        assert_close("m", &m, &[0.01, -0.02, 0.0], 1e-7);
        assert_close("v", &v, &[1e-5, 4e-5, 0.0], 1e-7);
    }

    #[test]
    fn adam_second_step_by_hand() {
        let p = AdamParams {
            lr: 0.1,
            beta1: 0.5,
            beta2: 0.75,
            eps: 0.0,
        };
        let mut w = [0.0f32];
        let (mut m, mut v) = ([0.0f32], [0.0f32]);
        adam_update(&mut w, &[2.0], &mut m, &mut v, 1, p, Par::Seq);
        adam_update(&mut w, &[-1.0], &mut m, &mut v, 2, p, Par::Seq);
        // Step 1: m = 1, v = 1, m̂ = 2, v̂ = 4: w = -0.1.
        // Step 2: m = 0, v = 0.75 + 0.25 = 1: no move (m = 0).
        assert_close("w", &w, &[-0.1], 1e-7);
        assert_close("m", &m, &[0.0], 1e-7);
        assert_close("v", &v, &[1.0], 1e-7);
        adam_update(&mut w, &[3.0], &mut m, &mut v, 3, p, Par::Seq);
        // Step 3: m = 1.5, v = 0.75 + 2.25 = 3; m̂ = 1.5 / 0.875, v̂ = 3 / (1 - 0.421875).
        let expected = -0.1 - 0.1 * (1.5 / 0.875) / (3.0f64 / 0.578125).sqrt();
        assert_close("w", &w, &[expected], 1e-6);
    }

    #[test]
    fn adam_matches_naive_over_steps() {
        let mut rng = rng(18);
        let p = AdamParams::default();
        for len in [1, 17, 129, 20_000] {
            let w0 = uniform(&mut rng, len);
            let grads: Vec<Vec<f32>> = (0..3).map(|_| uniform(&mut rng, len)).collect();
            let (mut w_ref, mut m_ref, mut v_ref) = (to_f64(&w0), vec![0.0; len], vec![0.0; len]);
            let (b1, b2) = (f64::from(p.beta1), f64::from(p.beta2));
            for (t, g) in grads.iter().enumerate() {
                let t = t as i32 + 1;
                for i in 0..len {
                    let g = f64::from(g[i]);
                    m_ref[i] = b1 * m_ref[i] + (1.0 - b1) * g;
                    v_ref[i] = b2 * v_ref[i] + (1.0 - b2) * g * g;
                    let (mh, vh) = (m_ref[i] / (1.0 - b1.powi(t)), v_ref[i] / (1.0 - b2.powi(t)));
                    w_ref[i] -= f64::from(p.lr) * mh / (vh.sqrt() + f64::from(p.eps));
                }
            }
            let mut results = Vec::new();
            for par in pars() {
                let (mut w, mut m, mut v) = (w0.clone(), vec![0.0; len], vec![0.0; len]);
                for (t, g) in grads.iter().enumerate() {
                    adam_update(&mut w, g, &mut m, &mut v, t as u64 + 1, p, par);
                }
                assert_close(&format!("w len={len} {par:?}"), &w, &w_ref, 1e-6);
                assert_close(&format!("m len={len} {par:?}"), &m, &m_ref, 1e-6);
                assert_close(&format!("v len={len} {par:?}"), &v, &v_ref, 1e-6);
                results.push(w);
            }
            assert_eq!(results[0], results[1], "Seq and Rayon differ at len={len}");
        }
    }

    #[test]
    fn adagrad_updates_touched_rows_only() {
        let (rows, dim) = (10, 3);
        let table0: Vec<f32> = (0..rows * dim).map(|i| i as f32 * 0.1).collect();
        let state0 = vec![0.5f32; rows];
        let mut grad = SparseRowGrad::new(rows, dim);
        grad.add_row(7, &[1.0, -2.0, 2.0], 1.0);
        grad.add_row(2, &[0.5, 0.5, 0.5], 1.0);
        grad.add_row(7, &[1.0, 0.0, 0.0], 1.0);
        let (mut table, mut state) = (table0.clone(), state0.clone());
        let p = AdagradParams {
            lr: 0.1,
            eps: 1e-6,
            weight_decay: 0.0,
        };
        rowwise_adagrad_update(&mut table, &mut state, &grad, p, Par::Seq);
        for r in (0..rows).filter(|r| ![2, 7].contains(r)) {
            assert_eq!(
                table[r * dim..(r + 1) * dim],
                table0[r * dim..(r + 1) * dim],
                "row {r}"
            );
            assert_eq!(state[r].to_bits(), state0[r].to_bits(), "state {r}");
        }
        // Row 7: g = [2, -2, 2], mean g² = 4, state = 4.5; row 2: mean g² = 0.25, state = 0.75.
        assert_close("state", &[state[7], state[2]], &[4.5, 0.75], 1e-7);
        let rate7 = 0.1 / (4.5f64.sqrt() + 1e-6);
        let rate2 = 0.1 / (0.75f64.sqrt() + 1e-6);
        let t0 = to_f64(&table0);
        assert_close(
            "row 7",
            &table[21..24],
            &[
                t0[21] - 2.0 * rate7,
                t0[22] + 2.0 * rate7,
                t0[23] - 2.0 * rate7,
            ],
            1e-6,
        );
        assert_close(
            "row 2",
            &table[6..9],
            &[
                t0[6] - 0.5 * rate2,
                t0[7] - 0.5 * rate2,
                t0[8] - 0.5 * rate2,
            ],
            1e-6,
        );
    }

    #[test]
    fn adagrad_parallel_matches_sequential() {
        let mut rng = rng(19);
        let (rows, dim) = (5000, 16);
        let table0 = uniform(&mut rng, rows * dim);
        let state0: Vec<f32> = uniform(&mut rng, rows).into_iter().map(f32::abs).collect();
        let mut grad = SparseRowGrad::new(rows, dim);
        for _ in 0..2000 {
            let g = uniform(&mut rng, dim);
            grad.add_row(rng.random_range(0..rows as u32), &g, 1.0);
        }
        let mut results = Vec::new();
        for par in pars() {
            let (mut table, mut state) = (table0.clone(), state0.clone());
            let p = AdagradParams {
                lr: 0.05,
                eps: 1e-8,
                weight_decay: 0.01,
            };
            rowwise_adagrad_update(&mut table, &mut state, &grad, p, par);
            for r in 0..rows as u32 {
                let at = r as usize * dim;
                match grad.get(r) {
                    None => assert_eq!(table[at..at + dim], table0[at..at + dim]),
                    Some(g) => {
                        // The decayed gradient g + 0.01 w, in f64.
                        let g: Vec<f64> = (0..dim)
                            .map(|j| f64::from(g[j]) + 0.01 * f64::from(table0[at + j]))
                            .collect();
                        let s = f64::from(state0[r as usize])
                            + g.iter().map(|&v| v.powi(2)).sum::<f64>() / 16.0;
                        let rate = 0.05 / (s.sqrt() + 1e-8);
                        let expected: Vec<f64> = (0..dim)
                            .map(|j| f64::from(table0[at + j]) - rate * g[j])
                            .collect();
                        assert_close(
                            &format!("row {r} {par:?}"),
                            &table[at..at + dim],
                            &expected,
                            1e-6,
                        );
                    }
                }
            }
            results.push((table, state));
        }
        assert_eq!(results[0], results[1]);
    }
}
