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

/// Everything a [`Batcher`] carries between batches, for checkpoints: a batcher rebuilt with
/// [`Batcher::from_state`] hands out exactly the batches the saved one would have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatcherState {
    /// The current epoch's order: a permutation of `0..n`.
    pub order: Vec<usize>,
    /// Indices per batch.
    pub batch_size: usize,
    /// Position in `order` of the next batch's first index.
    pub pos: usize,
    /// The current epoch, from 0.
    pub epoch: usize,
    /// The shuffling generator's position.
    pub rng: RngState,
}

/// The position of a ChaCha8 generator: its seed, stream and word position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngState {
    /// The 32-byte key it was seeded with.
    pub seed: [u8; 32],
    /// The stream (nonce).
    pub stream: u64,
    /// 32-bit words drawn so far (ChaCha's block counter times 16, plus the index in the block).
    pub word_pos: u128,
}

impl RngState {
    /// The position of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> RngState {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator at this position.
    pub fn to_rng(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

impl Batcher {
    /// The batcher's position, for checkpoints.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            order: self.order.clone(),
            batch_size: self.batch_size,
            pos: self.pos,
            epoch: self.epoch,
            rng: RngState::of(&self.rng),
        }
    }

    /// The batcher `state` describes, checked against the `n` examples and `batch_size` of the
    /// run it continues.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the state is for another `n` or batch size, its order is
    /// not a permutation of `0..n`, or its position is past the end.
    pub fn from_state(n: usize, batch_size: usize, state: BatcherState) -> Result<Batcher> {
        let bad = |message: String| Error::InvalidArgument {
            name: "batcher state",
            message,
        };
        if state.order.len() != n || state.batch_size != batch_size {
            return Err(bad(format!(
                "saved for {} examples in batches of {}, but this run has {n} in batches of {batch_size}",
                state.order.len(),
                state.batch_size
            )));
        }
        if batch_size == 0 || batch_size > n || state.pos > n {
            return Err(bad(format!(
                "position {} (batch size {batch_size}) is outside 0..={n}",
                state.pos
            )));
        }
        let mut seen = vec![false; n];
        for &i in &state.order {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => return Err(bad(format!("the order is not a permutation of 0..{n}"))),
            }
        }
        Ok(Batcher {
            order: state.order,
            batch_size,
            pos: state.pos,
            epoch: state.epoch,
            rng: state.rng.to_rng(),
        })
    }

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
