//! Last-touch attribution of conversions to impressions.

use rayon::prelude::*;

use crate::hash::IdMap;
use crate::schema::{EngagementKind, EventLog};

use super::NONE;
use super::prefilter::Prefilter;

/// How a conversion was credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Touch {
    /// To a click within the click window.
    Click,
    /// To an impression within the view window (no qualifying click).
    View,
}

/// Per conversion (in `log.conversions` order), the impression it was credited to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Index in `log.impressions` of the credited impression, [`u32::MAX`] when unattributed.
    pub impression: Vec<u32>,
    /// How each attributed conversion was credited (`None` when unattributed).
    pub touch: Vec<Option<Touch>>,
}

impl Attribution {
    /// The credited impression of conversion `c` and how, if any.
    pub fn get(&self, c: usize) -> Option<(u32, Touch)> {
        Some((self.impression[c], self.touch[c]?))
    }
}

/// One touch of a converting (user, pin) pair, sortable by (pair slot, time, impression id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TouchPoint {
    slot: u32,
    ts: i64,
    impression_id: i64,
    impression: u32,
}

/// Touch points grouped by pair slot: slot `s` holds `points[start[s]..start[s + 1]]`, in
/// (time, impression id) order.
struct Grouped {
    start: Vec<usize>,
    points: Vec<TouchPoint>,
}

impl Grouped {
    fn new(slots: usize, mut points: Vec<TouchPoint>) -> Grouped {
        points.par_sort_unstable();
        let mut start = vec![0usize; slots + 1];
        for p in &points {
            start[p.slot as usize + 1] += 1;
        }
        for s in 0..slots {
            start[s + 1] += start[s];
        }
        Grouped { start, points }
    }

    /// The last touch of `slot` with `t <= ts <= t + window`: the latest at or before `ts`,
    /// ties on time to the larger impression id. All windows have one length, so if the latest
    /// touch is too old, every earlier one is too.
    fn last_within(&self, slot: u32, ts: i64, window: i64) -> Option<u32> {
        let list = &self.points[self.start[slot as usize]..self.start[slot as usize + 1]];
        let n = list.partition_point(|p| p.ts <= ts);
        let last = list[..n].last()?;
        (ts <= last.ts.saturating_add(window)).then_some(last.impression)
    }
}

/// Credits each conversion to the same user's last click on its pin with
/// `click.ts <= conv.ts <= click.ts + click_window`, else to the last impression of that user
/// on that pin with `imp.ts <= conv.ts <= imp.ts + view_window`, else to nothing. Ties on time
/// go to the larger impression id. `eng_impression[k]` is the impression index of engagement
/// `k` ([`NONE`] for an orphan). Ids are matched as they are in the log; a conversion of an
/// unknown user or pin finds no touch.
pub(crate) fn attribute(
    log: &EventLog,
    eng_impression: &[u32],
    click_window: i64,
    view_window: i64,
) -> Attribution {
    let convs = &log.conversions;
    let mut slot_of: IdMap<(i64, i64), u32> = IdMap::default();
    let mut filter = Prefilter::with_capacity(convs.len());
    let conv_slot: Vec<u32> = convs
        .iter()
        .map(|c| {
            let next = slot_of.len() as u32;
            filter.insert((c.user_id, c.pin_id));
            *slot_of.entry((c.user_id, c.pin_id)).or_insert(next)
        })
        .collect();
    let slots = slot_of.len();
    if slots == 0 {
        return Attribution::default();
    }

    // Only impressions of a converting (user, pin) pair can be credited: find those first.
    let imps = &log.impressions;
    let views: Vec<TouchPoint> = (0..imps.len())
        .into_par_iter()
        .with_min_len(1 << 14)
        .filter_map(|i| {
            let key = (imps.user_id[i], imps.pin_id[i]);
            if !filter.may_contain(key) {
                return None;
            }
            let slot = *slot_of.get(&key)?;
            Some(TouchPoint {
                slot,
                ts: imps.ts[i],
                impression_id: imps.impression_id[i],
                impression: i as u32,
            })
        })
        .collect();
    let slot_of_impression: IdMap<u32, u32> =
        views.iter().map(|v| (v.impression, v.slot)).collect();
    let clicks: Vec<TouchPoint> = log
        .engagements
        .par_iter()
        .zip(eng_impression)
        .with_min_len(1 << 14)
        .filter(|(e, _)| e.kind == EngagementKind::Click)
        .filter_map(|(e, &i)| {
            let slot = *slot_of_impression.get(&i)?;
            Some(TouchPoint {
                slot,
                ts: e.ts,
                impression_id: imps.impression_id[i as usize],
                impression: i,
            })
        })
        .collect();
    let views = Grouped::new(slots, views);
    let clicks = Grouped::new(slots, clicks);

    let credited: Vec<(u32, Option<Touch>)> = convs
        .par_iter()
        .zip(&conv_slot)
        .with_min_len(1 << 10)
        .map(|(c, &slot)| {
            if let Some(i) = clicks.last_within(slot, c.ts, click_window) {
                (i, Some(Touch::Click))
            } else if let Some(i) = views.last_within(slot, c.ts, view_window) {
                (i, Some(Touch::View))
            } else {
                (NONE, None)
            }
        })
        .collect();
    let (impression, touch) = credited.into_iter().unzip();
    Attribution { impression, touch }
}
