//! [`Transfer`]: the SQLite store's content, exported and imported page by page.

use plugd_core::store::{ReportFile, StoreError, StoreFuture};
use plugd_core::transfer::{
    row_error, CallbackRecord, Counts, InvocationRecord, OutboxRecord, Records, SettingRecord, Transfer,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::ops::{self, read_row, COLUMNS};
use crate::{sql_error, SqliteStore};

type Res<T> = Result<T, StoreError>;

/// Settings that belong to one database and are not copied.
const LOCAL_SETTINGS: &str = "'write_probe'";

fn counts(conn: &Connection) -> Res<Counts> {
    let count = |sql: &str| -> Res<u64> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64).map_err(sql_error)
    };
    Ok(Counts {
        invocations: count("SELECT COUNT(*) FROM invocations")?,
        pending: count("SELECT COUNT(*) FROM invocations WHERE finish_at IS NULL")?,
        callbacks: count("SELECT COUNT(*) FROM callbacks")?,
        outbox: count("SELECT COUNT(*) FROM outbox")?,
        report_files: count("SELECT COUNT(*) FROM report_files")?,
        settings: count(&format!("SELECT COUNT(*) FROM settings WHERE key NOT IN ({LOCAL_SETTINGS})"))?,
    })
}

fn export_invocations(conn: &Connection, after: Option<String>, limit: usize) -> Res<Vec<InvocationRecord>> {
    let stored = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM invocations WHERE ?1 IS NULL OR trace_id > ?1 ORDER BY trace_id LIMIT ?2"
        ))
        .and_then(|mut s| s.query_map(params![after, limit as i64], read_row)?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql_error)?;
    let mut records = Vec::with_capacity(stored.len());
    for stored in stored {
        let stored = stored?;
        let trace_id = stored.invocation.trace_id.clone();
        let logs: Option<String> = conn
            .prepare_cached("SELECT text FROM logs WHERE trace_id = ?1")
            .and_then(|mut s| s.query_row([&trace_id], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        let report_files = conn
            .prepare_cached("SELECT path, content FROM report_files WHERE trace_id = ?1 ORDER BY path")
            .and_then(|mut s| {
                s.query_map([&trace_id], |r| Ok(ReportFile { path: r.get(0)?, content: r.get(1)? }))?.collect()
            })
            .map_err(sql_error)?;
        records.push(InvocationRecord {
            reports: ops::reports(conn, &trace_id)?.unwrap_or_default(),
            executes: ops::executes(conn, &trace_id)?.unwrap_or_default(),
            logs,
            report_files,
            stored,
        });
    }
    Ok(records)
}

fn export_callbacks(conn: &Connection, after: i64, limit: usize) -> Res<Vec<CallbackRecord>> {
    conn.prepare_cached(
        "SELECT seq, callback_id, trace_id, data, received_at, consumed_at FROM callbacks
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![after, limit as i64], |r| {
            Ok(CallbackRecord {
                seq: r.get(0)?,
                callback_id: r.get(1)?,
                trace_id: r.get(2)?,
                data: r.get(3)?,
                received_at: r.get(4)?,
                consumed_at: r.get(5)?,
            })
        })?
        .collect()
    })
    .map_err(sql_error)
}

fn export_outbox(conn: &Connection, after: i64, limit: usize) -> Res<Vec<OutboxRecord>> {
    conn.prepare_cached(
        "SELECT id, trace_id, url, body, attempts, next_attempt_at, last_error, delivered_at, gave_up_at, created_at
         FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![after, limit as i64], |r| {
            Ok(OutboxRecord {
                id: r.get(0)?,
                trace_id: r.get(1)?,
                url: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get(4)?,
                next_attempt_at: r.get(5)?,
                last_error: r.get(6)?,
                delivered_at: r.get(7)?,
                gave_up_at: r.get(8)?,
                created_at: r.get(9)?,
            })
        })?
        .collect()
    })
    .map_err(sql_error)
}

fn export_settings(conn: &Connection) -> Res<Vec<SettingRecord>> {
    conn.prepare_cached(&format!("SELECT key, value FROM settings WHERE key NOT IN ({LOCAL_SETTINGS}) ORDER BY key"))
        .and_then(|mut s| s.query_map([], |r| Ok(SettingRecord { key: r.get(0)?, value: r.get(1)? }))?.collect())
        .map_err(sql_error)
}

fn import_invocation(conn: &Connection, record: &InvocationRecord) -> Res<()> {
    let (s, inv) = (&record.stored, &record.stored.invocation);
    let row = ops::RowFields {
        created_at: s.created_at,
        updated_at: s.updated_at,
        finish_at: s.finish_at,
        next_run_at: s.next_run_at,
        lease_owner: s.lease_owner.as_deref(),
        lease_expires_at: s.lease_expires_at,
        attempt: s.attempt,
        deadline_at: s.deadline_at,
        created_by: s.created_by.as_deref(),
        callback_deadline_at: s.callback_deadline_at,
        callback_timeout: s.callback_timeout,
    };
    ops::insert_row(conn, inv, &row)?;
    let trace_id = &inv.trace_id;
    if let Some(text) = &record.logs {
        conn.prepare_cached("INSERT INTO logs (trace_id, text) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![trace_id, text]))
            .map_err(sql_error)?;
    }
    for (seq, report) in record.reports.iter().enumerate() {
        conn.prepare_cached("INSERT INTO reports (trace_id, seq, report) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![trace_id, seq as i64 + 1, report.to_string()]))
            .map_err(sql_error)?;
    }
    for file in &record.report_files {
        conn.prepare_cached("INSERT INTO report_files (trace_id, path, content) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![trace_id, file.path, file.content]))
            .map_err(sql_error)?;
    }
    for (seq, e) in record.executes.iter().enumerate() {
        let micros = i64::try_from(e.duration.as_micros()).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut st| {
            st.execute(params![
                trace_id,
                seq as i64 + 1,
                e.trigger,
                e.invoke_count,
                e.started_at,
                micros,
                e.state.code(),
                e.err
            ])
        })
        .map_err(sql_error)?;
    }
    Ok(())
}

fn import(conn: &Connection, records: &Records) -> Res<()> {
    match records {
        Records::Invocations(records) => records.iter().try_for_each(|r| {
            let key = &r.stored.invocation.trace_id;
            import_invocation(conn, r).map_err(|e| row_error(e, "invocations", "trace_id", key))
        }),
        Records::Callbacks(records) => records.iter().try_for_each(|c| {
            conn.prepare_cached(
                "INSERT INTO callbacks (seq, callback_id, trace_id, data, received_at, consumed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![c.seq, c.callback_id, c.trace_id, c.data, c.received_at, c.consumed_at])
            })
            .map(drop)
            .map_err(|e| row_error(sql_error(e), "callbacks", "seq", c.seq))
        }),
        Records::Outbox(records) => records.iter().try_for_each(|o| {
            conn.prepare_cached(
                "INSERT INTO outbox (id, trace_id, url, body, attempts, next_attempt_at, last_error, delivered_at,
                                     gave_up_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    o.id,
                    o.trace_id,
                    o.url,
                    o.body,
                    o.attempts,
                    o.next_attempt_at,
                    o.last_error,
                    o.delivered_at,
                    o.gave_up_at,
                    o.created_at
                ])
            })
            .map(drop)
            .map_err(|e| row_error(sql_error(e), "outbox", "id", o.id))
        }),
        Records::Settings(records) => records.iter().try_for_each(|s| {
            conn.prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute(params![s.key, s.value]))
            .map(drop)
            .map_err(|e| row_error(sql_error(e), "settings", "key", &s.key))
        }),
    }
}

fn clear(conn: &Connection) -> Res<()> {
    conn.execute_batch(
        "DELETE FROM invocations; DELETE FROM callbacks; DELETE FROM logs; DELETE FROM reports;
         DELETE FROM report_files; DELETE FROM executes; DELETE FROM outbox; DELETE FROM settings;",
    )
    .map_err(sql_error)
}

impl Transfer for SqliteStore {
    fn counts(&self) -> StoreFuture<'_, Counts> {
        Box::pin(self.readers.run(counts))
    }

    fn export_invocations(&self, after: Option<String>, limit: usize) -> StoreFuture<'_, Vec<InvocationRecord>> {
        Box::pin(self.readers.run(move |c| export_invocations(c, after, limit)))
    }

    fn export_callbacks(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<CallbackRecord>> {
        Box::pin(self.readers.run(move |c| export_callbacks(c, after, limit)))
    }

    fn export_outbox(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxRecord>> {
        Box::pin(self.readers.run(move |c| export_outbox(c, after, limit)))
    }

    fn export_settings(&self) -> StoreFuture<'_, Vec<SettingRecord>> {
        Box::pin(self.readers.run(export_settings))
    }

    fn import(&self, records: Records) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.run(move |c| import(c, &records)))
    }

    fn clear(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.run(clear))
    }
}
