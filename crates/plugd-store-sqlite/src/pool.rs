//! A small pool of read-only connections, used from blocking tasks.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plugd_core::store::{StoreError, StoreErrorKind};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::sql_error;

pub(crate) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    pub(crate) fn new(path: &Path, size: usize) -> ReaderPool {
        ReaderPool { path: path.to_owned(), idle: Mutex::new(Vec::new()), permits: Semaphore::new(size) }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Runs `f` on an idle connection in a blocking task.
    pub(crate) async fn run<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit =
            self.permits.acquire().await.map_err(|_| StoreError::new(StoreErrorKind::Closed, "store closed"))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(conn) => conn,
                None => pool.connect().map_err(sql_error)?,
            };
            let result = f(&conn);
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Data, format!("reader task failed: {e}")))?
    }
}
