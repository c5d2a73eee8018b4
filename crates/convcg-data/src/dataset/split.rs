//! The `last_conversion` evaluation protocol: each converting user's last conversion, and each
//! engaged user's last engagement, is an eval query; a user's events from the first of their
//! query points on are neither trained on nor used as labels.

use crate::hash::IdSet;
use crate::labels::NONE;
use crate::schema::EventLog;

use super::config::window_s;
use super::resolve::{PairImpressions, Resolved};
use super::{DatasetConfig, QueryKey};

/// A moment in file order: unix seconds, then a tie-break within the second (an impression id;
/// `i64::MIN` is before everything of that second, `i64::MAX` after it).
pub(crate) type Point = (i64, i64);

/// One eval query per user of one task: its key and its one relevant pin.
pub(crate) struct UserQueries {
    pub(crate) keys: Vec<QueryKey>,
    pub(crate) relevant: Vec<Vec<u32>>,
}

/// The eval queries of both tasks and where each user's training events end.
pub(crate) struct HeldOut {
    /// Per user, the earliest of their query points; `None` for a user without a query.
    cut: Vec<Option<Point>>,
    /// Per conversion, its point ([`conversion_points`]); `None` for an unknown user or pin.
    conversion_point: Vec<Option<Point>>,
    pub(crate) conversion: UserQueries,
    pub(crate) engagement: UserQueries,
}

/// A candidate for a user's last event: its order (point, then row) and the query it makes.
type Last = ((Point, usize), QueryKey, u32);

impl HeldOut {
    /// The queries of `log`: per converting user the conversion of greatest (point, row), per
    /// engaged user the engagement of greatest (ts, impression id, row); users in index order.
    pub(crate) fn new(log: &EventLog, r: &Resolved) -> HeldOut {
        let num_users = r.user_index.len();
        let (conversion_point, anchors) = conversion_points(log, r);
        let imps = &log.impressions;
        let key_at = |user: u32, point: Point, anchor: usize| QueryKey {
            user,
            ts: point.0,
            seq: point.1,
            surface: imps.surface[anchor],
            context_pin: r.imp_context[anchor],
            query_id: imps.query(anchor),
        };

        let mut last_conversion: Vec<Option<Last>> = vec![None; num_users];
        for (c, conv) in log.conversions.iter().enumerate() {
            let (Some(point), Some(anchor)) = (conversion_point[c], anchors[c]) else {
                continue;
            };
            let Some((user, pin)) = r.pair(conv.user_id, conv.pin_id) else {
                continue;
            };
            let order = (point, c);
            let slot = &mut last_conversion[user as usize];
            if slot.as_ref().is_none_or(|l| l.0 < order) {
                *slot = Some((order, key_at(user, point, anchor), pin));
            }
        }

        let mut last_engagement: Vec<Option<Last>> = vec![None; num_users];
        for (e, (eng, &i)) in log.engagements.iter().zip(&r.eng_impression).enumerate() {
            if i == NONE {
                continue;
            }
            let i = i as usize;
            let user = r.imp_user[i];
            let order = ((eng.ts, imps.impression_id[i]), e);
            // The query is asked when the impression was shown, so that the engagement itself
            // (at or after that moment) is never in its history.
            let shown = (imps.ts[i], imps.impression_id[i]);
            let slot = &mut last_engagement[user as usize];
            if slot.as_ref().is_none_or(|l| l.0 < order) {
                *slot = Some((order, key_at(user, shown, i), r.imp_pin[i]));
            }
        }

        let point_of = |k: &QueryKey| (k.ts, k.seq);
        let cut = last_conversion
            .iter()
            .zip(&last_engagement)
            .map(|(c, e)| {
                let points = [c, e].into_iter().flatten().map(|l| point_of(&l.1));
                points.min()
            })
            .collect();
        HeldOut {
            cut,
            conversion_point,
            conversion: user_queries(last_conversion),
            engagement: user_queries(last_engagement),
        }
    }

    /// Whether an event of `user` at `point` is before all of the user's queries, and so may
    /// train (every event of a user without a query may).
    pub(crate) fn trains(&self, user: u32, point: Point) -> bool {
        self.cut
            .get(user as usize)
            .copied()
            .flatten()
            .is_none_or(|cut| point < cut)
    }

    /// Per impression, whether it trains (see [`HeldOut::trains`]).
    pub(crate) fn train_mask(&self, log: &EventLog, r: &Resolved) -> Vec<bool> {
        let imps = &log.impressions;
        (0..imps.len())
            .map(|i| self.trains(r.imp_user[i], (imps.ts[i], imps.impression_id[i])))
            .collect()
    }

    /// Per conversion, whether it may label training impressions: a conversion of an unknown
    /// user or pin (it is attributed to nothing) or one before its user's first query point.
    pub(crate) fn labelling_conversions(&self, log: &EventLog, r: &Resolved) -> Vec<bool> {
        log.conversions
            .iter()
            .zip(&self.conversion_point)
            .map(|(c, point)| match (point, r.user_index.get(&c.user_id)) {
                (Some(p), Some(&u)) => self.trains(u, *p),
                _ => true,
            })
            .collect()
    }
}

fn user_queries(last: Vec<Option<Last>>) -> UserQueries {
    let (keys, relevant) = last
        .into_iter()
        .flatten()
        .map(|(_, key, pin)| (key, vec![pin]))
        .unzip();
    UserQueries { keys, relevant }
}

/// Per conversion of a known (user, pin), its point in file order and its anchor: the pair's
/// latest impression (by ts, then impression id) at or before the conversion's second. The
/// point is (conversion ts, anchor's impression id) when the anchor has the conversion's second
/// (a buy recorded as its own impression, a clickout's listed hotel), else (conversion ts,
/// `i64::MAX`): after everything shown in that second. A conversion without an anchor has a
/// point but makes no query (nothing the user saw can be asked for).
fn conversion_points(log: &EventLog, r: &Resolved) -> (Vec<Option<Point>>, Vec<Option<usize>>) {
    let pairs: IdSet<(u32, u32)> = log
        .conversions
        .iter()
        .filter_map(|c| r.pair(c.user_id, c.pin_id))
        .collect();
    let views = PairImpressions::new(log, r, &pairs);
    let ids = &log.impressions.impression_id;
    log.conversions
        .iter()
        .map(|c| {
            let Some(pair) = r.pair(c.user_id, c.pin_id) else {
                return (None, None);
            };
            let anchor = views
                .of(pair)
                .iter()
                .filter(|&&(ts, _)| ts <= c.ts)
                .max_by_key(|&&(ts, row)| (ts, ids[row as usize]))
                .map(|&(ts, row)| (ts, row as usize));
            let point = match anchor {
                Some((ts, row)) if ts == c.ts => (c.ts, ids[row]),
                _ => (c.ts, i64::MAX),
            };
            (Some(point), anchor.map(|a| a.1))
        })
        .unzip()
}

/// What the protocol decided: which impressions train, which log labels them, at what cutoff.
pub(crate) struct Split {
    pub(crate) train_mask: Vec<bool>,
    /// The log without held-out conversions (`None`: the log itself labels).
    pub(crate) label_log: Option<EventLog>,
    pub(crate) cutoff: i64,
    pub(crate) held_out: Option<HeldOut>,
}

impl Split {
    pub(crate) fn time(log: &EventLog, window_start: i64) -> Split {
        Split {
            train_mask: log
                .impressions
                .ts
                .iter()
                .map(|&t| t < window_start)
                .collect(),
            label_log: None,
            cutoff: window_start,
            held_out: None,
        }
    }

    pub(crate) fn last_conversion(log: &EventLog, r: &Resolved, cfg: &DatasetConfig) -> Split {
        let held_out = HeldOut::new(log, r);
        let keep = held_out.labelling_conversions(log, r);
        // label() reads conversions from a log, so the held-out ones go from a copy; the real
        // slices this protocol is for are small.
        let label_log = EventLog {
            conversions: log
                .conversions
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.clone())
                .collect(),
            ..log.clone()
        };
        let last = log.impressions.ts.iter().copied().max().unwrap_or(0);
        Split {
            train_mask: held_out.train_mask(log, r),
            label_log: Some(label_log),
            // Every training label is known: these logs record conversions as they happen.
            cutoff: last.saturating_add(window_s(cfg.click_window_days)),
            held_out: Some(held_out),
        }
    }
}
