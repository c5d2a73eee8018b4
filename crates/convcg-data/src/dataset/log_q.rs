//! The sampling log-probabilities of the softmax's candidates: exact training-set shares, or
//! streaming estimates updated batch by batch.

use crate::error::{Error, Result};
use crate::labels::{LogQMode, StreamingConfig, StreamingFrequency, StreamingState};

use super::Dataset;

/// Where [`Dataset::batch`] takes its log q from: the exact training-set frequencies, or
/// streaming estimates updated batch by batch (one stream for positives, one for hard negatives).
#[derive(Clone, Debug)]
pub struct LogQEstimator {
    pub(super) streaming: Option<[StreamingFrequency; 2]>,
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

impl Dataset {
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
}

/// Per catalog pin, ln of its share of `pins` (`-inf` for a pin not among them).
pub(crate) fn log_shares(num_pins: usize, pins: impl Iterator<Item = u32>) -> Vec<f32> {
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
