//! W2 of shared/reference-workload.md: exact top-100 inner-product retrieval, 4,096 queries over
//! a corpus of 1,000,000 pins, both dim 64, f32, L2-normalised, seeded.
//!
//! `CONVCG_THREADS` picks the thread count (unset or 0: all cores, as W2 fixes; 1: one thread),
//! `CONVCG_SIMD` caps the kernels (`avx2`, `portable`) to time the narrower paths on a wider CPU.
//! Before timing, the first `CHECKED` queries' results are checked against an f64 brute force
//! under W2's rule, so that a fast wrong answer cannot pass for a figure.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use convcg_eval::{Par, SimdLevel, TopK, exact_top_k};

mod w2_setup;
use w2_setup::{D, K, N, Q, corpus_and_queries};

/// Queries checked against the f64 reference before timing (as many as the FAISS peer checks).
const CHECKED: usize = 32;

/// W2's rule for query `q`: the same `K` ids as the f64 ranking, except that candidates whose f64
/// scores are within `1e-6` of the f64 `K`-th score may trade places. Returns the number of ids
/// that differ from the f64 top `K` (all of them within that margin), or panics.
fn check_query(queries: &[f32], corpus: &[f32], top: &TopK, q: usize) -> usize {
    let qv = &queries[q * D..(q + 1) * D];
    let exact: Vec<f64> = corpus
        .chunks_exact(D)
        .map(|c| {
            qv.iter()
                .zip(c)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        })
        .collect();
    let mut order: Vec<u32> = (0..N as u32).collect();
    order.select_nth_unstable_by(K - 1, |&a, &b| {
        exact[b as usize].total_cmp(&exact[a as usize])
    });
    let kth = exact[order[K - 1] as usize];
    let got = top.row(q);
    for &id in got {
        assert!(
            exact[id as usize] >= kth - 1e-6,
            "query {q}: id {id} is not in the top {K}"
        );
    }
    for &id in &order[..K] {
        if exact[id as usize] > kth + 1e-6 {
            assert!(
                got.contains(&id),
                "query {q}: id {id} of the top {K} missing"
            );
        }
    }
    order[..K].iter().filter(|id| !got.contains(id)).count()
}

fn w2(c: &mut Criterion) {
    let threads = std::env::var("CONVCG_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t: &usize| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let (corpus, queries) = corpus_and_queries();
    eprintln!(
        "w2: {N} x {D} corpus, {Q} queries, k = {K}, {threads} thread(s), {} kernels",
        SimdLevel::detect().name()
    );
    let top = exact_top_k(&queries, &corpus, D, K, par);
    let swapped: usize = (0..CHECKED)
        .map(|q| check_query(&queries, &corpus, &top, q))
        .sum();
    eprintln!(
        "w2: first {CHECKED} queries meet the f64 reference ({swapped} ids swapped within 1e-6)"
    );

    let mut group = c.benchmark_group("w2");
    group.throughput(Throughput::Elements(Q as u64));
    group.sample_size(10);
    group.bench_function("topk", |bench| {
        bench.iter(|| exact_top_k(&queries, &corpus, D, K, par))
    });
    group.finish();
}

criterion_group!(benches, w2);
criterion_main!(benches);
