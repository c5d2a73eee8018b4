//! W1 of shared/reference-workload.md: one training step of the two-tower model, batch 2048
//! positive pairs plus 2048 hard negatives, through the real model, loss and optimiser code.
//! `CONVCG_PRECISION=bf16` runs the products with bf16 operands (`w1/train_step_bf16`).

mod w1_setup;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use convcg_kernels::Precision;
use w1_setup::{B, W1, pool, precision, threads};

fn w1(c: &mut Criterion) {
    let pool = pool(threads());
    let precision = precision();
    let mut w = pool.install(|| W1::new(threads(), precision));
    let mut group = c.benchmark_group("w1");
    group.throughput(Throughput::Elements(B as u64));
    group.sample_size(10);
    let id = match precision {
        Precision::F32 => "train_step",
        Precision::Bf16 => "train_step_bf16",
    };
    group.bench_function(id, |bench| {
        bench.iter(|| {
            pool.install(|| {
                let i = w.take_step();
                let batch = w.steps[i].batch();
                w.model
                    .train_step_with(&mut w.tape, &batch, &mut w.grads, &mut w.opt, w.par)
                    .unwrap()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, w1);
criterion_main!(benches);
