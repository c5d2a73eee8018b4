//! Shuffled, columnar batches of labelled positives.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

use super::{Labelled, NONE};

/// The hard negatives of a batch: `H` slots per positive, row-major, each holding a drawn hard
/// negative or empty. Both kinds of batch ([`LabelledBatch`], with the log's pin ids, and
/// [`Batch`](crate::Batch), with catalog pin indices) carry their hard negatives this way. An
/// empty slot holds its row's own positive pin, so that every slot names a pin a caller can look
/// up without a branch, and log q 0; [`valid`](Self::valid) tells the slots apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HardNegativeSlots<P> {
    per_positive: usize,
    pins: Vec<P>,
    valid: Vec<bool>,
    log_q: Vec<f32>,
}

impl<P> HardNegativeSlots<P> {
    /// `per_positive` slots per positive, with the per-slot columns given.
    pub(crate) fn new(
        per_positive: usize,
        pins: Vec<P>,
        valid: Vec<bool>,
        log_q: Vec<f32>,
    ) -> HardNegativeSlots<P> {
        debug_assert!(
            pins.len() == valid.len()
                && pins.len() == log_q.len()
                && pins.len().is_multiple_of(per_positive.max(1)),
            "unequal slot columns"
        );
        HardNegativeSlots {
            per_positive,
            pins,
            valid,
            log_q,
        }
    }

    /// Slots per positive (`H`).
    pub fn per_positive(&self) -> usize {
        self.per_positive
    }

    /// `B x H` pins, row-major; an empty slot holds its row's positive pin.
    pub fn pins(&self) -> &[P] {
        &self.pins
    }

    /// `B x H`: whether each slot holds a drawn hard negative.
    pub fn valid(&self) -> &[bool] {
        &self.valid
    }

    /// `B x H`: log sampling probability of each slot's hard negative, 0 for an empty slot.
    pub fn log_q(&self) -> &[f32] {
        &self.log_q
    }

    /// Slots (`B x H`).
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Slots holding a drawn hard negative.
    pub fn drawn(&self) -> usize {
        self.valid.iter().filter(|&&v| v).count()
    }
}

/// One batch of positives, column by column, with raw ids from the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelledBatch {
    /// The positive's user.
    pub user_id: Vec<i64>,
    /// The positive's pin.
    pub pin_id: Vec<i64>,
    /// 0 home feed, 1 related, 2 search ([`Surface::index`](crate::Surface::index)).
    pub surface: Vec<u8>,
    /// 1 if clicked or saved.
    pub label_engagement: Vec<u8>,
    /// 1, 0, or -1 (masked).
    pub label_conversion: Vec<i8>,
    /// Engagement weight.
    pub weight_engagement: Vec<f32>,
    /// Conversion weight.
    pub weight_conversion: Vec<f32>,
    /// ln of the positive's pin's share of all positives.
    pub log_q: Vec<f32>,
    /// `H` slots per row: the hard negatives' pin ids, each log q the ln of its pin's share of
    /// all drawn hard negatives.
    pub hard_negatives: HardNegativeSlots<i64>,
}

impl LabelledBatch {
    /// Rows.
    pub fn len(&self) -> usize {
        self.pin_id.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.pin_id.is_empty()
    }
}

/// The positives of `labelled` in a seeded random order (ChaCha8 from `seed`, Fisher-Yates),
/// cut into batches of `batch_size` rows; the last one holds the rest. Every column comes from
/// `labelled`'s own per-positive columns.
///
/// # Errors
/// If `batch_size` is 0, or the columns of `labelled` have unequal lengths.
pub fn batches(labelled: &Labelled, batch_size: usize, seed: u64) -> Result<Vec<LabelledBatch>> {
    if batch_size == 0 {
        return Err(Error::InvalidArgument {
            name: "batch_size",
            message: "must be at least 1, got 0".into(),
        });
    }
    check_lengths(labelled)?;
    let mut order: Vec<u32> = (0..labelled.len() as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let h = labelled.hard_negatives_per_positive;
    Ok(order
        .par_chunks(batch_size)
        .map(|rows| {
            let col = |c: &[f32]| rows.iter().map(|&k| c[k as usize]).collect::<Vec<f32>>();
            LabelledBatch {
                user_id: rows.iter().map(|&k| labelled.user_id[k as usize]).collect(),
                pin_id: rows.iter().map(|&k| labelled.pin_id[k as usize]).collect(),
                surface: rows
                    .iter()
                    .map(|&k| labelled.surface[k as usize].index() as u8)
                    .collect(),
                label_engagement: rows
                    .iter()
                    .map(|&k| labelled.label_engagement[k as usize])
                    .collect(),
                label_conversion: rows
                    .iter()
                    .map(|&k| labelled.label_conversion[k as usize])
                    .collect(),
                weight_engagement: col(&labelled.weight_engagement),
                weight_conversion: col(&labelled.weight_conversion),
                log_q: col(&labelled.log_q),
                hard_negatives: HardNegativeSlots::new(
                    h,
                    per_slot(&labelled.hard_negative_pin_id, rows, h, |p| p),
                    per_slot(&labelled.hard_negative, rows, h, |i| i != NONE),
                    per_slot(&labelled.hard_negative_log_q, rows, h, |q| q),
                ),
            }
        })
        .collect())
}

/// The `h` slots of each of `rows` (positives) in the per-slot column `column`, through `f`.
fn per_slot<T: Copy, U>(column: &[T], rows: &[u32], h: usize, f: impl Fn(T) -> U) -> Vec<U> {
    rows.iter()
        .flat_map(|&k| column[k as usize * h..(k as usize + 1) * h].iter())
        .map(|&x| f(x))
        .collect()
}

/// Checks that the per-positive columns of `labelled` have one entry per positive and the
/// per-slot ones `H` per positive.
fn check_lengths(labelled: &Labelled) -> Result<()> {
    let n = labelled.len();
    let h = labelled.hard_negatives_per_positive;
    let per_positive = [
        labelled.user_id.len(),
        labelled.pin_id.len(),
        labelled.surface.len(),
        labelled.label_engagement.len(),
        labelled.label_conversion.len(),
        labelled.weight_engagement.len(),
        labelled.weight_conversion.len(),
        labelled.log_q.len(),
    ];
    let per_slot = [
        labelled.hard_negative.len(),
        labelled.hard_negative_pin_id.len(),
        labelled.hard_negative_log_q.len(),
    ];
    if per_positive.iter().any(|&l| l != n) || per_slot.iter().any(|&l| l != n * h) {
        return Err(Error::InvalidArgument {
            name: "labelled",
            message: format!(
                "columns of unequal lengths for {n} positives with {h} hard negatives each"
            ),
        });
    }
    Ok(())
}
