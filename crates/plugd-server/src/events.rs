//! Event streams of invocations (the panel's live view): a cap on how many are open, and on one
//! app's share of them, and one watch per watched invocation, which reads the store once per change
//! (when this node records one, when another node's write wakes it, or on a slow poll) and hands the
//! snapshot to every stream of that invocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugd_core::store::Wake;
use tokio::sync::{watch, Notify};

use crate::state::AppState;

/// How often a watch reads its invocation when nothing woke it: changes of other nodes whose
/// wake-up was lost, retention.
const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// What a watch hands its streams: the invocation's snapshot, already serialized, whether it is
/// final, and what changes when it must be sent again. `None` once it is gone or unreadable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// Changes whenever the invocation page must be redrawn.
    pub(crate) seen: (i64, u8, u32, bool),
    /// Whether the invocation is final (the stream's last event).
    pub(crate) last: bool,
    /// The JSON of `GET /ui/api/invocations/{trace_id}`'s data.
    pub(crate) json: Arc<str>,
}

type Latest = Option<Arc<Snapshot>>;

struct Watch {
    changed: Notify,
    latest: watch::Sender<Latest>,
}

/// The open streams and the watches behind them.
pub(crate) struct EventStreams {
    max: usize,
    /// How many streams one app may hold, on a server with credentials.
    share: usize,
    open: Mutex<HashMap<String, usize>>,
    watches: Mutex<HashMap<String, Arc<Watch>>>,
}

/// One open stream; it no longer counts once dropped.
pub(crate) struct StreamPermit {
    streams: Arc<EventStreams>,
    caller: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

impl EventStreams {
    /// At most `max` streams open at once; one app at most a quarter of them.
    pub(crate) fn new(max: usize) -> EventStreams {
        EventStreams { max: max.max(1), share: (max / 4).max(1), open: Mutex::default(), watches: Mutex::default() }
    }

    /// A place for one more stream of `app` (`None`: a caller the server does not tell apart, on a
    /// server without credentials), or why there is none.
    pub(crate) fn open(self: &Arc<Self>, app: Option<&str>) -> Result<StreamPermit, String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= self.max {
            return Err(format!(
                "{total} event streams are open, the most this server keeps (--max-event-streams): poll \
                 GET /ui/api/invocations/{{trace_id}} instead"
            ));
        }
        let caller = app.map_or_else(String::new, |app| format!("app:{app}"));
        let mine = open.get(&caller).copied().unwrap_or(0);
        if app.is_some() && mine >= self.share {
            return Err(format!(
                "this app holds {mine} event streams, its share of --max-event-streams: close one, or poll \
                 GET /ui/api/invocations/{{trace_id}} instead"
            ));
        }
        *open.entry(caller.clone()).or_default() += 1;
        Ok(StreamPermit { streams: self.clone(), caller })
    }

    /// This node recorded a change of `trace_id`: its watch, if any, reads it again now.
    pub(crate) fn touch(&self, trace_id: &str) {
        if let Some(watch) = self.watches.lock().unwrap_or_else(|p| p.into_inner()).get(trace_id) {
            watch.changed.notify_one();
        }
    }

    /// The snapshots of `trace_id`, from the watch every stream of it shares (started if none runs).
    pub(crate) fn subscribe(self: &Arc<Self>, state: &AppState, trace_id: &str) -> watch::Receiver<Latest> {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(watch) = watches.get(trace_id) {
            return watch.latest.subscribe();
        }
        let (latest, receiver) = watch::channel(None);
        let watch = Arc::new(Watch { changed: Notify::new(), latest });
        watches.insert(trace_id.to_owned(), watch.clone());
        tokio::spawn(run(self.clone(), state.clone(), trace_id.to_owned(), watch));
        receiver
    }
}

/// Reads the invocation whenever it may have changed and hands a new snapshot to the streams; ends
/// when no stream listens, or the invocation is final, gone or unreadable.
async fn run(streams: Arc<EventStreams>, state: AppState, trace_id: String, watch: Arc<Watch>) {
    loop {
        let snapshot = match state.store.get(&trace_id).await {
            Ok(Some(stored)) => crate::api::panel_snapshot(&state, &stored).await,
            Ok(None) | Err(_) => None,
        };
        let last = snapshot.as_ref().is_none_or(|s| s.last);
        watch.latest.send_if_modified(|latest| {
            let changed = latest.as_deref().map(|s| s.seen) != snapshot.as_ref().map(|s| s.seen) || snapshot.is_none();
            if changed {
                *latest = snapshot.map(Arc::new);
            }
            changed
        });
        if last {
            break;
        }
        tokio::select! {
            () = watch.changed.notified() => {}
            _ = state.store.woken(Wake::Invocations) => {}
            () = tokio::time::sleep(FALLBACK_POLL) => {}
            () = watch.latest.closed() => break,
        }
    }
    let mut watches = streams.watches.lock().unwrap_or_else(|p| p.into_inner());
    if watches.get(&trace_id).is_some_and(|w| Arc::ptr_eq(w, &watch)) {
        watches.remove(&trace_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_in_all_and_per_app() {
        let streams = Arc::new(EventStreams::new(8));
        let ci: Vec<StreamPermit> = (0..2).map(|_| streams.open(Some("ci")).unwrap()).collect();
        let error = streams.open(Some("ci")).err().unwrap();
        assert!(error.starts_with("this app holds 2 event streams"), "{error}");
        let open: Vec<StreamPermit> = (0..6).map(|_| streams.open(None).unwrap()).collect();
        let error = streams.open(Some("ops")).err().unwrap();
        assert!(error.starts_with("8 event streams are open"), "{error}");
        drop(ci);
        assert!(streams.open(Some("ops")).is_ok(), "a closed stream gives its place back");
        drop(open);
    }
}
