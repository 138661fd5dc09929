//! The WAL's on-disk format: segment headers, record framing and the metadata file.
//!
//! All integers are little-endian. Every decoder works on untrusted bytes: it checks
//! lengths before slicing and never panics.
//!
//! **Segment header** (48 bytes, at offset 0 of every segment):
//!
//! ```text
//! 0  magic "FLWALSEG"   8  version u32 = 1   12 header length u32 = 48
//! 16 segment number u64 24 first seq u64      32 salt u64
//! 40 reserved u32 = 0   44 CRC32C of bytes 0..44
//! ```
//!
//! **Record** (24-byte header, then the payload; records are packed):
//!
//! ```text
//! 0  header CRC u32 = CRC32C(salt as 8 bytes ++ bytes 4..24)
//! 4  payload length u32   8 seq u64   16 kind u8   17 flags u8   18 reserved u16 = 0
//! 20 payload CRC u32 = CRC32C(payload)
//! ```
//!
//! The header CRC covers the length, the sequence number, the kind, the flags and (through
//! the payload CRC) the payload, and is seeded with the segment's salt, so a record only
//! validates in the segment it was written to. Kind 0 is invalid, so zeros never parse.
//!
//! **Metadata file** `wal.meta` (40 bytes, replaced atomically by rename):
//!
//! ```text
//! 0  magic "FLWALMET"   8 version u32 = 1   12 reserved u32 = 0
//! 16 truncated_upto u64 24 last checkpoint u64 (0: none)
//! 32 reserved u32 = 0   36 CRC32C of bytes 0..36
//! ```

use std::fmt;
use std::ops::Range;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"FLWALSEG";
pub(crate) const META_MAGIC: [u8; 8] = *b"FLWALMET";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: usize = 48;
pub(crate) const RECORD_HEADER_LEN: usize = 24;
pub(crate) const META_LEN: usize = 40;
pub(crate) const COMMIT_PAYLOAD_LEN: usize = 12;

pub(crate) const KIND_DATA: u8 = 1;
pub(crate) const KIND_BATCH: u8 = 2;
pub(crate) const KIND_COMMIT: u8 = 3;
pub(crate) const KIND_CHECKPOINT: u8 = 4;
pub(crate) const FLAG_BATCH_FIRST: u8 = 1;

/// What is wrong with a piece of a WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// The segment header is short, has a bad magic, version or checksum.
    SegmentHeader,
    /// The segment header names another segment number than the file name.
    SegmentNumber,
    /// Fewer than a record header's bytes remain.
    ShortRecordHeader,
    /// The record header's checksum does not match.
    RecordHeaderChecksum,
    /// The record header checksums but has an unknown kind, flags or reserved bits.
    RecordHeaderFields,
    /// The record's length exceeds the configured maximum record size.
    RecordTooLarge,
    /// The record extends past the end of the file.
    TruncatedRecord,
    /// The payload's checksum does not match.
    PayloadChecksum,
    /// A batch without its commit record, followed by other records.
    UncommittedBatch,
    /// A batch record that does not follow the start of a batch.
    OrphanBatchRecord,
    /// A commit record that does not match the batch before it.
    BadCommit,
    /// Valid records follow each other with sequence numbers missing between them.
    MissingRecords,
    /// A valid record with a sequence number already seen.
    StaleRecord,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Defect::SegmentHeader => "invalid segment header",
            Defect::SegmentNumber => "segment header names another segment",
            Defect::ShortRecordHeader => "truncated record header",
            Defect::RecordHeaderChecksum => "record header checksum mismatch",
            Defect::RecordHeaderFields => "record header has unknown fields",
            Defect::RecordTooLarge => "record length exceeds the maximum",
            Defect::TruncatedRecord => "record extends past the end of the file",
            Defect::PayloadChecksum => "payload checksum mismatch",
            Defect::UncommittedBatch => "batch without a commit record",
            Defect::OrphanBatchRecord => "batch record outside a batch",
            Defect::BadCommit => "commit record does not match its batch",
            Defect::MissingRecords => "records are missing",
            Defect::StaleRecord => "a record repeats an earlier sequence number",
        };
        f.write_str(s)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub number: u64,
    pub first_seq: u64,
    pub salt: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, Defect> {
        let b = bytes
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(Defect::SegmentHeader)?;
        let crc = u32_at(b, 44).ok_or(Defect::SegmentHeader)?;
        if crc32c::crc32c(&b[..44]) != crc
            || b[0..8] != SEGMENT_MAGIC
            || u32_at(b, 8) != Some(FORMAT_VERSION)
            || u32_at(b, 12) != Some(SEGMENT_HEADER_LEN as u32)
            || u32_at(b, 40) != Some(0)
            || u64_at(b, 24) == Some(0)
        {
            return Err(Defect::SegmentHeader);
        }
        Ok(SegmentHeader {
            number: u64_at(b, 16).ok_or(Defect::SegmentHeader)?,
            first_seq: u64_at(b, 24).ok_or(Defect::SegmentHeader)?,
            salt: u64_at(b, 32).ok_or(Defect::SegmentHeader)?,
        })
    }
}

/// A record as framed on disk (payload as a range of the segment's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub seq: u64,
    pub kind: u8,
    pub flags: u8,
    pub offset: u64,
    pub payload: Range<usize>,
    pub total_len: usize,
}

fn header_crc(salt: u64, header_tail: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), header_tail)
}

/// Appends one framed record to `out`.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    salt: u64,
    seq: u64,
    kind: u8,
    flags: u8,
    payload: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    // The caller bounds payloads by `max_record_bytes`, which is at most 1 GiB.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = header_crc(salt, &out[start + 4..start + RECORD_HEADER_LEN]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Cheap structural checks on a candidate header (before its checksum).
fn plausible_header(h: &[u8]) -> bool {
    let kind = h[16];
    let flags = h[17];
    (KIND_DATA..=KIND_CHECKPOINT).contains(&kind)
        && h[18] == 0
        && h[19] == 0
        && (flags == 0 || (kind == KIND_BATCH && flags == FLAG_BATCH_FIRST))
}

/// Parses the record at `pos`. `check_header` is false only under the
/// `wal.crc_excludes_header` bug flag: the header's checksum is then ignored and only the
/// payload's is checked.
pub(crate) fn parse_record(
    bytes: &[u8],
    pos: usize,
    salt: u64,
    max_record: u32,
    check_header: bool,
) -> Result<RawRecord, Defect> {
    let header_end = pos
        .checked_add(RECORD_HEADER_LEN)
        .ok_or(Defect::ShortRecordHeader)?;
    let h = bytes
        .get(pos..header_end)
        .ok_or(Defect::ShortRecordHeader)?;
    let stored = u32_at(h, 0).ok_or(Defect::ShortRecordHeader)?;
    if check_header && header_crc(salt, &h[4..]) != stored {
        return Err(Defect::RecordHeaderChecksum);
    }
    if !plausible_header(h) {
        return Err(Defect::RecordHeaderFields);
    }
    let len = u32_at(h, 4).ok_or(Defect::ShortRecordHeader)?;
    if len > max_record {
        return Err(Defect::RecordTooLarge);
    }
    let seq = u64_at(h, 8).ok_or(Defect::ShortRecordHeader)?;
    let payload_crc = u32_at(h, 20).ok_or(Defect::ShortRecordHeader)?;
    let end = header_end
        .checked_add(len as usize)
        .ok_or(Defect::TruncatedRecord)?;
    let payload = bytes.get(header_end..end).ok_or(Defect::TruncatedRecord)?;
    if crc32c::crc32c(payload) != payload_crc {
        return Err(Defect::PayloadChecksum);
    }
    Ok(RawRecord {
        seq,
        kind: h[16],
        flags: h[17],
        offset: pos as u64,
        payload: header_end..end,
        total_len: RECORD_HEADER_LEN + len as usize,
    })
}

/// The first position at or after `from` where a whole valid record with a sequence
/// number of at least `min_seq` starts.
pub(crate) fn find_next_valid(
    bytes: &[u8],
    from: usize,
    salt: u64,
    max_record: u32,
    min_seq: u64,
    check_header: bool,
) -> Option<usize> {
    let last = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    (from..=last).find(|&q| {
        plausible_header(&bytes[q..q + RECORD_HEADER_LEN])
            && parse_record(bytes, q, salt, max_record, check_header)
                .is_ok_and(|r| r.seq >= min_seq)
    })
}

pub(crate) fn encode_commit(first_seq: u64, count: u32) -> [u8; COMMIT_PAYLOAD_LEN] {
    let mut b = [0u8; COMMIT_PAYLOAD_LEN];
    b[..8].copy_from_slice(&first_seq.to_le_bytes());
    b[8..].copy_from_slice(&count.to_le_bytes());
    b
}

pub(crate) fn decode_commit(payload: &[u8]) -> Option<(u64, u32)> {
    if payload.len() != COMMIT_PAYLOAD_LEN {
        return None;
    }
    Some((u64_at(payload, 0)?, u32_at(payload, 8)?))
}

/// The contents of `wal.meta`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub truncated_upto: u64,
    pub last_checkpoint: u64,
}

impl Meta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(&META_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.truncated_upto.to_le_bytes());
        b[24..32].copy_from_slice(&self.last_checkpoint.to_le_bytes());
        let crc = crc32c::crc32c(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Option<Meta> {
        if bytes.len() != META_LEN
            || bytes[0..8] != META_MAGIC
            || u32_at(bytes, 8) != Some(FORMAT_VERSION)
            || u32_at(bytes, 12) != Some(0)
            || u32_at(bytes, 32) != Some(0)
            || u32_at(bytes, 36) != Some(crc32c::crc32c(&bytes[..36]))
        {
            return None;
        }
        Some(Meta {
            truncated_upto: u64_at(bytes, 16)?,
            last_checkpoint: u64_at(bytes, 24)?,
        })
    }
}

/// A 64-bit mix (SplitMix64's finalizer) for deriving segment salts.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The salt of a new segment: a function of the caller's nonce, the segment number and
/// its first sequence number.
pub(crate) fn segment_salt(nonce: u64, number: u64, first_seq: u64) -> u64 {
    mix64(nonce ^ mix64(number ^ mix64(first_seq)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_single_byte_change_is_caught() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 77, 5, KIND_DATA, 0, b"hello world");
        let rec = parse_record(&buf, 0, 77, 1 << 20, true).unwrap();
        assert_eq!(rec.seq, 5);
        assert_eq!(&buf[rec.payload.clone()], b"hello world");
        assert_eq!(rec.total_len, buf.len());
        for i in 0..buf.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = buf.clone();
                bad[i] ^= flip;
                assert!(
                    parse_record(&bad, 0, 77, 1 << 20, true).is_err(),
                    "byte {i}"
                );
            }
        }
        // Another segment's salt rejects it; zeros never parse.
        assert_eq!(
            parse_record(&buf, 0, 78, 1 << 20, true),
            Err(Defect::RecordHeaderChecksum)
        );
        assert!(parse_record(&[0u8; 64], 0, 0, 1 << 20, true).is_err());
        assert!(parse_record(&buf[..10], 0, 77, 1 << 20, true).is_err());
        assert_eq!(
            parse_record(&buf[..buf.len() - 1], 0, 77, 1 << 20, true),
            Err(Defect::TruncatedRecord)
        );
        assert_eq!(
            parse_record(&buf, 0, 77, 4, true),
            Err(Defect::RecordTooLarge)
        );
    }

    #[test]
    fn header_and_meta_round_trip() {
        let h = SegmentHeader {
            number: 3,
            first_seq: 99,
            salt: 12345,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err());
        }
        let m = Meta {
            truncated_upto: 7,
            last_checkpoint: 5,
        };
        let b = m.encode();
        assert_eq!(Meta::decode(&b), Some(m));
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(Meta::decode(&bad).is_none());
        }
    }
}
