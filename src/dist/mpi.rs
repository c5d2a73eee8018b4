//! [`Collective`] over MPI (the `mpi` cargo feature: rsmpi on the system's MPI library).
//!
//! MPI is started with `MPI_THREAD_SERIALIZED`: a run calls it from its worker pool's thread,
//! never from two threads at once. Sums use `MPI_Allreduce`, whose result MPI gives every rank
//! alike; gathers use `MPI_Allgatherv` after an `MPI_Allgather` of the counts.

use anyhow::{Result, bail};
use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence};

use convcg_model::Collective;
use convcg_model::collective::Gathered;

/// The MPI library, started; dropping it finalises MPI, so hold it until the run ends.
pub struct MpiSession {
    _universe: Universe,
}

/// The world communicator's ranks. It holds only numbers: every operation names the world
/// communicator afresh, so that the handle is `Send` and `Sync`.
#[derive(Debug)]
pub struct MpiWorld {
    rank: usize,
    size: usize,
}

/// Starts MPI (once per process).
///
/// # Errors
/// If MPI was already started, or cannot give serialised calls from several threads.
pub fn start() -> Result<(MpiSession, MpiWorld)> {
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized) else {
        bail!("MPI was already started in this process");
    };
    if threading < Threading::Serialized {
        bail!(
            "this MPI library gives only {threading:?} threading; convcg needs Serialized (calls from its worker thread)"
        );
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    Ok((
        MpiSession {
            _universe: universe,
        },
        MpiWorld { rank, size },
    ))
}

/// Ends the whole MPI job after an error on this rank, so that no rank waits forever for it.
pub fn abort(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// Every rank's `local`, of any lengths, in rank order.
fn gather<T: Equivalence + Copy + Default>(size: usize, local: &[T]) -> Gathered<T> {
    let w = world();
    let mine = local.len() as i32;
    let mut counts = vec![0i32; size];
    w.all_gather_into(&mine, &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect();
    let total = counts.iter().map(|&c| c as usize).sum();
    let mut data = vec![T::default(); total];
    {
        let mut out = PartitionMut::new(&mut data[..], &counts[..], &displs[..]);
        w.all_gather_varcount_into(local, &mut out);
    }
    Gathered {
        data,
        counts: counts.iter().map(|&c| c as usize).collect(),
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let send = buf.to_vec();
        world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn all_gather(&self, local: &[f32]) -> Gathered<f32> {
        gather(self.size, local)
    }

    fn all_gather_u32(&self, local: &[u32]) -> Gathered<u32> {
        gather(self.size, local)
    }
}
