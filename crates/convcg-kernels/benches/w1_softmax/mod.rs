//! The softmax cross-entropy's inputs at the W1 shapes of shared/reference-workload.md, and its
//! forward and backward on them, shared by the `softmax` benchmark and the `softmax_xent_once`
//! example (which includes this file by path).

use convcg_kernels::{
    Accum, InputGrad, Par, Precision, Rows, RowsMut, SoftmaxArgs, softmax_xent_backward,
    softmax_xent_forward,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rows (positive pairs).
pub const B: usize = 2048;
/// Candidates: the positives plus one hard negative each.
pub const C: usize = 4096;
/// Embedding width.
pub const D: usize = 64;
/// 1 / temperature 0.05.
pub const INV_TEMP: f32 = 20.0;

/// Seeded inputs: unit-norm users and candidates as the towers' heads produce them, log q from
/// q uniform in [1e-6, 1e-4], ids from few enough values that some rows have accidental hits,
/// unit weights.
pub struct Inputs {
    pub users: Vec<f32>,
    pub cands: Vec<f32>,
    pub log_q: Vec<f32>,
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Inputs {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let users = unit_rows(&mut rng, B);
        let cands = unit_rows(&mut rng, C);
        let log_q = (0..C)
            .map(|_| rng.random_range(1e-6f32..1e-4).ln())
            .collect();
        let ids = (0..C).map(|_| rng.random_range(0..50_000)).collect();
        Self {
            users,
            cands,
            log_q,
            ids,
            weights: vec![1.0; B],
        }
    }

    /// The users, `[B, D]`.
    pub fn users(&self) -> Rows<'_> {
        Rows::new(&self.users, B, D)
    }

    /// The candidates, `[C, D]`.
    pub fn cands(&self) -> Rows<'_> {
        Rows::new(&self.cands, C, D)
    }

    /// The softmax's other arguments.
    pub fn args(&self) -> SoftmaxArgs<'_> {
        SoftmaxArgs {
            inv_temp: INV_TEMP,
            log_q: Some(&self.log_q),
            cand_ids: &self.ids,
            weights: Some(&self.weights),
            first_positive: 0,
        }
    }

    /// The forward, its logits' gradient into `grads.dlogits`; returns the loss.
    pub fn forward(&self, grads: &mut Grads, par: Par) -> f32 {
        let dlogits = RowsMut::new(&mut grads.dlogits, B, C);
        let (users, cands) = (self.users(), self.cands());
        softmax_xent_forward(dlogits, users, cands, self.args(), Precision::F32, par)
    }

    /// The backward from `grads.dlogits`, overwriting `grads.du` and `grads.dc`.
    pub fn backward(&self, grads: &mut Grads, par: Par) {
        softmax_xent_backward(
            InputGrad::new(RowsMut::new(&mut grads.du, B, D), Accum::Replace),
            InputGrad::new(RowsMut::new(&mut grads.dc, C, D), Accum::Replace),
            self.users(),
            self.cands(),
            Rows::new(&grads.dlogits, B, C),
            INV_TEMP,
            Precision::F32,
            par,
        );
    }
}

/// What the forward and backward write: the logits' gradient `[B, C]`, the users' `[B, D]` and
/// the candidates' `[C, D]`.
pub struct Grads {
    pub dlogits: Vec<f32>,
    pub du: Vec<f32>,
    pub dc: Vec<f32>,
}

/// All zero.
impl Default for Grads {
    fn default() -> Self {
        Self {
            dlogits: vec![0.0; B * C],
            du: vec![0.0; B * D],
            dc: vec![0.0; C * D],
        }
    }
}

/// `n` rows of width `D`, uniform then L2-normalised.
fn unit_rows(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for row in x.chunks_exact_mut(D) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    x
}
