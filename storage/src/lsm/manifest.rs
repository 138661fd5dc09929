//! The MANIFEST: the log of version edits that defines the set of live tables.
//!
//! It is a `storage::wal` log in `dir/manifest/` whose records are a **snapshot** (the
//! whole version) or an **edit** (tables removed and added, with the counters). Every
//! record is followed by a WAL checkpoint record, which syncs: an edit is durable when
//! [`Manifest::log_edit`] returns, and an edit is never the last record of the log, so a
//! damaged edit is reported as corruption rather than cut as a torn tail (a damaged
//! trailing checkpoint record is harmless). When enough edits accumulate, a snapshot is
//! appended and the log is truncated before it (crash-safe: `Wal::truncate`).
//!
//! Record payload (little-endian): tag u8 (1 snapshot, 2 edit), next file number u64,
//! last sequence number u64 (every write up to it is in the tables), removed count u32, (level u8, number u64)*, added count u32, then per
//! added table: level u8, number u64, size u64, entries u64, tombstones u64, min seq u64,
//! max seq u64, smallest length u32, smallest, largest length u32, largest.

use crate::codec::{u32_at, u64_at};
use crate::kv::EngineError;
use crate::lsm::sstable::TableMeta;
use crate::lsm::wal_error;
use crate::vfs::{self, VfsHandle};
use crate::wal::{RecoveryMode, SyncPolicy, Wal, WalOptions};

/// The number of levels of the format (L0..L6).
pub const MAX_LEVELS: usize = 7;
/// The manifest's subdirectory.
pub const MANIFEST_DIR: &str = "manifest";
/// Edits logged before the log is rewritten as one snapshot.
const EDITS_PER_SNAPSHOT: u64 = 64;
const TAG_SNAPSHOT: u8 = 1;
const TAG_EDIT: u8 = 2;

/// The state the manifest describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionState {
    pub next_file: u64,
    pub last_seq: u64,
    /// `levels[0]` newest first (by sequence numbers); `levels[n ≥ 1]` by smallest key,
    /// non-overlapping.
    pub levels: Vec<Vec<TableMeta>>,
}

impl Default for VersionState {
    fn default() -> Self {
        VersionState {
            next_file: 1,
            last_seq: 0,
            levels: vec![Vec::new(); MAX_LEVELS],
        }
    }
}

/// A change of version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    pub next_file: u64,
    pub last_seq: u64,
    pub removed: Vec<(u8, u64)>,
    pub added: Vec<(u8, TableMeta)>,
}

impl VersionState {
    /// Applies an edit, checking that it makes sense; the result is validated.
    pub fn apply(&mut self, edit: &Edit) -> Result<(), String> {
        if edit.last_seq < self.last_seq {
            return Err("sequence numbers go backwards".into());
        }
        if edit.next_file < self.next_file {
            return Err("file numbers go backwards".into());
        }
        for &(level, number) in &edit.removed {
            let l = self
                .levels
                .get_mut(usize::from(level))
                .ok_or_else(|| format!("level {level} out of range"))?;
            let i = l
                .iter()
                .position(|t| t.number == number)
                .ok_or_else(|| format!("removes table {number}, which is not in level {level}"))?;
            l.remove(i);
        }
        for (level, meta) in &edit.added {
            if self.contains(meta.number) {
                return Err(format!("adds table {} twice", meta.number));
            }
            let l = self
                .levels
                .get_mut(usize::from(*level))
                .ok_or_else(|| format!("level {level} out of range"))?;
            let i = if *level == 0 {
                l.partition_point(|t| t.max_seq > meta.max_seq)
            } else {
                l.partition_point(|t| t.smallest < meta.smallest)
            };
            l.insert(i, meta.clone());
        }
        self.next_file = edit.next_file;
        self.last_seq = edit.last_seq;
        self.validate()
    }

    pub fn contains(&self, number: u64) -> bool {
        self.levels.iter().flatten().any(|t| t.number == number)
    }

    /// The structural invariants: L0 newest first with disjoint sequence ranges, every
    /// other level sorted and non-overlapping, file numbers below `next_file`, sequence
    /// numbers up to `last_seq`.
    pub fn validate(&self) -> Result<(), String> {
        if self.levels.len() != MAX_LEVELS {
            return Err("wrong number of levels".into());
        }
        for (n, level) in self.levels.iter().enumerate() {
            for t in level {
                if t.number >= self.next_file
                    || t.min_seq > t.max_seq
                    || t.max_seq > self.last_seq
                    || t.smallest > t.largest
                    || t.entries == 0
                    || t.tombstones > t.entries
                {
                    return Err(format!(
                        "table {} in level {n} has invalid metadata",
                        t.number
                    ));
                }
            }
            for w in level.windows(2) {
                let ordered = if n == 0 {
                    w[0].min_seq > w[1].max_seq
                } else {
                    w[0].largest < w[1].smallest
                };
                if !ordered {
                    return Err(format!(
                        "tables {} and {} of level {n} overlap or are out of order",
                        w[0].number, w[1].number
                    ));
                }
            }
        }
        Ok(())
    }

    /// The whole version as one edit (for a snapshot).
    fn as_edit(&self) -> Edit {
        Edit {
            next_file: self.next_file,
            last_seq: self.last_seq,
            removed: Vec::new(),
            added: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(n, l)| l.iter().map(move |t| (n as u8, t.clone())))
                .collect(),
        }
    }
}

fn encode(tag: u8, e: &Edit) -> Vec<u8> {
    let mut out = vec![tag];
    for x in [e.next_file, e.last_seq] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&(e.removed.len() as u32).to_le_bytes());
    for (level, number) in &e.removed {
        out.push(*level);
        out.extend_from_slice(&number.to_le_bytes());
    }
    out.extend_from_slice(&(e.added.len() as u32).to_le_bytes());
    for (level, t) in &e.added {
        out.push(*level);
        for x in [
            t.number,
            t.size_bytes,
            t.entries,
            t.tombstones,
            t.min_seq,
            t.max_seq,
        ] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for k in [&t.smallest, &t.largest] {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
    }
    out
}

/// A bounds-checked reader over a record.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.b.len() - self.at < n {
            return Err("manifest record cut short".into());
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        self.at += 1;
        Ok(self.b[self.at - 1])
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.need(4)?;
        self.at += 4;
        Ok(u32_at(self.b, self.at - 4))
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.need(8)?;
        self.at += 8;
        Ok(u64_at(self.b, self.at - 8))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        self.need(n)?;
        self.at += n;
        Ok(self.b[self.at - n..self.at].to_vec())
    }
}

fn decode(b: &[u8]) -> Result<(u8, Edit), String> {
    let mut r = Reader { b, at: 0 };
    let tag = r.u8()?;
    if tag != TAG_SNAPSHOT && tag != TAG_EDIT {
        return Err(format!("unknown manifest record tag {tag}"));
    }
    let mut e = Edit {
        next_file: r.u64()?,
        last_seq: r.u64()?,
        ..Edit::default()
    };
    let removed = r.u32()?;
    for _ in 0..removed {
        let level = r.u8()?;
        e.removed.push((level, r.u64()?));
    }
    let added = r.u32()?;
    for _ in 0..added {
        let level = r.u8()?;
        let t = TableMeta {
            number: r.u64()?,
            size_bytes: r.u64()?,
            entries: r.u64()?,
            tombstones: r.u64()?,
            min_seq: r.u64()?,
            max_seq: r.u64()?,
            smallest: r.bytes()?,
            largest: r.bytes()?,
        };
        e.added.push((level, t));
    }
    if r.at != b.len() {
        return Err("trailing bytes in a manifest record".into());
    }
    if tag == TAG_SNAPSHOT && !e.removed.is_empty() {
        return Err("a snapshot removes tables".into());
    }
    Ok((tag, e))
}

/// The manifest log.
pub struct Manifest {
    wal: Wal,
    dir: String,
    edits_since_snapshot: u64,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("dir", &self.dir)
            .field("edits_since_snapshot", &self.edits_since_snapshot)
            .finish_non_exhaustive()
    }
}

impl Manifest {
    /// Opens the manifest in `dir/manifest` and replays it; `None` if it is empty (a
    /// new database: the caller writes the first snapshot).
    pub fn open(
        vfs: VfsHandle,
        dir: &str,
        nonce: u64,
        bugs: crate::bugs::EngineBugs,
    ) -> Result<(Manifest, Option<VersionState>), EngineError> {
        let mdir = vfs::join(dir, MANIFEST_DIR);
        let options = WalOptions {
            max_segment_bytes: 1 << 20,
            max_record_bytes: 1 << 28,
            sync_policy: SyncPolicy::Never,
            recovery: RecoveryMode::Strict,
            nonce,
            bugs,
        };
        let wal = Wal::open(vfs, &mdir, options).map_err(|e| wal_error(&mdir, e))?;
        let records = wal.replay(0).map_err(|e| wal_error(&mdir, e))?;
        let corrupt = |seq: u64, d: String| EngineError::corruption(&mdir, seq, d);
        let mut state: Option<VersionState> = None;
        let mut edits = 0u64;
        for r in &records {
            let (tag, edit) = decode(&r.payload).map_err(|d| corrupt(r.seq, d))?;
            let s = match (tag, state.as_mut()) {
                (TAG_SNAPSHOT, _) => {
                    edits = 0;
                    state.insert(VersionState::default())
                }
                (_, Some(s)) => {
                    edits += 1;
                    s
                }
                (_, None) => {
                    return Err(corrupt(
                        r.seq,
                        "the manifest does not start with a snapshot".into(),
                    ));
                }
            };
            s.apply(&edit).map_err(|d| corrupt(r.seq, d))?;
        }
        if state.is_none() && wal.first_seq() > 1 {
            return Err(corrupt(
                wal.first_seq(),
                "the manifest was truncated but holds no snapshot".into(),
            ));
        }
        Ok((
            Manifest {
                wal,
                dir: mdir,
                edits_since_snapshot: edits,
            },
            state,
        ))
    }

    fn append_synced(&mut self, payload: &[u8]) -> Result<u64, EngineError> {
        let dir = self.dir.clone();
        let seq = self.wal.append(payload).map_err(|e| wal_error(&dir, e))?;
        // The checkpoint record syncs, and keeps this record from being the last one.
        self.wal.checkpoint().map_err(|e| wal_error(&dir, e))?;
        Ok(seq)
    }

    /// Logs `edit` durably (`after` is the version it produces, for a snapshot).
    pub fn log_edit(&mut self, edit: &Edit, after: &VersionState) -> Result<(), EngineError> {
        self.append_synced(&encode(TAG_EDIT, edit))?;
        self.edits_since_snapshot += 1;
        if self.edits_since_snapshot >= EDITS_PER_SNAPSHOT {
            self.write_snapshot(after)?;
        }
        Ok(())
    }

    /// Logs the whole version durably, then truncates the log before it.
    pub fn write_snapshot(&mut self, state: &VersionState) -> Result<(), EngineError> {
        let seq = self.append_synced(&encode(TAG_SNAPSHOT, &state.as_edit()))?;
        self.edits_since_snapshot = 0;
        let dir = self.dir.clone();
        self.wal.truncate(seq - 1).map_err(|e| wal_error(&dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(number: u64, lo: &str, hi: &str, seqs: (u64, u64)) -> TableMeta {
        TableMeta {
            number,
            size_bytes: 100,
            entries: 2,
            tombstones: 0,
            min_seq: seqs.0,
            max_seq: seqs.1,
            smallest: lo.as_bytes().to_vec(),
            largest: hi.as_bytes().to_vec(),
        }
    }

    #[test]
    fn edits_round_trip_and_apply() {
        let edit = Edit {
            next_file: 5,
            last_seq: 40,
            removed: vec![],
            added: vec![
                (0, meta(1, "a", "c", (1, 10))),
                (1, meta(2, "d", "f", (11, 20))),
            ],
        };
        let (tag, back) = decode(&encode(TAG_EDIT, &edit)).unwrap();
        assert_eq!((tag, &back), (TAG_EDIT, &edit));
        let mut s = VersionState::default();
        s.apply(&edit).unwrap();
        assert_eq!(s.levels[0].len(), 1);
        // Overlap in level 1 is refused.
        let bad = Edit {
            added: vec![(1, meta(3, "e", "g", (21, 22)))],
            ..edit.clone()
        };
        assert!(s.clone().apply(&bad).is_err());
        // Removing a table that is not there is refused.
        let bad = Edit {
            removed: vec![(1, 1)],
            added: vec![],
            ..edit
        };
        assert!(s.apply(&bad).is_err());
    }

    #[test]
    fn every_truncation_of_a_record_fails_to_decode() {
        let edit = Edit {
            next_file: 5,
            last_seq: 40,
            removed: vec![(0, 3)],
            added: vec![(1, meta(2, "d", "f", (11, 20)))],
        };
        let bytes = encode(TAG_EDIT, &edit);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err());
        }
    }
}
