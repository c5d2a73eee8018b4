//! In-batch sampled softmax cross-entropy with logQ correction and accidental-hit masking.

use crate::vmath::fast_exp;
use faer::{Accum, Par};
use rayon::prelude::*;

use crate::bf16::Precision;
use crate::gemm::gemm;
use crate::shape::{check_len, check_shape};
use crate::simd::{Avx2Body, has_avx2_fma, run_avx2_if};
use crate::view::{InputGrad, Rows, RowsMut};

/// Rows per partial loss sum. Fixed, so that the loss is summed in the same order whatever the
/// thread count.
const LOSS_BLOCK_ROWS: usize = 32;

/// The sampled softmax's arguments beyond its two embedding matrices, passed as one.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxArgs<'a> {
    /// 1 / temperature.
    pub inv_temp: f32,
    /// Log sampling probability of each candidate (logQ correction), or none.
    pub log_q: Option<&'a [f32]>,
    /// Item id of each candidate; equal ids to a row's positive are masked as accidental hits.
    pub cand_ids: &'a [u32],
    /// Per-row example weights, or none for all ones.
    pub weights: Option<&'a [f32]>,
    /// Row `i`'s positive is candidate `first_positive + i`: 0 for a whole batch, the rank's
    /// first row in the global batch when a data-parallel rank scores its rows against the
    /// gathered candidates.
    pub first_positive: usize,
}

/// In-batch sampled softmax cross-entropy, forward.
///
/// `users` is `[b, d]`, `cands` is `[c, d]`; candidate `p(i) = first_positive + i` is row `i`'s
/// positive (so `c >= first_positive + b`).
/// `logits[i, j] = inv_temp * <users_i, cands_j> - log_q[j]` (`log_q` optional; the
/// products `users · candsᵀ` in `precision`), and
/// `logits[i, j] = -inf` (an accidental hit, masked) when `j != p(i)` and
/// `cand_ids[j] == cand_ids[p(i)]`. Row loss is `-log softmax(logits_i)[p(i)]`.
///
/// `log_q[j] = +inf` removes candidate `j` exactly (an absent hard negative): its logit is
/// `-inf`, its exponential exactly 0, its gradient column exactly 0. A positive's own `log_q`
/// must be finite.
///
/// Returns the weighted mean loss `Σ w_i loss_i / Σ w_i` (`weights: None` means all 1; rows of
/// weight 0 are allowed; if `Σ w = 0` the loss and the gradient are 0). Writes into `dlogits`
/// (`[b, c]`, caller-owned scratch, overwritten) the gradient of the returned loss with respect
/// to the logits, already scaled by `w_i / Σ w`, for [`softmax_xent_backward`]. Masked logits
/// get a zero gradient.
///
/// Row maxima are subtracted before exponentiation, which uses a vectorised `exp` of relative
/// error below about 3e-7 (results under `f32::MIN_POSITIVE` flush to 0); exponentials are
/// summed in f32 lanes over short blocks and in f64 across blocks, the positive's apart, and the
/// loss is accumulated in f64, all in a fixed order and fixed row blocks, so the result does not
/// depend on the thread count beyond that of the logits GEMM.
///
/// # Panics
///
/// If `c < b`; `cands` is not as wide as `users`; `cand_ids` or `log_q` is not `c` long;
/// `weights` is not `b` long or holds a negative or non-finite value; or `dlogits` is not
/// `[b, c]`.
#[track_caller]
pub fn softmax_xent_forward(
    dlogits: RowsMut<'_>,
    users: Rows<'_>,
    cands: Rows<'_>,
    args: SoftmaxArgs<'_>,
    precision: Precision,
    par: Par,
) -> f32 {
    xent_forward(dlogits, users, cands, args, precision, par, has_avx2_fma())
}

/// [`softmax_xent_forward`], with the row loop on the AVX2 path or not.
#[track_caller]
fn xent_forward(
    mut dlogits: RowsMut<'_>,
    users: Rows<'_>,
    cands: Rows<'_>,
    args: SoftmaxArgs<'_>,
    precision: Precision,
    par: Par,
    avx2: bool,
) -> f32 {
    const K: &str = "softmax_xent_forward";
    let SoftmaxArgs {
        inv_temp,
        log_q,
        cand_ids,
        weights,
        first_positive,
    } = args;
    let (b, d) = users.shape();
    let c = cands.rows();
    assert!(
        c >= first_positive + b,
        "{K}: c = {c} candidates cannot include the b = {b} positives from candidate {first_positive}"
    );
    check_shape(K, "cands", cands.shape(), (c, d));
    check_len(K, "cand_ids", cand_ids.len(), c);
    check_shape(K, "dlogits", dlogits.shape(), (b, c));
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
        dlogits.data().fill(0.0);
        return 0.0;
    }
    let (u, c_t) = (users.mat(), cands.mat().transpose());
    precision.gemm(dlogits.rb_mut(), Accum::Replace, u, c_t, inv_temp, par);
    let dlogits = dlogits.into_data();

    let rows = RowLoss {
        c,
        first_positive,
        cand_ids,
        log_q,
        weights,
        weight_sum,
    };
    // The row loop vectorises eight lanes wide where the CPU has AVX2, with the same bits.
    let block_loss = |first: usize, block: &mut [f32]| -> f64 {
        run_avx2_if(
            avx2,
            Block {
                rows: &rows,
                first,
                block,
            },
        )
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

/// What the row loop of [`softmax_xent_forward`] needs besides the rows.
struct RowLoss<'a> {
    c: usize,
    first_positive: usize,
    cand_ids: &'a [u32],
    log_q: Option<&'a [f32]>,
    weights: Option<&'a [f32]>,
    weight_sum: f64,
}

impl RowLoss<'_> {
    /// Turns the rows of `block` (logits of rows `first..`) into their gradients and returns
    /// `Σ w_i loss_i`. Everything down to the element loops is inlined, so that under
    /// [`run_avx2_if`] all of it is compiled for AVX2 (a plain loop, not an iterator `sum`, for
    /// the same reason).
    #[inline(always)]
    fn block(&self, first: usize, block: &mut [f32]) -> f64 {
        let mut total = 0.0;
        for (r, row) in block.chunks_exact_mut(self.c).enumerate() {
            total += self.row(first + r, row);
        }
        total
    }

    /// Turns row `i` of logits into its gradient and returns `w_i * loss_i`.
    #[inline(always)]
    fn row(&self, i: usize, row: &mut [f32]) -> f64 {
        let w_i = self.weights.map_or(1.0, |w| f64::from(w[i]));
        if w_i == 0.0 {
            row.fill(0.0);
            return 0.0;
        }
        let p = self.first_positive + i;
        let positive = self.cand_ids[p];
        let pos_logit = row[p] - self.log_q.map_or(0.0, |q| q[p]);
        // The positive shares its own id, so this masks it too: it is kept out of the other
        // candidates' mass and handled on its own below.
        let max_others = mask_shift_max(row, self.cand_ids, positive, self.log_q);
        let max = max_others.max(pos_logit);
        let margin = f64::from(max) - f64::from(pos_logit);
        let others = exp_sum(row, max);
        let sum = others + (-margin).exp();
        let scale = w_i / self.weight_sum;
        let p_scale = scale / sum;
        let p_scale32 = p_scale as f32;
        for l in row.iter_mut() {
            *l *= p_scale32;
        }
        // p_i - 1 from the other candidates' mass: exact even when p_i rounds to 1.
        row[p] = (-others * p_scale) as f32;
        w_i * (margin + sum.ln())
    }
}

/// One block of rows for [`run_avx2_if`].
struct Block<'r, 'a, 'b> {
    rows: &'r RowLoss<'a>,
    first: usize,
    block: &'b mut [f32],
}

impl Avx2Body for Block<'_, '_, '_> {
    type Out = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        self.rows.block(self.first, self.block)
    }
}

/// Independent accumulators of the row loops: 8 f32 lanes keep two SSE2 vectors of partial
/// maxima and sums in flight, so the loops vectorise without a serial dependency (16 lanes
/// would add register pressure in the exp loop).
const LANES: usize = 8;

/// Elements whose exponentials are summed in f32 lanes before the lanes are flushed into f64,
/// which bounds the rounding error of the sum by that of 32 f32 additions per lane.
const SUM_BLOCK: usize = 32 * LANES;

/// Replaces every logit whose candidate id is `positive` by `-inf` and subtracts `log_q` from
/// the others, in place; returns the maximum of the row after that (`-inf` if all are masked).
#[inline(always)]
fn mask_shift_max(row: &mut [f32], ids: &[u32], positive: u32, log_q: Option<&[f32]>) -> f32 {
    // Plain element loops, which LLVM's loop vectoriser turns into compare-and-blend; the
    // maximum is a separate pass, as a float max reduction only vectorises in explicit lanes.
    match log_q {
        Some(q) => {
            for ((l, &id), &q) in row.iter_mut().zip(ids).zip(q) {
                let shifted = *l - q;
                *l = if id == positive {
                    f32::NEG_INFINITY
                } else {
                    shifted
                };
            }
        }
        None => {
            for (l, &id) in row.iter_mut().zip(ids) {
                *l = if id == positive {
                    f32::NEG_INFINITY
                } else {
                    *l
                };
            }
        }
    }
    let (chunks, tail) = row.as_chunks::<LANES>();
    let mut max = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for k in 0..LANES {
            max[k] = if chunk[k] > max[k] { chunk[k] } else { max[k] };
        }
    }
    for (k, &l) in tail.iter().enumerate() {
        max[k] = if l > max[k] { l } else { max[k] };
    }
    max.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Replaces every `l` of `row` by `e^(l - max)` and returns their sum: f32 lanes over blocks of
/// [`SUM_BLOCK`], flushed into f64 lanes, and the lanes added in a fixed order.
#[inline(always)]
fn exp_sum(row: &mut [f32], max: f32) -> f64 {
    let mut total = [0.0f64; LANES];
    for block in row.chunks_mut(SUM_BLOCK) {
        let mut acc = [0.0f32; LANES];
        let (chunks, tail) = block.as_chunks_mut::<LANES>();
        for chunk in chunks {
            for k in 0..LANES {
                let e = fast_exp(chunk[k] - max);
                chunk[k] = e;
                acc[k] += e;
            }
        }
        for (k, l) in tail.iter_mut().enumerate() {
            let e = fast_exp(*l - max);
            *l = e;
            acc[k] += e;
        }
        for k in 0..LANES {
            total[k] += f64::from(acc[k]);
        }
    }
    total.iter().sum()
}

/// Backward of [`softmax_xent_forward`] (or of
/// [`softmax_targets_forward`](crate::softmax_targets_forward)) from its `dlogits`:
/// `du (=|+= per its accum) inv_temp * dlogits · cands`, the product in `precision`;
/// `dc (=|+= per its accum) inv_temp * dlogitsᵀ · users` in f32.
///
/// # Panics
///
/// If `cands` is not as wide as `users`, `dlogits` is not `[b, c]`, or `du` or `dc` is not the
/// shape of `users` or `cands`.
#[track_caller]
// Each argument is its own view or setting, in faer's order (the crate's conventions).
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_backward(
    du: InputGrad<'_>,
    dc: InputGrad<'_>,
    users: Rows<'_>,
    cands: Rows<'_>,
    dlogits: Rows<'_>,
    inv_temp: f32,
    precision: Precision,
    par: Par,
) {
    const K: &str = "softmax_xent_backward";
    let (b, d) = users.shape();
    let c = cands.rows();
    check_shape(K, "cands", cands.shape(), (c, d));
    check_shape(K, "dlogits", dlogits.shape(), (b, c));
    du.check(K, "du", (b, d));
    dc.check(K, "dc", (c, d));
    precision.gemm(du.dx, du.accum, dlogits.mat(), cands.mat(), inv_temp, par);
    let dlogits_t = dlogits.mat().transpose();
    gemm(dc.dx, dc.accum, dlogits_t, users.mat(), inv_temp, par);
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

    impl Case {
        fn users(&self) -> Rows<'_> {
            Rows::new(&self.users, self.b, self.d)
        }

        fn cands(&self) -> Rows<'_> {
            Rows::new(&self.cands, self.c, self.d)
        }

        fn args(&self) -> SoftmaxArgs<'_> {
            SoftmaxArgs {
                inv_temp: INV_TEMP,
                log_q: self.log_q.as_deref(),
                cand_ids: &self.ids,
                weights: self.weights.as_deref(),
                first_positive: 0,
            }
        }

        /// [`softmax_xent_backward`] from `dlogits` into `du` and `dc`, per `accum`.
        fn backward(
            &self,
            dlogits: &[f32],
            du: &mut [f32],
            dc: &mut [f32],
            accum: Accum,
            par: Par,
        ) {
            softmax_xent_backward(
                InputGrad::new(RowsMut::new(du, self.b, self.d), accum),
                InputGrad::new(RowsMut::new(dc, self.c, self.d), accum),
                self.users(),
                self.cands(),
                Rows::new(dlogits, self.b, self.c),
                INV_TEMP,
                Precision::F32,
                par,
            );
        }
    }

    fn forward(k: &Case, dlogits: &mut [f32], par: Par) -> f32 {
        let out = RowsMut::new(dlogits, k.b, k.c);
        softmax_xent_forward(out, k.users(), k.cands(), k.args(), Precision::F32, par)
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

    /// With bf16 products the loss and `dlogits` are those of the rounded embeddings, `du` the
    /// product of the rounded `dlogits` and candidates, and `dc` stays the f32 product.
    #[test]
    fn bf16_products_match_naive_on_rounded_operands() {
        use crate::bf16::bf16_round;
        let round =
            |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(bf16_round(x))).collect() };
        let mut rng = rng(15);
        for &(b, c, d) in &[(1, 1, 1), (5, 9, 17), (40, 80, 64)] {
            let k = case(&mut rng, b, c, d, true, true);
            let (users_r, cands_r) = (round(&k.users), round(&k.cands));
            let (loss_ref, dlogits_ref) = naive(&users_r, &cands_r, &k);
            for par in pars() {
                let what = format!("b={b} c={c} d={d} {par:?}");
                let mut dlogits = vec![f32::NAN; b * c];
                let out = RowsMut::new(&mut dlogits, b, c);
                let loss =
                    softmax_xent_forward(out, k.users(), k.cands(), k.args(), Precision::Bf16, par);
                assert_close(&format!("loss {what}"), &[loss], &[loss_ref], 1e-4);
                assert_close(&format!("dlogits {what}"), &dlogits, &dlogits_ref, 1e-4);
                let it = f64::from(INV_TEMP);
                let du_ref: Vec<f64> = naive_matmul(&round(&dlogits), &cands_r, b, c, d)
                    .iter()
                    .map(|v| it * v)
                    .collect();
                let dl64 = to_f64(&dlogits);
                let dc_ref: Vec<f64> =
                    naive_matmul(&transpose(&dl64, b, c), &to_f64(&k.users), c, b, d)
                        .iter()
                        .map(|v| it * v)
                        .collect();
                let (mut du, mut dc) = (vec![f32::NAN; b * d], vec![f32::NAN; c * d]);
                softmax_xent_backward(
                    InputGrad::new(RowsMut::new(&mut du, b, d), Accum::Replace),
                    InputGrad::new(RowsMut::new(&mut dc, c, d), Accum::Replace),
                    k.users(),
                    k.cands(),
                    Rows::new(&dlogits, b, c),
                    INV_TEMP,
                    Precision::Bf16,
                    par,
                );
                assert_close(&format!("du {what}"), &du, &du_ref, 1e-5);
                assert_close(&format!("dc {what}"), &dc, &dc_ref, 1e-5);
            }
        }
    }

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
                        k.backward(&dlogits, &mut du, &mut dc, accum, par);
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

    /// A data-parallel rank's rows: rows `o..o + m` of a batch scored with
    /// `first_positive = o` give the whole batch's rows of `dlogits` and loss terms, rescaled
    /// from the whole batch's weight to the slice's (the slice's mean is over its own rows).
    #[test]
    fn a_slice_of_rows_with_its_first_positive_is_the_batch_rows_rescaled() {
        let mut rng = rng(61);
        let (b, c, d) = (24, 70, 8);
        let whole = case(&mut rng, b, c, d, true, true);
        let mut full = vec![0.0; b * c];
        forward(&whole, &mut full, Par::Seq);
        let w = whole.weights.as_ref().expect("weighted case");
        let w_all: f64 = w.iter().map(|&v| f64::from(v)).sum();
        for (o, m) in [(0, 5), (7, 9), (19, 5), (0, 24)] {
            let users = &whole.users[o * d..(o + m) * d];
            let weights = &w[o..o + m];
            let w_slice: f64 = weights.iter().map(|&v| f64::from(v)).sum();
            let args = SoftmaxArgs {
                weights: Some(weights),
                first_positive: o,
                ..whole.args()
            };
            for par in pars() {
                let mut part = vec![f32::NAN; m * c];
                softmax_xent_forward(
                    RowsMut::new(&mut part, m, c),
                    Rows::new(users, m, d),
                    whole.cands(),
                    args,
                    Precision::F32,
                    par,
                );
                let want = full[o * c..(o + m) * c].iter();
                for (j, (&got, &g)) in part.iter().zip(want).enumerate() {
                    let want = f64::from(g) * w_all / w_slice;
                    let err = (f64::from(got) - want).abs();
                    assert!(
                        err <= 1e-5 * want.abs() + 1e-30,
                        "rows {o}..{} [{j}]: {got:e}, expected {want:e} {par:?}",
                        o + m
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "cannot include the b = 4 positives from candidate 3")]
    fn positives_past_the_candidates_are_refused() {
        let k = case(&mut rng(62), 4, 6, 2, false, false);
        let args = SoftmaxArgs {
            first_positive: 3,
            ..k.args()
        };
        let mut dlogits = vec![0.0; 4 * 6];
        let out = RowsMut::new(&mut dlogits, 4, 6);
        softmax_xent_forward(out, k.users(), k.cands(), args, Precision::F32, Par::Seq);
    }

    /// A masked duplicate of row 0's positive holds the largest logit of the row by far (150
    /// against at most 2), with and without log q: the maximum is taken again without it (else
    /// every other exponential would underflow), and loss and gradient are the definition's.
    #[test]
    fn a_masked_maximum_is_not_the_rows_maximum() {
        for log_q in [None, Some(vec![-3.0, -1.0, -2.0, -4.0])] {
            let k = Case {
                b: 2,
                c: 4,
                d: 1,
                users: vec![1.0, -0.5],
                cands: vec![0.1, -0.2, 30.0, 0.4],
                log_q,
                ids: vec![7, 8, 7, 9],
                weights: None,
            };
            let (loss_ref, dlogits_ref) = naive(&to_f64(&k.users), &to_f64(&k.cands), &k);
            for par in pars() {
                let mut dlogits = vec![f32::NAN; 8];
                let loss = forward(&k, &mut dlogits, par);
                let what = format!("log_q {} {par:?}", k.log_q.is_some());
                assert_close(&format!("loss {what}"), &[loss], &[loss_ref], 1e-6);
                assert_close(&format!("dlogits {what}"), &dlogits, &dlogits_ref, 1e-6);
                assert_eq!(dlogits[2], 0.0, "{what}");
            }
        }
    }

    #[test]
    fn avx2_and_baseline_row_loops_give_the_same_bits() {
        if !has_avx2_fma() {
            eprintln!("skipped: this CPU has no AVX2 + FMA, so there is one path only");
            return;
        }
        let mut rng = rng(23);
        for (b, c) in SHAPES {
            for (log_q, weights) in [(false, false), (true, true)] {
                let mut k = case(&mut rng, b, c, 7, log_q, weights);
                // Some repeated ids, so that masking is exercised too.
                k.ids = (0..c as u32).map(|j| j % (c as u32 / 2 + 1)).collect();
                let run = |avx2: bool| {
                    let mut dl = vec![f32::NAN; b * c];
                    let out = RowsMut::new(&mut dl, b, c);
                    let loss = xent_forward(
                        out,
                        k.users(),
                        k.cands(),
                        k.args(),
                        Precision::F32,
                        Par::Seq,
                        avx2,
                    );
                    (
                        loss.to_bits(),
                        dl.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                };
                assert_eq!(run(true), run(false), "b = {b}, c = {c}");
            }
        }
    }

    #[test]
    fn infinite_log_q_removes_a_candidate_exactly() {
        // Candidates 5 and 7 of 9 carry log q = +inf (absent hard negatives): loss and gradient
        // must equal those of the same case without them, with exact zeros in their columns.
        let mut rng = rng(19);
        let (b, c, d) = (5, 9, 6);
        let mut full = case(&mut rng, b, c, d, true, true);
        full.ids = (0..c as u32).collect();
        let absent = [5usize, 7];
        let kept: Vec<usize> = (0..c).filter(|j| !absent.contains(j)).collect();
        let q = full.log_q.as_mut().expect("log q");
        for &j in &absent {
            q[j] = f32::INFINITY;
        }
        let reduced = Case {
            b,
            c: kept.len(),
            d,
            users: full.users.clone(),
            cands: kept
                .iter()
                .flat_map(|&j| full.cands[j * d..(j + 1) * d].iter().copied())
                .collect(),
            log_q: Some(kept.iter().map(|&j| q[j]).collect()),
            ids: kept.iter().map(|&j| full.ids[j]).collect(),
            weights: full.weights.clone(),
        };
        for par in pars() {
            let mut dl_full = vec![f32::NAN; b * c];
            let mut dl_reduced = vec![f32::NAN; b * kept.len()];
            let l_full = forward(&full, &mut dl_full, par);
            let l_reduced = forward(&reduced, &mut dl_reduced, par);
            assert!(l_full.is_finite());
            assert_close("loss", &[l_full], &[f64::from(l_reduced)], 1e-6);
            for i in 0..b {
                for &j in &absent {
                    assert_eq!(
                        dl_full[i * c + j].to_bits(),
                        0.0f32.to_bits(),
                        "row {i} col {j}"
                    );
                }
                for (r, &j) in kept.iter().enumerate() {
                    let (x, y) = (dl_full[i * c + j], dl_reduced[i * kept.len() + r]);
                    assert!(
                        (x - y).abs() <= 1e-7 + 1e-6 * y.abs(),
                        "row {i} col {j}: {x} vs {y}"
                    );
                }
            }
            let mut du = vec![0.0; b * d];
            let mut dc = vec![f32::NAN; c * d];
            full.backward(&dl_full, &mut du, &mut dc, Accum::Replace, par);
            assert!(du.iter().chain(&dc).all(|v| v.is_finite()));
            for &j in &absent {
                assert!(dc[j * d..(j + 1) * d].iter().all(|&v| v == 0.0));
            }
        }
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
            k.backward(&dlogits, &mut du, &mut dc, Accum::Replace, Par::Seq);
            fd_check(
                &["users", "cands"],
                &[to_f64(&k.users), to_f64(&k.cands)],
                &[&du, &dc],
                |p| naive(&p[0], &p[1], &k).0,
            );
        }
    }

    #[test]
    fn matches_f64_reference_at_w1_like_scale() {
        let (b, c, d, inv_temp) = (64, 4096, 64, 20.0f32);
        let mut rng = rng(18);
        let mut unit_rows = |n: usize| -> Vec<f32> {
            let mut x = uniform(&mut rng, n * d);
            for row in x.chunks_exact_mut(d) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v /= norm);
            }
            x
        };
        let users = unit_rows(b);
        let mut cands = unit_rows(c);
        // Positives equal to their users: positive logits near 20 + 20 against a ±20 spread.
        cands[..b * d].copy_from_slice(&users);
        let mut log_q: Vec<f32> = (0..c).map(|_| rng.random_range(-20.0f32..20.0)).collect();
        // Row 0's positive dominates so much that p_0 rounds to 1 in f32.
        log_q[0] = -60.0;
        let pool = (c / 2) as u32;
        let ids: Vec<u32> = (0..c).map(|_| rng.random_range(0..pool)).collect();
        let weights: Vec<f32> = (0..b)
            .map(|i| {
                if i % 7 == 3 {
                    0.0
                } else {
                    rng.random_range(0.5f32..2.0)
                }
            })
            .collect();
        let mut logits = vec![0.0f32; b * c];
        let (u, c_t) = (
            Rows::new(&users, b, d).mat(),
            Rows::new(&cands, c, d).mat().transpose(),
        );
        gemm(
            RowsMut::new(&mut logits, b, c),
            Accum::Replace,
            u,
            c_t,
            inv_temp,
            Par::Seq,
        );
        // The reference starts from the same f32 logits, so that it checks this kernel's
        // exponentials and sums rather than the GEMM's rounding.
        let w_sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut loss_ref = 0.0;
        let mut grad_ref = vec![0.0f64; b * c];
        // The f32 `l - max` fed to exp is rounded by up to |l - max| 2^-24, which the
        // tolerance allows for beside 1e-6 for exp and the sums.
        let mut rel_tol = vec![1e-6f64; b * c];
        for i in 0..b {
            let l: Vec<f64> = (0..c)
                .map(|j| {
                    if j != i && ids[j] == ids[i] {
                        f64::NEG_INFINITY
                    } else {
                        f64::from(logits[i * c + j] - log_q[j])
                    }
                })
                .collect();
            let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + l.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let w = f64::from(weights[i]);
            loss_ref += w * (lse - l[i]);
            let others: f64 = (0..c).filter(|&j| j != i).map(|j| (l[j] - lse).exp()).sum();
            for j in 0..c {
                let p_minus_y = if j == i { -others } else { (l[j] - lse).exp() };
                grad_ref[i * c + j] = w / w_sum * p_minus_y;
                if j != i && l[j].is_finite() {
                    rel_tol[i * c + j] += 1.2e-7 * (l[j] - lse).abs();
                }
            }
        }
        loss_ref /= w_sum;
        assert!(grad_ref[0] < 0.0 && grad_ref[0] > -1e-15, "{}", grad_ref[0]);
        for par in pars() {
            let mut dlogits = vec![f32::NAN; b * c];
            let args = SoftmaxArgs {
                inv_temp,
                log_q: Some(&log_q),
                cand_ids: &ids,
                weights: Some(&weights),
                first_positive: 0,
            };
            let loss = softmax_xent_forward(
                RowsMut::new(&mut dlogits, b, c),
                Rows::new(&users, b, d),
                Rows::new(&cands, c, d),
                args,
                Precision::F32,
                par,
            );
            let err = (f64::from(loss) - loss_ref).abs();
            assert!(
                err <= 1e-6 * loss_ref.abs(),
                "loss {loss} vs {loss_ref} {par:?}"
            );
            for (j, ((&g, &want), &tol)) in dlogits.iter().zip(&grad_ref).zip(&rel_tol).enumerate()
            {
                // Relative, down to far below the smallest probabilities that matter.
                let err = (f64::from(g) - want).abs();
                assert!(
                    err <= tol * want.abs() + 1e-30,
                    "dlogits[{}, {}] = {g:e}, expected {want:e} {par:?}",
                    j / c,
                    j % c
                );
            }
        }
    }
}
