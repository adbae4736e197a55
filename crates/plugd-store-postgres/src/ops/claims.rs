//! Claims: leasing due invocations, renewing and releasing a lease, and when the next one is due.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Object;
use plugd_core::cluster::Served;
use plugd_core::schedule::{self, ClaimDecision, Deadlines};
use plugd_core::store::{Claim, Millis};
use plugd_sdk::Callback;

use super::{read_row, wait_of, Cached, Res, COLUMNS};
use crate::{data_error, pg_error};

/// Claims due invocations of the served (plugin, version) pairs in one statement (rows locked by
/// another claimer are skipped, never waited for): each is leased, its attempt bumped, and returned
/// with its due time and the oldest callback waiting for it. Those that `schedule::claim_decision`
/// says must wait (a lease that ran out after the callback was consumed) are given back, fenced by
/// the attempt just taken.
pub(crate) async fn claim(c: &Object, limit: usize, owner: &str, lease: Duration, served: &Served) -> Res<Vec<Claim>> {
    if served.is_empty() {
        return Ok(Vec::new());
    }
    let sql = claim_sql(served.len());
    let (plugins, versions) = (served.plugins(), served.versions());
    let rows = c
        .cached_query(&sql, &[&(limit as i64), &owner, &lease_offset(lease), &plugins, &versions])
        .await
        .map_err(pg_error)?;
    let (mut wait_ids, mut wait_attempts, mut wait_at) = (Vec::new(), Vec::new(), Vec::new());
    let mut claims = Vec::with_capacity(rows.len());
    let n = COLUMNS.split(',').count();
    for row in &rows {
        let stored = read_row(row)?;
        let (due_at, now): (Millis, Millis) = (row.get(n), row.get(n + 1));
        let pending = match row.get::<_, Option<String>>(n + 2) {
            Some(id) => {
                let data: String = row.get(n + 3);
                Some(Callback { id, data: serde_json::from_str(&data).map_err(data_error)? })
            }
            None => None,
        };
        let deadlines = Deadlines { invocation: stored.deadline_at, callback: stored.callback_deadline_at };
        match schedule::claim_decision(stored.invocation.state, pending, deadlines, now) {
            ClaimDecision::Execute(trigger) => claims.push(Claim { stored, due_at, claimed_at: now, trigger }),
            ClaimDecision::WaitUntil(at) => {
                wait_ids.push(stored.invocation.trace_id);
                wait_attempts.push(stored.attempt);
                wait_at.push(at);
            }
        }
    }
    if !wait_ids.is_empty() {
        c.cached_execute(
            "UPDATE invocations i SET next_run_at = w.at, lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS w(id, attempt, at)
             WHERE i.trace_id = w.id AND i.attempt = w.attempt AND i.lease_owner IS NOT NULL",
            &[&wait_ids, &wait_attempts, &wait_at],
        )
        .await
        .map_err(pg_error)?;
    }
    claims.sort_by_key(|c| c.due_at);
    Ok(claims)
}

/// The claim statement for `pairs` served pairs (`$4` and `$5`: their plugins and versions), made
/// once per count (a node's served pairs never change, so it makes and prepares one).
///
/// Its candidates are the oldest due of each served pair, one `UNION ALL` branch per pair on the
/// `(plugin, version, next_run_at)` index, merged in due order: PostgreSQL's Merge Append reads about
/// one row per pair plus the rows taken, so a claim costs the same whatever other nodes' versions
/// have due. Twice `limit` candidates are read, so that nodes claiming at once still find rows the
/// others did not lock.
fn claim_sql(pairs: usize) -> Arc<str> {
    static BY_PAIRS: Mutex<Vec<(usize, Arc<str>)>> = Mutex::new(Vec::new());
    let mut made = BY_PAIRS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, sql)) = made.iter().find(|(n, _)| *n == pairs) {
        return sql.clone();
    }
    let branches: Vec<String> = (1..=pairs)
        .map(|k| {
            format!(
                "(SELECT trace_id, next_run_at FROM invocations
                  WHERE plugin = ($4::TEXT[])[{k}] AND version = ($5::TEXT[])[{k}]
                      AND next_run_at IS NOT NULL AND next_run_at <= plugd_now_ms()
                  ORDER BY next_run_at LIMIT $1::BIGINT * 2)"
            )
        })
        .collect();
    let returning: Vec<String> = COLUMNS.split(',').map(|c| format!("i.{}", c.trim())).collect();
    let sql: Arc<str> = format!(
        "WITH candidates AS (
             SELECT trace_id FROM ({}) AS n ORDER BY next_run_at LIMIT $1::BIGINT * 2
         ),
         due AS (
             SELECT i.trace_id, i.next_run_at AS due_at, cb.callback_id, cb.data
             FROM invocations i
             LEFT JOIN LATERAL (
                 SELECT callback_id, data FROM callbacks c
                 WHERE c.trace_id = i.trace_id AND c.consumed_at IS NULL ORDER BY seq LIMIT 1
             ) cb ON i.state = 3
             WHERE i.trace_id IN (SELECT trace_id FROM candidates)
                 AND i.next_run_at IS NOT NULL AND i.next_run_at <= plugd_now_ms()
             ORDER BY i.next_run_at LIMIT $1
             FOR UPDATE OF i SKIP LOCKED
         )
         UPDATE invocations i SET attempt = i.attempt + 1, lease_owner = $2,
             lease_expires_at = plugd_now_ms() + $3, next_run_at = plugd_now_ms() + $3
         FROM due WHERE i.trace_id = due.trace_id
         RETURNING {}, due.due_at, plugd_now_ms(), due.callback_id, due.data",
        branches.join(" UNION ALL "),
        returning.join(", ")
    )
    .into();
    made.push((pairs, sql.clone()));
    sql
}

/// The end of a lease as an offset from the database's now, which the statements add (core's rule,
/// planned at 0: the claim is one statement, with no round trip to read the clock first).
fn lease_offset(lease: Duration) -> Millis {
    schedule::lease_ends(0, lease)
}

pub(crate) async fn renew(c: &Object, trace_id: &str, attempt: i64, lease: Duration) -> Res<bool> {
    let changed = c
        .cached_execute(
            "UPDATE invocations SET lease_expires_at = plugd_now_ms() + $3, next_run_at = plugd_now_ms() + $3
             WHERE trace_id = $1 AND attempt = $2 AND lease_owner IS NOT NULL",
            &[&trace_id, &attempt, &lease_offset(lease)],
        )
        .await
        .map_err(pg_error)?;
    Ok(changed == 1)
}

pub(crate) async fn release(c: &Object, trace_id: &str, attempt: i64) -> Res<()> {
    c.cached_execute(
        "UPDATE invocations SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = plugd_now_ms() + $3
         WHERE trace_id = $1 AND attempt = $2 AND lease_owner IS NOT NULL",
        &[&trace_id, &attempt, &schedule::due_after_release(0)],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The earliest due time of the served pairs, one index probe per pair.
pub(crate) async fn next_due(c: &Object, served: &Served) -> Res<Option<Duration>> {
    let (plugins, versions) = (served.plugins(), served.versions());
    let row = c
        .cached_query_one(
            "SELECT MIN(n.next_run_at) - plugd_now_ms() FROM unnest($1::TEXT[], $2::TEXT[]) AS s(plugin, version)
             CROSS JOIN LATERAL (
                 SELECT next_run_at FROM invocations
                 WHERE plugin = s.plugin AND version = s.version AND next_run_at IS NOT NULL
                 ORDER BY next_run_at LIMIT 1
             ) n",
            &[&plugins, &versions],
        )
        .await
        .map_err(pg_error)?;
    Ok(wait_of(&row))
}
