/*!
The store conformance suite: one set of cases written against `dyn Store`, which every store crate
runs from its own `tests/` (as Sentry taskbroker runs each store test once per adapter):

```text
async fn open() -> Option<plugd_store_tests::Harness> { /* a fresh, empty store */ }
plugd_store_tests::conformance!(open);
```

Cases run on real time with short waits, never on a clock the test picks, so that a store that
keeps its own clock (PostgreSQL's `now()`) passes the same cases as one that takes the caller's.

[`TestDatabase`] makes a PostgreSQL database of its own for one test, from `PLUGD_TEST_POSTGRES_URL`,
and drops it afterwards. [`disk`] damages a database file, or mounts a small tmpfs to fill or make
read-only, for the health tests of a store and of `plugd serve`; [`records`] builds the records the
cases write, for a store's own tests too; [`schema`] holds the schema-upgrade cases, which each store
runs with an opener of its own.
*/
#![deny(missing_docs)]

pub mod cases;
pub mod disk;
mod postgres;
pub mod records;
pub mod schema;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use plugd_core::store::Store;

pub use postgres::TestDatabase;

/// What cleans up after a store: drops a test database, removes a folder.
pub type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fresh, empty store for one case, and what removes it afterwards.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// A second store on the same database, as another process opens it (stores shared by nodes).
    neighbour: Option<Arc<dyn Store>>,
    cleanup: Option<Cleanup>,
}

impl Harness {
    /// A harness over `store`; `cleanup` runs after the case, passed or failed.
    pub fn new(store: Arc<dyn Store>, cleanup: Option<Cleanup>) -> Harness {
        Harness { store, neighbour: None, cleanup }
    }

    /// The same, with `neighbour`: a second store on the same database, as another node opens it.
    pub fn with_neighbour(mut self, neighbour: Arc<dyn Store>) -> Harness {
        self.neighbour = Some(neighbour);
        self
    }

    /// Runs `case`, then the cleanup, then fails if the case failed.
    pub async fn run<F, Fut>(self, case: F)
    where
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.run_with_neighbour(|store, _| case(store)).await;
    }

    /// Runs `case` with the store and its neighbour (if the store has one), then the cleanup, then
    /// fails if the case failed.
    pub async fn run_with_neighbour<F, Fut>(self, case: F)
    where
        F: FnOnce(Arc<dyn Store>, Option<Arc<dyn Store>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Harness { store, neighbour, cleanup } = self;
        let outcome = AssertUnwindSafe(case(store, neighbour)).catch_unwind().await;
        if let Some(cleanup) = cleanup {
            cleanup.await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Declares one `#[tokio::test]` per conformance case, each on a store from `$open`
/// (`async fn() -> Option<Harness>`; `None` skips, after the function said why).
#[macro_export]
macro_rules! conformance {
    ($open:path) => {
        $crate::conformance!(@cases $open;
            insert_get_and_conflict,
            polls_are_claimed_when_due_leased_and_fenced,
            callbacks_early_once_per_wait_and_retries_answered,
            a_wait_for_a_callback_comes_due_at_its_timeout,
            cancel_fails_pending_invocations_and_fences_running_executes,
            the_outbox_is_claimed_retried_then_given_up,
            retention_purges_finished_invocations_only,
            stats_and_writes,
            the_secret_is_created_once,
            concurrent_claimers_never_share_an_invocation,
            concurrent_inserts_all_land,
            history_filters_and_pages,
            claims_take_only_served_versions,
            nodes_heartbeat_and_unserved_work_shows,
            nul_bytes_are_stored_as_sent,
            a_released_claim_is_due_again_at_once_and_fenced,
        );
        $crate::conformance!(@neighbour_cases $open; wake_ups_reach_the_other_processes);
    };
    (@neighbour_cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(harness) = $open().await {
                    harness.run_with_neighbour($crate::cases::$case).await;
                }
            }
        )*
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(harness) = $open().await {
                    harness.run($crate::cases::$case).await;
                }
            }
        )*
    };
}
