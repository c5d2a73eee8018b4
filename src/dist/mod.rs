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
use std::sync::Arc;

use convcg_model::collective::share;
use convcg_model::{Collective, Solo};

/// The ranks of a run and this process's place among them.
#[derive(Clone, Debug)]
pub struct Ranks {
    comm: Arc<dyn Collective>,
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
        }
    }

    /// The ranks `comm` connects.
    pub fn over(comm: Arc<dyn Collective>) -> Ranks {
        Ranks { comm }
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

    /// Rank 0's `value`, on every rank.
    pub fn leaders(&self, value: f64) -> f64 {
        let mut v = [if self.is_leader() { value } else { 0.0 }];
        self.comm.all_reduce_sum_f64(&mut v);
        v[0]
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
