//! Versioned migrations, applied in one transaction under an advisory lock so that nodes starting
//! together migrate once, each recorded with whether it keeps the previous release running; a newer
//! schema is run on only when every migration past this build keeps it running, and never altered.

use deadpool_postgres::Object;
use plugd_core::schema::{self, AppliedMigration, Migration};

/// The advisory lock key of migrations ("plugd" in ASCII).
const LOCK: i64 = 0x0070_6c75_6764;

/// Each entry upgrades the schema by one version; never edit one that shipped, append a new one.
/// Times are Unix milliseconds (`plugd_now_ms()`, the database's clock), as in the SQLite store.
const MIGRATIONS: &[Migration] = &[
    // 1: the whole store.
    Migration {
        name: "the whole store",
        keeps_previous: true,
        sql: r#"
    CREATE FUNCTION plugd_now_ms() RETURNS BIGINT LANGUAGE sql STABLE
        AS $$ SELECT (extract(epoch FROM now()) * 1000)::BIGINT $$;
    CREATE TABLE invocations (
        trace_id TEXT PRIMARY KEY,
        plugin TEXT NOT NULL,
        version TEXT NOT NULL,
        state SMALLINT NOT NULL,
        invoke_count BIGINT NOT NULL,
        inputs TEXT NOT NULL,
        context TEXT NOT NULL,
        storage TEXT NOT NULL,
        outputs TEXT NOT NULL,
        err TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        finish_at BIGINT,
        next_run_at BIGINT,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        attempt BIGINT NOT NULL DEFAULT 0,
        deadline_at BIGINT,
        created_by TEXT,
        callback_deadline_at BIGINT,
        callback_timeout_ms BIGINT
    );
    CREATE INDEX invocations_due ON invocations (next_run_at) WHERE next_run_at IS NOT NULL;
    CREATE INDEX invocations_finished ON invocations (finish_at) WHERE finish_at IS NOT NULL;
    CREATE TABLE callbacks (
        seq BIGSERIAL PRIMARY KEY,
        callback_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        data TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        consumed_at BIGINT
    );
    CREATE INDEX callbacks_by_trace ON callbacks (trace_id, seq);
    CREATE TABLE logs (trace_id TEXT PRIMARY KEY, text TEXT NOT NULL);
    CREATE TABLE reports (
        trace_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        report TEXT NOT NULL,
        PRIMARY KEY (trace_id, seq)
    );
    CREATE TABLE report_files (
        trace_id TEXT NOT NULL,
        path TEXT NOT NULL,
        content BYTEA NOT NULL,
        PRIMARY KEY (trace_id, path)
    );
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        trace_id TEXT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        last_error TEXT,
        delivered_at BIGINT,
        gave_up_at BIGINT,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
    CREATE INDEX outbox_by_trace ON outbox (trace_id);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE executes (
        trace_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        trigger TEXT NOT NULL,
        invoke_count BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        duration_us BIGINT NOT NULL,
        state SMALLINT NOT NULL,
        err TEXT,
        PRIMARY KEY (trace_id, seq)
    );
    CREATE INDEX invocations_created ON invocations (created_at DESC, trace_id DESC);
    "#,
    },
    // 2: nodes that differ: each node's heartbeat and what it serves, and due invocations by plugin
    // and version (a node claims only what it serves). Adds only: the previous release runs on it.
    Migration {
        name: "nodes and due invocations by plugin version",
        keeps_previous: true,
        sql: r#"
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        plugd_version TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        stopped_at BIGINT
    );
    CREATE TABLE node_plugins (
        node_id TEXT NOT NULL,
        plugin TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (node_id, plugin, version)
    );
    CREATE INDEX invocations_due_by_version ON invocations (plugin, version, next_run_at)
        WHERE next_run_at IS NOT NULL;
    "#,
    },
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the database to this build's newest version (`MIGRATIONS`, then `extra`: a test's "next
/// release"), recording each migration in `plugd_migrations`; with `apply` false an older schema is
/// refused instead. `Ok(Err(..))` names why this build cannot run on the database ([`schema::check`]).
pub(crate) async fn migrate(
    conn: &mut Object,
    apply: bool,
    extra: &[Migration],
) -> Result<Result<(), String>, tokio_postgres::Error> {
    let all: Vec<&Migration> = MIGRATIONS.iter().chain(extra).collect();
    let known = all.len() as i64;
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS plugd_schema (version BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS plugd_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, keeps_previous BOOLEAN NOT NULL,
             release TEXT NOT NULL, applied_at BIGINT NOT NULL
         )",
    )
    .await?;
    let current: Option<i64> = tx.query_opt("SELECT version FROM plugd_schema", &[]).await?.map(|r| r.get(0));
    let current = current.unwrap_or(0);
    let applied: Vec<AppliedMigration> = tx
        .query("SELECT version, name, keeps_previous, release FROM plugd_migrations", &[])
        .await?
        .iter()
        .map(|r| AppliedMigration { version: r.get(0), name: r.get(1), keeps_previous: r.get(2), release: r.get(3) })
        .collect();
    match schema::must_migrate(known, current, &applied, apply) {
        Ok(true) => {}
        Ok(false) => return tx.commit().await.map(Ok),
        Err(e) => return Ok(Err(e.to_string())),
    }
    for (index, migration) in all.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO plugd_migrations (version, name, keeps_previous, release, applied_at)
             VALUES ($1, $2, $3, $4, (extract(epoch FROM now()) * 1000)::BIGINT)
             ON CONFLICT (version) DO UPDATE SET name = excluded.name, keeps_previous = excluded.keeps_previous,
                 release = excluded.release, applied_at = excluded.applied_at",
            &[&version, &migration.name, &migration.keeps_previous, &env!("CARGO_PKG_VERSION")],
        )
        .await?;
        tracing::info!(version, name = migration.name, "migrated the database schema");
    }
    tx.execute("DELETE FROM plugd_schema", &[]).await?;
    tx.execute("INSERT INTO plugd_schema (version) VALUES ($1)", &[&known]).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// The schema version of the database.
pub(crate) async fn version(conn: &Object) -> Result<i64, tokio_postgres::Error> {
    Ok(conn.query_opt("SELECT version FROM plugd_schema", &[]).await?.map_or(0, |r| r.get(0)))
}
