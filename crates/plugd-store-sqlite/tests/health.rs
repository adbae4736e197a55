//! A damaged database is refused at open, and writes that cannot reach the disk show, with the file
//! or directory at fault named. Real files; a real full or read-only filesystem (a small tmpfs) where
//! the test may mount one (root), with a notice otherwise.

use std::path::Path;
use std::time::Duration;

use plugd_core::store::{NewInvocation, Store, StoreErrorKind};
use plugd_core::Invocation;
use plugd_sdk::State;
use plugd_store_sqlite::{SqliteOptions, SqliteStore};
use plugd_store_tests::disk::{self, Tmpfs};
use plugd_store_tests::records::served;
use serde_json::json;

/// Longer than the store reuses a probe's result.
const PROBE_REUSE: Duration = Duration::from_millis(1100);

fn new(now: i64) -> NewInvocation {
    let mut invocation = Invocation::new("hello", "1.0.0", json!({"name": "x".repeat(500)}), json!({}));
    invocation.state = State::Success;
    invocation.invoke_count = 1;
    NewInvocation {
        invocation,
        now,
        poll_after: None,
        deadline: None,
        logs: "a line\n".repeat(50),
        reports: Vec::new(),
        report_files: Vec::new(),
        created_by: None,
        callback_timeout: None,
        duration: Duration::ZERO,
    }
}

/// A database with a few pages of invocations, closed, its WAL copied in and removed.
async fn database(path: &Path) {
    let store = SqliteStore::open(path, SqliteOptions::default()).unwrap();
    for now in 0..40 {
        store.insert(new(now)).await.unwrap();
    }
    drop(store);
    // The store's background connections close within a checkpoint interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(conn);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "the WAL is still in use");
}

/// Overwrites the pages `from..` of the file with bytes that are no SQLite page.
fn write_garbage(path: &Path, from: u64) {
    let length = std::fs::metadata(path).unwrap().len();
    assert!(length > (from + 2) * 4096, "the database has too few pages: {length} bytes");
    disk::write_garbage(path, from * 4096, 0x2545_f491);
}

#[tokio::test]
async fn a_damaged_database_is_refused_with_the_way_out() {
    // Damage to a page of invocations opens, and quick_check finds it; damage to the first page
    // (the header) is no database at all.
    for (data, detail) in [(true, "PRAGMA quick_check: "), (false, "file is not a database")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugd.db");
        database(&path).await;
        if data {
            disk::damage_page_holding(&path, "x".repeat(500).as_bytes(), 4096, 0x2545_f491);
        } else {
            write_garbage(&path, 0);
        }
        let error = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Data);
        let message = error.message;
        let expected = format!("the database {} is damaged (", path.display());
        assert!(message.starts_with(&expected), "{message}");
        assert!(message.contains(detail), "{message}");
        assert!(message.contains("Restore it from a backup"), "{message}");
        assert!(message.contains(&format!(
            "`sqlite3 '{}' .recover | sqlite3 '{}.recovered'`",
            path.display(),
            path.display()
        )));
    }
}

#[tokio::test]
async fn a_sound_database_takes_a_write_probe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugd.db");
    database(&path).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    store.check_writable().await.unwrap();
    // The probe leaves nothing behind but its row.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with("-probe")), "{names:?}");
}

#[tokio::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_full_disk_fails_the_write_probe_naming_the_directory() {
    let tmpfs = Tmpfs::mount("2m");
    let store = SqliteStore::open(&tmpfs.path().join("plugd.db"), SqliteOptions::default()).unwrap();
    store.insert(new(1)).await.unwrap();
    store.check_writable().await.unwrap();

    let filler = tmpfs.fill();
    // Within a second the last result stands; after it, a new probe sees the full disk.
    store.check_writable().await.unwrap();
    tokio::time::sleep(PROBE_REUSE).await;
    let error = store.check_writable().await.unwrap_err();
    assert_eq!(error.kind, StoreErrorKind::Unavailable);
    let expected = format!("cannot write in the database's directory {}: ", tmpfs.path().display());
    assert!(error.message.starts_with(&expected), "{}", error.message);
    assert!(error.message.contains("No space left on device"), "{}", error.message);
    // Reads still work.
    store.next_due(0, &served()).await.unwrap();

    std::fs::remove_file(filler).unwrap();
    tokio::time::sleep(PROBE_REUSE).await;
    store.check_writable().await.unwrap();
    store.insert(new(2)).await.unwrap();
    drop(store);
}

#[tokio::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_read_only_directory_is_named_at_open() {
    let tmpfs = Tmpfs::mount("2m");
    let path = tmpfs.path().join("plugd.db");
    database(&path).await;
    tmpfs.make_read_only();
    for path in [path, tmpfs.path().join("new.db")] {
        let error = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
        let expected = format!("cannot write in the database's directory {}: ", tmpfs.path().display());
        assert!(error.message.starts_with(&expected), "{}", error.message);
        assert!(error.message.contains("Read-only file system"), "{}", error.message);
    }
}
