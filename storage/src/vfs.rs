//! The virtual file system every engine runs on.
//!
//! Engines never touch `std::fs`: they take a [`VfsHandle`] and open files through it.
//! Two implementations exist: [`crate::vfs::real::RealFs`] (a directory on the real file
//! system, with real `fsync` of files and directories) and `sim_core::disk::SimDisk`
//! (a sector-granular simulated disk that loses, tears and corrupts unsynced data on a
//! crash, and injects faults).
//!
//! Semantics every implementation follows (POSIX-like, the strictest common subset):
//! - Paths are `/`-separated, relative to the file system's root, with no `.` or `..`
//!   components and no leading `/`. The root directory is `""`.
//! - Data written to a file is durable only after [`VfsFile::sync`] on that file returns
//!   `Ok`. A failed sync may have dropped the dirty data: a later successful sync does
//!   not bring it back (the PostgreSQL "fsyncgate" lesson), so callers must treat a
//!   failed sync as fatal for the data it covered.
//! - Creating, renaming and removing a directory entry is durable only after
//!   [`Vfs::sync_dir`] on the parent directory returns `Ok`.
//! - A file handle refers to the file, not its name: it stays valid across a rename of the
//!   file and after the name is removed (until the handle is dropped).

pub mod real;

use std::fmt;
use std::sync::Arc;

/// A shared handle to a file system; engines clone it and keep it for their lifetime.
pub type VfsHandle = Arc<dyn Vfs>;

/// Errors of a [`Vfs`] operation. Every variant names the path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VfsError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: invalid path ({reason})")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path}: no space left on device")]
    NoSpace { path: String },
    /// An I/O error: a failed fsync, a latent sector error on read, or a real OS error.
    #[error("{path}: I/O error during {op}: {detail}")]
    Io {
        path: String,
        op: VfsOp,
        detail: String,
    },
}

/// The operation an [`VfsError::Io`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VfsOp {
    Create,
    Open,
    Read,
    Write,
    Append,
    Len,
    Truncate,
    Sync,
    List,
    Rename,
    Remove,
    CreateDir,
    SyncDir,
}

impl fmt::Display for VfsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            VfsOp::Create => "create",
            VfsOp::Open => "open",
            VfsOp::Read => "read",
            VfsOp::Write => "write",
            VfsOp::Append => "append",
            VfsOp::Len => "len",
            VfsOp::Truncate => "truncate",
            VfsOp::Sync => "sync",
            VfsOp::List => "list",
            VfsOp::Rename => "rename",
            VfsOp::Remove => "remove",
            VfsOp::CreateDir => "create_dir",
            VfsOp::SyncDir => "sync_dir",
        };
        f.write_str(name)
    }
}

pub type VfsResult<T> = Result<T, VfsError>;

/// A file system: a tree of directories and files addressed by relative paths.
pub trait Vfs: Send + Sync {
    /// Creates a new, empty file and opens it for reading and writing.
    /// Fails with [`VfsError::AlreadyExists`] if the path exists, and with
    /// [`VfsError::NotFound`] if the parent directory does not exist.
    fn create(&self, path: &str) -> VfsResult<Box<dyn VfsFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &str) -> VfsResult<Box<dyn VfsFile>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &str) -> VfsResult<bool>;
    /// The names (not paths) of the entries of a directory, sorted bytewise.
    fn list(&self, dir: &str) -> VfsResult<Vec<String>>;
    /// Atomically renames a file, replacing any file already at `to`.
    fn rename(&self, from: &str, to: &str) -> VfsResult<()>;
    /// Removes a file.
    fn remove(&self, path: &str) -> VfsResult<()>;
    /// Creates a directory and any missing parents (succeeds if it already exists).
    fn create_dir_all(&self, dir: &str) -> VfsResult<()>;
    /// Makes the directory's entries (creates, renames, removes within it) durable.
    fn sync_dir(&self, dir: &str) -> VfsResult<()>;
}

/// An open file. Reads and writes are positioned; there is no cursor except for `append`.
pub trait VfsFile: Send {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read, which is
    /// fewer only at the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> VfsResult<usize>;
    /// Writes all of `data` at `offset`, extending the file (with zeros) if needed.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> VfsResult<()>;
    /// Writes all of `data` at the end of the file; returns the offset it was written at.
    fn append(&mut self, data: &[u8]) -> VfsResult<u64>;
    /// The current length of the file in bytes.
    fn len(&self) -> VfsResult<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> VfsResult<bool> {
        Ok(self.len()? == 0)
    }
    /// Sets the length of the file, dropping bytes past `len` or extending with zeros.
    fn truncate(&mut self, len: u64) -> VfsResult<()>;
    /// Makes every write to this file so far durable.
    fn sync(&mut self) -> VfsResult<()>;
    /// The path the file was opened with (for error messages).
    fn path(&self) -> &str;
}

/// Splits `path` into its parent directory and file name (`"a/b/c"` → `("a/b", "c")`,
/// `"c"` → `("", "c")`).
pub fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Joins a directory and a name (`("", "c")` → `"c"`, `("a", "c")` → `"a/c"`).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Creates `dir` and any missing parents, and makes every component's directory entry
/// durable by syncing its parent directory (`a/b/c`: syncs `""`, `a` and `a/b`).
/// `create_dir_all` alone leaves new directories — and every file later written in them,
/// however well synced — to vanish in a crash.
pub fn create_dir_all_durable(vfs: &dyn Vfs, dir: &str) -> VfsResult<()> {
    validate_path(dir)?;
    vfs.create_dir_all(dir)?;
    if dir.is_empty() {
        return Ok(());
    }
    let mut parent = String::new();
    for component in dir.split('/') {
        vfs.sync_dir(&parent)?;
        parent = join(&parent, component);
    }
    Ok(())
}

/// Checks that `path` is a valid relative path (see the module docs).
pub fn validate_path(path: &str) -> VfsResult<()> {
    let invalid = |reason| {
        Err(VfsError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.starts_with('/') {
        return invalid("absolute paths are not allowed");
    }
    if path.is_empty() {
        return Ok(());
    }
    for component in path.split('/') {
        match component {
            "" => return invalid("empty path component"),
            "." | ".." => return invalid("`.` and `..` are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_round_trip() {
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("c"), ("", "c"));
        assert_eq!(join("", "c"), "c");
        assert_eq!(join("a/b", "c"), "a/b/c");
    }

    #[test]
    fn validate_rejects_escapes() {
        assert!(validate_path("a/b").is_ok());
        assert!(validate_path("").is_ok());
        assert!(validate_path("/a").is_err());
        assert!(validate_path("a//b").is_err());
        assert!(validate_path("a/../b").is_err());
        assert!(validate_path("./a").is_err());
    }
}
