//! Moving everything a store holds into another store: `plugd db copy`.
//!
//! [`Transfer`] is what a store adds to [`Store`] to be copied from and to: it exports its content
//! in pages of records that keep every key and time as stored (pending invocations keep their due
//! times, leases and attempts; callbacks and finish callbacks keep their ids), and imports such
//! pages, each in one transaction. [`copy`] moves a whole store with it, whichever the two backends.

use serde_json::Value;

use crate::store::{
    ExecuteRecord, Millis, ReportFile, Store, StoreError, StoreErrorKind, StoreFuture, StoredInvocation,
};

/// An invocation with everything that belongs to it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationRecord {
    /// The invocation and its bookkeeping, as stored.
    pub stored: StoredInvocation,
    /// Its captured logs, if any.
    pub logs: Option<String>,
    /// Its reports, oldest first.
    pub reports: Vec<Value>,
    /// The files of its reports.
    pub report_files: Vec<ReportFile>,
    /// Its executes, oldest first.
    pub executes: Vec<ExecuteRecord>,
}

/// A posted callback, consumed or not; it may precede its invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    /// Its place in the order of arrival (the key).
    pub seq: i64,
    /// The callback id of its URL.
    pub callback_id: String,
    /// Its invocation.
    pub trace_id: String,
    /// The JSON posted, as text.
    pub data: String,
    /// When it arrived.
    pub received_at: Millis,
    /// When an execute consumed it.
    pub consumed_at: Option<Millis>,
}

/// A finish callback, delivered or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Its id (the key).
    pub id: i64,
    /// The invocation that finished.
    pub trace_id: String,
    /// Where to POST.
    pub url: String,
    /// What to POST.
    pub body: String,
    /// Delivery attempts made.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_at: Millis,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<Millis>,
    /// When delivery was given up.
    pub gave_up_at: Option<Millis>,
    /// When it was enqueued.
    pub created_at: Millis,
}

/// A setting of the store, such as the callback signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingRecord {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
}

impl std::fmt::Debug for SettingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets.
        f.debug_struct("SettingRecord").field("key", &self.key).field("bytes", &self.value.len()).finish()
    }
}

/// A page of records to import, one kind at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    /// Invocations with their logs, reports, report files and executes.
    Invocations(Vec<InvocationRecord>),
    /// Callbacks.
    Callbacks(Vec<CallbackRecord>),
    /// Finish callbacks.
    Outbox(Vec<OutboxRecord>),
    /// Settings; an existing setting of the same name is replaced.
    Settings(Vec<SettingRecord>),
}

/// How much a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Invocations, finished or not.
    pub invocations: u64,
    /// Of those, the ones not finished (EMPTY, POLL or CALLBACK).
    pub pending: u64,
    /// Callbacks, consumed or not.
    pub callbacks: u64,
    /// Finish callbacks, delivered or not.
    pub outbox: u64,
    /// Report files.
    pub report_files: u64,
    /// Settings (the callback secret among them).
    pub settings: u64,
}

impl Counts {
    /// Whether the store holds no invocation, callback or finish callback (settings do not count).
    pub fn is_empty(&self) -> bool {
        self.invocations == 0 && self.callbacks == 0 && self.outbox == 0
    }
}

/// A store that can be copied from and to (both backends are).
///
/// Exports page by key (`after` is exclusive); imports keep every key, time, lease and attempt as
/// given, each page in one transaction, and fail with [`StoreErrorKind::Conflict`] on a key that
/// exists. Copy while no node serves either store.
pub trait Transfer: Store {
    /// How much the store holds.
    fn counts(&self) -> StoreFuture<'_, Counts>;

    /// Up to `limit` invocations whose trace id sorts after `after`, in trace id order.
    fn export_invocations(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<InvocationRecord>>;

    /// Up to `limit` callbacks whose `seq` is above `after`, in that order.
    fn export_callbacks(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<CallbackRecord>>;

    /// Up to `limit` finish callbacks whose id is above `after`, in that order.
    fn export_outbox(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxRecord>>;

    /// Every setting worth copying (the callback secret; not the store's own probes).
    fn export_settings(&self) -> StoreFuture<'_, Vec<SettingRecord>>;

    /// Writes `records` in one transaction.
    fn import(&self, records: Records) -> StoreFuture<'_, ()>;

    /// Deletes everything the store holds, settings included (`plugd db copy --force`).
    fn clear(&self) -> StoreFuture<'_, ()>;
}

/// Records moved per page.
pub const PAGE: usize = 200;

/// What [`copy`] has done so far, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress {
    /// What it copies now: `invocations`, `callbacks`, `finish callbacks` or `settings`.
    pub what: &'static str,
    /// Of those, how many are copied.
    pub done: u64,
    /// Of those, how many the source holds.
    pub total: u64,
}

/// `e`, naming the row it happened on: `table invocations, trace_id "...": ...`, so that a copy
/// that stops says which record to look at.
///
/// ```
/// use plugd_core::store::{StoreError, StoreErrorKind};
/// let e = plugd_core::transfer::row_error(StoreError::new(StoreErrorKind::Data, "bad"), "outbox", "id", 7);
/// assert_eq!(e.message, "table outbox, row id 7: bad");
/// ```
pub fn row_error(e: StoreError, table: &str, column: &str, key: impl std::fmt::Debug) -> StoreError {
    StoreError::new(e.kind, format!("table {table}, row {column} {key:?}: {}", e.message))
}

/// Copies everything `from` holds into `to`, page by page, calling `progress` after each page;
/// returns what was copied. Refuses a `to` that is not empty (see [`Counts::is_empty`]) unless
/// `force`, which clears it first.
pub async fn copy(
    from: &dyn Transfer,
    to: &dyn Transfer,
    force: bool,
    mut progress: impl FnMut(CopyProgress),
) -> Result<Counts, StoreError> {
    let total = from.counts().await?;
    let existing = to.counts().await?;
    if !existing.is_empty() {
        if !force {
            return Err(StoreError::new(
                StoreErrorKind::Conflict,
                format!(
                    "the target is not empty ({} invocations, {} callbacks, {} finish callbacks)",
                    existing.invocations, existing.callbacks, existing.outbox
                ),
            ));
        }
        to.clear().await?;
    } else if force {
        to.clear().await?;
    }
    let mut copied = Counts::default();

    let mut after = None;
    progress(CopyProgress { what: "invocations", done: 0, total: total.invocations });
    loop {
        let page = from.export_invocations(after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.stored.invocation.trace_id.clone());
        copied.invocations += page.len() as u64;
        copied.pending += page.iter().filter(|r| !r.stored.invocation.state.is_final()).count() as u64;
        copied.report_files += page.iter().map(|r| r.report_files.len() as u64).sum::<u64>();
        to.import(Records::Invocations(page)).await?;
        progress(CopyProgress { what: "invocations", done: copied.invocations, total: total.invocations });
    }

    let mut after = 0;
    progress(CopyProgress { what: "callbacks", done: 0, total: total.callbacks });
    loop {
        let page = from.export_callbacks(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        copied.callbacks += page.len() as u64;
        to.import(Records::Callbacks(page)).await?;
        progress(CopyProgress { what: "callbacks", done: copied.callbacks, total: total.callbacks });
    }

    let mut after = 0;
    progress(CopyProgress { what: "finish callbacks", done: 0, total: total.outbox });
    loop {
        let page = from.export_outbox(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        copied.outbox += page.len() as u64;
        to.import(Records::Outbox(page)).await?;
        progress(CopyProgress { what: "finish callbacks", done: copied.outbox, total: total.outbox });
    }

    let settings = from.export_settings().await?;
    copied.settings = settings.len() as u64;
    to.import(Records::Settings(settings)).await?;
    progress(CopyProgress { what: "settings", done: copied.settings, total: copied.settings });
    Ok(copied)
}
