//! Store statistics for the metrics: invocations by state, due now, and outbox deliveries pending.

use deadpool_postgres::Object;
use plugd_core::store::StoreStats;

use super::{Cached, Res};
use crate::pg_error;

pub(crate) async fn stats(c: &Object) -> Res<StoreStats> {
    let mut stats = StoreStats::default();
    let rows = c.cached_query("SELECT state, COUNT(*) FROM invocations GROUP BY state", &[]).await.map_err(pg_error)?;
    for row in rows {
        let (state, count): (i16, i64) = (row.get(0), row.get(1));
        if let Some(slot) = usize::try_from(state).ok().and_then(|s| stats.by_state.get_mut(s)) {
            *slot = count as u64;
        }
    }
    let row = c
        .cached_query_one(
            "SELECT
                 (SELECT COUNT(*) FROM invocations
                  WHERE next_run_at IS NOT NULL AND next_run_at <= plugd_now_ms() AND lease_owner IS NULL),
                 (SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL)",
            &[],
        )
        .await
        .map_err(pg_error)?;
    stats.due = row.get::<_, i64>(0) as u64;
    stats.outbox_pending = row.get::<_, i64>(1) as u64;
    Ok(stats)
}
