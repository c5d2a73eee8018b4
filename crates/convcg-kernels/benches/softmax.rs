//! The in-batch softmax cross-entropy at the W1 shapes of shared/reference-workload.md:
//! b = 2048 rows, c = 4096 candidates (positives plus hard negatives), d = 64, temperature
//! 0.05, logQ for every candidate, accidental hits among uniform ids, unit weights.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use convcg_kernels::{
    Accum, InputGrad, Par, Rows, RowsMut, softmax_xent_backward, softmax_xent_forward,
};

mod w1_softmax;
use w1_softmax::{B, C, D, INV_TEMP, Inputs};

fn softmax_xent(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let inputs = Inputs::new(0);
    let mut dlogits = vec![0.0f32; B * C];
    let mut du = vec![0.0f32; B * D];
    let mut dc = vec![0.0f32; C * D];

    let mut group = c.benchmark_group("softmax_xent");
    group.throughput(Throughput::Elements(B as u64));
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            black_box(softmax_xent_forward(
                RowsMut::new(&mut dlogits, B, C),
                inputs.users(),
                inputs.cands(),
                inputs.args(),
                par,
            ))
        })
    });
    group.bench_function("backward", |bench| {
        bench.iter(|| {
            softmax_xent_backward(
                InputGrad::new(RowsMut::new(&mut du, B, D), Accum::Replace),
                InputGrad::new(RowsMut::new(&mut dc, C, D), Accum::Replace),
                inputs.users(),
                inputs.cands(),
                Rows::new(&dlogits, B, C),
                INV_TEMP,
                par,
            );
            black_box(&du);
        })
    });
    group.finish();
}

criterion_group!(benches, softmax_xent);
criterion_main!(benches);
