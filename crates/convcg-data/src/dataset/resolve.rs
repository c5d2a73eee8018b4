//! Ids to catalog indices, engagements to impressions, and the impressions of converting pairs.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hash::{IdMap, IdSet};
use crate::labels::{NONE, engagement_impressions};
use crate::schema::EventLog;

/// The log with every id resolved to an index.
pub(crate) struct Resolved {
    pub(crate) pin_index: IdMap<i64, u32>,
    pub(crate) user_index: IdMap<i64, u32>,
    pub(crate) imp_user: Vec<u32>,
    pub(crate) imp_pin: Vec<u32>,
    /// Context pin of each impression; a context pin outside the catalog is `None`.
    pub(crate) imp_context: Vec<Option<u32>>,
    /// Impression row of each engagement, [`NONE`] for an orphan.
    pub(crate) eng_impression: Vec<u32>,
    /// Whether each impression was clicked or saved.
    pub(crate) engaged: Vec<bool>,
    /// (user, ts, impression id, pin) of every click and save, for the history bags.
    pub(crate) engagement_events: Vec<(u32, i64, i64, u32)>,
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
        if log.pins.len() >= NONE as usize || log.users.len() >= NONE as usize {
            return Err(Error::InvalidArgument {
                name: "log",
                message: "2^32 - 1 or more pins or users".into(),
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
        let eng_impression = engagement_impressions(log)?;
        let resolved: Vec<(u32, u32, Option<u32>)> = (0..imps.len())
            .into_par_iter()
            .map(|i| {
                let unknown = |column: &'static str, table: &str, id: i64| Error::InvalidLog {
                    table: "impressions",
                    row: i,
                    column,
                    message: format!("{column} {id} is not in the {table} table"),
                };
                let (user_id, pin_id) = (imps.user_id[i], imps.pin_id[i]);
                let u = *user_index
                    .get(&user_id)
                    .ok_or_else(|| unknown("user_id", "users", user_id))?;
                let p = *pin_index
                    .get(&pin_id)
                    .ok_or_else(|| unknown("pin_id", "pins", pin_id))?;
                let ctx = imps.context_pin(i).and_then(|c| pin_index.get(&c).copied());
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

        let mut engaged = vec![false; imps.len()];
        let mut engagement_events = Vec::with_capacity(log.engagements.len());
        for (e, &i) in log.engagements.iter().zip(&eng_impression) {
            if i == NONE {
                continue;
            }
            let i = i as usize;
            engaged[i] = true;
            engagement_events.push((imp_user[i], e.ts, imps.impression_id[i], imp_pin[i]));
        }
        Ok(Resolved {
            pin_index,
            user_index,
            imp_user,
            imp_pin,
            imp_context,
            eng_impression,
            engaged,
            engagement_events,
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

/// The impressions of some (user, pin) pairs: (impression ts, impression row) per pair.
pub(crate) struct PairImpressions {
    views: IdMap<(u32, u32), Vec<(i64, u32)>>,
}

impl PairImpressions {
    /// The impressions of `pairs` (the converting pairs: a small share of a log's).
    pub(crate) fn new(log: &EventLog, r: &Resolved, pairs: &IdSet<(u32, u32)>) -> PairImpressions {
        let mut views: IdMap<(u32, u32), Vec<(i64, u32)>> = IdMap::default();
        if pairs.is_empty() {
            return PairImpressions { views };
        }
        for (i, &ts) in log.impressions.ts.iter().enumerate() {
            let key = (r.imp_user[i], r.imp_pin[i]);
            if pairs.contains(&key) {
                views.entry(key).or_default().push((ts, i as u32));
            }
        }
        PairImpressions { views }
    }

    /// Impressions of the pair: (ts, impression row).
    pub(crate) fn of(&self, pair: (u32, u32)) -> &[(i64, u32)] {
        self.views.get(&pair).map_or(&[], Vec::as_slice)
    }
}
