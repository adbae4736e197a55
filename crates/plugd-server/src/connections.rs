//! The open connections, and which to close when the cap is reached: the one that has waited longest
//! without a request under way (a half-sent request head, an idle keep-alive). Without it, a client
//! that opens `--max-connections` connections and sends half a request on each holds every slot
//! until the header deadline, then opens them again; with it, a newcomer takes the slot of the
//! longest-idle one, and a server busy with real requests still answers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// One open connection.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Requests under way (their answers not yet sent whole).
    in_flight: AtomicUsize,
    /// Since when no request has been under way (milliseconds, see `now_ms`); 0 while one is.
    idle_since: AtomicU64,
    /// Cancelled to close the connection.
    pub(crate) cut: CancellationToken,
}

/// The open connections of one listener.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Registers a new connection, idle from now; it is forgotten when the returned guard drops.
    pub(crate) fn open(self: &Arc<Self>) -> (Arc<Slot>, Registered) {
        let slot = Arc::new(Slot {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
            cut: CancellationToken::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, slot.clone());
        (slot, Registered { connections: self.clone(), id })
    }

    /// Closes the connection idle the longest, if one is: whether one was.
    pub(crate) fn close_longest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let idle = open
            .values()
            .filter(|slot| !slot.cut.is_cancelled())
            .filter_map(|slot| match slot.idle_since.load(Ordering::Relaxed) {
                0 => None,
                since => Some((since, slot)),
            })
            .min_by_key(|(since, _)| *since);
        match idle {
            Some((_, slot)) => {
                slot.cut.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes its connection from [`Connections`] when dropped.
pub(crate) struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// A request under way on a connection, from its call until its answer's body is sent (or dropped).
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Busy {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        slot.idle_since.store(0, Ordering::Relaxed);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }
}

/// An answer's body that keeps its request counted as under way, and its bytes counted against the
/// memory budget of answers, until it is sent.
struct Counted {
    body: Body,
    _busy: Busy,
    _held: Option<OwnedSemaphorePermit>,
}

/// Answers at least this large count against [`Answers`]' budget while they are being sent.
const LARGE_ANSWER: u64 = 64 * 1024;

/// The memory that answers being sent may hold at once (`--max-answer-memory`): a client that asks
/// for large answers (an invocation, a report file) and reads them slowly or not at all holds their
/// bytes until it has them. Counted in KiB.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    budget: Arc<Semaphore>,
    /// The budget, in KiB.
    kib: u32,
    max_bytes: usize,
}

impl Answers {
    pub(crate) fn new(max_bytes: usize) -> Answers {
        let kib = u32::try_from(max_bytes / 1024).unwrap_or(u32::MAX).min(Semaphore::MAX_PERMITS as u32).max(1);
        Answers { budget: Arc::new(Semaphore::new(kib as usize)), kib, max_bytes }
    }

    /// A share of the budget for an answer of `bytes` (an answer larger than the whole budget takes
    /// all of it), or the 503 that replaces it.
    fn hold(&self, bytes: u64) -> Result<Option<OwnedSemaphorePermit>, Response<Body>> {
        if bytes < LARGE_ANSWER {
            return Ok(None);
        }
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).min(self.kib);
        match self.budget.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                let message = format!(
                    "the server holds {} MiB of answers being sent, its most (--max-answer-memory): retry later",
                    self.max_bytes >> 20
                );
                Err(crate::wire::fail(axum::http::StatusCode::SERVICE_UNAVAILABLE, &message, None))
            }
        }
    }
}

impl HttpBody for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// `inner`, with each request counted on `slot` while it is under way, and large answers held
/// within `answers`' budget.
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    pub(crate) slot: Arc<Slot>,
    pub(crate) answers: Answers,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.slot.clone());
        let answer = self.inner.call(request);
        let answers = self.answers.clone();
        Box::pin(async move {
            let response = answer.await?;
            let held = match response.body().size_hint().exact().map(|bytes| answers.hold(bytes)) {
                // A small answer of known size is as good as sent (hyper buffers it whole): the
                // request is over now, and the body needs no wrapping (the common case, kept cheap).
                Some(Ok(None)) => return Ok(response),
                None => None,
                Some(Ok(held)) => held,
                Some(Err(refused)) => return Ok(refused),
            };
            Ok(response.map(|body| Body::new(Counted { body, _busy: busy, _held: held })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_answers_share_a_budget_small_ones_do_not_count() {
        let answers = Answers::new(1024 * 1024);
        assert!(answers.hold(60 * 1024).unwrap().is_none(), "a small answer is not counted");
        let first = answers.hold(900 * 1024).unwrap().expect("held");
        let refused = answers.hold(200 * 1024).unwrap_err();
        assert_eq!(refused.status(), 503);
        assert!(answers.hold(1000).unwrap().is_none(), "small answers still pass");
        drop(first);
        let whole = answers.hold(5 * 1024 * 1024).unwrap().expect("larger than the budget: all of it");
        assert!(answers.hold(64 * 1024).is_err());
        drop(whole);
        assert!(answers.hold(64 * 1024).unwrap().is_some());
    }

    #[test]
    fn the_longest_idle_goes_first_and_busy_ones_stay() {
        let connections = Arc::new(Connections::default());
        let (oldest, _a) = connections.open();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (busy, _b) = connections.open();
        let (newer, _c) = connections.open();
        let request = Busy::new(busy.clone());
        // The oldest is busy too, for a while: the newer idle one goes.
        let held = Busy::new(oldest.clone());
        assert!(connections.close_longest_idle());
        assert!(newer.cut.is_cancelled() && !oldest.cut.is_cancelled() && !busy.cut.is_cancelled());
        drop(held);
        assert!(connections.close_longest_idle(), "idle again, from now");
        assert!(oldest.cut.is_cancelled());
        assert!(!connections.close_longest_idle(), "only a busy one is left");
        drop(request);
        assert!(connections.close_longest_idle());
    }
}
