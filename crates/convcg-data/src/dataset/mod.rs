//! Labelled examples, the time split, eval queries and batches, from any [`EventLog`].
//!
//! [`Dataset`] and its build are here; each other file holds one job:
//!
//! * `config`: [`DatasetConfig`] (the run config's `[data]` section) and [`EvalProtocol`].
//! * `example`: [`Task`], [`QueryKey`] and the labelled [`Example`]s with their
//!   [`HardNegatives`].
//! * `advertiser_rate`: engagement positives weighed by their advertiser's conversion rate.
//! * `resolve`, `split`: the log's ids as rows, and which impressions train under each protocol.
//! * `vocab`, `history`: dictionaries and pin features; the history bags.
//! * `eval`: [`EvalSet`] and its builders (the time window's queries, the held-out ones, the
//!   recently-seen baseline's impressions).
//! * `batch`: [`Batch`], [`Dataset::batch`] and [`Dataset::query_features`].
//! * `log_q`: the sampling log-probabilities, exact or streaming ([`LogQEstimator`]).
//! * `state`: [`FeatureState`], the query tower's inputs after the log's end, for serving.
//! * `stats`: [`DatasetStats`].

mod advertiser_rate;
mod batch;
mod config;
mod eval;
mod example;
mod history;
mod id_code;
mod log_q;
mod resolve;
mod split;
mod state;
mod stats;
mod vocab;

use ndarray::Array2;

use crate::error::{Result, config_error};
use crate::features::{FeatureSchema, PinFeatures};
use crate::hash::{IdMap, IdSet};
use crate::labels::{CONVERTED_LABEL, LogQMode, StreamingConfig, label};
use crate::schema::{Conversion, EventLog};
use config::window_s;
use eval::{eval_set, held_out_eval_set, seen_impressions};
use example::examples;
use history::History;
use log_q::log_shares;
use resolve::Resolved;
use split::Split;
use vocab::{Vocab, standardise};

pub use batch::Batch;
pub use config::{DatasetConfig, EvalProtocol};
pub use eval::{EvalQueries, EvalSet};
pub use example::{Example, HardNegatives, QueryKey, Task};
pub use log_q::{LogQEstimator, LogQState};
pub use state::{ColdStart, FeatureState, QueryRequest};
pub use stats::DatasetStats;

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

/// The error of a protocol that leaves no impression to train on, naming the key to change.
fn no_training_impressions(log: &EventLog, cfg: &DatasetConfig) -> crate::Error {
    let ts = &log.impressions.ts;
    let (first, last) = (
        ts.iter().copied().min().unwrap_or(0),
        ts.iter().copied().max().unwrap_or(0),
    );
    let span_days = (last - first) as f64 / 86_400.0;
    match cfg.eval_protocol {
        EvalProtocol::Time | EvalProtocol::None => config_error(
            "eval_window_days",
            format!(
                "the eval protocol leaves no training data: the eval window of {} days covers the whole log, whose impressions span {span_days:.3} days; set [data] eval_window_days below that, or eval_protocol = \"last_conversion\"",
                cfg.eval_window_days
            ),
        ),
        EvalProtocol::LastConversion => config_error(
            "eval_protocol",
            "the eval protocol leaves no training data: every impression is at or after its user's first query point (a user's last conversion or engagement), so all are held out; use eval_protocol = \"time\" on this log",
        ),
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
        // No protocol: an empty window just after the log, so every impression trains.
        let window_start = match cfg.eval_protocol {
            EvalProtocol::None => window_end.saturating_add(1),
            _ => window_end - window_s(cfg.eval_window_days),
        };
        let split = match cfg.eval_protocol {
            EvalProtocol::Time | EvalProtocol::None => Split::time(log, window_start),
            EvalProtocol::LastConversion => Split::last_conversion(log, &r, cfg),
        };
        let train_mask = &split.train_mask;
        if !train_mask.iter().any(|&t| t) {
            return Err(no_training_impressions(log, cfg));
        }

        let (vocab, mut pins) = Vocab::build(log, &r, train_mask);
        let user_dense = standardise(log.users.len(), log.user_dense_names.len(), |i, j| {
            log.users[i].dense[j]
        });
        if cfg.id_code_dim > 0 {
            let ids = log.pins.iter().map(|p| p.pin_id);
            pins.dense = id_code::append_codes(&pins.dense, ids, cfg.id_code_dim);
        }
        let schema = vocab.schema(
            log.user_dense_names.len(),
            log.pin_dense_names.len(),
            cfg.id_code_dim,
        );

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
            EvalProtocol::Time | EvalProtocol::None => i64::MIN,
            EvalProtocol::LastConversion => imps.impression_id[i],
        };
        let mut train = examples(log, &r, &labelled, cfg, seq)?;
        let (pin_advertiser, num_advertisers) = catalogue_advertisers(log);
        if cfg.advertiser_rate_prior > 0.0 {
            let factors = advertiser_rate::advertiser_factors(
                &train,
                &pin_advertiser,
                num_advertisers,
                f64::from(cfg.advertiser_rate_prior),
            );
            let task_weights = (cfg.engagement_weight, cfg.conversion_weight);
            advertiser_rate::weigh_engagement(&mut train, &pin_advertiser, &factors, task_weights);
        }

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
