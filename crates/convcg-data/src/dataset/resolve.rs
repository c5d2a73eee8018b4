//! Ids to catalog indices, engagements to impressions, and last-touch attribution.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hash::{IdMap, IdSet};
use crate::schema::{EngagementKind, EventLog};

pub(crate) const CLICKED: u8 = 1;
pub(crate) const SAVED: u8 = 2;

/// The log with every id resolved to an index.
pub(crate) struct Resolved {
    pub(crate) pin_index: IdMap<i64, u32>,
    pub(crate) user_index: IdMap<i64, u32>,
    pub(crate) imp_user: Vec<u32>,
    pub(crate) imp_pin: Vec<u32>,
    /// Context pin of each impression; a context pin outside the catalog is `None`.
    pub(crate) imp_context: Vec<Option<u32>>,
    /// [`CLICKED`] | [`SAVED`] per impression.
    pub(crate) engaged: Vec<u8>,
    /// (impression, click ts) of every click.
    pub(crate) clicks: Vec<(u32, i64)>,
    /// (user, ts, pin) of every click and save, for the history bags.
    pub(crate) engagement_events: Vec<(u32, i64, u32)>,
    pub(crate) orphan_engagements: usize,
}

fn id_index<T>(
    rows: &[T],
    table: &'static str,
    column: &'static str,
    id: impl Fn(&T) -> i64,
) -> Result<IdMap<i64, u32>> {
    let mut map = IdMap::default();
    map.reserve(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if map.insert(id(r), i as u32).is_some() {
            return Err(Error::InvalidLog {
                table,
                row: i,
                column,
                message: format!("duplicate {column} {}", id(r)),
            });
        }
    }
    Ok(map)
}

fn check_dense<'a>(
    table: &'static str,
    width: usize,
    rows: impl Iterator<Item = &'a [f32]>,
) -> Result<()> {
    for (i, d) in rows.enumerate() {
        if d.len() != width {
            return Err(Error::InvalidLog {
                table,
                row: i,
                column: "dense",
                message: format!(
                    "{} dense values, but the log names {width} columns",
                    d.len()
                ),
            });
        }
        if let Some(v) = d.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidLog {
                table,
                row: i,
                column: "dense",
                message: format!("non-finite value {v}"),
            });
        }
    }
    Ok(())
}

/// Finds an impression's index by its id.
struct ImpressionLookup {
    /// (id, index) sorted by id; `None` when the impressions are already sorted by id.
    sorted: Option<Vec<(i64, u32)>>,
}

impl ImpressionLookup {
    fn new(log: &EventLog) -> Result<ImpressionLookup> {
        let imps = &log.impressions;
        let strictly_sorted = imps.impression_id.windows(2).all(|w| w[0] < w[1]);
        if strictly_sorted {
            return Ok(ImpressionLookup { sorted: None });
        }
        let mut ids: Vec<(i64, u32)> = imps
            .impression_id
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        ids.par_sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidLog {
                table: "impressions",
                row: w[1].1 as usize,
                column: "impression_id",
                message: format!("duplicate impression_id {}", w[1].0),
            });
        }
        Ok(ImpressionLookup { sorted: Some(ids) })
    }

    fn find(&self, log: &EventLog, id: i64) -> Option<u32> {
        match &self.sorted {
            None => log
                .impressions
                .impression_id
                .binary_search(&id)
                .ok()
                .map(|i| i as u32),
            Some(ids) => ids
                .binary_search_by_key(&id, |x| x.0)
                .ok()
                .map(|i| ids[i].1),
        }
    }
}

impl Resolved {
    pub(crate) fn new(log: &EventLog) -> Result<Resolved> {
        if log.pins.is_empty() {
            return Err(Error::EmptyTable { table: "pins" });
        }
        if log.impressions.is_empty() {
            return Err(Error::EmptyTable {
                table: "impressions",
            });
        }
        if log.pins.len() > u32::MAX as usize
            || log.users.len() > u32::MAX as usize
            || log.impressions.len() > u32::MAX as usize
        {
            return Err(Error::InvalidLog {
                table: "impressions",
                row: 0,
                column: "impression_id",
                message: "more than 2^32 rows in a table".into(),
            });
        }
        check_dense(
            "pins",
            log.pin_dense_names.len(),
            log.pins.iter().map(|p| p.dense.as_slice()),
        )?;
        check_dense(
            "users",
            log.user_dense_names.len(),
            log.users.iter().map(|u| u.dense.as_slice()),
        )?;
        let pin_index = id_index(&log.pins, "pins", "pin_id", |p| p.pin_id)?;
        let user_index = id_index(&log.users, "users", "user_id", |u| u.user_id)?;

        let imps = &log.impressions;
        imps.check_lengths()?;
        let resolved: Vec<(u32, u32, Option<u32>)> = (0..imps.len())
            .into_par_iter()
            .map(|i| {
                let imp = imps.get(i);
                let unknown = |column: &'static str, table: &str, id: i64| Error::InvalidLog {
                    table: "impressions",
                    row: i,
                    column,
                    message: format!("{column} {id} is not in the {table} table"),
                };
                let u = *user_index
                    .get(&imp.user_id)
                    .ok_or_else(|| unknown("user_id", "users", imp.user_id))?;
                let p = *pin_index
                    .get(&imp.pin_id)
                    .ok_or_else(|| unknown("pin_id", "pins", imp.pin_id))?;
                let ctx = imp.context_pin_id.and_then(|c| pin_index.get(&c).copied());
                Ok((u, p, ctx))
            })
            .collect::<Result<_>>()?;
        let mut imp_user = Vec::with_capacity(resolved.len());
        let mut imp_pin = Vec::with_capacity(resolved.len());
        let mut imp_context = Vec::with_capacity(resolved.len());
        for (u, p, c) in resolved {
            imp_user.push(u);
            imp_pin.push(p);
            imp_context.push(c);
        }

        let lookup = ImpressionLookup::new(log)?;
        let mut engaged = vec![0u8; log.impressions.len()];
        let mut clicks = Vec::new();
        let mut engagement_events = Vec::with_capacity(log.engagements.len());
        let mut orphan_engagements = 0;
        for e in &log.engagements {
            let Some(i) = lookup.find(log, e.impression_id) else {
                orphan_engagements += 1;
                continue;
            };
            match e.kind {
                EngagementKind::Click => {
                    engaged[i as usize] |= CLICKED;
                    clicks.push((i, e.ts));
                }
                EngagementKind::Save => engaged[i as usize] |= SAVED,
            }
            engagement_events.push((imp_user[i as usize], e.ts, imp_pin[i as usize]));
        }
        Ok(Resolved {
            pin_index,
            user_index,
            imp_user,
            imp_pin,
            imp_context,
            engaged,
            clicks,
            engagement_events,
            orphan_engagements,
        })
    }

    /// (user, pin) indices of a conversion, if both are known.
    pub(crate) fn pair(&self, user_id: i64, pin_id: i64) -> Option<(u32, u32)> {
        Some((
            *self.user_index.get(&user_id)?,
            *self.pin_index.get(&pin_id)?,
        ))
    }
}

/// How a conversion was attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    Click,
    View,
}

/// Per (user, pin): (time, impression id, impression index) of each touch.
type TouchMap = IdMap<(u32, u32), Vec<(i64, i64, u32)>>;

/// Clicks and impressions of the (user, pin) pairs that have conversions.
pub(crate) struct Touches {
    /// (click ts, impression id, impression index) per pair.
    clicks: TouchMap,
    /// (impression ts, impression id, impression index) per pair.
    views: TouchMap,
}

impl Touches {
    pub(crate) fn new(log: &EventLog, r: &Resolved, pairs: &IdSet<(u32, u32)>) -> Touches {
        let mut views: TouchMap = IdMap::default();
        for (i, imp) in log.impressions.iter().enumerate() {
            let key = (r.imp_user[i], r.imp_pin[i]);
            if pairs.contains(&key) {
                views
                    .entry(key)
                    .or_default()
                    .push((imp.ts, imp.impression_id, i as u32));
            }
        }
        let mut clicks: TouchMap = IdMap::default();
        for &(i, ts) in &r.clicks {
            let key = (r.imp_user[i as usize], r.imp_pin[i as usize]);
            if views.contains_key(&key) {
                clicks.entry(key).or_default().push((
                    ts,
                    log.impressions.impression_id[i as usize],
                    i,
                ));
            }
        }
        Touches { clicks, views }
    }

    /// Last touch: the user's last click on the pin with `click.ts <= ts <= click.ts + click_window`,
    /// else the last impression with `imp.ts <= ts <= imp.ts + view_window`. Ties on time go to
    /// the larger impression id.
    pub(crate) fn attribute(
        &self,
        pair: (u32, u32),
        ts: i64,
        click_window: i64,
        view_window: i64,
    ) -> Option<(u32, Touch)> {
        let last = |list: Option<&Vec<(i64, i64, u32)>>, window: i64| {
            list?
                .iter()
                .filter(|&&(t, _, _)| t <= ts && ts <= t.saturating_add(window))
                .max_by_key(|&&(t, id, _)| (t, id))
                .map(|&(_, _, i)| i)
        };
        last(self.clicks.get(&pair), click_window)
            .map(|i| (i, Touch::Click))
            .or_else(|| last(self.views.get(&pair), view_window).map(|i| (i, Touch::View)))
    }

    /// Impressions of the pair: (ts, impression id, impression index).
    pub(crate) fn impressions(&self, pair: (u32, u32)) -> &[(i64, i64, u32)] {
        self.views.get(&pair).map_or(&[], Vec::as_slice)
    }
}
