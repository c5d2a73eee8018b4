//! The in-batch softmax cross-entropy at the W1 shapes of shared/reference-workload.md:
//! b = 2048 rows, c = 4096 candidates (positives plus hard negatives), d = 64, temperature
//! 0.05, logQ for every candidate, accidental hits among uniform ids, unit weights.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use convcg_kernels::{Accum, Par, softmax_xent_backward, softmax_xent_forward};

const B: usize = 2048;
const C: usize = 4096;
const D: usize = 64;
const INV_TEMP: f32 = 20.0;

/// `n` rows of width `D`, uniform then L2-normalised, as the towers' heads produce them.
fn unit_rows(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for row in x.chunks_exact_mut(D) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    x
}

fn softmax_xent(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let users = unit_rows(&mut rng, B);
    let cands = unit_rows(&mut rng, C);
    let log_q: Vec<f32> = (0..C)
        .map(|_| rng.random_range(1e-6f32..1e-4).ln())
        .collect();
    // Few enough distinct ids that some rows have accidental hits.
    let ids: Vec<u32> = (0..C).map(|_| rng.random_range(0..50_000)).collect();
    let weights = vec![1.0f32; B];
    let mut dlogits = vec![0.0f32; B * C];
    let mut du = vec![0.0f32; B * D];
    let mut dc = vec![0.0f32; C * D];

    let mut group = c.benchmark_group("softmax_xent");
    group.throughput(Throughput::Elements(B as u64));
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            black_box(softmax_xent_forward(
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
                par,
            ))
        })
    });
    group.bench_function("backward", |bench| {
        bench.iter(|| {
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
                par,
            );
            black_box(&du);
        })
    });
    group.finish();
}

criterion_group!(benches, softmax_xent);
criterion_main!(benches);
