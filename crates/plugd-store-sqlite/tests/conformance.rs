//! The store conformance suite (`plugd-store-tests`) on SQLite.

use std::sync::Arc;

use plugd_store_sqlite::{SqliteOptions, SqliteStore};
use plugd_store_tests::Harness;

async fn open() -> Option<Harness> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("plugd.db"), SqliteOptions::default()).unwrap();
    Some(Harness::new(Arc::new(store), Some(Box::pin(async move { drop(dir) }))))
}

plugd_store_tests::conformance!(open);
