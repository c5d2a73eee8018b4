//! Exact top-k retrieval over the whole pin corpus, recall@K, and the reference baselines of
//! convcg.
//!
//! The crate takes embeddings and ids, never the model: the trainer hands it query and pin
//! embeddings (row-major `f32`), and it returns each query's best pins and the metrics of
//! docs/design.md, Evaluation. Metrics are never sampled: every query is scored against every
//! pin.
//!
//! # Retrieval
//!
//! - [`exact_top_k`] (and [`exact_top_k_arrays`] for ndarray views): exact inner-product top-k.
//!   The corpus is scanned in cache-sized blocks with a bounded per-query selection, parallel
//!   over queries. On x86_64 with AVX2 and FMA (detected at run time) a register-blocked kernel
//!   scores 16 queries x 6 pins at a time and tests the scores against the 16 selection
//!   thresholds before they leave the registers; for batches of queries an int16 first pass
//!   (exact integer dot products of quantised embeddings, with a proven error bound) leaves
//!   only the pins that can still reach the top k to that f32 kernel, so the answer is the
//!   same bit for bit. Elsewhere one GEMM per (query block, corpus block) fills a scratch that
//!   the selection reads back.
//! - [`top_k_by`]: top-k under any scorer, e.g. the oracle ranking by true expected conversions
//!   per request under the logging policy.
//! - [`popularity_top_k`] and [`random_top_k`]: the popularity and random reference points.
//!
//! # Simulated serving
//!
//! [`simulate_serving`] sends each query's top candidates to a downstream auction (rank by true
//! `p_click x bid`, at most 5 ads above a reserve, position-based examination) and sums the
//! ground truth's expected impressions, clicks, conversions, value and cost ([`ServingOutcome`]);
//! [`OnlineLift`] compares two outcomes as the seed reports online results. The truth comes in
//! through a callback, so the crate still knows nothing of the data crate.
//!
//! Every list is best first; equal scores are broken by the smaller id, so results are fully
//! deterministic. A [`TopK`] holds `min(k, n)` ids per query when the corpus has only `n` items,
//! and results are identical for [`Par::Seq`] and any `Par::Rayon(n)`.
//!
//! # Metrics
//!
//! For a query with relevant set `R` (deduplicated, never empty) and retrieved list `L`:
//!
//! - **recall@K** = `|L[..K] ∩ R| / |R|`. The denominator is the whole relevant set, so a query
//!   with more than `K` relevant pins cannot reach 1.
//! - **capped_recall@K** = `|L[..K] ∩ R| / min(K, |R|)`. The denominator is what a perfect list of
//!   length `K` could hold, so 1 is always reachable.
//!
//! - **ndcg@K** ([`ndcg_at_k`]): binary-relevance DCG of the first `K` ranks (gain
//!   `1 / log2(rank + 2)`, ranks from 0) over that of a perfect list, `min(K, |R|)` hits first.
//! - **advertiser recall@K** ([`advertiser_recall_at_k`]): recall over the advertisers of `R`, one
//!   counting as found when any of its pins is in the first `K`.
//! - **coverage@K** ([`coverage_at_k`]): the share of all pins and of all advertisers served in
//!   some query's first `K`, and the [`gini`] coefficient of how often each is served.
//!
//! The per-query metrics are macro-averaged: the mean over queries of the per-query ratio, so every query weighs
//! the same however many relevant pins it has. Queries with no relevant pin have no recall; the
//! caller skips and counts them, and [`recall_at_k`] rejects them with
//! [`Error::EmptyRelevant`]. A cut-off larger than the retrieved `k` is an error too, rather
//! than a silently truncated list. The design's cut-offs are [`RECALL_KS`].
//!
//! # Example
//!
//! ```
//! use convcg_eval::{Par, exact_top_k, recall_at_k};
//!
//! // Three pins in 2-d and two queries.
//! let corpus = [1.0, 0.0, 0.0, 1.0, 0.7, 0.7];
//! let queries = [1.0, 0.1, 0.0, 1.0];
//! let top = exact_top_k(&queries, &corpus, 2, 2, Par::Seq);
//! assert_eq!(top.row(0), &[0, 2]);
//! assert_eq!(top.row(1), &[1, 2]);
//!
//! // Query 0 converted on pins 2 and 1, query 1 on pin 0.
//! let report = recall_at_k(&top, &[vec![2, 1], vec![0]], &[1, 2])?;
//! assert_eq!(report.recall["recall@2"], (0.5 + 0.0) / 2.0);
//! assert_eq!(report.capped_recall["capped_recall@1"], 0.0);
//! # Ok::<(), convcg_eval::Error>(())
//! ```
#![deny(missing_docs)]
// Library code returns errors; `unwrap` and `expect` only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// `unsafe` only in `simd`, the run-time-detected AVX2 + FMA kernel.
#![deny(unsafe_code)]

mod baselines;
mod bootstrap;
mod error;
mod exact;
mod online;
mod quantized;
mod ranking;
mod recall;
mod select;
mod shard;
mod simd;
#[cfg(test)]
mod testing;
mod topk;

pub use baselines::{popularity_top_k, random_top_k};
pub use bootstrap::{Bootstrap, BootstrapInterval, RatioParts};
pub use convcg_kernels::{Par, SimdLevel};
pub use error::{Error, Result};
pub use exact::{exact_top_k, exact_top_k_arrays, top_k_by};
pub use online::{
    AuctionConfig, CandidateTruth, OnlineLift, ServingOutcome, lift_percent, serve_each_query,
    serve_query, simulate_serving,
};
pub use ranking::{Coverage, advertiser_recall_at_k, coverage_at_k, gini, ndcg_at_k};
pub use recall::{RECALL_KS, RecallReport, recall_at_k};
pub use shard::merge_top_k;
pub use topk::TopK;
