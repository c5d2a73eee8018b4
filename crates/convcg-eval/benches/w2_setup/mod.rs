//! W2's shapes and data (shared/reference-workload.md), shared by the criterion benchmark
//! `benches/w2.rs` and the sharded example `examples/w2_ranks.rs` of the root crate.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Corpus rows.
pub const N: usize = 1_000_000;
/// Embedding width.
pub const D: usize = 64;
/// Queries.
pub const Q: usize = 4096;
/// Items per query.
pub const K: usize = 100;

/// `rows` vectors of dim `D` with standard normal entries, each scaled to unit L2 norm.
fn unit_rows(rng: &mut ChaCha8Rng, rows: usize) -> Vec<f32> {
    let mut data: Vec<f32> = (0..rows * D).map(|_| rng.sample(StandardNormal)).collect();
    for row in data.chunks_exact_mut(D) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    data
}

/// W2's corpus `[N, D]` and queries `[Q, D]`, drawn in that order from one ChaCha8 of seed 0.
pub fn corpus_and_queries() -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let corpus = unit_rows(&mut rng, N);
    let queries = unit_rows(&mut rng, Q);
    (corpus, queries)
}
