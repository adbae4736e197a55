//! The schema version and the counts of `/metrics`.

use plugd_core::store::{Millis, StoreStats};
use rusqlite::Connection;

use crate::sql_error;

use super::Res;

pub(crate) fn schema_version(conn: &Connection) -> Res<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_error)
}

pub(crate) fn stats(conn: &Connection, now: Millis) -> Res<StoreStats> {
    let mut stats = StoreStats::default();
    let counts: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT state, COUNT(*) FROM invocations GROUP BY state")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(sql_error)?;
    for (state, count) in counts {
        if let Some(slot) = stats.by_state.get_mut(state as usize) {
            *slot = count as u64;
        }
    }
    stats.due = conn
        .prepare_cached("SELECT COUNT(*) FROM invocations WHERE next_run_at IS NOT NULL AND next_run_at <= ?1 AND lease_owner IS NULL")
        .and_then(|mut s| s.query_row([now], |r| r.get::<_, i64>(0)))
        .map_err(sql_error)? as u64;
    stats.outbox_pending = conn
        .prepare_cached("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map_err(sql_error)? as u64;
    Ok(stats)
}
