//! The labelled examples: the query side of a positive, its pin, labels, weights and hard
//! negatives.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::labels::{Labelled, MAX_HARD_NEGATIVES};
use crate::schema::{EventLog, Surface};

use super::DatasetConfig;
use super::resolve::Resolved;

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

/// The labelled positives as examples: query keys and catalog pins from the resolved log.
pub(crate) fn examples(
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
