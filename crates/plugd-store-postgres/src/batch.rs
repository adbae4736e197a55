//! Group commit: concurrent callers of one operation (inserts, completions) queue their requests, and
//! a task writes whatever queued meanwhile in one transaction of a few statements, so a commit (and
//! its WAL flush) and the round trips are paid once per batch, not once per request. A request alone
//! goes at once: batching adds no wait, only what queues while earlier batches are being written
//! joins the next one.

use std::future::Future;
use std::sync::Arc;

use plugd_core::store::{StoreError, StoreErrorKind};
use tokio::sync::{mpsc, oneshot, Semaphore};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The queue of one batched operation.
pub(crate) struct Batcher<Req, Resp> {
    queue: mpsc::UnboundedSender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Batcher { queue: self.queue.clone() }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the task that writes batches of at most `max` requests, at most `parallel` batches at
    /// once, each with `write` (one result per request, in order; `write` bounds its own time, since
    /// only it can tell what a timeout left behind). The task ends when the last [`Batcher`] is dropped.
    pub(crate) fn start<F, Fut>(max: usize, parallel: usize, write: F) -> Batcher<Req, Resp>
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Resp, StoreError>>> + Send + 'static,
    {
        let (queue, mut incoming) = mpsc::unbounded_channel::<(Req, Reply<Resp>)>();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(parallel.max(1)));
            while let Some(first) = incoming.recv().await {
                // While every slot is busy, requests queue up and join the next batch.
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let mut jobs = vec![first];
                while jobs.len() < max {
                    match incoming.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = jobs.into_iter().unzip();
                let count = requests.len();
                let written = write(requests);
                tokio::spawn(async move {
                    let results = written.await;
                    let results = if results.len() == count {
                        results
                    } else {
                        let e = StoreError::new(StoreErrorKind::Data, "a batch lost a result");
                        (0..count).map(|_| Err(e.clone())).collect()
                    };
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                    drop(slot);
                });
            }
        });
        Batcher { queue }
    }

    /// Queues `request` and waits for its result.
    pub(crate) async fn call(&self, request: Req) -> Result<Resp, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::new(StoreErrorKind::Closed, "the PostgreSQL store is shut down");
        self.queue.send((request, reply)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}
