//! The processes a run is split over: one, or the ranks of an MPI job (`convcg train
//! --distributed` under `mpirun`, with the `mpi` cargo feature).
//!
//! A data-parallel run replicates the model on every rank. Each rank builds the dataset, draws
//! the same global batches, and computes its contiguous share of each batch's rows; the model's
//! step gathers the candidates and sums the gradients ([`convcg_model::Shard`]). Rank 0 alone
//! writes the run directory; every rank takes every decision that changes what the others do
//! (stop, checkpoint) from values they all agreed on.

#[cfg(feature = "mpi")]
pub mod mpi;

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::Result;
use ndarray::Array2;

use convcg_data::PinFeatures;
use convcg_eval::{Par, TopK, exact_top_k, merge_top_k};
use convcg_model::collective::{Gathered, share};
use convcg_model::{Collective, Solo, TwoTowerModel};

use crate::run::{EMBED_CHUNK, dense_slice, pin_input};

/// The ranks of a run and this process's place among them.
#[derive(Clone, Debug)]
pub struct Ranks {
    comm: Arc<dyn Collective>,
    /// What passed between the ranks ([`Ranks::over`]).
    meter: Option<Arc<Metered>>,
}

impl Default for Ranks {
    fn default() -> Self {
        Ranks::single()
    }
}

impl Ranks {
    /// One process: no communication.
    pub fn single() -> Ranks {
        Ranks {
            comm: Arc::new(Solo),
            meter: None,
        }
    }

    /// The ranks `comm` connects, counting what passes between them ([`Ranks::traffic`]).
    pub fn over(comm: Arc<dyn Collective>) -> Ranks {
        let meter = Arc::new(Metered::new(comm));
        Ranks {
            comm: meter.clone(),
            meter: Some(meter),
        }
    }

    /// What has passed between the ranks so far (nothing for one process).
    pub fn traffic(&self) -> Traffic {
        self.meter
            .as_ref()
            .map_or_else(Traffic::default, |m| m.traffic())
    }

    /// The collective operations between the ranks.
    pub fn comm(&self) -> &Arc<dyn Collective> {
        &self.comm
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// Whether there is more than one rank.
    pub fn is_distributed(&self) -> bool {
        self.size() > 1
    }

    /// Whether this rank writes the run's files and prints its progress (rank 0).
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's contiguous share of `n` items: `n / size` each, the first `n % size` ranks
    /// one more.
    pub fn share(&self, n: usize) -> Range<usize> {
        share(n, self.size(), self.rank())
    }

    /// Whether any rank's flag is set, flag by flag, the same answer on every rank.
    pub fn any(&self, flags: &[bool]) -> Vec<bool> {
        let mut sums: Vec<f64> = flags.iter().map(|&f| f64::from(u8::from(f))).collect();
        self.comm.all_reduce_sum_f64(&mut sums);
        sums.into_iter().map(|s| s > 0.0).collect()
    }

    /// The whole corpus's top `k` for `nq` queries, from this rank's `local` top `k` of its
    /// shard, which starts at corpus row `first`: every rank's lists gathered and merged
    /// ([`merge_top_k`]). Every rank must call it with the same queries; one process gets
    /// `local` back.
    pub fn merged_top_k(&self, local: TopK, first: usize, nq: usize, k: usize) -> Result<TopK> {
        if !self.is_distributed() {
            return Ok(local);
        }
        let comm = &self.comm;
        let ids = comm.all_gather_u32(local.ids());
        let scores = comm.all_gather(local.scores());
        let offsets = comm.all_gather_u32(&[first as u32]).data;
        let parts = (0..comm.size())
            .map(|r| {
                let ids = ids.part(r);
                let k = ids.len().checked_div(nq).unwrap_or(0);
                TopK::new(k, ids.to_vec(), scores.part(r).to_vec())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merge_top_k(&parts, &offsets, k)?)
    }

    /// Rank 0's `value`, on every rank.
    pub fn leaders(&self, value: f64) -> f64 {
        let mut v = [if self.is_leader() { value } else { 0.0 }];
        self.comm.all_reduce_sum_f64(&mut v);
        v[0]
    }
}

/// A [`Collective`] that counts what passes through it: the time spent in each kind of operation
/// (waiting for the slowest rank included) and the payload bytes. For a run's report and the
/// scaling figures.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Collective>,
    stats: Mutex<Traffic>,
}

/// What a [`Metered`] collective counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    /// All-reduce calls.
    pub reduces: u64,
    /// Bytes summed by them (each call's buffer, as every rank holds it).
    pub reduce_bytes: u64,
    /// All-gather calls.
    pub gathers: u64,
    /// Bytes gathered by them (every rank's part: what each rank ends up holding).
    pub gather_bytes: u64,
    /// Seconds inside the operations.
    pub seconds: f64,
}

impl Traffic {
    /// What was counted after `earlier` was read.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            reduces: self.reduces - earlier.reduces,
            reduce_bytes: self.reduce_bytes - earlier.reduce_bytes,
            gathers: self.gathers - earlier.gathers,
            gather_bytes: self.gather_bytes - earlier.gather_bytes,
            seconds: self.seconds - earlier.seconds,
        }
    }
}

impl Metered {
    /// Counts the operations of `inner`.
    pub fn new(inner: Arc<dyn Collective>) -> Metered {
        Metered {
            inner,
            stats: Mutex::new(Traffic::default()),
        }
    }

    /// What has been counted so far.
    pub fn traffic(&self) -> Traffic {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count<T>(&self, gather: bool, op: impl FnOnce() -> (T, usize)) -> T {
        let t0 = Instant::now();
        let (out, bytes) = op();
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.seconds += t0.elapsed().as_secs_f64();
        if gather {
            s.gathers += 1;
            s.gather_bytes += bytes as u64;
        } else {
            s.reduces += 1;
            s.reduce_bytes += bytes as u64;
        }
        out
    }
}

impl Collective for Metered {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let bytes = std::mem::size_of_val(buf);
        self.count(false, || (self.inner.all_reduce_sum(buf), bytes));
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let bytes = std::mem::size_of_val(buf);
        self.count(false, || (self.inner.all_reduce_sum_f64(buf), bytes));
    }

    fn all_gather(&self, local: &[f32]) -> Gathered<f32> {
        self.count(true, || {
            let g = self.inner.all_gather(local);
            let bytes = std::mem::size_of_val(g.data.as_slice());
            (g, bytes)
        })
    }

    fn all_gather_u32(&self, local: &[u32]) -> Gathered<u32> {
        self.count(true, || {
            let g = self.inner.all_gather_u32(local);
            let bytes = std::mem::size_of_val(g.data.as_slice());
            (g, bytes)
        })
    }
}

/// The model's pin embeddings this process searches: every pin in one process; in a distributed
/// run, this rank's contiguous share of the corpus, whose exact top-k lists are merged with the
/// other ranks' into the whole corpus's ([`merge_top_k`]), so that no rank holds every pin's
/// embedding.
pub(crate) struct CorpusSearch {
    ranks: Ranks,
    /// The corpus row of this rank's first pin.
    first: usize,
    /// Pins in the whole corpus.
    total: usize,
    pins: Array2<f32>,
}

impl CorpusSearch {
    /// Embeds this rank's share of the pins of `features` with the model's pin tower.
    pub(crate) fn embed(
        model: &TwoTowerModel,
        features: &PinFeatures,
        ranks: &Ranks,
        par: Par,
    ) -> Result<CorpusSearch> {
        let mine = ranks.share(features.len());
        let pins = if ranks.is_distributed() {
            let ids: Vec<u32> = (mine.start..mine.end).map(|p| p as u32).collect();
            let input = features.select(&ids);
            model.embed_pins(&pin_input(&input)?, EMBED_CHUNK, par)?
        } else {
            model.embed_pins(&pin_input(features)?, EMBED_CHUNK, par)?
        };
        Ok(CorpusSearch {
            ranks: ranks.clone(),
            first: mine.start,
            total: features.len(),
            pins,
        })
    }

    /// Pins in the whole corpus.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// The embeddings this rank holds: every pin's in one process.
    pub(crate) fn held(&self) -> &Array2<f32> {
        &self.pins
    }

    /// The exact top `k` of the whole corpus for `queries` (row-major, the embeddings' width):
    /// every rank must call it with the same queries.
    pub(crate) fn top_k(&self, queries: &[f32], k: usize, par: Par) -> Result<TopK> {
        let d = self.pins.ncols();
        let local = exact_top_k(queries, dense_slice(&self.pins)?, d, k, par);
        self.ranks
            .merged_top_k(local, self.first, queries.len() / d, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convcg_model::collective::run_ranks;

    #[test]
    fn ranks_agree_on_flags_and_the_leaders_value() {
        let out = run_ranks(3, |comm| {
            let ranks = Ranks::over(comm);
            let r = ranks.rank();
            (
                ranks.any(&[r == 2, false]),
                ranks.leaders(7.0 + r as f64),
                ranks.is_leader(),
            )
        });
        for (r, (flags, leader_value, leader)) in out.into_iter().enumerate() {
            assert_eq!(flags, vec![true, false]);
            assert_eq!(leader_value, 7.0);
            assert_eq!(leader, r == 0);
        }
    }
}
