//! Schema upgrades during a rolling deploy, on each store: a schema one release newer that keeps the
//! previous release running is run on, one that does not is refused naming the release it needs, and
//! an older schema is migrated only when migrating is allowed. Each case takes an opener of one fresh
//! database: `open(migrate, extra_migrations)`, where `extra_migrations` play the next release.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use plugd_core::schema::Migration;
use plugd_core::store::{Store, StoreError};
use plugd_sdk::State;

use crate::records::{invocation, new_at};

/// The next release adds a table of its own: the previous release keeps running.
pub const NEXT_COMPATIBLE: &[Migration] = &[Migration {
    name: "next release: release notes",
    keeps_previous: true,
    sql: "CREATE TABLE next_release_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",
}];

/// The next release renames a column the previous release writes: it cannot keep running.
pub const NEXT_INCOMPATIBLE: &[Migration] = &[Migration {
    name: "next release: invoked_by",
    keeps_previous: false,
    sql: "ALTER TABLE invocations RENAME COLUMN created_by TO invoked_by",
}];

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn refused<T>(opened: Result<T, StoreError>) -> String {
    match opened {
        Ok(_) => panic!("the store opened"),
        Err(e) => e.message,
    }
}

/// This release opens (migrating or not) and works on a database the next release migrated with a
/// migration that keeps it running, and leaves the newer schema as it is.
pub async fn a_newer_compatible_schema_keeps_this_release_running<F, Fut>(open: F)
where
    F: Fn(bool, &'static [Migration]) -> Fut,
    Fut: Future<Output = Result<Arc<dyn Store>, StoreError>>,
{
    let next = open(true, NEXT_COMPATIBLE).await.expect("the next release migrates");
    let written = invocation(State::Success);
    next.insert(new_at(&written, now(), None)).await.unwrap();
    let newer = next.info().await.unwrap();
    assert_eq!(newer.schema_version, newer.known_schema_version);
    drop(next);
    tokio::time::sleep(Duration::from_millis(100)).await;

    for migrate in [true, false] {
        let this = open(migrate, &[]).await.expect("this release runs on a compatible newer schema");
        let info = this.info().await.unwrap();
        assert_eq!((info.schema_version, info.known_schema_version), (newer.schema_version, newer.schema_version - 1));
        assert_eq!(this.get(&written.trace_id).await.unwrap().map(|s| s.invocation), Some(written.clone()));
        this.insert(new_at(&invocation(State::Success), now(), None)).await.expect("this release writes");
    }
}

/// This release refuses a database the next release migrated with a migration that breaks it, says
/// which release the database needs, and alters nothing: the next release still opens it.
pub async fn a_newer_incompatible_schema_is_refused_naming_the_release<F, Fut>(open: F)
where
    F: Fn(bool, &'static [Migration]) -> Fut,
    Fut: Future<Output = Result<Arc<dyn Store>, StoreError>>,
{
    drop(open(true, NEXT_INCOMPATIBLE).await.expect("the next release migrates"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for migrate in [true, false] {
        let message = refused(open(migrate, &[]).await);
        let release = env!("CARGO_PKG_VERSION");
        assert!(message.contains("newer than this plugd"), "{message}");
        assert!(message.contains("(\"next release: invoked_by\", applied by plugd"), "{message}");
        assert!(message.contains(&format!("run plugd {release} or newer")), "{message}");
    }
    open(true, NEXT_INCOMPATIBLE).await.expect("the next release still opens its database");
}

/// An older schema (here: none yet) is refused when migrating is off (`serve --no-migrate`), and
/// migrated when it is on (`db migrate`); then both open.
pub async fn an_older_schema_is_migrated_only_when_allowed<F, Fut>(open: F)
where
    F: Fn(bool, &'static [Migration]) -> Fut,
    Fut: Future<Output = Result<Arc<dyn Store>, StoreError>>,
{
    let message = refused(open(false, &[]).await);
    assert!(message.contains("the database schema is version 0, older than this plugd"), "{message}");
    assert!(message.contains("run `plugd db migrate --db URL` first"), "{message}");
    drop(open(true, &[]).await.expect("migrating is allowed"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    open(false, &[]).await.expect("the schema is current");
}
