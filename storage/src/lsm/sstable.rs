//! SSTables: immutable sorted files of internal entries.
//!
//! ```text
//! data block*   entries, then count u32, crc u32
//! bloom block   the filter (bloom.rs), then 1 u32, crc u32
//! index block   (last key length u32, last key, block offset u64, block length u32)*,
//!               then count u32, crc u32
//! footer        68 bytes: magic "FLLSMSST", version u32 (1), reserved u32 (0),
//!               file number u64, bloom offset u64, bloom length u64, index offset u64,
//!               index length u64, entry count u64, crc u32 of bytes 0..64
//! entry         kind u8 (1 put, 2 tombstone), seq u64, key length u32, value length u32
//!               (0 for a tombstone), key, value
//! ```
//!
//! Every block's CRC32C covers the file number, the block's offset and its bytes, so a
//! valid block copied into another file or to another place fails its check. Integers are
//! little-endian. Readers validate everything (checksums, kinds, lengths, strictly
//! increasing keys within and across blocks, keys against the index and the manifest's
//! bounds, sequence numbers against the manifest) and report any failure as
//! `EngineError::Corruption { file, offset, .. }`.

use std::cell::Cell;
use std::ops::Bound;

use crate::codec::{u32_at, u64_at};
use crate::kv::{EngineError, key_in_range};
use crate::lsm::bloom::{self, BloomFilter};
use crate::lsm::memtable::{InternalEntry, Value};
use crate::vfs::{self, VfsFile, VfsHandle};

pub const MAGIC: &[u8; 8] = b"FLLSMSST";
pub const FORMAT_VERSION: u32 = 1;
pub const FOOTER_LEN: usize = 68;
/// Every block ends with `count u32, crc u32`.
pub const BLOCK_TRAILER_LEN: usize = 8;
pub const ENTRY_HEADER_LEN: usize = 17;
const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Read-back verification reads the file in chunks of this size.
const VERIFY_CHUNK_BYTES: usize = 64 * 1024;

/// The name of table `number`.
pub fn table_file_name(number: u64) -> String {
    format!("{number:06}.sst")
}

/// The temporary name a table is written under before its rename.
pub fn table_tmp_name(number: u64) -> String {
    format!("{number:06}.sst.tmp")
}

/// The number of a table file name (`000012.sst`), or of a temporary one; `None` for
/// any other name.
pub fn parse_table_name(name: &str) -> Option<(u64, bool)> {
    let (stem, tmp) = match name.strip_suffix(".sst.tmp") {
        Some(s) => (s, true),
        None => (name.strip_suffix(".sst")?, false),
    };
    if stem.len() < 6 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, tmp))
}

/// What the manifest records about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    pub number: u64,
    pub size_bytes: u64,
    pub entries: u64,
    pub tombstones: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

impl TableMeta {
    /// Whether the table's key range intersects `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_slice() <= hi && lo <= self.largest.as_slice()
    }

    /// Whether `key` is within the table's key range.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.smallest.as_slice() <= key && key <= self.largest.as_slice()
    }
}

/// Read counters (tests and tools).
#[derive(Debug, Default)]
pub struct Stats {
    pub bloom_probes: Cell<u64>,
    pub bloom_negatives: Cell<u64>,
    pub blocks_read: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

fn block_crc(number: u64, offset: u64, bytes: &[u8]) -> u32 {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&number.to_le_bytes());
    seed[8..].copy_from_slice(&offset.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), bytes)
}

/// Appends the trailer (`count`, CRC of everything before it) to a block.
fn seal_block(number: u64, offset: u64, block: &mut Vec<u8>, count: u32) {
    block.extend_from_slice(&count.to_le_bytes());
    let crc = block_crc(number, offset, block);
    block.extend_from_slice(&crc.to_le_bytes());
}

fn encode_entry(out: &mut Vec<u8>, e: &InternalEntry) {
    let (kind, value): (u8, &[u8]) = match &e.value {
        Value::Put(v) => (KIND_PUT, v),
        Value::Tombstone => (KIND_TOMBSTONE, &[]),
    };
    out.push(kind);
    out.extend_from_slice(&e.seq.to_le_bytes());
    out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.key);
    out.extend_from_slice(value);
}

/// One index entry: the block's last key and where the block is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexEntry {
    last_key: Vec<u8>,
    offset: u64,
    len: u32,
}

/// Writes a table under its temporary name, streaming: one data block in memory at a
/// time (plus the index and one 64-bit hash per key for the filter).
pub struct TableWriter {
    vfs: VfsHandle,
    dir: String,
    number: u64,
    tmp_path: String,
    file: Box<dyn VfsFile>,
    block_bytes: usize,
    bits_per_key: u32,
    offset: u64,
    block: Vec<u8>,
    block_count: u32,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    meta: TableMeta,
    last_key: Option<Vec<u8>>,
    /// CRC32C of every byte written, for the read-back check.
    written_crc: u32,
}

impl TableWriter {
    /// Creates `dir/NNNNNN.sst.tmp` (replacing a leftover).
    pub fn create(
        vfs: &VfsHandle,
        dir: &str,
        number: u64,
        block_bytes: usize,
        bits_per_key: u32,
    ) -> Result<TableWriter, EngineError> {
        let tmp_path = vfs::join(dir, &table_tmp_name(number));
        if vfs.exists(&tmp_path)? {
            vfs.remove(&tmp_path)?;
        }
        let file = vfs.create(&tmp_path)?;
        Ok(TableWriter {
            vfs: vfs.clone(),
            dir: dir.to_string(),
            number,
            tmp_path,
            file,
            block_bytes,
            bits_per_key,
            offset: 0,
            block: Vec::with_capacity(block_bytes + 64),
            block_count: 0,
            index: Vec::new(),
            hashes: Vec::new(),
            meta: TableMeta {
                number,
                size_bytes: 0,
                entries: 0,
                tombstones: 0,
                min_seq: u64::MAX,
                max_seq: 0,
                smallest: Vec::new(),
                largest: Vec::new(),
            },
            last_key: None,
            written_crc: 0,
        })
    }

    /// The bytes written so far plus the open block.
    pub fn estimated_bytes(&self) -> u64 {
        self.offset + self.block.len() as u64
    }

    /// Adds an entry; keys must be strictly increasing.
    pub fn add(&mut self, e: &InternalEntry) -> Result<(), EngineError> {
        if self.last_key.as_ref().is_some_and(|last| *last >= e.key) {
            return Err(EngineError::Other(format!(
                "lsm: internal: table {} keys out of order",
                self.number
            )));
        }
        if self.meta.entries == 0 {
            self.meta.smallest = e.key.clone();
        }
        encode_entry(&mut self.block, e);
        self.block_count += 1;
        self.hashes.push(bloom::key_hash(&e.key));
        self.meta.entries += 1;
        if e.value.is_tombstone() {
            self.meta.tombstones += 1;
        }
        self.meta.min_seq = self.meta.min_seq.min(e.seq);
        self.meta.max_seq = self.meta.max_seq.max(e.seq);
        self.last_key = Some(e.key.clone());
        if self.block.len() >= self.block_bytes {
            self.finish_block()?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        self.file.write_at(self.offset, bytes)?;
        self.written_crc = crc32c::crc32c_append(self.written_crc, bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn finish_block(&mut self) -> Result<(), EngineError> {
        if self.block_count == 0 {
            return Ok(());
        }
        let mut block = std::mem::take(&mut self.block);
        let offset = self.offset;
        seal_block(self.number, offset, &mut block, self.block_count);
        self.write(&block)?;
        self.index.push(IndexEntry {
            last_key: self.last_key.clone().unwrap_or_default(),
            offset,
            len: block.len() as u32,
        });
        block.clear();
        self.block = block;
        self.block_count = 0;
        Ok(())
    }

    /// Writes the filter, index and footer, syncs, reads the file back and checks it,
    /// then renames it to its final name. The caller syncs the directory (once for all
    /// the tables of a flush or compaction) before any manifest edit names the table.
    pub fn finish(mut self) -> Result<TableMeta, EngineError> {
        if self.meta.entries == 0 {
            return Err(EngineError::Other("lsm: internal: empty table".into()));
        }
        self.finish_block()?;
        let filter = BloomFilter::from_hashes(&self.hashes, self.bits_per_key);
        let bloom_offset = self.offset;
        let mut bloom_block = filter.encode();
        seal_block(self.number, bloom_offset, &mut bloom_block, 1);
        self.write(&bloom_block)?;
        let index_offset = self.offset;
        let mut index_block = Vec::new();
        for e in &self.index {
            index_block.extend_from_slice(&(e.last_key.len() as u32).to_le_bytes());
            index_block.extend_from_slice(&e.last_key);
            index_block.extend_from_slice(&e.offset.to_le_bytes());
            index_block.extend_from_slice(&e.len.to_le_bytes());
        }
        seal_block(
            self.number,
            index_offset,
            &mut index_block,
            self.index.len() as u32,
        );
        self.write(&index_block)?;
        let footer = Footer {
            number: self.number,
            bloom_offset,
            bloom_len: bloom_block.len() as u64,
            index_offset,
            index_len: index_block.len() as u64,
            entries: self.meta.entries,
        }
        .encode();
        self.write(&footer)?;
        self.file.sync()?;
        self.verify_readback()?;
        self.meta.largest = self.last_key.clone().unwrap_or_default();
        self.meta.size_bytes = self.offset;
        let path = vfs::join(&self.dir, &table_file_name(self.number));
        self.vfs.rename(&self.tmp_path, &path)?;
        Ok(self.meta)
    }

    /// Reads the whole file back and compares its length and CRC with what was
    /// written: a lost or misdirected write is caught before the table is used.
    fn verify_readback(&self) -> Result<(), EngineError> {
        let len = self.file.len()?;
        if len != self.offset {
            return Err(EngineError::corruption(
                &self.tmp_path,
                len.min(self.offset),
                "table length does not read back as written",
            ));
        }
        let mut crc = 0u32;
        let mut buf = vec![0u8; VERIFY_CHUNK_BYTES];
        let mut at = 0u64;
        while at < len {
            let want = VERIFY_CHUNK_BYTES.min((len - at) as usize);
            let n = self.file.read_at(at, &mut buf[..want])?;
            if n != want {
                return Err(EngineError::corruption(
                    &self.tmp_path,
                    at,
                    "table cut short",
                ));
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        if crc != self.written_crc {
            return Err(EngineError::corruption(
                &self.tmp_path,
                0,
                "table does not read back as written (lost or misdirected write?)",
            ));
        }
        Ok(())
    }

    /// Removes the temporary file of a table that will not be finished (best effort: a
    /// leftover is removed at the next open).
    pub fn abandon(self) {
        let TableWriter {
            vfs,
            tmp_path,
            file,
            ..
        } = self;
        drop(file);
        let _ = vfs.remove(&tmp_path);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footer {
    number: u64,
    bloom_offset: u64,
    bloom_len: u64,
    index_offset: u64,
    index_len: u64,
    entries: u64,
}

impl Footer {
    fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..32].copy_from_slice(&self.bloom_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.bloom_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.index_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.index_len.to_le_bytes());
        b[56..64].copy_from_slice(&self.entries.to_le_bytes());
        let crc = crc32c::crc32c(&b[..64]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Footer, String> {
        if b.len() != FOOTER_LEN {
            return Err("footer cut short".into());
        }
        if &b[0..8] != MAGIC {
            return Err("bad magic number".into());
        }
        if crc32c::crc32c(&b[..64]) != u32_at(b, 64) {
            return Err("footer checksum mismatch".into());
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported SSTable format version {version}"));
        }
        if u32_at(b, 12) != 0 {
            return Err("reserved footer field is not zero".into());
        }
        Ok(Footer {
            number: u64_at(b, 16),
            bloom_offset: u64_at(b, 24),
            bloom_len: u64_at(b, 32),
            index_offset: u64_at(b, 40),
            index_len: u64_at(b, 48),
            entries: u64_at(b, 56),
        })
    }
}

/// An open table: its metadata, file, index and filter (index and filter in memory).
pub struct Table {
    pub meta: TableMeta,
    path: String,
    file: Box<dyn VfsFile>,
    index: Vec<IndexEntry>,
    filter: BloomFilter,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .field("blocks", &self.index.len())
            .finish_non_exhaustive()
    }
}

fn read_exact(
    file: &dyn VfsFile,
    path: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, EngineError> {
    let size = usize::try_from(len)
        .map_err(|_| EngineError::corruption(path, offset, "block length out of range"))?;
    let mut buf = vec![0u8; size];
    let n = file.read_at(offset, &mut buf)?;
    if n != size {
        return Err(EngineError::corruption(path, offset, "block cut short"));
    }
    Ok(buf)
}

impl Table {
    /// Opens table `meta.number` in `dir` and validates its footer, index and filter
    /// against the file and the manifest's metadata; reads its first block to check the
    /// smallest key.
    pub fn open(vfs: &VfsHandle, dir: &str, meta: TableMeta) -> Result<Table, EngineError> {
        Table::open_inner(vfs, dir, meta, true)
    }

    fn open_inner(
        vfs: &VfsHandle,
        dir: &str,
        meta: TableMeta,
        check_smallest: bool,
    ) -> Result<Table, EngineError> {
        let path = vfs::join(dir, &table_file_name(meta.number));
        let file = match vfs.open(&path) {
            Ok(f) => f,
            Err(crate::vfs::VfsError::NotFound { .. }) => {
                return Err(EngineError::corruption(
                    &path,
                    0,
                    "a table the manifest names is missing",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let len = file.len()?;
        let corrupt = |offset: u64, detail: String| EngineError::corruption(&path, offset, detail);
        if len != meta.size_bytes {
            return Err(corrupt(
                0,
                format!("file is {len} bytes, the manifest says {}", meta.size_bytes),
            ));
        }
        if len < FOOTER_LEN as u64 {
            return Err(corrupt(0, "file shorter than a footer".into()));
        }
        let footer_at = len - FOOTER_LEN as u64;
        let fb = read_exact(&*file, &path, footer_at, FOOTER_LEN as u64)?;
        let footer = Footer::decode(&fb).map_err(|d| corrupt(footer_at, d))?;
        let layout_ok = footer.number == meta.number
            && footer.entries == meta.entries
            && footer.bloom_len >= BLOCK_TRAILER_LEN as u64
            && footer.index_len >= BLOCK_TRAILER_LEN as u64
            && footer.bloom_offset.checked_add(footer.bloom_len) == Some(footer.index_offset)
            && footer.index_offset.checked_add(footer.index_len) == Some(footer_at);
        if !layout_ok {
            return Err(corrupt(
                footer_at,
                "footer does not match the file or manifest".into(),
            ));
        }
        let bloom_bytes = read_exact(&*file, &path, footer.bloom_offset, footer.bloom_len)?;
        let (body, _) = check_block(meta.number, footer.bloom_offset, &bloom_bytes)
            .map_err(|d| corrupt(footer.bloom_offset, d))?;
        let filter = BloomFilter::decode(body).map_err(|d| corrupt(footer.bloom_offset, d))?;
        let index_bytes = read_exact(&*file, &path, footer.index_offset, footer.index_len)?;
        let (body, count) = check_block(meta.number, footer.index_offset, &index_bytes)
            .map_err(|d| corrupt(footer.index_offset, d))?;
        let index = decode_index(body, count, footer.bloom_offset)
            .map_err(|d| corrupt(footer.index_offset, d))?;
        let last = index.last().map(|e| e.last_key.as_slice());
        if last != Some(meta.largest.as_slice()) {
            return Err(corrupt(
                footer.index_offset,
                "largest key does not match the manifest".into(),
            ));
        }
        let table = Table {
            meta,
            path,
            file,
            index,
            filter,
        };
        if check_smallest {
            let first = table.read_block(0, None)?;
            if first.first().map(|e| e.key.as_slice()) != Some(table.meta.smallest.as_slice()) {
                return Err(table.corrupt(0, "smallest key does not match the manifest"));
            }
        }
        Ok(table)
    }

    fn corrupt(&self, offset: u64, detail: &str) -> EngineError {
        EngineError::corruption(&self.path, offset, detail)
    }

    /// Opens table `number` from its file alone, with no manifest metadata: its
    /// footer, index and blocks say what it holds. Only the `lsm.no_manifest` bug flag
    /// uses this (the reference's "whatever the directory holds").
    pub fn open_unlisted(vfs: &VfsHandle, dir: &str, number: u64) -> Result<Table, EngineError> {
        let path = vfs::join(dir, &table_file_name(number));
        let file = vfs.open(&path)?;
        let len = file.len()?;
        let corrupt = |offset: u64, detail: String| EngineError::corruption(&path, offset, detail);
        if len < FOOTER_LEN as u64 {
            return Err(corrupt(0, "file shorter than a footer".into()));
        }
        let footer_at = len - FOOTER_LEN as u64;
        let fb = read_exact(&*file, &path, footer_at, FOOTER_LEN as u64)?;
        let footer = Footer::decode(&fb).map_err(|d| corrupt(footer_at, d))?;
        let index_bytes = read_exact(&*file, &path, footer.index_offset, footer.index_len)?;
        let (body, count) = check_block(number, footer.index_offset, &index_bytes)
            .map_err(|d| corrupt(footer.index_offset, d))?;
        let index = decode_index(body, count, footer.bloom_offset)
            .map_err(|d| corrupt(footer.index_offset, d))?;
        let permissive = TableMeta {
            number,
            size_bytes: len,
            entries: footer.entries,
            tombstones: 0,
            min_seq: 0,
            max_seq: u64::MAX,
            smallest: Vec::new(),
            largest: index.last().map(|e| e.last_key.clone()).unwrap_or_default(),
        };
        drop(file);
        let mut table = Table::open_unchecked_smallest(vfs, dir, permissive)?;
        let (mut min_seq, mut max_seq, mut tombstones) = (u64::MAX, 0u64, 0u64);
        let mut smallest = None;
        for i in 0..table.index.len() {
            for e in table.read_block(i, None)? {
                if smallest.is_none() {
                    smallest = Some(e.key.clone());
                }
                min_seq = min_seq.min(e.seq);
                max_seq = max_seq.max(e.seq);
                tombstones += u64::from(e.value.is_tombstone());
            }
        }
        table.meta.min_seq = min_seq;
        table.meta.max_seq = max_seq;
        table.meta.tombstones = tombstones;
        table.meta.smallest = smallest.unwrap_or_default();
        Ok(table)
    }

    /// [`Table::open`] for a metadata whose smallest key is not known yet.
    fn open_unchecked_smallest(
        vfs: &VfsHandle,
        dir: &str,
        meta: TableMeta,
    ) -> Result<Table, EngineError> {
        let first_key = {
            let probe = Table::open_inner(vfs, dir, meta.clone(), false)?;
            probe
                .read_block(0, None)?
                .first()
                .map(|e| e.key.clone())
                .unwrap_or_default()
        };
        Table::open_inner(
            vfs,
            dir,
            TableMeta {
                smallest: first_key,
                ..meta
            },
            true,
        )
    }

    /// Reads, checks and decodes block `i` of the index.
    fn read_block(
        &self,
        i: usize,
        stats: Option<&Stats>,
    ) -> Result<Vec<InternalEntry>, EngineError> {
        let e = &self.index[i];
        if let Some(s) = stats {
            bump(&s.blocks_read);
        }
        let bytes = read_exact(&*self.file, &self.path, e.offset, u64::from(e.len))?;
        let (body, count) = check_block(self.meta.number, e.offset, &bytes)
            .map_err(|d| self.corrupt(e.offset, &d))?;
        let entries = decode_entries(body, count).map_err(|d| self.corrupt(e.offset, &d))?;
        let prev = if i == 0 {
            None
        } else {
            Some(self.index[i - 1].last_key.as_slice())
        };
        let in_order = entries
            .first()
            .is_some_and(|f| prev.is_none_or(|p| f.key.as_slice() > p))
            && entries.last().map(|l| l.key.as_slice()) == Some(e.last_key.as_slice());
        if !in_order {
            return Err(self.corrupt(e.offset, "block keys do not match the index"));
        }
        let seqs_ok = entries
            .iter()
            .all(|x| (self.meta.min_seq..=self.meta.max_seq).contains(&x.seq));
        if !seqs_ok {
            return Err(self.corrupt(e.offset, "sequence number outside the table's range"));
        }
        Ok(entries)
    }

    /// The newest version of `key` in this table: the filter first, then one block.
    pub fn get(&self, key: &[u8], stats: &Stats) -> Result<Option<(u64, Value)>, EngineError> {
        if !self.meta.covers(key) {
            return Ok(None);
        }
        bump(&stats.bloom_probes);
        if !self.filter.may_contain(key) {
            bump(&stats.bloom_negatives);
            return Ok(None);
        }
        let i = self.index.partition_point(|e| e.last_key.as_slice() < key);
        if i == self.index.len() {
            return Ok(None);
        }
        let entries = self.read_block(i, Some(stats))?;
        Ok(entries
            .binary_search_by(|e| e.key.as_slice().cmp(key))
            .ok()
            .map(|j| (entries[j].seq, entries[j].value.clone())))
    }

    /// Whether the table may hold `key` (its range and its filter; no I/O).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.meta.covers(key) && self.filter.may_contain(key)
    }

    /// The entries with keys in `(start, end)`, lazily, one block in memory at a time.
    pub fn iter<'a>(
        &'a self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        stats: Option<&'a Stats>,
    ) -> TableIter<'a> {
        let block = match start {
            Bound::Unbounded => 0,
            Bound::Included(s) | Bound::Excluded(s) => {
                self.index.partition_point(|e| e.last_key.as_slice() < s)
            }
        };
        TableIter {
            table: self,
            next_block: block,
            entries: Vec::new().into_iter(),
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            stats,
            done: false,
        }
    }

    /// Reads every block, checking everything and that the filter holds every key;
    /// returns the entry and tombstone counts.
    pub fn verify(&self) -> Result<(u64, u64), EngineError> {
        let (mut entries, mut tombstones) = (0u64, 0u64);
        for i in 0..self.index.len() {
            for e in self.read_block(i, None)? {
                if !self.filter.may_contain(&e.key) {
                    return Err(self.corrupt(self.index[i].offset, "filter misses a key"));
                }
                entries += 1;
                tombstones += u64::from(e.value.is_tombstone());
            }
        }
        if entries != self.meta.entries || tombstones != self.meta.tombstones {
            return Err(self.corrupt(0, "entry counts do not match the manifest"));
        }
        Ok((entries, tombstones))
    }
}

/// Checks a block's trailer and CRC; returns its body and count.
fn check_block(number: u64, offset: u64, bytes: &[u8]) -> Result<(&[u8], u32), String> {
    if bytes.len() < BLOCK_TRAILER_LEN {
        return Err("block shorter than its trailer".into());
    }
    let crc_at = bytes.len() - 4;
    if block_crc(number, offset, &bytes[..crc_at]) != u32_at(bytes, crc_at) {
        return Err("block checksum mismatch".into());
    }
    let count = u32_at(bytes, crc_at - 4);
    Ok((&bytes[..crc_at - 4], count))
}

fn decode_entries(body: &[u8], count: u32) -> Result<Vec<InternalEntry>, String> {
    let mut out: Vec<InternalEntry> = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        if body.len() - at < ENTRY_HEADER_LEN {
            return Err("entry header cut short".into());
        }
        let kind = body[at];
        let seq = u64_at(body, at + 1);
        let klen = u32_at(body, at + 9) as usize;
        let vlen = u32_at(body, at + 13) as usize;
        at += ENTRY_HEADER_LEN;
        if body.len() - at < klen || body.len() - at - klen < vlen {
            return Err("entry overruns its block".into());
        }
        let key = body[at..at + klen].to_vec();
        let value = match kind {
            KIND_PUT => Value::Put(body[at + klen..at + klen + vlen].to_vec()),
            KIND_TOMBSTONE if vlen == 0 => Value::Tombstone,
            KIND_TOMBSTONE => return Err("tombstone with a value".into()),
            k => return Err(format!("unknown entry kind {k}")),
        };
        at += klen + vlen;
        if out.last().is_some_and(|p| p.key >= key) {
            return Err("keys out of order".into());
        }
        out.push(InternalEntry { key, seq, value });
    }
    if out.len() != count as usize || out.is_empty() {
        return Err(format!(
            "block holds {} entries, its count says {count}",
            out.len()
        ));
    }
    Ok(out)
}

fn decode_index(body: &[u8], count: u32, data_end: u64) -> Result<Vec<IndexEntry>, String> {
    let mut out: Vec<IndexEntry> = Vec::new();
    let mut at = 0usize;
    let mut expected_offset = 0u64;
    while at < body.len() {
        if body.len() - at < 4 {
            return Err("index entry cut short".into());
        }
        let klen = u32_at(body, at) as usize;
        at += 4;
        if body.len() - at < klen || body.len() - at - klen < 12 {
            return Err("index entry overruns the index".into());
        }
        let last_key = body[at..at + klen].to_vec();
        let offset = u64_at(body, at + klen);
        let len = u32_at(body, at + klen + 8);
        at += klen + 12;
        if offset != expected_offset || (len as usize) < BLOCK_TRAILER_LEN + ENTRY_HEADER_LEN {
            return Err("index entries do not tile the data blocks".into());
        }
        expected_offset = offset + u64::from(len);
        if out.last().is_some_and(|p| p.last_key >= last_key) {
            return Err("index keys out of order".into());
        }
        out.push(IndexEntry {
            last_key,
            offset,
            len,
        });
    }
    if out.is_empty() || out.len() != count as usize || expected_offset != data_end {
        return Err("index does not cover the data blocks".into());
    }
    Ok(out)
}

/// A lazy iterator over a table's entries in a key range.
pub struct TableIter<'a> {
    table: &'a Table,
    next_block: usize,
    entries: std::vec::IntoIter<InternalEntry>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    stats: Option<&'a Stats>,
    done: bool,
}

impl Iterator for TableIter<'_> {
    type Item = Result<InternalEntry, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.entries.next() {
                let end = self.end.as_ref().map(Vec::as_slice);
                if !key_in_range(&e.key, Bound::Unbounded, end) {
                    self.done = true;
                    return None;
                }
                let start = self.start.as_ref().map(Vec::as_slice);
                if key_in_range(&e.key, start, Bound::Unbounded) {
                    return Some(Ok(e));
                }
                continue;
            }
            if self.next_block >= self.table.index.len() {
                self.done = true;
                return None;
            }
            match self.table.read_block(self.next_block, self.stats) {
                Ok(entries) => {
                    self.entries = entries.into_iter();
                    self.next_block += 1;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::vfs::real::RealFs;

    fn entry(i: u32, seq: u64) -> InternalEntry {
        InternalEntry {
            key: format!("k{i:05}").into_bytes(),
            seq,
            value: if i % 7 == 3 {
                Value::Tombstone
            } else {
                Value::Put(vec![i as u8; (i % 50) as usize])
            },
        }
    }

    fn write_table(vfs: &VfsHandle, n: u32) -> TableMeta {
        let mut w = TableWriter::create(vfs, "", 7, 256, 10).unwrap();
        for i in 0..n {
            w.add(&entry(i, u64::from(i) + 1)).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn write_read_iterate_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let vfs: VfsHandle = Arc::new(RealFs::new(dir.path().to_path_buf()));
        let meta = write_table(&vfs, 300);
        assert_eq!(meta.entries, 300);
        let t = Table::open(&vfs, "", meta).unwrap();
        assert!(t.index.len() > 5);
        let stats = Stats::default();
        for i in 0..300 {
            let e = entry(i, u64::from(i) + 1);
            assert_eq!(t.get(&e.key, &stats).unwrap(), Some((e.seq, e.value)));
        }
        assert_eq!(t.get(b"k99999", &stats).unwrap(), None);
        let all: Vec<_> = t
            .iter(Bound::Unbounded, Bound::Unbounded, None)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 300);
        let some: Vec<_> = t
            .iter(Bound::Excluded(b"k00100"), Bound::Included(b"k00110"), None)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(some.len(), 10);
        assert_eq!(some[0].key, b"k00101");
        t.verify().unwrap();
    }

    #[test]
    fn keys_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vfs: VfsHandle = Arc::new(RealFs::new(dir.path().to_path_buf()));
        let mut w = TableWriter::create(&vfs, "", 1, 256, 10).unwrap();
        w.add(&entry(5, 1)).unwrap();
        assert!(w.add(&entry(5, 2)).is_err());
        assert!(w.add(&entry(4, 2)).is_err());
        w.abandon();
        assert!(vfs.list("").unwrap().is_empty());
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_table_name("000012.sst"), Some((12, false)));
        assert_eq!(parse_table_name("000012.sst.tmp"), Some((12, true)));
        assert_eq!(parse_table_name("12.sst"), None);
        assert_eq!(parse_table_name("MANIFEST"), None);
    }
}
