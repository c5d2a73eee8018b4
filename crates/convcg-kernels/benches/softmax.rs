//! The in-batch softmax cross-entropy at the W1 shapes of shared/reference-workload.md:
//! b = 2048 rows, c = 4096 candidates (positives plus hard negatives), d = 64, temperature
//! 0.05, logQ for every candidate, accidental hits among uniform ids, unit weights.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use convcg_kernels::Par;

mod w1_softmax;
use w1_softmax::{B, Grads, Inputs};

fn softmax_xent(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let inputs = Inputs::new(0);
    let mut grads = Grads::default();

    let mut group = c.benchmark_group("softmax_xent");
    group.throughput(Throughput::Elements(B as u64));
    group.bench_function("forward", |bench| {
        bench.iter(|| black_box(inputs.forward(&mut grads, par)))
    });
    group.bench_function("backward", |bench| {
        bench.iter(|| {
            inputs.backward(&mut grads, par);
            black_box(&grads.du);
        })
    });
    group.finish();
}

criterion_group!(benches, softmax_xent);
criterion_main!(benches);
