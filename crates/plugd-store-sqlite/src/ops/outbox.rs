//! The finish-callback outbox: enqueued with the completion that ends an invocation, claimed and delivered.

use std::time::Duration;

use plugd_core::store::{millis_after, until, Delivery, FinishCallback, Millis, OutboxItem};
use rusqlite::{params, Connection};

use crate::sql_error;

use super::Res;

pub(super) fn enqueue(conn: &Connection, trace_id: &str, callback: &FinishCallback, now: Millis) -> Res<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )
    .and_then(|mut s| s.execute(params![trace_id, callback.url, callback.body, now]))
    .map_err(sql_error)?;
    Ok(())
}

pub(crate) fn claim_outbox(conn: &Connection, now: Millis, limit: usize, lease: Duration) -> Res<Vec<OutboxItem>> {
    let until = millis_after(now, lease);
    conn.prepare_cached(
        "UPDATE outbox SET next_attempt_at = ?3 WHERE id IN (
             SELECT id FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?1
             ORDER BY next_attempt_at LIMIT ?2)
         RETURNING id, trace_id, url, body, attempts",
    )
    .and_then(|mut s| {
        s.query_map(params![now, limit as i64, until], |r| {
            Ok(OutboxItem {
                id: r.get(0)?,
                trace_id: r.get(1)?,
                callback: FinishCallback { url: r.get(2)?, body: r.get(3)? },
                attempts: r.get(4)?,
            })
        })?
        .collect()
    })
    .map_err(sql_error)
}

pub(crate) fn finish_delivery(conn: &Connection, id: i64, delivery: &Delivery, now: Millis) -> Res<()> {
    let (sql, error, at): (&str, Option<&str>, Millis) = match delivery {
        Delivery::Delivered => {
            ("UPDATE outbox SET attempts = attempts + 1, delivered_at = ?3, last_error = ?2 WHERE id = ?1", None, now)
        }
        Delivery::Retry { after, error } => (
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?2 WHERE id = ?1",
            Some(error),
            millis_after(now, *after),
        ),
        Delivery::GaveUp { error } => (
            "UPDATE outbox SET attempts = attempts + 1, gave_up_at = ?3, last_error = ?2 WHERE id = ?1",
            Some(error),
            now,
        ),
    };
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params![id, error, at])).map_err(sql_error)?;
    Ok(())
}

pub(crate) fn next_outbox_due(conn: &Connection, now: Millis) -> Res<Option<Duration>> {
    let at: Option<Millis> = conn
        .prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql_error)?;
    Ok(at.map(|at| until(now, at)))
}
