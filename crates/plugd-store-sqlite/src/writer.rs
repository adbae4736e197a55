//! The writer thread: the only writable connection, with group commit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use plugd_core::store::{StoreError, StoreErrorKind};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{health, migrations, sql_error, SqliteOptions, Synchronous};

/// One queued write: runs inside the batch transaction, answers after the commit.
trait Job: Send {
    /// Runs the operation; `false` if it failed (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the result, or `commit_error` if the batch failed to commit.
    fn reply(self: Box<Self>, commit_error: Option<&StoreError>);
}

struct Operation<F, T> {
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Operation<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let op = self.op.take().expect("a job runs once");
        let result = op(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn reply(self: Box<Self>, commit_error: Option<&StoreError>) {
        let result = match (commit_error, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::new(StoreErrorKind::Data, "the write did not run")),
        };
        // The caller may have gone away (a dropped request): the write stands regardless.
        let _ = self.reply.send(result);
    }
}

pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Tells the checkpointer to stop once the store is gone.
    closed: Arc<AtomicBool>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl Writer {
    /// Opens the database, migrates it, and starts the writer thread.
    pub(crate) fn open(path: &Path, options: &SqliteOptions) -> Result<Writer, StoreError> {
        health::check_directory(path)?;
        let mut conn = Connection::open(path).map_err(|e| health::explain(path, e))?;
        health::quick_check(&conn, path)?;
        let synchronous = match options.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;
             PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = ON;"
        ))
        .map_err(|e| health::explain(path, e))?;
        migrations::migrate(&mut conn, options.migrate, options.extra_migrations)
            .map_err(|e| health::explain(path, e))?
            .map_err(|e| StoreError::new(StoreErrorKind::Data, format!("{}: {e}", path.display())))?;
        // A background connection copies the WAL into the database continuously (PASSIVE, never
        // blocking), so the writer's own automatic checkpoint, which lets the WAL restart from the
        // beginning, finds little left to copy and costs a commit almost nothing.
        // The writer reads the pages it changes: a page cache of 16 MiB (the default is 2 MiB) keeps
        // the hot ones in memory instead of reading them back from the file at every batch (64 MiB
        // was no faster, and held 15 MB more with 50,000 invocations suspended).
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 16000; PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -16384;",
        )
        .map_err(sql_error)?;
        let closed = Arc::new(AtomicBool::new(false));
        start_checkpointer(path, closed.clone())?;
        let max_batch = options.max_batch.max(1);
        let (jobs, queue) = mpsc::channel(max_batch.saturating_mul(4));
        std::thread::Builder::new()
            .name("plugd-sqlite-writer".into())
            .spawn(move || write_loop(conn, queue, max_batch))
            .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, format!("cannot start the writer: {e}")))?;
        Ok(Writer { jobs, closed })
    }

    /// Queues `op` and waits until its batch has committed.
    pub(crate) async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Operation { op: Some(op), result: None, reply });
        let closed = || StoreError::new(StoreErrorKind::Closed, "the store writer has stopped");
        self.jobs.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// Copies the WAL back into the database every 200 ms with a PASSIVE checkpoint, which never
/// blocks the writer or the readers. The thread ends with the store.
fn start_checkpointer(path: &Path, closed: Arc<AtomicBool>) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(sql_error)?;
    std::thread::Builder::new()
        .name("plugd-sqlite-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if closed.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!("WAL checkpoint failed: {e}");
            }
        })
        .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, format!("cannot start the checkpointer: {e}")))?;
    Ok(())
}

fn write_loop(conn: Connection, mut queue: mpsc::Receiver<Box<dyn Job>>, max_batch: usize) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit_error = run_batch(&conn, &mut batch).err();
        if let Some(e) = &commit_error {
            tracing::error!("store batch of {} writes failed: {e}", batch.len());
        }
        for job in batch.drain(..) {
            job.reply(commit_error.as_ref());
        }
    }
}

/// One transaction for the whole batch, one savepoint per job. The statements are prepared once:
/// parsing them for each job cost the writer more than some of the jobs.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(sql_error);
    run("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        let outcome = run("SAVEPOINT job").and_then(|()| {
            if job.run(conn) {
                run("RELEASE job")
            } else {
                run("ROLLBACK TO job").and_then(|()| run("RELEASE job"))
            }
        });
        if let Err(e) = outcome {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    if let Err(e) = run("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    Ok(())
}
