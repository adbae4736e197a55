//! The SQL of every store operation. Times come from the database (`plugd_now_ms()`); the rules
//! (when next, what a claim carries) from `plugd_core::schedule`.
//!
//! This file holds what the operations share (row reading, columns, prepared statements); each
//! submodule the operations on one part of the schema.

mod callbacks;
mod claims;
mod completions;
mod invocations;
mod nodes;
mod outbox;
mod retention;
mod settings;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use plugd_core::schedule::Plan;
use plugd_core::store::{ReportFile, StoreError, StoredInvocation};
use plugd_core::Invocation;
use plugd_sdk::State;
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::text::decode_opt;
use crate::{data_error, pg_error};

pub(crate) use callbacks::add_callback;
pub(crate) use claims::{claim, next_due, release, renew};
pub(crate) use completions::{cancel, complete_batch};
pub(crate) use invocations::{executes, get, history, insert_batch, logs, report_file, reports};
pub(crate) use nodes::{cluster, heartbeat, leave};
pub(crate) use outbox::{claim_outbox, finish_delivery, next_outbox_due};
pub(crate) use retention::purge_finished;
pub(crate) use settings::{secret, write_probe};
pub(crate) use stats::stats;

type Res<T> = Result<T, StoreError>;

/// Logs of one invocation are cut at this size.
const MAX_LOG_CHARS: i32 = 64 * 1024;

pub(crate) const COLUMNS: &str = "trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err, \
                       created_at, updated_at, finish_at, next_run_at, lease_owner, lease_expires_at, attempt, deadline_at, created_by, \
                       callback_deadline_at, callback_timeout_ms";

type PgFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// Statements prepared once per connection (deadpool's cache): a query is one round trip, not two
/// (parse, then bind and execute).
pub(crate) trait Cached {
    fn cached_query<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Vec<Row>>;
    fn cached_query_one<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Row>;
    fn cached_query_opt<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Option<Row>>;
    fn cached_execute<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, u64>;
}

impl<C: GenericClient> Cached for C {
    fn cached_query<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Vec<Row>> {
        Box::pin(async move { self.query(&self.prepare_cached(sql).await?, params).await })
    }
    fn cached_query_one<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Row> {
        Box::pin(async move { self.query_one(&self.prepare_cached(sql).await?, params).await })
    }
    fn cached_query_opt<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Option<Row>> {
        Box::pin(async move { self.query_opt(&self.prepare_cached(sql).await?, params).await })
    }
    fn cached_execute<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, u64> {
        Box::pin(async move { self.execute(&self.prepare_cached(sql).await?, params).await })
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    // Far beyond any real wait, and far from overflowing when added to a time.
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(i64::MAX / 4)
}

fn json_object(text: &str, column: &str) -> Res<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(data_error(format!("column {column} does not hold a JSON object"))),
    }
}

pub(crate) fn state_of(code: i16) -> Res<State> {
    u8::try_from(code).ok().and_then(State::from_code).ok_or_else(|| data_error(format!("unknown state code {code}")))
}

pub(crate) fn read_row(row: &Row) -> Res<StoredInvocation> {
    let get_text = |i: usize| -> Res<String> { row.try_get(i).map_err(pg_error) };
    Ok(StoredInvocation {
        invocation: Invocation {
            trace_id: get_text(0)?,
            plugin: get_text(1)?,
            version: get_text(2)?,
            state: state_of(row.try_get(3).map_err(pg_error)?)?,
            invoke_count: u32::try_from(row.try_get::<_, i64>(4).map_err(pg_error)?).map_err(data_error)?,
            inputs: serde_json::from_str(&get_text(5)?).map_err(data_error)?,
            context: serde_json::from_str(&get_text(6)?).map_err(data_error)?,
            storage: json_object(&get_text(7)?, "storage")?,
            outputs: json_object(&get_text(8)?, "outputs")?,
            err: decode_opt(row.try_get(9).map_err(pg_error)?),
            reports: Vec::new(),
        },
        created_at: row.try_get(10).map_err(pg_error)?,
        updated_at: row.try_get(11).map_err(pg_error)?,
        finish_at: row.try_get(12).map_err(pg_error)?,
        next_run_at: row.try_get(13).map_err(pg_error)?,
        lease_owner: row.try_get(14).map_err(pg_error)?,
        lease_expires_at: row.try_get(15).map_err(pg_error)?,
        attempt: row.try_get(16).map_err(pg_error)?,
        deadline_at: row.try_get(17).map_err(pg_error)?,
        created_by: decode_opt(row.try_get(18).map_err(pg_error)?),
        callback_deadline_at: row.try_get(19).map_err(pg_error)?,
        callback_timeout: row
            .try_get::<_, Option<i64>>(20)
            .map_err(pg_error)?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
    })
}

pub(crate) fn object_text(map: &Map<String, Value>) -> Res<String> {
    serde_json::to_string(map).map_err(data_error)
}

fn timeout_ms(plan: &Plan) -> Option<i64> {
    plan.callback_timeout.map(millis)
}

async fn append_reports(c: &impl GenericClient, trace_id: &str, reports: &[Value], files: &[ReportFile]) -> Res<()> {
    for report in reports {
        c.cached_execute(
            "INSERT INTO reports (trace_id, seq, report)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE trace_id = $1), $2)",
            &[&trace_id, &report.to_string()],
        )
        .await
        .map_err(pg_error)?;
    }
    for file in files {
        c.cached_execute(
            "INSERT INTO report_files (trace_id, path, content) VALUES ($1, $2, $3)
             ON CONFLICT (trace_id, path) DO UPDATE SET content = excluded.content",
            &[&trace_id, &file.path, &file.content],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

fn wait_of(row: &Row) -> Option<Duration> {
    row.get::<_, Option<i64>>(0).map(|ms| Duration::from_millis(ms.max(0) as u64))
}
