//! [`RealFs`]: the [`Vfs`] on a directory of the real file system.
//!
//! Every path is validated with [`validate_path`] and resolved under the root. Syncing a
//! file is `File::sync_all` (`fsync`); syncing a directory opens it and calls `sync_all`
//! on it (`fsync` of the directory, which is what makes creates, renames and unlinks
//! durable on ext4 and XFS). On platforms where a directory cannot be opened for syncing
//! (Windows), `sync_dir` only checks that the directory exists.
//!
//! OS errors map to [`VfsError::NotFound`], [`VfsError::AlreadyExists`],
//! [`VfsError::NoSpace`] (`ENOSPC`) and otherwise [`VfsError::Io`] with the operation.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{Vfs, VfsError, VfsFile, VfsOp, VfsResult, validate_path};

/// A [`Vfs`] rooted at a directory of the real file system.
#[derive(Debug, Clone)]
pub struct RealFs {
    root: PathBuf,
}

impl RealFs {
    /// A file system whose root directory is `root` (which should exist; operations on a
    /// missing root fail with [`VfsError::NotFound`]).
    pub fn new(root: PathBuf) -> Self {
        RealFs { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> VfsResult<PathBuf> {
        validate_path(path)?;
        let mut full = self.root.clone();
        if !path.is_empty() {
            full.extend(path.split('/'));
        }
        Ok(full)
    }

    fn file_path(&self, path: &str) -> VfsResult<PathBuf> {
        if path.is_empty() {
            return Err(VfsError::InvalidPath {
                path: String::new(),
                reason: "the root is a directory, not a file",
            });
        }
        self.resolve(path)
    }
}

/// Maps an OS error to a [`VfsError`] about `path`.
fn map_err(path: &str, op: VfsOp, err: io::Error) -> VfsError {
    match err.kind() {
        io::ErrorKind::NotFound => VfsError::NotFound {
            path: path.to_string(),
        },
        io::ErrorKind::AlreadyExists => VfsError::AlreadyExists {
            path: path.to_string(),
        },
        io::ErrorKind::StorageFull => VfsError::NoSpace {
            path: path.to_string(),
        },
        _ => VfsError::Io {
            path: path.to_string(),
            op,
            detail: err.to_string(),
        },
    }
}

fn io_error(path: &str, op: VfsOp, detail: &str) -> VfsError {
    VfsError::Io {
        path: path.to_string(),
        op,
        detail: detail.to_string(),
    }
}

impl Vfs for RealFs {
    fn create(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        let full = self.file_path(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| map_err(path, VfsOp::Create, e))?;
        Ok(Box::new(RealFile {
            file,
            path: path.to_string(),
        }))
    }

    fn open(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        let full = self.file_path(path)?;
        let meta = fs::metadata(&full).map_err(|e| map_err(path, VfsOp::Open, e))?;
        if meta.is_dir() {
            return Err(io_error(path, VfsOp::Open, "is a directory"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .map_err(|e| map_err(path, VfsOp::Open, e))?;
        Ok(Box::new(RealFile {
            file,
            path: path.to_string(),
        }))
    }

    fn exists(&self, path: &str) -> VfsResult<bool> {
        let full = self.resolve(path)?;
        match fs::symlink_metadata(&full) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(map_err(path, VfsOp::Open, e)),
        }
    }

    fn list(&self, dir: &str) -> VfsResult<Vec<String>> {
        let full = self.resolve(dir)?;
        let entries = fs::read_dir(&full).map_err(|e| map_err(dir, VfsOp::List, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| map_err(dir, VfsOp::List, e))?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(_) => {
                    return Err(io_error(dir, VfsOp::List, "entry name is not valid UTF-8"));
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &str, to: &str) -> VfsResult<()> {
        let full_from = self.file_path(from)?;
        let full_to = self.file_path(to)?;
        let meta = fs::metadata(&full_from).map_err(|e| map_err(from, VfsOp::Rename, e))?;
        if meta.is_dir() {
            return Err(io_error(from, VfsOp::Rename, "is a directory"));
        }
        fs::rename(&full_from, &full_to).map_err(|e| map_err(to, VfsOp::Rename, e))
    }

    fn remove(&self, path: &str) -> VfsResult<()> {
        let full = self.file_path(path)?;
        fs::remove_file(&full).map_err(|e| map_err(path, VfsOp::Remove, e))
    }

    fn create_dir_all(&self, dir: &str) -> VfsResult<()> {
        let full = self.resolve(dir)?;
        fs::create_dir_all(&full).map_err(|e| map_err(dir, VfsOp::CreateDir, e))
    }

    fn sync_dir(&self, dir: &str) -> VfsResult<()> {
        let full = self.resolve(dir)?;
        let meta = fs::metadata(&full).map_err(|e| map_err(dir, VfsOp::SyncDir, e))?;
        if !meta.is_dir() {
            return Err(io_error(dir, VfsOp::SyncDir, "not a directory"));
        }
        sync_directory(&full).map_err(|e| map_err(dir, VfsOp::SyncDir, e))
    }
}

#[cfg(unix)]
fn sync_directory(full: &Path) -> io::Result<()> {
    File::open(full)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_full: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; metadata is journaled by the OS.
    Ok(())
}

/// An open file of a [`RealFs`].
#[derive(Debug)]
struct RealFile {
    file: File,
    path: String,
}

impl RealFile {
    fn err(&self, op: VfsOp, e: io::Error) -> VfsError {
        map_err(&self.path, op, e)
    }
}

#[cfg(unix)]
fn read_at_os(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at_os(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn read_at_os(mut file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read(buf)
}

#[cfg(not(unix))]
fn write_all_at_os(mut file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

impl VfsFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset
                .checked_add(done as u64)
                .ok_or_else(|| io_error(&self.path, VfsOp::Read, "offset overflow"))?;
            match read_at_os(&self.file, at, &mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(VfsOp::Read, e)),
            }
        }
        Ok(done)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        write_all_at_os(&self.file, offset, data).map_err(|e| self.err(VfsOp::Write, e))
    }

    fn append(&mut self, data: &[u8]) -> VfsResult<u64> {
        let offset = self.len()?;
        write_all_at_os(&self.file, offset, data).map_err(|e| self.err(VfsOp::Append, e))?;
        Ok(offset)
    }

    fn len(&self) -> VfsResult<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| self.err(VfsOp::Len, e))
    }

    fn truncate(&mut self, len: u64) -> VfsResult<()> {
        self.file
            .set_len(len)
            .map_err(|e| self.err(VfsOp::Truncate, e))
    }

    fn sync(&mut self) -> VfsResult<()> {
        self.file.sync_all().map_err(|e| self.err(VfsOp::Sync, e))
    }

    fn path(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> (tempfile::TempDir, RealFs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = RealFs::new(dir.path().to_path_buf());
        (dir, fs)
    }

    #[test]
    fn create_write_read_sync() {
        let (_d, fs) = fs();
        fs.create_dir_all("a/b").unwrap();
        let mut f = fs.create("a/b/f").unwrap();
        assert_eq!(f.append(b"hello").unwrap(), 0);
        f.write_at(7, b"x").unwrap();
        assert_eq!(f.len().unwrap(), 8);
        f.sync().unwrap();
        fs.sync_dir("a/b").unwrap();
        let mut buf = [9u8; 16];
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 8);
        assert_eq!(&buf[..8], b"hello\0\0x");
        assert_eq!(fs.list("a/b").unwrap(), vec!["f".to_string()]);
        assert!(fs.exists("a/b/f").unwrap());
        assert!(!fs.exists("a/b/g").unwrap());
    }

    #[test]
    fn errors_are_typed() {
        let (_d, fs) = fs();
        fs.create("f").unwrap();
        assert!(matches!(
            fs.create("f"),
            Err(VfsError::AlreadyExists { .. })
        ));
        assert!(matches!(fs.open("g"), Err(VfsError::NotFound { .. })));
        assert!(matches!(fs.create("no/f"), Err(VfsError::NotFound { .. })));
        assert!(matches!(fs.remove("g"), Err(VfsError::NotFound { .. })));
        assert!(matches!(fs.open("../x"), Err(VfsError::InvalidPath { .. })));
        assert!(matches!(fs.create(""), Err(VfsError::InvalidPath { .. })));
        assert!(matches!(fs.list("nope"), Err(VfsError::NotFound { .. })));
        fs.create_dir_all("d").unwrap();
        assert!(matches!(fs.open("d"), Err(VfsError::Io { .. })));
    }

    #[test]
    fn handle_survives_rename_and_unlink() {
        let (_d, fs) = fs();
        let mut f = fs.create("a").unwrap();
        f.append(b"data").unwrap();
        fs.rename("a", "b").unwrap();
        f.append(b"more").unwrap();
        let g = fs.open("b").unwrap();
        assert_eq!(g.len().unwrap(), 8);
        fs.remove("b").unwrap();
        f.append(b"!").unwrap();
        assert_eq!(f.len().unwrap(), 9);
        fs.sync_dir("").unwrap();
    }
}
