//! Test data the crate's tests share.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// `rows` vectors of dim `d`, standard normal entries scaled to unit L2 norm (W2's data).
pub(crate) fn unit_normal(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data: Vec<f32> = (0..rows * d).map(|_| rng.sample(StandardNormal)).collect();
    for row in data.chunks_exact_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    data
}
