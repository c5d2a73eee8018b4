//! Seeded, shuffled batches of example indices.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Seeded shuffled batches of example indices; reshuffles at each epoch; only full batches
/// (so every batch has exactly batch_size rows); deterministic for (n, batch_size, seed).
///
/// The `n % batch_size` examples left at the end of an epoch's order are skipped in that
/// epoch; the reshuffle gives them their chance in the next.
#[derive(Clone, Debug)]
pub struct Batcher {
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
    epoch: usize,
    rng: ChaCha8Rng,
}

impl Batcher {
    /// Batches of `batch_size` drawn from `0..n`.
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Result<Batcher> {
        if batch_size == 0 || batch_size > n {
            return Err(Error::InvalidArgument {
                name: "batch_size",
                message: format!("must be in 1..={n} (the number of examples), got {batch_size}"),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        Ok(Batcher {
            order,
            batch_size,
            pos: 0,
            epoch: 0,
            rng,
        })
    }

    /// The next batch of exactly `batch_size` indices; starts a reshuffled epoch when the
    /// current one has no full batch left.
    pub fn next_batch(&mut self) -> &[usize] {
        if self.pos + self.batch_size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
            self.epoch += 1;
        }
        let b = &self.order[self.pos..self.pos + self.batch_size];
        self.pos += self.batch_size;
        b
    }

    /// The epoch (from 0) of the batch last returned, or of the next one before the first call.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Full batches per epoch: `n / batch_size`.
    pub fn batches_per_epoch(&self) -> usize {
        self.order.len() / self.batch_size
    }
}
