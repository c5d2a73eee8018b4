//! Labelled examples, the time split, eval queries and batches, from any [`EventLog`].

mod eval;
mod history;
mod resolve;
mod split;
mod vocab;

use std::fmt;

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, config_error};
use crate::features::{Bag, FeatureSchema, PinFeatures, QueryFeatures};
use crate::hash::{IdMap, IdSet};
use crate::io::OnBadRow;
use crate::labels::{
    CONVERTED_LABEL, ClickWeight, ConversionKindWeights, LabelConfig, LabelStats, Labelled,
    LogQMode, MAX_HARD_NEGATIVES, StreamingConfig, StreamingFrequency, StreamingState,
    ValueWeighting, label, non_negative,
};
use crate::schema::{Conversion, EventLog, Surface};
use eval::{Hit, build_queries, subsample};
use history::History;
use resolve::{PairImpressions, Resolved};
use split::{HeldOut, UserQueries};
use vocab::{Vocab, standardise};

const DAY_S: f64 = 86_400.0;

/// A training objective. Every example carries a label of each; eval queries and the
/// popularity baseline's counts are kept per task.
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

/// What a query tower sees: who, when (features use only events strictly before the moment
/// `(ts, seq)`), where, and the context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueryKey {
    /// Index of the user in `log.users`.
    pub user: u32,
    /// Unix seconds; the history bags hold only engagements strictly before `(ts, seq)`.
    pub ts: i64,
    /// Place in file order within the second `ts`: an engagement at `(t, impression id of its
    /// impression)` is in the history iff it is lexicographically before `(ts, seq)`.
    /// `i64::MIN` (the time protocol's keys) keeps only earlier seconds; the `last_conversion`
    /// protocol uses impression ids, because a log of whole-day timestamps would otherwise leave
    /// every history empty.
    pub seq: i64,
    /// The surface.
    pub surface: Surface,
    /// Index in `log.pins` of the context pin (related pins), if any.
    pub context_pin: Option<u32>,
    /// The search query, if any.
    pub query_id: Option<i64>,
}

/// Up to [`MAX_HARD_NEGATIVES`] catalog pin indices, stored inline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardNegatives {
    pins: [u32; MAX_HARD_NEGATIVES],
    len: u8,
}

impl HardNegatives {
    /// These pins.
    ///
    /// # Errors
    /// If there are more than [`MAX_HARD_NEGATIVES`].
    pub fn new(pins: &[u32]) -> Result<HardNegatives> {
        if pins.len() > MAX_HARD_NEGATIVES {
            return Err(Error::InvalidArgument {
                name: "pins",
                message: format!(
                    "{} hard negatives; at most {MAX_HARD_NEGATIVES} fit",
                    pins.len()
                ),
            });
        }
        let mut out = HardNegatives {
            pins: [0; MAX_HARD_NEGATIVES],
            len: pins.len() as u8,
        };
        out.pins[..pins.len()].copy_from_slice(pins);
        Ok(out)
    }

    /// The pins, in draw order.
    pub fn as_slice(&self) -> &[u32] {
        &self.pins[..usize::from(self.len)]
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One labelled positive: an impression of the training part that was clicked or saved, or
/// that is mature and converted. `pin` indexes `log.pins`; the key's `user` indexes `log.users`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Example {
    /// The query side (the impression's user, time, surface and context).
    pub key: QueryKey,
    /// Index of the positive pin in `log.pins`.
    pub pin: u32,
    /// Clicked or saved.
    pub label_engagement: bool,
    /// [`CONVERTED_LABEL`](crate::CONVERTED_LABEL) (1), [`NOT_CONVERTED_LABEL`](crate::NOT_CONVERTED_LABEL)
    /// (0), or [`MASKED_LABEL`](crate::MASKED_LABEL) (-1: the impression is too recent to know).
    pub label_conversion: i8,
    /// Engagement weight (click weight or save weight; 0 for a conversion-only positive).
    pub weight_engagement: f32,
    /// Conversion weight (0 unless the conversion label is 1).
    pub weight_conversion: f32,
    /// The row's loss weight: `engagement_weight x weight_engagement + conversion_weight x
    /// weight_conversion` (the single softmax of a unified head adds both tasks' losses).
    pub weight: f32,
    /// Catalog pins of its hard negatives (up to `hard_negatives_per_positive`).
    pub hard_negatives: HardNegatives,
}

/// How the eval queries are chosen (`[data] eval_protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalProtocol {
    /// `"time"`: the last `eval_window_days` of impressions are the eval window; queries are
    /// (user, surface) pairs with a relevant pin in it, asked as of the window's start; the
    /// impressions before the window train, with its start as the maturity cutoff.
    #[default]
    Time,
    /// `"last_conversion"`: for logs too short (or too coarse in time) to split by time. Each
    /// converting user's last conversion (by time, then file order: the impression id of the
    /// conversion's own record, then conversion row) is a conversion query and each engaged
    /// user's last engagement an engagement query, each with one relevant pin and asked at that
    /// event's moment, so the user's earlier events are its history. A user's impressions and
    /// conversions from the first of their query points on are held out: neither examples, nor
    /// hard negatives, nor labels (training on a user's events after the query would show the
    /// model that query's future). Everything else trains, every label counted as mature (these
    /// logs record conversions as they happen). History bags break ties within a second by
    /// impression id (see [`QueryKey::seq`]).
    LastConversion,
}

/// How examples and eval queries are cut from a log (the run config's `[data]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// `"time"` or `"last_conversion"`: how eval queries are held out ([`EvalProtocol`]).
    pub eval_protocol: EvalProtocol,
    /// `"error"` (default) or `"skip"`: what reading a log from disk does with a bad row
    /// (passed to [`read_log`](crate::io::read_log); skipped rows are counted in its report).
    pub on_bad_row: OnBadRow,
    /// Time protocol: the last days of impressions form the eval window; train is before, and
    /// the window's start is the cutoff of conversion-label maturity. Unused by
    /// `last_conversion` (but still validated).
    pub eval_window_days: f64,
    /// Click-through attribution window, days; also the maturity window of conversion labels.
    pub click_window_days: f64,
    /// View-through attribution window, days.
    pub view_window_days: f64,
    /// Length of the recent-engagement bags.
    pub history_len: usize,
    /// Scale of the engagement task in a row's weight.
    pub engagement_weight: f32,
    /// Scale of the conversion task in a row's weight.
    pub conversion_weight: f32,
    /// Click weight from the landing-page duration.
    pub click_weight: ClickWeight,
    /// Engagement weight of a save.
    pub save_weight: f32,
    /// Conversion weight by kind; several conversions on one impression take the largest.
    pub conversion_kind_weights: ConversionKindWeights,
    /// `"none"` or `"log"`: scale a conversion's weight by `1 + ln(1 + value)`.
    pub value_weighting: ValueWeighting,
    /// Hard negatives per positive, `0..=8` (0: in-batch negatives only).
    pub hard_negatives_per_positive: usize,
    /// Seed of the hard-negative draw.
    pub hard_negative_seed: u64,
    /// `"exact"` or `"streaming"` sampling probabilities for the logQ correction.
    pub log_q: LogQMode,
    /// Settings of the streaming estimate.
    pub streaming_log_q: StreamingConfig,
    /// Eval queries kept per task; a seeded subsample beyond this, counted.
    pub max_eval_queries: usize,
    /// Seed of that subsample.
    pub eval_seed: u64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        let labels = LabelConfig::default();
        DatasetConfig {
            eval_protocol: EvalProtocol::Time,
            on_bad_row: OnBadRow::Error,
            eval_window_days: 7.0,
            click_window_days: 7.0,
            view_window_days: 1.0,
            history_len: 20,
            engagement_weight: 1.0,
            conversion_weight: 1.0,
            click_weight: labels.click_weight,
            save_weight: labels.save_weight,
            conversion_kind_weights: labels.conversion_kind_weights,
            value_weighting: labels.value_weighting,
            hard_negatives_per_positive: labels.hard_negatives_per_positive,
            hard_negative_seed: labels.seed,
            log_q: LogQMode::Exact,
            streaming_log_q: StreamingConfig::default(),
            max_eval_queries: 20_000,
            eval_seed: 0,
        }
    }
}

/// Longest history bag accepted: far beyond any use (the importers pick 5..=50), and small
/// enough that a batch's bag buffers cannot overflow.
const MAX_HISTORY_LEN: usize = 1000;

/// Longest window accepted, days: far beyond any use, and safely inside i64 seconds.
const MAX_WINDOW_DAYS: f64 = 36_500.0;

impl DatasetConfig {
    /// Checks every key; the error names the bad key, its value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(self.eval_window_days.is_finite()
            && self.eval_window_days > 0.0
            && self.eval_window_days <= MAX_WINDOW_DAYS)
        {
            return Err(config_error(
                "eval_window_days",
                format!(
                    "must be a number in (0, {MAX_WINDOW_DAYS}], got {}",
                    self.eval_window_days
                ),
            ));
        }
        for (key, v) in [
            ("click_window_days", self.click_window_days),
            ("view_window_days", self.view_window_days),
        ] {
            if !(v.is_finite() && (0.0..=MAX_WINDOW_DAYS).contains(&v)) {
                return Err(config_error(
                    key,
                    format!("must be a number in [0, {MAX_WINDOW_DAYS}], got {v}"),
                ));
            }
        }
        if self.history_len > MAX_HISTORY_LEN {
            return Err(config_error(
                "history_len",
                format!("must be in 0..={MAX_HISTORY_LEN}, got {}", self.history_len),
            ));
        }
        non_negative("engagement_weight", self.engagement_weight)?;
        non_negative("conversion_weight", self.conversion_weight)?;
        if self.max_eval_queries == 0 {
            return Err(config_error(
                "max_eval_queries",
                "must be at least 1, got 0",
            ));
        }
        self.label_config().validate()?;
        self.streaming_log_q.validate()
    }

    /// The labelling rules' settings these keys describe.
    pub fn label_config(&self) -> LabelConfig {
        LabelConfig {
            click_window_s: window_s(self.click_window_days),
            view_window_s: window_s(self.view_window_days),
            click_weight: self.click_weight,
            save_weight: self.save_weight,
            conversion_kind_weights: self.conversion_kind_weights,
            value_weighting: self.value_weighting,
            hard_negatives_per_positive: self.hard_negatives_per_positive,
            seed: self.hard_negative_seed,
        }
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
    /// Training positives (examples).
    pub train_positives: usize,
    /// Of them, with engagement label 1.
    pub train_engagement_examples: usize,
    /// Of them, with conversion label 1.
    pub train_conversion_examples: usize,
    /// Of them, with a masked conversion label (impressions within the click window of the
    /// cutoff).
    pub masked_conversion_labels: usize,
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
    /// Attributed to an immature training impression: no positive comes of them.
    pub attributed_to_immature: usize,
    /// Attributed conversions at or after the window start whose impression was before it.
    /// Conversions are not filtered by the cutoff: they label the impression if it is mature.
    pub straddling_conversions: usize,
    /// Hard negatives drawn from the positive's request.
    pub hard_negatives_from_request: usize,
    /// Hard negatives drawn from the same user's impressions of the same UTC day.
    pub hard_negatives_from_same_day: usize,
    /// Training positives without any hard negative (when some were asked for).
    pub positives_without_hard_negative: usize,
    /// Conversions held out of labelling by the `last_conversion` protocol (each query's own
    /// and the user's later ones); 0 under the time protocol.
    pub held_out_conversions: usize,
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
        let rows: [(&str, String); 16] = [
            (
                "impressions (train / eval)",
                format!(
                    "{} ({} / {})",
                    self.impressions, self.train_impressions, self.eval_impressions
                ),
            ),
            ("orphan engagements", self.orphan_engagements.to_string()),
            (
                "train positives: engagement / conversion / masked",
                format!(
                    "{}: {} / {} / {}",
                    self.train_positives,
                    self.train_engagement_examples,
                    self.train_conversion_examples,
                    self.masked_conversion_labels
                ),
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
                "attributed to immature train impressions",
                self.attributed_to_immature.to_string(),
            ),
            (
                "straddling the split",
                self.straddling_conversions.to_string(),
            ),
            (
                "held out of labels (last_conversion)",
                self.held_out_conversions.to_string(),
            ),
            (
                "hard negatives: request / same day",
                format!(
                    "{} / {}",
                    self.hard_negatives_from_request, self.hard_negatives_from_same_day
                ),
            ),
            (
                "positives without a hard negative",
                self.positives_without_hard_negative.to_string(),
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

/// A training batch: B positives, each with `H` hard-negative slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Query-tower inputs, one row per positive.
    pub query: QueryFeatures,
    /// Catalog pin index of each positive (B).
    pub pins: Vec<u32>,
    /// Hard-negative slots per positive (`H`).
    pub hard_negatives_per_positive: usize,
    /// `B x H` catalog pins, row-major; an empty slot holds the row's own positive pin (a
    /// valid index whose candidate must be masked, see [`Batch::candidate_log_q`]).
    pub hard_negatives: Vec<u32>,
    /// `B x H`: whether each slot holds a drawn hard negative.
    pub hard_negative_valid: Vec<bool>,
    /// Log sampling probability of each positive's pin (B), from the dataset's estimator.
    pub log_q: Vec<f32>,
    /// `B x H`: log sampling probability of each hard negative's pin, 0 for an empty slot.
    pub hard_negative_log_q: Vec<f32>,
    /// Loss weight of each row: engagement_weight x weight_engagement + conversion_weight x
    /// weight_conversion.
    pub weight: Vec<f32>,
    /// Engagement label of each row (0 or 1).
    pub label_engagement: Vec<u8>,
    /// Conversion label of each row (1, 0, or -1 masked).
    pub label_conversion: Vec<i8>,
    /// Engagement weight of each row.
    pub weight_engagement: Vec<f32>,
    /// Conversion weight of each row.
    pub weight_conversion: Vec<f32>,
}

impl Batch {
    /// The softmax's candidates: the B positives, then the `B x H` hard-negative slots.
    pub fn candidate_pins(&self) -> Vec<u32> {
        let mut c = Vec::with_capacity(self.pins.len() + self.hard_negatives.len());
        c.extend_from_slice(&self.pins);
        c.extend_from_slice(&self.hard_negatives);
        c
    }

    /// Log q of each of [`Batch::candidate_pins`]: an empty slot gets `+inf`, so that its logit
    /// `s - log q` is `-inf` and it takes no probability mass and no gradient.
    pub fn candidate_log_q(&self) -> Vec<f32> {
        let mut q = Vec::with_capacity(self.pins.len() + self.hard_negatives.len());
        q.extend_from_slice(&self.log_q);
        q.extend(
            self.hard_negative_log_q
                .iter()
                .zip(&self.hard_negative_valid)
                .map(|(&q, &valid)| if valid { q } else { f32::INFINITY }),
        );
        q
    }
}

/// Where [`Dataset::batch`] takes its log q from: the exact training-set frequencies, or
/// streaming estimates updated batch by batch (one stream for positives, one for hard negatives).
#[derive(Clone, Debug)]
pub struct LogQEstimator {
    streaming: Option<[StreamingFrequency; 2]>,
}

impl LogQEstimator {
    /// Exact frequencies.
    pub fn exact() -> LogQEstimator {
        LogQEstimator { streaming: None }
    }

    /// Streaming estimates with these settings, starting empty.
    ///
    /// # Errors
    /// If `cfg` is invalid.
    pub fn streaming(cfg: &StreamingConfig) -> Result<LogQEstimator> {
        Ok(LogQEstimator {
            streaming: Some([StreamingFrequency::new(cfg)?, StreamingFrequency::new(cfg)?]),
        })
    }

    /// Whether this is the streaming estimate.
    pub fn is_streaming(&self) -> bool {
        self.streaming.is_some()
    }

    /// The estimator's state, for checkpoints.
    pub fn state(&self) -> LogQState {
        match &self.streaming {
            None => LogQState::Exact,
            Some([positives, negatives]) => LogQState::Streaming {
                positives: positives.state(),
                negatives: negatives.state(),
            },
        }
    }
}

/// Everything a [`LogQEstimator`] carries from batch to batch, for checkpoints (see
/// [`Dataset::log_q_estimator_from`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LogQState {
    /// Exact frequencies: no state.
    Exact,
    /// The two streaming estimates.
    Streaming {
        /// The positives' stream.
        positives: StreamingState,
        /// The hard negatives' stream.
        negatives: StreamingState,
    },
}

/// Features, training examples and eval queries of one event log.
#[derive(Clone)]
pub struct Dataset {
    /// Table sizes and dense widths.
    pub schema: FeatureSchema,
    /// Features of every catalog pin; row = position in `log.pins`.
    pub pins: PinFeatures,
    /// Training examples, in impression-row order.
    pub train: Vec<Example>,
    /// Eval queries.
    pub eval: EvalSet,
    /// Counts.
    pub stats: DatasetStats,
    history: History,
    history_len: usize,
    /// Impressions of the users with eval queries, for [`Dataset::recently_seen`].
    seen: History,
    vocab: Vocab,
    user_dense: Array2<f32>,
    pin_counts: [Vec<f32>; 2],
    log_q: Vec<f32>,
    hard_negative_log_q: Vec<f32>,
    hard_negatives_per_positive: usize,
    log_q_mode: LogQMode,
    streaming_log_q: StreamingConfig,
    pin_advertiser: Vec<u32>,
    num_advertisers: usize,
}

/// Per catalog pin, a dense index of its `advertiser_id` over the whole catalogue (indices from
/// 0 in order of first appearance in `log.pins`), and the number of distinct advertisers.
fn catalogue_advertisers(log: &EventLog) -> (Vec<u32>, usize) {
    let mut index: IdMap<i64, u32> = IdMap::default();
    let rows = log
        .pins
        .iter()
        .map(|p| {
            let next = index.len() as u32;
            *index.entry(p.advertiser_id).or_insert(next)
        })
        .collect();
    (rows, index.len())
}

fn window_s(days: f64) -> i64 {
    (days * DAY_S).round() as i64
}

/// Per catalog pin, ln of its share of `pins` (`-inf` for a pin not among them).
fn log_shares(num_pins: usize, pins: impl Iterator<Item = u32>) -> Vec<f32> {
    let mut counts = vec![0u64; num_pins];
    let mut total = 0u64;
    for p in pins {
        counts[p as usize] += 1;
        total += 1;
    }
    let total = total.max(1) as f64;
    counts
        .iter()
        .map(|&c| (c as f64 / total).ln() as f32)
        .collect()
}

/// What the protocol decided: which impressions train, which log labels them, at what cutoff.
struct Split {
    train_mask: Vec<bool>,
    /// The log without held-out conversions (`None`: the log itself labels).
    label_log: Option<EventLog>,
    cutoff: i64,
    held_out: Option<HeldOut>,
}

impl Split {
    fn time(log: &EventLog, window_start: i64) -> Split {
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

    fn last_conversion(log: &EventLog, r: &Resolved, cfg: &DatasetConfig) -> Split {
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

impl Dataset {
    /// Builds the dataset under `cfg.eval_protocol` ([`EvalProtocol`]). Time: the last
    /// `eval_window_days` of impressions are the eval window; [`label`](crate::label) runs on
    /// the impressions before it, with the window's start as the maturity cutoff, to make the
    /// training examples and their hard negatives (drawn from training impressions only).
    /// `last_conversion`: each user's last conversion and last engagement are the queries and
    /// [`label`](crate::label) runs on the user's impressions before the first of them, without
    /// the conversions from there on. Dictionaries come from the training impressions only.
    /// `true_conversions` (synthetic only, time protocol) fills
    /// [`EvalQueries::relevant_clean`] for the conversion task.
    pub fn build(
        log: &EventLog,
        true_conversions: Option<&[Conversion]>,
        cfg: &DatasetConfig,
    ) -> Result<Dataset> {
        cfg.validate()?;
        let r = Resolved::new(log)?;
        let imps = &log.impressions;
        let window_end = imps.ts.iter().copied().max().unwrap_or(0);
        let window_start = window_end - window_s(cfg.eval_window_days);
        let split = match cfg.eval_protocol {
            EvalProtocol::Time => Split::time(log, window_start),
            EvalProtocol::LastConversion => Split::last_conversion(log, &r, cfg),
        };
        let train_mask = &split.train_mask;

        let (vocab, pins) = Vocab::build(log, &r, train_mask);
        let user_dense = standardise(log.users.len(), log.user_dense_names.len(), |i, j| {
            log.users[i].dense[j]
        });
        let schema = vocab.schema(log.user_dense_names.len(), log.pin_dense_names.len());

        let label_log = split.label_log.as_ref().unwrap_or(log);
        let labelled = label(
            label_log,
            &r.eng_impression,
            &cfg.label_config(),
            split.cutoff,
            Some(train_mask),
        )?;
        // Under the time protocol a training key's history is strictly before its second, as
        // the eval keys' is; under last_conversion file order breaks ties, as it does for them.
        let seq = |i: usize| match cfg.eval_protocol {
            EvalProtocol::Time => i64::MIN,
            EvalProtocol::LastConversion => imps.impression_id[i],
        };
        let train = examples(log, &r, &labelled, cfg, seq)?;

        let mut stats = DatasetStats::new(&labelled.stats, &vocab);
        let eval = match &split.held_out {
            None => eval_set(
                log,
                &r,
                (&labelled, train_mask),
                (window_start, window_end),
                true_conversions,
                cfg,
                &mut stats,
            ),
            Some(held_out) => {
                stats.held_out_conversions = log.conversions.len() - label_log.conversions.len();
                held_out_eval_set(log, &r, held_out, window_end, cfg, &mut stats)
            }
        };
        let pin_counts = task_counts(log.pins.len(), &train);
        let log_q = log_shares(log.pins.len(), train.iter().map(|e| e.pin));
        let hard_negative_log_q = log_shares(
            log.pins.len(),
            train
                .iter()
                .flat_map(|e| e.hard_negatives.as_slice().iter().copied()),
        );
        let seen = seen_impressions(log, &r, &eval);
        let (pin_advertiser, num_advertisers) = catalogue_advertisers(log);

        Ok(Dataset {
            schema,
            pins,
            train,
            eval,
            stats,
            history: History::new(log.users.len(), r.engagement_events),
            history_len: cfg.history_len,
            seen,
            vocab,
            user_dense,
            pin_counts,
            log_q,
            hard_negative_log_q,
            hard_negatives_per_positive: cfg.hard_negatives_per_positive,
            log_q_mode: cfg.log_q,
            streaming_log_q: cfg.streaming_log_q,
            pin_advertiser,
            num_advertisers,
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

    /// Per catalog pin (index = position in `log.pins`), its advertiser as a dense index below
    /// [`Dataset::num_advertisers`]: the whole catalogue's advertisers, numbered in order of first
    /// appearance in `log.pins`. Unlike the model's advertiser feature, advertisers unseen in
    /// training keep their own index, so evaluation can tell them apart.
    pub fn pin_advertisers(&self) -> &[u32] {
        &self.pin_advertiser
    }

    /// Distinct advertisers of the catalogue.
    pub fn num_advertisers(&self) -> usize {
        self.num_advertisers
    }

    /// Users of the log.
    pub fn num_users(&self) -> usize {
        self.user_dense.nrows()
    }

    /// Hard-negative slots per example in a batch (`hard_negatives_per_positive`).
    pub fn hard_negatives_per_positive(&self) -> usize {
        self.hard_negatives_per_positive
    }

    /// Per catalog pin, the training positives with label 1 for one task (for the popularity
    /// baseline).
    pub fn pin_counts(&self, task: Task) -> Vec<f32> {
        self.pin_counts[task.index()].clone()
    }

    /// Per catalog pin, ln of its share of all training positives (`-inf` for a pin without
    /// any): the exact sampling log-probability of in-batch candidates.
    pub fn log_q(&self) -> &[f32] {
        &self.log_q
    }

    /// Per catalog pin, ln of its share of all drawn hard negatives (`-inf` for a pin never
    /// drawn): the exact sampling log-probability of hard-negative candidates.
    pub fn hard_negative_log_q(&self) -> &[f32] {
        &self.hard_negative_log_q
    }

    /// A fresh estimator of the configured kind (`[data] log_q`), for [`Dataset::batch`].
    ///
    /// # Errors
    /// If the streaming settings are invalid (they were validated when the dataset was built).
    pub fn log_q_estimator(&self) -> Result<LogQEstimator> {
        match self.log_q_mode {
            LogQMode::Exact => Ok(LogQEstimator::exact()),
            LogQMode::Streaming => LogQEstimator::streaming(&self.streaming_log_q),
        }
    }

    /// An estimator of the configured kind continuing from `state` (saved by
    /// [`LogQEstimator::state`] in an earlier run on the same dataset).
    ///
    /// # Errors
    /// If the state is of the other kind than `[data] log_q`, or does not fit the streaming
    /// settings.
    pub fn log_q_estimator_from(&self, state: &LogQState) -> Result<LogQEstimator> {
        match (self.log_q_mode, state) {
            (LogQMode::Exact, LogQState::Exact) => Ok(LogQEstimator::exact()),
            (
                LogQMode::Streaming,
                LogQState::Streaming {
                    positives,
                    negatives,
                },
            ) => Ok(LogQEstimator {
                streaming: Some([
                    StreamingFrequency::from_state(&self.streaming_log_q, positives)?,
                    StreamingFrequency::from_state(&self.streaming_log_q, negatives)?,
                ]),
            }),
            (mode, _) => Err(Error::InvalidArgument {
                name: "log q state",
                message: format!("the saved estimator is not of the configured kind ({mode:?})"),
            }),
        }
    }

    /// The recently-seen baseline's list for `key`: distinct pins of the user's impressions
    /// strictly before the key's moment `(ts, seq)`, most recent first (within a moment, larger
    /// impression id first), at most `k`. Impressions rather than engagements, because an ad
    /// shown and not clicked is still a candidate the user knows (on trivago the earlier result
    /// lists hold the hotels a user later clicks out on; on taobao and tmall every impression is
    /// engaged or bought, so the two coincide). Held for the users of the eval queries only;
    /// any other user gets an empty list.
    pub fn recently_seen(&self, key: &QueryKey, k: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(k.min(64));
        let mut taken = IdSet::default();
        for &p in self
            .seen
            .before(key.user, key.ts, key.seq, usize::MAX)
            .iter()
            .rev()
        {
            if out.len() == k {
                break;
            }
            if taken.insert(p) {
                out.push(p);
            }
        }
        out
    }

    /// Query-tower features for these keys (history bags from events strictly before each key's
    /// moment `(ts, seq)`).
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
            for &p in self.history.before(k.user, k.ts, k.seq, self.history_len) {
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

    /// A training batch of these example indices, with `hard_negatives_per_positive` slots per
    /// row and log q from `estimator`: exact training-set frequencies, or the streaming
    /// estimates after this batch's pins are observed (positives and drawn hard negatives in
    /// their own streams, each item's share of its stream's occurrences in this batch).
    ///
    /// # Panics
    /// If an index is out of range of [`Dataset::train`].
    #[track_caller]
    pub fn batch(&self, examples: &[usize], estimator: &mut LogQEstimator) -> Batch {
        let h = self.hard_negatives_per_positive;
        let rows: Vec<&Example> = examples.iter().map(|&i| &self.train[i]).collect();
        let keys: Vec<QueryKey> = rows.iter().map(|e| e.key).collect();
        let pins: Vec<u32> = rows.iter().map(|e| e.pin).collect();
        let mut hard_negatives = Vec::with_capacity(rows.len() * h);
        let mut hard_negative_valid = Vec::with_capacity(rows.len() * h);
        for e in &rows {
            let drawn = e.hard_negatives.as_slice();
            for k in 0..h {
                hard_negatives.push(drawn.get(k).copied().unwrap_or(e.pin));
                hard_negative_valid.push(k < drawn.len());
            }
        }
        let valid_pins = || {
            hard_negatives
                .iter()
                .zip(&hard_negative_valid)
                .filter(|(_, v)| **v)
                .map(|(&p, _)| p)
        };
        let (log_q, hard_negative_log_q): (Vec<f32>, Vec<f32>) = match &mut estimator.streaming {
            None => (
                pins.iter().map(|&p| self.log_q[p as usize]).collect(),
                hard_negatives
                    .iter()
                    .zip(&hard_negative_valid)
                    .map(|(&p, &v)| {
                        if v {
                            self.hard_negative_log_q[p as usize]
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
            Some([positives, negatives]) => {
                positives.observe(pins.iter().map(|&p| u64::from(p)));
                negatives.observe(valid_pins().map(u64::from));
                let drawn = valid_pins().count();
                (
                    pins.iter()
                        .map(|&p| positives.log_q(u64::from(p), pins.len()))
                        .collect(),
                    hard_negatives
                        .iter()
                        .zip(&hard_negative_valid)
                        .map(|(&p, &v)| {
                            if v {
                                negatives.log_q(u64::from(p), drawn)
                            } else {
                                0.0
                            }
                        })
                        .collect(),
                )
            }
        };
        Batch {
            query: self.query_features(&keys),
            pins,
            hard_negatives_per_positive: h,
            hard_negatives,
            hard_negative_valid,
            log_q,
            hard_negative_log_q,
            weight: rows.iter().map(|e| e.weight).collect(),
            label_engagement: rows.iter().map(|e| u8::from(e.label_engagement)).collect(),
            label_conversion: rows.iter().map(|e| e.label_conversion).collect(),
            weight_engagement: rows.iter().map(|e| e.weight_engagement).collect(),
            weight_conversion: rows.iter().map(|e| e.weight_conversion).collect(),
        }
    }
}

/// The labelled positives as examples: query keys and catalog pins from the resolved log.
fn examples(
    log: &EventLog,
    r: &Resolved,
    labelled: &Labelled,
    cfg: &DatasetConfig,
    seq: impl Fn(usize) -> i64 + Sync,
) -> Result<Vec<Example>> {
    let imps = &log.impressions;
    (0..labelled.len())
        .into_par_iter()
        .with_min_len(1 << 12)
        .map(|k| {
            let i = labelled.impression[k] as usize;
            let mut hn = [0u32; MAX_HARD_NEGATIVES];
            let drawn = labelled.hard_negatives(k);
            for (slot, &j) in hn.iter_mut().zip(drawn) {
                *slot = r.imp_pin[j as usize];
            }
            let (we, wc) = (labelled.weight_engagement[k], labelled.weight_conversion[k]);
            Ok(Example {
                key: QueryKey {
                    user: r.imp_user[i],
                    ts: imps.ts[i],
                    seq: seq(i),
                    surface: imps.surface[i],
                    context_pin: r.imp_context[i],
                    query_id: imps.query(i),
                },
                pin: r.imp_pin[i],
                label_engagement: labelled.label_engagement[k] == 1,
                label_conversion: labelled.label_conversion[k],
                weight_engagement: we,
                weight_conversion: wc,
                weight: cfg.engagement_weight * we + cfg.conversion_weight * wc,
                hard_negatives: HardNegatives::new(&hn[..drawn.len()])?,
            })
        })
        .collect()
}

impl DatasetStats {
    /// The counts of the training part's labels and of the dictionaries; the eval counts are
    /// filled in by [`eval_set`].
    fn new(ls: &LabelStats, vocab: &Vocab) -> DatasetStats {
        DatasetStats {
            impressions: ls.impressions,
            train_impressions: ls.in_scope_impressions,
            eval_impressions: ls.impressions - ls.in_scope_impressions,
            orphan_engagements: ls.orphan_engagements,
            train_positives: ls.positives,
            train_engagement_examples: ls.engagement_positives,
            train_conversion_examples: ls.conversion_positives,
            masked_conversion_labels: ls.masked_conversion_labels,
            conversions: ls.conversions,
            attributed_click_through: ls.attributed_click_through,
            attributed_view_through: ls.attributed_view_through,
            unattributed: ls.unattributed,
            attributed_to_immature: ls.attributed_to_immature,
            hard_negatives_from_request: ls.hard_negatives_from_request,
            hard_negatives_from_same_day: ls.hard_negatives_from_same_day,
            positives_without_hard_negative: ls.positives_without_hard_negative,
            user_vocab: vocab.users,
            pin_vocab: vocab.pins,
            advertiser_vocab: vocab.advertisers,
            category_vocab: vocab.categories,
            brand_vocab: vocab.brands,
            query_vocab: vocab.queries,
            ..DatasetStats::default()
        }
    }
}

/// The eval queries of the window `[start, end]`: conversion ones from the conversions credited
/// to impressions in the window, engagement ones from the window's clicks and saves; `labelled`
/// is the training part's labels and `train_mask` says which impressions it holds. Counts the
/// unknown-id and straddling conversions and the queries into `stats`.
fn eval_set(
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
fn held_out_eval_set(
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
fn seen_impressions(log: &EventLog, r: &Resolved, eval: &EvalSet) -> History {
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

/// Per task, per catalog pin, the training examples with label 1.
fn task_counts(num_pins: usize, train: &[Example]) -> [Vec<f32>; 2] {
    let mut counts = [vec![0f32; num_pins], vec![0f32; num_pins]];
    for e in train {
        if e.label_engagement {
            counts[Task::Engagement.index()][e.pin as usize] += 1.0;
        }
        if e.label_conversion == CONVERTED_LABEL {
            counts[Task::Conversion.index()][e.pin as usize] += 1.0;
        }
    }
    counts
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
