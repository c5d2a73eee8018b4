use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use convcg_kernels::Par;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Top-k of each query: `ids[q*k..(q+1)*k]` best first (ties broken by smaller id), scores likewise.
///
/// `k` is the length actually retrieved per query, so it is already clamped to the corpus size by
/// every constructor of this crate. With `k == 0` the lists are empty and [`TopK::num_queries`]
/// is 0, whatever the number of queries asked about. The fields are private so that a `TopK`
/// from outside this crate is well formed ([`TopK::new`] checks it).
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    /// Length of every query's list.
    pub(crate) k: usize,
    /// Item ids, `k` per query, query-major.
    pub(crate) ids: Vec<u32>,
    /// Scores of `ids`, in the same layout.
    pub(crate) scores: Vec<f32>,
}

impl TopK {
    /// Lists of `k` per query: `ids[q*k..(q+1)*k]` is query `q`'s, best first, and `scores` their
    /// scores in the same layout.
    ///
    /// # Errors
    /// [`Error::MalformedTopK`] if `ids` and `scores` differ in length or are not a whole number
    /// of lists of `k` (with `k == 0`, unless both are empty).
    pub fn new(k: usize, ids: Vec<u32>, scores: Vec<f32>) -> Result<Self> {
        let top = Self { k, ids, scores };
        top.check_shape()?;
        Ok(top)
    }

    /// Lists of `k` for `n_queries` queries, every id and score zero: what an engine starts
    /// from and fills in.
    pub(crate) fn zeroed(n_queries: usize, k: usize) -> Self {
        Self {
            k,
            ids: vec![0; n_queries * k],
            scores: vec![0.0; n_queries * k],
        }
    }

    /// [`Error::MalformedTopK`] unless the fields agree: a crate-internal literal (or a test's)
    /// can break what [`TopK::new`] guarantees, so metrics check again.
    pub(crate) fn check_shape(&self) -> Result<()> {
        // `is_multiple_of(0)` holds only for 0, so k = 0 with ids left over is caught too.
        if !self.ids.len().is_multiple_of(self.k) || self.ids.len() != self.scores.len() {
            return Err(Error::MalformedTopK {
                k: self.k,
                ids: self.ids.len(),
                scores: self.scores.len(),
            });
        }
        Ok(())
    }

    /// Length of every query's list.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Every query's ids, query-major (`k` per query).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Every query's scores, in the layout of [`TopK::ids`].
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// The lists of the queries `keep`, in that order.
    ///
    /// # Panics
    /// If a query of `keep` is out of range.
    #[track_caller]
    pub fn select_rows(&self, keep: &[usize]) -> TopK {
        TopK {
            k: self.k,
            ids: keep
                .iter()
                .flat_map(|&q| self.row(q).iter().copied())
                .collect(),
            scores: keep
                .iter()
                .flat_map(|&q| self.row_scores(q).iter().copied())
                .collect(),
        }
    }

    /// Number of queries held (0 when `k == 0`).
    pub fn num_queries(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// Ids of query `q`, best first.
    ///
    /// # Panics
    /// If `q >= self.num_queries()`.
    #[track_caller]
    pub fn row(&self, q: usize) -> &[u32] {
        assert!(
            q < self.num_queries(),
            "query {q} out of range ({} queries)",
            self.num_queries()
        );
        &self.ids[q * self.k..(q + 1) * self.k]
    }

    /// Scores of query `q`, best first.
    ///
    /// # Panics
    /// If `q >= self.num_queries()`.
    #[track_caller]
    pub fn row_scores(&self, q: usize) -> &[f32] {
        assert!(
            q < self.num_queries(),
            "query {q} out of range ({} queries)",
            self.num_queries()
        );
        &self.scores[q * self.k..(q + 1) * self.k]
    }
}

/// Hands the `n_chunks` items of `chunks` out one at a time to at most `par`'s thread count of
/// workers (all on the calling thread under `Par::Seq` or with one chunk), each with its own state
/// from `state`, reused from chunk to chunk; `run` does one chunk. Which worker takes which chunk
/// varies, so `run`'s result for a chunk must not depend on the worker's history.
fn share_chunks<I, S>(
    chunks: I,
    n_chunks: usize,
    par: Par,
    state: impl Fn() -> S + Sync,
    run: impl Fn(&mut S, I::Item) + Sync,
) where
    I: Iterator + Send,
{
    let chunks = Mutex::new(chunks);
    let work = || {
        let mut own = state();
        loop {
            // A panic in another worker poisons the lock; it is re-raised by the scope anyway.
            let next = chunks.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some(chunk) = next else {
                break;
            };
            run(&mut own, chunk);
        }
    };
    match par {
        Par::Rayon(threads) if threads.get() > 1 && n_chunks > 1 => rayon::scope(|s| {
            for _ in 0..threads.get().min(n_chunks) {
                s.spawn(|_| work());
            }
        }),
        _ => work(),
    }
}

/// One chunk of queries handed out by [`share_query_chunks`]: their rows of the queries, and
/// their lists in the output.
pub(crate) struct QueryChunk<'a> {
    /// The chunk's queries, as rows of the whole query matrix.
    pub(crate) range: Range<usize>,
    /// Those rows, `[range.len(), d]`.
    pub(crate) queries: &'a [f32],
    /// Their ids in the output, `k` per query.
    pub(crate) ids: &'a mut [u32],
    /// Their scores in the output, `k` per query.
    pub(crate) scores: &'a mut [f32],
}

/// Cuts `queries` (`[nq, d]`, row-major) and `top`'s lists (`k >= 1`) into chunks of `chunk`
/// queries, and hands them out with [`share_chunks`]: to at most `par`'s thread count of workers,
/// each with its own state from `state`, `run` doing one chunk.
pub(crate) fn share_query_chunks<S>(
    queries: &[f32],
    d: usize,
    chunk: usize,
    top: &mut TopK,
    par: Par,
    state: impl Fn() -> S + Sync,
    run: impl Fn(&mut S, QueryChunk<'_>) + Sync,
) {
    let chunk = chunk.max(1);
    let n_chunks = (queries.len() / d).div_ceil(chunk);
    let k = top.k;
    let chunks = queries
        .chunks(chunk * d)
        .zip(top.ids.chunks_mut(chunk * k))
        .zip(top.scores.chunks_mut(chunk * k))
        .enumerate()
        .map(|(i, ((queries, ids), scores))| QueryChunk {
            range: i * chunk..i * chunk + queries.len() / d,
            queries,
            ids,
            scores,
        });
    share_chunks(chunks, n_chunks, par, state, run);
}

/// Splits `top`'s lists for `n_queries` queries into one contiguous range of queries per worker
/// and runs `work` on each with its ids and scores: `Par::Seq` is one range on the calling thread,
/// `Par::Rayon(n)` at most `n` ranges on the rayon pool. Ranges are whole multiples of `unit`
/// queries (except the last), so a blocked caller sees the same blocks whatever the thread count,
/// which keeps results identical across thread counts.
pub(crate) fn for_each_query_range<F>(
    n_queries: usize,
    unit: usize,
    top: &mut TopK,
    par: Par,
    work: F,
) where
    F: Fn(Range<usize>, &mut [u32], &mut [f32]) + Sync,
{
    let TopK { k, ids, scores } = top;
    let (k, ids, scores) = (*k, ids.as_mut_slice(), scores.as_mut_slice());
    let units = n_queries.div_ceil(unit);
    let workers = match par {
        Par::Seq => 1,
        Par::Rayon(n) => n.get().min(units),
    };
    if workers <= 1 {
        work(0..n_queries, ids, scores);
        return;
    }
    let mut parts = Vec::with_capacity(workers);
    let (mut ids_rest, mut scores_rest) = (ids, scores);
    for w in 0..workers {
        let start = (w * units / workers * unit).min(n_queries);
        let end = ((w + 1) * units / workers * unit).min(n_queries);
        let (ids_here, ids_tail) = ids_rest.split_at_mut((end - start) * k);
        let (scores_here, scores_tail) = scores_rest.split_at_mut((end - start) * k);
        parts.push((start..end, ids_here, scores_here));
        (ids_rest, scores_rest) = (ids_tail, scores_tail);
    }
    parts
        .into_par_iter()
        .for_each(|(range, ids, scores)| work(range, ids, scores));
}

/// Ids are `u32`, so at most `u32::MAX + 1` items can be ranked.
#[track_caller]
pub(crate) fn assert_ids_fit(n_items: usize) {
    assert!(
        n_items == 0 || u32::try_from(n_items - 1).is_ok(),
        "{n_items} items do not fit u32 ids"
    );
}
