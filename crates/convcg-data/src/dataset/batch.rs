//! Training batches and the query tower's features.

use ndarray::{Array2, ArrayView2, Axis};

use crate::features::{Bag, QueryFeatures};
use crate::labels::HardNegativeSlots;
use crate::schema::Surface;

use super::id_code::mean_code;
use super::vocab::Vocab;
use super::{Dataset, Example, LogQEstimator, QueryKey};

/// A training batch: B positives, each with `H` hard-negative slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Query-tower inputs, one row per positive.
    pub query: QueryFeatures,
    /// Catalog pin index of each positive (B).
    pub pins: Vec<u32>,
    /// `H` hard-negative slots per positive: catalog pins, each log q from the dataset's
    /// estimator. An empty slot's pin is a valid index whose candidate must be masked, see
    /// [`Batch::candidate_log_q`].
    pub hard_negatives: HardNegativeSlots<u32>,
    /// Log sampling probability of each positive's pin (B), from the dataset's estimator.
    pub log_q: Vec<f32>,
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
        c.extend_from_slice(self.hard_negatives.pins());
        c
    }

    /// Log q of each of [`Batch::candidate_pins`]: an empty slot gets `+inf`, so that its logit
    /// `s - log q` is `-inf` and it takes no probability mass and no gradient.
    pub fn candidate_log_q(&self) -> Vec<f32> {
        let mut q = Vec::with_capacity(self.pins.len() + self.hard_negatives.len());
        q.extend_from_slice(&self.log_q);
        q.extend(
            self.hard_negatives
                .log_q()
                .iter()
                .zip(self.hard_negatives.valid())
                .map(|(&q, &valid)| if valid { q } else { f32::INFINITY }),
        );
        q
    }
}

/// One query's parts, resolved to indices of the log's tables.
pub(crate) struct QueryParts<'a> {
    /// The user's index, or `None` for a user the log does not have.
    pub(crate) user: Option<u32>,
    pub(crate) surface: Surface,
    /// The context pin's catalogue index.
    pub(crate) context_pin: Option<u32>,
    pub(crate) query_id: Option<i64>,
    /// Catalogue indices of the recent engagements, oldest first.
    pub(crate) recent: &'a [u32],
}

/// What turns [`QueryParts`] into the query tower's inputs.
pub(crate) struct QueryTables<'a> {
    pub(crate) vocab: &'a Vocab,
    /// Standardised user features, a row per user.
    pub(crate) user_dense: ArrayView2<'a, f32>,
    /// The pins' dense features, whose last `code_cols` columns are their identity codes.
    pub(crate) pin_dense: ArrayView2<'a, f32>,
    pub(crate) code_cols: usize,
}

impl QueryTables<'_> {
    /// One row of features per query: a user the log does not have gets the out-of-vocabulary
    /// row and zero (mean) dense features.
    pub(crate) fn features<'p>(
        &self,
        parts: impl ExactSizeIterator<Item = QueryParts<'p>>,
    ) -> QueryFeatures {
        let v = self.vocab;
        let n = parts.len();
        let mut sparse: Vec<Vec<u32>> = (0..5).map(|_| Vec::with_capacity(n)).collect();
        let mut bags: [Vec<u32>; 3] = std::array::from_fn(|_| Vec::new());
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        let user_cols = self.user_dense.ncols();
        let (_, codes) = self
            .pin_dense
            .split_at(Axis(1), self.pin_dense.ncols() - self.code_cols);
        let mut dense = Array2::zeros((n, user_cols + self.code_cols));
        for (i, k) in parts.enumerate() {
            let ctx_row = k.context_pin.map_or(0, |p| v.pin_row[p as usize]);
            let ctx_category = match (k.context_pin, k.query_id) {
                (Some(p), _) => v.pin_category_row[p as usize],
                (None, Some(q)) => v.query_category_row.get(&q).copied().unwrap_or(0),
                (None, None) => 0,
            };
            sparse[0].push(k.user.map_or(0, |u| v.user_row[u as usize]));
            sparse[1].push(k.surface.index() as u32 + 1);
            sparse[2].push(ctx_row);
            sparse[3].push(ctx_category);
            sparse[4].push(
                k.query_id
                    .and_then(|q| v.query_row.get(&q).copied())
                    .unwrap_or(0),
            );
            for &p in k.recent {
                bags[0].push(v.pin_category_row[p as usize]);
                bags[1].push(v.pin_advertiser_row[p as usize]);
                bags[2].push(v.pin_row[p as usize]);
            }
            offsets.push(bags[0].len());
            let mut row = dense.row_mut(i);
            let (mut user, mut code) = row.view_mut().split_at(Axis(0), user_cols);
            if let Some(u) = k.user {
                user.assign(&self.user_dense.row(u as usize));
            }
            if let Some(code) = code.as_slice_mut() {
                mean_code(codes, k.recent, code);
            }
        }
        QueryFeatures {
            sparse,
            bags: bags
                .into_iter()
                .map(|ids| Bag {
                    ids,
                    offsets: offsets.clone(),
                })
                .collect(),
            dense,
        }
    }
}

impl Dataset {
    /// Query-tower features for these keys (history bags from events strictly before each key's
    /// moment `(ts, seq)`).
    ///
    /// # Panics
    /// If a key's user or context pin is not an index of this dataset's log.
    #[track_caller]
    pub fn query_features(&self, keys: &[QueryKey]) -> QueryFeatures {
        let tables = QueryTables {
            vocab: &self.vocab,
            user_dense: self.user_dense.view(),
            pin_dense: self.pins.dense.view(),
            code_cols: self.schema.id_code_dim,
        };
        tables.features(keys.iter().map(|k| QueryParts {
            user: Some(k.user),
            surface: k.surface,
            context_pin: k.context_pin,
            query_id: k.query_id,
            recent: self.history.before(k.user, k.ts, k.seq, self.history_len),
        }))
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
        self.batch_part(examples, estimator, |positives, negatives| {
            (positives, negatives)
        })
    }

    /// [`Dataset::batch`] of one rank's examples of a batch split over the ranks of a
    /// data-parallel run: the streaming estimates observe the whole batch's pins, as one process
    /// would. `whole` gets this rank's positives and drawn hard negatives and returns every
    /// rank's, each list in rank order (an all-gather); it is called once with streaming log q
    /// and not at all with exact frequencies.
    ///
    /// # Panics
    /// If an index is out of range of [`Dataset::train`].
    #[track_caller]
    pub fn batch_part(
        &self,
        examples: &[usize],
        estimator: &mut LogQEstimator,
        whole: impl FnOnce(Vec<u32>, Vec<u32>) -> (Vec<u32>, Vec<u32>),
    ) -> Batch {
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
                let (all_pins, all_drawn) = whole(pins.clone(), valid_pins().collect());
                positives.observe(all_pins.iter().map(|&p| u64::from(p)));
                negatives.observe(all_drawn.iter().map(|&p| u64::from(p)));
                let drawn = all_drawn.len();
                (
                    pins.iter()
                        .map(|&p| positives.log_q(u64::from(p), all_pins.len()))
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
            hard_negatives: HardNegativeSlots::new(
                h,
                hard_negatives,
                hard_negative_valid,
                hard_negative_log_q,
            ),
            log_q,
            weight: rows.iter().map(|e| e.weight).collect(),
            label_engagement: rows.iter().map(|e| u8::from(e.label_engagement)).collect(),
            label_conversion: rows.iter().map(|e| e.label_conversion).collect(),
            weight_engagement: rows.iter().map(|e| e.weight_engagement).collect(),
            weight_conversion: rows.iter().map(|e| e.weight_conversion).collect(),
        }
    }
}
