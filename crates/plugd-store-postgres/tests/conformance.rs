//! The store conformance suite (`plugd-store-tests`) on PostgreSQL: each case on a database of its
//! own, created from `PLUGD_TEST_POSTGRES_URL` and dropped afterwards (skipped, saying so, when unset).

use std::sync::Arc;

use plugd_store_postgres::{PgOptions, PgStore};
use plugd_store_tests::{Harness, TestDatabase};

async fn open() -> Option<Harness> {
    let database = TestDatabase::create("the PostgreSQL conformance suite").await?;
    let store = PgStore::open(database.url(), PgOptions::default()).await.unwrap();
    // Another node's store on the same database (a small pool: the cases run side by side, and
    // PostgreSQL's connections are few).
    let neighbour = PgStore::open(database.url(), PgOptions { pool_size: 2, ..PgOptions::default() }).await.unwrap();
    Some(Harness::new(Arc::new(store), Some(Box::pin(database.drop_database()))).with_neighbour(Arc::new(neighbour)))
}

plugd_store_tests::conformance!(open);
