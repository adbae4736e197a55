//! The outbox of finish callbacks: claiming deliveries, recording how each went, and the next due.

use std::time::Duration;

use deadpool_postgres::Object;
use plugd_core::store::{Delivery, FinishCallback, OutboxItem};

use super::{millis, wait_of, Cached, Res};
use crate::text::{decode, encode};
use crate::{data_error, pg_error};

pub(crate) async fn claim_outbox(c: &Object, limit: usize, lease: Duration) -> Res<Vec<OutboxItem>> {
    let rows = c
        .cached_query(
            "UPDATE outbox SET next_attempt_at = plugd_now_ms() + $2 WHERE id IN (
                 SELECT id FROM outbox
                 WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= plugd_now_ms()
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, trace_id, url, body, attempts",
            &[&(limit as i64), &millis(lease)],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(OutboxItem {
                id: r.get(0),
                trace_id: r.get(1),
                callback: FinishCallback { url: decode(r.get(2)), body: r.get(3) },
                attempts: u32::try_from(r.get::<_, i64>(4)).map_err(data_error)?,
            })
        })
        .collect()
}

pub(crate) async fn finish_delivery(c: &Object, id: i64, delivery: &Delivery) -> Res<()> {
    let (sql, error, after): (&str, Option<&str>, i64) = match delivery {
        Delivery::Delivered => (
            "UPDATE outbox SET attempts = attempts + 1, delivered_at = plugd_now_ms() + $3, last_error = $2 WHERE id = $1",
            None,
            0,
        ),
        Delivery::Retry { after, error } => (
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = plugd_now_ms() + $3, last_error = $2 WHERE id = $1",
            Some(error),
            millis(*after),
        ),
        Delivery::GaveUp { error } => (
            "UPDATE outbox SET attempts = attempts + 1, gave_up_at = plugd_now_ms() + $3, last_error = $2 WHERE id = $1",
            Some(error),
            0,
        ),
    };
    let error = error.map(|e| encode(e));
    c.cached_execute(sql, &[&id, &error, &after]).await.map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn next_outbox_due(c: &Object) -> Res<Option<Duration>> {
    let row = c
        .cached_query_one(
            "SELECT MIN(next_attempt_at) - plugd_now_ms() FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(wait_of(&row))
}
