//! The collective operations a data-parallel training step needs, as a trait, so that the model
//! knows nothing of the engine that moves the bytes.
//!
//! A step split over N ranks gathers every rank's candidate embeddings (so each row's softmax
//! sees the global batch's candidates, as one process would), sums their gradients back, and
//! sums the parameters' gradients: [`Collective`] is exactly those operations. The trainer
//! implements it over MPI (behind its `mpi` feature); [`Solo`] is the one-process group and
//! [`LocalGroup`] runs N ranks as threads of one process, which is how the model's tests check
//! that N ranks compute what one process does.
//!
//! Every rank must call the same operations in the same order, as with MPI itself.

use std::fmt;
use std::sync::{Arc, Barrier, Mutex, PoisonError};

/// Collective operations over a fixed group of ranks.
///
/// Sums must give every rank the same bits (the parameters of the ranks then stay identical);
/// gathers concatenate in rank order.
pub trait Collective: Send + Sync + fmt::Debug {
    /// This rank, in `0..size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// Replaces `buf` by the element-wise sum of every rank's `buf` (all of the same length).
    fn all_reduce_sum(&self, buf: &mut [f32]);

    /// [`Collective::all_reduce_sum`] in f64, for counters and weight totals.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);

    /// Every rank's `local` (lengths may differ), concatenated in rank order, with each rank's
    /// length.
    fn all_gather(&self, local: &[f32]) -> Gathered<f32>;

    /// [`Collective::all_gather`] of ids.
    fn all_gather_u32(&self, local: &[u32]) -> Gathered<u32>;
}

/// What an all-gather returns: every rank's values in rank order, and how many each gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Gathered<T> {
    /// The values, rank 0's first.
    pub data: Vec<T>,
    /// The number of values from each rank.
    pub counts: Vec<usize>,
}

impl<T: Copy> Gathered<T> {
    /// Rank `r`'s values.
    pub fn part(&self, r: usize) -> &[T] {
        let start: usize = self.counts[..r].iter().sum();
        &self.data[start..start + self.counts[r]]
    }
}

/// How a gathered batch is laid out: every rank holds its rows as the same sequence of
/// segments (a training batch's positives, hard negatives, corpus negatives), and the global
/// batch is segment by segment, each segment in rank order, so that with every rank's rows of a
/// batch in rank order it is the batch one process would have built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentLayout {
    /// `lens[r][s]`: rank `r`'s rows in segment `s`.
    lens: Vec<Vec<usize>>,
}

impl SegmentLayout {
    /// The layout of every rank's `segments` (its row count per segment), gathered.
    ///
    /// # Panics
    /// If the ranks hold different numbers of segments.
    pub fn gather(comm: &dyn Collective, segments: &[usize]) -> SegmentLayout {
        let local: Vec<u32> = segments.iter().map(|&n| n as u32).collect();
        let all = comm.all_gather_u32(&local);
        assert!(
            all.counts.iter().all(|&c| c == segments.len()),
            "ranks split their rows into different numbers of segments: {:?}",
            all.counts
        );
        SegmentLayout {
            lens: (0..comm.size())
                .map(|r| all.part(r).iter().map(|&n| n as usize).collect())
                .collect(),
        }
    }

    /// Rows of the global batch.
    pub fn rows(&self) -> usize {
        self.lens.iter().flatten().sum()
    }

    /// Rank `r`'s rows.
    pub fn rank_rows(&self, r: usize) -> usize {
        self.lens[r].iter().sum()
    }

    /// Where rank `r`'s rows of segment `s` start in the global batch.
    pub fn global_start(&self, r: usize, s: usize) -> usize {
        let earlier_segments: usize = self.lens.iter().map(|l| l[..s].iter().sum::<usize>()).sum();
        let earlier_ranks: usize = self.lens[..r].iter().map(|l| l[s]).sum();
        earlier_segments + earlier_ranks
    }

    /// The global batch from every rank's rows of `width` values, concatenated in rank order
    /// (an all-gather's output).
    pub fn arrange<T: Copy>(&self, by_rank: &[T], width: usize) -> Vec<T> {
        assert_eq!(by_rank.len(), self.rows() * width, "rows to arrange");
        let mut out = Vec::with_capacity(by_rank.len());
        for s in 0..self.lens.first().map_or(0, Vec::len) {
            for r in 0..self.lens.len() {
                let rank_start: usize = (0..r).map(|q| self.rank_rows(q)).sum();
                let start = rank_start + self.lens[r][..s].iter().sum::<usize>();
                out.extend_from_slice(&by_rank[start * width..(start + self.lens[r][s]) * width]);
            }
        }
        out
    }

    /// Rank `r`'s own rows of the global batch `global`, in its local order, into `out`.
    pub fn own_rows<T: Copy>(&self, global: &[T], r: usize, width: usize, out: &mut [T]) {
        assert_eq!(global.len(), self.rows() * width, "global rows");
        assert_eq!(out.len(), self.rank_rows(r) * width, "own rows");
        let mut at = 0;
        for (s, &len) in self.lens[r].iter().enumerate() {
            let g = self.global_start(r, s) * width;
            out[at..at + len * width].copy_from_slice(&global[g..g + len * width]);
            at += len * width;
        }
    }
}

/// Rank `rank`'s contiguous share of `n` items split over `size` ranks: `n / size` each, the
/// first `n % size` ranks one more, in rank order.
pub fn share(n: usize, size: usize, rank: usize) -> std::ops::Range<usize> {
    let start = |r: usize| r * (n / size) + r.min(n % size);
    start(rank)..start(rank + 1)
}

/// The group of one: every operation is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _buf: &mut [f32]) {}

    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}

    fn all_gather(&self, local: &[f32]) -> Gathered<f32> {
        Gathered {
            data: local.to_vec(),
            counts: vec![local.len()],
        }
    }

    fn all_gather_u32(&self, local: &[u32]) -> Gathered<u32> {
        Gathered {
            data: local.to_vec(),
            counts: vec![local.len()],
        }
    }
}

/// One rank of a group of threads in one process: what the ranks of an MPI job would do, with
/// shared memory in place of messages. Sums add the ranks' values in rank order, so every
/// rank gets the same bits.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Exchange>,
}

/// The board the ranks of a [`LocalGroup`] post their values on.
struct Exchange {
    size: usize,
    slots: Mutex<Vec<Payload>>,
    barrier: Barrier,
}

/// One rank's contribution to an operation.
#[derive(Clone, Default)]
enum Payload {
    #[default]
    Empty,
    F32(Vec<f32>),
    F64(Vec<f64>),
    U32(Vec<u32>),
}

impl LocalGroup {
    /// The `n` ranks of a new group, rank `r` at index `r`; give each to its own thread.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn new(n: usize) -> Vec<LocalGroup> {
        assert!(n > 0, "a group needs at least one rank");
        let shared = Arc::new(Exchange {
            size: n,
            slots: Mutex::new(vec![Payload::Empty; n]),
            barrier: Barrier::new(n),
        });
        (0..n)
            .map(|rank| LocalGroup {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// Posts this rank's payload, waits for every rank's, and returns them all in rank order.
    fn exchange(&self, mine: Payload) -> Vec<Payload> {
        let lock = || {
            self.shared
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        lock()[self.rank] = mine;
        self.shared.barrier.wait();
        let all = lock().clone();
        // No rank posts its next payload before every rank has read this one.
        self.shared.barrier.wait();
        all
    }
}

impl fmt::Debug for LocalGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalGroup(rank {} of {})", self.rank, self.size())
    }
}

/// The payloads of one operation as the type it was called with.
fn as_parts<T>(all: Vec<Payload>, pick: impl Fn(Payload) -> Option<Vec<T>>) -> Vec<Vec<T>> {
    all.into_iter()
        .map(|p| {
            pick(p).unwrap_or_else(|| panic!("the ranks called different collective operations"))
        })
        .collect()
}

/// Concatenates per-rank values in rank order.
fn concat<T: Copy>(parts: Vec<Vec<T>>) -> Gathered<T> {
    Gathered {
        counts: parts.iter().map(Vec::len).collect(),
        data: parts.concat(),
    }
}

/// Sums per-rank buffers element-wise, rank 0's first, into `out`.
fn sum_into<T: Copy + std::ops::AddAssign>(out: &mut [T], parts: &[Vec<T>]) {
    for part in parts {
        assert_eq!(
            part.len(),
            out.len(),
            "ranks sum buffers of different lengths"
        );
    }
    out.copy_from_slice(&parts[0]);
    for part in &parts[1..] {
        for (o, &v) in out.iter_mut().zip(part) {
            *o += v;
        }
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let parts = as_parts(self.exchange(Payload::F32(buf.to_vec())), |p| match p {
            Payload::F32(v) => Some(v),
            _ => None,
        });
        sum_into(buf, &parts);
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let parts = as_parts(self.exchange(Payload::F64(buf.to_vec())), |p| match p {
            Payload::F64(v) => Some(v),
            _ => None,
        });
        sum_into(buf, &parts);
    }

    fn all_gather(&self, local: &[f32]) -> Gathered<f32> {
        concat(as_parts(
            self.exchange(Payload::F32(local.to_vec())),
            |p| match p {
                Payload::F32(v) => Some(v),
                _ => None,
            },
        ))
    }

    fn all_gather_u32(&self, local: &[u32]) -> Gathered<u32> {
        concat(as_parts(
            self.exchange(Payload::U32(local.to_vec())),
            |p| match p {
                Payload::U32(v) => Some(v),
                _ => None,
            },
        ))
    }
}

/// Runs `f` once per rank of a [`LocalGroup`] of `n`, each on its own thread, and returns the
/// results in rank order.
///
/// # Panics
/// If a rank panics (the panic is resumed here).
pub fn run_ranks<T: Send>(n: usize, f: impl Fn(Arc<dyn Collective>) -> T + Sync) -> Vec<T> {
    let ranks = LocalGroup::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|rank| {
                let f = &f;
                s.spawn(move || f(Arc::new(rank)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_group_sums_and_gathers_in_rank_order() {
        let out = run_ranks(3, |c| {
            let r = c.rank();
            let mut sum = vec![r as f32, 1.0];
            c.all_reduce_sum(&mut sum);
            let mut total = [0.5 * r as f64];
            c.all_reduce_sum_f64(&mut total);
            let local: Vec<f32> = (0..r).map(|i| (10 * r + i) as f32).collect();
            let gathered = c.all_gather(&local);
            let ids = c.all_gather_u32(&[r as u32; 2]);
            (c.size(), sum, total[0], gathered, ids)
        });
        for (size, sum, total, gathered, ids) in out {
            assert_eq!(size, 3);
            assert_eq!(sum, vec![3.0, 3.0]);
            assert_eq!(total, 1.5);
            assert_eq!(gathered.data, vec![10.0, 20.0, 21.0]);
            assert_eq!(gathered.counts, vec![0, 1, 2]);
            assert_eq!(gathered.part(2), &[20.0, 21.0]);
            assert_eq!(ids.data, vec![0, 0, 1, 1, 2, 2]);
        }
    }

    /// Two ranks holding [positives, negatives] of 2 + 3 and 1 + 2 rows: the global batch is
    /// both ranks' positives, then both ranks' negatives, and each rank's rows come back.
    #[test]
    fn a_segment_layout_puts_each_segment_in_rank_order() {
        let out = run_ranks(2, |c| {
            let local: Vec<f32> = match c.rank() {
                0 => vec![0.0, 0.1, 0.2, 0.3, 0.4],
                _ => vec![1.0, 1.2, 1.3],
            };
            let segments = if c.rank() == 0 { [2, 3] } else { [1, 2] };
            let layout = SegmentLayout::gather(&*c, &segments);
            let global = layout.arrange(&c.all_gather(&local).data, 1);
            let mut own = vec![0.0; local.len()];
            layout.own_rows(&global, c.rank(), 1, &mut own);
            assert_eq!(own, local);
            (global, layout.global_start(c.rank(), 1))
        });
        let want = vec![0.0, 0.1, 1.0, 0.2, 0.3, 0.4, 1.2, 1.3];
        assert_eq!(out, vec![(want.clone(), 3), (want, 6)]);
    }

    #[test]
    fn shares_cover_every_item_once_in_rank_order() {
        for (n, size) in [(10, 3), (2, 4), (0, 2), (7, 1), (2048, 2)] {
            let all: Vec<usize> = (0..size).flat_map(|r| share(n, size, r)).collect();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "{n} over {size}");
            let lens: Vec<usize> = (0..size).map(|r| share(n, size, r).len()).collect();
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn solo_is_the_identity() {
        let mut buf = [1.0f32, 2.0];
        Solo.all_reduce_sum(&mut buf);
        assert_eq!(buf, [1.0, 2.0]);
        let g = Solo.all_gather(&buf);
        assert_eq!((g.data, g.counts), (vec![1.0, 2.0], vec![2]));
        assert_eq!((Solo.rank(), Solo.size()), (0, 1));
    }
}
