//! Sampling log-probabilities of candidates: exact frequencies, and the streaming estimate of
//! Yi et al., "Sampling-bias-corrected neural modeling for large corpus item recommendations"
//! (RecSys 2019).

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, config_error};

/// For each `(key, slot)`, writes `ln(count of key among items / items.len())` into
/// `out[slot]`: the log-probability of drawing that key from the items' own distribution.
pub(crate) fn log_shares(mut items: Vec<(i64, u32)>, out: &mut [f32]) {
    let n = items.len() as f64;
    items.par_sort_unstable();
    for run in items.chunk_by(|a, b| a.0 == b.0) {
        let v = (run.len() as f64 / n).ln() as f32;
        for &(_, slot) in run {
            out[slot as usize] = v;
        }
    }
}

/// Which sampling probabilities the training loss subtracts (`[data] log_q`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogQMode {
    /// Exact frequencies over the whole training set: a positive's pin's share of all
    /// positives, a hard negative's pin's share of all drawn hard negatives.
    #[default]
    Exact,
    /// The streaming estimate ([`StreamingFrequency`]), one stream for positives and one for
    /// hard negatives, updated batch by batch.
    Streaming,
}

/// Settings of the streaming frequency estimate (`[data.streaming_log_q]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Buckets per hash function, `1..=2^28`.
    pub buckets: usize,
    /// Learning rate `a` of the moving average of gaps, in `(0, 1]`.
    pub learning_rate: f32,
    /// Hash functions, `1..=8`; the estimate takes the largest gap over them.
    pub hashes: usize,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            buckets: 1 << 20,
            learning_rate: 0.01,
            hashes: 2,
        }
    }
}

impl StreamingConfig {
    /// Checks every value; the error names the key (in `[data]`), the value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1 << 28).contains(&self.buckets) {
            return Err(config_error(
                "streaming_log_q.buckets",
                format!("must be in 1..=268435456, got {}", self.buckets),
            ));
        }
        let a = self.learning_rate;
        if !(a.is_finite() && a > 0.0 && a <= 1.0) {
            return Err(config_error(
                "streaming_log_q.learning_rate",
                format!("must be in (0, 1], got {a}"),
            ));
        }
        if !(1..=8).contains(&self.hashes) {
            return Err(config_error(
                "streaming_log_q.hashes",
                format!("must be in 1..=8, got {}", self.hashes),
            ));
        }
        Ok(())
    }
}

/// Streaming estimate of how often each item occurs in a stream of batches (Yi et al. 2019,
/// algorithm 2), in constant memory.
///
/// Per hash function `j`, two arrays of `buckets`: `A` (the step an item hashing there was last
/// seen) and `B` (a moving average of the steps between its occurrences). At step `t` each
/// occurrence of an item updates, in every hash's bucket, `B <- (1 - a) B + a (t - A)`, then
/// `A <- t`. An item occurring `k` times in one step contributes one gap since its previous
/// step and `k - 1` gaps of 0, so `B` tends to the mean steps per occurrence and `1 / B` to the
/// expected occurrences per step; divided by the occurrences per step of the whole stream this
/// is the item's share of the stream. Taking the largest `B` over the hash functions, as the
/// paper does, keeps collisions (which only shorten gaps) from inflating the estimate.
///
/// One departure from the paper: a bucket's first occurrence at step `t` sets `B = t` (the gap
/// since the stream began), rather than `a t` from a zero start, which otherwise overstates
/// a new item's frequency for its first `~1/a` occurrences.
#[derive(Clone, Debug)]
pub struct StreamingFrequency {
    buckets: usize,
    learning_rate: f64,
    seeds: Vec<u64>,
    /// `hashes x buckets`, hash-major; 0 = never seen.
    last: Vec<u64>,
    gap: Vec<f64>,
    step: u64,
}

/// Everything a [`StreamingFrequency`] carries between steps beyond its config, for
/// checkpoints: the step count and the buckets seen so far (most are never touched in a short
/// run, so only those are kept).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamingState {
    /// Steps taken.
    pub step: u64,
    /// The touched buckets, in increasing `index` order.
    pub cells: Vec<StreamingCell>,
}

/// One touched bucket of a [`StreamingFrequency`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamingCell {
    /// Position in the hash-major `hashes x buckets` arrays.
    pub index: u64,
    /// The step an item hashing here was last seen (`1..=step`).
    pub last: u64,
    /// The moving average of steps between occurrences.
    pub gap: f64,
}

impl StreamingFrequency {
    /// The estimate's state, for checkpoints.
    pub fn state(&self) -> StreamingState {
        let cells = self
            .last
            .iter()
            .zip(&self.gap)
            .enumerate()
            .filter(|(_, (last, _))| **last != 0)
            .map(|(i, (&last, &gap))| StreamingCell {
                index: i as u64,
                last,
                gap,
            })
            .collect();
        StreamingState {
            step: self.step,
            cells,
        }
    }

    /// The estimate with settings `cfg` continuing from `state`.
    ///
    /// # Errors
    /// If `cfg` is invalid, or a cell lies outside `hashes x buckets`, was last seen at step 0
    /// or after `state.step`, or has a gap that is not a finite number >= 0.
    pub fn from_state(cfg: &StreamingConfig, state: &StreamingState) -> Result<StreamingFrequency> {
        let mut f = StreamingFrequency::new(cfg)?;
        for c in &state.cells {
            let i = usize::try_from(c.index).ok().filter(|&i| i < f.last.len());
            let ok = c.last >= 1 && c.last <= state.step && c.gap.is_finite() && c.gap >= 0.0;
            let (Some(i), true) = (i, ok) else {
                return Err(Error::InvalidArgument {
                    name: "streaming log q state",
                    message: format!(
                        "cell {} (last seen at step {}, gap {}) does not fit {} buckets x {} hashes after {} steps",
                        c.index, c.last, c.gap, cfg.buckets, cfg.hashes, state.step
                    ),
                });
            };
            f.last[i] = c.last;
            f.gap[i] = c.gap;
        }
        f.step = state.step;
        Ok(f)
    }

    /// An empty estimate (no step taken yet).
    pub fn new(cfg: &StreamingConfig) -> Result<StreamingFrequency> {
        cfg.validate()?;
        let cells = cfg
            .buckets
            .checked_mul(cfg.hashes)
            .ok_or(Error::InvalidArgument {
                name: "streaming_log_q",
                message: "buckets x hashes overflows".into(),
            })?;
        Ok(StreamingFrequency {
            buckets: cfg.buckets,
            learning_rate: f64::from(cfg.learning_rate),
            seeds: (0..cfg.hashes as u64)
                .map(|j| super::negatives::pick_hash(0x5eed_f00d, j as i64, 0))
                .collect(),
            last: vec![0; cells],
            gap: vec![0.0; cells],
            step: 0,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    fn cell(&self, j: usize, item: u64) -> usize {
        let h = super::negatives::pick_hash(self.seeds[j], item as i64, 0);
        // Multiply-shift maps the hash onto 0..buckets without a division.
        let b = ((u128::from(h) * self.buckets as u128) >> 64) as usize;
        j * self.buckets + b
    }

    /// Takes one step in which `items` occurred (in this order; repeats count each time).
    pub fn observe(&mut self, items: impl IntoIterator<Item = u64>) {
        self.step += 1;
        let t = self.step;
        let a = self.learning_rate;
        for item in items {
            for j in 0..self.seeds.len() {
                let c = self.cell(j, item);
                let since = (t - self.last[c]) as f64;
                self.gap[c] = if self.last[c] == 0 {
                    since
                } else {
                    (1.0 - a) * self.gap[c] + a * since
                };
                self.last[c] = t;
            }
        }
    }

    /// Estimated steps between occurrences of `item`: the largest over the hash functions. An
    /// item never seen gets the steps taken so far plus one (it has not occurred in them).
    pub fn steps_between(&self, item: u64) -> f64 {
        (0..self.seeds.len())
            .map(|j| {
                let c = self.cell(j, item);
                if self.last[c] == 0 {
                    (self.step + 1) as f64
                } else {
                    self.gap[c]
                }
            })
            .fold(0.0, f64::max)
    }

    /// ln of the item's estimated share of a stream of `items_per_step` occurrences per step:
    /// `-ln(B x items_per_step)`, capped at 0 (a probability of at most 1).
    pub fn log_q(&self, item: u64, items_per_step: usize) -> f32 {
        let scaled = self.steps_between(item) * items_per_step as f64;
        -(scaled.max(1.0).ln()) as f32
    }
}
