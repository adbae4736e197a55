//! Is the database sound, and can it be written? The integrity check at open, the write probe of
//! readiness checks, and errors that say which file or directory is at fault.

use std::io::Write;
use std::path::{Path, PathBuf};

use plugd_core::store::{StoreError, StoreErrorKind};
use rusqlite::{Connection, ErrorCode};

/// Bytes the directory probe writes: about one database page, so that a full disk shows.
const PROBE_BYTES: usize = 4096;

/// The directory holding the database (`.` for a bare file name).
fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Creates, writes and removes `<database>-probe` beside the database: SQLite creates its `-wal`
/// and `-shm` files there and grows both files, so a read-only or full directory stops writes.
pub(crate) fn check_directory(path: &Path) -> Result<(), StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push("-probe");
    let probe = path.with_file_name(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut file| file.write_all(&[0; PROBE_BYTES]));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| {
        StoreError::new(
            StoreErrorKind::Unavailable,
            format!(
                "cannot write in the database's directory {}: {e} (SQLite keeps the database's -wal and -shm \
                 files there and grows them: make it writable, free some space, or choose another --db)",
                directory(path).display()
            ),
        )
    })
}

/// The error that stops plugd from using a damaged database, with the way out.
fn damaged(path: &Path, detail: &str) -> StoreError {
    let path = path.display();
    StoreError::new(
        StoreErrorKind::Data,
        format!(
            "the database {path} is damaged ({detail}); plugd will not use it. Restore it from a backup, or \
             salvage what is readable into a new file with `sqlite3 '{path}' .recover | sqlite3 '{path}.recovered'`, \
             keep the damaged file aside, and start on the new one"
        ),
    )
}

/// `PRAGMA quick_check`: refuses a database whose pages or records are damaged.
pub(crate) fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| explain(path, e))?;
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(damaged(path, &format!("PRAGMA quick_check: {}", problems.join("; ")))),
    }
}

/// A SQLite error at open, said in terms of the file or directory at fault.
pub(crate) fn explain(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => damaged(path, &e.to_string()),
        Some(ErrorCode::ReadOnly) => StoreError::new(
            StoreErrorKind::Unavailable,
            format!("the database {} is read-only ({e}): plugd needs to write it", path.display()),
        ),
        _ => match check_directory(path) {
            Err(unwritable) => unwritable,
            Ok(()) => StoreError::new(StoreErrorKind::Unavailable, format!("cannot open {}: {e}", path.display())),
        },
    }
}

/// The write probe: changes one row, so the commit appends to the WAL.
pub(crate) fn write_probe(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value) VALUES ('write_probe', randomblob(8))
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute([]))
    .map(drop)
    .map_err(crate::sql_error)
}
