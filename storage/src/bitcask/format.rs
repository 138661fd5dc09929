//! Bitcask's on-disk formats: data-file headers, records and hint files. Integers are
//! little-endian. See `docs/storage/bitcask.md`.

use crate::codec::{u16_at, u32_at, u64_at};

/// The magic number at the start of a data file.
pub const DATA_MAGIC: &[u8; 8] = b"FLBCDATA";
/// The magic number at the start of a hint file.
pub const HINT_MAGIC: &[u8; 8] = b"FLBCHINT";
/// The format version of data and hint files.
pub const FORMAT_VERSION: u32 = 1;
/// The length of a data file's header.
pub const FILE_HEADER_LEN: usize = 32;
/// The length of a record's header.
pub const RECORD_HEADER_LEN: usize = 20;
/// The length of a hint file's header.
pub const HINT_HEADER_LEN: usize = 40;
/// The length of a hint entry's fixed part (the key follows).
pub const HINT_ENTRY_LEN: usize = 24;
/// The payload of a commit record: the batch's first sequence number and record count.
pub const COMMIT_VALUE_LEN: usize = 12;
/// Flag bit: the record belongs to a batch (applied only with its commit record).
pub const FLAG_BATCH: u8 = 1;

/// Whether a data file is a log (written by puts and deletes, the active one among
/// them) or the output of a merge (complete before it got its name; never torn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    Log,
    Merged,
}

impl FileKind {
    fn code(self) -> u32 {
        match self {
            FileKind::Log => 1,
            FileKind::Merged => 2,
        }
    }

    fn from_code(code: u32) -> Option<FileKind> {
        match code {
            1 => Some(FileKind::Log),
            2 => Some(FileKind::Merged),
            _ => None,
        }
    }
}

/// The kind of a record. Tombstones are their own kind: no value is ever special.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordKind {
    Put,
    Tombstone,
    /// Ends a batch; its value is the batch's first sequence number and record count.
    Commit,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Put => 1,
            RecordKind::Tombstone => 2,
            RecordKind::Commit => 3,
        }
    }

    fn from_code(code: u8) -> Option<RecordKind> {
        match code {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Tombstone),
            3 => Some(RecordKind::Commit),
            _ => None,
        }
    }
}

/// A data file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub kind: FileKind,
    pub file_id: u64,
}

impl FileHeader {
    /// `magic(8) version u32, kind u32, file id u64, reserved u32, CRC32C of bytes 0..28`.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..8].copy_from_slice(DATA_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.code().to_le_bytes());
        b[16..24].copy_from_slice(&self.file_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<FileHeader, &'static str> {
        if b.len() < FILE_HEADER_LEN {
            return Err("short file header");
        }
        if &b[0..8] != DATA_MAGIC {
            return Err("bad magic in file header");
        }
        if crc32c::crc32c(&b[..28]) != u32_at(b, 28) {
            return Err("file header checksum mismatch");
        }
        if u32_at(b, 8) != FORMAT_VERSION {
            return Err("unsupported file format version");
        }
        if u32_at(b, 24) != 0 {
            return Err("nonzero reserved field in file header");
        }
        let kind = FileKind::from_code(u32_at(b, 12)).ok_or("unknown file kind")?;
        Ok(FileHeader {
            kind,
            file_id: u64_at(b, 16),
        })
    }
}

/// A decoded record, borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub flags: u8,
    pub seq: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The encoded length (header, key and value).
    pub len: usize,
}

/// Why bytes do not decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDefect {
    /// Fewer bytes than the header or the lengths it declares (a torn tail, if at the end).
    Incomplete,
    /// A header field is out of range (unknown kind or flags, a length over the limit).
    BadHeader,
    Checksum,
    /// A tombstone with a value, or a malformed commit record.
    BadShape,
}

impl RecordDefect {
    pub fn describe(self) -> &'static str {
        match self {
            RecordDefect::Incomplete => "incomplete record",
            RecordDefect::BadHeader => "invalid record header",
            RecordDefect::Checksum => "record checksum mismatch",
            RecordDefect::BadShape => "malformed record",
        }
    }
}

/// The record checksum: CRC32C seeded with the file id, over everything after the CRC
/// field (header, key, value). A record copied into another file does not validate
/// there, and neither do stale bytes of another file.
fn record_crc(file_id: u64, rest: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&file_id.to_le_bytes()), rest)
}

/// Appends one encoded record to `out`. The caller has checked the lengths against the
/// limits (`key.len() <= u16::MAX`, `value.len() <= u32::MAX`).
pub fn encode_record(
    out: &mut Vec<u8>,
    file_id: u64,
    kind: RecordKind,
    flags: u8,
    seq: u64,
    key: &[u8],
    value: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.push(kind.code());
    out.push(flags);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = record_crc(file_id, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The encoded length of a record.
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// Decodes the record at the start of `b`, checking its lengths against the limits and
/// its checksum.
pub fn decode_record(
    b: &[u8],
    file_id: u64,
    max_key_bytes: usize,
    max_value_bytes: usize,
) -> Result<Record<'_>, RecordDefect> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(RecordDefect::Incomplete);
    }
    let kind = RecordKind::from_code(b[4]).ok_or(RecordDefect::BadHeader)?;
    let flags = b[5];
    if flags & !FLAG_BATCH != 0 {
        return Err(RecordDefect::BadHeader);
    }
    let key_len = usize::from(u16_at(b, 6));
    let value_len = u32_at(b, 8) as usize;
    let value_limit = max_value_bytes.max(COMMIT_VALUE_LEN);
    if key_len > max_key_bytes || value_len > value_limit {
        return Err(RecordDefect::BadHeader);
    }
    let len = record_len(key_len, value_len);
    if b.len() < len {
        return Err(RecordDefect::Incomplete);
    }
    if record_crc(file_id, &b[4..len]) != u32_at(b, 0) {
        return Err(RecordDefect::Checksum);
    }
    let key = &b[RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len];
    let value = &b[RECORD_HEADER_LEN + key_len..len];
    let shape_ok = match kind {
        RecordKind::Put => true,
        RecordKind::Tombstone => value.is_empty(),
        RecordKind::Commit => key.is_empty() && value.len() == COMMIT_VALUE_LEN,
    };
    if !shape_ok {
        return Err(RecordDefect::BadShape);
    }
    Ok(Record {
        kind,
        flags,
        seq: u64_at(b, 12),
        key,
        value,
        len,
    })
}

/// The value of a commit record.
pub fn encode_commit_value(first_seq: u64, count: u32) -> [u8; COMMIT_VALUE_LEN] {
    let mut v = [0u8; COMMIT_VALUE_LEN];
    v[0..8].copy_from_slice(&first_seq.to_le_bytes());
    v[8..12].copy_from_slice(&count.to_le_bytes());
    v
}

/// `(first_seq, count)` of a commit record's value (whose length decode checked).
pub fn decode_commit_value(v: &[u8]) -> (u64, u32) {
    (u64_at(v, 0), u32_at(v, 8))
}

/// One entry of a hint file: where a live record of the data file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry {
    pub kind: RecordKind,
    pub seq: u64,
    pub offset: u64,
    pub record_len: u32,
    pub key: Vec<u8>,
}

/// Encodes a hint file for data file `file_id` of `data_len` bytes:
/// `magic(8) version u32, reserved u32, file id u64, data length u64, entry count u64`,
/// the entries `kind u8, reserved u8, key length u16, record length u32, offset u64,
/// seq u64, key`, and a CRC32C of everything before it.
pub fn encode_hint(file_id: u64, data_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HINT_HEADER_LEN + entries.len() * (HINT_ENTRY_LEN + 16));
    out.extend_from_slice(HINT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&file_id.to_le_bytes());
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.push(e.kind.code());
        out.push(0);
        out.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&e.record_len.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.key);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a whole hint file and checks it against its data file (`file_id`,
/// `data_len`). Any defect is an error: the caller then scans the data file instead.
pub fn decode_hint(
    b: &[u8],
    file_id: u64,
    data_len: u64,
    max_key_bytes: usize,
    max_value_bytes: usize,
) -> Result<Vec<HintEntry>, &'static str> {
    if b.len() < HINT_HEADER_LEN + 4 {
        return Err("short hint file");
    }
    let body_len = b.len() - 4;
    if crc32c::crc32c(&b[..body_len]) != u32_at(b, body_len) {
        return Err("hint file checksum mismatch");
    }
    if &b[0..8] != HINT_MAGIC || u32_at(b, 8) != FORMAT_VERSION || u32_at(b, 12) != 0 {
        return Err("bad hint file header");
    }
    if u64_at(b, 16) != file_id || u64_at(b, 24) != data_len {
        return Err("hint file does not match its data file");
    }
    let count = u64_at(b, 32);
    let mut entries = Vec::new();
    let mut at = HINT_HEADER_LEN;
    let mut read = 0u64;
    while at < body_len {
        if body_len - at < HINT_ENTRY_LEN || read >= count {
            return Err("malformed hint entries");
        }
        let kind = RecordKind::from_code(b[at]).ok_or("bad hint entry kind")?;
        let key_len = usize::from(u16_at(b, at + 2));
        let record_len = u32_at(b, at + 4);
        let offset = u64_at(b, at + 8);
        let seq = u64_at(b, at + 16);
        let key_start = at + HINT_ENTRY_LEN;
        if kind == RecordKind::Commit || b[at + 1] != 0 || key_len > max_key_bytes {
            return Err("bad hint entry");
        }
        if body_len - key_start < key_len {
            return Err("hint entry past the end");
        }
        let min_len = record_len_u64(key_len, 0);
        let max_len = record_len_u64(key_len, max_value_bytes);
        let rec = u64::from(record_len);
        if rec < min_len
            || rec > max_len
            || offset < FILE_HEADER_LEN as u64
            || offset.checked_add(rec).is_none_or(|end| end > data_len)
        {
            return Err("hint entry points outside its data file");
        }
        entries.push(HintEntry {
            kind,
            seq,
            offset,
            record_len,
            key: b[key_start..key_start + key_len].to_vec(),
        });
        at = key_start + key_len;
        read += 1;
    }
    if read != count {
        return Err("hint entry count mismatch");
    }
    Ok(entries)
}

/// `bitcask.trust_hint`: the reference's hint loader. No checksum, no check of the
/// header, the data file's id and length or the entry count: entries are read one after
/// the other and the first that does not parse (or does not fit) silently ends the
/// list, so a damaged hint loses, misplaces or invents keys. (One bound is kept, for
/// memory only: a record length beyond the data file's ends the list, so a damaged
/// length never makes a read allocate gigabytes.)
pub fn decode_hint_trusting(b: &[u8], data_len: u64, max_key_bytes: usize) -> Vec<HintEntry> {
    let mut entries = Vec::new();
    let end = b.len().saturating_sub(4);
    let mut at = HINT_HEADER_LEN;
    while at + HINT_ENTRY_LEN <= end {
        let Some(kind) = RecordKind::from_code(b[at]) else {
            break;
        };
        let key_len = usize::from(u16_at(b, at + 2));
        let key_start = at + HINT_ENTRY_LEN;
        if kind == RecordKind::Commit
            || key_len > max_key_bytes
            || end - key_start < key_len
            || u64::from(u32_at(b, at + 4)) > data_len
        {
            break;
        }
        entries.push(HintEntry {
            kind,
            seq: u64_at(b, at + 16),
            offset: u64_at(b, at + 8),
            record_len: u32_at(b, at + 4),
            key: b[key_start..key_start + key_len].to_vec(),
        });
        at = key_start + key_len;
    }
    entries
}

fn record_len_u64(key_len: usize, value_len: usize) -> u64 {
    (RECORD_HEADER_LEN as u64) + key_len as u64 + value_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_checks() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, RecordKind::Put, 0, 42, b"key", b"value");
        let r = decode_record(&out, 7, 100, 100).unwrap();
        assert_eq!(
            (r.kind, r.seq, r.key, r.value, r.len),
            (RecordKind::Put, 42, &b"key"[..], &b"value"[..], out.len())
        );
        // Another file id: the checksum fails.
        assert_eq!(
            decode_record(&out, 8, 100, 100),
            Err(RecordDefect::Checksum)
        );
        // Short: incomplete.
        assert_eq!(
            decode_record(&out[..out.len() - 1], 7, 100, 100),
            Err(RecordDefect::Incomplete)
        );
        // Zeros never decode.
        assert_eq!(
            decode_record(&[0u8; 40], 7, 100, 100),
            Err(RecordDefect::BadHeader)
        );
    }

    #[test]
    fn hint_round_trip_and_checks() {
        let e = HintEntry {
            kind: RecordKind::Put,
            seq: 3,
            offset: 32,
            record_len: 25,
            key: b"abc".to_vec(),
        };
        let b = encode_hint(5, 100, std::slice::from_ref(&e));
        assert_eq!(decode_hint(&b, 5, 100, 100, 100).unwrap(), vec![e]);
        assert!(decode_hint(&b, 5, 101, 100, 100).is_err());
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(decode_hint(&c, 5, 100, 100, 100).is_err(), "byte {i}");
        }
    }
}
