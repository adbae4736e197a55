//! Reading what a plugin left in a folder without letting it point plugd elsewhere: the one rule by
//! which plugd opens a plugin's answer files (process plugins) and report files (every plugin).
//!
//! A [`Beneath`] holds a folder open. Paths below it are resolved one component at a time, each
//! folder opened without following a symbolic link, so swapping the folder (or anything in it) for
//! a link after it was opened changes nothing: `..` and absolute paths outside the folder are
//! refused, a link anywhere on the way is refused, and only regular files are read (a FIFO is never
//! waited on, a device never opened, a file of procfs or sysfs never read).

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a path beneath a folder was not opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum BeneathError {
    /// The path climbs out of the folder (`..`), or is absolute and not inside it.
    Outside,
    /// A component of the path is a symbolic link.
    Link,
    /// Not a regular file (a FIFO, a device, a socket, a folder), or a file where a folder is needed.
    NotRegular,
    /// A file of a kernel file system (procfs, sysfs, ...).
    KernelFs,
    /// Nothing is there.
    NotFound,
    /// Any other error.
    Io(io::Error),
}

impl fmt::Display for BeneathError {
    /// Reads after the path: `<path> is a symbolic link`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeneathError::Outside => f.write_str("is outside its folder"),
            BeneathError::Link => f.write_str("is (or passes through) a symbolic link"),
            BeneathError::NotRegular => f.write_str("is not a regular file"),
            BeneathError::KernelFs => f.write_str("is a file of a kernel file system"),
            BeneathError::NotFound => f.write_str("does not exist"),
            BeneathError::Io(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

impl std::error::Error for BeneathError {}

impl From<rustix::io::Errno> for BeneathError {
    fn from(errno: rustix::io::Errno) -> BeneathError {
        match errno {
            rustix::io::Errno::LOOP => BeneathError::Link,
            rustix::io::Errno::NOENT => BeneathError::NotFound,
            rustix::io::Errno::NOTDIR => BeneathError::NotRegular,
            other => BeneathError::Io(other.into()),
        }
    }
}

/// What an entry of a folder is, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A regular file.
    File,
    /// Anything else: a symbolic link, a FIFO, a device, a socket.
    Other,
}

/// A folder held open; see the [module](self).
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    /// The path it was opened by, made absolute.
    path: PathBuf,
    /// Its canonical path, if it has one.
    canonical: Option<PathBuf>,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

impl Beneath {
    /// Opens the folder at `path`. The folder itself is trusted (links in `path` are followed);
    /// nothing beneath it is.
    pub fn open(path: &Path) -> io::Result<Beneath> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        let path = if path.is_absolute() { path.to_owned() } else { std::env::current_dir()?.join(path) };
        let canonical = std::fs::canonicalize(&path).ok();
        Ok(Beneath { fd, path, canonical })
    }

    /// The path the folder was opened by (made absolute). Shown in messages; never opened again.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` relative to the folder: a relative path as it is, an absolute one when it lies below
    /// the folder's path (as opened, or canonical); `.` components are dropped and `..` refused.
    pub fn relative(&self, path: &Path) -> Result<PathBuf, BeneathError> {
        let rest = if path.is_absolute() {
            [Some(&self.path), self.canonical.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|root| path.strip_prefix(root).ok())
                .ok_or(BeneathError::Outside)?
        } else {
            path
        };
        let mut clean = PathBuf::new();
        for component in rest.components() {
            match component {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(BeneathError::Outside),
            }
        }
        Ok(clean)
    }

    /// Walks to the folder holding the last component of `path`; returns it and that last name
    /// (`None` for the folder itself).
    fn walk(&self, path: &Path) -> Result<(Option<OwnedFd>, Option<OsString>), BeneathError> {
        let relative = self.relative(path)?;
        let mut parts: Vec<OsString> = relative.iter().map(ToOwned::to_owned).collect();
        let last = parts.pop();
        let mut current: Option<OwnedFd> = None;
        for part in parts {
            let next = open_dir(current.as_ref().unwrap_or(&self.fd), part.as_os_str())?;
            current = Some(next);
        }
        Ok((current, last))
    }

    /// The folder at `path` beneath this one.
    pub fn dir(&self, path: &Path) -> Result<Beneath, BeneathError> {
        let shown = self.path.join(self.relative(path)?);
        let (parent, last) = self.walk(path)?;
        let parent = parent.as_ref().unwrap_or(&self.fd);
        let fd = open_dir(parent, last.as_deref().unwrap_or(".".as_ref()))?;
        Ok(Beneath { fd, canonical: None, path: shown })
    }

    /// The regular file at `path` beneath this one, opened for reading without blocking.
    pub fn file(&self, path: &Path) -> Result<File, BeneathError> {
        let (parent, last) = self.walk(path)?;
        let parent = parent.as_ref().unwrap_or(&self.fd);
        let name = last.ok_or(BeneathError::NotRegular)?;
        // Looked at before it is opened, so that opening a device or a FIFO has no side effect...
        let stat = rustix::fs::statat(parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => return Err(BeneathError::Link),
            _ => return Err(BeneathError::NotRegular),
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name.as_os_str(), flags, Mode::empty())?;
        // ...and checked again on the open handle, which is what is read.
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(BeneathError::NotRegular);
        }
        if on_kernel_fs(&fd)? {
            return Err(BeneathError::KernelFs);
        }
        Ok(File::from(fd))
    }

    /// The entries of this folder, sorted by name, without following links.
    pub fn entries(&self) -> io::Result<Vec<(OsString, EntryKind)>> {
        use std::os::unix::ffi::OsStrExt;
        let mut entries = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = std::ffi::OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => {
                    let stat = rustix::fs::statat(&self.fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                    FileType::from_raw_mode(stat.st_mode)
                }
                kind => kind,
            };
            let kind = match kind {
                FileType::Directory => EntryKind::Dir,
                FileType::RegularFile => EntryKind::File,
                _ => EntryKind::Other,
            };
            entries.push((name, kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

/// The folder `name` in `parent`, never through a link.
fn open_dir(parent: &OwnedFd, name: &std::ffi::OsStr) -> Result<OwnedFd, BeneathError> {
    rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|errno| {
        // O_DIRECTORY with O_NOFOLLOW says ENOTDIR for a link: tell the two apart.
        let link = errno == rustix::io::Errno::NOTDIR
            && rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Symlink);
        if link {
            BeneathError::Link
        } else {
            errno.into()
        }
    })
}

/// Whether `fd` is on procfs, sysfs or another kernel file system, whose files are not data.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn on_kernel_fs(fd: &OwnedFd) -> Result<bool, BeneathError> {
    use rustix::fs::FsWord;
    const KERNEL_FS: [u32; 7] = [
        0x9fa0,      // procfs
        0x6265_6572, // sysfs
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0x6265_6570, // configfs
        0xde5e_81e4, // efivarfs
    ];
    let kind = rustix::fs::fstatfs(fd)?.f_type;
    Ok(KERNEL_FS.iter().any(|&magic| kind == magic as FsWord))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn on_kernel_fs(_fd: &OwnedFd) -> Result<bool, BeneathError> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(root: &Beneath, path: &str) -> Result<String, String> {
        let mut text = String::new();
        root.file(Path::new(path)).map_err(|e| format!("{e}"))?.read_to_string(&mut text).unwrap();
        Ok(text)
    }

    #[test]
    fn files_are_read_beneath_the_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/ok.txt"), "ok").unwrap();
        symlink(outside.path().join("secret"), dir.path().join("a/leak")).unwrap();
        symlink(outside.path(), dir.path().join("linked")).unwrap();
        mkfifo(&dir.path().join("a/fifo"));
        let root = Beneath::open(dir.path()).unwrap();
        assert_eq!(read(&root, "a/b/ok.txt"), Ok("ok".into()));
        assert_eq!(read(&root, "./a/./b/ok.txt"), Ok("ok".into()));
        let absolute = dir.path().join("a/b/ok.txt");
        assert_eq!(read(&root, absolute.to_str().unwrap()), Ok("ok".into()));
        assert_eq!(read(&root, "a/leak"), Err("is (or passes through) a symbolic link".into()));
        assert_eq!(read(&root, "linked/secret"), Err("is (or passes through) a symbolic link".into()));
        assert_eq!(read(&root, "a/b/../../linked/secret"), Err("is outside its folder".into()));
        assert_eq!(read(&root, "../x"), Err("is outside its folder".into()));
        let secret = outside.path().join("secret");
        assert_eq!(read(&root, secret.to_str().unwrap()), Err("is outside its folder".into()));
        assert_eq!(read(&root, "a/fifo"), Err("is not a regular file".into()), "a FIFO is not waited on");
        assert_eq!(read(&root, "a"), Err("is not a regular file".into()));
        assert_eq!(read(&root, "a/b/ok.txt/x"), Err("is not a regular file".into()));
        assert_eq!(read(&root, "missing"), Err("does not exist".into()));
        assert_eq!(read(&root, ""), Err("is not a regular file".into()));
        let sub = root.dir(Path::new("a")).unwrap();
        assert_eq!(
            sub.entries().unwrap(),
            [("b".into(), EntryKind::Dir), ("fifo".into(), EntryKind::Other), ("leak".into(), EntryKind::Other)]
        );
        assert!(matches!(root.dir(Path::new("linked")), Err(BeneathError::Link)));
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_it_was_opened_is_still_the_one_read() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("temp");
        std::fs::create_dir(&dir).unwrap();
        let root = Beneath::open(&dir).unwrap();
        std::fs::write(dir.join("result.json"), "mine").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("result.json"), "theirs").unwrap();
        std::fs::rename(&dir, parent.path().join("moved")).unwrap();
        symlink(outside.path(), &dir).unwrap();
        assert_eq!(read(&root, "result.json"), Ok("mine".into()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_files_are_refused() {
        let root = Beneath::open(Path::new("/proc")).unwrap();
        assert_eq!(read(&root, "self/environ"), Err("is (or passes through) a symbolic link".into()));
        assert_eq!(read(&root, "thread-self/../version"), Err("is outside its folder".into()));
        let root = Beneath::open(Path::new("/proc/self")).unwrap();
        assert_eq!(read(&root, "environ"), Err("is a file of a kernel file system".into()));
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(rustix::fs::CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    }
}
