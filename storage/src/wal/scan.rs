//! Validating one segment's bytes: records, sequence numbers, batches, torn tails.
//!
//! The rules (see `docs/storage/wal.md`):
//!
//! - Records are parsed in order from the end of the segment header. Each must be
//!   valid (both checksums, known kind) and carry the next sequence number.
//! - At the first invalid record ("defect"), the rest of the segment is searched for a
//!   whole valid record with a sequence number at least the expected one. If there is
//!   none and the segment is the last one, the defect starts a **torn tail**: the
//!   unsynced end of the log that a crash cut short. Otherwise it is **corruption in
//!   the middle**, an error (or, in skip mode, a skipped range).
//! - A batch's records are held back until its commit record; a batch still open at
//!   the end of the last segment belongs to the torn tail.
//! - Damage whose lost records are all at or below the truncation point is harmless.

use std::ops::Range;

use super::format::{
    self, Defect, FLAG_BATCH_FIRST, KIND_BATCH, KIND_CHECKPOINT, KIND_COMMIT, KIND_DATA, RawRecord,
    SEGMENT_HEADER_LEN, SegmentHeader,
};
use super::{RecordKind, Skipped, WalError};
use crate::bugs::{EngineBug, EngineBugs};

/// A range of a segment that recovery skipped, to skip again when reading it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    pub offset: u64,
    pub resume: u64,
    pub defect: Defect,
}

pub(crate) struct ScanParams {
    pub segment: u64,
    pub max_record: u32,
    /// Whether a defect with nothing valid after it is a torn tail (the last segment at
    /// open); otherwise it is corruption.
    pub tail_allowed: bool,
    /// Skip corrupted ranges instead of failing.
    pub skip_corruption: bool,
    /// Records at or below this sequence number are logically deleted.
    pub low: u64,
    /// Defects switched on on purpose (`wal.*` flags).
    pub bugs: EngineBugs,
}

impl ScanParams {
    fn bug(&self, bug: EngineBug) -> bool {
        self.bugs.contains(bug)
    }
}

/// A record that is part of a committed unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanned {
    pub seq: u64,
    pub kind: RecordKind,
    /// Whether a unit (a single record or a batch) starts here.
    pub starts_unit: bool,
    pub offset: u64,
    pub payload: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    pub offset: u64,
    pub bytes: u64,
    pub records: u64,
}

#[derive(Debug)]
pub(crate) struct SegmentScan {
    pub header: SegmentHeader,
    pub records: Vec<Scanned>,
    /// The last sequence number the segment holds (after dropping a torn tail).
    pub last_seq: u64,
    /// Where valid data ends (where the next record goes).
    pub valid_end: u64,
    pub tail: Option<Tail>,
    pub skips: Vec<Skip>,
    pub skipped: Vec<Skipped>,
    pub dropped_batches: u64,
}

impl SegmentScan {
    /// Whether the segment had no defect at all.
    pub fn is_clean(&self) -> bool {
        self.tail.is_none() && self.skips.is_empty() && self.dropped_batches == 0
    }
}

#[derive(Debug)]
pub(crate) enum SegmentState {
    Valid(SegmentScan),
    /// The last segment, no longer than a header, with an invalid header: its creation
    /// was cut short by a crash before anything was written to it.
    TornCreation,
}

fn corruption(segment: u64, offset: u64, defect: Defect) -> WalError {
    WalError::Corruption {
        segment,
        offset,
        defect,
    }
}

struct State<'p> {
    p: &'p ScanParams,
    next_seq: u64,
    pos: usize,
    jump_allowed: bool,
    pending: Vec<Scanned>,
    records: Vec<Scanned>,
    skips: Vec<Skip>,
    skipped: Vec<Skipped>,
    dropped_batches: u64,
}

impl State<'_> {
    fn fail_or_drop_pending(&mut self) -> Result<(), WalError> {
        if self.p.bug(EngineBug::WalApplyUncommittedBatch) {
            // The defect: a batch without its commit record is applied as if committed.
            self.records.append(&mut self.pending);
            return Ok(());
        }
        if let Some(first) = self.pending.first() {
            if !self.p.skip_corruption && first.seq > self.p.low {
                return Err(corruption(
                    self.p.segment,
                    first.offset,
                    Defect::UncommittedBatch,
                ));
            }
            self.pending.clear();
            self.dropped_batches += 1;
        }
        Ok(())
    }

    fn note_skip(&mut self, offset: usize, resume: usize, defect: Defect) {
        self.skips.push(Skip {
            offset: offset as u64,
            resume: resume as u64,
            defect,
        });
        self.skipped.push(Skipped {
            segment: self.p.segment,
            offset: offset as u64,
            bytes: (resume - offset) as u64,
            lost_seqs: None,
        });
    }

    /// Handles a record that parsed; returns false if it was skipped as garbage.
    fn accept(&mut self, bytes: &[u8], rec: &RawRecord) -> Result<bool, WalError> {
        let p = self.p;
        if rec.seq == u64::MAX {
            return Err(WalError::SequenceGap {
                segment: p.segment,
                offset: rec.offset,
                expected: self.next_seq,
                found: rec.seq,
            });
        }
        if rec.seq != self.next_seq {
            let forward = rec.seq > self.next_seq;
            let harmless = forward && rec.seq <= p.low.saturating_add(1);
            if forward && (self.jump_allowed || harmless || p.skip_corruption) {
                if !harmless {
                    let lost = Some((self.next_seq.max(p.low.saturating_add(1)), rec.seq - 1));
                    match self.skipped.last_mut() {
                        Some(s) if self.jump_allowed => s.lost_seqs = lost,
                        _ => {
                            // Whole records are missing, with no damaged bytes.
                            self.skips.push(Skip {
                                offset: rec.offset,
                                resume: rec.offset,
                                defect: Defect::MissingRecords,
                            });
                            self.skipped.push(Skipped {
                                segment: p.segment,
                                offset: rec.offset,
                                bytes: 0,
                                lost_seqs: lost,
                            });
                        }
                    }
                }
                self.fail_or_drop_pending()?;
                self.next_seq = rec.seq;
            } else if p.skip_corruption && !forward {
                // A stale or duplicated record: skip it as garbage.
                let end = self.pos + rec.total_len;
                self.note_skip(self.pos, end, Defect::StaleRecord);
                self.pos = end;
                return Ok(false);
            } else {
                return Err(WalError::SequenceGap {
                    segment: p.segment,
                    offset: rec.offset,
                    expected: self.next_seq,
                    found: rec.seq,
                });
            }
        }
        self.jump_allowed = false;
        let payload = bytes.get(rec.payload.clone()).unwrap_or_default();
        let scanned = |kind, starts_unit| Scanned {
            seq: rec.seq,
            kind,
            starts_unit,
            offset: rec.offset,
            payload: rec.payload.clone(),
        };
        match rec.kind {
            KIND_DATA | KIND_CHECKPOINT => {
                self.fail_or_drop_pending()?;
                let kind = if rec.kind == KIND_DATA {
                    RecordKind::Data
                } else {
                    RecordKind::Checkpoint
                };
                self.records.push(scanned(kind, true));
            }
            KIND_BATCH if rec.flags & FLAG_BATCH_FIRST != 0 => {
                self.fail_or_drop_pending()?;
                self.pending.push(scanned(RecordKind::Batch, true));
            }
            KIND_BATCH => {
                if self.pending.is_empty() {
                    if !p.skip_corruption && rec.seq > p.low {
                        return Err(corruption(p.segment, rec.offset, Defect::OrphanBatchRecord));
                    }
                    self.dropped_batches += 1;
                } else {
                    self.pending.push(scanned(RecordKind::Batch, false));
                }
            }
            KIND_COMMIT => {
                let matches = match (format::decode_commit(payload), self.pending.first()) {
                    (Some((first, count)), Some(head)) => {
                        head.seq == first && self.pending.len() as u64 == u64::from(count)
                    }
                    _ => false,
                };
                if matches {
                    self.records.append(&mut self.pending);
                    self.records.push(scanned(RecordKind::Commit, false));
                } else {
                    if !p.skip_corruption && rec.seq > p.low {
                        return Err(corruption(p.segment, rec.offset, Defect::BadCommit));
                    }
                    self.pending.clear();
                    self.dropped_batches += 1;
                }
            }
            _ => {
                return Err(corruption(
                    p.segment,
                    rec.offset,
                    Defect::RecordHeaderFields,
                ));
            }
        }
        self.next_seq = rec.seq + 1;
        self.pos += rec.total_len;
        Ok(true)
    }
}

/// Validates a segment's bytes.
pub(crate) fn scan_segment(bytes: &[u8], p: &ScanParams) -> Result<SegmentState, WalError> {
    let header = match SegmentHeader::decode(bytes) {
        Ok(h) => h,
        Err(_) if p.tail_allowed && bytes.len() <= SEGMENT_HEADER_LEN => {
            return Ok(SegmentState::TornCreation);
        }
        Err(defect) => return Err(corruption(p.segment, 0, defect)),
    };
    if header.number != p.segment {
        return Err(corruption(p.segment, 0, Defect::SegmentNumber));
    }
    let mut st = State {
        p,
        next_seq: header.first_seq,
        pos: SEGMENT_HEADER_LEN,
        jump_allowed: false,
        pending: Vec::new(),
        records: Vec::new(),
        skips: Vec::new(),
        skipped: Vec::new(),
        dropped_batches: 0,
    };
    let mut tail_at: Option<usize> = None;
    while st.pos < bytes.len() {
        let check_header = !p.bug(EngineBug::WalCrcExcludesHeader);
        let defect =
            match format::parse_record(bytes, st.pos, header.salt, p.max_record, check_header) {
                Ok(rec) => {
                    st.accept(bytes, &rec)?;
                    continue;
                }
                Err(defect) => defect,
            };
        let pos = st.pos;
        if p.bug(EngineBug::WalTruncateAtCorruption) {
            // The defect: the first bad record ends the log, whatever follows it.
            tail_at = Some(pos);
            break;
        }
        let resume = format::find_next_valid(
            bytes,
            pos + 1,
            header.salt,
            p.max_record,
            st.next_seq,
            check_header,
        );
        match resume {
            None if p.tail_allowed => {
                tail_at = Some(pos);
                break;
            }
            None => {
                if !p.skip_corruption {
                    return Err(corruption(p.segment, pos as u64, defect));
                }
                st.note_skip(pos, bytes.len(), defect);
                st.fail_or_drop_pending()?;
                st.pos = bytes.len();
            }
            Some(r) => {
                let harmless =
                    format::parse_record(bytes, r, header.salt, p.max_record, check_header)
                        .is_ok_and(|rec| rec.seq <= p.low.saturating_add(1));
                if !p.skip_corruption && !harmless {
                    return Err(corruption(p.segment, pos as u64, defect));
                }
                st.note_skip(pos, r, defect);
                if harmless {
                    st.skipped.pop();
                }
                st.fail_or_drop_pending()?;
                st.pos = r;
                st.jump_allowed = true;
            }
        }
    }
    if p.bug(EngineBug::WalApplyUncommittedBatch) {
        // The defect again: an open batch at the end is replayed, not dropped.
        st.records.append(&mut st.pending);
    }
    let mut tail = None;
    if !st.pending.is_empty() || tail_at.is_some() {
        if p.tail_allowed {
            let start = match st.pending.first() {
                Some(first) => first.offset as usize,
                None => tail_at.unwrap_or(bytes.len()),
            };
            let records = st.pending.len() as u64;
            if let Some(first) = st.pending.first() {
                st.next_seq = first.seq;
            }
            st.pending.clear();
            tail = Some(Tail {
                offset: start as u64,
                bytes: (bytes.len() - start) as u64,
                records,
            });
        } else {
            st.fail_or_drop_pending()?;
        }
    }
    let valid_end = match tail {
        Some(t) => t.offset,
        None => bytes.len() as u64,
    };
    Ok(SegmentState::Valid(SegmentScan {
        header,
        records: st.records,
        last_seq: st.next_seq - 1,
        valid_end,
        tail,
        skips: st.skips,
        skipped: st.skipped,
        dropped_batches: st.dropped_batches,
    }))
}
