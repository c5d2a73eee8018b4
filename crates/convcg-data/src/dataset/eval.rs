//! The eval set: under the time protocol one query per (user, surface) with a relevant pin in
//! the eval window, under `last_conversion` the held-out queries; and the impressions of the
//! eval users, for the recently-seen baseline.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::IdSet;
use crate::labels::Labelled;
use crate::schema::{Conversion, EventLog, Surface};

use super::config::window_s;
use super::history::History;
use super::resolve::{PairImpressions, Resolved};
use super::split::{HeldOut, UserQueries};
use super::{DatasetConfig, DatasetStats, QueryKey, Task};

/// The eval queries of one task.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalQueries {
    /// One per kept (user, surface) pair, sorted by (user, surface).
    pub keys: Vec<QueryKey>,
    /// Relevant pins (indices into `log.pins`, sorted) of each query.
    pub relevant: Vec<Vec<u32>>,
    /// Conversion task on a synthetic log: pins with a true conversion following an impression
    /// in the window on that surface (may be empty for a query whose reported conversions are noise).
    pub relevant_clean: Option<Vec<Vec<u32>>>,
    /// (user, surface) pairs with impressions in the window but no relevant pin.
    pub skipped_without_relevant: usize,
    /// Queries before subsampling.
    pub subsampled_from: usize,
}

/// Eval queries of both tasks and the window they come from.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalSet {
    /// Conversion task.
    pub conversion: EvalQueries,
    /// Engagement task.
    pub engagement: EvalQueries,
    /// First second of the eval window (queries' `ts`); under `last_conversion`, the earliest
    /// query's second.
    pub window_start: i64,
    /// The largest impression ts.
    pub window_end: i64,
}

impl EvalSet {
    /// The queries of one task.
    pub fn task(&self, task: Task) -> &EvalQueries {
        match task {
            Task::Engagement => &self.engagement,
            Task::Conversion => &self.conversion,
        }
    }
}

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

/// The eval queries of the window `[start, end]`: conversion ones from the conversions credited
/// to impressions in the window, engagement ones from the window's clicks and saves; `labelled`
/// is the training part's labels and `train_mask` says which impressions it holds. Counts the
/// unknown-id and straddling conversions and the queries into `stats`.
pub(crate) fn eval_set(
    log: &EventLog,
    r: &Resolved,
    (labelled, train_mask): (&Labelled, &[bool]),
    (window_start, window_end): (i64, i64),
    true_conversions: Option<&[Conversion]>,
    cfg: &DatasetConfig,
    stats: &mut DatasetStats,
) -> EvalSet {
    let imps = &log.impressions;
    let mut conv_hits = Vec::new();
    for (c, conversion) in log.conversions.iter().enumerate() {
        match labelled.attribution.get(c) {
            None => {
                if r.pair(conversion.user_id, conversion.pin_id).is_none() {
                    stats.unknown_id_conversions += 1;
                }
            }
            Some((imp, _)) if train_mask[imp as usize] => {
                if conversion.ts >= window_start {
                    stats.straddling_conversions += 1;
                }
            }
            Some((imp, _)) => conv_hits.push(hit(log, r, imp as usize)),
        }
    }

    let mut pairs_in_window: Vec<(u32, Surface)> = (0..imps.len())
        .filter(|&i| !train_mask[i])
        .map(|i| (r.imp_user[i], imps.surface[i]))
        .collect();
    pairs_in_window.sort_unstable();
    pairs_in_window.dedup();
    let eng_hits: Vec<Hit> = (0..imps.len())
        .filter(|&i| !train_mask[i] && r.engaged[i])
        .map(|i| hit(log, r, i))
        .collect();
    let max = cfg.max_eval_queries;
    let engagement = build_queries(
        eng_hits,
        window_start,
        pairs_in_window.len(),
        max,
        cfg.eval_seed,
        0,
    );
    let mut conversion = build_queries(
        conv_hits,
        window_start,
        pairs_in_window.len(),
        max,
        cfg.eval_seed,
        1,
    );
    if let Some(truths) = true_conversions {
        conversion.relevant_clean = Some(clean_relevant(
            log,
            r,
            truths,
            &conversion.keys,
            window_start,
            window_s(cfg.click_window_days),
        ));
    }
    stats.eval_conversion_queries = conversion.keys.len();
    stats.eval_engagement_queries = engagement.keys.len();
    EvalSet {
        conversion,
        engagement,
        window_start,
        window_end,
    }
}

/// The `last_conversion` protocol's eval set: the held-out queries, subsampled beyond
/// `max_eval_queries`; counts the unknown-id conversions and the queries into `stats`.
pub(crate) fn held_out_eval_set(
    log: &EventLog,
    r: &Resolved,
    held_out: &HeldOut,
    window_end: i64,
    cfg: &DatasetConfig,
    stats: &mut DatasetStats,
) -> EvalSet {
    stats.unknown_id_conversions = log
        .conversions
        .iter()
        .filter(|c| r.pair(c.user_id, c.pin_id).is_none())
        .count();
    let queries = |q: &UserQueries, stream| {
        subsample(
            q.keys.clone(),
            q.relevant.clone(),
            0,
            cfg.max_eval_queries,
            (cfg.eval_seed, stream),
        )
    };
    let conversion = queries(&held_out.conversion, 1);
    let engagement = queries(&held_out.engagement, 0);
    stats.eval_conversion_queries = conversion.keys.len();
    stats.eval_engagement_queries = engagement.keys.len();
    let window_start = conversion
        .keys
        .iter()
        .chain(&engagement.keys)
        .map(|k| k.ts)
        .min()
        .unwrap_or(window_end);
    EvalSet {
        conversion,
        engagement,
        window_start,
        window_end,
    }
}

/// The impressions of the users with eval queries (of either task), for the recently-seen
/// baseline: (user, ts, impression id, pin).
pub(crate) fn seen_impressions(log: &EventLog, r: &Resolved, eval: &EvalSet) -> History {
    let mut users = vec![false; log.users.len()];
    for k in eval.conversion.keys.iter().chain(&eval.engagement.keys) {
        users[k.user as usize] = true;
    }
    let imps = &log.impressions;
    let events = (0..imps.len())
        .filter(|&i| users[r.imp_user[i] as usize])
        .map(|i| {
            (
                r.imp_user[i],
                imps.ts[i],
                imps.impression_id[i],
                r.imp_pin[i],
            )
        })
        .collect();
    History::new(log.users.len(), events)
}

fn hit(log: &EventLog, r: &Resolved, i: usize) -> Hit {
    let imps = &log.impressions;
    Hit {
        user: r.imp_user[i],
        surface: imps.surface[i],
        ts: imps.ts[i],
        impression_id: imps.impression_id[i],
        pin: r.imp_pin[i],
        context_pin: r.imp_context[i],
        query_id: imps.query(i),
    }
}

/// For each query, the pins with a true conversion of its user that follows an impression of
/// that pin in the window on its surface, within the click window.
fn clean_relevant(
    log: &EventLog,
    r: &Resolved,
    true_conversions: &[Conversion],
    keys: &[QueryKey],
    window_start: i64,
    click_window: i64,
) -> Vec<Vec<u32>> {
    let truths: Vec<((u32, u32), i64)> = true_conversions
        .iter()
        .filter_map(|c| Some((r.pair(c.user_id, c.pin_id)?, c.ts)))
        .collect();
    let pairs: IdSet<(u32, u32)> = truths.iter().map(|t| t.0).collect();
    let views = PairImpressions::new(log, r, &pairs);
    let mut triples: Vec<(u32, Surface, u32)> = Vec::new();
    for &((u, p), ts) in &truths {
        for &(t, i) in views.of((u, p)) {
            if t >= window_start && t <= ts && ts <= t.saturating_add(click_window) {
                triples.push((u, log.impressions.surface[i as usize], p));
            }
        }
    }
    triples.sort_unstable();
    triples.dedup();
    keys.iter()
        .map(|k| {
            let a = triples.partition_point(|t| (t.0, t.1) < (k.user, k.surface));
            let b = triples.partition_point(|t| (t.0, t.1) <= (k.user, k.surface));
            triples[a..b].iter().map(|t| t.2).collect()
        })
        .collect()
}
