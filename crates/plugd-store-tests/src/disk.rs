//! What goes wrong with a database's disk, for the health tests of a store and of `plugd serve`: a
//! damaged file, a full or read-only filesystem.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Overwrites the page (of `page_size` bytes) that holds the first occurrence of `needle` with
/// bytes that are no SQLite page: damage to the data of a table (where quick_check finds it), never
/// to the schema, wherever the schema's pages lie.
pub fn damage_page_holding(path: &Path, needle: &[u8], page_size: u64, seed: u32) {
    let bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the needle is in the file") as u64;
    let page = at / page_size;
    assert!(page > 0, "the needle is on the first page, which holds the header");
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(page * page_size)).unwrap();
    file.write_all(&xorshift(seed, page_size)).unwrap();
}

fn xorshift(seed: u32, len: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Overwrites the file from byte `from` to its end with bytes that are no SQLite page (a xorshift
/// sequence from `seed`, the same for the same seed).
pub fn write_garbage(path: &Path, from: u64, seed: u32) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let length = file.metadata().unwrap().len();
    let garbage = xorshift(seed, length.saturating_sub(from));
    file.seek(SeekFrom::Start(from)).unwrap();
    file.write_all(&garbage).unwrap();
}

/// A small tmpfs mounted on a temporary directory, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (`mount -o size=`, as `2m`); the tests that do are marked
    /// `#[ignore = "needs root ..."]`.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "this test mounts a small tmpfs, which needs root (or CAP_SYS_ADMIN)");
        Tmpfs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem to the last byte; the file that did it.
    pub fn fill(&self) -> PathBuf {
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
    pub fn make_read_only(&self) {
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
    /// Unmounts once nothing holds a file on it open (a store's background connections close in a
    /// moment), or lazily.
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
