//! W1 data-parallel: the reference step (shared/reference-workload.md) split over the ranks of
//! an MPI job, each rank training its share of the 2,048 rows with the global batch's
//! candidates, as `convcg train --distributed` does. Rank 0 prints examples per second, the
//! share of a step spent in collective operations, the bytes summed and gathered per step, and
//! a projection of steps per second at more ranks from those bytes and a stated network.
//!
//! ```sh
//! cargo build --release --features mpi --example w1_ranks
//! CONVCG_THREADS=2 target/release/examples/w1_ranks          # one process, two threads
//! scripts/mpirun.sh 2 ... (CONVCG_BIN=target/release/examples/w1_ranks scripts/mpirun.sh 2)
//! ```
//!
//! Under mpirun each rank is bound to its core, so it runs one thread unless `CONVCG_THREADS`
//! says otherwise.

#[path = "../benches/w1_setup/mod.rs"]
mod w1_setup;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use convcg::dist::{Ranks, Traffic};
use convcg_model::Shard;
use convcg_model::collective::share;

use w1_setup::{B, W1, pool, threads};

/// Timed steps, after W1's warm-up steps.
const STEPS: usize = 20;

/// The network the projection assumes: per-link bandwidth (bytes/s) and per-message latency (s).
const LINK_BYTES_PER_S: f64 = 25e9 / 8.0;
const LATENCY_S: f64 = 10e-6;

/// Embedding width of W1's tables, and the bytes an exchanged gradient row takes (its id, then
/// its floats).
const EMB_DIM: usize = 16;
const ROW_BYTES: f64 = (4 + 4 * EMB_DIM) as f64;

fn main() -> anyhow::Result<()> {
    let (_mpi, world) = convcg::dist::mpi::start()?;
    let ranks = Ranks::over(Arc::new(world));
    let threads = threads();
    let pool = pool(threads);
    let leader = ranks.is_leader();
    let mut w = pool.install(|| W1::new(threads, w1_setup::precision()));
    let (n, rank) = (ranks.size(), ranks.rank());
    let rows = share(B, n, rank);
    let segments = [rows.len(), rows.len()];
    let before = ranks.traffic();
    let parts: Vec<_> = w.steps.iter().map(|s| s.part(rows.clone())).collect();
    let t0 = Instant::now();
    pool.install(|| {
        for _ in 0..STEPS {
            let i = w.take_step();
            let loss = if ranks.is_distributed() {
                let shard = Shard {
                    comm: ranks.comm(),
                    segments: &segments,
                };
                w.model.train_shard_step_with(
                    &mut w.tape,
                    &parts[i].batch(),
                    &shard,
                    &mut w.grads,
                    &mut w.opt,
                    w.par,
                )
            } else {
                let batch = w.steps[i].batch();
                w.model
                    .train_step_with(&mut w.tape, &batch, &mut w.grads, &mut w.opt, w.par)
            };
            assert!(loss.expect("W1 step").is_finite(), "W1 diverged");
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let t = ranks.traffic().since(&before);
    // The slowest rank sets the pace; every rank reports its own time to rank 0 through a sum.
    let mut times = vec![0.0; n * 2];
    times[rank * 2] = secs;
    times[rank * 2 + 1] = t.seconds;
    ranks.comm().all_reduce_sum_f64(&mut times);
    if !leader {
        return Ok(());
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let slowest = times.chunks(2).map(|t| t[0]).fold(0.0, f64::max);
    let comm: f64 = times.chunks(2).map(|t| t[1]).sum::<f64>() / n as f64;
    println!(
        "W1 on {n} rank(s) x {threads} thread(s), {cpu}: {:.0} examples/s ({:.1} ms a step), collective operations {:.1} ms a step ({:.0}%)",
        (STEPS * B) as f64 / slowest,
        1e3 * slowest / STEPS as f64,
        1e3 * comm / STEPS as f64,
        100.0 * comm / slowest
    );
    if ranks.is_distributed() {
        report_bytes(&t, &w, n, slowest - comm);
    }
    Ok(())
}

/// The bytes per step measured at `n` ranks, and the projection to more ranks.
fn report_bytes(t: &Traffic, w: &W1, n: usize, compute_s: f64) {
    let per = |b: u64| b as f64 / STEPS as f64;
    println!(
        "per step: {} all-reduces of {:.2} MB in all, {} all-gathers of {:.2} MB in all",
        t.reduces / STEPS as u64,
        per(t.reduce_bytes) / 1e6,
        t.gathers / STEPS as u64,
        per(t.gather_bytes) / 1e6
    );
    let dense_bytes = 4.0
        * w.model
            .params()
            .dense_params()
            .iter()
            .map(|p| p.value.len())
            .sum::<usize>() as f64;
    // The candidates' embeddings: 2B rows of the output width, gathered forward and summed
    // back.
    let out_dim = w.model.config().out_dim;
    let cand_bytes = (2 * B * out_dim * 4) as f64;
    let (reduces, gathers) = (
        t.reduces as f64 / STEPS as f64,
        t.gathers as f64 / STEPS as f64,
    );
    // Compute scales with the rows a rank holds.
    let compute_one = compute_s / STEPS as f64 * n as f64;
    println!(
        "projection at W1's global batch ({:.0} Gb/s links, {:.0} us a message; all-reduce by reduce-scatter and all-gather, 2 log2 N messages and 2 (N-1)/N of the buffer a rank; all-gather by recursive doubling, log2 N messages and (N-1)/N of the result; compute {:.1} ms a step on one rank, divided by the ranks):",
        LINK_BYTES_PER_S * 8.0 / 1e9,
        LATENCY_S * 1e6,
        1e3 * compute_one
    );
    println!("  ranks  rows/rank  sparse MB  bytes/rank/step  comm ms  steps/s  examples/s");
    for ranks in [2usize, 8, 32, 128] {
        let frac = (ranks - 1) as f64 / ranks as f64;
        let sparse = sparse_rows(w, ranks) as f64 * ROW_BYTES;
        // Each rank receives the others' rows of every all-gather, and sends and receives
        // 2 (N-1)/N of every all-reduced buffer.
        let moved = 2.0 * frac * (dense_bytes + cand_bytes) + frac * (cand_bytes + sparse);
        let hops = (ranks as f64).log2();
        let latency = (2.0 * reduces + gathers) * hops * LATENCY_S;
        let comm = moved / LINK_BYTES_PER_S + latency;
        let step = compute_one / ranks as f64 + comm;
        println!(
            "  {ranks:>5}  {:>9}  {:>9.2}  {:>12.2} MB  {:>7.2}  {:>7.1}  {:>10.0}",
            B / ranks,
            sparse / 1e6,
            moved / 1e6,
            1e3 * comm,
            1.0 / step,
            B as f64 / step
        );
    }
}

/// Embedding rows touched in one step, summed over `ranks` ranks (a row two ranks touch is
/// sent by both): every table's distinct ids in each rank's rows and candidates.
fn sparse_rows(w: &W1, ranks: usize) -> usize {
    let step = &w.steps[3];
    (0..ranks)
        .map(|r| {
            let part = step.part(share(B, ranks, r));
            part.table_ids()
                .iter()
                .map(|ids| ids.iter().collect::<HashSet<_>>().len())
                .sum::<usize>()
        })
        .sum()
}
