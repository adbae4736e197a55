//! The persistence boundary: [`Store`] and the records it keeps.
//!
//! A store persists decisions the runtime made; it never makes them. Every state change it writes
//! comes from an [`crate::Executor::step`] (or a cancel), and every write that completes an execute is
//! fenced by the attempt number taken when the invocation was claimed, so a late writer that lost its
//! lease changes nothing.
//!
//! Times are Unix milliseconds. Callers pass their clock's `now` and only relative durations
//! otherwise (a poll interval, a lease, a retry delay), so that a store shared by several nodes
//! (PostgreSQL) can use its own clock instead, the same for every node; a store of one process
//! (SQLite) uses the `now` it is given. When an invocation runs next and what a claim carries are
//! decided by [`crate::schedule`], whichever clock the store uses.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use plugd_sdk::Callback;
use serde_json::Value;

use crate::cluster::{ClusterView, NodeInfo, Served};
use crate::{Invocation, Step, Trigger};

/// A boxed future, so that `dyn Store` works.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Unix time in milliseconds.
pub type Millis = i64;

/// `d` after `now`, saturating: a huge configured duration means "never", not an overflow.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(plugd_core::store::millis_after(1_000, Duration::from_secs(2)), 3_000);
/// assert_eq!(plugd_core::store::millis_after(1_000, Duration::MAX), i64::MAX);
/// ```
pub fn millis_after(now: Millis, d: Duration) -> Millis {
    now.saturating_add(Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}

/// An invocation as stored, with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInvocation {
    /// The invocation record.
    pub invocation: Invocation,
    /// When it was accepted.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// When it reached SUCCESS or FAIL.
    pub finish_at: Option<Millis>,
    /// When the scheduler should claim it next: a poll's due time, a callback's arrival, or the
    /// expiry of the current lease.
    pub next_run_at: Option<Millis>,
    /// Who holds the lease, while an execute runs.
    pub lease_owner: Option<String>,
    /// Until when the lease holds.
    pub lease_expires_at: Option<Millis>,
    /// Incremented by every claim: the fencing token of completions.
    pub attempt: i64,
    /// After this time the invocation fails instead of executing again.
    pub deadline_at: Option<Millis>,
    /// In state CALLBACK, when its wait for a callback runs out.
    pub callback_deadline_at: Option<Millis>,
    /// In state CALLBACK, how long that wait is (for the error that ends it).
    pub callback_timeout: Option<Duration>,
    /// The app whose credentials invoked it, when the server had credentials configured: only
    /// that app may read its logs and reports.
    pub created_by: Option<String>,
}

/// A new invocation after its first execute, as `invoke` accepts it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvocation {
    /// The invocation, with its first step applied.
    pub invocation: Invocation,
    /// Now.
    pub now: Millis,
    /// In state POLL, how long until the next execute.
    pub poll_after: Option<Duration>,
    /// The runtime's limit on the whole life of the invocation, if configured.
    pub deadline: Option<Duration>,
    /// Log lines of the first execute.
    pub logs: String,
    /// Reports of the first execute, as stored (JSON objects).
    pub reports: Vec<Value>,
    /// The files of those reports.
    pub report_files: Vec<ReportFile>,
    /// The calling app, when known (see [`StoredInvocation::created_by`]).
    pub created_by: Option<String>,
    /// In state CALLBACK, how long to wait for a callback (see [`Step::callback_timeout`]).
    pub callback_timeout: Option<Duration>,
    /// How long the first execute ran (for the timeline, see [`Store::executes`]).
    pub duration: Duration,
}

/// An invocation claimed for one execute, with what triggers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The invocation, as claimed (its `attempt` is the fencing token).
    pub stored: StoredInvocation,
    /// When it was due: the poll time, or the arrival of the callback (for lateness metrics).
    pub due_at: Millis,
    /// When it was claimed, by the store's clock (the `now` of limits and lateness).
    pub claimed_at: Millis,
    /// A poll, or the oldest callback not yet consumed.
    pub trigger: Trigger,
}

/// A finish callback to deliver: POST `body` to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishCallback {
    /// The calling system's URL (`plugin_callback_info.url`).
    pub url: String,
    /// The JSON body (`plugin_callback_info.data`).
    pub body: String,
}

/// The result of a claimed execute, written only if the claim still holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The invocation.
    pub trace_id: String,
    /// The attempt of the claim.
    pub attempt: i64,
    /// What the execute decided.
    pub step: Step,
    /// Now.
    pub now: Millis,
    /// The callback the execute consumed, if it was a callback run.
    pub consumed_callback: Option<String>,
    /// Log lines of this execute.
    pub logs: String,
    /// A finish callback to enqueue, when the invocation ended and asked for one.
    pub finish_callback: Option<FinishCallback>,
    /// Reports of this execute, as stored (JSON objects).
    pub reports: Vec<Value>,
    /// The files of those reports.
    pub report_files: Vec<ReportFile>,
    /// How long the execute ran (for the timeline, see [`Store::executes`]).
    pub duration: Duration,
}

/// One file of a report, kept in the store so that any node serves it.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportFile {
    /// Its path below the invocation's reports, as listed in a report's `html` (`2-1/index.html`).
    pub path: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

impl std::fmt::Debug for ReportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportFile").field("path", &self.path).field("bytes", &self.content.len()).finish()
    }
}

/// What happened to a posted callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackReceipt {
    /// Kept; delivered when the invocation waits for a callback (now or once its state commits).
    Accepted,
    /// The same post as the last one accepted on this callback URL (a third party retrying after a
    /// lost reply): nothing changed.
    AlreadyReceived,
    /// The invocation already ended in this state: nothing changed.
    Finished(plugd_sdk::State),
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The invocation was pending and is now FAIL.
    Cancelled,
    /// It had already ended in this state.
    AlreadyFinished(plugd_sdk::State),
    /// There is no such invocation.
    NotFound,
}

/// A finish callback due for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Its id.
    pub id: i64,
    /// The invocation that finished.
    pub trace_id: String,
    /// What to POST where.
    pub callback: FinishCallback,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered: done.
    Delivered,
    /// Failed: try again later.
    Retry {
        /// How long from now to try again.
        after: Duration,
        /// Why it failed.
        error: String,
    },
    /// Failed for the last time.
    GaveUp {
        /// Why it failed.
        error: String,
    },
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Invocations per state code (index 1..=5).
    pub by_state: [u64; 6],
    /// Invocations due now and not leased.
    pub due: u64,
    /// Finish callbacks waiting for delivery.
    pub outbox_pending: u64,
}

/// What a store is, for `plugd db status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Where it is, without credentials.
    pub location: String,
    /// The schema version of the database.
    pub schema_version: i64,
    /// The newest schema version this build knows (a database may be newer, see [`crate::schema`]).
    pub known_schema_version: i64,
}

/// One execute of an invocation, as its timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteRecord {
    /// What ran it: `start`, `poll` or `callback`.
    pub trigger: String,
    /// The invoke count after it.
    pub invoke_count: u32,
    /// When it started (its end less its duration).
    pub started_at: Millis,
    /// How long it ran.
    pub duration: Duration,
    /// The state it left the invocation in.
    pub state: plugd_sdk::State,
    /// In state FAIL, why.
    pub err: Option<String>,
}

/// Who reads invocations, and so which ones: the one rule of visibility, which both stores (history)
/// and the server (every route of one invocation, the panel) apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Viewer {
    /// A server without credentials, or a caller with an admin token: every invocation.
    #[default]
    Everyone,
    /// A caller with credentials: the invocations its app created, and no other. One that names no
    /// app (a gateway JWT without an `app` claim) sees none; so an invocation that no app created
    /// (such a caller's, or one from before credentials were configured) is an admin's alone.
    App(Option<String>),
}

impl Viewer {
    /// Whether this viewer may see an invocation created by `created_by`.
    ///
    /// ```
    /// use plugd_core::store::Viewer;
    /// let ci = Viewer::App(Some("ci".into()));
    /// assert!(ci.may_see(Some("ci")) && !ci.may_see(Some("bk_sops")) && !ci.may_see(None));
    /// assert!(Viewer::Everyone.may_see(None) && !Viewer::App(None).may_see(None));
    /// ```
    pub fn may_see(&self, created_by: Option<&str>) -> bool {
        match self {
            Viewer::Everyone => true,
            Viewer::App(app) => app.is_some() && app.as_deref() == created_by,
        }
    }

    /// Which invocations a store lists for it.
    pub fn visibility(&self) -> Visibility<'_> {
        match self {
            Viewer::Everyone => Visibility::Everything,
            Viewer::App(None) => Visibility::Nothing,
            Viewer::App(Some(app)) => Visibility::CreatedBy(app),
        }
    }
}

/// Which invocations a [`Viewer`] sees, as a store filters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility<'a> {
    /// None at all.
    Nothing,
    /// Every invocation.
    Everything,
    /// Those this app created.
    CreatedBy(&'a str),
}

/// Which invocations [`Store::history`] lists: all filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this plugin's.
    pub plugin: Option<String>,
    /// Only this version's.
    pub version: Option<String>,
    /// Only those in this state.
    pub state: Option<plugd_sdk::State>,
    /// Who asks: only the invocations this viewer may see.
    pub viewer: Viewer,
    /// How many to skip, newest first.
    pub offset: u64,
    /// How many to return at most.
    pub limit: u64,
}

/// An invocation as a history line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationSummary {
    /// Its trace id.
    pub trace_id: String,
    /// The plugin.
    pub plugin: String,
    /// The version.
    pub version: String,
    /// Its state.
    pub state: plugd_sdk::State,
    /// Executes so far.
    pub invoke_count: u32,
    /// Its error, in state FAIL.
    pub err: Option<String>,
    /// When it was accepted.
    pub created_at: Millis,
    /// When it ended.
    pub finish_at: Option<Millis>,
}

/// A page of [`Store::history`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The invocations, newest first.
    pub items: Vec<InvocationSummary>,
    /// How many match the query in all.
    pub total: u64,
}

/// Which background work a wake-up is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Invocations may have come due.
    Invocations,
    /// Finish callbacks were enqueued.
    Outbox,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store error ({kind:?}): {message}")]
pub struct StoreError {
    /// What kind of failure.
    pub kind: StoreErrorKind,
    /// Details, without secrets.
    pub message: String,
}

/// Kinds of [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database is busy or unreachable: retrying may help.
    Unavailable,
    /// A record could not be read or written as expected.
    Data,
    /// The insert clashes with an existing record.
    Conflict,
    /// The store is shut down.
    Closed,
    /// A write was sent, but whether it committed cannot be told now (the database went away
    /// while it was committing); the message says what to look up.
    OutcomeUnknown,
}

impl StoreError {
    /// A new error.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError { kind, message: message.into() }
    }
}

/// Where invocations live between executes.
///
/// Implementations: `plugd-store-sqlite` (embedded default) and `plugd-store-postgres` (several
/// nodes on one database). Every method is one atomic operation; `crates/plugd-store-tests` is the
/// conformance suite every implementation runs.
pub trait Store: Send + Sync + 'static {
    /// The backend, where it is, and its schema version.
    fn info(&self) -> StoreFuture<'_, StoreInfo>;

    /// The callback signing secret, created with `generate` and stored on first use.
    fn secret(&self, generate: Vec<u8>) -> StoreFuture<'_, Vec<u8>>;

    /// Records a new invocation (any state). Fails with [`StoreErrorKind::Conflict`] if the trace id exists.
    fn insert(&self, new: NewInvocation) -> StoreFuture<'_, ()>;

    /// The invocation, if it exists.
    fn get(&self, trace_id: &str) -> StoreFuture<'_, Option<StoredInvocation>>;

    /// The captured logs of the invocation, if it exists.
    fn logs(&self, trace_id: &str) -> StoreFuture<'_, Option<String>>;

    /// The reports of the invocation, oldest first, if it exists.
    fn reports(&self, trace_id: &str) -> StoreFuture<'_, Option<Vec<Value>>>;

    /// One report file of the invocation (see [`ReportFile::path`]), if it exists.
    fn report_file(&self, trace_id: &str, path: &str) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Claims up to `limit` due invocations of the pairs `served` names for `owner`, leasing each
    /// until `now + lease`; due invocations of other pairs stay due for a node that serves them.
    fn claim(
        &self,
        now: Millis,
        limit: usize,
        owner: &str,
        lease: Duration,
        served: &Served,
    ) -> StoreFuture<'_, Vec<Claim>>;

    /// Extends a held lease to `now + lease`; `false` if the claim was lost.
    fn renew(&self, trace_id: &str, attempt: i64, now: Millis, lease: Duration) -> StoreFuture<'_, bool>;

    /// Writes the result of a claimed execute; `false` (and nothing written) if the claim was lost.
    fn complete(&self, completion: Completion) -> StoreFuture<'_, bool>;

    /// Gives back a claim without executing, so the invocation runs again at `now`.
    fn release(&self, trace_id: &str, attempt: i64, now: Millis) -> StoreFuture<'_, ()>;

    /// How long from `now` until the earliest `next_run_at` of a pending invocation of the pairs
    /// `served` names (zero if past).
    fn next_due(&self, now: Millis, served: &Served) -> StoreFuture<'_, Option<Duration>>;

    /// Records that `node` is alive at `now` (its row is created on its first beat), and removes the
    /// rows of nodes dead for longer than [`crate::cluster::DEAD_NODE_KEPT`].
    fn heartbeat(&self, node: &NodeInfo, now: Millis) -> StoreFuture<'_, ()>;

    /// Records that the node stopped cleanly at `now`: it is dead at once, not after its heartbeats lapse.
    fn leave(&self, node_id: &str, now: Millis) -> StoreFuture<'_, ()>;

    /// The nodes and the due invocations by (plugin, version), by the store's clock: what
    /// `plugd db status`, the panel and `/metrics` show of a cluster.
    fn cluster(&self, now: Millis) -> StoreFuture<'_, ClusterView>;

    /// Keeps a verified callback for the invocation.
    fn add_callback(&self, trace_id: &str, callback: Callback, now: Millis) -> StoreFuture<'_, CallbackReceipt>;

    /// Fails a pending invocation with `err`, enqueuing `finish_callback` if given.
    fn cancel(
        &self,
        trace_id: &str,
        err: &str,
        now: Millis,
        finish_callback: Option<FinishCallback>,
    ) -> StoreFuture<'_, CancelOutcome>;

    /// Claims up to `limit` finish callbacks due at `now`, hiding them until `now + lease`.
    fn claim_outbox(&self, now: Millis, limit: usize, lease: Duration) -> StoreFuture<'_, Vec<OutboxItem>>;

    /// Records the outcome of a delivery attempt.
    fn finish_delivery(&self, id: i64, delivery: Delivery, now: Millis) -> StoreFuture<'_, ()>;

    /// How long from `now` until an undelivered finish callback is due (zero if past).
    fn next_outbox_due(&self, now: Millis) -> StoreFuture<'_, Option<Duration>>;

    /// Deletes up to `limit` invocations finished more than `keep` before `now`, with their logs,
    /// reports, report files, callbacks and delivered finish callbacks; returns the trace ids that
    /// went. Several callers at once never delete the same invocation twice.
    fn purge_finished(&self, now: Millis, keep: Duration, limit: usize) -> StoreFuture<'_, Vec<String>>;

    /// Counts for metrics.
    fn stats(&self, now: Millis) -> StoreFuture<'_, StoreStats>;

    /// Invocations matching `query`, newest first (by acceptance, then trace id), one page of them,
    /// with how many match in all: the debug panel's history.
    fn history(&self, query: HistoryQuery) -> StoreFuture<'_, HistoryPage>;

    /// The executes of the invocation, oldest first, if it exists: the debug panel's timeline.
    /// Every execute an [`Store::insert`] or a successful [`Store::complete`] recorded, with the
    /// `duration` it was given.
    fn executes(&self, trace_id: &str) -> StoreFuture<'_, Option<Vec<ExecuteRecord>>>;

    /// Whether writes reach the disk now, for readiness checks: makes a small real write and says
    /// why it failed (disk full, read-only file or directory, I/O error). A store may answer
    /// frequent calls with the result of a recent check.
    fn check_writable(&self) -> StoreFuture<'_, ()>;

    /// Completes when another process sharing the database made `what` due (a store of one process
    /// never does: its callers wake each other in memory). May complete spuriously.
    fn woken(&self, what: Wake) -> StoreFuture<'_, ()> {
        let _ = what;
        Box::pin(std::future::pending())
    }

    /// The longest a background loop sleeps without checking for due work: short where a lost
    /// wake-up from another process must cost little.
    fn max_idle(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// How long from `now` until `at`, zero if past.
pub fn until(now: Millis, at: Millis) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// The `plugin_callback_info` of a context, when the plugin enables finish callbacks.
pub fn finish_callback_of(context: &Value) -> Option<FinishCallback> {
    let info = context.get("plugin_callback_info")?;
    let url = info.get("url")?.as_str()?.to_owned();
    let data = info.get("data").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    Some(FinishCallback { url, body: data.to_string() })
}
