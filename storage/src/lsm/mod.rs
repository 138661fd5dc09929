//! A log-structured merge tree over a [`Vfs`](crate::vfs::Vfs). See `docs/storage/lsm.md`.
//!
//! - Writes go to the memtable WAL (`dir/wal/`, a [`crate::wal`] log: one record per
//!   put or delete, one WAL batch per `WriteBatch`), then to the memtable, each with the
//!   next sequence number (strictly increasing, recovered across restarts).
//! - When the memtable reaches `memtable_bytes` it becomes the immutable memtable and is
//!   flushed (synchronously) to a new L0 SSTable: written under a temporary name, synced,
//!   read back, renamed, directory synced; then a MANIFEST edit adds it durably; only
//!   then is the WAL truncated.
//! - Compaction ([`CompactionStrategy`]: leveled or size-tiered) streams a merge of its
//!   inputs into new tables (same temporary-name discipline), logs one manifest edit
//!   swapping inputs for outputs, and only then deletes the inputs.
//! - The set of live tables is the manifest's, never a directory listing: unknown table
//!   files (a crash's leftovers) are removed at open.
//! - Reads: memtable, immutable memtable, L0 newest first, then one table per level,
//!   first hit wins (a tombstone hides older versions); every table lookup consults its
//!   Bloom filter first. Scans are a lazy merge of all sources.

pub mod bloom;
mod compaction;
mod manifest;
mod memtable;
mod merge;
mod sstable;

use std::collections::BTreeMap;
use std::ops::Bound;

pub use compaction::{CompactionStrategy, UnknownStrategy};
pub use manifest::{MANIFEST_DIR, MAX_LEVELS};
pub use memtable::{InternalEntry, Value};
pub use merge::{MergeIter, Source};
pub use sstable::{FOOTER_LEN, FORMAT_VERSION, TableMeta, parse_table_name, table_file_name};

use crate::bugs::EngineBug;
use crate::codec::{Poison, u32_at, u64_at};
use crate::kv::{
    BatchOp, EngineError, EngineOpener, EngineSyncPolicy, KvEngine, ScanIter, WriteBatch,
    range_is_empty,
};
use crate::vfs::{self, VfsHandle};
use crate::wal::{RecoveryMode, SyncPolicy, Wal, WalError, WalOptions};
use compaction::{Params, Plan};
use manifest::{Edit, Manifest, VersionState};
use memtable::Memtable;
use sstable::{Stats, Table, TableWriter};

/// The memtable WAL's subdirectory.
pub const WAL_DIR: &str = "wal";
/// The largest key accepted.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// The largest value accepted.
pub const MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;
/// Compactions run by one maintenance pass at most (each one makes progress, so this is
/// only a bound on a bug).
const MAX_COMPACTIONS_PER_PASS: usize = 10_000;
/// WAL record: seq u64, kind u8, key length u32, key, value.
const WAL_RECORD_HEADER: usize = 13;
const WAL_PUT: u8 = 1;
const WAL_DELETE: u8 = 2;

/// Options of an LSM engine; [`LsmOptions::validate`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsmOptions {
    pub sync_policy: EngineSyncPolicy,
    pub compaction: CompactionStrategy,
    /// The memtable is flushed when its keys, values and per-entry overhead reach this.
    pub memtable_bytes: usize,
    /// Data blocks are cut once they reach this size.
    pub block_bytes: usize,
    /// Leveled compaction output is split at this size.
    pub target_file_bytes: u64,
    /// Bloom filter bits per key (10 ≈ 1% false positives).
    pub bloom_bits_per_key: u32,
    /// Leveled: L0 is compacted when it holds this many tables.
    pub l0_compaction_trigger: usize,
    /// Leveled: the budget of L1; level n's is `level_base_bytes × level_fanout^(n−1)`.
    pub level_base_bytes: u64,
    pub level_fanout: u64,
    /// Leveled: levels used (2..=7); the last is never compacted further.
    pub max_levels: usize,
    /// Size-tiered: a run of similar tables merges at this many tables...
    pub size_tiered_min_threshold: usize,
    /// ...and at most this many merge at once.
    pub size_tiered_max_threshold: usize,
    /// Size-tiered: tables below this size all count as similar.
    pub size_tiered_min_bytes: u64,
    /// Defects switched on on purpose (`crate::bugs`); none by default.
    pub bugs: crate::bugs::EngineBugs,
}

impl Default for LsmOptions {
    fn default() -> Self {
        LsmOptions {
            sync_policy: EngineSyncPolicy::EveryWrite,
            compaction: CompactionStrategy::Leveled,
            memtable_bytes: 4 << 20,
            block_bytes: 4096,
            target_file_bytes: 2 << 20,
            bloom_bits_per_key: 10,
            l0_compaction_trigger: 4,
            level_base_bytes: 10 << 20,
            level_fanout: 10,
            max_levels: MAX_LEVELS,
            size_tiered_min_threshold: 4,
            size_tiered_max_threshold: 32,
            size_tiered_min_bytes: 1 << 20,
            bugs: crate::bugs::EngineBugs::NONE,
        }
    }
}

impl LsmOptions {
    pub fn validate(&self) -> Result<(), EngineError> {
        let check = |ok: bool, what: String| {
            if ok {
                Ok(())
            } else {
                Err(EngineError::InvalidConfig(format!("lsm {what}")))
            }
        };
        check(
            (256..=1 << 30).contains(&self.memtable_bytes),
            format!(
                "memtable_bytes {} is out of range 256..=2^30",
                self.memtable_bytes
            ),
        )?;
        check(
            (64..=1 << 20).contains(&self.block_bytes),
            format!("block_bytes {} is out of range 64..=2^20", self.block_bytes),
        )?;
        check(
            (256..=1 << 32).contains(&self.target_file_bytes),
            format!(
                "target_file_bytes {} is out of range 256..=2^32",
                self.target_file_bytes
            ),
        )?;
        check(
            (1..=32).contains(&self.bloom_bits_per_key),
            format!(
                "bloom_bits_per_key {} is out of range 1..=32",
                self.bloom_bits_per_key
            ),
        )?;
        check(
            (1..=64).contains(&self.l0_compaction_trigger),
            format!(
                "l0_compaction_trigger {} is out of range 1..=64",
                self.l0_compaction_trigger
            ),
        )?;
        check(
            self.level_base_bytes >= 256,
            format!("level_base_bytes {} is below 256", self.level_base_bytes),
        )?;
        check(
            (2..=100).contains(&self.level_fanout),
            format!("level_fanout {} is out of range 2..=100", self.level_fanout),
        )?;
        check(
            (2..=MAX_LEVELS).contains(&self.max_levels),
            format!(
                "max_levels {} is out of range 2..={MAX_LEVELS}",
                self.max_levels
            ),
        )?;
        check(
            self.size_tiered_min_threshold >= 2
                && self.size_tiered_max_threshold >= self.size_tiered_min_threshold
                && self.size_tiered_max_threshold <= 1024,
            format!(
                "size-tiered thresholds {}..={} are invalid (need 2 <= min <= max <= 1024)",
                self.size_tiered_min_threshold, self.size_tiered_max_threshold
            ),
        )
    }

    fn params(&self) -> Params {
        Params {
            strategy: self.compaction,
            l0_compaction_trigger: self.l0_compaction_trigger,
            level_base_bytes: self.level_base_bytes,
            level_fanout: self.level_fanout,
            max_levels: self.max_levels,
            size_tiered_min_threshold: self.size_tiered_min_threshold,
            size_tiered_max_threshold: self.size_tiered_max_threshold,
            size_tiered_min_bytes: self.size_tiered_min_bytes,
        }
    }
}

/// Opens [`Lsm`] engines.
#[derive(Debug, Clone, Default)]
pub struct LsmOpener {
    pub options: LsmOptions,
}

impl EngineOpener for LsmOpener {
    fn name(&self) -> &'static str {
        "lsm"
    }

    fn open(&self, vfs: VfsHandle, dir: &str) -> Result<Box<dyn KvEngine>, EngineError> {
        Ok(Box::new(Lsm::open(vfs, dir, self.options.clone())?))
    }
}

/// What [`Lsm::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsmRecovery {
    pub created: bool,
    /// Live tables.
    pub tables: usize,
    /// WAL records replayed into the memtable.
    pub replayed_records: u64,
    /// WAL records skipped because a flushed table already holds them.
    pub skipped_records: u64,
    /// Files removed: temporary tables and tables no manifest version references.
    pub removed_files: Vec<String>,
}

/// Read counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LsmStats {
    /// Table lookups that consulted a Bloom filter...
    pub bloom_probes: u64,
    /// ...and the ones it answered "absent" (no block read).
    pub bloom_negatives: u64,
    /// Data blocks read by point lookups and scans.
    pub blocks_read: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub trivial_moves: u64,
    /// Tombstones dropped by flushes and compactions.
    pub tombstones_dropped: u64,
}

/// An LSM-tree engine. See the module docs.
pub struct Lsm {
    vfs: VfsHandle,
    dir: String,
    wal_dir: String,
    options: LsmOptions,
    wal: Wal,
    manifest: Manifest,
    version: VersionState,
    tables: BTreeMap<u64, Table>,
    mem: Memtable,
    /// The memtable being flushed (reads consult it; the flush is synchronous).
    imm: Option<Memtable>,
    last_seq: u64,
    poisoned: Poison,
    stats: Stats,
    counters: LsmStats,
    recovery: LsmRecovery,
    /// Only under the `lsm.no_manifest` bug flag: table files found in the directory
    /// that no version names, read after level 0 (newest first), never compacted.
    unlisted: Vec<u64>,
}

impl std::fmt::Debug for Lsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lsm")
            .field("dir", &self.dir)
            .field("last_seq", &self.last_seq)
            .field("memtable_entries", &self.mem.len())
            .field("tables", &self.tables.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

pub(crate) fn wal_error(dir: &str, e: WalError) -> EngineError {
    match e {
        WalError::Vfs(v) => EngineError::Vfs(v),
        WalError::Corruption {
            segment,
            offset,
            defect,
        } => EngineError::corruption(
            &vfs::join(dir, &crate::wal::segment_file_name(segment)),
            offset,
            defect.to_string(),
        ),
        WalError::SequenceGap {
            segment, offset, ..
        } => EngineError::corruption(
            &vfs::join(dir, &crate::wal::segment_file_name(segment)),
            offset,
            e.to_string(),
        ),
        WalError::BadMeta { ref path } => EngineError::corruption(path, 0, e.to_string()),
        other => EngineError::Other(format!("lsm WAL {dir}: {other}")),
    }
}

fn encode_wal_record(seq: u64, key: &[u8], value: &Value) -> Vec<u8> {
    let v: &[u8] = match value {
        Value::Put(v) => v,
        Value::Tombstone => &[],
    };
    let mut out = Vec::with_capacity(WAL_RECORD_HEADER + key.len() + v.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(if value.is_tombstone() {
        WAL_DELETE
    } else {
        WAL_PUT
    });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(v);
    out
}

fn decode_wal_record(b: &[u8]) -> Result<InternalEntry, String> {
    if b.len() < WAL_RECORD_HEADER {
        return Err("WAL record shorter than its header".into());
    }
    let seq = u64_at(b, 0);
    let kind = b[8];
    let klen = u32_at(b, 9) as usize;
    if b.len() - WAL_RECORD_HEADER < klen {
        return Err("WAL record key overruns the record".into());
    }
    let key = b[WAL_RECORD_HEADER..WAL_RECORD_HEADER + klen].to_vec();
    let rest = &b[WAL_RECORD_HEADER + klen..];
    let value = match kind {
        WAL_PUT => Value::Put(rest.to_vec()),
        WAL_DELETE if rest.is_empty() => Value::Tombstone,
        WAL_DELETE => return Err("WAL delete record with a value".into()),
        k => return Err(format!("unknown WAL record kind {k}")),
    };
    Ok(InternalEntry { key, seq, value })
}

impl Lsm {
    /// Opens (creating if needed) the engine in `dir` and recovers it: replays the
    /// manifest, opens and validates every live table, replays the WAL records newer
    /// than the tables into the memtable, removes files no manifest version
    /// references, then runs any flush or compaction that is due.
    pub fn open(vfs: VfsHandle, dir: &str, options: LsmOptions) -> Result<Lsm, EngineError> {
        options.validate()?;
        vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let mut recovery = LsmRecovery::default();
        let (mut manifest, state) =
            Manifest::open(vfs.clone(), dir, 0x4D41_4E49_4645_5354, options.bugs)?;
        let created = state.is_none();
        let mut version = state.unwrap_or_default();
        let wal_dir = vfs::join(dir, WAL_DIR);
        let wal_options = WalOptions {
            sync_policy: match options.sync_policy {
                EngineSyncPolicy::EveryWrite => SyncPolicy::EveryWrite,
                EngineSyncPolicy::Explicit => SyncPolicy::Never,
            },
            recovery: RecoveryMode::Strict,
            max_segment_bytes: (options.memtable_bytes as u64 * 2).clamp(64 * 1024, 64 << 20),
            max_record_bytes: (MAX_KEY_BYTES + MAX_VALUE_BYTES + WAL_RECORD_HEADER) as u32,
            nonce: version.next_file.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.last_seq,
            bugs: options.bugs,
        };
        let wal =
            Wal::open(vfs.clone(), &wal_dir, wal_options).map_err(|e| wal_error(&wal_dir, e))?;
        if created {
            if wal.current_seq() > 0 {
                return Err(EngineError::corruption(
                    &vfs::join(dir, MANIFEST_DIR),
                    0,
                    "the manifest is empty but the WAL holds records",
                ));
            }
            manifest.write_snapshot(&version)?;
            recovery.created = true;
        }
        let mut tables = BTreeMap::new();
        let mut unlisted = Vec::new();
        if options.bugs.contains(EngineBug::LsmNoManifest) {
            // The defect: the live tables are whatever the directory holds. A table the
            // manifest names but the directory lost is silently forgotten; a table file
            // no version names (a compaction input whose deletion a crash undid, a flush
            // never committed) is read as live.
            let mut on_disk = Vec::new();
            for name in vfs.list(dir)? {
                if let Some((number, false)) = sstable::parse_table_name(&name) {
                    on_disk.push(number);
                }
            }
            for level in &mut version.levels {
                level.retain(|t| on_disk.contains(&t.number));
            }
            for number in on_disk {
                if !version.contains(number) {
                    let t = Table::open_unlisted(&vfs, dir, number)?;
                    version.next_file = version.next_file.max(number + 1);
                    unlisted.push((t.meta.max_seq, number));
                    tables.insert(number, t);
                }
            }
            unlisted.sort_unstable_by(|a, b| b.cmp(a));
        }
        let unlisted: Vec<u64> = unlisted.into_iter().map(|(_, n)| n).collect();
        for t in version.levels.iter().flatten() {
            tables.insert(t.number, Table::open(&vfs, dir, t.clone())?);
        }
        recovery.tables = tables.len();
        // The memtable: WAL records newer than the tables, dense in sequence numbers.
        let mut mem = Memtable::new();
        let mut last_seq = version.last_seq;
        for r in wal.replay(0).map_err(|e| wal_error(&wal_dir, e))? {
            let e = decode_wal_record(&r.payload)
                .map_err(|d| EngineError::corruption(&wal_dir, r.seq, d))?;
            if e.seq <= version.last_seq {
                recovery.skipped_records += 1;
                continue;
            }
            if e.seq != last_seq + 1 {
                return Err(EngineError::corruption(
                    &wal_dir,
                    r.seq,
                    format!(
                        "WAL record has sequence number {}, expected {} (records are missing)",
                        e.seq,
                        last_seq + 1
                    ),
                ));
            }
            last_seq = e.seq;
            mem.insert(&e.key, e.seq, e.value);
            recovery.replayed_records += 1;
        }
        if recovery.replayed_records > 0 {
            crate::sometimes!("lsm.memtable_replayed");
        }
        let mut lsm = Lsm {
            vfs,
            dir: dir.to_string(),
            wal_dir,
            options,
            wal,
            manifest,
            version,
            tables,
            mem,
            imm: None,
            last_seq,
            poisoned: Poison::default(),
            stats: Stats::default(),
            counters: LsmStats::default(),
            recovery,
            unlisted,
        };
        lsm.remove_orphans()?;
        lsm.guarded(|l| l.maintain())?;
        Ok(lsm)
    }

    /// Removes table files (and temporary tables) no manifest version references.
    fn remove_orphans(&mut self) -> Result<(), EngineError> {
        let mut removed = Vec::new();
        for name in self.vfs.list(&self.dir)? {
            let Some((number, tmp)) = parse_table_name(&name) else {
                continue;
            };
            if tmp || !(self.version.contains(number) || self.unlisted.contains(&number)) {
                let path = vfs::join(&self.dir, &name);
                self.vfs.remove(&path)?;
                removed.push(path);
            }
        }
        if !removed.is_empty() {
            crate::sometimes!("lsm.orphan_table_removed");
            self.vfs.sync_dir(&self.dir)?;
        }
        self.recovery.removed_files.extend(removed);
        Ok(())
    }

    /// What recovery found.
    pub fn recovery(&self) -> &LsmRecovery {
        &self.recovery
    }

    /// Read and maintenance counters.
    pub fn stats(&self) -> LsmStats {
        LsmStats {
            bloom_probes: self.stats.bloom_probes.get(),
            bloom_negatives: self.stats.bloom_negatives.get(),
            blocks_read: self.stats.blocks_read.get(),
            ..self.counters
        }
    }

    /// The live tables per level (L0 newest first; deeper levels in key order).
    pub fn levels(&self) -> Vec<Vec<TableMeta>> {
        self.version.levels.clone()
    }

    /// The sequence number of the last write.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether an earlier failure made the engine unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_set()
    }

    pub fn options(&self) -> &LsmOptions {
        &self.options
    }

    fn usable(&self) -> Result<(), EngineError> {
        self.poisoned.check()
    }

    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let result = f(self);
        self.poisoned.on_error(result)
    }

    fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<(), EngineError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(EngineError::TooLarge {
                what: "key",
                len: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        if let Some(v) = value
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(EngineError::TooLarge {
                what: "value",
                len: v.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        Ok(())
    }

    /// Logs the writes as one WAL unit, applies them to the memtable, then flushes and
    /// compacts if due.
    fn apply(&mut self, ops: Vec<(&[u8], Value)>, batch: bool) -> Result<(), EngineError> {
        self.usable()?;
        if ops.is_empty() {
            return Ok(());
        }
        let first = self.last_seq + 1;
        let payloads: Vec<Vec<u8>> = ops
            .iter()
            .enumerate()
            .map(|(i, (k, v))| encode_wal_record(first + i as u64, k, v))
            .collect();
        let wal_dir = self.wal_dir.clone();
        self.guarded(|l| {
            if batch {
                l.wal.append_batch(&payloads).map(|_| ())
            } else {
                l.wal.append(&payloads[0]).map(|_| ())
            }
            .map_err(|e| wal_error(&wal_dir, e))?;
            for (i, (k, v)) in ops.into_iter().enumerate() {
                l.mem.insert(k, first + i as u64, v);
            }
            l.last_seq = first + payloads.len() as u64 - 1;
            l.maintain()
        })
    }

    /// Flushes the memtable if it is full, then compacts until nothing is due.
    fn maintain(&mut self) -> Result<(), EngineError> {
        if self.mem.approx_bytes() >= self.options.memtable_bytes {
            self.flush_memtable()?;
        }
        self.compact_until_stable()
    }

    /// Flushes the memtable to an L0 table now (if it holds anything).
    pub fn flush(&mut self) -> Result<(), EngineError> {
        self.usable()?;
        self.guarded(|l| {
            l.flush_memtable()?;
            l.compact_until_stable()
        })
    }

    /// Runs every compaction that is due.
    pub fn compact(&mut self) -> Result<(), EngineError> {
        self.usable()?;
        self.guarded(|l| l.compact_until_stable())
    }

    fn compact_until_stable(&mut self) -> Result<(), EngineError> {
        let params = self.options.params();
        for _ in 0..MAX_COMPACTIONS_PER_PASS {
            match compaction::pick(&self.version, &params) {
                Some(plan) => self.run_compaction(plan)?,
                None => return Ok(()),
            }
        }
        Err(EngineError::Other(
            "lsm: internal: compaction does not converge".into(),
        ))
    }

    fn bug(&self, bug: EngineBug) -> bool {
        self.options.bugs.contains(bug)
    }

    /// Whether any live table other than those of the memtable may hold `key`.
    fn any_table_may_contain(&self, key: &[u8], among: &[u64]) -> bool {
        among
            .iter()
            .filter_map(|n| self.tables.get(n))
            .any(|t| t.may_contain(key))
    }

    /// Writes the immutable memtable to a table, streaming. A tombstone is dropped when
    /// no table may hold an older version of its key.
    fn write_flush_table(&self, number: u64) -> Result<(Option<TableMeta>, u64), EngineError> {
        let Some(imm) = self.imm.as_ref() else {
            return Ok((None, 0));
        };
        let all: Vec<u64> = self.tables.keys().copied().collect();
        let mut writer: Option<TableWriter> = None;
        let mut dropped = 0;
        let result = (|| {
            for e in imm.iter() {
                if e.value.is_tombstone() && !self.any_table_may_contain(&e.key, &all) {
                    dropped += 1;
                    continue;
                }
                if writer.is_none() {
                    writer = Some(TableWriter::create(
                        &self.vfs,
                        &self.dir,
                        number,
                        self.options.block_bytes,
                        self.options.bloom_bits_per_key,
                    )?);
                }
                if let Some(w) = writer.as_mut() {
                    w.add(&e)?;
                }
            }
            Ok(())
        })();
        match (result, writer) {
            (Ok(()), Some(w)) => Ok((Some(w.finish()?), dropped)),
            (Ok(()), None) => Ok((None, dropped)),
            (Err(e), w) => {
                if let Some(w) = w {
                    w.abandon();
                }
                Err(e)
            }
        }
    }

    fn flush_memtable(&mut self) -> Result<(), EngineError> {
        if self.mem.is_empty() {
            return Ok(());
        }
        self.imm = Some(std::mem::take(&mut self.mem));
        if self.bug(EngineBug::LsmWalTruncatedBeforeSstableSynced) {
            // The defect: the log is cut before the table that replaces it is durable.
            let upto = self.wal.current_seq();
            if upto >= self.wal.first_seq() {
                let wal_dir = self.wal_dir.clone();
                self.wal
                    .truncate(upto)
                    .map_err(|e| wal_error(&wal_dir, e))?;
            }
        }
        let number = self.version.next_file;
        let (meta, dropped) = self.write_flush_table(number)?;
        let mut edit = Edit {
            next_file: number + 1,
            last_seq: self.last_seq,
            removed: Vec::new(),
            added: Vec::new(),
        };
        let mut opened = None;
        if let Some(meta) = meta {
            if !self.bug(EngineBug::LsmNoManifest) {
                self.vfs.sync_dir(&self.dir)?;
            }
            opened = Some(Table::open(&self.vfs, &self.dir, meta.clone())?);
            edit.added.push((0, meta));
        }
        self.commit_edit(&edit)?;
        if let Some(t) = opened {
            self.tables.insert(t.meta.number, t);
        }
        // The edit is durable: the WAL records it covers can go.
        let upto = self.wal.current_seq();
        if upto >= self.wal.first_seq() {
            let wal_dir = self.wal_dir.clone();
            self.wal
                .truncate(upto)
                .map_err(|e| wal_error(&wal_dir, e))?;
        }
        self.imm = None;
        self.counters.flushes += 1;
        crate::sometimes!("lsm.memtable_flushed");
        if dropped > 0 {
            crate::sometimes!("lsm.tombstone_dropped");
        }
        self.counters.tombstones_dropped += dropped;
        Ok(())
    }

    /// Logs an edit durably and makes its version current.
    fn commit_edit(&mut self, edit: &Edit) -> Result<(), EngineError> {
        let mut next = self.version.clone();
        next.apply(edit)
            .map_err(|d| EngineError::Other(format!("lsm: internal: invalid version edit: {d}")))?;
        self.manifest.log_edit(edit, &next)?;
        self.version = next;
        Ok(())
    }

    fn table_meta(&self, number: u64) -> Result<&TableMeta, EngineError> {
        self.tables
            .get(&number)
            .map(|t| &t.meta)
            .ok_or_else(|| EngineError::Other(format!("lsm: internal: table {number} not open")))
    }

    fn run_compaction(&mut self, plan: Plan) -> Result<(), EngineError> {
        if plan.trivial_move {
            let (level, number) = plan.inputs[0];
            let meta = self.table_meta(number)?.clone();
            let edit = Edit {
                next_file: self.version.next_file,
                last_seq: self.version.last_seq,
                removed: vec![(level as u8, number)],
                added: vec![(plan.output_level as u8, meta)],
            };
            self.commit_edit(&edit)?;
            self.counters.trivial_moves += 1;
            return Ok(());
        }
        let first_number = self.version.next_file;
        let (outputs, dropped) = self.write_compaction_outputs(&plan, first_number)?;
        if !outputs.is_empty() && !self.bug(EngineBug::LsmNoManifest) {
            self.vfs.sync_dir(&self.dir)?;
        }
        let mut opened = Vec::with_capacity(outputs.len());
        for meta in &outputs {
            opened.push(Table::open(&self.vfs, &self.dir, meta.clone())?);
        }
        let edit = Edit {
            next_file: first_number + outputs.len() as u64,
            last_seq: self.version.last_seq,
            removed: plan.inputs.iter().map(|&(l, n)| (l as u8, n)).collect(),
            added: outputs
                .into_iter()
                .map(|m| (plan.output_level as u8, m))
                .collect(),
        };
        self.commit_edit(&edit)?;
        for t in opened {
            self.tables.insert(t.meta.number, t);
        }
        // No version references the inputs any more: delete them.
        for &(_, number) in &plan.inputs {
            self.tables.remove(&number);
            self.vfs
                .remove(&vfs::join(&self.dir, &table_file_name(number)))?;
        }
        if !self.bug(EngineBug::LsmNoManifest) {
            self.vfs.sync_dir(&self.dir)?;
        }
        self.counters.compactions += 1;
        crate::sometimes!("lsm.compaction");
        if dropped > 0 {
            crate::sometimes!("lsm.tombstone_dropped");
        }
        self.counters.tombstones_dropped += dropped;
        Ok(())
    }

    /// Streams the merge of the plan's inputs into new tables (split at the target size
    /// if the plan says so); returns their metadata and the tombstones dropped.
    fn write_compaction_outputs(
        &self,
        plan: &Plan,
        first_number: u64,
    ) -> Result<(Vec<TableMeta>, u64), EngineError> {
        let mut sources: Vec<Source<'_>> = Vec::with_capacity(plan.inputs.len());
        for &(_, number) in &plan.inputs {
            let t = self.tables.get(&number).ok_or_else(|| {
                EngineError::Other(format!("lsm: internal: table {number} not open"))
            })?;
            sources.push(Box::new(t.iter(Bound::Unbounded, Bound::Unbounded, None)));
        }
        let mut outputs = Vec::new();
        let mut writer: Option<TableWriter> = None;
        let mut dropped = 0u64;
        let mut next_number = first_number;
        let result = (|| {
            for item in MergeIter::new(sources) {
                let e = item?;
                // The `lsm.tombstone_dropped_early` defect drops every tombstone, whatever
                // older tables outside the compaction may still hold.
                if e.value.is_tombstone()
                    && (self.bug(EngineBug::LsmTombstoneDroppedEarly)
                        || !self.any_table_may_contain(&e.key, &plan.older))
                {
                    dropped += 1;
                    continue;
                }
                if writer.is_none() {
                    writer = Some(TableWriter::create(
                        &self.vfs,
                        &self.dir,
                        next_number,
                        self.options.block_bytes,
                        self.options.bloom_bits_per_key,
                    )?);
                    next_number += 1;
                }
                let mut full = false;
                if let Some(w) = writer.as_mut() {
                    w.add(&e)?;
                    full =
                        plan.split_output && w.estimated_bytes() >= self.options.target_file_bytes;
                }
                if full && let Some(w) = writer.take() {
                    outputs.push(w.finish()?);
                }
            }
            if let Some(w) = writer.take() {
                outputs.push(w.finish()?);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((outputs, dropped)),
            Err(e) => {
                if let Some(w) = writer {
                    w.abandon();
                }
                Err(e)
            }
        }
    }

    /// Checks the engine's invariants: the version's (L0 newest first with disjoint
    /// sequence ranges; levels ≥ 1 sorted and non-overlapping), every live table open
    /// and fully readable (checksums, order, counts, Bloom filter holding every key),
    /// no table file on disk that the manifest does not name, and sequence numbers
    /// bounded by the last one.
    pub fn check_integrity(&self) -> Result<(), EngineError> {
        self.usable()?;
        let manifest_path = vfs::join(&self.dir, MANIFEST_DIR);
        let bad = |d: String| EngineError::corruption(&manifest_path, 0, d);
        self.version.validate().map_err(bad)?;
        let live: Vec<u64> = self
            .version
            .levels
            .iter()
            .flatten()
            .map(|t| t.number)
            .collect();
        if live.len() != self.tables.len() || live.iter().any(|n| !self.tables.contains_key(n)) {
            return Err(bad("open tables differ from the manifest's".into()));
        }
        for t in self.version.levels.iter().flatten() {
            let table = &self.tables[&t.number];
            if table.meta != *t {
                return Err(bad(format!("table {} metadata differs", t.number)));
            }
            table.verify()?;
        }
        for name in self.vfs.list(&self.dir)? {
            if let Some((number, tmp)) = parse_table_name(&name)
                && (tmp || !self.version.contains(number))
            {
                return Err(bad(format!("orphan table file {name}")));
            }
        }
        if self.version.last_seq > self.last_seq {
            return Err(bad("the manifest's last sequence number is ahead".into()));
        }
        if self.imm.is_some() {
            return Err(bad("an immutable memtable outlived its flush".into()));
        }
        Ok(())
    }

    fn get_internal(&self, key: &[u8]) -> Result<Option<Value>, EngineError> {
        if let Some((_, v)) = self.mem.get(key) {
            return Ok(Some(v.clone()));
        }
        if let Some((_, v)) = self.imm.as_ref().and_then(|m| m.get(key)) {
            return Ok(Some(v.clone()));
        }
        for t in &self.version.levels[0] {
            if let Some((_, v)) = self.tables[&t.number].get(key, &self.stats)? {
                return Ok(Some(v));
            }
        }
        for number in &self.unlisted {
            if let Some((_, v)) = self.tables[number].get(key, &self.stats)? {
                return Ok(Some(v));
            }
        }
        for level in &self.version.levels[1..] {
            let i = level.partition_point(|t| t.largest.as_slice() < key);
            if let Some(t) = level.get(i)
                && t.covers(key)
                && let Some((_, v)) = self.tables[&t.number].get(key, &self.stats)?
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

impl KvEngine for Lsm {
    fn name(&self) -> &'static str {
        "lsm"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.usable()?;
        Ok(self.get_internal(key)?.and_then(Value::into_option))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        Self::check_sizes(key, Some(value))?;
        self.apply(vec![(key, Value::Put(value.to_vec()))], false)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), EngineError> {
        Self::check_sizes(key, None)?;
        self.apply(vec![(key, Value::Tombstone)], false)
    }

    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), EngineError> {
        let mut ops = Vec::with_capacity(batch.len());
        for op in &batch.ops {
            match op {
                BatchOp::Put { key, value } => {
                    Self::check_sizes(key, Some(value))?;
                    ops.push((key.as_slice(), Value::Put(value.clone())));
                }
                BatchOp::Delete { key } => {
                    Self::check_sizes(key, None)?;
                    ops.push((key.as_slice(), Value::Tombstone));
                }
            }
        }
        self.apply(ops, true)
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
        let mut sources: Vec<Source<'a>> = Vec::new();
        sources.push(Box::new(self.mem.range(start, end).map(Ok)));
        if let Some(imm) = &self.imm {
            sources.push(Box::new(imm.range(start, end).map(Ok)));
        }
        let (lo, hi) = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let overlaps = move |t: &TableMeta| {
            let above = match &lo {
                Bound::Unbounded => true,
                Bound::Included(s) => t.largest >= *s,
                Bound::Excluded(s) => t.largest > *s,
            };
            let below = match &hi {
                Bound::Unbounded => true,
                Bound::Included(e) => t.smallest <= *e,
                Bound::Excluded(e) => t.smallest < *e,
            };
            above && below
        };
        for t in self.version.levels[0].iter().filter(|t| overlaps(t)) {
            sources.push(Box::new(self.tables[&t.number].iter(
                start,
                end,
                Some(&self.stats),
            )));
        }
        for level in &self.version.levels[1..] {
            let tables: Vec<&'a Table> = level
                .iter()
                .filter(|t| overlaps(t))
                .map(|t| &self.tables[&t.number])
                .collect();
            if tables.is_empty() {
                continue;
            }
            let (s, e) = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
            // One level is one source: its tables in key order, opened lazily.
            sources.push(Box::new(tables.into_iter().flat_map(move |t| {
                t.iter(
                    s.as_ref().map(Vec::as_slice),
                    e.as_ref().map(Vec::as_slice),
                    Some(&self.stats),
                )
            })));
        }
        Ok(Box::new(MergeIter::new(sources).filter_map(
            |item| match item {
                Ok(InternalEntry {
                    key,
                    value: Value::Put(v),
                    ..
                }) => Some(Ok((key, v))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            },
        )))
    }

    fn sync(&mut self) -> Result<(), EngineError> {
        self.usable()?;
        let wal_dir = self.wal_dir.clone();
        self.guarded(|l| l.wal.sync().map_err(|e| wal_error(&wal_dir, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_records_round_trip_and_reject_damage() {
        let put = encode_wal_record(7, b"key", &Value::Put(Vec::new()));
        let e = decode_wal_record(&put).unwrap();
        assert_eq!(
            (e.seq, e.key.as_slice(), e.value),
            (7, &b"key"[..], Value::Put(vec![]))
        );
        let del = encode_wal_record(8, b"key", &Value::Tombstone);
        assert_eq!(decode_wal_record(&del).unwrap().value, Value::Tombstone);
        let mut bad = del.clone();
        bad.push(1);
        assert!(decode_wal_record(&bad).is_err());
        let mut bad = put.clone();
        bad[8] = 9;
        assert!(decode_wal_record(&bad).is_err());
        assert!(decode_wal_record(&put[..5]).is_err());
    }

    #[test]
    fn options_are_validated() {
        assert!(LsmOptions::default().validate().is_ok());
        for bad in [
            LsmOptions {
                bloom_bits_per_key: 0,
                ..LsmOptions::default()
            },
            LsmOptions {
                max_levels: 8,
                ..LsmOptions::default()
            },
            LsmOptions {
                size_tiered_min_threshold: 1,
                ..LsmOptions::default()
            },
            LsmOptions {
                memtable_bytes: 0,
                ..LsmOptions::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(EngineError::InvalidConfig(_))));
        }
    }
}
