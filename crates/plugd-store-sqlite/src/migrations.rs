//! Versioned schema migrations, tracked with `PRAGMA user_version`.

use plugd_core::schema::{self, AppliedMigration, Migration};
use rusqlite::{Connection, OptionalExtension};

/// Each entry upgrades the schema by one version; never edit one that shipped, append a new one.
const MIGRATIONS: &[Migration] = &[
    // 1: invocations, callbacks, logs, the finish-callback outbox and settings.
    Migration {
        name: "invocations, callbacks, logs, outbox, settings",
        keeps_previous: true,
        sql: r#"
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
    },
    // 2: reports attached by executes.
    Migration {
        name: "reports",
        keeps_previous: true,
        sql: r#"
    CREATE TABLE reports (
        trace_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        report TEXT NOT NULL,
        PRIMARY KEY (trace_id, seq)
    ) STRICT;
    "#,
    },
    // 3: the app that created an invocation, which alone may read its logs and reports.
    Migration { name: "created_by", keeps_previous: true, sql: "ALTER TABLE invocations ADD COLUMN created_by TEXT;" },
    // 4: a callback URL takes several posts (one per wait), and a wait for a callback may time out.
    Migration {
        name: "callback posts and callback timeouts",
        keeps_previous: false,
        sql: r#"
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
    },
    // 5: report files live in the database, so that whoever serves the API serves them.
    Migration {
        name: "report files",
        keeps_previous: true,
        sql: r#"
    CREATE TABLE report_files (
        trace_id TEXT NOT NULL,
        path TEXT NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (trace_id, path)
    ) STRICT;
    "#,
    },
    // 6: the debug panel: every execute (its timeline) and history by acceptance time.
    Migration {
        name: "executes and history",
        keeps_previous: true,
        sql: r#"
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
    },
    // 7: nodes that differ: each node's heartbeat and what it serves, and due invocations by plugin
    // and version (a node claims only what it serves). Adds only: the previous release runs on it.
    Migration {
        name: "nodes and due invocations by plugin version",
        keeps_previous: true,
        sql: r#"
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        plugd_version TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        stopped_at INTEGER
    ) STRICT;
    CREATE TABLE node_plugins (
        node_id TEXT NOT NULL,
        plugin TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (node_id, plugin, version)
    ) STRICT;
    CREATE INDEX invocations_due_by_version ON invocations (plugin, version, next_run_at)
        WHERE next_run_at IS NOT NULL;
    "#,
    },
    // 8: executes in one B-tree keyed by (trace_id, seq) instead of a rowid table and an index
    // beside it: every invoke writes one execute, and one page less per commit is the writer's
    // largest saving. The same table and columns: the previous release runs on it.
    Migration {
        name: "executes without rowid",
        keeps_previous: true,
        sql: r#"
    CREATE TABLE executes_by_trace (
        trace_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        invoke_count INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_us INTEGER NOT NULL,
        state INTEGER NOT NULL,
        err TEXT,
        PRIMARY KEY (trace_id, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO executes_by_trace SELECT trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err
        FROM executes;
    DROP TABLE executes;
    ALTER TABLE executes_by_trace RENAME TO executes;
    "#,
    },
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the database to this build's newest version (`MIGRATIONS`, then `extra`: a test's "next
/// release"), one transaction per migration, recording each in `plugd_migrations`; with `apply`
/// false an older schema is refused instead. A newer schema is run on only if every migration past
/// this build keeps older releases running ([`schema::check`]), and is never altered.
pub(crate) fn migrate(conn: &mut Connection, apply: bool, extra: &[Migration]) -> rusqlite::Result<Result<(), String>> {
    let all: Vec<&Migration> = MIGRATIONS.iter().chain(extra).collect();
    let known = all.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match schema::must_migrate(known, current, &applied(conn)?, apply) {
        Ok(true) => {}
        Ok(false) => return Ok(Ok(())),
        Err(e) => return Ok(Err(e.to_string())),
    }
    if current == 0 {
        // Must precede the first table to take effect.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    for (index, migration) in all.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(migration.sql)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS plugd_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, keeps_previous INTEGER NOT NULL,
                 release TEXT NOT NULL, applied_at INTEGER NOT NULL
             ) STRICT",
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO plugd_migrations VALUES (?1, ?2, ?3, ?4, unixepoch('subsec') * 1000)",
            rusqlite::params![version, migration.name, migration.keeps_previous, env!("CARGO_PKG_VERSION")],
        )?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, name = migration.name, "migrated the database schema");
    }
    Ok(Ok(()))
}

/// The migrations the database recorded (none before the first release that records them).
fn applied(conn: &Connection) -> rusqlite::Result<Vec<AppliedMigration>> {
    let recorded: Option<String> = conn
        .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'plugd_migrations'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if recorded.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT version, name, keeps_previous, release FROM plugd_migrations")?;
    let rows = stmt.query_map([], |r| {
        Ok(AppliedMigration { version: r.get(0)?, name: r.get(1)?, keeps_previous: r.get(2)?, release: r.get(3)? })
    })?;
    rows.collect()
}
