//! W1 of shared/reference-workload.md: one training step of the two-tower model, batch 2048
//! positive pairs plus 2048 hard negatives, through the real model, loss and optimiser code.

mod w1_setup;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use w1_setup::{B, W1, pool, threads};

fn w1(c: &mut Criterion) {
    let pool = pool(threads());
    let mut w = pool.install(|| W1::new(threads()));
    let mut group = c.benchmark_group("w1");
    group.throughput(Throughput::Elements(B as u64));
    group.sample_size(10);
    group.bench_function("train_step", |bench| {
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
