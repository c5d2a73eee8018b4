//! Dictionaries built from the training window, pin features, and standardised dense columns.

use ndarray::Array2;

use crate::features::{FeatureSchema, PinFeatures, TableSpec};
use crate::hash::IdMap;
use crate::schema::EventLog;

use super::resolve::Resolved;

/// Log-price buckets (row 0: no price).
pub(crate) const PRICE_BUCKETS: usize = 16;

/// Dictionary rows (0 = out of vocabulary) of everything a tower looks up.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Vocab {
    pub(crate) user_row: Vec<u32>,
    pub(crate) pin_row: Vec<u32>,
    pub(crate) pin_advertiser_row: Vec<u32>,
    pub(crate) pin_category_row: Vec<u32>,
    pub(crate) query_row: IdMap<i64, u32>,
    /// Category row of each training query: the category most of its shown pins had.
    pub(crate) query_category_row: IdMap<i64, u32>,
    pub(crate) users: usize,
    pub(crate) pins: usize,
    pub(crate) advertisers: usize,
    pub(crate) categories: usize,
    pub(crate) brands: usize,
    pub(crate) queries: usize,
}

/// Rows 1.. for `seen` entries, in index order.
fn rows_of_seen(seen: &[bool]) -> (Vec<u32>, usize) {
    let mut next = 0u32;
    let rows = seen
        .iter()
        .map(|&s| {
            if s {
                next += 1;
                next
            } else {
                0
            }
        })
        .collect();
    (rows, next as usize)
}

/// Rows 1.. for the ids of the seen pins, in pin order of first appearance.
fn dict_over_pins(seen_pins: &[bool], ids: impl Iterator<Item = Option<i64>>) -> (Vec<u32>, usize) {
    let ids: Vec<Option<i64>> = ids.collect();
    let mut dict: IdMap<i64, u32> = IdMap::default();
    for (id, _) in ids.iter().zip(seen_pins).filter(|(_, s)| **s) {
        if let Some(id) = id {
            let next = dict.len() as u32 + 1;
            dict.entry(*id).or_insert(next);
        }
    }
    let rows = ids
        .iter()
        .map(|id| id.and_then(|id| dict.get(&id).copied()).unwrap_or(0))
        .collect();
    (rows, dict.len())
}

/// Columns standardised to mean 0, sd 1 (a constant column becomes 0).
pub(crate) fn standardise(
    rows: usize,
    cols: usize,
    value: impl Fn(usize, usize) -> f32,
) -> Array2<f32> {
    let mut a = Array2::from_shape_fn((rows, cols), |(i, j)| value(i, j));
    for mut col in a.columns_mut() {
        let n = col.len().max(1) as f64;
        let mean = col.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = col
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        col.mapv_inplace(|x| ((f64::from(x) - mean) / sd) as f32);
    }
    a
}

impl Vocab {
    /// Dictionaries from the impressions with `train[i]`, and the catalog's pin features.
    pub(crate) fn build(log: &EventLog, r: &Resolved, train: &[bool]) -> (Vocab, PinFeatures) {
        let mut seen_user = vec![false; log.users.len()];
        let mut seen_pin = vec![false; log.pins.len()];
        for (i, _) in train.iter().enumerate().filter(|(_, t)| **t) {
            seen_user[r.imp_user[i] as usize] = true;
            seen_pin[r.imp_pin[i] as usize] = true;
            if let Some(c) = r.imp_context[i] {
                seen_pin[c as usize] = true;
            }
        }
        let (user_row, users) = rows_of_seen(&seen_user);
        let (pin_row, pins) = rows_of_seen(&seen_pin);
        let (pin_advertiser_row, advertisers) =
            dict_over_pins(&seen_pin, log.pins.iter().map(|p| Some(p.advertiser_id)));
        let (pin_category_row, categories) =
            dict_over_pins(&seen_pin, log.pins.iter().map(|p| Some(p.category_id)));
        let (pin_brand_row, brands) =
            dict_over_pins(&seen_pin, log.pins.iter().map(|p| p.brand_id));

        let mut train_queries: Vec<i64> = log
            .impressions
            .iter()
            .zip(train)
            .filter(|(_, t)| **t)
            .filter_map(|(imp, _)| imp.query_id)
            .collect();
        train_queries.sort_unstable();
        train_queries.dedup();
        let query_row: IdMap<i64, u32> = train_queries
            .iter()
            .enumerate()
            .map(|(i, &q)| (q, i as u32 + 1))
            .collect();
        let mut votes: IdMap<(i64, u32), u32> = IdMap::default();
        for (i, imp) in log.impressions.iter().enumerate() {
            if let (true, Some(q)) = (train[i], imp.query_id) {
                *votes
                    .entry((q, pin_category_row[r.imp_pin[i] as usize]))
                    .or_default() += 1;
            }
        }
        let mut best: IdMap<i64, (u32, u32)> = IdMap::default();
        for (&(q, cat), &n) in &votes {
            let e = best.entry(q).or_insert((n, cat));
            // Most votes, then the smaller row, so that the map iteration order does not matter.
            if n > e.0 || (n == e.0 && cat < e.1) {
                *e = (n, cat);
            }
        }
        let query_category_row = best.into_iter().map(|(q, (_, cat))| (q, cat)).collect();

        let pin_dense = standardise(log.pins.len(), log.pin_dense_names.len(), |i, j| {
            log.pins[i].dense[j]
        });
        let price_bucket = price_buckets(log);
        let pin_features = PinFeatures {
            sparse: vec![
                pin_row.clone(),
                pin_advertiser_row.clone(),
                pin_category_row.clone(),
                pin_brand_row,
                price_bucket,
            ],
            dense: pin_dense,
        };
        let vocab = Vocab {
            user_row,
            pin_row,
            pin_advertiser_row,
            pin_category_row,
            query_row,
            query_category_row,
            users,
            pins,
            advertisers,
            categories,
            brands,
            queries: train_queries.len(),
        };
        (vocab, pin_features)
    }

    /// The towers' tables and widths; each tower's dense columns end with `id_code_dim` columns
    /// of identity code.
    pub(crate) fn schema(
        &self,
        user_dense: usize,
        pin_dense: usize,
        id_code_dim: usize,
    ) -> FeatureSchema {
        let t = |name: &str, rows: usize| TableSpec {
            name: name.to_owned(),
            rows,
            pin_table: None,
        };
        FeatureSchema {
            query_sparse: vec![
                t("user_id", self.users + 1),
                t("surface", 4),
                t("context_pin", self.pins + 1),
                t("context_category", self.categories + 1),
                t("query_id", self.queries + 1),
            ],
            query_bags: vec![
                t("recent_categories", self.categories + 1),
                t("recent_advertisers", self.advertisers + 1),
                TableSpec {
                    pin_table: Some("pin_id".to_owned()),
                    ..t("recent_pins", self.pins + 1)
                },
            ],
            query_dense: user_dense + id_code_dim,
            pin_sparse: vec![
                t("pin_id", self.pins + 1),
                t("advertiser", self.advertisers + 1),
                t("category", self.categories + 1),
                t("brand", self.brands + 1),
                t("price_bucket", PRICE_BUCKETS + 1),
            ],
            pin_dense: pin_dense + id_code_dim,
            id_code_dim,
        }
    }
}

/// Buckets 1..=16 at the quantiles of the catalog's log prices; 0 for a missing or unusable price.
fn price_buckets(log: &EventLog) -> Vec<u32> {
    let log_price = |p: Option<f32>| p.filter(|&x| x.is_finite() && x > 0.0).map(f32::ln);
    let mut known: Vec<f32> = log.pins.iter().filter_map(|p| log_price(p.price)).collect();
    known.sort_by(f32::total_cmp);
    let edges: Vec<f32> = if known.is_empty() {
        Vec::new()
    } else {
        (1..PRICE_BUCKETS)
            .map(|k| known[(k * known.len() / PRICE_BUCKETS).min(known.len() - 1)])
            .collect()
    };
    log.pins
        .iter()
        .map(|p| match log_price(p.price) {
            Some(lp) => 1 + edges.partition_point(|&e| e <= lp) as u32,
            None => 0,
        })
        .collect()
}
