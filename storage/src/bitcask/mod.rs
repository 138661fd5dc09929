//! Bitcask: a log-structured hash table (append-only data files plus an in-memory
//! keydir), over a [`Vfs`](crate::vfs::Vfs). See `docs/storage/bitcask.md`.
//!
//! - Data files `{id:016}.data` hold checksummed records (put, tombstone, batch commit);
//!   only the *active* file (the newest log file) is appended to. Every record carries a
//!   sequence number from one logical counter (never the wall clock); recovery keeps, per
//!   key, the record with the highest sequence number, so file order does not matter.
//! - The keydir is a `BTreeMap` from key to the location of its live record, so `get` is
//!   one lookup and one positioned read, and `scan` is ordered and lazy.
//! - `merge` rewrites the live records of every frozen file into new files (with hint
//!   files) crash-safely: temporary names, sync, rename, directory sync, an *obsolete
//!   files* marker, keydir switch, then deletion of the old files.

use crate::bugs::EngineBug;
use crate::codec::Poison;

mod format;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use format::{FILE_HEADER_LEN, FLAG_BATCH, FileHeader, HintEntry, Record};
pub use format::{FileKind, RecordKind};

use crate::kv::{
    BatchOp, EngineError, EngineOpener, EngineSyncPolicy, KvEngine, ScanIter, WriteBatch,
    range_is_empty,
};
use crate::vfs::{self, VfsFile, VfsHandle};

/// The default soft cap on a data file: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest accepted cap on a data file.
pub const MIN_FILE_BYTES: u64 = 256;
/// The default and largest key: 4 KiB default, 65,535 bytes at most (a `u16` length).
pub const DEFAULT_MAX_KEY_BYTES: usize = 4096;
pub const MAX_KEY_BYTES_LIMIT: usize = u16::MAX as usize;
/// The default and largest value: 16 MiB default, 1 GiB at most.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_VALUE_BYTES_LIMIT: usize = 1 << 30;
/// Frozen log files that trigger an automatic merge after a write.
pub const DEFAULT_MERGE_TRIGGER_FILES: usize = 8;
/// The marker listing the inputs of a merge whose output is durable (see `merge`).
pub const MERGE_MARKER_FILE: &str = "merge.obsolete";
const MERGE_MARKER_MAGIC: &[u8; 8] = b"FLBCMERG";
const TMP_SUFFIX: &str = ".tmp";
/// With `bitcask.in_band_tombstone`: the value a delete writes as an ordinary put, and
/// that recovery reads as a tombstone (the reference's in-band sentinel).
pub const IN_BAND_TOMBSTONE: &[u8] = b"__BITCASK_TOMBSTONE__";
/// Merge output is written in chunks of about this size.
const MERGE_WRITE_CHUNK_BYTES: usize = 1 << 20;
/// A merge marker lists at most this many files.
const MAX_MERGE_MARKER_FILES: usize = 1 << 20;

/// Options of a Bitcask engine; [`BitcaskOptions::validate`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitcaskOptions {
    pub sync_policy: EngineSyncPolicy,
    /// The active file is rotated when a write finds it at or over this size (a soft
    /// cap: one write can exceed it).
    pub max_file_bytes: u64,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// A write that leaves this many frozen log files merges them (0: never merge
    /// automatically; [`Bitcask::merge`] still works).
    pub merge_trigger_files: usize,
    /// Defects switched on on purpose (`crate::bugs`); none by default.
    pub bugs: crate::bugs::EngineBugs,
}

impl Default for BitcaskOptions {
    fn default() -> Self {
        BitcaskOptions {
            sync_policy: EngineSyncPolicy::EveryWrite,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            merge_trigger_files: DEFAULT_MERGE_TRIGGER_FILES,
            bugs: crate::bugs::EngineBugs::NONE,
        }
    }
}

impl BitcaskOptions {
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |s: String| Err(EngineError::InvalidConfig(s));
        if self.max_file_bytes < MIN_FILE_BYTES || self.max_file_bytes > (1 << 40) {
            return invalid(format!(
                "bitcask max_file_bytes {} is out of range {MIN_FILE_BYTES}..=2^40",
                self.max_file_bytes
            ));
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > MAX_KEY_BYTES_LIMIT {
            return invalid(format!(
                "bitcask max_key_bytes {} is out of range 1..={MAX_KEY_BYTES_LIMIT}",
                self.max_key_bytes
            ));
        }
        if self.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
            return invalid(format!(
                "bitcask max_value_bytes {} exceeds {MAX_VALUE_BYTES_LIMIT}",
                self.max_value_bytes
            ));
        }
        Ok(())
    }
}

/// Opens [`Bitcask`] engines.
#[derive(Debug, Clone, Default)]
pub struct BitcaskOpener {
    pub options: BitcaskOptions,
}

impl EngineOpener for BitcaskOpener {
    fn name(&self) -> &'static str {
        "bitcask"
    }

    fn open(&self, vfs: VfsHandle, dir: &str) -> Result<Box<dyn KvEngine>, EngineError> {
        Ok(Box::new(Bitcask::open(vfs, dir, self.options.clone())?))
    }
}

/// Where a key's live record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyEntry {
    file_id: u64,
    offset: u64,
    record_len: u32,
    seq: u64,
}

struct DataFile {
    handle: Box<dyn VfsFile>,
    path: String,
    kind: FileKind,
}

/// What [`Bitcask::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitcaskRecovery {
    pub data_files: u64,
    /// Data files whose keydir entries came from a valid hint file.
    pub hinted_files: u64,
    /// Hint files that were invalid (the data file was scanned instead).
    pub bad_hints: u64,
    /// `(file id, offset, bytes dropped)` of a torn tail cut off the active file.
    pub torn_tail: Option<(u64, u64, u64)>,
    /// Files removed: temporary files, orphan hints, a torn file creation, the inputs of
    /// a merge interrupted after its output was durable.
    pub removed_files: Vec<String>,
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub input_files: u64,
    pub output_files: u64,
    pub records_copied: u64,
}

/// A Bitcask engine. See the module docs.
pub struct Bitcask {
    vfs: VfsHandle,
    dir: String,
    options: BitcaskOptions,
    files: BTreeMap<u64, DataFile>,
    active_id: u64,
    active_len: u64,
    /// The active file has writes not yet synced.
    dirty: bool,
    /// The active file's length at its last successful sync (or at open/creation): a
    /// failed sync truncates the file back to it.
    synced_len: u64,
    /// The keydir changes since that sync, oldest first, as `(key, previous entry)`: a
    /// failed sync undoes them (newest first) with the records it drops.
    unsynced: Vec<(Vec<u8>, Option<KeyEntry>)>,
    /// Set when a failed sync that the caller of [`KvEngine::sync`] did not see (one
    /// inside a rotation or an automatic merge) rolled back acknowledged writes: the
    /// next `sync` reports it instead of claiming them durable.
    lost_writes: Option<String>,
    /// After a failed automatic merge: no automatic merge before this many frozen files.
    merge_backoff_files: usize,
    /// The error of the last failed automatic merge.
    last_merge_error: Option<String>,
    keydir: BTreeMap<Vec<u8>, KeyEntry>,
    next_seq: u64,
    next_file_id: u64,
    poisoned: Poison,
    recovery: BitcaskRecovery,
}

impl std::fmt::Debug for Bitcask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitcask")
            .field("dir", &self.dir)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("active_id", &self.active_id)
            .field("keys", &self.keydir.len())
            .field("next_seq", &self.next_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// The name of data file `id`.
pub fn data_file_name(id: u64) -> String {
    format!("{id:016}.data")
}

/// The name of the hint file of data file `id`.
pub fn hint_file_name(id: u64) -> String {
    format!("{id:016}.hint")
}

/// Parses `{16 digits}.{ext}`; other names are not ours and are ignored.
fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn read_all(file: &dyn VfsFile) -> Result<Vec<u8>, EngineError> {
    let len = file.len()?;
    let len = usize::try_from(len)
        .map_err(|_| EngineError::Other(format!("{}: file too large", file.path())))?;
    let mut buf = vec![0u8; len];
    let n = file.read_at(0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A scan's records, its torn tail `(offset, bytes)` if any, and the highest sequence
/// number of a complete unit.
type ScanOutcome = (Vec<Found>, Option<(u64, u64)>, u64);

/// One record found by a recovery scan or a hint file.
struct Found {
    key: Vec<u8>,
    kind: RecordKind,
    entry: KeyEntry,
}

impl Bitcask {
    /// Opens (creating if needed) the engine in `dir` and recovers it.
    pub fn open(
        vfs: VfsHandle,
        dir: &str,
        options: BitcaskOptions,
    ) -> Result<Bitcask, EngineError> {
        options.validate()?;
        crate::vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let mut recovery = BitcaskRecovery::default();
        let mut names = vfs.list(dir)?;
        let mut changed = false;
        for name in names.iter().filter(|n| n.ends_with(TMP_SUFFIX)) {
            let path = vfs::join(dir, name);
            vfs.remove(&path)?;
            recovery.removed_files.push(path);
            changed = true;
        }
        if names.iter().any(|n| n == MERGE_MARKER_FILE) {
            // A merge whose output is durable: finish deleting its inputs.
            let marker_path = vfs::join(dir, MERGE_MARKER_FILE);
            let ids = read_merge_marker(&vfs, &marker_path)?;
            for id in ids {
                for name in [data_file_name(id), hint_file_name(id)] {
                    let path = vfs::join(dir, &name);
                    if vfs.exists(&path)? {
                        vfs.remove(&path)?;
                        recovery.removed_files.push(path);
                    }
                }
            }
            vfs.sync_dir(dir)?;
            vfs.remove(&marker_path)?;
            changed = true;
        }
        if changed {
            vfs.sync_dir(dir)?;
            names = vfs.list(dir)?;
        }
        let data_ids: BTreeSet<u64> = names.iter().filter_map(|n| parse_name(n, "data")).collect();
        let hint_ids: BTreeSet<u64> = names.iter().filter_map(|n| parse_name(n, "hint")).collect();
        let mut changed = false;
        for id in hint_ids.difference(&data_ids) {
            let path = vfs::join(dir, &hint_file_name(*id));
            vfs.remove(&path)?;
            recovery.removed_files.push(path);
            changed = true;
        }

        // Open the data files and read their headers.
        let max_id = data_ids.last().copied().unwrap_or(0);
        let mut files: BTreeMap<u64, DataFile> = BTreeMap::new();
        for &id in &data_ids {
            let path = vfs::join(dir, &data_file_name(id));
            let handle = vfs.open(&path)?;
            let len = handle.len()?;
            let mut buf = [0u8; FILE_HEADER_LEN];
            let n = handle.read_at(0, &mut buf)?;
            match FileHeader::decode(&buf[..n]) {
                Ok(h) if h.file_id == id => {
                    files.insert(
                        id,
                        DataFile {
                            handle,
                            path,
                            kind: h.kind,
                        },
                    );
                }
                Ok(_) => {
                    return Err(EngineError::corruption(
                        &path,
                        16,
                        "file id does not match the name",
                    ));
                }
                Err(_) if id == max_id && len <= FILE_HEADER_LEN as u64 => {
                    // A file creation cut short by a crash (never held a record).
                    drop(handle);
                    vfs.remove(&path)?;
                    if hint_ids.contains(&id) {
                        vfs.remove(&vfs::join(dir, &hint_file_name(id)))?;
                    }
                    recovery.removed_files.push(path);
                    changed = true;
                }
                Err(detail) => return Err(EngineError::corruption(&path, 0, detail)),
            }
        }
        if changed {
            vfs.sync_dir(dir)?;
        }
        let active_id = files
            .iter()
            .rev()
            .find(|(_, f)| f.kind == FileKind::Log)
            .map(|(id, _)| *id);

        // Rebuild the keydir: per key, the record with the highest sequence number.
        let mut latest: BTreeMap<Vec<u8>, (RecordKind, KeyEntry)> = BTreeMap::new();
        let mut max_seq = 0u64;
        for (&id, file) in files.iter_mut() {
            let mut found = None;
            if file.kind == FileKind::Merged && hint_ids.contains(&id) {
                match load_hint(&vfs, dir, id, &*file.handle, options.bugs)? {
                    Some(entries) => {
                        crate::sometimes!("bitcask.hint_file_used");
                        recovery.hinted_files += 1;
                        found = Some(entries);
                    }
                    None => {
                        crate::sometimes!("bitcask.hint_file_rejected");
                        recovery.bad_hints += 1;
                    }
                }
            }
            let found = match found {
                Some(f) => f,
                None => {
                    let tail_allowed = Some(id) == active_id;
                    let (found, tail, last_seq) =
                        scan_data_file(file, id, tail_allowed, options.bugs)?;
                    // Commit records take sequence numbers too.
                    max_seq = max_seq.max(last_seq);
                    if tail.is_some() {
                        crate::sometimes!("bitcask.torn_tail_truncated");
                        recovery.torn_tail = tail.map(|(offset, bytes)| (id, offset, bytes));
                    }
                    found
                }
            };
            for f in found {
                max_seq = max_seq.max(f.entry.seq);
                match latest.get(&f.key) {
                    Some((_, e)) if e.seq >= f.entry.seq => {}
                    _ => {
                        latest.insert(f.key, (f.kind, f.entry));
                    }
                }
            }
        }
        recovery.data_files = files.len() as u64;
        let keydir: BTreeMap<Vec<u8>, KeyEntry> = latest
            .into_iter()
            .filter(|(_, (kind, _))| *kind == RecordKind::Put)
            .map(|(k, (_, e))| (k, e))
            .collect();
        let mut next_file_id = max_id
            .checked_add(1)
            .ok_or_else(|| EngineError::Other("file ids exhausted".into()))?;
        let (active_id, active_len) = match active_id {
            Some(id) => {
                let file = files
                    .get_mut(&id)
                    .ok_or_else(|| EngineError::Other("internal: active file vanished".into()))?;
                // Whatever recovery saw is durable from now on.
                file.handle.sync()?;
                (id, file.handle.len()?)
            }
            None => {
                let id = next_file_id;
                next_file_id += 1;
                let file = create_data_file(&vfs, dir, id, FileKind::Log)?;
                files.insert(id, file);
                (id, FILE_HEADER_LEN as u64)
            }
        };
        Ok(Bitcask {
            vfs,
            dir: dir.to_string(),
            options,
            files,
            active_id,
            active_len,
            dirty: false,
            synced_len: active_len,
            unsynced: Vec::new(),
            merge_backoff_files: 0,
            last_merge_error: None,
            lost_writes: None,
            keydir,
            next_seq: max_seq
                .checked_add(1)
                .ok_or_else(|| EngineError::Other("sequence numbers exhausted".into()))?,
            next_file_id,
            poisoned: Poison::default(),
            recovery,
        })
    }

    /// What recovery found.
    pub fn recovery(&self) -> &BitcaskRecovery {
        &self.recovery
    }

    /// The ids of the data files, oldest first.
    pub fn file_ids(&self) -> Vec<u64> {
        self.files.keys().copied().collect()
    }

    /// The id of the active (appended-to) file.
    pub fn active_file_id(&self) -> u64 {
        self.active_id
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The number of live keys.
    pub fn len(&self) -> usize {
        self.keydir.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keydir.is_empty()
    }

    /// The error of the last failed automatic merge (a write that triggers a merge
    /// succeeds even if the merge fails; see [`BitcaskOptions::merge_trigger_files`]).
    pub fn last_merge_error(&self) -> Option<&str> {
        self.last_merge_error.as_deref()
    }

    /// Whether an earlier failure made the engine unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_set()
    }

    fn usable(&self) -> Result<(), EngineError> {
        self.poisoned.check()
    }

    /// Runs `f`; an error poisons the engine (the files may now differ from the keydir).
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let result = f(self);
        self.poisoned.on_error(result)
    }

    fn check_sizes(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        if key.len() > self.options.max_key_bytes {
            return Err(EngineError::TooLarge {
                what: "key",
                len: key.len(),
                limit: self.options.max_key_bytes,
            });
        }
        if value.len() > self.options.max_value_bytes {
            return Err(EngineError::TooLarge {
                what: "value",
                len: value.len(),
                limit: self.options.max_value_bytes,
            });
        }
        Ok(())
    }

    fn read_entry(&self, key: &[u8], e: &KeyEntry) -> Result<Vec<u8>, EngineError> {
        let file = self.files.get(&e.file_id).ok_or_else(|| {
            EngineError::corruption(
                &data_file_name(e.file_id),
                e.offset,
                "keydir names a missing file",
            )
        })?;
        let mut buf = vec![0u8; e.record_len as usize];
        let n = file.handle.read_at(e.offset, &mut buf)?;
        let corrupt = |detail: &str| EngineError::corruption(&file.path, e.offset, detail);
        if n != buf.len() {
            return Err(corrupt("record cut short"));
        }
        let r = format::decode_record(&buf, e.file_id, MAX_KEY_BYTES_LIMIT, MAX_VALUE_BYTES_LIMIT)
            .map_err(|d| corrupt(d.describe()))?;
        if r.kind != RecordKind::Put || r.key != key || r.seq != e.seq || r.len != buf.len() {
            return Err(corrupt("record does not match the keydir"));
        }
        Ok(r.value.to_vec())
    }

    /// Appends `ops` as one unit (a batch with a commit record if more than one).
    fn append_unit(&mut self, ops: &[(RecordKind, &[u8], &[u8])]) -> Result<(), EngineError> {
        self.usable()?;
        for (_, key, value) in ops {
            self.check_sizes(key, value)?;
        }
        if ops.is_empty() {
            return Ok(());
        }
        let count = u32::try_from(ops.len()).map_err(|_| EngineError::TooLarge {
            what: "batch",
            len: ops.len(),
            limit: u32::MAX as usize,
        })?;
        if self.active_len >= self.options.max_file_bytes {
            // Sync before rotating (a failed sync rolls back on its own; see sync_active).
            self.sync_active()?;
        }
        self.guarded(|db| {
            db.maybe_rotate()?;
            let batch = ops.len() > 1;
            let records = u64::from(count) + u64::from(batch);
            let first_seq = db.next_seq;
            first_seq
                .checked_add(records)
                .ok_or_else(|| EngineError::Other("sequence numbers exhausted".into()))?;
            let mut buf = Vec::new();
            let mut placed = Vec::with_capacity(ops.len());
            let flags = if batch { FLAG_BATCH } else { 0 };
            let in_band = db.options.bugs.contains(EngineBug::BitcaskInBandTombstone);
            for (i, (kind, key, value)) in ops.iter().enumerate() {
                let start = buf.len();
                let seq = first_seq + i as u64;
                // `bitcask.in_band_tombstone`: a delete is written as a put of the
                // sentinel value, which a put can write too.
                let (kind, value) = match kind {
                    RecordKind::Tombstone if in_band => (RecordKind::Put, IN_BAND_TOMBSTONE),
                    _ => (*kind, *value),
                };
                format::encode_record(&mut buf, db.active_id, kind, flags, seq, key, value);
                placed.push((start, buf.len() - start, seq));
            }
            if batch {
                let v = format::encode_commit_value(first_seq, count);
                let seq = first_seq + u64::from(count);
                format::encode_record(&mut buf, db.active_id, RecordKind::Commit, 0, seq, &[], &v);
            }
            let active = db.active_file_mut()?;
            let offset = active.handle.append(&buf)?;
            db.dirty = true;
            db.active_len = offset + buf.len() as u64;
            db.next_seq = first_seq + records;
            for ((kind, key, _), (start, len, seq)) in ops.iter().zip(placed) {
                match kind {
                    RecordKind::Put => {
                        let entry = KeyEntry {
                            file_id: db.active_id,
                            offset: offset + start as u64,
                            record_len: len as u32,
                            seq,
                        };
                        let old = db.keydir.insert(key.to_vec(), entry);
                        db.unsynced.push((key.to_vec(), old));
                    }
                    _ => {
                        let old = db.keydir.remove(*key);
                        db.unsynced.push((key.to_vec(), old));
                    }
                }
            }
            Ok(())
        })?;
        if self.options.sync_policy == EngineSyncPolicy::EveryWrite
            && let Err(e) = self.sync_active()
        {
            // Only this write was unsynced (every earlier one was synced), and its
            // error reports the loss.
            self.lost_writes = None;
            return Err(e);
        }
        let frozen_logs = self
            .files
            .iter()
            .filter(|(id, f)| **id != self.active_id && f.kind == FileKind::Log)
            .count();
        let trigger = self
            .options
            .merge_trigger_files
            .max(self.merge_backoff_files);
        if self.options.merge_trigger_files > 0 && frozen_logs >= trigger {
            // The write is applied (and synced under `EveryWrite`): a failed automatic
            // merge must not fail it. Record the failure and back off (retry when twice
            // as many frozen files have accumulated); a merge failure that poisoned the
            // engine fails the next call.
            match self.merge() {
                Ok(_) => self.merge_backoff_files = 0,
                Err(e) => {
                    self.last_merge_error = Some(e.to_string());
                    self.merge_backoff_files = frozen_logs.saturating_mul(2);
                }
            }
        }
        Ok(())
    }

    fn active_file_mut(&mut self) -> Result<&mut DataFile, EngineError> {
        self.files
            .get_mut(&self.active_id)
            .ok_or_else(|| EngineError::Other("internal: no active file".into()))
    }

    /// Syncs the active file. If the sync fails, the disk may have dropped the unsynced
    /// records while reads still see them (a page cache after a failed writeback), so
    /// they must not stay visible nor be taken for durable by a later open: the file is
    /// truncated back to its synced length, that is synced, and the keydir changes since
    /// the last sync are undone (like the WAL's rollback). Only if that fails too is the
    /// engine poisoned. Either way the sync's error is returned.
    fn sync_active(&mut self) -> Result<(), EngineError> {
        if !self.dirty {
            return Ok(());
        }
        match self.active_file_mut()?.handle.sync() {
            Ok(()) => {
                self.dirty = false;
                self.synced_len = self.active_len;
                self.unsynced.clear();
                Ok(())
            }
            Err(e) => {
                let e = EngineError::from(e);
                match self.roll_back_unsynced() {
                    Ok(()) => {
                        self.lost_writes.get_or_insert_with(|| e.to_string());
                    }
                    Err(r) => {
                        self.poisoned
                            .set(|| format!("{e}; rolling back failed: {r}"));
                    }
                }
                Err(e)
            }
        }
    }

    /// Truncates the active file to its synced length, syncs it, and undoes the keydir
    /// changes of the dropped records.
    fn roll_back_unsynced(&mut self) -> Result<(), EngineError> {
        let synced_len = self.synced_len;
        let file = self.active_file_mut()?;
        file.handle.truncate(synced_len)?;
        file.handle.sync()?;
        for (key, old) in std::mem::take(&mut self.unsynced).into_iter().rev() {
            match old {
                Some(entry) => self.keydir.insert(key, entry),
                None => self.keydir.remove(&key),
            };
        }
        self.active_len = synced_len;
        self.dirty = false;
        Ok(())
    }

    /// Starts a new active file if the current one is full. The old one is synced first,
    /// so a later file never survives a crash without the earlier one's writes.
    fn maybe_rotate(&mut self) -> Result<(), EngineError> {
        if self.active_len < self.options.max_file_bytes {
            return Ok(());
        }
        self.sync_active()?;
        let id = self.take_file_id()?;
        let file = create_data_file(&self.vfs, &self.dir, id, FileKind::Log)?;
        self.files.insert(id, file);
        self.active_id = id;
        self.active_len = FILE_HEADER_LEN as u64;
        self.synced_len = self.active_len;
        self.unsynced.clear();
        Ok(())
    }

    fn take_file_id(&mut self) -> Result<u64, EngineError> {
        let id = self.next_file_id;
        self.next_file_id = id
            .checked_add(1)
            .ok_or_else(|| EngineError::Other("file ids exhausted".into()))?;
        Ok(id)
    }

    /// Rewrites the live records of every file but the active one into new merged files
    /// (with hint files), then deletes the old files. Crash-safe at every step:
    ///
    /// 1. sync the active file (so no live record depends on an unsynced write);
    /// 2. write the output data and hint files under temporary names and sync them;
    /// 3. rename them to their final names and sync the directory (old and new files now
    ///    hold the same records with the same sequence numbers: recovery gives the same
    ///    state with either or both);
    /// 4. write the list of old files to `merge.obsolete` (temporary name, sync, rename,
    ///    directory sync): recovery finishes deleting them if this step is durable;
    /// 5. switch the keydir to the new files;
    /// 6. delete the old files, sync the directory, delete the marker, sync the directory.
    ///
    /// A record whose checksum fails is never copied: the merge stops with `Corruption`
    /// and leaves the old files in place.
    pub fn merge(&mut self) -> Result<MergeStats, EngineError> {
        self.usable()?;
        let inputs: Vec<u64> = self
            .files
            .keys()
            .copied()
            .filter(|id| *id != self.active_id)
            .collect();
        if inputs.is_empty() {
            return Ok(MergeStats::default());
        }
        self.sync_active()?;
        let input_set: BTreeSet<u64> = inputs.iter().copied().collect();
        let mut outputs: Vec<MergeOutput> = Vec::new();
        let result = self.write_merge_outputs(&input_set, &mut outputs);
        let moves = match result {
            Ok(moves) => moves,
            Err(e) => {
                // Nothing was renamed: the old files are intact. Remove the temporaries.
                let mut cleanup_failed = false;
                for out in outputs {
                    drop(out.handle);
                    for p in [&out.tmp_data_path, &out.tmp_hint_path] {
                        if self.vfs.exists(p).unwrap_or(false) && self.vfs.remove(p).is_err() {
                            cleanup_failed = true;
                        }
                    }
                }
                if !matches!(e, EngineError::Corruption { .. }) || cleanup_failed {
                    self.poisoned.set(|| e.to_string());
                }
                return Err(e);
            }
        };
        let stats = MergeStats {
            input_files: inputs.len() as u64,
            output_files: outputs.len() as u64,
            records_copied: moves.len() as u64,
        };
        self.guarded(|db| db.install_merge(&inputs, outputs, moves))?;
        crate::sometimes!("bitcask.merge_completed");
        Ok(stats)
    }

    fn write_merge_outputs(
        &mut self,
        inputs: &BTreeSet<u64>,
        outputs: &mut Vec<MergeOutput>,
    ) -> Result<Vec<(Vec<u8>, KeyEntry)>, EngineError> {
        let live: Vec<(Vec<u8>, KeyEntry)> = self
            .keydir
            .iter()
            .filter(|(_, e)| inputs.contains(&e.file_id))
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        let mut moves = Vec::with_capacity(live.len());
        let mut buf: Vec<u8> = Vec::new();
        for (key, e) in live {
            let value = self.read_entry(&key, &e)?;
            let need_new = match outputs.last() {
                None => true,
                Some(out) => out.len + buf.len() as u64 >= self.options.max_file_bytes,
            };
            if need_new {
                if let Some(out) = outputs.last_mut() {
                    out.flush(&mut buf)?;
                }
                let id = self.take_file_id()?;
                outputs.push(MergeOutput::create(&self.vfs, &self.dir, id)?);
            }
            let out = outputs
                .last_mut()
                .ok_or_else(|| EngineError::Other("internal: no merge output".into()))?;
            let offset = out.len + buf.len() as u64;
            let start = buf.len();
            format::encode_record(&mut buf, out.id, RecordKind::Put, 0, e.seq, &key, &value);
            let record_len = (buf.len() - start) as u32;
            out.hints.push(HintEntry {
                kind: RecordKind::Put,
                seq: e.seq,
                offset,
                record_len,
                key: key.clone(),
            });
            moves.push((
                key,
                KeyEntry {
                    file_id: out.id,
                    offset,
                    record_len,
                    seq: e.seq,
                },
            ));
            if buf.len() >= MERGE_WRITE_CHUNK_BYTES {
                out.flush(&mut buf)?;
            }
        }
        if let Some(out) = outputs.last_mut() {
            out.flush(&mut buf)?;
        }
        for out in outputs.iter_mut() {
            out.handle.sync()?;
            let hint = format::encode_hint(out.id, out.len, &out.hints);
            let mut h = self.vfs.create(&out.tmp_hint_path)?;
            h.write_at(0, &hint)?;
            h.sync()?;
            // Nothing is renamed (and no input deleted) until every output reads back
            // as written: a misdirected write must not cost the only good copy.
            let back = read_all(&*h)?;
            if back != hint {
                return Err(EngineError::corruption(
                    &out.tmp_hint_path,
                    0,
                    "merge hint file did not read back as written (misdirected write?)",
                ));
            }
            out.verify()?;
        }
        Ok(moves)
    }

    fn install_merge(
        &mut self,
        inputs: &[u64],
        outputs: Vec<MergeOutput>,
        moves: Vec<(Vec<u8>, KeyEntry)>,
    ) -> Result<(), EngineError> {
        if self
            .options
            .bugs
            .contains(EngineBug::BitcaskDeleteBeforeRename)
        {
            return self.install_merge_delete_before_rename(inputs, outputs, moves);
        }
        let dir = self.dir.clone();
        for out in &outputs {
            self.vfs.rename(
                &out.tmp_data_path,
                &vfs::join(&dir, &data_file_name(out.id)),
            )?;
            self.vfs.rename(
                &out.tmp_hint_path,
                &vfs::join(&dir, &hint_file_name(out.id)),
            )?;
        }
        self.vfs.sync_dir(&dir)?;
        write_merge_marker(&self.vfs, &dir, inputs)?;
        for out in outputs {
            drop(out.handle);
            let path = vfs::join(&dir, &data_file_name(out.id));
            let handle = self.vfs.open(&path)?;
            self.files.insert(
                out.id,
                DataFile {
                    handle,
                    path,
                    kind: FileKind::Merged,
                },
            );
        }
        for (key, entry) in moves {
            self.keydir.insert(key, entry);
        }
        for id in inputs {
            self.files.remove(id);
            self.vfs.remove(&vfs::join(&dir, &data_file_name(*id)))?;
            let hint = vfs::join(&dir, &hint_file_name(*id));
            if self.vfs.exists(&hint)? {
                self.vfs.remove(&hint)?;
            }
        }
        self.vfs.sync_dir(&dir)?;
        self.vfs.remove(&vfs::join(&dir, MERGE_MARKER_FILE))?;
        self.vfs.sync_dir(&dir)?;
        Ok(())
    }
}

impl Bitcask {
    /// `bitcask.delete_before_rename`: the reference's merge order — switch the index,
    /// delete the old files, then rename the output to its final name — with no
    /// obsolete-files marker and no directory sync. Until some later directory sync, a
    /// crash can keep the deletions and lose the rename (or the output's creation):
    /// recovery then removes the output as a temporary file and the merged records are
    /// in neither file.
    fn install_merge_delete_before_rename(
        &mut self,
        inputs: &[u64],
        outputs: Vec<MergeOutput>,
        moves: Vec<(Vec<u8>, KeyEntry)>,
    ) -> Result<(), EngineError> {
        let dir = self.dir.clone();
        for (key, entry) in moves {
            self.keydir.insert(key, entry);
        }
        for id in inputs {
            self.files.remove(id);
            self.vfs.remove(&vfs::join(&dir, &data_file_name(*id)))?;
            let hint = vfs::join(&dir, &hint_file_name(*id));
            if self.vfs.exists(&hint)? {
                self.vfs.remove(&hint)?;
            }
        }
        for out in outputs {
            let path = vfs::join(&dir, &data_file_name(out.id));
            self.vfs.rename(&out.tmp_data_path, &path)?;
            self.vfs.rename(
                &out.tmp_hint_path,
                &vfs::join(&dir, &hint_file_name(out.id)),
            )?;
            drop(out.handle);
            let handle = self.vfs.open(&path)?;
            self.files.insert(
                out.id,
                DataFile {
                    handle,
                    path,
                    kind: FileKind::Merged,
                },
            );
        }
        Ok(())
    }
}

/// A merge output file being written (under its temporary name).
struct MergeOutput {
    id: u64,
    handle: Box<dyn VfsFile>,
    tmp_data_path: String,
    tmp_hint_path: String,
    len: u64,
    hints: Vec<HintEntry>,
}

impl MergeOutput {
    fn create(vfs: &VfsHandle, dir: &str, id: u64) -> Result<MergeOutput, EngineError> {
        let tmp_data_path = vfs::join(dir, &format!("{}{TMP_SUFFIX}", data_file_name(id)));
        let tmp_hint_path = vfs::join(dir, &format!("{}{TMP_SUFFIX}", hint_file_name(id)));
        let mut handle = vfs.create(&tmp_data_path)?;
        let header = FileHeader {
            kind: FileKind::Merged,
            file_id: id,
        };
        handle.write_at(0, &header.encode())?;
        Ok(MergeOutput {
            id,
            handle,
            tmp_data_path,
            tmp_hint_path,
            len: FILE_HEADER_LEN as u64,
            hints: Vec::new(),
        })
    }

    /// Re-reads the (synced) output and checks that it holds exactly the records its
    /// hints (and so the keydir entries the merge installs) describe: the header, then
    /// one valid record per hint, back to back, ending at the expected length.
    fn verify(&self) -> Result<(), EngineError> {
        let path = &self.tmp_data_path;
        let bad = |offset: u64, detail: &str| {
            EngineError::corruption(
                path,
                offset,
                format!("merge output did not read back as written (misdirected write?): {detail}"),
            )
        };
        let bytes = read_all(&*self.handle)?;
        if bytes.len() as u64 != self.len {
            return Err(bad(0, "wrong length"));
        }
        let header = FileHeader {
            kind: FileKind::Merged,
            file_id: self.id,
        };
        if bytes.get(..FILE_HEADER_LEN) != Some(&header.encode()[..]) {
            return Err(bad(0, "bad file header"));
        }
        let mut at = FILE_HEADER_LEN as u64;
        for h in &self.hints {
            if h.offset != at {
                return Err(bad(at, "records are not contiguous"));
            }
            let end = at + u64::from(h.record_len);
            let rec = bytes
                .get(at as usize..end as usize)
                .ok_or_else(|| bad(at, "record cut short"))?;
            let r = format::decode_record(rec, self.id, MAX_KEY_BYTES_LIMIT, MAX_VALUE_BYTES_LIMIT)
                .map_err(|d| bad(at, d.describe()))?;
            if r.kind != h.kind || r.key != h.key || r.seq != h.seq || r.len != rec.len() {
                return Err(bad(at, "record does not match its hint"));
            }
            at = end;
        }
        if at != self.len {
            return Err(bad(at, "unexpected bytes after the last record"));
        }
        Ok(())
    }

    fn flush(&mut self, buf: &mut Vec<u8>) -> Result<(), EngineError> {
        if !buf.is_empty() {
            self.handle.write_at(self.len, buf)?;
            self.len += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }
}

/// Creates a data file durably: create, header, sync the file, sync the directory.
fn create_data_file(
    vfs: &VfsHandle,
    dir: &str,
    id: u64,
    kind: FileKind,
) -> Result<DataFile, EngineError> {
    let path = vfs::join(dir, &data_file_name(id));
    let mut handle = vfs.create(&path)?;
    handle.write_at(0, &FileHeader { kind, file_id: id }.encode())?;
    handle.sync()?;
    vfs.sync_dir(dir)?;
    Ok(DataFile { handle, path, kind })
}

/// Loads the hint file of merged data file `id`; `None` if it is invalid (the caller
/// scans the data file instead: data files are authoritative).
fn load_hint(
    vfs: &VfsHandle,
    dir: &str,
    id: u64,
    data: &dyn VfsFile,
    bugs: crate::bugs::EngineBugs,
) -> Result<Option<Vec<Found>>, EngineError> {
    let hint = vfs.open(&vfs::join(dir, &hint_file_name(id)))?;
    let bytes = read_all(&*hint)?;
    let data_len = data.len()?;
    let decoded = if bugs.contains(EngineBug::BitcaskTrustHint) {
        Ok(format::decode_hint_trusting(
            &bytes,
            data_len,
            MAX_KEY_BYTES_LIMIT,
        ))
    } else {
        format::decode_hint(
            &bytes,
            id,
            data_len,
            MAX_KEY_BYTES_LIMIT,
            MAX_VALUE_BYTES_LIMIT,
        )
    };
    match decoded {
        Ok(entries) => Ok(Some(
            entries
                .into_iter()
                .map(|h| Found {
                    key: h.key,
                    kind: h.kind,
                    entry: KeyEntry {
                        file_id: id,
                        offset: h.offset,
                        record_len: h.record_len,
                        seq: h.seq,
                    },
                })
                .collect(),
        )),
        Err(_) => Ok(None),
    }
}

/// Scans a data file's records, decoded against the format's hard limits
/// ([`MAX_KEY_BYTES_LIMIT`], [`MAX_VALUE_BYTES_LIMIT`]), never the configured ones: a
/// record written under a higher limit stays valid after the limit is lowered (the
/// configured limits apply to new writes only). An invalid record is a torn tail (cut off, the cut
/// synced) only in the active file and only if no valid record follows it; anything
/// else is `Corruption`. Records of a batch count only with their commit record.
/// Returns the records and the torn tail `(offset, bytes)`, if any.
fn scan_data_file(
    file: &mut DataFile,
    file_id: u64,
    tail_allowed: bool,
    bugs: crate::bugs::EngineBugs,
) -> Result<ScanOutcome, EngineError> {
    let in_band = bugs.contains(EngineBug::BitcaskInBandTombstone);
    let bytes = read_all(&*file.handle)?;
    let decode = |at: usize| {
        format::decode_record(
            &bytes[at..],
            file_id,
            MAX_KEY_BYTES_LIMIT,
            MAX_VALUE_BYTES_LIMIT,
        )
    };
    let mut found = Vec::new();
    let mut pending: Vec<Found> = Vec::new();
    let mut pending_start = 0usize;
    let mut last_seq = 0u64;
    let mut max_seq = 0u64;
    let mut at = FILE_HEADER_LEN;
    let mut invalid: Option<(usize, &'static str)> = None;
    while at < bytes.len() {
        let r: Record<'_> = match decode(at) {
            Ok(r) => r,
            Err(d) => {
                invalid = Some((at, d.describe()));
                break;
            }
        };
        if file.kind == FileKind::Log && r.seq <= last_seq {
            invalid = Some((at, "sequence number does not increase"));
            break;
        }
        let in_batch = r.flags & FLAG_BATCH != 0;
        // `bitcask.in_band_tombstone`: a put of the sentinel value reads as a delete.
        let kind = match r.kind {
            RecordKind::Put if in_band && r.value == IN_BAND_TOMBSTONE => RecordKind::Tombstone,
            k => k,
        };
        match kind {
            RecordKind::Put | RecordKind::Tombstone => {
                if in_batch && pending.is_empty() {
                    pending_start = at;
                } else if !in_batch && !pending.is_empty() {
                    invalid = Some((at, "a batch without its commit record"));
                    break;
                }
                let f = Found {
                    key: r.key.to_vec(),
                    kind,
                    entry: KeyEntry {
                        file_id,
                        offset: at as u64,
                        record_len: r.len as u32,
                        seq: r.seq,
                    },
                };
                if in_batch {
                    pending.push(f);
                } else {
                    found.push(f);
                }
            }
            RecordKind::Commit => {
                let (first, count) = format::decode_commit_value(r.value);
                let matches = !pending.is_empty()
                    && pending.len() == count as usize
                    && pending[0].entry.seq == first
                    && first.checked_add(u64::from(count)) == Some(r.seq);
                if in_batch || !matches {
                    invalid = Some((at, "commit record does not match a batch"));
                    break;
                }
                found.append(&mut pending);
            }
        }
        last_seq = r.seq;
        if pending.is_empty() {
            // A complete unit (a single record or a commit) ends here.
            max_seq = max_seq.max(r.seq);
        }
        at += r.len;
    }
    let cut = match invalid {
        Some((offset, detail)) => {
            let later_valid = (offset + 1..bytes.len()).any(|p| decode(p).is_ok());
            if !tail_allowed || later_valid {
                return Err(EngineError::corruption(&file.path, offset as u64, detail));
            }
            Some(if pending.is_empty() {
                offset
            } else {
                pending_start
            })
        }
        None if !pending.is_empty() => {
            if !tail_allowed {
                return Err(EngineError::corruption(
                    &file.path,
                    pending_start as u64,
                    "a batch without its commit record",
                ));
            }
            Some(pending_start)
        }
        None => None,
    };
    let tail = match cut {
        Some(offset) => {
            file.handle.truncate(offset as u64)?;
            file.handle.sync()?;
            Some((offset as u64, (bytes.len() - offset) as u64))
        }
        None => None,
    };
    // Records cut off with a torn tail never reach the keydir; their sequence numbers
    // may be reused (nothing on disk holds them any more).
    Ok((found, tail, max_seq))
}

fn write_merge_marker(vfs: &VfsHandle, dir: &str, ids: &[u64]) -> Result<(), EngineError> {
    let mut b = Vec::with_capacity(16 + ids.len() * 8 + 4);
    b.extend_from_slice(MERGE_MARKER_MAGIC);
    b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = vfs::join(dir, &format!("{MERGE_MARKER_FILE}{TMP_SUFFIX}"));
    let mut f = vfs.create(&tmp)?;
    f.write_at(0, &b)?;
    f.sync()?;
    drop(f);
    vfs.rename(&tmp, &vfs::join(dir, MERGE_MARKER_FILE))?;
    vfs.sync_dir(dir)?;
    Ok(())
}

fn read_merge_marker(vfs: &VfsHandle, path: &str) -> Result<Vec<u64>, EngineError> {
    let f = vfs.open(path)?;
    let b = read_all(&*f)?;
    let bad = |offset: u64, detail: &str| EngineError::corruption(path, offset, detail);
    if b.len() < 20 || &b[0..8] != MERGE_MARKER_MAGIC {
        return Err(bad(0, "bad merge marker header"));
    }
    let body = b.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[body..]);
    if crc32c::crc32c(&b[..body]) != u32::from_le_bytes(crc) {
        return Err(bad(body as u64, "merge marker checksum mismatch"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[8..16]);
    let count = u64::from_le_bytes(n);
    if count > MAX_MERGE_MARKER_FILES as u64 || body != 16 + count as usize * 8 {
        return Err(bad(8, "merge marker length mismatch"));
    }
    Ok(b[16..body]
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect())
}

impl KvEngine for Bitcask {
    fn name(&self) -> &'static str {
        "bitcask"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.usable()?;
        match self.keydir.get(key) {
            None => Ok(None),
            Some(e) => self.read_entry(key, e).map(Some),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.append_unit(&[(RecordKind::Put, key, value)])
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), EngineError> {
        self.usable()?;
        self.check_sizes(key, &[])?;
        if !self.keydir.contains_key(key) {
            // Nothing live to shadow: deleting an absent key writes nothing.
            return Ok(());
        }
        self.append_unit(&[(RecordKind::Tombstone, key, &[])])
    }

    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), EngineError> {
        let ops: Vec<(RecordKind, &[u8], &[u8])> = batch
            .ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => (RecordKind::Put, key.as_slice(), value.as_slice()),
                BatchOp::Delete { key } => (RecordKind::Tombstone, key.as_slice(), &[][..]),
            })
            .collect();
        self.append_unit(&ops)
    }

    fn scan<'a>(
        &'a self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<ScanIter<'a>, EngineError> {
        self.usable()?;
        if range_is_empty(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        let iter = self
            .keydir
            .range::<[u8], _>((start, end))
            .map(move |(k, e)| self.read_entry(k, e).map(|v| (k.clone(), v)));
        Ok(Box::new(iter))
    }

    fn sync(&mut self) -> Result<(), EngineError> {
        self.usable()?;
        let result = self.sync_active();
        let lost = self.lost_writes.take();
        result?;
        match lost {
            None => Ok(()),
            Some(e) => Err(EngineError::Other(format!(
                "bitcask: an internal sync failed ({e}); the writes since the last successful \
                 sync were rolled back"
            ))),
        }
    }
}
