//! An insert whose COMMIT outlives the timeout is never answered "nothing was recorded" while it may
//! still land: it is cancelled and its own outcome heard (PostgreSQL from `PLUGD_TEST_POSTGRES_URL`;
//! skipped, saying so, when unset).

use std::time::Duration;

use plugd_core::store::{Store, StoreErrorKind};
use plugd_sdk::State;
use plugd_store_postgres::{PgOptions, PgStore};
use plugd_store_tests::records::{invocation, new_at};
use plugd_store_tests::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_held_past_the_timeout_is_rolled_back_and_says_so() {
    let Some(database) = TestDatabase::create("an_insert_held_past_the_timeout_is_rolled_back_and_says_so").await
    else {
        return;
    };
    let options = PgOptions { timeout: Duration::from_millis(500), ..PgOptions::default() };
    let store = PgStore::open(database.url(), options).await.unwrap();

    // The test holds a lock that every insert waits for, past the store's timeout.
    let (holder, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    holder.batch_execute("BEGIN; LOCK TABLE invocations IN EXCLUSIVE MODE").await.unwrap();
    let inv = invocation(State::Poll);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let error = store.insert(new_at(&inv, now, Some(Duration::from_secs(60)))).await.unwrap_err();
    assert_eq!(error.kind, StoreErrorKind::Unavailable, "{error:?}");
    assert!(error.message.contains("the write was cancelled and rolled back"), "{}", error.message);

    // Once the lock goes, the insert does not land after all: "nothing was recorded" was true.
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.get(&inv.trace_id).await.unwrap(), None, "the insert landed after it was answered");
    // And the store works on.
    store.insert(new_at(&inv, now, Some(Duration::from_secs(60)))).await.unwrap();
    assert!(store.get(&inv.trace_id).await.unwrap().is_some());
    drop((holder, driver, store));
    database.drop_database().await;
}
