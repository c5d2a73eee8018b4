//! Eval queries: one per (user, surface) with a relevant pin in the eval window.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::schema::Surface;

use super::{EvalQueries, QueryKey};

/// A relevant impression in the eval window.
pub(crate) struct Hit {
    pub(crate) user: u32,
    pub(crate) surface: Surface,
    pub(crate) ts: i64,
    pub(crate) impression_id: i64,
    pub(crate) pin: u32,
    pub(crate) context_pin: Option<u32>,
    pub(crate) query_id: Option<i64>,
}

/// Groups hits by (user, surface): the query sees history as of `window_start` and the context
/// of the group's first relevant impression. `pairs_in_window` counts the (user, surface) pairs
/// with any impression in the window; those without a relevant pin are counted as skipped.
/// Beyond `max` queries a seeded subsample (in query order) is kept.
pub(crate) fn build_queries(
    mut hits: Vec<Hit>,
    window_start: i64,
    pairs_in_window: usize,
    max: usize,
    seed: u64,
    stream: u64,
) -> EvalQueries {
    hits.sort_unstable_by_key(|h| (h.user, h.surface, h.ts, h.impression_id, h.pin));
    let mut keys = Vec::new();
    let mut relevant: Vec<Vec<u32>> = Vec::new();
    let mut start = 0;
    while start < hits.len() {
        let first = &hits[start];
        let end = start
            + hits[start..].partition_point(|h| (h.user, h.surface) == (first.user, first.surface));
        let mut pins: Vec<u32> = hits[start..end].iter().map(|h| h.pin).collect();
        pins.sort_unstable();
        pins.dedup();
        keys.push(QueryKey {
            user: first.user,
            ts: window_start,
            seq: i64::MIN,
            surface: first.surface,
            context_pin: first.context_pin,
            query_id: first.query_id,
        });
        relevant.push(pins);
        start = end;
    }
    let skipped = pairs_in_window.saturating_sub(keys.len());
    subsample(keys, relevant, skipped, max, (seed, stream))
}

/// The queries with their relevant pins, or beyond `max` of them a seeded subsample (ChaCha8
/// `seed`, stream `stream`) kept in query order; `skipped_without_relevant` is recorded as given.
pub(crate) fn subsample(
    mut keys: Vec<QueryKey>,
    mut relevant: Vec<Vec<u32>>,
    skipped_without_relevant: usize,
    max: usize,
    (seed, stream): (u64, u64),
) -> EvalQueries {
    let subsampled_from = keys.len();
    if keys.len() > max {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let mut keep = rand::seq::index::sample(&mut rng, keys.len(), max).into_vec();
        keep.sort_unstable();
        keys = keep.iter().map(|&i| keys[i]).collect();
        relevant = keep
            .iter()
            .map(|&i| std::mem::take(&mut relevant[i]))
            .collect();
    }
    EvalQueries {
        keys,
        relevant,
        relevant_clean: None,
        skipped_without_relevant,
        subsampled_from,
    }
}
