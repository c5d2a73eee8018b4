//! W2 sharded over the ranks of an MPI job: each rank holds a contiguous slice of the
//! 1,000,000-pin corpus, finds its exact top 100 for the 4,096 queries, and the lists are
//! gathered and merged ([`convcg_eval::merge_top_k`]), as evaluation does in
//! `convcg train --distributed`. Rank 0 then runs the single-process engine on the whole corpus
//! and checks that every query's ids (and scores) are identical; it prints both speeds.
//!
//! ```sh
//! cargo build --release --features mpi --example w2_ranks
//! CONVCG_BIN=target/release/examples/w2_ranks scripts/mpirun.sh 2
//! ```

#[path = "../crates/convcg-eval/benches/w2_setup/mod.rs"]
mod w2_setup;

use std::sync::Arc;
use std::time::Instant;

use convcg::dist::Ranks;
use convcg_eval::{Par, exact_top_k};

use w2_setup::{D, K, N, Q, corpus_and_queries};

fn par(threads: usize) -> Par {
    if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    }
}

fn main() -> anyhow::Result<()> {
    let (_mpi, world) = convcg::dist::mpi::start()?;
    let ranks = Ranks::over(Arc::new(world));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let (corpus, queries) = corpus_and_queries();
    let mine = ranks.share(N);

    let t0 = Instant::now();
    let local = exact_top_k(
        &queries,
        &corpus[mine.start * D..mine.end * D],
        D,
        K,
        par(threads),
    );
    let merged = ranks.merged_top_k(local, mine.start, Q, K)?;
    let sharded_s = t0.elapsed().as_secs_f64();
    if !ranks.is_leader() {
        return Ok(());
    }
    let t0 = Instant::now();
    let whole = exact_top_k(&queries, &corpus, D, K, par(threads));
    let whole_s = t0.elapsed().as_secs_f64();
    let differ = (0..Q).filter(|&q| merged.row(q) != whole.row(q)).count();
    let same_scores = merged
        .scores()
        .iter()
        .zip(whole.scores())
        .all(|(a, b)| a.to_bits() == b.to_bits());
    println!(
        "W2 sharded over {} rank(s) ({threads} thread(s) each): {:.0} queries/s; one process, {threads} thread(s), whole corpus: {:.0} queries/s",
        ranks.size(),
        Q as f64 / sharded_s,
        Q as f64 / whole_s
    );
    println!(
        "ids identical to the single-process engine for {} of {Q} queries; scores bit for bit: {same_scores}",
        Q - differ
    );
    if differ > 0 || !same_scores {
        anyhow::bail!("the sharded top-k differs from the single-process engine");
    }
    Ok(())
}
