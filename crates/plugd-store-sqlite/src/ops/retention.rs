//! Retention: deleting finished invocations (and what belongs to them) once kept long enough.

use std::time::Duration;

use plugd_core::schedule::{self};
use plugd_core::store::Millis;
use rusqlite::{params, Connection};

use crate::sql_error;

use super::Res;

pub(crate) fn purge_finished(conn: &Connection, now: Millis, keep: Duration, limit: usize) -> Res<Vec<String>> {
    let before = schedule::retention_cutoff(now, keep);
    let gone: Vec<String> = conn
        .prepare_cached(
            "DELETE FROM invocations WHERE trace_id IN (
                 SELECT trace_id FROM invocations WHERE finish_at IS NOT NULL AND finish_at < ?1 LIMIT ?2)
             RETURNING trace_id",
        )
        .and_then(|mut s| s.query_map(params![before, limit as i64], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    for trace_id in &gone {
        for sql in [
            "DELETE FROM logs WHERE trace_id = ?1",
            "DELETE FROM reports WHERE trace_id = ?1",
            "DELETE FROM report_files WHERE trace_id = ?1",
            "DELETE FROM callbacks WHERE trace_id = ?1",
            "DELETE FROM executes WHERE trace_id = ?1",
            "DELETE FROM outbox WHERE trace_id = ?1 AND (delivered_at IS NOT NULL OR gave_up_at IS NOT NULL)",
        ] {
            conn.prepare_cached(sql).and_then(|mut s| s.execute([trace_id])).map_err(sql_error)?;
        }
    }
    // Callbacks for invocations that never committed (their invoke failed) expire too.
    conn.prepare_cached(
        "DELETE FROM callbacks WHERE rowid IN (
             SELECT c.rowid FROM callbacks c LEFT JOIN invocations i ON i.trace_id = c.trace_id
             WHERE i.trace_id IS NULL AND c.received_at < ?1 LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![before, limit as i64]))
    .map_err(sql_error)?;
    conn.execute_batch("PRAGMA incremental_vacuum(256)").map_err(sql_error)?;
    Ok(gone)
}
