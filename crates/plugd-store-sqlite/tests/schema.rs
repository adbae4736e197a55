//! Schema upgrades during a rolling deploy (`plugd_store_tests::schema`) on SQLite files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugd_core::schema::Migration;
use plugd_core::store::{Store, StoreError};
use plugd_store_sqlite::{SqliteOptions, SqliteStore};
use plugd_store_tests::schema;

type Opened = std::future::Ready<Result<Arc<dyn Store>, StoreError>>;

/// Opens `path` as this release (`extra` empty) or the next one would.
fn opener(path: &Path) -> impl Fn(bool, &'static [Migration]) -> Opened {
    let path: PathBuf = path.to_owned();
    move |migrate, extra_migrations| {
        let options = SqliteOptions { migrate, extra_migrations, ..SqliteOptions::default() };
        std::future::ready(SqliteStore::open(&path, options).map(|s| Arc::new(s) as Arc<dyn Store>))
    }
}

#[tokio::test]
async fn a_newer_compatible_schema_keeps_this_release_running() {
    let dir = tempfile::tempdir().unwrap();
    schema::a_newer_compatible_schema_keeps_this_release_running(opener(&dir.path().join("plugd.db"))).await;
}

#[tokio::test]
async fn a_newer_incompatible_schema_is_refused_naming_the_release() {
    let dir = tempfile::tempdir().unwrap();
    schema::a_newer_incompatible_schema_is_refused_naming_the_release(opener(&dir.path().join("plugd.db"))).await;
}

#[tokio::test]
async fn an_older_schema_is_migrated_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    schema::an_older_schema_is_migrated_only_when_allowed(opener(&dir.path().join("plugd.db"))).await;
}
