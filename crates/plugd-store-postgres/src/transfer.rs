//! [`Transfer`]: the PostgreSQL store's content, exported and imported page by page.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object};
use plugd_core::store::{ExecuteRecord, ReportFile, StoreError, StoreFuture};
use plugd_core::transfer::{
    row_error, CallbackRecord, Counts, InvocationRecord, OutboxRecord, Records, SettingRecord, Transfer,
};
use serde_json::Value;

use crate::ops::{object_text, read_row, state_of, COLUMNS};
use crate::text::{decode, decode_opt, encode};
use crate::{data_error, pg_error, PgStore};

type Res<T> = Result<T, StoreError>;

/// Settings that belong to one database and are not copied.
const LOCAL_SETTINGS: &str = "'write_probe'";

async fn counts(c: &Object) -> Res<Counts> {
    let row = c
        .query_one(
            &format!(
                "SELECT (SELECT COUNT(*) FROM invocations), (SELECT COUNT(*) FROM invocations WHERE finish_at IS NULL),
                        (SELECT COUNT(*) FROM callbacks), (SELECT COUNT(*) FROM outbox),
                        (SELECT COUNT(*) FROM report_files),
                        (SELECT COUNT(*) FROM settings WHERE key NOT IN ({LOCAL_SETTINGS}))"
            ),
            &[],
        )
        .await
        .map_err(pg_error)?;
    let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
    Ok(Counts { invocations: n(0), pending: n(1), callbacks: n(2), outbox: n(3), report_files: n(4), settings: n(5) })
}

async fn export_invocations(c: &Object, after: Option<String>, limit: usize) -> Res<Vec<InvocationRecord>> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM invocations WHERE $1::TEXT IS NULL OR trace_id > $1 ORDER BY trace_id LIMIT $2"
            ),
            &[&after, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    let mut records = rows
        .iter()
        .map(|row| {
            Ok(InvocationRecord {
                stored: read_row(row)?,
                logs: None,
                reports: Vec::new(),
                report_files: Vec::new(),
                executes: Vec::new(),
            })
        })
        .collect::<Res<Vec<_>>>()?;
    let ids: Vec<String> = records.iter().map(|r| r.stored.invocation.trace_id.clone()).collect();
    let index: HashMap<String, usize> = ids.iter().cloned().enumerate().map(|(i, id)| (id, i)).collect();
    let of = |id: String| index.get(&id).copied();
    for row in c.query("SELECT trace_id, text FROM logs WHERE trace_id = ANY($1)", &[&ids]).await.map_err(pg_error)? {
        if let Some(i) = of(row.get(0)) {
            records[i].logs = Some(decode(row.get(1)));
        }
    }
    let reports = "SELECT trace_id, report FROM reports WHERE trace_id = ANY($1) ORDER BY trace_id, seq";
    for row in c.query(reports, &[&ids]).await.map_err(pg_error)? {
        if let Some(i) = of(row.get(0)) {
            records[i].reports.push(serde_json::from_str::<Value>(row.get(1)).map_err(data_error)?);
        }
    }
    let files = "SELECT trace_id, path, content FROM report_files WHERE trace_id = ANY($1) ORDER BY trace_id, path";
    for row in c.query(files, &[&ids]).await.map_err(pg_error)? {
        if let Some(i) = of(row.get(0)) {
            records[i].report_files.push(ReportFile { path: row.get(1), content: row.get(2) });
        }
    }
    let executes = "SELECT trace_id, trigger, invoke_count, started_at, duration_us, state, err FROM executes
                    WHERE trace_id = ANY($1) ORDER BY trace_id, seq";
    for row in c.query(executes, &[&ids]).await.map_err(pg_error)? {
        if let Some(i) = of(row.get(0)) {
            let code: i16 = row.get(5);
            let state = state_of(code)?;
            records[i].executes.push(ExecuteRecord {
                trigger: row.get(1),
                invoke_count: u32::try_from(row.get::<_, i64>(2)).map_err(data_error)?,
                started_at: row.get(3),
                duration: Duration::from_micros(u64::try_from(row.get::<_, i64>(4)).unwrap_or(0)),
                state,
                err: decode_opt(row.get(6)),
            });
        }
    }
    Ok(records)
}

async fn export_callbacks(c: &Object, after: i64, limit: usize) -> Res<Vec<CallbackRecord>> {
    let rows = c
        .query(
            "SELECT seq, callback_id, trace_id, data, received_at, consumed_at FROM callbacks
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| CallbackRecord {
            seq: r.get(0),
            callback_id: r.get(1),
            trace_id: r.get(2),
            data: r.get(3),
            received_at: r.get(4),
            consumed_at: r.get(5),
        })
        .collect())
}

async fn export_outbox(c: &Object, after: i64, limit: usize) -> Res<Vec<OutboxRecord>> {
    let rows = c
        .query(
            "SELECT id, trace_id, url, body, attempts, next_attempt_at, last_error, delivered_at, gave_up_at, created_at
             FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| OutboxRecord {
            id: r.get(0),
            trace_id: r.get(1),
            url: decode(r.get(2)),
            body: r.get(3),
            attempts: r.get(4),
            next_attempt_at: r.get(5),
            last_error: decode_opt(r.get(6)),
            delivered_at: r.get(7),
            gave_up_at: r.get(8),
            created_at: r.get(9),
        })
        .collect())
}

async fn export_settings(c: &Object) -> Res<Vec<SettingRecord>> {
    let sql = format!("SELECT key, value FROM settings WHERE key NOT IN ({LOCAL_SETTINGS}) ORDER BY key");
    let rows = c.query(&sql, &[]).await.map_err(pg_error)?;
    Ok(rows.iter().map(|r| SettingRecord { key: r.get(0), value: r.get(1) }).collect())
}

async fn import_invocation(c: &impl GenericClient, record: &InvocationRecord) -> Res<()> {
    let (s, inv) = (&record.stored, &record.stored.invocation);
    let timeout_ms = s.callback_timeout.map(crate::ops::millis);
    let (storage, outputs) = (object_text(&inv.storage)?, object_text(&inv.outputs)?);
    c.execute(
        &format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        ),
        &[
            &inv.trace_id,
            &inv.plugin,
            &inv.version,
            &i16::from(inv.state.code()),
            &i64::from(inv.invoke_count),
            &inv.inputs.to_string(),
            &inv.context.to_string(),
            &storage,
            &outputs,
            &inv.err.as_deref().map(encode),
            &s.created_at,
            &s.updated_at,
            &s.finish_at,
            &s.next_run_at,
            &s.lease_owner,
            &s.lease_expires_at,
            &s.attempt,
            &s.deadline_at,
            &s.created_by.as_deref().map(encode),
            &s.callback_deadline_at,
            &timeout_ms,
        ],
    )
    .await
    .map_err(pg_error)?;
    let trace_id = &inv.trace_id;
    if let Some(text) = &record.logs {
        c.execute("INSERT INTO logs (trace_id, text) VALUES ($1, $2)", &[trace_id, &encode(text)])
            .await
            .map_err(pg_error)?;
    }
    for (seq, report) in record.reports.iter().enumerate() {
        c.execute(
            "INSERT INTO reports (trace_id, seq, report) VALUES ($1, $2, $3)",
            &[trace_id, &(seq as i64 + 1), &report.to_string()],
        )
        .await
        .map_err(pg_error)?;
    }
    for file in &record.report_files {
        c.execute(
            "INSERT INTO report_files (trace_id, path, content) VALUES ($1, $2, $3)",
            &[trace_id, &file.path, &file.content],
        )
        .await
        .map_err(pg_error)?;
    }
    for (seq, e) in record.executes.iter().enumerate() {
        let micros = i64::try_from(e.duration.as_micros()).unwrap_or(i64::MAX);
        c.execute(
            "INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                trace_id,
                &(seq as i64 + 1),
                &e.trigger,
                &i64::from(e.invoke_count),
                &e.started_at,
                &micros,
                &i16::from(e.state.code()),
                &e.err.as_deref().map(encode),
            ],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

async fn import(c: &mut Object, records: &Records) -> Res<()> {
    let tx = c.transaction().await.map_err(pg_error)?;
    match records {
        Records::Invocations(records) => {
            for record in records {
                let key = &record.stored.invocation.trace_id;
                import_invocation(&tx, record).await.map_err(|e| row_error(e, "invocations", "trace_id", key))?;
            }
        }
        Records::Callbacks(records) => {
            for r in records {
                tx.execute(
                    "INSERT INTO callbacks (seq, callback_id, trace_id, data, received_at, consumed_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&r.seq, &r.callback_id, &r.trace_id, &r.data, &r.received_at, &r.consumed_at],
                )
                .await
                .map_err(|e| row_error(pg_error(e), "callbacks", "seq", r.seq))?;
            }
            // New callbacks must sort after the copied ones.
            tx.execute("SELECT setval(pg_get_serial_sequence('callbacks', 'seq'), MAX(seq)) FROM callbacks", &[])
                .await
                .map_err(pg_error)?;
        }
        Records::Outbox(records) => {
            for r in records {
                tx.execute(
                    "INSERT INTO outbox (id, trace_id, url, body, attempts, next_attempt_at, last_error, delivered_at,
                                         gave_up_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &r.id,
                        &r.trace_id,
                        &encode(&r.url),
                        &r.body,
                        &r.attempts,
                        &r.next_attempt_at,
                        &r.last_error.as_deref().map(encode),
                        &r.delivered_at,
                        &r.gave_up_at,
                        &r.created_at,
                    ],
                )
                .await
                .map_err(|e| row_error(pg_error(e), "outbox", "id", r.id))?;
            }
            tx.execute("SELECT setval(pg_get_serial_sequence('outbox', 'id'), MAX(id)) FROM outbox", &[])
                .await
                .map_err(pg_error)?;
        }
        Records::Settings(records) => {
            for r in records {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&r.key, &r.value],
                )
                .await
                .map_err(|e| row_error(pg_error(e), "settings", "key", &r.key))?;
            }
        }
    }
    tx.commit().await.map_err(pg_error)
}

async fn clear(c: &Object) -> Res<()> {
    c.batch_execute(
        "TRUNCATE invocations, callbacks, logs, reports, report_files, executes, outbox, settings RESTART IDENTITY",
    )
    .await
    .map_err(pg_error)
}

impl Transfer for PgStore {
    fn counts(&self) -> StoreFuture<'_, Counts> {
        self.run(move |c| async move { counts(&c).await })
    }

    fn export_invocations(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<InvocationRecord>> {
        self.run(move |c| async move { export_invocations(&c, after, limit).await })
    }

    fn export_callbacks(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<CallbackRecord>> {
        self.run(move |c| async move { export_callbacks(&c, after, limit).await })
    }

    fn export_outbox(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxRecord>> {
        self.run(move |c| async move { export_outbox(&c, after, limit).await })
    }

    fn export_settings(&self) -> StoreFuture<'_, Vec<SettingRecord>> {
        self.run(move |c| async move { export_settings(&c).await })
    }

    fn import(&self, records: Records) -> StoreFuture<'_, ()> {
        self.run(move |mut c| async move { import(&mut c, &records).await })
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        self.run(move |c| async move { clear(&c).await })
    }
}
