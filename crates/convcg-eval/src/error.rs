use thiserror::Error;

/// Everything that can go wrong while computing metrics from top-k lists.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The top-k lists and the relevant sets describe different numbers of queries.
    #[error("top-k lists cover {topk} queries but {relevant} relevant sets were given")]
    QueryCountMismatch {
        /// Queries in the [`TopK`](crate::TopK).
        topk: usize,
        /// Relevant sets given.
        relevant: usize,
    },
    /// A query has no relevant item, so its recall is undefined; callers skip (and count) such
    /// queries before asking for metrics.
    #[error("query {query} has an empty relevant set; skip it before computing recall")]
    EmptyRelevant {
        /// Index of the offending query.
        query: usize,
    },
    /// A cut-off asks for more of each list than was retrieved.
    #[error("recall@{cutoff} asked for, but only the top {k} of each query were retrieved")]
    CutoffExceedsK {
        /// The cut-off asked for.
        cutoff: usize,
        /// Length of each retrieved list.
        k: usize,
    },
    /// A cut-off of zero has no capped-recall denominator.
    #[error("recall@0 is undefined")]
    ZeroCutoff,
    /// There are no queries to average over.
    #[error("no queries to average recall over")]
    NoQueries,
    /// The `TopK` fields disagree with each other (it was built by hand).
    #[error("malformed TopK: k = {k}, {ids} ids, {scores} scores")]
    MalformedTopK {
        /// Its `k`.
        k: usize,
        /// Length of its `ids`.
        ids: usize,
        /// Length of its `scores`.
        scores: usize,
    },
    /// An item id (retrieved or relevant) is not below the number of items the metric was told
    /// about, e.g. a pin without an advertiser.
    #[error("item id {id} is out of range: the metric knows {items} items")]
    UnknownItem {
        /// The offending id.
        id: u32,
        /// Number of items known.
        items: usize,
    },
    /// A simulated-serving setting is out of range ([`AuctionConfig`](crate::AuctionConfig)).
    #[error("invalid auction setting: `{key}` = {value}: must be {allowed}")]
    InvalidAuction {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        allowed: &'static str,
    },
    /// The ground truth handed to the simulated serving has a probability outside [0, 1], or a
    /// negative or non-finite value or bid.
    #[error("query {query}, item {item}: the ground truth's {what} is out of range")]
    BadCandidateTruth {
        /// Index of the query.
        query: usize,
        /// The item.
        item: u32,
        /// Which field (`p_click`, `p_conversion_given_click`, `p_view_through`, `value`, `bid`).
        what: &'static str,
    },
    /// A paired bootstrap was asked of no columns, of an empty one, or of columns of different
    /// lengths.
    #[error(
        "paired bootstrap of columns of {lengths:?} values: they must be non-empty and equally long"
    )]
    BootstrapColumns {
        /// Each column's length.
        lengths: Vec<usize>,
    },
    /// The bootstrap's settings are out of range ([`Bootstrap`](crate::Bootstrap)).
    #[error(
        "paired bootstrap with {resamples} resamples at level {level}: needs at least one resample and a level in (0, 1)"
    )]
    BootstrapSettings {
        /// Resamples asked for.
        resamples: usize,
        /// The level asked for.
        level: String,
    },
    /// A bootstrapped difference is not finite on most resamples (its columns hold NaN or
    /// infinities).
    #[error("paired bootstrap of non-finite values")]
    NonFiniteBootstrap,

    /// Per-shard top-k lists that cannot be merged ([`merge_top_k`](crate::merge_top_k)).
    #[error("per-shard top-k lists do not fit together: {0}")]
    ShardsDoNotFit(String),
}

/// Result of the fallible operations of this crate.
pub type Result<T> = std::result::Result<T, Error>;
