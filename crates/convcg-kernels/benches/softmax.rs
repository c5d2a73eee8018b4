//! The in-batch softmax cross-entropy at the W1 shapes of shared/reference-workload.md:
//! b = 2048 rows, c = 4096 candidates (positives plus hard negatives), d = 64, temperature
//! 0.05, logQ for every candidate, accidental hits among uniform ids, unit weights.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use convcg_kernels::{Accum, Par, softmax_xent_backward, softmax_xent_forward};

mod w1_softmax;
use w1_softmax::{B, C, D, INV_TEMP, Inputs};

fn softmax_xent(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let Inputs {
        users,
        cands,
        log_q,
        ids,
        weights,
    } = Inputs::new(0);
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
