//! Shuffled, columnar batches of labelled positives.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

use super::Labelled;

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
    /// `H` per row (row-major): the hard negatives' pins, -1 where there is none.
    pub hard_negative_pin_id: Vec<i64>,
    /// ln of the positive's pin's share of all positives.
    pub log_q: Vec<f32>,
    /// `H` per row: ln of the hard negative's pin's share of all drawn hard negatives, 0 where
    /// there is none.
    pub hard_negative_log_q: Vec<f32>,
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
            let per_slot = |c: &[f32]| {
                rows.iter()
                    .flat_map(|&k| c[k as usize * h..(k as usize + 1) * h].iter().copied())
                    .collect::<Vec<f32>>()
            };
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
                hard_negative_pin_id: rows
                    .iter()
                    .flat_map(|&k| {
                        labelled.hard_negative_pin_id[k as usize * h..(k as usize + 1) * h]
                            .iter()
                            .copied()
                    })
                    .collect(),
                log_q: col(&labelled.log_q),
                hard_negative_log_q: per_slot(&labelled.hard_negative_log_q),
            }
        })
        .collect())
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
