//! Test environments: the same WAL tests run on the real file system (a temporary
//! directory) and on a `SimDisk`.
#![allow(dead_code)]

pub mod kv;

use std::sync::Arc;

use sim_core::disk::{DiskConfig, SimDisk};
use sim_core::rng::fork;
use storage::vfs::real::RealFs;
use storage::vfs::{VfsHandle, split_parent};

/// A file system to run a test on.
pub trait Env {
    fn vfs(&self) -> VfsHandle;
    /// A crash: on a `SimDisk`, the crash model; on the real file system, a process
    /// restart (nothing is lost, since the OS keeps the page cache).
    fn crash(&self);
    /// The simulated disk, if this is one (for fault injection).
    fn sim(&self) -> Option<&SimDisk>;
}

pub struct RealEnv {
    _dir: tempfile::TempDir,
    vfs: VfsHandle,
}

impl RealEnv {
    pub fn new() -> RealEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let vfs: VfsHandle = Arc::new(RealFs::new(dir.path().to_path_buf()));
        RealEnv { _dir: dir, vfs }
    }
}

impl Env for RealEnv {
    fn vfs(&self) -> VfsHandle {
        self.vfs.clone()
    }
    fn crash(&self) {}
    fn sim(&self) -> Option<&SimDisk> {
        None
    }
}

pub struct SimEnv {
    pub disk: SimDisk,
}

impl SimEnv {
    pub fn new(config: DiskConfig, seed: u64) -> SimEnv {
        SimEnv {
            disk: SimDisk::try_new(config, fork(seed, "disk", 0)).expect("valid disk config"),
        }
    }

    /// A disk with the default crash model (keep, lose or tear 1/3 each), 512-byte sectors.
    pub fn default_with_seed(seed: u64) -> SimEnv {
        SimEnv::new(
            DiskConfig {
                sector_size: 512,
                ..DiskConfig::default()
            },
            seed,
        )
    }
}

impl Env for SimEnv {
    fn vfs(&self) -> VfsHandle {
        self.disk.handle()
    }
    fn crash(&self) {
        self.disk.crash();
    }
    fn sim(&self) -> Option<&SimDisk> {
        Some(&self.disk)
    }
}

/// The whole contents of a file.
pub fn read_file(vfs: &VfsHandle, path: &str) -> Vec<u8> {
    let f = vfs.open(path).expect("open");
    let mut buf = vec![0u8; f.len().expect("len") as usize];
    let n = f.read_at(0, &mut buf).expect("read");
    buf.truncate(n);
    buf
}

/// Replaces a file's contents durably.
pub fn write_file(vfs: &VfsHandle, path: &str, bytes: &[u8]) {
    let mut f = match vfs.open(path) {
        Ok(f) => f,
        Err(_) => vfs.create(path).expect("create"),
    };
    f.truncate(0).expect("truncate");
    f.write_at(0, bytes).expect("write");
    f.sync().expect("sync");
    vfs.sync_dir(split_parent(path).0).expect("sync_dir");
}

/// XORs one byte of a file, durably.
pub fn flip_byte(vfs: &VfsHandle, path: &str, offset: u64, xor: u8) {
    let mut bytes = read_file(vfs, path);
    bytes[offset as usize] ^= xor;
    write_file(vfs, path, &bytes);
}

/// A payload that is unique to `id`, of `len` extra bytes.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut p = id.to_le_bytes().to_vec();
    p.extend((0..len).map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

/// A property test's case count: `PROPTEST_CASES` if it is set (for long hunts, e.g.
/// `PROPTEST_CASES=200000 cargo test --release -p storage --test wal_crash`), else the
/// test's default (what CI runs).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
