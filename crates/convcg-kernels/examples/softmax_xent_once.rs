//! One W1-shaped softmax cross-entropy forward (or, with the argument `backward`, one forward
//! and one backward) on one thread: a fixed amount of work for instruction counting, e.g.
//! `valgrind --tool=callgrind target/release/examples/softmax_xent_once`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use convcg_kernels::{Accum, Par, softmax_xent_backward, softmax_xent_forward};

const B: usize = 2048;
const C: usize = 4096;
const D: usize = 64;
const INV_TEMP: f32 = 20.0;

fn unit_rows(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for row in x.chunks_exact_mut(D) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    x
}

fn main() {
    let backward = std::env::args().nth(1).is_some_and(|a| a == "backward");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let users = unit_rows(&mut rng, B);
    let cands = unit_rows(&mut rng, C);
    let log_q: Vec<f32> = (0..C)
        .map(|_| rng.random_range(1e-6f32..1e-4).ln())
        .collect();
    let ids: Vec<u32> = (0..C).map(|_| rng.random_range(0..50_000)).collect();
    let weights = vec![1.0f32; B];
    let mut dlogits = vec![0.0f32; B * C];
    let loss = softmax_xent_forward(
        &users,
        &cands,
        B,
        C,
        D,
        INV_TEMP,
        Some(&log_q),
        &ids,
        Some(&weights),
        &mut dlogits,
        Par::Seq,
    );
    println!("loss {loss}");
    if backward {
        let mut du = vec![0.0f32; B * D];
        let mut dc = vec![0.0f32; C * D];
        softmax_xent_backward(
            &users,
            &cands,
            &dlogits,
            B,
            C,
            D,
            INV_TEMP,
            &mut du,
            Accum::Replace,
            &mut dc,
            Accum::Replace,
            Par::Seq,
        );
        println!("du[0] {} dc[0] {}", du[0], dc[0]);
    }
}
