//! Labelled examples, the time split, eval queries and batches, from any [`EventLog`].

mod eval;
mod history;
mod resolve;
mod vocab;

use std::fmt;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, config_error};
use crate::features::{Bag, FeatureSchema, PinFeatures, QueryFeatures};
use crate::hash::IdSet;
use crate::schema::{Conversion, EventLog, Surface};
use eval::{Hit, build_queries};
use history::History;
use resolve::{CLICKED, Resolved, SAVED, Touch, Touches};
use vocab::{Vocab, standardise};

const DAY_S: f64 = 86_400.0;

/// Which objective an example trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Task {
    /// A click or save.
    Engagement,
    /// An attributed, reported conversion.
    Conversion,
}

impl Task {
    /// Both tasks.
    pub const ALL: [Task; 2] = [Task::Engagement, Task::Conversion];

    /// 0 for engagement, 1 for conversion.
    pub fn index(self) -> usize {
        match self {
            Task::Engagement => 0,
            Task::Conversion => 1,
        }
    }
}

/// What a query tower sees: who, when (features use only events strictly before ts), where, and the context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueryKey {
    /// Index of the user in `log.users`.
    pub user: u32,
    /// Unix seconds; the history bags hold only engagements strictly before it.
    pub ts: i64,
    /// The surface.
    pub surface: Surface,
    /// Index in `log.pins` of the context pin (related pins), if any.
    pub context_pin: Option<u32>,
    /// The search query, if any.
    pub query_id: Option<i64>,
}

/// One labelled positive (user, pin) pair. `pin` is the index of the pin in log.pins; `user` in log.users.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Example {
    /// The query side.
    pub key: QueryKey,
    /// Index of the positive pin in `log.pins`.
    pub pin: u32,
    /// The task it trains.
    pub task: Task,
    /// Its loss weight.
    pub weight: f32,
}

/// How examples and eval queries are cut from a log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// The last days of impressions form the eval window; train is before.
    pub eval_window_days: f64,
    /// Click-through attribution window, days.
    pub click_window_days: f64,
    /// View-through attribution window, days.
    pub view_window_days: f64,
    /// Length of the recent-engagement bags.
    pub history_len: usize,
    /// Weight of an engagement example.
    pub engagement_weight: f32,
    /// Weight of a conversion example.
    pub conversion_weight: f32,
    /// Eval queries kept per task; a seeded subsample beyond this, counted.
    pub max_eval_queries: usize,
    /// Seed of that subsample.
    pub eval_seed: u64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            eval_window_days: 7.0,
            click_window_days: 7.0,
            view_window_days: 1.0,
            history_len: 20,
            engagement_weight: 1.0,
            conversion_weight: 1.0,
            max_eval_queries: 20_000,
            eval_seed: 0,
        }
    }
}

impl DatasetConfig {
    /// Checks every key; the error names the bad key and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(self.eval_window_days.is_finite() && self.eval_window_days > 0.0) {
            return Err(config_error(
                "eval_window_days",
                format!("must be a finite number > 0, got {}", self.eval_window_days),
            ));
        }
        for (key, v) in [
            ("click_window_days", self.click_window_days),
            ("view_window_days", self.view_window_days),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(config_error(
                    key,
                    format!("must be a finite number >= 0, got {v}"),
                ));
            }
        }
        for (key, v) in [
            ("engagement_weight", self.engagement_weight),
            ("conversion_weight", self.conversion_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(config_error(
                    key,
                    format!("must be a finite number >= 0, got {v}"),
                ));
            }
        }
        if self.max_eval_queries == 0 {
            return Err(config_error(
                "max_eval_queries",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }
}

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
    /// First second of the eval window (queries' `ts`).
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

/// What [`Dataset::build`] found and made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetStats {
    /// Impressions in the log.
    pub impressions: usize,
    /// Impressions before the eval window.
    pub train_impressions: usize,
    /// Impressions in the eval window.
    pub eval_impressions: usize,
    /// Engagements whose impression is not in the log (dropped).
    pub orphan_engagements: usize,
    /// Engagement training examples.
    pub train_engagement_examples: usize,
    /// Conversion training examples.
    pub train_conversion_examples: usize,
    /// Reported conversions in the log.
    pub conversions: usize,
    /// Attributed to a click.
    pub attributed_click_through: usize,
    /// Attributed to an impression without a (qualifying) click.
    pub attributed_view_through: usize,
    /// Not attributed (dropped).
    pub unattributed: usize,
    /// Of the unattributed, those naming a user or pin missing from the log's tables.
    pub unknown_id_conversions: usize,
    /// Attributed conversions at or after the window start whose impression was before it:
    /// neither train nor eval.
    pub straddling_conversions: usize,
    /// Conversion eval queries kept.
    pub eval_conversion_queries: usize,
    /// Engagement eval queries kept.
    pub eval_engagement_queries: usize,
    /// Users in the dictionary (OOV row excluded).
    pub user_vocab: usize,
    /// Pins in the dictionary (OOV row excluded).
    pub pin_vocab: usize,
    /// Advertisers in the dictionary (OOV row excluded).
    pub advertiser_vocab: usize,
    /// Categories in the dictionary (OOV row excluded).
    pub category_vocab: usize,
    /// Brands in the dictionary (OOV row excluded).
    pub brand_vocab: usize,
    /// Queries in the dictionary (OOV row excluded).
    pub query_vocab: usize,
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, String); 13] = [
            (
                "impressions (train / eval)",
                format!(
                    "{} ({} / {})",
                    self.impressions, self.train_impressions, self.eval_impressions
                ),
            ),
            ("orphan engagements", self.orphan_engagements.to_string()),
            (
                "train examples: engagement",
                self.train_engagement_examples.to_string(),
            ),
            (
                "train examples: conversion",
                self.train_conversion_examples.to_string(),
            ),
            ("reported conversions", self.conversions.to_string()),
            (
                "attributed click-through / view-through",
                format!(
                    "{} / {}",
                    self.attributed_click_through, self.attributed_view_through
                ),
            ),
            (
                "unattributed (unknown ids)",
                format!("{} ({})", self.unattributed, self.unknown_id_conversions),
            ),
            (
                "straddling the split (dropped)",
                self.straddling_conversions.to_string(),
            ),
            (
                "eval queries: conversion",
                self.eval_conversion_queries.to_string(),
            ),
            (
                "eval queries: engagement",
                self.eval_engagement_queries.to_string(),
            ),
            (
                "vocab users / pins",
                format!("{} / {}", self.user_vocab, self.pin_vocab),
            ),
            (
                "vocab advertisers / categories / brands",
                format!(
                    "{} / {} / {}",
                    self.advertiser_vocab, self.category_vocab, self.brand_vocab
                ),
            ),
            ("vocab queries", self.query_vocab.to_string()),
        ];
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (k, v) in rows {
            writeln!(f, "{k:<w$} | {v}")?;
        }
        Ok(())
    }
}

/// A training batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Query-tower inputs, one row per example.
    pub query: QueryFeatures,
    /// Catalog pin index of each positive.
    pub pins: Vec<u32>,
    /// Task of each row.
    pub task: Vec<Task>,
    /// Weight of each row.
    pub weight: Vec<f32>,
    /// ln of the pin's share of all training positives (both tasks).
    pub log_q: Vec<f32>,
}

/// Features, training examples and eval queries of one event log.
#[derive(Clone)]
pub struct Dataset {
    /// Table sizes and dense widths.
    pub schema: FeatureSchema,
    /// Features of every catalog pin; row = position in `log.pins`.
    pub pins: PinFeatures,
    /// Training examples: engagement ones in impression order, then conversion ones.
    pub train: Vec<Example>,
    /// Eval queries.
    pub eval: EvalSet,
    /// Counts.
    pub stats: DatasetStats,
    history: History,
    history_len: usize,
    vocab: Vocab,
    user_dense: Array2<f32>,
    pin_counts: [Vec<f32>; 2],
    log_q: Vec<f32>,
}

fn window_s(days: f64) -> i64 {
    (days * DAY_S).round() as i64
}

impl Dataset {
    /// Builds the dataset. `true_conversions` (synthetic only) fills
    /// [`EvalQueries::relevant_clean`] for the conversion task.
    pub fn build(
        log: &EventLog,
        true_conversions: Option<&[Conversion]>,
        cfg: &DatasetConfig,
    ) -> Result<Dataset> {
        cfg.validate()?;
        let r = Resolved::new(log)?;
        let window_end = log.impressions.ts.iter().copied().max().unwrap_or(0);
        let window_start = window_end - window_s(cfg.eval_window_days);
        let (click_w, view_w) = (
            window_s(cfg.click_window_days),
            window_s(cfg.view_window_days),
        );
        let train_mask: Vec<bool> = log
            .impressions
            .ts
            .iter()
            .map(|&t| t < window_start)
            .collect();

        let (vocab, pins) = Vocab::build(log, &r, &train_mask);
        let user_dense = standardise(log.users.len(), log.user_dense_names.len(), |i, j| {
            log.users[i].dense[j]
        });
        let schema = vocab.schema(log.user_dense_names.len(), log.pin_dense_names.len());

        let key_of = |i: usize| {
            let imp = log.impressions.get(i);
            QueryKey {
                user: r.imp_user[i],
                ts: imp.ts,
                surface: imp.surface,
                context_pin: r.imp_context[i],
                query_id: imp.query_id,
            }
        };

        let mut stats = DatasetStats {
            impressions: log.impressions.len(),
            train_impressions: train_mask.iter().filter(|&&t| t).count(),
            orphan_engagements: r.orphan_engagements,
            conversions: log.conversions.len(),
            user_vocab: vocab.users,
            pin_vocab: vocab.pins,
            advertiser_vocab: vocab.advertisers,
            category_vocab: vocab.categories,
            brand_vocab: vocab.brands,
            query_vocab: vocab.queries,
            ..DatasetStats::default()
        };
        stats.eval_impressions = stats.impressions - stats.train_impressions;

        let mut train: Vec<Example> = (0..log.impressions.len())
            .filter(|&i| train_mask[i] && r.engaged[i] & (CLICKED | SAVED) != 0)
            .map(|i| Example {
                key: key_of(i),
                pin: r.imp_pin[i],
                task: Task::Engagement,
                weight: cfg.engagement_weight,
            })
            .collect();
        stats.train_engagement_examples = train.len();

        // Attribution of reported conversions (and of true ones, for the clean relevance).
        let reported: Vec<Option<(u32, u32)>> = log
            .conversions
            .iter()
            .map(|c| r.pair(c.user_id, c.pin_id))
            .collect();
        let truths: Vec<((u32, u32), i64)> = true_conversions
            .unwrap_or(&[])
            .iter()
            .filter_map(|c| Some((r.pair(c.user_id, c.pin_id)?, c.ts)))
            .collect();
        let pairs: IdSet<(u32, u32)> = reported
            .iter()
            .flatten()
            .copied()
            .chain(truths.iter().map(|t| t.0))
            .collect();
        let touches = Touches::new(log, &r, &pairs);

        let mut conv_hits = Vec::new();
        for (c, pair) in log.conversions.iter().zip(&reported) {
            let Some(pair) = *pair else {
                stats.unattributed += 1;
                stats.unknown_id_conversions += 1;
                continue;
            };
            let Some((imp, touch)) = touches.attribute(pair, c.ts, click_w, view_w) else {
                stats.unattributed += 1;
                continue;
            };
            match touch {
                Touch::Click => stats.attributed_click_through += 1,
                Touch::View => stats.attributed_view_through += 1,
            }
            let imp = imp as usize;
            if train_mask[imp] {
                if c.ts < window_start {
                    train.push(Example {
                        key: key_of(imp),
                        pin: pair.1,
                        task: Task::Conversion,
                        weight: cfg.conversion_weight,
                    });
                    stats.train_conversion_examples += 1;
                } else {
                    stats.straddling_conversions += 1;
                }
            } else {
                conv_hits.push(hit(log, &r, imp));
            }
        }

        let mut pairs_in_window: Vec<(u32, Surface)> = (0..log.impressions.len())
            .filter(|&i| !train_mask[i])
            .map(|i| (r.imp_user[i], log.impressions.surface[i]))
            .collect();
        pairs_in_window.sort_unstable();
        pairs_in_window.dedup();
        let eng_hits: Vec<Hit> = (0..log.impressions.len())
            .filter(|&i| !train_mask[i] && r.engaged[i] != 0)
            .map(|i| hit(log, &r, i))
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
        if true_conversions.is_some() {
            conversion.relevant_clean = Some(clean_relevant(
                log,
                &touches,
                &truths,
                &conversion.keys,
                window_start,
                click_w,
            ));
        }
        stats.eval_conversion_queries = conversion.keys.len();
        stats.eval_engagement_queries = engagement.keys.len();

        let mut counts = [vec![0f32; log.pins.len()], vec![0f32; log.pins.len()]];
        for e in &train {
            counts[e.task.index()][e.pin as usize] += 1.0;
        }
        let total = train.len().max(1) as f32;
        let log_q = counts[0]
            .iter()
            .zip(&counts[1])
            .map(|(a, b)| ((a + b) / total).ln())
            .collect();

        Ok(Dataset {
            schema,
            pins,
            train,
            eval: EvalSet {
                conversion,
                engagement,
                window_start,
                window_end,
            },
            stats,
            history: History::new(log.users.len(), r.engagement_events),
            history_len: cfg.history_len,
            vocab,
            user_dense,
            pin_counts: counts,
            log_q,
        })
    }

    /// Table sizes and dense widths.
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    /// One row per catalog pin, index = position in log.pins.
    pub fn pin_features(&self) -> &PinFeatures {
        &self.pins
    }

    /// Training examples.
    pub fn train(&self) -> &[Example] {
        &self.train
    }

    /// Eval queries.
    pub fn eval(&self) -> &EvalSet {
        &self.eval
    }

    /// Counts.
    pub fn stats(&self) -> &DatasetStats {
        &self.stats
    }

    /// Catalog pins.
    pub fn num_pins(&self) -> usize {
        self.pins.len()
    }

    /// Users of the log.
    pub fn num_users(&self) -> usize {
        self.user_dense.nrows()
    }

    /// Training-window positive counts per catalog pin for one task (for the popularity baseline).
    pub fn pin_counts(&self, task: Task) -> Vec<f32> {
        self.pin_counts[task.index()].clone()
    }

    /// Per catalog pin, ln of its share of all training positives (`-inf` for a pin without any):
    /// the sampling log-probability of in-batch candidates.
    pub fn log_q(&self) -> &[f32] {
        &self.log_q
    }

    /// Query-tower features for these keys (history bags from events strictly before each key's ts).
    ///
    /// # Panics
    /// If a key's user or context pin is not an index of this dataset's log.
    #[track_caller]
    pub fn query_features(&self, keys: &[QueryKey]) -> QueryFeatures {
        let v = &self.vocab;
        let n = keys.len();
        let mut sparse: Vec<Vec<u32>> = (0..5).map(|_| Vec::with_capacity(n)).collect();
        let mut bags = [
            Vec::with_capacity(n * self.history_len),
            Vec::with_capacity(n * self.history_len),
        ];
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        let mut dense = Array2::zeros((n, self.user_dense.ncols()));
        for (i, k) in keys.iter().enumerate() {
            let ctx_row = k.context_pin.map_or(0, |p| v.pin_row[p as usize]);
            let ctx_category = match (k.context_pin, k.query_id) {
                (Some(p), _) => v.pin_category_row[p as usize],
                (None, Some(q)) => v.query_category_row.get(&q).copied().unwrap_or(0),
                (None, None) => 0,
            };
            sparse[0].push(v.user_row[k.user as usize]);
            sparse[1].push(k.surface.index() as u32 + 1);
            sparse[2].push(ctx_row);
            sparse[3].push(ctx_category);
            sparse[4].push(
                k.query_id
                    .and_then(|q| v.query_row.get(&q).copied())
                    .unwrap_or(0),
            );
            for &p in self.history.before(k.user, k.ts, self.history_len) {
                bags[0].push(v.pin_category_row[p as usize]);
                bags[1].push(v.pin_advertiser_row[p as usize]);
            }
            offsets.push(bags[0].len());
            dense
                .row_mut(i)
                .assign(&self.user_dense.row(k.user as usize));
        }
        let [categories, advertisers] = bags;
        QueryFeatures {
            sparse,
            bags: vec![
                Bag {
                    ids: categories,
                    offsets: offsets.clone(),
                },
                Bag {
                    ids: advertisers,
                    offsets,
                },
            ],
            dense,
        }
    }

    /// A training batch made of these example indices.
    ///
    /// # Panics
    /// If an index is out of range of [`Dataset::train`].
    #[track_caller]
    pub fn batch(&self, examples: &[usize]) -> Batch {
        let rows: Vec<&Example> = examples.iter().map(|&i| &self.train[i]).collect();
        let keys: Vec<QueryKey> = rows.iter().map(|e| e.key).collect();
        Batch {
            query: self.query_features(&keys),
            pins: rows.iter().map(|e| e.pin).collect(),
            task: rows.iter().map(|e| e.task).collect(),
            weight: rows.iter().map(|e| e.weight).collect(),
            log_q: rows.iter().map(|e| self.log_q[e.pin as usize]).collect(),
        }
    }
}

fn hit(log: &EventLog, r: &Resolved, i: usize) -> Hit {
    let imp = log.impressions.get(i);
    Hit {
        user: r.imp_user[i],
        surface: imp.surface,
        ts: imp.ts,
        impression_id: imp.impression_id,
        pin: r.imp_pin[i],
        context_pin: r.imp_context[i],
        query_id: imp.query_id,
    }
}

/// For each query, the pins with a true conversion of its user that follows an impression of
/// that pin in the window on its surface, within the click window.
fn clean_relevant(
    log: &EventLog,
    touches: &Touches,
    truths: &[((u32, u32), i64)],
    keys: &[QueryKey],
    window_start: i64,
    click_window: i64,
) -> Vec<Vec<u32>> {
    let mut triples: Vec<(u32, Surface, u32)> = Vec::new();
    for &((u, p), ts) in truths {
        for &(t, _, i) in touches.impressions((u, p)) {
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
