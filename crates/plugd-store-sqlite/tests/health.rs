//! A damaged database is refused at open, and writes that cannot reach the disk show, with the file
//! or directory at fault named. Real files; a real full or read-only filesystem (a small tmpfs) where
//! the test may mount one (root), with a notice otherwise.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use plugd_core::store::{NewInvocation, Store, StoreErrorKind};
use plugd_core::Invocation;
use plugd_sdk::State;
use plugd_store_sqlite::{SqliteOptions, SqliteStore};
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
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let length = file.metadata().unwrap().len();
    assert!(length > (from + 2) * 4096, "the database has too few pages: {length} bytes");
    let mut state: u32 = 0x2545_f491;
    let garbage: Vec<u8> = (0..length - from * 4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    file.seek(SeekFrom::Start(from * 4096)).unwrap();
    file.write_all(&garbage).unwrap();
}

#[tokio::test]
async fn a_damaged_database_is_refused_with_the_way_out() {
    for (from, detail) in [(1, "PRAGMA quick_check: "), (0, "file is not a database")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugd.db");
        database(&path).await;
        write_garbage(&path, from);
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

/// A small tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one; the tests that do are marked `#[ignore = "needs root ..."]`.
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "this test mounts a small tmpfs, which needs root (or CAP_SYS_ADMIN)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem; the file that did it.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // What a partial write left: fill it to the last byte.
        while file.write_all(&[7]).is_ok() {}
        filler
    }

    /// Remounts it read-only, once no file on it is open for writing.
    fn make_read_only(&self) {
        for _ in 0..100 {
            let remounted = Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(self.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if remounted {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cannot remount {} read-only", self.path().display());
    }
}

impl Drop for Tmpfs {
    /// Unmounts once the store's background connections have closed, or lazily.
    fn drop(&mut self) {
        for _ in 0..40 {
            let umount = Command::new("umount").arg(self.path()).stderr(Stdio::null()).status();
            if umount.is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

#[tokio::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_full_disk_fails_the_write_probe_naming_the_directory() {
    let tmpfs = Tmpfs::mount();
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
    store.next_due(0).await.unwrap();

    std::fs::remove_file(filler).unwrap();
    tokio::time::sleep(PROBE_REUSE).await;
    store.check_writable().await.unwrap();
    store.insert(new(2)).await.unwrap();
    drop(store);
}

#[tokio::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_read_only_directory_is_named_at_open() {
    let tmpfs = Tmpfs::mount();
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
