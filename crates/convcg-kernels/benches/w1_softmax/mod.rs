//! The softmax cross-entropy's inputs at the W1 shapes of shared/reference-workload.md, shared by
//! the `softmax` benchmark and the `softmax_xent_once` example (which includes this file by path).

use convcg_kernels::{Rows, SoftmaxArgs};
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
