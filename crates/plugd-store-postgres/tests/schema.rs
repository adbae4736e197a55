//! Schema upgrades during a rolling deploy (`plugd_store_tests::schema`) on PostgreSQL, each case on
//! a database of its own (skipped, saying so, without `PLUGD_TEST_POSTGRES_URL`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use plugd_core::schema::Migration;
use plugd_core::store::{Store, StoreError};
use plugd_store_postgres::{PgOptions, PgStore};
use plugd_store_tests::{schema, TestDatabase};

type Opened = Pin<Box<dyn Future<Output = Result<Arc<dyn Store>, StoreError>>>>;

/// Opens the database as this release (`extra` empty) or the next one would.
fn opener(database: &TestDatabase) -> impl Fn(bool, &'static [Migration]) -> Opened {
    let url = database.url().to_owned();
    move |migrate, extra_migrations| {
        let url = url.clone();
        Box::pin(async move {
            let options = PgOptions { migrate, extra_migrations, pool_size: 2, ..PgOptions::default() };
            PgStore::open(&url, options).await.map(|s| Arc::new(s) as Arc<dyn Store>)
        })
    }
}

#[tokio::test]
async fn a_newer_compatible_schema_keeps_this_release_running() {
    let Some(database) = TestDatabase::create("a_newer_compatible_schema_keeps_this_release_running").await else {
        return;
    };
    schema::a_newer_compatible_schema_keeps_this_release_running(opener(&database)).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_newer_incompatible_schema_is_refused_naming_the_release() {
    let Some(database) = TestDatabase::create("a_newer_incompatible_schema_is_refused_naming_the_release").await else {
        return;
    };
    schema::a_newer_incompatible_schema_is_refused_naming_the_release(opener(&database)).await;
    database.drop_database().await;
}

#[tokio::test]
async fn an_older_schema_is_migrated_only_when_allowed() {
    let Some(database) = TestDatabase::create("an_older_schema_is_migrated_only_when_allowed").await else {
        return;
    };
    schema::an_older_schema_is_migrated_only_when_allowed(opener(&database)).await;
    database.drop_database().await;
}
