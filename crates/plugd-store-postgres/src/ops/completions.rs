//! What ends or moves an invocation: a batch of completions, and cancel.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Object};
use plugd_core::schedule;
use plugd_core::store::{CancelOutcome, Completion, FinishCallback, Millis};
use plugd_sdk::State;
use tokio_postgres::types::ToSql;

use super::{append_reports, object_text, state_of, timeout_ms, Cached, Res, MAX_LOG_CHARS};
use crate::pg_error;
use crate::text::encode;

async fn enqueue(c: &impl GenericClient, trace_id: &str, callback: &FinishCallback) -> Res<()> {
    c.cached_execute(
        "INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at)
         VALUES ($1, $2, $3, plugd_now_ms(), plugd_now_ms())",
        &[&trace_id, &encode(&callback.url), &callback.body],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Writes a batch of completions (trace ids distinct) in one transaction: `Err` for the batch as a
/// whole, otherwise whether each was written (`false`: its claim no longer holds).
pub(crate) async fn complete_batch(c: &Object, batch: &[Completion]) -> Res<Vec<bool>> {
    let tx = c;
    let ids: Vec<&str> = batch.iter().map(|d| d.trace_id.as_str()).collect();
    let attempts: Vec<i64> = batch.iter().map(|d| d.attempt).collect();
    // Locks the rows whose claim still holds, in one order (batches never deadlock).
    let lock = tx
        .prepare_cached(
            "SELECT i.trace_id, i.deadline_at, plugd_now_ms() FROM invocations i
             JOIN unnest($1::TEXT[], $2::BIGINT[]) AS w(trace_id, attempt)
                 ON i.trace_id = w.trace_id AND i.attempt = w.attempt
             WHERE i.lease_owner IS NOT NULL ORDER BY i.trace_id FOR UPDATE OF i",
        )
        .await
        .map_err(pg_error)?;
    // BEGIN goes with the first statement: one round trip (sent in this order on the connection).
    let params: [&(dyn ToSql + Sync); 2] = [&ids, &attempts];
    let (begun, held) = tokio::join!(tx.batch_execute("BEGIN"), tx.query(&lock, &params));
    begun.map_err(pg_error)?;
    let held = held.map_err(pg_error)?;
    let Some(now) = held.first().map(|r| r.get::<_, Millis>(2)) else {
        tx.batch_execute("ROLLBACK").await.map_err(pg_error)?;
        return Ok(vec![false; batch.len()]);
    };
    let deadlines: HashMap<String, Option<Millis>> = held.iter().map(|r| (r.get(0), r.get(1))).collect();
    let done: Vec<&Completion> = batch.iter().filter(|d| deadlines.contains_key(&d.trace_id)).collect();
    // The post delivered is the oldest one of that id not yet consumed; whether another one waits is
    // read in the same statement (a CTE's own change is not visible to its query, hence the `NOT IN`).
    let asks: Vec<&&Completion> =
        done.iter().filter(|d| d.consumed_callback.is_some() || d.step.state == State::Callback).collect();
    let waiting: HashSet<String> = if asks.is_empty() {
        HashSet::new()
    } else {
        let ask_ids: Vec<&str> = asks.iter().map(|d| d.trace_id.as_str()).collect();
        let consumed: Vec<Option<&str>> = asks.iter().map(|d| d.consumed_callback.as_deref()).collect();
        tx.cached_query(
            "WITH want AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[]) AS w(trace_id, callback_id)),
             consumed AS (
                 UPDATE callbacks SET consumed_at = $3::BIGINT WHERE seq IN (
                     SELECT (SELECT c.seq FROM callbacks c
                             WHERE c.trace_id = w.trace_id AND c.callback_id = w.callback_id AND c.consumed_at IS NULL
                             ORDER BY c.seq LIMIT 1)
                     FROM want w WHERE w.callback_id IS NOT NULL)
                 RETURNING seq)
             SELECT w.trace_id FROM want w WHERE EXISTS (
                 SELECT 1 FROM callbacks c WHERE c.trace_id = w.trace_id AND c.consumed_at IS NULL
                 AND c.seq NOT IN (SELECT seq FROM consumed))",
            &[&ask_ids, &consumed, &now],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut a = CompleteArrays::default();
    for d in &done {
        let step = &d.step;
        let deadline = deadlines.get(&d.trace_id).copied().flatten();
        let waits = waiting.contains(&d.trace_id);
        let plan = schedule::plan(step.state, step.poll_after, step.callback_timeout, deadline, waits, now);
        let micros = i64::try_from(d.duration.as_micros()).unwrap_or(i64::MAX);
        a.trace_id.push(d.trace_id.as_str());
        a.attempt.push(d.attempt);
        a.state.push(i16::from(step.state.code()));
        a.invoke_count.push(i64::from(step.invoke_count));
        a.storage.push(object_text(&step.storage)?);
        a.outputs.push(object_text(&step.outputs)?);
        a.err.push(step.err.as_deref().map(encode));
        a.finish_at.push(plan.finish_at);
        a.next_run_at.push(plan.next_run_at);
        a.callback_deadline_at.push(plan.callback_deadline_at);
        a.callback_timeout_ms.push(timeout_ms(&plan));
        a.logs.push(encode(&d.logs));
        a.trigger.push(if d.consumed_callback.is_some() { "callback" } else { "poll" });
        a.started_at.push(now.saturating_sub(micros / 1000));
        a.duration_us.push(micros);
        if let Some(callback) = &d.finish_callback {
            a.outbox_trace_id.push(d.trace_id.as_str());
            a.outbox_url.push(encode(&callback.url));
            a.outbox_body.push(callback.body.as_str());
        }
    }
    let update = tx
        .prepare_cached(
            "WITH u AS (
             SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::SMALLINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[],
                                  $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::TEXT[],
                                  $13::TEXT[], $14::BIGINT[], $15::BIGINT[])
                 AS u(trace_id, attempt, state, invoke_count, storage, outputs, err, finish_at, next_run_at,
                      callback_deadline_at, callback_timeout_ms, log_text, trigger, started_at, duration_us)
         ), upd AS (
             UPDATE invocations i SET state = u.state, invoke_count = u.invoke_count, storage = u.storage,
                 outputs = u.outputs, err = u.err, updated_at = $16::BIGINT, finish_at = u.finish_at,
                 next_run_at = u.next_run_at, lease_owner = NULL, lease_expires_at = NULL,
                 callback_deadline_at = u.callback_deadline_at, callback_timeout_ms = u.callback_timeout_ms
             FROM u WHERE i.trace_id = u.trace_id AND i.attempt = u.attempt
         ), lg AS (
             INSERT INTO logs (trace_id, text)
             SELECT trace_id, right(log_text, $17::INT) FROM u WHERE log_text <> ''
             ON CONFLICT (trace_id) DO UPDATE SET text = right(logs.text || excluded.text, $17::INT)
         ), ex AS (
             INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
             SELECT u.trace_id, (SELECT COALESCE(MAX(e.seq), 0) + 1 FROM executes e WHERE e.trace_id = u.trace_id),
                    u.trigger, u.invoke_count, u.started_at, u.duration_us, u.state, u.err
             FROM u
         )
         INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at)
         SELECT o.trace_id, o.url, o.body, $16::BIGINT, $16::BIGINT
         FROM unnest($18::TEXT[], $19::TEXT[], $20::TEXT[]) AS o(trace_id, url, body)",
        )
        .await
        .map_err(pg_error)?;
    let params: [&(dyn ToSql + Sync); 20] = [
        &a.trace_id,
        &a.attempt,
        &a.state,
        &a.invoke_count,
        &a.storage,
        &a.outputs,
        &a.err,
        &a.finish_at,
        &a.next_run_at,
        &a.callback_deadline_at,
        &a.callback_timeout_ms,
        &a.logs,
        &a.trigger,
        &a.started_at,
        &a.duration_us,
        &now,
        &MAX_LOG_CHARS,
        &a.outbox_trace_id,
        &a.outbox_url,
        &a.outbox_body,
    ];
    if done.iter().any(|d| !d.reports.is_empty() || !d.report_files.is_empty()) {
        tx.execute(&update, &params).await.map_err(pg_error)?;
        for d in &done {
            append_reports(tx, &d.trace_id, &d.reports, &d.report_files).await?;
        }
        tx.batch_execute("COMMIT").await.map_err(pg_error)?;
    } else {
        // Nothing follows: COMMIT goes with the statement (after a failed statement it rolls back).
        let (updated, committed) = tokio::join!(tx.execute(&update, &params), tx.batch_execute("COMMIT"));
        updated.map_err(pg_error)?;
        committed.map_err(pg_error)?;
    }
    Ok(batch.iter().map(|d| deadlines.contains_key(&d.trace_id)).collect())
}

/// The columns of a batch of completions, one array each.
#[derive(Default)]
struct CompleteArrays<'a> {
    trace_id: Vec<&'a str>,
    attempt: Vec<i64>,
    state: Vec<i16>,
    invoke_count: Vec<i64>,
    storage: Vec<String>,
    outputs: Vec<String>,
    err: Vec<Option<Cow<'a, str>>>,
    finish_at: Vec<Option<Millis>>,
    next_run_at: Vec<Option<Millis>>,
    callback_deadline_at: Vec<Option<Millis>>,
    callback_timeout_ms: Vec<Option<i64>>,
    logs: Vec<Cow<'a, str>>,
    trigger: Vec<&'static str>,
    started_at: Vec<Millis>,
    duration_us: Vec<i64>,
    outbox_trace_id: Vec<&'a str>,
    outbox_url: Vec<Cow<'a, str>>,
    outbox_body: Vec<&'a str>,
}

pub(crate) async fn cancel(
    c: &mut Object,
    trace_id: &str,
    err: &str,
    finish_callback: Option<&FinishCallback>,
) -> Res<CancelOutcome> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let row = tx
        .cached_query_opt("SELECT state, plugd_now_ms() FROM invocations WHERE trace_id = $1 FOR UPDATE", &[&trace_id])
        .await
        .map_err(pg_error)?;
    let Some(row) = row else {
        return Ok(CancelOutcome::NotFound);
    };
    let now: Millis = row.get(1);
    let (state, plan) = match schedule::cancelled(state_of(row.get(0))?, now) {
        Ok(cancelled) => cancelled,
        Err(finished) => return Ok(CancelOutcome::AlreadyFinished(finished)),
    };
    // The attempt bump fences out an execute that may be running.
    tx.cached_execute(
        "UPDATE invocations SET state = $2, err = $3, updated_at = $4, finish_at = $5, next_run_at = $6,
             lease_owner = NULL, lease_expires_at = NULL, attempt = attempt + 1
         WHERE trace_id = $1",
        &[&trace_id, &i16::from(state.code()), &encode(err), &now, &plan.finish_at, &plan.next_run_at],
    )
    .await
    .map_err(pg_error)?;
    if let Some(callback) = finish_callback {
        enqueue(&tx, trace_id, callback).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(CancelOutcome::Cancelled)
}
