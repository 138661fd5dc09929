//! PLACEHOLDER written by the kernel author so sim-core compiles while helper-1 writes
//! the real SimDisk. helper-1: overwrite this whole file with your implementation; the
//! kernel uses exactly: `DiskConfig` (Default, Clone, Debug, fields sector_size: usize,
//! crash_keep_probability, crash_torn_probability, crash_keep_dir_op_probability,
//! fsync_fail_probability, read_bit_flip_probability, latent_sector_error_probability,
//! misdirected_write_probability: f64, capacity_bytes: Option<u64>), `SimDisk::new(DiskConfig,
//! SimRng)`, `SimDisk: Clone + Vfs`, `SimDisk::crash(&self)`, `SimDisk::take_events(&self) ->
//! Vec<DiskEvent>`, `DiskEvent: Debug + Clone + Serialize` with `DiskEvent::name(&self) -> &'static str`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use storage::vfs::{Vfs, VfsError, VfsFile, VfsResult};

use crate::rng::SimRng;

#[derive(Debug, Clone, PartialEq)]
pub struct DiskConfig {
    pub sector_size: usize,
    pub crash_keep_probability: f64,
    pub crash_torn_probability: f64,
    pub crash_keep_dir_op_probability: f64,
    pub fsync_fail_probability: f64,
    pub read_bit_flip_probability: f64,
    pub latent_sector_error_probability: f64,
    pub misdirected_write_probability: f64,
    pub capacity_bytes: Option<u64>,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            sector_size: 4096,
            crash_keep_probability: 1.0 / 3.0,
            crash_torn_probability: 1.0 / 3.0,
            crash_keep_dir_op_probability: 0.5,
            fsync_fail_probability: 0.0,
            read_bit_flip_probability: 0.0,
            latent_sector_error_probability: 0.0,
            misdirected_write_probability: 0.0,
            capacity_bytes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DiskEvent {
    Crashed,
}

impl DiskEvent {
    pub fn name(&self) -> &'static str {
        "crashed"
    }
}

#[derive(Clone)]
pub struct SimDisk {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl SimDisk {
    pub fn new(_config: DiskConfig, _rng: SimRng) -> Self {
        SimDisk {
            files: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
    pub fn crash(&self) {}
    pub fn take_events(&self) -> Vec<DiskEvent> {
        Vec::new()
    }
}

impl Vfs for SimDisk {
    fn create(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        Err(VfsError::NotFound { path: path.into() })
    }
    fn open(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        Err(VfsError::NotFound { path: path.into() })
    }
    fn exists(&self, path: &str) -> VfsResult<bool> {
        Ok(self
            .files
            .lock()
            .map(|f| f.contains_key(path))
            .unwrap_or(false))
    }
    fn list(&self, _dir: &str) -> VfsResult<Vec<String>> {
        Ok(Vec::new())
    }
    fn rename(&self, from: &str, _to: &str) -> VfsResult<()> {
        Err(VfsError::NotFound { path: from.into() })
    }
    fn remove(&self, path: &str) -> VfsResult<()> {
        Err(VfsError::NotFound { path: path.into() })
    }
    fn create_dir_all(&self, _dir: &str) -> VfsResult<()> {
        Ok(())
    }
    fn sync_dir(&self, _dir: &str) -> VfsResult<()> {
        Ok(())
    }
}
