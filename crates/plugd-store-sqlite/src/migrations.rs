//! Versioned schema migrations, tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema by one version; never edit one that shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: invocations, callbacks, logs, the finish-callback outbox and settings.
    r#"
    CREATE TABLE invocations (
        trace_id TEXT PRIMARY KEY,
        plugin TEXT NOT NULL,
        version TEXT NOT NULL,
        state INTEGER NOT NULL,
        invoke_count INTEGER NOT NULL,
        inputs TEXT NOT NULL,
        context TEXT NOT NULL,
        storage TEXT NOT NULL,
        outputs TEXT NOT NULL,
        err TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        finish_at INTEGER,
        next_run_at INTEGER,
        lease_owner TEXT,
        lease_expires_at INTEGER,
        attempt INTEGER NOT NULL DEFAULT 0,
        deadline_at INTEGER
    ) STRICT;
    CREATE INDEX invocations_due ON invocations (next_run_at) WHERE next_run_at IS NOT NULL;
    CREATE INDEX invocations_finished ON invocations (finish_at) WHERE finish_at IS NOT NULL;

    CREATE TABLE callbacks (
        callback_id TEXT PRIMARY KEY,
        trace_id TEXT NOT NULL,
        data TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        consumed_at INTEGER
    ) STRICT;
    CREATE INDEX callbacks_by_trace ON callbacks (trace_id, received_at);

    CREATE TABLE logs (
        trace_id TEXT PRIMARY KEY,
        text TEXT NOT NULL
    ) STRICT;

    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        trace_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        delivered_at INTEGER,
        gave_up_at INTEGER,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
    CREATE INDEX outbox_by_trace ON outbox (trace_id);

    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    "#,
    // 2: reports attached by executes.
    r#"
    CREATE TABLE reports (
        trace_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        report TEXT NOT NULL,
        PRIMARY KEY (trace_id, seq)
    ) STRICT;
    "#,
    // 3: the app that created an invocation, which alone may read its logs and reports.
    "ALTER TABLE invocations ADD COLUMN created_by TEXT;",
    // 4: a callback URL takes several posts (one per wait), and a wait for a callback may time out.
    r#"
    CREATE TABLE callback_posts (
        seq INTEGER PRIMARY KEY,
        callback_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        data TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        consumed_at INTEGER
    ) STRICT;
    INSERT INTO callback_posts (callback_id, trace_id, data, received_at, consumed_at)
        SELECT callback_id, trace_id, data, received_at, consumed_at FROM callbacks ORDER BY received_at, rowid;
    DROP TABLE callbacks;
    ALTER TABLE callback_posts RENAME TO callbacks;
    CREATE INDEX callbacks_by_trace ON callbacks (trace_id, seq);
    CREATE INDEX callbacks_by_id ON callbacks (callback_id, seq);
    ALTER TABLE invocations ADD COLUMN callback_deadline_at INTEGER;
    ALTER TABLE invocations ADD COLUMN callback_timeout_ms INTEGER;
    "#,
    // 5: report files live in the database, so that whoever serves the API serves them.
    r#"
    CREATE TABLE report_files (
        trace_id TEXT NOT NULL,
        path TEXT NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (trace_id, path)
    ) STRICT;
    "#,
    // 6: the debug panel: every execute (its timeline) and history by acceptance time.
    r#"
    CREATE TABLE executes (
        trace_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        invoke_count INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_us INTEGER NOT NULL,
        state INTEGER NOT NULL,
        err TEXT,
        PRIMARY KEY (trace_id, seq)
    ) STRICT;
    CREATE INDEX invocations_created ON invocations (created_at DESC, trace_id DESC);
    "#,
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`LATEST`], one transaction per migration.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > LATEST {
        return Ok(Err(format!(
            "the database schema is version {current}, newer than this plugd ({LATEST}): upgrade plugd"
        )));
    }
    if current == 0 {
        // Must precede the first table to take effect.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "migrated the database schema");
    }
    Ok(Ok(()))
}
