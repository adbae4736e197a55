//! Retention: deleting finished invocations (and what belongs to them) once kept long enough.

use std::time::Duration;

use deadpool_postgres::Object;

use plugd_core::schedule;
use plugd_core::store::Millis;

use super::{Cached, Res};
use crate::pg_error;

/// Deletes a batch of finished invocations and what belongs to them, in one statement; rows another
/// node is deleting are skipped.
pub(crate) async fn purge_finished(c: &Object, keep: Duration, limit: usize) -> Res<Vec<String>> {
    // The database's clock, and core's cut-off (a `keep` too long for the clock keeps everything).
    let now: Millis = c.cached_query_one("SELECT plugd_now_ms()", &[]).await.map_err(pg_error)?.get(0);
    let (cutoff, limit) = (schedule::retention_cutoff(now, keep), limit as i64);
    let rows = c
        .cached_query(
            "WITH gone AS (
                 DELETE FROM invocations WHERE trace_id IN (
                     SELECT trace_id FROM invocations WHERE finish_at IS NOT NULL AND finish_at < $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING trace_id),
             l AS (DELETE FROM logs WHERE trace_id IN (SELECT trace_id FROM gone)),
             r AS (DELETE FROM reports WHERE trace_id IN (SELECT trace_id FROM gone)),
             f AS (DELETE FROM report_files WHERE trace_id IN (SELECT trace_id FROM gone)),
             e AS (DELETE FROM executes WHERE trace_id IN (SELECT trace_id FROM gone)),
             c AS (DELETE FROM callbacks WHERE trace_id IN (SELECT trace_id FROM gone)),
             o AS (DELETE FROM outbox WHERE trace_id IN (SELECT trace_id FROM gone)
                   AND (delivered_at IS NOT NULL OR gave_up_at IS NOT NULL))
             SELECT trace_id FROM gone",
            &[&cutoff, &limit],
        )
        .await
        .map_err(pg_error)?;
    // Callbacks for invocations that never committed (their invoke failed) expire too.
    c.cached_execute(
        "DELETE FROM callbacks WHERE seq IN (
             SELECT c.seq FROM callbacks c LEFT JOIN invocations i ON i.trace_id = c.trace_id
             WHERE i.trace_id IS NULL AND c.received_at < $1 LIMIT $2)",
        &[&cutoff, &limit],
    )
    .await
    .map_err(pg_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
