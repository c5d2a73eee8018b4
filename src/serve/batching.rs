//! Natural micro-batching: requests queue up while the workers are busy, and a free worker
//! takes every queued request (up to [`MAX_BATCH`]) and answers them in one pass over the pin
//! embeddings. An idle server answers a request alone, at once; a loaded one scores many queries
//! per pass, which is what makes exact search over a large catalogue affordable (one pass reads
//! every embedding from memory, whatever the number of queries). The queue is bounded: when it
//! is full a request is refused at once rather than left to wait without end.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use tokio::sync::oneshot;

use convcg_kernels::Par;

use super::engine::{Answer, Request, Retriever};

/// The most requests answered in one pass.
pub const MAX_BATCH: usize = 64;
/// Requests that may wait for a worker.
pub const QUEUE_LEN: usize = 4096;

/// One request waiting for an answer from the model it arrived under.
pub(crate) struct Job {
    pub(crate) retriever: Arc<Retriever>,
    pub(crate) request: Request,
    pub(crate) reply: oneshot::Sender<anyhow::Result<Answer>>,
}

/// The queue and its worker threads, which end when the queue is dropped.
pub(crate) struct Workers {
    queue: SyncSender<Job>,
}

/// The queue is full.
#[derive(Debug)]
pub(crate) struct Overloaded;

impl Workers {
    /// `threads` workers (at least one) on a queue of [`QUEUE_LEN`].
    pub(crate) fn start(threads: usize) -> std::io::Result<Workers> {
        let (queue, jobs) = sync_channel(QUEUE_LEN);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("retrieve-{i}"))
                .spawn(move || work(&jobs))?;
        }
        Ok(Workers { queue })
    }

    /// Queues a job, or says the queue is full.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Overloaded> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Overloaded),
        }
    }
}

/// The next batch: the first job (waiting for it), then whatever else is queued.
fn next_batch(jobs: &Mutex<Receiver<Job>>) -> Option<Vec<Job>> {
    let jobs = match jobs.lock() {
        Ok(j) => j,
        Err(poisoned) => poisoned.into_inner(),
    };
    let first = jobs.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    while let Some(mut batch) = next_batch(jobs) {
        // During a reload a batch may hold requests for two models: each is answered by its own.
        while let Some(first) = batch.first() {
            let model = Arc::clone(&first.retriever);
            let (same, rest): (Vec<Job>, Vec<Job>) = batch
                .into_iter()
                .partition(|j| Arc::ptr_eq(&j.retriever, &model));
            batch = rest;
            let (requests, replies): (Vec<Request>, Vec<_>) =
                same.into_iter().map(|j| (j.request, j.reply)).unzip();
            match model.retrieve(&requests, Par::Seq) {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // A client that went away no longer waits for its answer.
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(anyhow!("{e:#}")));
                    }
                }
            }
        }
    }
}
