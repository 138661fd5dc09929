//! A segmented, checksummed write-ahead log over a [`Vfs`](crate::vfs::Vfs).
//!
//! The log is a directory of segment files `000001.wal`, `000002.wal`, … and an optional
//! metadata file `wal.meta` (the truncation point and the last checkpoint). Records carry
//! opaque payloads and one sequence number each, from a single counter that starts at 1,
//! spans all segments and never resets (an empty log reports `current_seq() == 0`).
//!
//! # Units, batches and durability
//!
//! A *unit* is what recovery returns all or nothing of: a single record
//! ([`Wal::append`], [`Wal::append_many`]), a checkpoint record ([`Wal::checkpoint`]), or a
//! batch ([`Wal::append_batch`]): N batch records followed by a commit record that takes
//! its own sequence number and names the batch's first sequence number and size. Replay
//! returns a batch only if its commit record is present and valid. A unit is written in
//! one write and never spans segments.
//!
//! Records are durable only once a sync covering them succeeded: see
//! [`Wal::durable_seq`]. The [`SyncPolicy`] decides when appends sync by themselves;
//! [`Wal::sync`] syncs explicitly (group commit: append many, sync once). Checkpoints,
//! rotation, truncation and [`Wal::close`] always sync.
//!
//! A failed sync may have dropped the data it covered (fsyncgate), so the WAL **rolls
//! back** to the last durable record: it truncates the active segment to where the last
//! successful sync ended, syncs that, and returns [`WalError::SyncFailed`] with the
//! durable sequence number; records after it are gone and their sequence numbers will be
//! reused. If the rollback fails too, the WAL is **poisoned**: every later call fails
//! with [`WalError::Poisoned`], and the process should restart (crash) before reopening,
//! since the OS may still show data that never reached the disk.
//!
//! # Recovery
//!
//! [`Wal::open`] validates every segment (see `docs/storage/wal.md`): an invalid end of
//! the last segment with nothing valid after it is a **torn tail**, truncated (and
//! reported in [`Recovery::torn_tail`]); any other damage is **corruption**,
//! [`WalError::Corruption`] (or skipped and reported with [`RecoveryMode::SkipCorrupted`]);
//! missing sequence numbers are [`WalError::SequenceGap`].
//!
//! # Use from a consensus protocol (Raft)
//!
//! Append entries with [`Wal::append`] or [`Wal::append_many`] (each entry is its own
//! unit; the Raft index lives in the payload), call [`Wal::sync`] before replying, and
//! delete a conflicting suffix with [`Wal::truncate_after`]`(seq)`, which is crash-safe:
//! after a crash the log is either unchanged or truncated at a unit boundary at or after
//! `seq`. On restart, [`Wal::replay`]`(0)` returns every record in order.

mod format;
mod scan;

use std::ops::RangeInclusive;

pub use format::Defect;
use format::{
    FLAG_BATCH_FIRST, KIND_BATCH, KIND_CHECKPOINT, KIND_COMMIT, KIND_DATA, META_LEN, Meta,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader,
};
use scan::{ScanParams, SegmentState, Skip};

use crate::bugs::EngineBug;
use crate::vfs::{self, VfsError, VfsFile, VfsHandle};

/// The default soft cap on a segment's size: 10 MiB.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 10 * 1024 * 1024;
/// The smallest accepted segment cap.
pub const MIN_SEGMENT_BYTES: u64 = 128;
/// The default maximum payload size: 16 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;
/// The largest accepted maximum payload size: 1 GiB.
pub const MAX_RECORD_BYTES_LIMIT: u32 = 1 << 30;
/// The name of the metadata file.
pub const META_FILE: &str = "wal.meta";
const META_TMP_FILE: &str = "wal.meta.tmp";
/// Reads of a damaged segment are repeated until two agree, at most this many times.
const MAX_READ_ATTEMPTS: u32 = 4;

/// When appends sync by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every append (a single record, an `append_many` call or a batch) syncs.
    #[default]
    EveryWrite,
    /// Sync once `records` records or `bytes` bytes are unsynced (0 disables that bound;
    /// at least one must be set). Up to that many acknowledged appends can be lost.
    EveryN { records: u64, bytes: u64 },
    /// Appends never sync; only [`Wal::sync`] and the always-syncing operations do.
    Never,
}

/// What recovery does with corruption in the middle of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Fail with [`WalError::Corruption`] or [`WalError::SequenceGap`].
    #[default]
    Strict,
    /// Skip to the next valid record and report what was lost in [`Recovery::skipped`].
    SkipCorrupted,
}

/// Options of a [`Wal`]; check them with [`WalOptions::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is rotated when an append finds it at or beyond this size (a soft cap:
    /// a unit is never split, so a segment can exceed it by one unit).
    pub max_segment_bytes: u64,
    /// The largest payload accepted (and believed when reading).
    pub max_record_bytes: u32,
    pub sync_policy: SyncPolicy,
    pub recovery: RecoveryMode,
    /// A value the caller should draw from its random source on every open (the
    /// simulator: the node's seeded RNG). It is mixed into the salt of each new segment,
    /// so bytes left by an earlier incarnation of a segment file can never validate.
    pub nonce: u64,
    /// Defects switched on on purpose (`crate::bugs`); none by default.
    pub bugs: crate::bugs::EngineBugs,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            sync_policy: SyncPolicy::EveryWrite,
            recovery: RecoveryMode::Strict,
            nonce: 0,
            bugs: crate::bugs::EngineBugs::NONE,
        }
    }
}

impl WalOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid = |field, reason: String| Err(WalError::InvalidConfig { field, reason });
        if self.max_segment_bytes < MIN_SEGMENT_BYTES || self.max_segment_bytes > (1 << 40) {
            return invalid(
                "max_segment_bytes",
                format!(
                    "{} is out of range; expected {MIN_SEGMENT_BYTES} to 2^40",
                    self.max_segment_bytes
                ),
            );
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return invalid(
                "max_record_bytes",
                format!(
                    "{} is out of range; expected 1 to {MAX_RECORD_BYTES_LIMIT}",
                    self.max_record_bytes
                ),
            );
        }
        if let SyncPolicy::EveryN {
            records: 0,
            bytes: 0,
        } = self.sync_policy
        {
            return invalid(
                "sync_policy",
                "EveryN needs a record or byte bound (both are 0)".to_string(),
            );
        }
        Ok(())
    }
}

/// Errors of the WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Vfs(#[from] VfsError),
    #[error("invalid WAL option {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// Damage that is not a torn tail, at a byte offset of a segment.
    #[error("WAL corruption in segment {segment} at offset {offset}: {defect}")]
    Corruption {
        segment: u64,
        offset: u64,
        defect: Defect,
    },
    /// A valid record with an unexpected sequence number (records are missing or repeated).
    #[error(
        "WAL sequence gap in segment {segment} at offset {offset}: expected {expected}, found {found}"
    )]
    SequenceGap {
        segment: u64,
        offset: u64,
        expected: u64,
        found: u64,
    },
    #[error("{path}: invalid WAL metadata file")]
    BadMeta { path: String },
    #[error("reads of segment {segment} keep returning different bytes")]
    UnstableRead { segment: u64 },
    #[error("sequence number {requested} is out of range {min}..={max}")]
    OutOfRange { requested: u64, min: u64, max: u64 },
    #[error("sequence number {seq} is inside a batch; truncate at a unit boundary")]
    InsideBatch { seq: u64 },
    #[error("a payload of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge { len: usize, max: u32 },
    #[error("an empty batch")]
    EmptyBatch,
    #[error("sequence numbers exhausted")]
    SequenceOverflow,
    /// The sync failed; the WAL rolled back to `durable_seq` (later records are gone).
    #[error("sync failed, records after {durable_seq} were discarded: {source}")]
    SyncFailed { durable_seq: u64, source: VfsError },
    #[error("the WAL is unusable after an earlier failure ({reason}); restart and reopen it")]
    Poisoned { reason: String },
}

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// A single record (its own unit).
    Data,
    /// A record of a committed batch.
    Batch,
    /// The commit record that ends a batch (empty payload for users).
    Commit,
    /// A checkpoint marker.
    Checkpoint,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub kind: RecordKind,
    pub payload: Vec<u8>,
}

/// The sequence numbers a batch took: its records are `first..commit`, its commit record `commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeqs {
    pub first: u64,
    pub commit: u64,
}

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    pub segment: u64,
    /// Where the segment now ends.
    pub offset: u64,
    pub bytes_dropped: u64,
    /// Whole records dropped with it (those of a batch without its commit record).
    pub records_dropped: u64,
}

/// A damaged range skipped in [`RecoveryMode::SkipCorrupted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    /// The sequence numbers lost, if the records after the damage show it.
    pub lost_seqs: Option<(u64, u64)>,
}

/// What [`Wal::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Live segments.
    pub segments: u64,
    /// Records (of every kind) above the truncation point.
    pub records: u64,
    pub current_seq: u64,
    pub truncated_upto: u64,
    pub last_checkpoint: Option<u64>,
    pub torn_tail: Option<TornTail>,
    pub skipped: Vec<Skipped>,
    /// Batches without a valid commit record dropped in [`RecoveryMode::SkipCorrupted`].
    pub uncommitted_batches_dropped: u64,
    /// Files removed: a torn segment creation, segments wholly below the truncation
    /// point whose deletion had not been durable, a leftover temporary file.
    pub removed_files: Vec<String>,
}

#[derive(Debug, Clone)]
struct SegmentInfo {
    number: u64,
    first_seq: u64,
    /// The last sequence number in the segment (`first_seq - 1` if empty).
    last_seq: u64,
    /// Where valid data ends.
    end: u64,
    salt: u64,
    skips: Vec<Skip>,
    /// The sequence numbers of its checkpoint records.
    checkpoints: Vec<u64>,
}

/// The name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:06}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() < 6 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn read_whole(file: &dyn VfsFile, len: u64) -> Result<Vec<u8>, WalError> {
    let size = usize::try_from(len).map_err(|_| VfsError::Io {
        path: file.path().to_string(),
        op: vfs::VfsOp::Read,
        detail: "file too large to read".to_string(),
    })?;
    let mut buf = vec![0u8; size];
    let n = file.read_at(0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Scans a segment; if it is damaged, re-reads it until two reads agree, so a transient
/// read error (a flipped bit) is not mistaken for damage on disk.
fn scan_stable(
    file: &dyn VfsFile,
    len: Option<u64>,
    params: &ScanParams,
) -> Result<(Vec<u8>, SegmentState), WalError> {
    let read = |file: &dyn VfsFile| -> Result<Vec<u8>, WalError> {
        let len = match len {
            Some(len) => len,
            None => file.len()?,
        };
        read_whole(file, len)
    };
    let mut bytes = read(file)?;
    for _ in 1..MAX_READ_ATTEMPTS {
        let result = scan::scan_segment(&bytes, params);
        let clean = matches!(&result, Ok(SegmentState::Valid(s)) if s.is_clean());
        if clean {
            return result.map(|state| (bytes, state));
        }
        let again = read(file)?;
        if again == bytes {
            return result.map(|state| (bytes, state));
        }
        bytes = again;
    }
    Err(WalError::UnstableRead {
        segment: params.segment,
    })
}

/// A write-ahead log in a directory of a [`Vfs`](crate::vfs::Vfs).
pub struct Wal {
    vfs: VfsHandle,
    dir: String,
    options: WalOptions,
    /// Live segments, oldest first; never empty; the last one is the active segment.
    segments: Vec<SegmentInfo>,
    active: Box<dyn VfsFile>,
    /// Where the last successful sync of the active segment ended.
    synced_end: u64,
    /// The active segment changed since its last successful sync.
    dirty: bool,
    next_seq: u64,
    durable_seq: u64,
    unsynced_records: u64,
    unsynced_bytes: u64,
    low: u64,
    meta_checkpoint: u64,
    last_checkpoint: Option<u64>,
    poisoned: Option<String>,
    recovery: Recovery,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("current_seq", &self.current_seq())
            .field("durable_seq", &self.durable_seq)
            .field("truncated_upto", &self.low)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, recovering it: see the module docs.
    pub fn open(vfs: VfsHandle, dir: &str, options: WalOptions) -> Result<Wal, WalError> {
        let opened = Self::open_recovering(vfs, dir, options);
        if matches!(opened, Err(WalError::Corruption { .. })) {
            crate::sometimes!("wal.corruption_detected");
        }
        opened
    }

    fn open_recovering(vfs: VfsHandle, dir: &str, options: WalOptions) -> Result<Wal, WalError> {
        options.validate()?;
        vfs::validate_path(dir)?;
        ensure_dir(&vfs, dir)?;
        let mut recovery = Recovery::default();
        let names = vfs.list(dir)?;
        if names.iter().any(|n| n == META_TMP_FILE) {
            let tmp = vfs::join(dir, META_TMP_FILE);
            vfs.remove(&tmp)?;
            recovery.removed_files.push(tmp);
        }
        let meta = if names.iter().any(|n| n == META_FILE) {
            read_meta(&vfs, &vfs::join(dir, META_FILE))?
        } else {
            Meta::default()
        };
        let low = meta.truncated_upto;
        let mut numbers: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        numbers.sort_unstable();
        let max_number = numbers.last().copied().unwrap_or(0);

        // Segments whose successor starts at or below the truncation point are dead.
        let mut live_start = 0;
        for (i, &number) in numbers.iter().enumerate() {
            let path = vfs::join(dir, &segment_file_name(number));
            let file = vfs.open(&path)?;
            let mut buf = [0u8; SEGMENT_HEADER_LEN];
            let n = file.read_at(0, &mut buf)?;
            if let Ok(h) = SegmentHeader::decode(&buf[..n])
                && h.first_seq <= low.saturating_add(1)
            {
                live_start = i;
            }
        }
        for &number in &numbers[..live_start] {
            let path = vfs::join(dir, &segment_file_name(number));
            vfs.remove(&path)?;
            recovery.removed_files.push(path);
        }
        if live_start > 0 {
            vfs.sync_dir(dir)?;
        }

        let skip_mode = options.recovery == RecoveryMode::SkipCorrupted;
        let live = &numbers[live_start..];
        let mut segments: Vec<SegmentInfo> = Vec::new();
        let mut active: Option<Box<dyn VfsFile>> = None;
        let mut last_checkpoint = (meta.last_checkpoint > 0).then_some(meta.last_checkpoint);
        let mut records = 0u64;
        let truncate_at_corruption = options.bugs.contains(EngineBug::WalTruncateAtCorruption);
        for (k, &number) in live.iter().enumerate() {
            let mut is_last = k + 1 == live.len();
            let path = vfs::join(dir, &segment_file_name(number));
            let mut file = vfs.open(&path)?;
            let params = ScanParams {
                segment: number,
                max_record: options.max_record_bytes,
                // Under `wal.truncate_at_corruption` damage anywhere is cut like a torn tail.
                tail_allowed: is_last || truncate_at_corruption,
                skip_corruption: skip_mode,
                low,
                bugs: options.bugs,
            };
            let scan = match scan_stable(&*file, None, &params) {
                Ok((_, SegmentState::Valid(scan))) => scan,
                Ok((_, SegmentState::TornCreation)) => {
                    drop(file);
                    vfs.remove(&path)?;
                    vfs.sync_dir(dir)?;
                    recovery.removed_files.push(path);
                    continue;
                }
                Err(WalError::Corruption {
                    offset: 0,
                    defect: Defect::SegmentHeader | Defect::SegmentNumber,
                    ..
                }) if skip_mode => {
                    // An unreadable segment: leave the file, report it, go on.
                    let bytes = file.len()?;
                    recovery.skipped.push(Skipped {
                        segment: number,
                        offset: 0,
                        bytes,
                        lost_seqs: None,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let expected = match segments.last() {
                Some(prev) => prev.last_seq.saturating_add(1),
                None => low.saturating_add(1),
            };
            let first = scan.header.first_seq;
            let gap_is_harmless = first <= low.saturating_add(1);
            if first > expected && !gap_is_harmless {
                if !skip_mode {
                    return Err(WalError::SequenceGap {
                        segment: number,
                        offset: 0,
                        expected,
                        found: first,
                    });
                }
                let lost = Some((expected, first - 1));
                match recovery.skipped.last_mut() {
                    Some(s) if s.lost_seqs.is_none() && s.offset == 0 => s.lost_seqs = lost,
                    _ => recovery.skipped.push(Skipped {
                        segment: number,
                        offset: 0,
                        bytes: 0,
                        lost_seqs: lost,
                    }),
                }
            } else if first < expected && segments.last().is_some() {
                // Overlapping sequence numbers: a segment that should not be here.
                return Err(WalError::SequenceGap {
                    segment: number,
                    offset: 0,
                    expected,
                    found: first,
                });
            }
            if let Some(tail) = scan.tail {
                if truncate_at_corruption && !is_last {
                    // The defect: every later segment is abandoned with the damage.
                    for &later in &live[k + 1..] {
                        let later = vfs::join(dir, &segment_file_name(later));
                        vfs.remove(&later)?;
                        recovery.removed_files.push(later);
                    }
                    vfs.sync_dir(dir)?;
                    is_last = true;
                }
                file.truncate(tail.offset)?;
                file.sync()?;
                crate::sometimes!("wal.torn_tail_truncated");
                recovery.torn_tail = Some(TornTail {
                    segment: number,
                    offset: tail.offset,
                    bytes_dropped: tail.bytes,
                    records_dropped: tail.records,
                });
            }
            recovery.skipped.extend(scan.skipped.iter().copied());
            if scan.dropped_batches > 0 {
                crate::sometimes!("wal.uncommitted_batch_discarded");
            }
            recovery.uncommitted_batches_dropped += scan.dropped_batches;
            records += scan.records.iter().filter(|r| r.seq > low).count() as u64;
            let checkpoints: Vec<u64> = scan
                .records
                .iter()
                .filter(|r| r.kind == RecordKind::Checkpoint)
                .map(|r| r.seq)
                .collect();
            last_checkpoint = last_checkpoint.max(checkpoints.last().copied());
            segments.push(SegmentInfo {
                number,
                first_seq: first,
                last_seq: scan.last_seq,
                end: scan.valid_end,
                salt: scan.header.salt,
                skips: scan.skips,
                checkpoints,
            });
            if is_last {
                active = Some(file);
                break;
            }
        }

        let current = segments.last().map_or(low, |s| s.last_seq.max(low));
        let next_seq = current.checked_add(1).ok_or(WalError::SequenceOverflow)?;
        let active = match active {
            Some(mut file) => {
                // Whatever we recovered is durable from now on.
                file.sync()?;
                file
            }
            None => {
                let number = max_number + 1;
                let (file, info) = create_segment(&vfs, dir, &options, number, next_seq)
                    .map_err(|failed| failed.error)?;
                segments.push(info);
                file
            }
        };
        let end = segments.last().map_or(SEGMENT_HEADER_LEN as u64, |s| s.end);
        recovery.segments = segments.len() as u64;
        recovery.records = records;
        recovery.current_seq = current;
        recovery.truncated_upto = low;
        recovery.last_checkpoint = last_checkpoint;
        Ok(Wal {
            vfs,
            dir: dir.to_string(),
            options,
            segments,
            active,
            synced_end: end,
            dirty: false,
            next_seq,
            durable_seq: current,
            unsynced_records: 0,
            unsynced_bytes: 0,
            low,
            meta_checkpoint: meta.last_checkpoint,
            last_checkpoint,
            poisoned: None,
            recovery,
        })
    }

    /// What recovery found when the WAL was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The options the WAL was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.options
    }

    /// The directory of the WAL.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The sequence number of the last record appended (0 for an empty log).
    pub fn current_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The last sequence number known durable (covered by a successful sync).
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// The first sequence number still in the log (records up to `first_seq() - 1`
    /// were truncated).
    pub fn first_seq(&self) -> u64 {
        self.low + 1
    }

    /// The sequence number of the last checkpoint record, if any.
    pub fn last_checkpoint(&self) -> Option<u64> {
        self.last_checkpoint
    }

    /// The numbers of the live segment files, oldest first.
    pub fn segment_numbers(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.number).collect()
    }

    /// Whether an earlier failure made the WAL unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn usable(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(reason) => Err(WalError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, reason: String) {
        self.poisoned.get_or_insert(reason);
    }

    fn active_info(&mut self) -> &mut SegmentInfo {
        // `segments` is never empty (see the field's docs).
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn segment_path(&self, number: u64) -> String {
        vfs::join(&self.dir, &segment_file_name(number))
    }

    fn check_payload(&self, payload: &[u8]) -> Result<(), WalError> {
        if payload.len() > self.options.max_record_bytes as usize {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: self.options.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Appends one record; returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        self.check_payload(payload)?;
        let seq = self.write_unit(1, |out, salt, first| {
            format::encode_record(out, salt, first, KIND_DATA, 0, payload);
            first
        })?;
        self.apply_policy()?;
        Ok(seq)
    }

    /// Appends several records in one write (each its own unit) and applies the sync
    /// policy once, as one write; returns their sequence numbers.
    pub fn append_many<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
    ) -> Result<RangeInclusive<u64>, WalError> {
        if payloads.is_empty() {
            return Err(WalError::EmptyBatch);
        }
        for p in payloads {
            self.check_payload(p.as_ref())?;
        }
        let n = payloads.len() as u64;
        let last = self.write_unit(n, |out, salt, first| {
            for (i, p) in payloads.iter().enumerate() {
                format::encode_record(out, salt, first + i as u64, KIND_DATA, 0, p.as_ref());
            }
            first + n - 1
        })?;
        self.apply_policy()?;
        Ok(last + 1 - n..=last)
    }

    /// Appends an atomic batch: the records, then a commit record. Recovery returns all
    /// of the batch or none of it.
    pub fn append_batch<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<BatchSeqs, WalError> {
        if payloads.is_empty() {
            return Err(WalError::EmptyBatch);
        }
        let count = u32::try_from(payloads.len()).map_err(|_| WalError::RecordTooLarge {
            len: payloads.len(),
            max: u32::MAX,
        })?;
        for p in payloads {
            self.check_payload(p.as_ref())?;
        }
        let n = payloads.len() as u64;
        let commit = self.write_unit(n + 1, |out, salt, first| {
            for (i, p) in payloads.iter().enumerate() {
                let flags = if i == 0 { FLAG_BATCH_FIRST } else { 0 };
                format::encode_record(out, salt, first + i as u64, KIND_BATCH, flags, p.as_ref());
            }
            let commit = format::encode_commit(first, count);
            format::encode_record(out, salt, first + n, KIND_COMMIT, 0, &commit);
            first + n
        })?;
        self.apply_policy()?;
        Ok(BatchSeqs {
            first: commit - n,
            commit,
        })
    }

    /// Appends a checkpoint record and syncs; returns its sequence number. Recovery
    /// reports the last one ([`Wal::last_checkpoint`]); replaying from it is up to the caller.
    pub fn checkpoint(&mut self) -> Result<u64, WalError> {
        let seq = self.write_unit(1, |out, salt, first| {
            format::encode_record(out, salt, first, KIND_CHECKPOINT, 0, &[]);
            first
        })?;
        self.sync_active()?;
        self.active_info().checkpoints.push(seq);
        self.last_checkpoint = Some(seq);
        Ok(seq)
    }

    /// Writes one unit of `records` records at the end of the active segment (rotating
    /// first if it is full). Sequence numbers advance only if the write succeeded.
    fn write_unit(
        &mut self,
        records: u64,
        encode: impl FnOnce(&mut Vec<u8>, u64, u64) -> u64,
    ) -> Result<u64, WalError> {
        self.usable()?;
        self.next_seq
            .checked_add(records)
            .ok_or(WalError::SequenceOverflow)?;
        self.rotate_if_full()?;
        let (salt, offset) = {
            let seg = self.active_info();
            (seg.salt, seg.end)
        };
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN * records as usize);
        let last = encode(&mut buf, salt, self.next_seq);
        if let Err(e) = self.active.write_at(offset, &buf) {
            // Undo whatever part of the write landed, so the next unit follows valid data.
            self.dirty = true;
            if let Err(e2) = self.active.truncate(offset) {
                self.poison(format!("a write failed ({e}) and undoing it failed ({e2})"));
            }
            return Err(e.into());
        }
        let seg = self.active_info();
        seg.end = offset + buf.len() as u64;
        seg.last_seq = last;
        self.next_seq = last + 1;
        self.dirty = true;
        self.unsynced_records += records;
        self.unsynced_bytes += buf.len() as u64;
        Ok(last)
    }

    fn apply_policy(&mut self) -> Result<(), WalError> {
        let due = match self.options.sync_policy {
            SyncPolicy::EveryWrite => true,
            SyncPolicy::Never => false,
            SyncPolicy::EveryN { records, bytes } => {
                (records > 0 && self.unsynced_records >= records)
                    || (bytes > 0 && self.unsynced_bytes >= bytes)
            }
        };
        if due { self.sync_active() } else { Ok(()) }
    }

    /// Makes every record appended so far durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.usable()?;
        self.sync_active()
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        if !self.dirty {
            return Ok(());
        }
        match self.active.sync() {
            Ok(()) => {
                self.synced_end = self.active_info().end;
                self.durable_seq = self.next_seq - 1;
                self.dirty = false;
                self.unsynced_records = 0;
                self.unsynced_bytes = 0;
                Ok(())
            }
            Err(source) => Err(self.roll_back(source)),
        }
    }

    /// After a failed sync: cut the active segment back to the last durable point.
    fn roll_back(&mut self, source: VfsError) -> WalError {
        let synced_end = self.synced_end;
        let result = self
            .active
            .truncate(synced_end)
            .and_then(|()| self.active.sync());
        match result {
            Ok(()) => {
                let durable = self.durable_seq;
                let seg = self.active_info();
                seg.end = synced_end;
                seg.last_seq = durable.max(seg.first_seq - 1);
                seg.checkpoints.retain(|&c| c <= durable);
                self.next_seq = durable + 1;
                self.dirty = false;
                self.unsynced_records = 0;
                self.unsynced_bytes = 0;
                self.recompute_checkpoint();
            }
            Err(e) => self.poison(format!(
                "a sync failed ({source}) and rolling back to the last durable record failed ({e})"
            )),
        }
        WalError::SyncFailed {
            durable_seq: self.durable_seq,
            source,
        }
    }

    fn recompute_checkpoint(&mut self) {
        let from_segments = self
            .segments
            .iter()
            .filter_map(|s| s.checkpoints.last().copied())
            .max();
        let from_meta = (self.meta_checkpoint > 0).then_some(self.meta_checkpoint);
        self.last_checkpoint = from_segments.max(from_meta);
    }

    fn rotate_if_full(&mut self) -> Result<(), WalError> {
        if self.active_info().end < self.options.max_segment_bytes {
            return Ok(());
        }
        self.sync_active()?;
        crate::sometimes!("wal.segment_rotated");
        let number = self.active_info().number + 1;
        let (file, info) =
            match create_segment(&self.vfs, &self.dir, &self.options, number, self.next_seq) {
                Ok(created) => created,
                Err(CreateFailed { error, cleanup }) => {
                    if let Some(e) = cleanup {
                        self.poison(format!(
                            "creating segment {number} failed ({error}) and removing it \
                             durably failed ({e})"
                        ));
                    }
                    return Err(error);
                }
            };
        self.synced_end = info.end;
        self.active = file;
        self.segments.push(info);
        self.dirty = false;
        Ok(())
    }

    /// Removes every record with a sequence number up to `upto` (inclusive). Fails with
    /// [`WalError::OutOfRange`] beyond [`Wal::current_seq`]. Crash-safe and O(segments):
    /// syncs the log, records the new truncation point in `wal.meta` (write a temporary
    /// file, sync it, rename it, sync the directory), then deletes the segments wholly
    /// below it (the active segment is kept). If `upto` falls inside a batch, the rest
    /// of the batch is still replayed.
    pub fn truncate(&mut self, upto: u64) -> Result<(), WalError> {
        self.usable()?;
        let current = self.current_seq();
        if upto > current {
            return Err(WalError::OutOfRange {
                requested: upto,
                min: 0,
                max: current,
            });
        }
        if upto <= self.low {
            return Ok(());
        }
        self.sync_active()?;
        // Segments wholly at or below `upto` go (never the active one; the next recovery
        // removes it if it is still wholly below). The metadata keeps the last checkpoint
        // at or below `upto`, since its record may go with them; a later `truncate_after`
        // cannot remove it (it never cuts below the truncation point).
        let doomed = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.last_seq <= upto)
            .count();
        let below = self
            .segments
            .iter()
            .flat_map(|s| s.checkpoints.iter().copied())
            .filter(|&c| c <= upto)
            .max()
            .unwrap_or(0);
        let meta = Meta {
            truncated_upto: upto,
            last_checkpoint: self.meta_checkpoint.max(below),
        };
        self.write_meta(&meta)?;
        self.low = upto;
        self.meta_checkpoint = meta.last_checkpoint;
        for _ in 0..doomed {
            let path = self.segment_path(self.segments[0].number);
            self.vfs.remove(&path)?;
            self.segments.remove(0);
        }
        if doomed > 0 {
            self.vfs.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn write_meta(&mut self, meta: &Meta) -> Result<(), WalError> {
        let tmp = vfs::join(&self.dir, META_TMP_FILE);
        let path = vfs::join(&self.dir, META_FILE);
        if self.vfs.exists(&tmp)? {
            self.vfs.remove(&tmp)?;
        }
        let written = self.vfs.create(&tmp).and_then(|mut f| {
            f.write_at(0, &meta.encode())?;
            f.sync()
        });
        if let Err(e) = written.and_then(|()| self.vfs.rename(&tmp, &path)) {
            let _ = self.vfs.remove(&tmp);
            return Err(e.into());
        }
        if let Err(e) = self.vfs.sync_dir(&self.dir) {
            self.poison(format!(
                "syncing the directory after replacing {META_FILE} failed ({e})"
            ));
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes every record after `seq` (exclusive), for a consensus protocol deleting a
    /// conflicting suffix. `seq` must be between the truncation point and
    /// [`Wal::current_seq`] and end a unit (not fall inside a batch). Crash-safe: later
    /// segments are deleted newest first and the directory synced, then the segment
    /// holding `seq` is truncated and synced, so a crash leaves the log truncated at
    /// some unit boundary at or after `seq`. Appends continue at `seq + 1`. A failure
    /// part-way poisons the WAL.
    pub fn truncate_after(&mut self, seq: u64) -> Result<(), WalError> {
        self.usable()?;
        let current = self.current_seq();
        if seq > current || seq < self.low {
            return Err(WalError::OutOfRange {
                requested: seq,
                min: self.low,
                max: current,
            });
        }
        if seq == current {
            return Ok(());
        }
        let target = seq + 1;
        let Some(idx) = self
            .segments
            .iter()
            .position(|s| s.first_seq <= target && target <= s.last_seq)
        else {
            return Err(WalError::OutOfRange {
                requested: seq,
                min: self.low,
                max: current,
            });
        };
        // Find where record `seq + 1` starts, and check it starts a unit.
        let info = self.segments[idx].clone();
        let path = self.segment_path(info.number);
        let mut file = if idx + 1 == self.segments.len() {
            None
        } else {
            Some(self.vfs.open(&path)?)
        };
        let reader: &dyn VfsFile = match &file {
            Some(f) => &**f,
            None => &*self.active,
        };
        let (_, scan) = self.reread(reader, &info)?;
        let Some(rec) = scan.records.iter().find(|r| r.seq == target) else {
            return Err(WalError::InsideBatch { seq });
        };
        if !rec.starts_unit {
            return Err(WalError::InsideBatch { seq });
        }
        let cut = rec.offset;
        let checkpoints: Vec<u64> = scan
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::Checkpoint && r.seq <= seq)
            .map(|r| r.seq)
            .collect();

        // From here on, a failure leaves the log in an intermediate (but crash-safe) state.
        let result = (|| -> Result<Box<dyn VfsFile>, VfsError> {
            let later: Vec<u64> = self.segments[idx + 1..].iter().map(|s| s.number).collect();
            for &number in later.iter().rev() {
                self.vfs.remove(&self.segment_path(number))?;
            }
            if !later.is_empty() {
                self.vfs.sync_dir(&self.dir)?;
            }
            let mut f = match file.take() {
                Some(f) => f,
                None => self.vfs.open(&path)?,
            };
            f.truncate(cut)?;
            f.sync()?;
            Ok(f)
        })();
        match result {
            Ok(f) => {
                self.segments.truncate(idx + 1);
                let seg = self.active_info();
                seg.end = cut;
                seg.last_seq = seq;
                seg.checkpoints = checkpoints;
                self.active = f;
                self.synced_end = cut;
                self.dirty = false;
                self.next_seq = target;
                self.durable_seq = seq;
                self.unsynced_records = 0;
                self.unsynced_bytes = 0;
                self.recompute_checkpoint();
                Ok(())
            }
            Err(e) => {
                self.poison(format!("truncate_after({seq}) failed part-way ({e})"));
                Err(e.into())
            }
        }
    }

    /// Reads a live segment again, up to its known end, and validates it: any damage
    /// other than what recovery skipped when the WAL was opened is corruption.
    fn reread(
        &self,
        file: &dyn VfsFile,
        seg: &SegmentInfo,
    ) -> Result<(Vec<u8>, scan::SegmentScan), WalError> {
        let params = ScanParams {
            segment: seg.number,
            max_record: self.options.max_record_bytes,
            tail_allowed: false,
            skip_corruption: !seg.skips.is_empty(),
            low: self.low,
            bugs: self.options.bugs,
        };
        let (bytes, state) = scan_stable(file, Some(seg.end), &params)?;
        let SegmentState::Valid(scan) = state else {
            return Err(WalError::Corruption {
                segment: seg.number,
                offset: 0,
                defect: Defect::SegmentHeader,
            });
        };
        let known = |s: &Skip| {
            seg.skips
                .iter()
                .any(|k| k.offset == s.offset && k.resume == s.resume)
        };
        if let Some(new) = scan.skips.iter().find(|s| !known(s)) {
            return Err(WalError::Corruption {
                segment: seg.number,
                offset: new.offset,
                defect: new.defect,
            });
        }
        if (bytes.len() as u64) < seg.end {
            return Err(WalError::Corruption {
                segment: seg.number,
                offset: bytes.len() as u64,
                defect: Defect::TruncatedRecord,
            });
        }
        Ok((bytes, scan))
    }

    /// The user records (single and committed batch records) with a sequence number
    /// above `after_seq` (exclusive) and above the truncation point, in order.
    pub fn replay(&self, after_seq: u64) -> Result<Vec<Record>, WalError> {
        let mut out = self.records(after_seq)?;
        out.retain(|r| matches!(r.kind, RecordKind::Data | RecordKind::Batch));
        Ok(out)
    }

    /// Like [`Wal::replay`] but with every kind of record (commits and checkpoints too).
    pub fn records(&self, after_seq: u64) -> Result<Vec<Record>, WalError> {
        self.usable()?;
        let from = after_seq.max(self.low);
        let mut out = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.last_seq <= from {
                continue;
            }
            let is_active = i + 1 == self.segments.len();
            let opened;
            let file: &dyn VfsFile = if is_active {
                &*self.active
            } else {
                opened = self.vfs.open(&self.segment_path(seg.number))?;
                &*opened
            };
            let (bytes, scan) = self.reread(file, seg)?;
            for r in scan.records {
                if r.seq > from {
                    let payload = match r.kind {
                        RecordKind::Commit => Vec::new(),
                        _ => bytes.get(r.payload.clone()).unwrap_or_default().to_vec(),
                    };
                    out.push(Record {
                        seq: r.seq,
                        kind: r.kind,
                        payload,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Syncs and closes the WAL.
    pub fn close(mut self) -> Result<(), WalError> {
        self.usable()?;
        self.sync_active()
    }
}

/// Creates the directory (and missing parents), syncing each new entry's parent.
fn ensure_dir(vfs: &VfsHandle, dir: &str) -> Result<(), WalError> {
    if dir.is_empty() || vfs.exists(dir)? {
        return Ok(());
    }
    let mut parent = String::new();
    for component in dir.split('/') {
        let path = vfs::join(&parent, component);
        if !vfs.exists(&path)? {
            vfs.create_dir_all(&path)?;
            vfs.sync_dir(&parent)?;
        }
        parent = path;
    }
    Ok(())
}

fn read_meta(vfs: &VfsHandle, path: &str) -> Result<Meta, WalError> {
    let file = vfs.open(path)?;
    let len = file.len()?;
    if len != META_LEN as u64 {
        return Err(WalError::BadMeta {
            path: path.to_string(),
        });
    }
    // Re-read once on a mismatch, in case of a transient read error.
    for _ in 0..2 {
        let bytes = read_whole(&*file, len)?;
        if let Some(meta) = Meta::decode(&bytes) {
            return Ok(meta);
        }
    }
    Err(WalError::BadMeta {
        path: path.to_string(),
    })
}

/// A failed [`create_segment`].
struct CreateFailed {
    error: WalError,
    /// Why the half-created file could not be removed durably, if it could not: a crash
    /// may then bring it back, and the WAL must not write on (see [`create_segment`]).
    cleanup: Option<VfsError>,
}

/// Creates segment `number` starting at `first_seq`: creates the file (replacing a
/// leftover of a failed attempt), writes and syncs the header, syncs the directory.
///
/// If that fails, the file is removed **and the directory synced** before returning.
/// The caller keeps writing to the previous segment (after a `truncate_after` it can be
/// below the cap again), and its unsynced tail can be torn by a crash; if the creation
/// could survive the crash without the removal (an ordered metadata journal keeps a
/// prefix of the directory operations), recovery would find an empty segment after it,
/// no longer read the previous one as the last, and report its torn tail as corruption.
fn create_segment(
    vfs: &VfsHandle,
    dir: &str,
    options: &WalOptions,
    number: u64,
    first_seq: u64,
) -> Result<(Box<dyn VfsFile>, SegmentInfo), CreateFailed> {
    let path = vfs::join(dir, &segment_file_name(number));
    let header = SegmentHeader {
        number,
        first_seq,
        salt: format::segment_salt(options.nonce, number, first_seq),
    };
    let created = (|| -> Result<Box<dyn VfsFile>, VfsError> {
        if vfs.exists(&path)? {
            vfs.remove(&path)?;
        }
        let mut file = vfs.create(&path)?;
        file.write_at(0, &header.encode())?;
        file.sync()?;
        if !options.bugs.contains(EngineBug::WalNoDirSync) {
            vfs.sync_dir(dir)?;
        }
        Ok(file)
    })();
    let file = match created {
        Ok(file) => file,
        Err(e) => {
            let cleanup = vfs
                .exists(&path)
                .and_then(|exists| if exists { vfs.remove(&path) } else { Ok(()) })
                .and_then(|()| vfs.sync_dir(dir))
                .err();
            return Err(CreateFailed {
                error: e.into(),
                cleanup,
            });
        }
    };
    let info = SegmentInfo {
        number,
        first_seq,
        last_seq: first_seq - 1,
        end: SEGMENT_HEADER_LEN as u64,
        salt: header.salt,
        skips: Vec::new(),
        checkpoints: Vec::new(),
    };
    Ok((file, info))
}
