//! The feature state as of the log's end: what the query tower's inputs need for a request that
//! comes after the log (a user's features and recent engagements, the dictionaries, the pins'
//! features), without the log.
//!
//! A trained run saves it, so that serving and `retrieve` load it instead of re-reading and
//! re-labelling the whole log. Ids a request names are resolved here; an id the log never had
//! (a new user, a pin outside the catalogue) is served as the out-of-vocabulary row with no
//! other features of its own, as a cold start.

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{Bag, FeatureSchema, PinFeatures, QueryFeatures};
use crate::hash::IdMap;
use crate::schema::{EventLog, Surface};

use super::Dataset;
use super::batch::{QueryParts, QueryTables};
use super::id_code::append_codes;
use super::vocab::Vocab;

/// One request for the query tower, by the log's own ids.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryRequest {
    /// The user's `user_id`.
    pub user_id: i64,
    /// The surface.
    pub surface: Surface,
    /// The pin being viewed (related pins), by `pin_id`.
    pub context_pin_id: Option<i64>,
    /// The search query.
    pub query_id: Option<i64>,
    /// The user's recent engagements, oldest first, by `pin_id`, instead of those the log
    /// holds; only the last `history_len` count.
    pub recent_pin_ids: Option<Vec<i64>>,
}

/// What of a request the state did not know, and served from out-of-vocabulary rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColdStart {
    /// The user is not in the log's user table: out-of-vocabulary user row, zero (mean) user
    /// features, no stored engagements.
    pub user: bool,
    /// The context pin is not in the catalogue: served as if there were none.
    pub context_pin: bool,
    /// Recent pins of the request that are not in the catalogue, left out of the bags.
    pub unknown_recent_pins: usize,
}

/// The query tower's feature state after the last event of a log (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "Stored", try_from = "Stored")]
pub struct FeatureState {
    schema: FeatureSchema,
    history_len: usize,
    vocab: Vocab,
    user_ids: Vec<i64>,
    user_dense: Array2<f32>,
    /// Per user, the catalogue indices of the last `history_len` engaged pins, oldest first.
    recent: Bag,
    pin_ids: Vec<i64>,
    pin_advertiser_ids: Vec<i64>,
    /// The pin tower's inputs, identity codes included.
    pins: PinFeatures,
    user_index: IdMap<i64, u32>,
    pin_index: IdMap<i64, u32>,
}

impl Dataset {
    /// The feature state after the last event of `log`, the log this dataset was built from.
    ///
    /// # Panics
    /// If `log` is not that log (its tables have other lengths).
    #[track_caller]
    pub fn feature_state(&self, log: &EventLog) -> FeatureState {
        assert_eq!(
            log.users.len(),
            self.user_dense.nrows(),
            "the dataset's log"
        );
        assert_eq!(log.pins.len(), self.pins.len(), "the dataset's log");
        let mut recent = Bag {
            ids: Vec::new(),
            offsets: vec![0],
        };
        for user in 0..log.users.len() as u32 {
            let pins = self
                .history
                .before(user, i64::MAX, i64::MAX, self.history_len);
            recent.ids.extend_from_slice(pins);
            recent.offsets.push(recent.ids.len());
        }
        let user_ids: Vec<i64> = log.users.iter().map(|u| u.user_id).collect();
        let pin_ids: Vec<i64> = log.pins.iter().map(|p| p.pin_id).collect();
        FeatureState {
            schema: self.schema.clone(),
            history_len: self.history_len,
            vocab: self.vocab.clone(),
            user_index: index_of(&user_ids),
            pin_index: index_of(&pin_ids),
            user_ids,
            user_dense: self.user_dense.clone(),
            recent,
            pin_ids,
            pin_advertiser_ids: log.pins.iter().map(|p| p.advertiser_id).collect(),
            pins: self.pins.clone(),
        }
    }
}

fn index_of(ids: &[i64]) -> IdMap<i64, u32> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect()
}

impl FeatureState {
    /// Table sizes and dense widths: the towers' feature tables.
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    /// Engagements per recent-pins bag.
    pub fn history_len(&self) -> usize {
        self.history_len
    }

    /// Every pin tower input, in catalogue order.
    pub fn pin_features(&self) -> &PinFeatures {
        &self.pins
    }

    /// The catalogue's `pin_id`s.
    pub fn pin_ids(&self) -> &[i64] {
        &self.pin_ids
    }

    /// The catalogue's `advertiser_id` per pin.
    pub fn pin_advertiser_ids(&self) -> &[i64] {
        &self.pin_advertiser_ids
    }

    /// The user table's `user_id`s.
    pub fn user_ids(&self) -> &[i64] {
        &self.user_ids
    }

    /// The catalogue index of a `pin_id`, if the catalogue has it.
    pub fn pin_index(&self, pin_id: i64) -> Option<u32> {
        self.pin_index.get(&pin_id).copied()
    }

    /// The `pin_id`s of the user's recent engagements after the log, oldest first (none for a
    /// user the table does not have).
    pub fn recent_pin_ids(&self, user_id: i64) -> Vec<i64> {
        self.user_index
            .get(&user_id)
            .map(|&u| {
                self.recent
                    .get(u as usize)
                    .iter()
                    .map(|&p| self.pin_ids[p as usize])
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the user table has this `user_id`.
    pub fn knows_user(&self, user_id: i64) -> bool {
        self.user_index.contains_key(&user_id)
    }

    /// The query tower's inputs for these requests, one row each in order, and what each left
    /// cold (see [`ColdStart`]).
    pub fn query_features(&self, requests: &[QueryRequest]) -> (QueryFeatures, Vec<ColdStart>) {
        let mut cold = Vec::with_capacity(requests.len());
        let mut given: Vec<Vec<u32>> = Vec::with_capacity(requests.len());
        let mut resolved = Vec::with_capacity(requests.len());
        for r in requests {
            let user = self.user_index.get(&r.user_id).copied();
            let context = r.context_pin_id.map(|p| self.pin_index(p));
            let mut c = ColdStart {
                user: user.is_none(),
                context_pin: matches!(context, Some(None)),
                unknown_recent_pins: 0,
            };
            if let Some(ids) = &r.recent_pin_ids {
                let known: Vec<u32> = ids.iter().filter_map(|&p| self.pin_index(p)).collect();
                c.unknown_recent_pins = ids.len() - known.len();
                let keep = known.len().saturating_sub(self.history_len);
                given.push(known[keep..].to_vec());
            }
            cold.push(c);
            resolved.push((user, context.flatten()));
        }
        let mut given = given.iter();
        let parts = requests
            .iter()
            .zip(&resolved)
            .map(|(r, &(user, context_pin))| QueryParts {
                user,
                surface: r.surface,
                context_pin,
                query_id: r.query_id,
                recent: match (&r.recent_pin_ids, user) {
                    (Some(_), _) => given.next().map_or(&[][..], Vec::as_slice),
                    (None, Some(u)) => self.recent.get(u as usize),
                    (None, None) => &[],
                },
            });
        (self.tables().features(parts), cold)
    }

    fn tables(&self) -> QueryTables<'_> {
        QueryTables {
            vocab: &self.vocab,
            user_dense: self.user_dense.view(),
            pin_dense: self.pins.dense.view(),
            code_cols: self.schema.id_code_dim,
        }
    }
}

/// The stored form: the identity codes, which the pins' ids determine, and the id indices are
/// rebuilt on loading; dictionaries are sorted lists.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    schema: FeatureSchema,
    history_len: usize,
    user_ids: Vec<i64>,
    user_row: Vec<u32>,
    user_dense: Array2<f32>,
    recent_offsets: Vec<usize>,
    recent_pins: Vec<u32>,
    pin_ids: Vec<i64>,
    pin_advertiser_ids: Vec<i64>,
    pin_row: Vec<u32>,
    pin_advertiser_row: Vec<u32>,
    pin_category_row: Vec<u32>,
    query_row: Vec<(i64, u32)>,
    query_category_row: Vec<(i64, u32)>,
    pin_sparse: Vec<Vec<u32>>,
    /// The pins' own dense columns, without the codes.
    pin_dense: Array2<f32>,
}

fn sorted(map: &IdMap<i64, u32>) -> Vec<(i64, u32)> {
    let mut v: Vec<(i64, u32)> = map.iter().map(|(&k, &v)| (k, v)).collect();
    v.sort_unstable();
    v
}

impl From<FeatureState> for Stored {
    fn from(s: FeatureState) -> Stored {
        let own = s.pins.dense.ncols() - s.schema.id_code_dim;
        let pin_dense = s.pins.dense.slice_axis(Axis(1), (..own).into()).to_owned();
        Stored {
            history_len: s.history_len,
            user_ids: s.user_ids,
            user_row: s.vocab.user_row,
            user_dense: s.user_dense,
            recent_offsets: s.recent.offsets,
            recent_pins: s.recent.ids,
            pin_ids: s.pin_ids,
            pin_advertiser_ids: s.pin_advertiser_ids,
            pin_row: s.vocab.pin_row,
            pin_advertiser_row: s.vocab.pin_advertiser_row,
            pin_category_row: s.vocab.pin_category_row,
            query_row: sorted(&s.vocab.query_row),
            query_category_row: sorted(&s.vocab.query_category_row),
            pin_sparse: s.pins.sparse,
            pin_dense,
            schema: s.schema,
        }
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        name: "feature state",
        message: message.into(),
    }
}

/// That `rows` are all below `limit`, the size of the table `what` indexes.
fn rows_below(rows: impl IntoIterator<Item = u32>, limit: usize, what: &str) -> Result<()> {
    match rows.into_iter().find(|&r| r as usize >= limit) {
        Some(r) => Err(bad(format!(
            "{what} row {r} is outside its table of {limit} rows"
        ))),
        None => Ok(()),
    }
}

fn same_len(what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} has {len} entries, expected {expected}"
        )))
    }
}

fn unique_index(ids: &[i64], what: &str) -> Result<IdMap<i64, u32>> {
    let index = index_of(ids);
    if index.len() == ids.len() {
        Ok(index)
    } else {
        Err(bad(format!("{what} repeats an id")))
    }
}

impl TryFrom<Stored> for FeatureState {
    type Error = Error;

    /// Checks every length and every row against the schema's tables, so that a state that
    /// loads can featurise any request without an index out of range.
    fn try_from(s: Stored) -> Result<FeatureState> {
        let sc = &s.schema;
        let (Ok([user_t, surface_t, context_t, context_cat_t, query_t]), Ok([rc_t, ra_t, rp_t])) = (
            <&[_; 5]>::try_from(sc.query_sparse.as_slice()),
            <&[_; 3]>::try_from(sc.query_bags.as_slice()),
        ) else {
            return Err(bad(
                "the schema does not have the query tower's 5 ids and 3 bags",
            ));
        };
        if surface_t.rows != Surface::ALL.len() + 1 {
            return Err(bad("the surface table does not have a row per surface"));
        }
        let users = s.user_ids.len();
        let pins = s.pin_ids.len();
        same_len("user_row", s.user_row.len(), users)?;
        same_len("user_dense", s.user_dense.nrows(), users)?;
        same_len("recent_offsets", s.recent_offsets.len(), users + 1)?;
        for (what, len) in [
            ("pin_advertiser_ids", s.pin_advertiser_ids.len()),
            ("pin_row", s.pin_row.len()),
            ("pin_advertiser_row", s.pin_advertiser_row.len()),
            ("pin_category_row", s.pin_category_row.len()),
            ("pin_dense", s.pin_dense.nrows()),
        ] {
            same_len(what, len, pins)?;
        }
        same_len("pin_sparse", s.pin_sparse.len(), sc.pin_sparse.len())?;
        for (col, spec) in s.pin_sparse.iter().zip(&sc.pin_sparse) {
            same_len(&spec.name, col.len(), pins)?;
            rows_below(col.iter().copied(), spec.rows, &spec.name)?;
        }
        if s.user_dense.ncols() + sc.id_code_dim != sc.query_dense
            || s.pin_dense.ncols() + sc.id_code_dim != sc.pin_dense
        {
            return Err(bad("the dense widths do not match the schema"));
        }
        let offsets = &s.recent_offsets;
        if offsets.first() != Some(&0)
            || offsets.last() != Some(&s.recent_pins.len())
            || offsets
                .windows(2)
                .any(|w| w[0] > w[1] || w[1] - w[0] > s.history_len)
        {
            return Err(bad("the recent-pins bags are malformed"));
        }
        rows_below(s.recent_pins.iter().copied(), pins, "recent pin")?;
        rows_below(s.user_row.iter().copied(), user_t.rows, "user_id")?;
        rows_below(
            s.pin_row.iter().copied(),
            context_t.rows.min(rp_t.rows),
            "pin_id",
        )?;
        rows_below(
            s.pin_category_row.iter().copied(),
            context_cat_t.rows.min(rc_t.rows),
            "category",
        )?;
        rows_below(
            s.pin_advertiser_row.iter().copied(),
            ra_t.rows,
            "advertiser",
        )?;
        rows_below(s.query_row.iter().map(|q| q.1), query_t.rows, "query_id")?;
        rows_below(
            s.query_category_row.iter().map(|q| q.1),
            context_cat_t.rows,
            "query category",
        )?;
        let user_index = unique_index(&s.user_ids, "user_ids")?;
        let pin_index = unique_index(&s.pin_ids, "pin_ids")?;
        let dense = if sc.id_code_dim > 0 {
            append_codes(&s.pin_dense, s.pin_ids.iter().copied(), sc.id_code_dim)
        } else {
            s.pin_dense
        };
        let vocab = Vocab {
            user_row: s.user_row,
            pin_row: s.pin_row,
            pin_advertiser_row: s.pin_advertiser_row,
            pin_category_row: s.pin_category_row,
            query_row: s.query_row.into_iter().collect(),
            query_category_row: s.query_category_row.into_iter().collect(),
            users: user_t.rows.saturating_sub(1),
            pins: context_t.rows.saturating_sub(1),
            advertisers: ra_t.rows.saturating_sub(1),
            categories: rc_t.rows.saturating_sub(1),
            brands: sc.pin_sparse.get(3).map_or(0, |t| t.rows.saturating_sub(1)),
            queries: query_t.rows.saturating_sub(1),
        };
        Ok(FeatureState {
            vocab,
            user_ids: s.user_ids,
            user_dense: s.user_dense,
            recent: Bag {
                ids: s.recent_pins,
                offsets: s.recent_offsets,
            },
            pin_ids: s.pin_ids,
            pin_advertiser_ids: s.pin_advertiser_ids,
            pins: PinFeatures {
                sparse: s.pin_sparse,
                dense,
            },
            user_index,
            pin_index,
            history_len: s.history_len,
            schema: s.schema,
        })
    }
}
