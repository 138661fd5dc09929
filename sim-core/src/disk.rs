//! [`SimDisk`]: a sector-granular simulated disk implementing [`storage::vfs::Vfs`].
//!
//! Each node gets one `SimDisk` (a cloneable handle to shared state). Engines write
//! through it like through a real file system; the kernel calls [`SimDisk::crash`] when
//! the node crashes, and drains [`SimDisk::take_events`] into the trace.
//!
//! # State
//!
//! - **Inodes** hold a *durable image* (what survives a crash) and a *volatile view* (what
//!   reads return: the page cache), plus the set of *dirty sectors* written since the
//!   last successful [`VfsFile::sync`]. A file handle refers to the inode, so it survives
//!   rename and unlink (POSIX).
//! - **Namespaces**: a durable namespace (paths → file inode or directory) and a volatile
//!   one, plus an ordered log of the directory operations (create, mkdir, rename,
//!   unlink) not yet known durable. [`Vfs::sync_dir`] of a directory makes every logged
//!   operation touching that directory durable (a rename touches both parents).
//!
//! # Crash model ([`SimDisk::crash`])
//!
//! 1. **Directory operations.** The log is replayed in order onto the durable namespace.
//!    Operations forced by a `sync_dir` always survive. Each other operation survives
//!    with probability `crash_keep_dir_op_probability`, and the replay of unforced
//!    operations *stops at the first one lost* (every later unforced one is lost too):
//!    the surviving state is a prefix of the operation history, as with an ordered
//!    metadata journal (ext4, XFS), plus whatever `sync_dir` forced. A rename is one
//!    operation and survives atomically. Entries whose parent directory did not survive
//!    are dropped.
//! 2. **File data.** Every dirty sector is independently *kept* (new contents), *lost*
//!    (reverts to the durable contents) or *torn* (new bytes for a random non-empty,
//!    non-full prefix of the sector, in 512-byte sub-blocks when the sector is a
//!    multiple of 512 bytes larger than 512, else in bytes; old bytes after it), with
//!    probabilities `crash_keep_probability`, `crash_torn_probability` and the rest.
//! 3. **File length.** If the file grew since its last sync, the length is the durable
//!    length extended over the run of *kept* sectors that starts at the old end, plus
//!    at most one *torn* sector that ends the run, capped at the volatile length (a size
//!    increase never exposes a hole of unwritten data, as in a journaling file system's
//!    ordered mode). If it shrank, the shrink survives with probability 1/2.
//! 4. Afterwards volatile == durable, every file handle from before the crash fails with
//!    [`VfsError::Io`] (handles carry the disk's generation), and unreachable inodes are
//!    freed.
//!
//! # Faults
//!
//! Each fault has a probability in [`DiskConfig`] and an explicit trigger,
//! [`SimDisk::inject`], which fires on the next matching operation (the path the file
//! was opened with starts with the trigger's prefix):
//!
//! - **fsync failure**: `sync` returns [`VfsError::Io`] and *drops* the file's dirty
//!   sectors: they stay in the volatile view (reads still see them, like Linux's page
//!   cache) but are no longer dirty, so a later successful sync does not write them and
//!   a crash reverts them (fsyncgate).
//! - **bit flip on read**: one bit of the returned buffer is flipped; the stored data is
//!   unchanged.
//! - **latent sector error**: a sector touched by a read becomes unreadable; every read
//!   touching it fails with [`VfsError::Io`] until a write covers (part of) the sector.
//! - **misdirected write**: the write lands a whole number of sectors away from where it
//!   was aimed, inside the same file (or, if there is no such place, past its end, where
//!   it is lost); the file length is updated as if it had landed correctly.
//! - **no space**: a write or extension fails with [`VfsError::NoSpace`] (probability,
//!   trigger, or when the bytes in use would exceed `capacity_bytes`).
//!
//! # Events
//!
//! Every injected fault and every crash outcome is a [`DiskEvent`]. A crash records one
//! [`DiskEvent::CrashDirOpLost`] per lost directory operation (at most
//! [`MAX_DIR_OP_EVENTS`]), one [`DiskEvent::CrashFile`] summary per file that had
//! unsynced data or length, and a final [`DiskEvent::Crash`] with the totals; events are
//! per file rather than per sector so a crash costs a bounded number of trace lines.
//! [`SimDisk::fault_counts`] keeps running totals.
//!
//! Determinism: all randomness comes from the [`SimRng`] passed to [`SimDisk::new`];
//! state is kept in `BTreeMap`s and `BTreeSet`s only; nothing reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use storage::vfs::{self, Vfs, VfsError, VfsFile, VfsOp, VfsResult};

use crate::rng::SimRng;

/// The default sector size, in bytes.
pub const DEFAULT_SECTOR_SIZE: usize = 4096;
/// The smallest sector size accepted.
pub const MIN_SECTOR_SIZE: usize = 16;
/// The largest sector size accepted.
pub const MAX_SECTOR_SIZE: usize = 1 << 20;
/// The largest file a `SimDisk` holds (writes past it fail with [`VfsError::NoSpace`]).
pub const MAX_FILE_BYTES: u64 = 1 << 32;
/// At most this many [`DiskEvent::CrashDirOpLost`] events are recorded per crash (the
/// [`DiskEvent::Crash`] summary counts all of them).
pub const MAX_DIR_OP_EVENTS: usize = 64;

const SUB_BLOCK: usize = 512;

/// The disk's geometry and fault probabilities. Probabilities are in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskConfig {
    /// Sector size in bytes: a power of two from [`MIN_SECTOR_SIZE`] to [`MAX_SECTOR_SIZE`].
    pub sector_size: usize,
    /// On a crash, the probability that an unsynced dirty sector keeps its new contents.
    pub crash_keep_probability: f64,
    /// On a crash, the probability that an unsynced dirty sector is torn. The remaining
    /// probability `1 - keep - torn` is that of losing it.
    pub crash_torn_probability: f64,
    /// On a crash, the probability that each unsynced directory operation survives (the
    /// replay stops at the first one that does not).
    pub crash_keep_dir_op_probability: f64,
    /// Per `sync` call.
    pub fsync_fail_probability: f64,
    /// Per read call.
    pub read_bit_flip_probability: f64,
    /// Per read call: one sector touched by the read goes bad.
    pub latent_sector_error_probability: f64,
    /// Per write call.
    pub misdirected_write_probability: f64,
    /// Per write call (a transient "disk full").
    pub no_space_probability: f64,
    /// The bytes the files may use in total (the larger of each file's durable and
    /// volatile length); `None` is unlimited.
    pub capacity_bytes: Option<u64>,
    /// Where the per-call faults (fsync failure, bit flip, latent sector error,
    /// misdirected write, no space by probability) may strike: files whose path starts
    /// with one of these prefixes (a plain string prefix: `a/b.db` also covers
    /// `a/b.db.tmp`). Empty (the default) is every file. The crash model (torn and lost
    /// sectors, lost directory operations), `capacity_bytes` and explicit triggers
    /// apply everywhere.
    /// Aiming faults at one engine's file reaches defects that faults spread over every
    /// file (mostly logs, which fail-stop) take thousands of runs to reach.
    pub fault_paths: Vec<String>,
}

impl Default for DiskConfig {
    /// No faults; the crash model keeps, loses and tears unsynced sectors with
    /// probability 1/3 each and keeps each unsynced directory operation with probability 1/2.
    fn default() -> Self {
        DiskConfig {
            sector_size: DEFAULT_SECTOR_SIZE,
            crash_keep_probability: 1.0 / 3.0,
            crash_torn_probability: 1.0 / 3.0,
            crash_keep_dir_op_probability: 0.5,
            fsync_fail_probability: 0.0,
            read_bit_flip_probability: 0.0,
            latent_sector_error_probability: 0.0,
            misdirected_write_probability: 0.0,
            no_space_probability: 0.0,
            capacity_bytes: None,
            fault_paths: Vec::new(),
        }
    }
}

/// An invalid [`DiskConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiskConfigError {
    #[error(
        "sector_size {0} is invalid: expected a power of two from {MIN_SECTOR_SIZE} to {MAX_SECTOR_SIZE}"
    )]
    SectorSize(usize),
    #[error("{field} = {value} is not a probability in [0, 1]")]
    Probability { field: &'static str, value: f64 },
    #[error("crash_keep_probability + crash_torn_probability = {0} exceeds 1")]
    CrashProbabilitiesExceedOne(f64),
}

impl DiskConfig {
    /// A disk that never loses anything: a crash keeps every unsynced write and every
    /// unsynced directory operation, and no fault is injected.
    pub fn reliable() -> Self {
        DiskConfig {
            crash_keep_probability: 1.0,
            crash_torn_probability: 0.0,
            crash_keep_dir_op_probability: 1.0,
            ..DiskConfig::default()
        }
    }

    /// A disk that loses every unsynced write and directory operation on a crash.
    pub fn lossy() -> Self {
        DiskConfig {
            crash_keep_probability: 0.0,
            crash_torn_probability: 0.0,
            crash_keep_dir_op_probability: 0.0,
            ..DiskConfig::default()
        }
    }

    fn probabilities(&self) -> [(&'static str, f64); 8] {
        [
            ("crash_keep_probability", self.crash_keep_probability),
            ("crash_torn_probability", self.crash_torn_probability),
            (
                "crash_keep_dir_op_probability",
                self.crash_keep_dir_op_probability,
            ),
            ("fsync_fail_probability", self.fsync_fail_probability),
            ("read_bit_flip_probability", self.read_bit_flip_probability),
            (
                "latent_sector_error_probability",
                self.latent_sector_error_probability,
            ),
            (
                "misdirected_write_probability",
                self.misdirected_write_probability,
            ),
            ("no_space_probability", self.no_space_probability),
        ]
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), DiskConfigError> {
        if !self.sector_size.is_power_of_two()
            || !(MIN_SECTOR_SIZE..=MAX_SECTOR_SIZE).contains(&self.sector_size)
        {
            return Err(DiskConfigError::SectorSize(self.sector_size));
        }
        for (field, value) in self.probabilities() {
            if !(0.0..=1.0).contains(&value) {
                return Err(DiskConfigError::Probability { field, value });
            }
        }
        let sum = self.crash_keep_probability + self.crash_torn_probability;
        if sum > 1.0 + 1e-9 {
            return Err(DiskConfigError::CrashProbabilitiesExceedOne(sum));
        }
        Ok(())
    }

    /// The nearest valid configuration: probabilities clamped to `[0, 1]` (NaN → 0),
    /// keep and torn scaled down if their sum exceeds 1, the sector size rounded up to
    /// a power of two and clamped to the accepted range.
    pub fn sanitized(&self) -> DiskConfig {
        fn clamp(p: f64) -> f64 {
            if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
        }
        let mut c = self.clone();
        c.sector_size = self
            .sector_size
            .clamp(MIN_SECTOR_SIZE, MAX_SECTOR_SIZE)
            .next_power_of_two();
        c.crash_keep_probability = clamp(c.crash_keep_probability);
        c.crash_torn_probability = clamp(c.crash_torn_probability);
        c.crash_keep_dir_op_probability = clamp(c.crash_keep_dir_op_probability);
        c.fsync_fail_probability = clamp(c.fsync_fail_probability);
        c.read_bit_flip_probability = clamp(c.read_bit_flip_probability);
        c.latent_sector_error_probability = clamp(c.latent_sector_error_probability);
        c.misdirected_write_probability = clamp(c.misdirected_write_probability);
        c.no_space_probability = clamp(c.no_space_probability);
        let sum = c.crash_keep_probability + c.crash_torn_probability;
        if sum > 1.0 {
            c.crash_keep_probability /= sum;
            c.crash_torn_probability = 1.0 - c.crash_keep_probability;
        }
        c
    }
}

/// An explicit fault trigger (see [`SimDisk::inject`]). Each fires once, on the next
/// operation of its kind on a file whose path (as opened) starts with `path_prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFault {
    /// The next `sync` fails and drops the file's dirty data.
    FsyncFail { path_prefix: String },
    /// The next read returns a buffer with one bit flipped.
    BitFlip { path_prefix: String },
    /// The next read makes one of the sectors it touches unreadable (and fails).
    LatentSectorError { path_prefix: String },
    /// The next write lands at another sector offset of the file.
    MisdirectedWrite { path_prefix: String },
    /// The next write fails with [`VfsError::NoSpace`].
    NoSpace { path_prefix: String },
}

impl DiskFault {
    fn prefix(&self) -> &str {
        match self {
            DiskFault::FsyncFail { path_prefix }
            | DiskFault::BitFlip { path_prefix }
            | DiskFault::LatentSectorError { path_prefix }
            | DiskFault::MisdirectedWrite { path_prefix }
            | DiskFault::NoSpace { path_prefix } => path_prefix,
        }
    }

    fn kind(&self) -> FaultKind {
        match self {
            DiskFault::FsyncFail { .. } => FaultKind::FsyncFail,
            DiskFault::BitFlip { .. } => FaultKind::BitFlip,
            DiskFault::LatentSectorError { .. } => FaultKind::LatentSectorError,
            DiskFault::MisdirectedWrite { .. } => FaultKind::MisdirectedWrite,
            DiskFault::NoSpace { .. } => FaultKind::NoSpace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    FsyncFail,
    BitFlip,
    LatentSectorError,
    MisdirectedWrite,
    NoSpace,
}

/// A directory operation, as recorded in [`DiskEvent::CrashDirOpLost`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirOp {
    Create { path: String },
    Mkdir { path: String },
    Rename { from: String, to: String },
    Remove { path: String },
}

/// What a disk did: an injected fault or a crash outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskEvent {
    /// A sync failed; `dropped_sectors` dirty sectors will never be written.
    FsyncFailed { path: String, dropped_sectors: u64 },
    /// A read returned a buffer with the bit `bit` of the byte at file offset `offset` flipped.
    BitFlip { path: String, offset: u64, bit: u8 },
    /// The sector became unreadable.
    LatentSectorError { path: String, sector: u64 },
    /// A read failed because it touched an unreadable sector.
    LatentSectorRead { path: String, sector: u64 },
    /// A write of `len` bytes aimed at `intended_offset` landed at `actual_offset`
    /// (at or past the file's end means it was lost).
    MisdirectedWrite {
        path: String,
        intended_offset: u64,
        actual_offset: u64,
        len: u64,
    },
    /// A write or extension failed for lack of space.
    NoSpace { path: String, requested_len: u64 },
    /// A crash lost this unsynced directory operation.
    CrashDirOpLost { op: DirOp },
    /// What a crash did to a file with unsynced data or length.
    CrashFile {
        path: String,
        durable_len: u64,
        volatile_len: u64,
        len_after: u64,
        sectors_kept: u64,
        sectors_lost: u64,
        sectors_torn: u64,
    },
    /// A crash, with totals (the disk's generation after it).
    Crash {
        generation: u64,
        files: u64,
        sectors_kept: u64,
        sectors_lost: u64,
        sectors_torn: u64,
        dir_ops_kept: u64,
        dir_ops_lost: u64,
    },
}

impl DiskEvent {
    /// Whether this is an injected fault (as opposed to a crash outcome).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            DiskEvent::CrashDirOpLost { .. }
                | DiskEvent::CrashFile { .. }
                | DiskEvent::Crash { .. }
        )
    }

    /// A short stable name (for counters).
    pub fn name(&self) -> &'static str {
        match self {
            DiskEvent::FsyncFailed { .. } => "fsync_failed",
            DiskEvent::BitFlip { .. } => "bit_flip",
            DiskEvent::LatentSectorError { .. } => "latent_sector_error",
            DiskEvent::LatentSectorRead { .. } => "latent_sector_read",
            DiskEvent::MisdirectedWrite { .. } => "misdirected_write",
            DiskEvent::NoSpace { .. } => "no_space",
            DiskEvent::CrashDirOpLost { .. } => "crash_dir_op_lost",
            DiskEvent::CrashFile { .. } => "crash_file",
            DiskEvent::Crash { .. } => "crash",
        }
    }
}

/// Running totals of a disk's faults and crash outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub fsync_failures: u64,
    pub bit_flips: u64,
    pub latent_sector_errors: u64,
    pub latent_sector_reads: u64,
    pub misdirected_writes: u64,
    pub no_space: u64,
    pub crashes: u64,
    pub crash_sectors_kept: u64,
    pub crash_sectors_lost: u64,
    pub crash_sectors_torn: u64,
    pub crash_dir_ops_kept: u64,
    pub crash_dir_ops_lost: u64,
}

/// A simulated disk (a cheap, cloneable handle; clones share the disk).
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("SimDisk")
            .field("generation", &inner.generation)
            .field("files", &inner.inodes.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Debug)]
struct Inode {
    /// The last path it was created or renamed at (for events).
    name: String,
    durable: Vec<u8>,
    data: Vec<u8>,
    dirty: BTreeSet<u64>,
    bad: BTreeSet<u64>,
    open: u32,
}

#[derive(Debug, Clone)]
struct PendingOp {
    op: DirOp,
    ino: Option<u64>,
    forced: bool,
}

impl PendingOp {
    fn touches(&self, dir: &str) -> bool {
        match &self.op {
            DirOp::Create { path } | DirOp::Mkdir { path } | DirOp::Remove { path } => {
                vfs::split_parent(path).0 == dir
            }
            DirOp::Rename { from, to } => {
                vfs::split_parent(from).0 == dir || vfs::split_parent(to).0 == dir
            }
        }
    }

    fn apply(&self, ns: &mut BTreeMap<String, Node>) {
        let file = self.ino.map(Node::File);
        match &self.op {
            DirOp::Create { path } => {
                if let Some(node) = file {
                    ns.insert(path.clone(), node);
                }
            }
            DirOp::Mkdir { path } => {
                ns.entry(path.clone()).or_insert(Node::Dir);
            }
            DirOp::Rename { from, to } => {
                if let Some(node) = file {
                    if ns.get(from) == Some(&node) {
                        ns.remove(from);
                    }
                    ns.insert(to.clone(), node);
                }
            }
            DirOp::Remove { path } => {
                if file.is_some() && ns.get(path) == file.as_ref() {
                    ns.remove(path);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    Lose,
    Tear,
}

struct Inner {
    config: DiskConfig,
    rng: SimRng,
    generation: u64,
    next_ino: u64,
    inodes: BTreeMap<u64, Inode>,
    durable_ns: BTreeMap<String, Node>,
    volatile_ns: BTreeMap<String, Node>,
    pending: Vec<PendingOp>,
    triggers: Vec<DiskFault>,
    events: Vec<DiskEvent>,
    counts: FaultCounts,
    /// A crash point inside an operation: how many more mutations succeed before the
    /// disk stops (see [`SimDisk::arm_crash_point`]).
    crash_point: Option<u32>,
    /// The crash point was reached: every operation fails until the crash.
    stopped: bool,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io(path: &str, op: VfsOp, detail: impl Into<String>) -> VfsError {
    VfsError::Io {
        path: path.to_string(),
        op,
        detail: detail.into(),
    }
}

fn not_found(path: &str) -> VfsError {
    VfsError::NotFound {
        path: path.to_string(),
    }
}

impl SimDisk {
    /// A new, empty disk. An invalid configuration is replaced by
    /// [`DiskConfig::sanitized`] (use [`SimDisk::try_new`] to reject it instead).
    pub fn new(config: DiskConfig, rng: SimRng) -> Self {
        let config = match config.validate() {
            Ok(()) => config,
            Err(_) => config.sanitized(),
        };
        SimDisk {
            inner: Arc::new(Mutex::new(Inner {
                config,
                rng,
                generation: 0,
                next_ino: 1,
                inodes: BTreeMap::new(),
                durable_ns: BTreeMap::new(),
                volatile_ns: BTreeMap::new(),
                pending: Vec::new(),
                triggers: Vec::new(),
                events: Vec::new(),
                counts: FaultCounts::default(),
                crash_point: None,
                stopped: false,
            })),
        }
    }

    /// A new, empty disk, or an error if the configuration is invalid.
    pub fn try_new(config: DiskConfig, rng: SimRng) -> Result<Self, DiskConfigError> {
        config.validate()?;
        Ok(SimDisk::new(config, rng))
    }

    /// A [`storage::vfs::VfsHandle`] on this disk.
    pub fn handle(&self) -> storage::vfs::VfsHandle {
        Arc::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The current configuration.
    pub fn config(&self) -> DiskConfig {
        self.lock().config.clone()
    }

    /// Replaces the configuration (e.g. a nemesis turning a fault on).
    pub fn set_config(&self, config: DiskConfig) -> Result<(), DiskConfigError> {
        config.validate()?;
        self.lock().config = config;
        Ok(())
    }

    /// Sets the capacity in bytes (`None`: unlimited).
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().config.capacity_bytes = capacity_bytes;
    }

    /// The bytes in use: the sum over files of the larger of their durable and volatile length.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Arms an explicit fault trigger; it fires on the next matching operation.
    pub fn inject(&self, fault: DiskFault) {
        self.lock().triggers.push(fault);
    }

    /// Makes `sector` of the file at `path` unreadable now (a latent sector error).
    pub fn mark_latent_sector_error(&self, path: &str, sector: u64) -> VfsResult<()> {
        vfs::validate_path(path)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        match inner.volatile_ns.get(path) {
            Some(Node::File(ino)) => {
                if let Some(inode) = inner.inodes.get_mut(ino) {
                    inode.bad.insert(sector);
                }
                inner.counts.latent_sector_errors += 1;
                inner.events.push(DiskEvent::LatentSectorError {
                    path: path.to_string(),
                    sector,
                });
                Ok(())
            }
            Some(Node::Dir) => Err(io(path, VfsOp::Open, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    /// Drains the events recorded since the last call.
    pub fn take_events(&self) -> Vec<DiskEvent> {
        std::mem::take(&mut self.lock().events)
    }

    /// Running totals of faults and crash outcomes.
    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().counts.clone()
    }

    /// How many times the disk has crashed.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The volatile view of the whole tree: each path with its contents (`None` for a
    /// directory). For tests and debugging.
    pub fn snapshot(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        let inner = self.lock();
        inner
            .volatile_ns
            .iter()
            .map(|(path, node)| {
                let contents = match node {
                    Node::Dir => None,
                    Node::File(ino) => Some(
                        inner
                            .inodes
                            .get(ino)
                            .map(|i| i.data.clone())
                            .unwrap_or_default(),
                    ),
                };
                (path.clone(), contents)
            })
            .collect()
    }

    /// Crashes the disk: applies the crash model (see the module docs) to every unsynced
    /// write and directory operation. Every file handle opened before fails afterwards.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// Arms a crash point inside an operation: the next `after` mutations (writes,
    /// truncations, syncs, creations, renames, removals, directory syncs) succeed, and
    /// from the one after that on, every operation fails with `VfsError::Io` and changes
    /// nothing: the process is dead from that instant, though the handler that was
    /// running finishes. The simulator then crashes the node ([`SimDisk::crash`]), which
    /// clears the crash point.
    pub fn arm_crash_point(&self, after: u32) {
        let mut inner = self.lock();
        inner.crash_point = Some(after);
        inner.stopped = false;
    }

    /// Whether an armed crash point has been reached.
    pub fn crash_point_reached(&self) -> bool {
        self.lock().stopped
    }
}

impl Inner {
    /// Lets an operation through unless an armed crash point stops it. `mutates`: the
    /// operation changes the disk (and counts toward the crash point).
    fn gate(&mut self, path: &str, op: VfsOp, mutates: bool) -> VfsResult<()> {
        if !self.stopped && mutates {
            match self.crash_point {
                Some(0) => {
                    self.stopped = true;
                    self.crash_point = None;
                }
                Some(n) => self.crash_point = Some(n - 1),
                None => {}
            }
        }
        if self.stopped {
            return Err(io(path, op, "the process crashed at a crash point"));
        }
        Ok(())
    }

    fn node(&self, path: &str) -> Option<Node> {
        if path.is_empty() {
            Some(Node::Dir)
        } else {
            self.volatile_ns.get(path).copied()
        }
    }

    fn sector_size(&self) -> u64 {
        self.config.sector_size as u64
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| i.durable.len().max(i.data.len()) as u64)
            .sum()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// Whether a fault of `kind` fires for `path`: an armed trigger (consumed) or the
    /// configured probability, if `path` is under one of the configured `fault_paths`
    /// (a path outside them draws nothing from the rng).
    fn fires(&mut self, kind: FaultKind, path: &str, p: f64) -> bool {
        if let Some(i) = self
            .triggers
            .iter()
            .position(|f| f.kind() == kind && path.starts_with(f.prefix()))
        {
            self.triggers.remove(i);
            return true;
        }
        let aimed = &self.config.fault_paths;
        if !aimed.is_empty() && !aimed.iter().any(|prefix| path.starts_with(prefix.as_str())) {
            return false;
        }
        self.chance(p)
    }

    fn log(&mut self, op: DirOp, ino: Option<u64>) {
        let pending = PendingOp {
            op,
            ino,
            forced: false,
        };
        pending.apply(&mut self.volatile_ns);
        self.pending.push(pending);
    }

    fn parent_dir(&self, path: &str, op: VfsOp) -> VfsResult<()> {
        let (parent, _) = vfs::split_parent(path);
        match self.node(parent) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(io(path, op, "a path component is not a directory")),
            None => Err(not_found(parent)),
        }
    }

    /// Frees inodes no namespace, pending operation or open handle refers to.
    fn gc(&mut self) {
        let mut live = BTreeSet::new();
        for node in self.durable_ns.values().chain(self.volatile_ns.values()) {
            if let Node::File(ino) = node {
                live.insert(*ino);
            }
        }
        for op in &self.pending {
            if let Some(ino) = op.ino {
                live.insert(ino);
            }
        }
        self.inodes
            .retain(|ino, inode| inode.open > 0 || live.contains(ino));
    }

    fn open_handle(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open += 1;
        }
    }

    fn create(&mut self, path: &str) -> VfsResult<u64> {
        vfs::validate_path(path)?;
        if self.node(path).is_some() {
            return Err(VfsError::AlreadyExists {
                path: path.to_string(),
            });
        }
        self.parent_dir(path, VfsOp::Create)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                name: path.to_string(),
                durable: Vec::new(),
                data: Vec::new(),
                dirty: BTreeSet::new(),
                bad: BTreeSet::new(),
                open: 0,
            },
        );
        self.log(
            DirOp::Create {
                path: path.to_string(),
            },
            Some(ino),
        );
        self.open_handle(ino);
        Ok(ino)
    }

    fn open(&mut self, path: &str) -> VfsResult<u64> {
        vfs::validate_path(path)?;
        match self.node(path) {
            Some(Node::File(ino)) => {
                self.open_handle(ino);
                Ok(ino)
            }
            Some(Node::Dir) => Err(io(path, VfsOp::Open, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn list(&self, dir: &str) -> VfsResult<Vec<String>> {
        vfs::validate_path(dir)?;
        match self.node(dir) {
            Some(Node::Dir) => {}
            Some(Node::File(_)) => return Err(io(dir, VfsOp::List, "not a directory")),
            None => return Err(not_found(dir)),
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = self
            .volatile_ns
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .filter_map(|(path, _)| {
                let rest = &path[prefix.len()..];
                (!rest.contains('/')).then(|| rest.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn rename(&mut self, from: &str, to: &str) -> VfsResult<()> {
        vfs::validate_path(from)?;
        vfs::validate_path(to)?;
        let ino = match self.node(from) {
            Some(Node::File(ino)) => ino,
            Some(Node::Dir) => return Err(io(from, VfsOp::Rename, "is a directory")),
            None => return Err(not_found(from)),
        };
        match self.node(to) {
            Some(Node::Dir) => return Err(io(to, VfsOp::Rename, "is a directory")),
            Some(Node::File(_)) | None => {}
        }
        self.parent_dir(to, VfsOp::Rename)?;
        if from == to {
            return Ok(());
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.name = to.to_string();
        }
        self.log(
            DirOp::Rename {
                from: from.to_string(),
                to: to.to_string(),
            },
            Some(ino),
        );
        self.gc();
        Ok(())
    }

    fn remove(&mut self, path: &str) -> VfsResult<()> {
        vfs::validate_path(path)?;
        let ino = match self.node(path) {
            Some(Node::File(ino)) => ino,
            Some(Node::Dir) => return Err(io(path, VfsOp::Remove, "is a directory")),
            None => return Err(not_found(path)),
        };
        self.log(
            DirOp::Remove {
                path: path.to_string(),
            },
            Some(ino),
        );
        self.gc();
        Ok(())
    }

    fn create_dir_all(&mut self, dir: &str) -> VfsResult<()> {
        vfs::validate_path(dir)?;
        if dir.is_empty() {
            return Ok(());
        }
        let mut current = String::new();
        for component in dir.split('/') {
            current = vfs::join(&current, component);
            match self.node(&current) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(io(&current, VfsOp::CreateDir, "a file is in the way"));
                }
                None => self.log(
                    DirOp::Mkdir {
                        path: current.clone(),
                    },
                    None,
                ),
            }
        }
        Ok(())
    }

    fn sync_dir(&mut self, dir: &str) -> VfsResult<()> {
        vfs::validate_path(dir)?;
        match self.node(dir) {
            Some(Node::Dir) => {}
            Some(Node::File(_)) => return Err(io(dir, VfsOp::SyncDir, "not a directory")),
            None => return Err(not_found(dir)),
        }
        for op in &mut self.pending {
            if op.touches(dir) {
                op.forced = true;
            }
        }
        // Fold the forced prefix of the log into the durable namespace.
        let done = self.pending.iter().take_while(|op| op.forced).count();
        for op in self.pending.drain(..done) {
            op.apply(&mut self.durable_ns);
        }
        self.gc();
        Ok(())
    }

    fn handle_inode(&mut self, file: &SimFile, op: VfsOp) -> VfsResult<()> {
        if file.generation != self.generation {
            return Err(io(
                &file.path,
                op,
                "stale file handle: the disk crashed after it was opened",
            ));
        }
        if self.inodes.contains_key(&file.ino) {
            Ok(())
        } else {
            Err(io(&file.path, op, "the file no longer exists"))
        }
    }

    fn read(&mut self, file: &SimFile, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        self.handle_inode(file, VfsOp::Read)?;
        let sector = self.sector_size();
        let (lse_p, flip_p) = (
            self.config.latent_sector_error_probability,
            self.config.read_bit_flip_probability,
        );
        let len = self
            .inodes
            .get(&file.ino)
            .map_or(0, |i| i.data.len() as u64);
        if offset >= len || buf.is_empty() {
            return Ok(0);
        }
        let n = (len - offset).min(buf.len() as u64);
        let (first, last) = (offset / sector, (offset + n - 1) / sector);
        if self.fires(FaultKind::LatentSectorError, &file.path, lse_p) {
            let s = self.rng.random_range(first..=last);
            if let Some(inode) = self.inodes.get_mut(&file.ino) {
                inode.bad.insert(s);
            }
            self.counts.latent_sector_errors += 1;
            self.events.push(DiskEvent::LatentSectorError {
                path: file.path.clone(),
                sector: s,
            });
        }
        let Some(inode) = self.inodes.get(&file.ino) else {
            return Err(io(&file.path, VfsOp::Read, "the file no longer exists"));
        };
        if let Some(&bad) = inode.bad.range(first..=last).next() {
            self.counts.latent_sector_reads += 1;
            self.events.push(DiskEvent::LatentSectorRead {
                path: file.path.clone(),
                sector: bad,
            });
            return Err(io(
                &file.path,
                VfsOp::Read,
                format!("latent sector error in sector {bad}"),
            ));
        }
        let n = n as usize;
        let start = offset as usize;
        buf[..n].copy_from_slice(&inode.data[start..start + n]);
        if self.fires(FaultKind::BitFlip, &file.path, flip_p) {
            let i = self.rng.random_range(0..n);
            let bit: u8 = self.rng.random_range(0..8);
            buf[i] ^= 1 << bit;
            self.counts.bit_flips += 1;
            self.events.push(DiskEvent::BitFlip {
                path: file.path.clone(),
                offset: offset + i as u64,
                bit,
            });
        }
        Ok(n)
    }

    /// Fails with `NoSpace` if growing the inode to `new_len` does not fit.
    fn check_space(&mut self, file: &SimFile, new_len: u64) -> VfsResult<()> {
        let no_space = || VfsError::NoSpace {
            path: file.path.clone(),
        };
        let (cur, durable) = match self.inodes.get(&file.ino) {
            Some(i) => (i.data.len() as u64, i.durable.len() as u64),
            None => return Ok(()),
        };
        let over_file_limit = new_len > MAX_FILE_BYTES;
        let over_capacity = match self.config.capacity_bytes {
            Some(cap) if new_len > cur => {
                let used = self.used_bytes();
                let after = used - cur.max(durable) + new_len.max(durable);
                after > cap
            }
            _ => false,
        };
        if over_file_limit || over_capacity {
            self.counts.no_space += 1;
            self.events.push(DiskEvent::NoSpace {
                path: file.path.clone(),
                requested_len: new_len,
            });
            return Err(no_space());
        }
        Ok(())
    }

    fn write(&mut self, file: &SimFile, offset: u64, data: &[u8]) -> VfsResult<()> {
        self.handle_inode(file, VfsOp::Write)?;
        if data.is_empty() {
            return Ok(());
        }
        let n = data.len() as u64;
        let end = offset
            .checked_add(n)
            .ok_or_else(|| io(&file.path, VfsOp::Write, "offset overflow"))?;
        let no_space_p = self.config.no_space_probability;
        if self.fires(FaultKind::NoSpace, &file.path, no_space_p) {
            self.counts.no_space += 1;
            self.events.push(DiskEvent::NoSpace {
                path: file.path.clone(),
                requested_len: end,
            });
            return Err(VfsError::NoSpace {
                path: file.path.clone(),
            });
        }
        let cur = self
            .inodes
            .get(&file.ino)
            .map_or(0, |i| i.data.len() as u64);
        let new_len = cur.max(end);
        self.check_space(file, new_len)?;
        let sector = self.sector_size();
        let misdirect_p = self.config.misdirected_write_probability;
        let actual = if self.fires(FaultKind::MisdirectedWrite, &file.path, misdirect_p) {
            let back = offset / sector;
            let forward = (new_len - 1 - offset) / sector;
            let actual = if back + forward == 0 {
                offset + sector * (forward + 1)
            } else {
                let j = self.rng.random_range(0..back + forward);
                if j < back {
                    offset - (j + 1) * sector
                } else {
                    offset + (j - back + 1) * sector
                }
            };
            self.counts.misdirected_writes += 1;
            self.events.push(DiskEvent::MisdirectedWrite {
                path: file.path.clone(),
                intended_offset: offset,
                actual_offset: actual,
                len: n,
            });
            actual
        } else {
            offset
        };
        let Some(inode) = self.inodes.get_mut(&file.ino) else {
            return Err(io(&file.path, VfsOp::Write, "the file no longer exists"));
        };
        inode.extend_to(new_len, sector);
        if actual < new_len {
            let write_end = (actual + n).min(new_len);
            let count = (write_end - actual) as usize;
            let start = actual as usize;
            inode.data[start..start + count].copy_from_slice(&data[..count]);
            let (first, last) = (actual / sector, (write_end - 1) / sector);
            inode.dirty.extend(first..=last);
            let healed: Vec<u64> = inode.bad.range(first..=last).copied().collect();
            for s in healed {
                inode.bad.remove(&s);
            }
        }
        Ok(())
    }

    fn len(&self, file: &SimFile) -> VfsResult<u64> {
        if file.generation != self.generation {
            return Err(io(
                &file.path,
                VfsOp::Len,
                "stale file handle: the disk crashed after it was opened",
            ));
        }
        self.inodes
            .get(&file.ino)
            .map(|i| i.data.len() as u64)
            .ok_or_else(|| io(&file.path, VfsOp::Len, "the file no longer exists"))
    }

    fn truncate(&mut self, file: &SimFile, new_len: u64) -> VfsResult<()> {
        self.handle_inode(file, VfsOp::Truncate)?;
        let sector = self.sector_size();
        let cur = self
            .inodes
            .get(&file.ino)
            .map_or(0, |i| i.data.len() as u64);
        if new_len > cur {
            self.check_space(file, new_len)?;
        }
        let Some(inode) = self.inodes.get_mut(&file.ino) else {
            return Err(io(&file.path, VfsOp::Truncate, "the file no longer exists"));
        };
        if new_len > cur {
            inode.extend_to(new_len, sector);
        } else if new_len < cur {
            inode.data.truncate(new_len as usize);
            inode.dirty.retain(|s| s * sector < new_len);
            inode.bad.retain(|s| s * sector < new_len);
        }
        Ok(())
    }

    fn sync(&mut self, file: &SimFile) -> VfsResult<()> {
        self.handle_inode(file, VfsOp::Sync)?;
        let sector = self.sector_size();
        let fail_p = self.config.fsync_fail_probability;
        if self.fires(FaultKind::FsyncFail, &file.path, fail_p) {
            let dropped = match self.inodes.get_mut(&file.ino) {
                Some(inode) => std::mem::take(&mut inode.dirty).len() as u64,
                None => 0,
            };
            self.counts.fsync_failures += 1;
            self.events.push(DiskEvent::FsyncFailed {
                path: file.path.clone(),
                dropped_sectors: dropped,
            });
            return Err(io(
                &file.path,
                VfsOp::Sync,
                "fsync failed (injected); the file's unsynced data was dropped",
            ));
        }
        if let Some(inode) = self.inodes.get_mut(&file.ino) {
            let len = inode.data.len();
            inode.durable.resize(len, 0);
            for s in std::mem::take(&mut inode.dirty) {
                let start = (s * sector) as usize;
                if start >= len {
                    continue;
                }
                let end = (start + sector as usize).min(len);
                inode.durable[start..end].copy_from_slice(&inode.data[start..end]);
            }
        }
        Ok(())
    }

    fn draw_outcome(&mut self) -> Outcome {
        let r: f64 = self.rng.random();
        if r < self.config.crash_keep_probability {
            Outcome::Keep
        } else if r < self.config.crash_keep_probability + self.config.crash_torn_probability {
            Outcome::Tear
        } else {
            Outcome::Lose
        }
    }

    fn crash(&mut self) {
        self.generation += 1;
        self.counts.crashes += 1;
        self.crash_point = None;
        self.stopped = false;

        // 1. Directory operations: forced ones, plus a prefix of the others.
        let keep_p = self.config.crash_keep_dir_op_probability;
        let mut cut = false;
        let (mut ops_kept, mut ops_lost) = (0u64, 0u64);
        for op in std::mem::take(&mut self.pending) {
            let survives = if op.forced {
                true
            } else {
                if !cut && !self.chance(keep_p) {
                    cut = true;
                }
                if cut {
                    ops_lost += 1;
                } else {
                    ops_kept += 1;
                }
                !cut
            };
            if survives {
                op.apply(&mut self.durable_ns);
            } else if (ops_lost as usize) <= MAX_DIR_OP_EVENTS {
                self.events.push(DiskEvent::CrashDirOpLost { op: op.op });
            }
        }
        // Drop entries whose parent directory did not survive (parents sort first).
        let paths: Vec<String> = self.durable_ns.keys().cloned().collect();
        for path in paths {
            let (parent, _) = vfs::split_parent(&path);
            if !parent.is_empty() && self.durable_ns.get(parent) != Some(&Node::Dir) {
                self.durable_ns.remove(&path);
            }
        }
        self.volatile_ns = self.durable_ns.clone();

        // 2-3. File data and lengths, for the files that are still reachable.
        let reachable: BTreeSet<u64> = self
            .durable_ns
            .values()
            .filter_map(|n| match n {
                Node::File(ino) => Some(*ino),
                Node::Dir => None,
            })
            .collect();
        self.inodes.retain(|ino, _| reachable.contains(ino));
        let names: BTreeMap<u64, String> = self
            .durable_ns
            .iter()
            .filter_map(|(path, n)| match n {
                Node::File(ino) => Some((*ino, path.clone())),
                Node::Dir => None,
            })
            .collect();
        let sector = self.sector_size();
        let (mut files, mut kept, mut lost, mut torn) = (0u64, 0u64, 0u64, 0u64);
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            let Some(mut inode) = self.inodes.remove(&ino) else {
                continue;
            };
            inode.open = 0;
            if let Some(name) = names.get(&ino) {
                inode.name = name.clone();
            }
            let durable_len = inode.durable.len() as u64;
            let volatile_len = inode.data.len() as u64;
            if !inode.dirty.is_empty() || durable_len != volatile_len {
                let (k, l, t, len_after) = self.crash_file(&mut inode, sector);
                files += 1;
                kept += k;
                lost += l;
                torn += t;
                self.events.push(DiskEvent::CrashFile {
                    path: inode.name.clone(),
                    durable_len,
                    volatile_len,
                    len_after,
                    sectors_kept: k,
                    sectors_lost: l,
                    sectors_torn: t,
                });
            } else {
                inode.data.clone_from(&inode.durable);
            }
            self.inodes.insert(ino, inode);
        }
        self.counts.crash_sectors_kept += kept;
        self.counts.crash_sectors_lost += lost;
        self.counts.crash_sectors_torn += torn;
        self.counts.crash_dir_ops_kept += ops_kept;
        self.counts.crash_dir_ops_lost += ops_lost;
        self.events.push(DiskEvent::Crash {
            generation: self.generation,
            files,
            sectors_kept: kept,
            sectors_lost: lost,
            sectors_torn: torn,
            dir_ops_kept: ops_kept,
            dir_ops_lost: ops_lost,
        });
    }

    /// Applies the crash model to one file; returns (kept, lost, torn, length after).
    fn crash_file(&mut self, inode: &mut Inode, sector: u64) -> (u64, u64, u64, u64) {
        let dl = inode.durable.len() as u64;
        let vl = inode.data.len() as u64;
        let max_len = dl.max(vl);
        let mut result = std::mem::take(&mut inode.durable);
        result.resize(max_len as usize, 0);
        let mut outcomes = BTreeMap::new();
        let (mut kept, mut lost, mut torn) = (0, 0, 0);
        let unit = if sector as usize > SUB_BLOCK && (sector as usize).is_multiple_of(SUB_BLOCK) {
            SUB_BLOCK as u64
        } else {
            1
        };
        for &s in &inode.dirty {
            let start = s * sector;
            if start >= max_len {
                continue;
            }
            let end = (start + sector).min(max_len);
            let outcome = self.draw_outcome();
            let new_end = match outcome {
                Outcome::Keep => {
                    kept += 1;
                    end
                }
                Outcome::Lose => {
                    lost += 1;
                    start
                }
                Outcome::Tear => {
                    torn += 1;
                    let units = sector / unit;
                    let k = self.rng.random_range(1..units);
                    (start + k * unit).min(end)
                }
            };
            for i in start..new_end {
                result[i as usize] = inode.data.get(i as usize).copied().unwrap_or(0);
            }
            outcomes.insert(s, outcome);
        }
        let len_after = if vl >= dl {
            let mut len = dl;
            let mut s = dl / sector;
            while s * sector < vl {
                match outcomes.get(&s) {
                    Some(Outcome::Keep) => {
                        len = vl.min((s + 1) * sector);
                        s += 1;
                    }
                    Some(Outcome::Tear) => {
                        len = vl.min((s + 1) * sector);
                        break;
                    }
                    Some(Outcome::Lose) | None => break,
                }
            }
            len.max(dl)
        } else if self.rng.random_bool(0.5) {
            vl
        } else {
            dl
        };
        result.truncate(len_after as usize);
        inode.data.clone_from(&result);
        inode.durable = result;
        inode.dirty.clear();
        (kept, lost, torn, len_after)
    }
}

impl Inode {
    /// Grows the volatile view to `new_len` with zeros, marking the new sectors dirty.
    fn extend_to(&mut self, new_len: u64, sector: u64) {
        let cur = self.data.len() as u64;
        if new_len > cur {
            self.data.resize(new_len as usize, 0);
            self.dirty.extend(cur / sector..=(new_len - 1) / sector);
        }
    }
}

/// An open file of a [`SimDisk`].
struct SimFile {
    disk: Arc<Mutex<Inner>>,
    ino: u64,
    generation: u64,
    path: String,
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut inner = lock(&self.disk);
        if inner.generation == self.generation {
            if let Some(inode) = inner.inodes.get_mut(&self.ino) {
                inode.open = inode.open.saturating_sub(1);
            }
            inner.gc();
        }
    }
}

impl VfsFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        let mut inner = lock(&self.disk);
        inner.gate(&self.path, VfsOp::Read, false)?;
        inner.read(self, offset, buf)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        let mut inner = lock(&self.disk);
        inner.gate(&self.path, VfsOp::Write, true)?;
        inner.write(self, offset, data)
    }

    fn append(&mut self, data: &[u8]) -> VfsResult<u64> {
        let mut inner = lock(&self.disk);
        inner.gate(&self.path, VfsOp::Append, true)?;
        let offset = inner.len(self)?;
        inner.write(self, offset, data)?;
        Ok(offset)
    }

    fn len(&self) -> VfsResult<u64> {
        let mut inner = lock(&self.disk);
        inner.gate(&self.path, VfsOp::Len, false)?;
        inner.len(self)
    }

    fn truncate(&mut self, len: u64) -> VfsResult<()> {
        let mut inner = lock(&self.disk);
        inner.gate(&self.path, VfsOp::Truncate, true)?;
        inner.truncate(self, len)
    }

    fn sync(&mut self) -> VfsResult<()> {
        let mut inner = lock(&self.disk);
        inner.gate(&self.path, VfsOp::Sync, true)?;
        inner.sync(self)
    }

    fn path(&self) -> &str {
        &self.path
    }
}

impl SimDisk {
    fn file(&self, inner: &Inner, ino: u64, path: &str) -> Box<dyn VfsFile> {
        Box::new(SimFile {
            disk: self.inner.clone(),
            ino,
            generation: inner.generation,
            path: path.to_string(),
        })
    }
}

impl Vfs for SimDisk {
    fn create(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        let mut inner = self.lock();
        inner.gate(path, VfsOp::Create, true)?;
        let ino = inner.create(path)?;
        Ok(self.file(&inner, ino, path))
    }

    fn open(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        let mut inner = self.lock();
        inner.gate(path, VfsOp::Open, false)?;
        let ino = inner.open(path)?;
        Ok(self.file(&inner, ino, path))
    }

    fn exists(&self, path: &str) -> VfsResult<bool> {
        vfs::validate_path(path)?;
        let mut inner = self.lock();
        inner.gate(path, VfsOp::Open, false)?;
        Ok(inner.node(path).is_some())
    }

    fn list(&self, dir: &str) -> VfsResult<Vec<String>> {
        let mut inner = self.lock();
        inner.gate(dir, VfsOp::List, false)?;
        inner.list(dir)
    }

    fn rename(&self, from: &str, to: &str) -> VfsResult<()> {
        let mut inner = self.lock();
        inner.gate(from, VfsOp::Rename, true)?;
        inner.rename(from, to)
    }

    fn remove(&self, path: &str) -> VfsResult<()> {
        let mut inner = self.lock();
        inner.gate(path, VfsOp::Remove, true)?;
        inner.remove(path)
    }

    fn create_dir_all(&self, dir: &str) -> VfsResult<()> {
        let mut inner = self.lock();
        inner.gate(dir, VfsOp::CreateDir, true)?;
        inner.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &str) -> VfsResult<()> {
        let mut inner = self.lock();
        inner.gate(dir, VfsOp::SyncDir, true)?;
        inner.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::fork;

    const S: usize = 512;

    fn disk(config: DiskConfig, seed: u64) -> SimDisk {
        SimDisk::try_new(
            DiskConfig {
                sector_size: S,
                ..config
            },
            fork(seed, "disk", 0),
        )
        .expect("valid config")
    }

    fn torn_only() -> DiskConfig {
        DiskConfig {
            crash_keep_probability: 0.0,
            crash_torn_probability: 1.0,
            crash_keep_dir_op_probability: 1.0,
            ..DiskConfig::default()
        }
    }

    fn read_all(d: &SimDisk, path: &str) -> Vec<u8> {
        let f = d.open(path).expect("open");
        let mut buf = vec![0u8; f.len().expect("len") as usize];
        let n = f.read_at(0, &mut buf).expect("read");
        buf.truncate(n);
        buf
    }

    /// Creates `path` with `contents`, durably (file synced, directory synced).
    fn durable_file(d: &SimDisk, path: &str, contents: &[u8]) -> Box<dyn VfsFile> {
        let mut f = d.create(path).expect("create");
        f.write_at(0, contents).expect("write");
        f.sync().expect("sync");
        d.sync_dir(vfs::split_parent(path).0).expect("sync_dir");
        f
    }

    #[test]
    fn config_validation() {
        assert!(DiskConfig::default().validate().is_ok());
        assert!(DiskConfig::reliable().validate().is_ok());
        let bad = DiskConfig {
            sector_size: 1000,
            ..DiskConfig::default()
        };
        assert_eq!(bad.validate(), Err(DiskConfigError::SectorSize(1000)));
        assert!(SimDisk::try_new(bad.clone(), fork(1, "disk", 0)).is_err());
        assert_eq!(bad.sanitized().sector_size, 1024);
        let bad = DiskConfig {
            crash_keep_probability: 0.8,
            crash_torn_probability: 0.8,
            ..DiskConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(DiskConfigError::CrashProbabilitiesExceedOne(_))
        ));
        assert!(bad.sanitized().validate().is_ok());
        let bad = DiskConfig {
            fsync_fail_probability: f64::NAN,
            ..DiskConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(DiskConfigError::Probability { .. })
        ));
        // `new` never panics on a bad config: it sanitizes it.
        let d = SimDisk::new(bad, fork(1, "disk", 0));
        assert_eq!(d.config().fsync_fail_probability, 0.0);
    }

    #[test]
    fn synced_data_survives_a_crash() {
        for seed in 0..20 {
            let d = disk(DiskConfig::default(), seed);
            d.create_dir_all("a/b").unwrap();
            d.sync_dir("").unwrap();
            d.sync_dir("a").unwrap();
            let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let _f = durable_file(&d, "a/b/f", &data);
            d.crash();
            assert_eq!(read_all(&d, "a/b/f"), data);
        }
    }

    #[test]
    fn unsynced_data_is_kept_on_a_reliable_disk() {
        let d = disk(DiskConfig::reliable(), 1);
        let mut f = durable_file(&d, "f", b"old");
        f.write_at(0, b"new!").unwrap();
        f.append(&[7u8; 2000]).unwrap();
        d.crash();
        let mut expected = b"new!".to_vec();
        expected.extend([7u8; 2000]);
        assert_eq!(read_all(&d, "f"), expected);
    }

    #[test]
    fn unsynced_data_is_lost_on_a_lossy_disk() {
        let d = disk(DiskConfig::lossy(), 1);
        let old = vec![1u8; 1500];
        let mut f = durable_file(&d, "f", &old);
        f.write_at(10, &[2u8; 700]).unwrap();
        f.append(&[3u8; 3000]).unwrap();
        d.crash();
        assert_eq!(read_all(&d, "f"), old);
        let counts = d.fault_counts();
        assert_eq!(counts.crashes, 1);
        assert_eq!(counts.crash_sectors_kept, 0);
        assert!(counts.crash_sectors_lost >= 8);
    }

    #[test]
    fn unsynced_sectors_tear_into_a_prefix_of_new_bytes() {
        let d = disk(torn_only(), 3);
        let mut f = durable_file(&d, "f", &[0xAA; 4 * S]);
        f.write_at(0, &[0xBB; 4 * S]).unwrap();
        d.crash();
        let after = read_all(&d, "f");
        assert_eq!(after.len(), 4 * S);
        for sector in after.chunks(S) {
            // New bytes for a non-empty, non-full prefix, old bytes after it.
            let new = sector.iter().take_while(|&&b| b == 0xBB).count();
            assert!(new > 0 && new < S, "prefix {new}");
            assert!(sector[new..].iter().all(|&b| b == 0xAA));
        }
        let events = d.take_events();
        assert!(events.iter().any(|e| matches!(
            e,
            DiskEvent::CrashFile {
                sectors_torn: 4,
                ..
            }
        )));
        assert!(matches!(events.last(), Some(DiskEvent::Crash { .. })));
    }

    #[test]
    fn crash_mixes_kept_lost_and_torn_sectors() {
        let mut seen = [false; 3];
        for seed in 0..10 {
            let d = disk(DiskConfig::default(), seed);
            let mut f = durable_file(&d, "f", &[0u8; 16 * S]);
            f.write_at(0, &[1u8; 16 * S]).unwrap();
            d.crash();
            let after = read_all(&d, "f");
            assert_eq!(after.len(), 16 * S, "overwrites never change the length");
            for sector in after.chunks(S) {
                let new = sector.iter().take_while(|&&b| b == 1).count();
                assert!(sector[new..].iter().all(|&b| b == 0));
                seen[match new {
                    0 => 0,
                    n if n == S => 1,
                    _ => 2,
                }] = true;
            }
        }
        assert_eq!(seen, [true; 3], "lost, kept and torn all happen");
    }

    #[test]
    fn growth_after_a_crash_never_exposes_a_hole() {
        for seed in 0..50 {
            let d = disk(DiskConfig::default(), seed);
            let mut f = durable_file(&d, "f", &[9u8; 100]);
            f.append(&[5u8; 10 * S]).unwrap();
            d.crash();
            let after = read_all(&d, "f");
            assert!(after.len() >= 100 && after.len() <= 100 + 10 * S);
            assert!(after[..100].iter().all(|&b| b == 9));
            // New bytes, then (only in a torn last sector) zeros: never new after old.
            let tail = &after[100..];
            let new = tail.iter().take_while(|&&b| b == 5).count();
            assert!(tail[new..].iter().all(|&b| b == 0), "seed {seed}");
            assert!(tail.len() - new < S, "at most one torn sector of zeros");
        }
    }

    #[test]
    fn unsynced_directory_operations_may_vanish_but_synced_ones_do_not() {
        let mut vanished = [false; 3];
        for seed in 0..40 {
            let d = disk(DiskConfig::default(), seed);
            let _a = durable_file(&d, "a", b"a");
            let _b = durable_file(&d, "b", b"b");
            // Unsynced: create c, rename a -> a2, unlink b.
            let mut c = d.create("c").unwrap();
            c.write_at(0, b"c").unwrap();
            c.sync().unwrap();
            d.rename("a", "a2").unwrap();
            d.remove("b").unwrap();
            d.crash();
            let names = d.list("").unwrap();
            // The ops survive as a prefix of the log.
            let c_kept = names.contains(&"c".to_string());
            let rename_kept = names.contains(&"a2".to_string());
            let unlink_kept = !names.contains(&"b".to_string());
            assert!(c_kept || !rename_kept, "prefix order");
            assert!(rename_kept || !unlink_kept, "prefix order");
            assert_ne!(
                names.contains(&"a".to_string()),
                rename_kept,
                "a rename is atomic"
            );
            vanished[0] |= !c_kept;
            vanished[1] |= !rename_kept;
            vanished[2] |= !unlink_kept;
            if rename_kept {
                assert_eq!(read_all(&d, "a2"), b"a");
            }
        }
        assert_eq!(vanished, [true; 3]);

        // Synced: all three survive every crash.
        for seed in 0..20 {
            let d = disk(DiskConfig::lossy(), seed);
            let _a = durable_file(&d, "a", b"a");
            let _b = durable_file(&d, "b", b"b");
            let _c = durable_file(&d, "c", b"c");
            d.rename("a", "a2").unwrap();
            d.remove("b").unwrap();
            d.sync_dir("").unwrap();
            d.crash();
            assert_eq!(d.list("").unwrap(), vec!["a2", "c"]);
            assert_eq!(read_all(&d, "a2"), b"a");
        }
    }

    #[test]
    fn a_new_directory_needs_its_parent_synced() {
        let d = disk(DiskConfig::lossy(), 1);
        d.create_dir_all("x/y").unwrap();
        let _f = durable_file(&d, "x/y/f", b"f"); // syncs x/y, not "" or x
        d.crash();
        assert!(!d.exists("x").unwrap(), "mkdir x was never synced");
        assert!(!d.exists("x/y/f").unwrap(), "orphans are dropped");

        let d = disk(DiskConfig::lossy(), 1);
        d.create_dir_all("x/y").unwrap();
        d.sync_dir("").unwrap();
        d.sync_dir("x").unwrap();
        let _f = durable_file(&d, "x/y/f", b"f");
        d.crash();
        assert_eq!(read_all(&d, "x/y/f"), b"f");
    }

    #[test]
    fn handles_follow_the_inode_and_go_stale_after_a_crash() {
        let d = disk(DiskConfig::reliable(), 1);
        let mut f = d.create("a").unwrap();
        f.write_at(0, b"hello").unwrap();
        d.rename("a", "b").unwrap();
        f.append(b" world").unwrap();
        assert_eq!(read_all(&d, "b"), b"hello world");
        d.remove("b").unwrap();
        f.append(b"!").unwrap();
        assert_eq!(f.len().unwrap(), 12);
        assert!(!d.exists("b").unwrap());
        let mut g = durable_file(&d, "g", b"g");
        d.crash();
        assert!(matches!(g.write_at(0, b"x"), Err(VfsError::Io { .. })));
        assert!(matches!(g.sync(), Err(VfsError::Io { .. })));
        assert!(matches!(g.len(), Err(VfsError::Io { .. })));
        let mut buf = [0u8; 1];
        assert!(g.read_at(0, &mut buf).is_err());
        assert_eq!(read_all(&d, "g"), b"g");
        drop(f);
        drop(g);
        assert_eq!(d.used_bytes(), 1);
    }

    #[test]
    fn fsync_failure_drops_dirty_data_for_good() {
        let d = disk(DiskConfig::reliable(), 1);
        let mut f = durable_file(&d, "dir_f", &[1u8; 2 * S]);
        f.write_at(0, &[2u8; S]).unwrap();
        d.inject(DiskFault::FsyncFail {
            path_prefix: "dir_".into(),
        });
        let err = f.sync().unwrap_err();
        assert!(matches!(
            err,
            VfsError::Io {
                op: VfsOp::Sync,
                ..
            }
        ));
        // Like the page cache after a failed writeback: reads still see the new bytes...
        assert_eq!(read_all(&d, "dir_f")[0], 2);
        // ...but a later successful sync does not write them.
        f.write_at(S as u64, &[3u8; S]).unwrap();
        f.sync().unwrap();
        d.crash();
        let after = read_all(&d, "dir_f");
        assert!(after[..S].iter().all(|&b| b == 1), "dropped data is gone");
        assert!(after[S..].iter().all(|&b| b == 3), "later data is durable");
        let events = d.take_events();
        assert!(events.contains(&DiskEvent::FsyncFailed {
            path: "dir_f".into(),
            dropped_sectors: 1,
        }));
        assert_eq!(d.fault_counts().fsync_failures, 1);
    }

    #[test]
    fn fsync_failure_probability() {
        let d = disk(
            DiskConfig {
                fsync_fail_probability: 1.0,
                ..DiskConfig::reliable()
            },
            1,
        );
        let mut f = d.create("f").unwrap();
        f.write_at(0, b"x").unwrap();
        assert!(f.sync().is_err());
    }

    #[test]
    fn latent_sector_error_persists_until_rewritten() {
        let d = disk(DiskConfig::reliable(), 1);
        let f = durable_file(&d, "f", &[4u8; 4 * S]);
        d.mark_latent_sector_error("f", 2).unwrap();
        let mut buf = vec![0u8; S];
        // Reads not touching sector 2 work; reads touching it fail, every time.
        assert_eq!(f.read_at(0, &mut buf).unwrap(), S);
        assert_eq!(f.read_at(3 * S as u64, &mut buf).unwrap(), S);
        for _ in 0..3 {
            let err = f.read_at(2 * S as u64 + 10, &mut buf[..4]).unwrap_err();
            assert!(matches!(
                err,
                VfsError::Io {
                    op: VfsOp::Read,
                    ..
                }
            ));
        }
        // It survives a crash (it is the medium, not the cache)...
        d.crash();
        let mut f = d.open("f").unwrap();
        assert!(f.read_at(2 * S as u64, &mut buf).is_err());
        // ...until the sector is rewritten.
        f.write_at(2 * S as u64, &[5u8; S]).unwrap();
        assert_eq!(f.read_at(2 * S as u64, &mut buf).unwrap(), S);
        assert!(buf.iter().all(|&b| b == 5));
        let counts = d.fault_counts();
        assert_eq!(counts.latent_sector_errors, 1);
        assert_eq!(counts.latent_sector_reads, 4);

        // The trigger form: the next read makes a sector it touches go bad.
        d.inject(DiskFault::LatentSectorError {
            path_prefix: "f".into(),
        });
        assert!(f.read_at(0, &mut buf).is_err());
        assert!(f.read_at(0, &mut buf).is_err());
        assert!(
            d.take_events()
                .iter()
                .any(|e| matches!(e, DiskEvent::LatentSectorError { sector: 0, .. }))
        );
    }

    #[test]
    fn bit_flip_corrupts_the_buffer_not_the_data() {
        let d = disk(DiskConfig::reliable(), 1);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let f = durable_file(&d, "f", &data);
        d.inject(DiskFault::BitFlip {
            path_prefix: String::new(),
        });
        let mut buf = vec![0u8; 1000];
        f.read_at(0, &mut buf).unwrap();
        let diffs: Vec<usize> = (0..1000).filter(|&i| buf[i] != data[i]).collect();
        assert_eq!(diffs.len(), 1);
        let i = diffs[0];
        assert_eq!((buf[i] ^ data[i]).count_ones(), 1);
        let events = d.take_events();
        assert_eq!(
            events,
            vec![DiskEvent::BitFlip {
                path: "f".into(),
                offset: i as u64,
                bit: (buf[i] ^ data[i]).trailing_zeros() as u8,
            }]
        );
        // Stored data unchanged.
        assert_eq!(read_all(&d, "f"), data);
    }

    /// `fault_paths` aims the per-call faults: files outside the prefixes never see
    /// one (however likely), files under them do, and the crash model is unaffected.
    #[test]
    fn fault_paths_confine_per_call_faults() {
        let d = disk(
            DiskConfig {
                misdirected_write_probability: 1.0,
                read_bit_flip_probability: 1.0,
                fault_paths: vec!["engine/data".into()],
                ..DiskConfig::reliable()
            },
            7,
        );
        d.create_dir_all("engine").unwrap();
        d.create_dir_all("log").unwrap();
        let mut log = d.create("log/wal").unwrap();
        let mut data = d.create("engine/data").unwrap();
        for i in 0..8u8 {
            log.write_at(u64::from(i) * S as u64, &[i; S]).unwrap();
            data.write_at(u64::from(i) * S as u64, &[i; S]).unwrap();
        }
        let log_bytes = read_all(&d, "log/wal");
        for i in 0..8usize {
            assert!(log_bytes[i * S..(i + 1) * S].iter().all(|&b| b == i as u8));
        }
        let counts = d.fault_counts();
        // Every write to the data file was misdirected, none to the log; reading the
        // log flipped no bit, reading the data file does.
        assert_eq!(counts.misdirected_writes, 8, "{counts:?}");
        assert_eq!(counts.bit_flips, 0, "{counts:?}");
        let _ = read_all(&d, "engine/data");
        assert_eq!(d.fault_counts().bit_flips, 1);
    }

    #[test]
    fn misdirected_write_lands_at_another_sector() {
        let d = disk(DiskConfig::reliable(), 1);
        let mut f = durable_file(&d, "f", &[0u8; 4 * S]);
        d.inject(DiskFault::MisdirectedWrite {
            path_prefix: "f".into(),
        });
        f.write_at(S as u64 + 5, &[9u8; 10]).unwrap();
        let events = d.take_events();
        let [
            DiskEvent::MisdirectedWrite {
                intended_offset,
                actual_offset,
                len,
                ..
            },
        ] = events.as_slice()
        else {
            panic!("expected one misdirected write, got {events:?}");
        };
        assert_eq!((*intended_offset, *len), (S as u64 + 5, 10));
        assert_ne!(actual_offset, intended_offset);
        assert_eq!(actual_offset % S as u64, 5);
        let after = read_all(&d, "f");
        assert_eq!(after.len(), 4 * S);
        assert!(
            after[S + 5..S + 15].iter().all(|&b| b == 0),
            "not where aimed"
        );
        let a = *actual_offset as usize;
        assert!(after[a..a + 10].iter().all(|&b| b == 9), "where it landed");

        // With nowhere else to land inside the file, the write is lost past the end.
        let mut g = d.create("g").unwrap();
        d.inject(DiskFault::MisdirectedWrite {
            path_prefix: "g".into(),
        });
        g.append(b"abc").unwrap();
        assert_eq!(read_all(&d, "g"), vec![0, 0, 0]);
    }

    #[test]
    fn out_of_space() {
        let d = disk(
            DiskConfig {
                capacity_bytes: Some(1000),
                ..DiskConfig::reliable()
            },
            1,
        );
        let mut f = d.create("f").unwrap();
        f.write_at(0, &[1u8; 600]).unwrap();
        let mut g = d.create("g").unwrap();
        assert!(matches!(
            g.write_at(0, &[1u8; 500]),
            Err(VfsError::NoSpace { .. })
        ));
        assert_eq!(g.len().unwrap(), 0, "a failed write writes nothing");
        g.write_at(0, &[1u8; 400]).unwrap();
        assert!(matches!(g.truncate(401), Err(VfsError::NoSpace { .. })));
        // Overwrites within the file need no space.
        f.write_at(0, &[2u8; 600]).unwrap();
        // Removing a file frees its space.
        drop(g);
        d.remove("g").unwrap();
        d.sync_dir("").unwrap();
        f.append(&[3u8; 400]).unwrap();
        assert_eq!(d.used_bytes(), 1000);
        // The trigger form.
        f.truncate(10).unwrap();
        d.inject(DiskFault::NoSpace {
            path_prefix: "f".into(),
        });
        assert!(matches!(f.append(b"x"), Err(VfsError::NoSpace { .. })));
        f.append(b"x").unwrap();
        assert_eq!(d.fault_counts().no_space, 3);
    }

    #[test]
    fn same_seed_same_crash() {
        fn run(seed: u64) -> (BTreeMap<String, Option<Vec<u8>>>, Vec<DiskEvent>) {
            let d = disk(
                DiskConfig {
                    read_bit_flip_probability: 0.1,
                    misdirected_write_probability: 0.05,
                    ..DiskConfig::default()
                },
                seed,
            );
            d.create_dir_all("w").unwrap();
            d.sync_dir("").unwrap();
            for i in 0..6u8 {
                let path = format!("w/{i}");
                let mut f = d.create(&path).unwrap();
                for j in 0..20u8 {
                    f.append(&vec![i.wrapping_mul(31).wrapping_add(j); 300])
                        .unwrap();
                    if j % 7 == 0 {
                        f.sync().unwrap();
                    }
                    let mut buf = [0u8; 64];
                    f.read_at(j as u64 * 100, &mut buf).unwrap();
                }
                if i % 2 == 0 {
                    d.sync_dir("w").unwrap();
                }
                if i == 3 {
                    d.rename("w/1", "w/1b").unwrap();
                }
            }
            d.crash();
            (d.snapshot(), d.take_events())
        }
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
    }

    #[test]
    fn events_serialize() {
        let e = DiskEvent::CrashDirOpLost {
            op: DirOp::Rename {
                from: "a".into(),
                to: "b".into(),
            },
        };
        assert_eq!(e.name(), "crash_dir_op_lost");
        assert!(!e.is_fault());
        assert!(
            DiskEvent::NoSpace {
                path: "f".into(),
                requested_len: 1
            }
            .is_fault()
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"crash_dir_op_lost":{"op":{"rename":{"from":"a","to":"b"}}}}"#
        );
        assert!(postcard::to_stdvec(&e).is_ok());
    }

    #[test]
    fn disk_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<SimDisk>();
    }
}
