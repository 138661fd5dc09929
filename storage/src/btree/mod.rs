//! A B+tree over fixed-size, checksummed pages with a physical redo WAL
//! ([`crate::wal`]), over a [`Vfs`](crate::vfs::Vfs). See `docs/storage/btree.md`.
//!
//! - `btree.db`: page 0 holds two superblock copies (generation, page size, the WAL
//!   sequence number the file reflects, the tree metadata); pages 1.. are leaves,
//!   internal nodes and free pages, each with a checksum seeded by its page number and a
//!   type tag, validated on every read.
//! - Every operation (put, delete, batch) is computed in memory as a set of whole-page
//!   images plus the new metadata, and logged as **one WAL batch**: a split, a merge, a
//!   free or a root change commits or vanishes as a unit. Logged pages stay in memory
//!   (`dirty`) and reach the data file only at a checkpoint, after the WAL is synced
//!   (the WAL rule), so the data file never holds a page the WAL could lose.
//! - A checkpoint syncs the WAL, writes the dirty pages, syncs the file, writes the next
//!   superblock copy (the older slot), syncs, then truncates the WAL.
//! - Recovery takes the valid superblock with the highest generation, replays the WAL
//!   batches after its sequence number (idempotent page writes), and checkpoints.

use crate::bugs::EngineBug;
use crate::codec::Poison;

mod page;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use page::{FIRST_DATA_PAGE, META_LEN, PAGE_HEADER_LEN, SUPERBLOCK_SLOT_BYTES};
pub use page::{Meta, NO_PAGE, Node, Superblock};

use crate::kv::{
    BatchOp, EngineError, EngineOpener, EngineSyncPolicy, KvEngine, ScanIter, WriteBatch,
    key_in_range, range_is_empty,
};
use crate::vfs::{self, VfsFile, VfsHandle};
use crate::wal::{RecoveryMode, SyncPolicy, Wal, WalError, WalOptions};

/// The data file's name.
pub const DATA_FILE: &str = "btree.db";
const DATA_TMP_FILE: &str = "btree.db.tmp";
/// The WAL's subdirectory.
pub const WAL_DIR: &str = "wal";
pub const DEFAULT_PAGE_SIZE: usize = 4096;
pub const MIN_PAGE_SIZE: usize = 1024;
pub const MAX_PAGE_SIZE: usize = 32768;
pub const DEFAULT_MAX_DIRTY_PAGES: usize = 1024;
/// The tallest tree accepted (bounds every descent).
pub const MAX_HEIGHT: u32 = 32;
/// WAL payload tags.
/// How many times a checkpoint rewrites a page that did not read back as written.
const CHECKPOINT_WRITE_RETRIES: u32 = 3;
const RECORD_PAGE: u8 = 1;
const RECORD_META: u8 = 2;

/// Options of a B+tree engine; [`BTreeOptions::validate`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BTreeOptions {
    pub sync_policy: EngineSyncPolicy,
    /// A power of two from 1 KiB to 32 KiB; stored on disk and checked on open.
    pub page_size: usize,
    /// A checkpoint runs when an operation leaves more logged-but-unwritten pages than
    /// this, or has logged more than 8 times this many page images since the last
    /// checkpoint (which bounds the WAL and the work of recovery).
    pub max_dirty_pages: usize,
    /// Defects switched on on purpose (`crate::bugs`); none by default.
    pub bugs: crate::bugs::EngineBugs,
}

impl Default for BTreeOptions {
    fn default() -> Self {
        BTreeOptions {
            sync_policy: EngineSyncPolicy::EveryWrite,
            page_size: DEFAULT_PAGE_SIZE,
            max_dirty_pages: DEFAULT_MAX_DIRTY_PAGES,
            bugs: crate::bugs::EngineBugs::NONE,
        }
    }
}

impl BTreeOptions {
    pub fn validate(&self) -> Result<(), EngineError> {
        if !self.page_size.is_power_of_two()
            || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&self.page_size)
        {
            return Err(EngineError::InvalidConfig(format!(
                "btree page_size {} is not a power of two in {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}",
                self.page_size
            )));
        }
        if self.max_dirty_pages == 0 || self.max_dirty_pages > 1 << 20 {
            return Err(EngineError::InvalidConfig(format!(
                "btree max_dirty_pages {} is out of range 1..=2^20",
                self.max_dirty_pages
            )));
        }
        Ok(())
    }

    /// The largest `key.len() + value.len()` accepted: a third of a page's body, so
    /// that any split or redistribution yields halves that fit.
    pub fn max_entry_bytes(&self) -> usize {
        (self.page_size - PAGE_HEADER_LEN) / 3 - 6
    }
}

/// Opens [`BTree`] engines.
#[derive(Debug, Clone, Default)]
pub struct BTreeOpener {
    pub options: BTreeOptions,
}

impl EngineOpener for BTreeOpener {
    fn name(&self) -> &'static str {
        "btree"
    }

    fn open(&self, vfs: VfsHandle, dir: &str) -> Result<Box<dyn KvEngine>, EngineError> {
        Ok(Box::new(BTree::open(vfs, dir, self.options.clone())?))
    }
}

/// What [`BTree::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BTreeRecovery {
    pub created: bool,
    /// The superblock generation used.
    pub generation: u64,
    /// Whether the newest superblock copy was invalid (the other was used).
    pub superblock_fallback: bool,
    /// Page images and metadata records replayed from the WAL.
    pub replayed_pages: u64,
    pub replayed_batches: u64,
}

/// A B+tree engine. See the module docs.
pub struct BTree {
    dir: String,
    path: String,
    options: BTreeOptions,
    file: Box<dyn VfsFile>,
    wal: Wal,
    meta: Meta,
    generation: u64,
    /// The WAL sequence number in the current superblock (`btree.meta_unlogged` rewrites
    /// that superblock in place with new metadata).
    superblock_wal_seq: u64,
    /// Logged page images not yet written to the data file.
    dirty: BTreeMap<u32, Vec<u8>>,
    /// Page images logged since the last checkpoint.
    logged_pages: usize,
    /// The pages on the free list (detects double frees).
    free_set: BTreeSet<u32>,
    /// Decoded nodes of the current state, so a lookup does not re-read and re-check a
    /// page it read before. Filled on read, updated with every logged operation's pages,
    /// emptied when it reaches `CACHE_PAGES` (a cheap bound; the working set of the
    /// simulator's stores is far smaller).
    cache: RefCell<BTreeMap<u32, Arc<Node>>>,
    poisoned: Poison,
    recovery: BTreeRecovery,
}

/// At most this many decoded nodes are cached.
const CACHE_PAGES: usize = 4096;

impl std::fmt::Debug for BTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BTree")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .field("generation", &self.generation)
            .field("dirty_pages", &self.dirty.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn wal_error(dir: &str, e: WalError) -> EngineError {
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
        other => EngineError::Other(format!("btree WAL: {other}")),
    }
}

/// A leaf's entries.
type LeafEntries = Vec<(Vec<u8>, Vec<u8>)>;
/// A page to check: (page, level, low bound, high bound).
type PendingCheck = (u32, u32, Option<Vec<u8>>, Option<Vec<u8>>);

/// What [`BTree::remove`] did.
enum Removed {
    /// The key was not there; nothing changed.
    Absent,
    /// Removed; `Some` if the node split (the separator and the new right sibling).
    Done(Option<(Vec<u8>, u32)>),
}

/// An operation being built: the pages it changed and the metadata after it.
struct Txn {
    pages: BTreeMap<u32, Node>,
    meta: Meta,
    freed: BTreeSet<u32>,
    allocated: BTreeSet<u32>,
}

impl BTree {
    /// Opens (creating if needed) the tree in `dir` and recovers it.
    pub fn open(vfs: VfsHandle, dir: &str, options: BTreeOptions) -> Result<BTree, EngineError> {
        options.validate()?;
        crate::vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let path = vfs::join(dir, DATA_FILE);
        let tmp = vfs::join(dir, DATA_TMP_FILE);
        let mut recovery = BTreeRecovery::default();
        if vfs.exists(&tmp)? {
            vfs.remove(&tmp)?;
            vfs.sync_dir(dir)?;
        }
        if !vfs.exists(&path)? {
            create_data_file(
                &vfs,
                dir,
                &tmp,
                &path,
                options.page_size,
                crc_covers_page_no(&options),
            )?;
            recovery.created = true;
        }
        let file = vfs.open(&path)?;
        let mut slots = [0u8; 2 * SUPERBLOCK_SLOT_BYTES];
        let n = file.read_at(0, &mut slots)?;
        let decode_slot = |i: usize| {
            let b = &slots[i * SUPERBLOCK_SLOT_BYTES..(i + 1) * SUPERBLOCK_SLOT_BYTES];
            if n < (i + 1) * SUPERBLOCK_SLOT_BYTES {
                Err("short superblock")
            } else {
                Superblock::decode(b)
            }
        };
        let (a, b) = (decode_slot(0), decode_slot(1));
        let (sb, fallback) = match (a, b) {
            (Ok(a), Ok(b)) => (if a.generation >= b.generation { a } else { b }, false),
            // One copy invalid: a torn superblock write, or damage. The WAL check below
            // rejects the older copy if the WAL no longer covers it.
            (Ok(a), Err(_)) => (a, a.generation % 2 != 0),
            (Err(_), Ok(b)) => (b, b.generation % 2 != 1),
            (Err(e), Err(_)) => return Err(EngineError::corruption(&path, 0, e)),
        };
        recovery.superblock_fallback = fallback;
        if sb.page_size as usize != options.page_size {
            return Err(EngineError::InvalidConfig(format!(
                "{path} has page size {} but the engine was opened with {}",
                sb.page_size, options.page_size
            )));
        }
        let wal_dir = vfs::join(dir, WAL_DIR);
        let wal_options = WalOptions {
            sync_policy: match options.sync_policy {
                EngineSyncPolicy::EveryWrite => SyncPolicy::EveryWrite,
                EngineSyncPolicy::Explicit => SyncPolicy::Never,
            },
            recovery: RecoveryMode::Strict,
            max_segment_bytes: (options.page_size as u64 * options.max_dirty_pages as u64 * 2)
                .clamp(64 * 1024, 64 * 1024 * 1024),
            max_record_bytes: (options.page_size + 8) as u32,
            // A fresh salt per open: the generation this open will write.
            nonce: (sb.generation + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            bugs: options.bugs,
        };
        let wal =
            Wal::open(vfs.clone(), &wal_dir, wal_options).map_err(|e| wal_error(&wal_dir, e))?;
        if wal.first_seq() > sb.wal_seq.saturating_add(1) {
            return Err(EngineError::corruption(
                &path,
                0,
                format!(
                    "superblock generation {} needs WAL records after {}, but the WAL starts at {}",
                    sb.generation,
                    sb.wal_seq,
                    wal.first_seq()
                ),
            ));
        }
        let records = wal.replay(sb.wal_seq).map_err(|e| wal_error(&wal_dir, e))?;
        let mut meta = sb.meta;
        let page_size = options.page_size;
        // The replayed images become the dirty set of the checkpoint below, which writes
        // them and reads every one back before the superblock advances past the WAL
        // records that hold them: written here directly, a misdirected replay write
        // would leave the page's older (valid) image in place and the WAL would go.
        let mut replayed: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for r in &records {
            match r.payload.first() {
                Some(&RECORD_PAGE) if r.payload.len() == 5 + page_size => {
                    let page_no = u32::from_le_bytes([
                        r.payload[1],
                        r.payload[2],
                        r.payload[3],
                        r.payload[4],
                    ]);
                    let image = &r.payload[5..];
                    if page_no < FIRST_DATA_PAGE || page_no == NO_PAGE {
                        return Err(EngineError::corruption(
                            &wal_dir,
                            r.seq,
                            "logged page number out of range",
                        ));
                    }
                    Node::decode_with(image, page_no, NO_PAGE, crc_covers_page_no(&options))
                        .map_err(|d| {
                            EngineError::corruption(
                                &wal_dir,
                                r.seq,
                                format!("logged page {page_no}: {d}"),
                            )
                        })?;
                    replayed.insert(page_no, image.to_vec());
                    recovery.replayed_pages += 1;
                }
                Some(&RECORD_META) if r.payload.len() == 1 + META_LEN => {
                    meta = Meta::decode(&r.payload[1..])
                        .map_err(|d| EngineError::corruption(&wal_dir, r.seq, d))?;
                    recovery.replayed_batches += 1;
                    crate::sometimes!("btree.redo_replayed");
                }
                _ => {
                    return Err(EngineError::corruption(
                        &wal_dir,
                        r.seq,
                        "unknown WAL record",
                    ));
                }
            }
        }
        let file_len = file.len()?;
        let whole_pages = file_len / page_size as u64;
        let missing = (whole_pages..u64::from(meta.page_count))
            .any(|p| !u32::try_from(p).is_ok_and(|p| replayed.contains_key(&p)));
        if missing {
            return Err(EngineError::corruption(
                &path,
                file_len,
                format!(
                    "file holds fewer than the {} pages of the metadata",
                    meta.page_count
                ),
            ));
        }
        recovery.generation = sb.generation;
        let mut tree = BTree {
            dir: dir.to_string(),
            path,
            options,
            file,
            wal,
            meta,
            generation: sb.generation,
            superblock_wal_seq: sb.wal_seq,
            dirty: replayed,
            logged_pages: 0,
            free_set: BTreeSet::new(),
            cache: RefCell::new(BTreeMap::new()),
            poisoned: Poison::default(),
            recovery,
        };
        tree.free_set = tree.load_free_list()?;
        // Make the replayed state the checkpointed state (and bump the generation).
        tree.checkpoint()?;
        Ok(tree)
    }

    /// What recovery found.
    pub fn recovery(&self) -> &BTreeRecovery {
        &self.recovery
    }

    /// The generation of the last superblock written (its slot is `generation % 2`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The tree's metadata (root, height, page and key counts, free list).
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Whether an earlier failure made the engine unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_set()
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

    /// Walks the free list from the head, checking types, bounds, cycles and the count.
    fn load_free_list(&self) -> Result<BTreeSet<u32>, EngineError> {
        let mut set = BTreeSet::new();
        let mut p = self.meta.free_head;
        while p != NO_PAGE {
            if !set.insert(p) || set.len() > self.meta.page_count as usize {
                return Err(self.corrupt_page(p, "free list has a cycle"));
            }
            match self.read_node(p)? {
                Node::Free { next } => p = next,
                other => {
                    return Err(self
                        .corrupt_page(p, &format!("{} page on the free list", other.type_name())));
                }
            }
        }
        if set.len() != self.meta.free_count as usize {
            return Err(self.corrupt_page(
                self.meta.free_head,
                "free list length does not match the metadata",
            ));
        }
        Ok(set)
    }

    fn corrupt_page(&self, page_no: u32, detail: &str) -> EngineError {
        EngineError::corruption(
            &self.path,
            u64::from(page_no) * self.options.page_size as u64,
            detail,
        )
    }

    /// Reads and validates a page (the logged image if it has not reached the file).
    fn read_node(&self, page_no: u32) -> Result<Node, EngineError> {
        if page_no < FIRST_DATA_PAGE || page_no >= self.meta.page_count {
            return Err(self.corrupt_page(page_no, "page number out of range"));
        }
        self.shared_node(page_no).map(Arc::unwrap_or_clone)
    }

    /// [`read_node`](Self::read_node), shared with the cache (no copy of its entries).
    fn shared_node(&self, page_no: u32) -> Result<Arc<Node>, EngineError> {
        if page_no < FIRST_DATA_PAGE || page_no >= self.meta.page_count {
            return Err(self.corrupt_page(page_no, "page number out of range"));
        }
        if let Some(node) = self.cache.borrow().get(&page_no) {
            return Ok(Arc::clone(node));
        }
        let decode = |b: &[u8]| {
            let node = Arc::new(
                Node::decode_with(
                    b,
                    page_no,
                    self.meta.page_count,
                    crc_covers_page_no(&self.options),
                )
                .map_err(|d| self.corrupt_page(page_no, d))?,
            );
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= CACHE_PAGES {
                cache.clear();
            }
            cache.insert(page_no, Arc::clone(&node));
            Ok(node)
        };
        if let Some(image) = self.dirty.get(&page_no) {
            return decode(image);
        }
        let mut buf = vec![0u8; self.options.page_size];
        let n = self
            .file
            .read_at(u64::from(page_no) * self.options.page_size as u64, &mut buf)?;
        if n != buf.len() {
            return Err(self.corrupt_page(page_no, "page cut short"));
        }
        decode(&buf)
    }

    fn txn(&self) -> Txn {
        Txn {
            pages: BTreeMap::new(),
            meta: self.meta,
            freed: BTreeSet::new(),
            allocated: BTreeSet::new(),
        }
    }

    fn node(&self, txn: &Txn, page_no: u32) -> Result<Node, EngineError> {
        match txn.pages.get(&page_no) {
            Some(n) => Ok(n.clone()),
            None => {
                if page_no >= txn.meta.page_count {
                    return Err(self.corrupt_page(page_no, "page number out of range"));
                }
                // An operation reads a node to change it: a leaf leaves the cache (so it
                // is not copied; the new version comes back when the operation is
                // logged), an internal node, small and read on every path, stays.
                let node = self.shared_node(page_no)?;
                if matches!(node.as_ref(), Node::Leaf { .. }) {
                    self.cache.borrow_mut().remove(&page_no);
                }
                Ok(Arc::unwrap_or_clone(node))
            }
        }
    }

    fn alloc(&self, txn: &mut Txn) -> Result<u32, EngineError> {
        let p = txn.meta.free_head;
        if p != NO_PAGE {
            let next = match self.node(txn, p)? {
                Node::Free { next } => next,
                other => {
                    return Err(self.corrupt_page(
                        p,
                        &format!("{} page at the free-list head", other.type_name()),
                    ));
                }
            };
            txn.meta.free_head = next;
            txn.meta.free_count = txn.meta.free_count.saturating_sub(1);
            txn.freed.remove(&p);
            txn.allocated.insert(p);
            return Ok(p);
        }
        let p = txn.meta.page_count;
        if p >= NO_PAGE - 1 {
            return Err(EngineError::Other("btree: page numbers exhausted".into()));
        }
        txn.meta.page_count += 1;
        txn.allocated.insert(p);
        Ok(p)
    }

    /// Puts `page_no` on the free list; a page already free is corruption (a double free).
    fn free(&self, txn: &mut Txn, page_no: u32) -> Result<(), EngineError> {
        let already = txn.freed.contains(&page_no)
            || (self.free_set.contains(&page_no) && !txn.allocated.contains(&page_no));
        if already || page_no < FIRST_DATA_PAGE || page_no >= txn.meta.page_count {
            return Err(self.corrupt_page(page_no, "double free (the page is already free)"));
        }
        txn.pages.insert(
            page_no,
            Node::Free {
                next: txn.meta.free_head,
            },
        );
        txn.meta.free_head = page_no;
        txn.meta.free_count += 1;
        txn.freed.insert(page_no);
        txn.allocated.remove(&page_no);
        Ok(())
    }

    /// Logs an operation as one WAL batch and makes it the current state.
    fn log_txn(&mut self, mut txn: Txn) -> Result<(), EngineError> {
        if txn.pages.is_empty() && txn.meta == self.meta {
            return Ok(());
        }
        txn.meta
            .check()
            .map_err(|d| EngineError::Other(format!("btree: internal: {d}")))?;
        let page_size = self.options.page_size;
        let mut images = Vec::with_capacity(txn.pages.len());
        let mut payloads = Vec::with_capacity(txn.pages.len() + 1);
        for (&page_no, node) in &txn.pages {
            let image = node
                .encode_with(page_no, page_size, crc_covers_page_no(&self.options))
                .ok_or_else(|| {
                EngineError::Other(format!(
                    "btree: internal: page {page_no} overflows (or is an internal node without keys)"
                ))
            })?;
            let mut payload = Vec::with_capacity(5 + page_size);
            payload.push(RECORD_PAGE);
            payload.extend_from_slice(&page_no.to_le_bytes());
            payload.extend_from_slice(&image);
            payloads.push(payload);
            images.push((page_no, image));
        }
        let page_records = payloads.len();
        let meta_unlogged = self.options.bugs.contains(EngineBug::BtreeMetaUnlogged);
        if !meta_unlogged {
            let mut meta_payload = vec![RECORD_META];
            meta_payload.extend_from_slice(&txn.meta.encode());
            payloads.push(meta_payload);
        }
        let wal_dir = vfs::join(&self.dir, WAL_DIR);
        self.guarded(|t| {
            if !payloads.is_empty() {
                t.wal
                    .append_batch(&payloads)
                    .map_err(|e| wal_error(&wal_dir, e))?;
            }
            for (page_no, image) in images {
                t.dirty.insert(page_no, image);
            }
            for p in &txn.allocated {
                t.free_set.remove(p);
            }
            t.free_set.extend(txn.freed.iter().copied());
            t.meta = txn.meta;
            // A trim cut pages off the end: they are neither free nor to be written.
            let page_count = t.meta.page_count;
            t.free_set.retain(|&p| p < page_count);
            t.dirty.retain(|&p, _| p < page_count);
            let cache = t.cache.get_mut();
            if cache.len() + txn.pages.len() > CACHE_PAGES {
                cache.clear();
            }
            cache.extend(
                std::mem::take(&mut txn.pages)
                    .into_iter()
                    .map(|(p, n)| (p, Arc::new(n))),
            );
            cache.retain(|&p, _| p < page_count);
            t.logged_pages += page_records;
            if meta_unlogged {
                t.write_meta_in_place()?;
            }
            Ok(())
        })
    }

    /// `btree.meta_unlogged`: the reference's `write_meta` — the new root, height, page
    /// count and free list written straight into the current superblock, in place,
    /// without the log and without a sync. A crash can keep the pages (replayed from
    /// the WAL) with older metadata, or tear the superblock.
    fn write_meta_in_place(&mut self) -> Result<(), EngineError> {
        let sb = Superblock {
            generation: self.generation,
            page_size: self.options.page_size as u32,
            wal_seq: self.superblock_wal_seq,
            meta: self.meta,
        };
        let slot = (self.generation % 2) * SUPERBLOCK_SLOT_BYTES as u64;
        self.file.write_at(slot, &sb.encode())?;
        Ok(())
    }

    /// Logs a finished operation as one WAL batch, then makes it the current state;
    /// checkpoints when enough has been logged.
    fn commit(&mut self, txn: Txn) -> Result<(), EngineError> {
        self.log_txn(txn)?;
        if self.dirty.len() > self.options.max_dirty_pages
            || self.logged_pages > self.options.max_dirty_pages.saturating_mul(8)
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes the logged pages to the data file and the next superblock, then truncates
    /// the WAL (see the module docs for the order).
    pub fn checkpoint(&mut self) -> Result<(), EngineError> {
        self.usable()?;
        if let Some(trim) = self.trim_txn() {
            self.log_txn(trim)?;
        }
        let wal_dir = vfs::join(&self.dir, WAL_DIR);
        self.guarded(|t| {
            t.wal.sync().map_err(|e| wal_error(&wal_dir, e))?;
            let page_size = t.options.page_size as u64;
            for (&page_no, image) in &t.dirty {
                t.file.write_at(u64::from(page_no) * page_size, image)?;
            }
            t.file.sync()?;
            // A misdirected write leaves the old (checksum-valid) image in place and
            // clobbers some other place of the file: read everything back before the
            // superblock advances and the WAL (which still covers the pages) goes.
            t.verify_checkpoint_writes()?;
            let generation = t.generation + 1;
            let sb = Superblock {
                generation,
                page_size: t.options.page_size as u32,
                wal_seq: t.wal.current_seq(),
                meta: t.meta,
            };
            let slot = (generation % 2) * SUPERBLOCK_SLOT_BYTES as u64;
            let encoded = sb.encode();
            t.file.write_at(slot, &encoded)?;
            t.file.sync()?;
            // The superblock too: if it did not land, the WAL must stay (recovery falls
            // back to the other slot, which the WAL still covers).
            let mut back = vec![0u8; encoded.len()];
            let n = t.file.read_at(slot, &mut back)?;
            if n != back.len() || back[..] != encoded[..] {
                return Err(EngineError::corruption(
                    &t.path,
                    slot,
                    "superblock write did not read back as written (misdirected write?)",
                ));
            }
            t.generation = generation;
            t.superblock_wal_seq = sb.wal_seq;
            t.dirty.clear();
            t.logged_pages = 0;
            // The file shrinks only once a durable superblock no longer counts the
            // trimmed pages (a torn superblock write leaves the file as it was).
            let want = u64::from(t.meta.page_count) * page_size;
            if t.file.len()? > want {
                t.file.truncate(want)?;
                t.file.sync()?;
            }
            if t.wal.current_seq() >= t.wal.first_seq() {
                let upto = t.wal.current_seq();
                t.wal.truncate(upto).map_err(|e| wal_error(&wal_dir, e))?;
            }
            Ok(())
        })
    }

    /// The trailing run of free pages, if any, cut off the file: the free list is
    /// rebuilt over the remaining free pages in ascending order (so allocation reuses
    /// the lowest pages first and later trims find the tail free) and the page count
    /// drops. Logged as one batch like any other operation.
    fn trim_txn(&self) -> Option<Txn> {
        let mut count = self.meta.page_count;
        while count > FIRST_DATA_PAGE && self.free_set.contains(&(count - 1)) {
            count -= 1;
        }
        if count == self.meta.page_count {
            return None;
        }
        let mut txn = self.txn();
        let remaining: Vec<u32> = self.free_set.range(..count).copied().collect();
        for (i, &p) in remaining.iter().enumerate() {
            let next = remaining.get(i + 1).copied().unwrap_or(NO_PAGE);
            txn.pages.insert(p, Node::Free { next });
        }
        txn.meta.free_head = remaining.first().copied().unwrap_or(NO_PAGE);
        txn.meta.free_count = remaining.len() as u32;
        txn.meta.page_count = count;
        Some(txn)
    }

    /// Reads back every page a checkpoint wrote and compares it byte for byte with the
    /// logged image. A mismatch (a misdirected or lost write) is rewritten, up to
    /// [`CHECKPOINT_WRITE_RETRIES`] times; after any mismatch the rest of the data file
    /// is checked too (the misdirected write landed somewhere): every page that is not
    /// being written must still decode. Any failure is an error before the superblock
    /// advances, so the WAL still covers the logged pages.
    fn verify_checkpoint_writes(&mut self) -> Result<(), EngineError> {
        let page_size = self.options.page_size;
        let mut misdirected = false;
        let mut buf = vec![0u8; page_size];
        for attempt in 0..=CHECKPOINT_WRITE_RETRIES {
            let mut bad = Vec::new();
            for (&page_no, image) in &self.dirty {
                let n = self
                    .file
                    .read_at(u64::from(page_no) * page_size as u64, &mut buf)?;
                if n != page_size || buf[..] != image[..] {
                    bad.push(page_no);
                }
            }
            if bad.is_empty() {
                break;
            }
            misdirected = true;
            crate::sometimes!("btree.checkpoint_write_rewritten");
            if attempt == CHECKPOINT_WRITE_RETRIES {
                return Err(self.corrupt_page(
                    bad[0],
                    "checkpoint page write did not read back as written (misdirected write?)",
                ));
            }
            for page_no in bad {
                let image = &self.dirty[&page_no];
                self.file
                    .write_at(u64::from(page_no) * page_size as u64, image)?;
            }
            self.file.sync()?;
        }
        if misdirected {
            // The stray copy overwrote part of the file: superblock slots are checked
            // by their checksums at open; every other page must still decode.
            for page_no in FIRST_DATA_PAGE..self.meta.page_count {
                if self.dirty.contains_key(&page_no) {
                    continue;
                }
                let n = self
                    .file
                    .read_at(u64::from(page_no) * page_size as u64, &mut buf)?;
                if n != page_size {
                    return Err(self.corrupt_page(page_no, "page cut short"));
                }
                Node::decode_with(
                    &buf,
                    page_no,
                    self.meta.page_count,
                    crc_covers_page_no(&self.options),
                )
                .map_err(|d| {
                    self.corrupt_page(
                        page_no,
                        &format!("page damaged by a misdirected checkpoint write: {d}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn check_sizes(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        let limit = self.options.max_entry_bytes();
        if key.len() + value.len() > limit {
            return Err(EngineError::TooLarge {
                what: "key and value",
                len: key.len() + value.len(),
                limit,
            });
        }
        Ok(())
    }

    fn expect_leaf(&self, page_no: u32, node: Node) -> Result<(LeafEntries, u32), EngineError> {
        match node {
            Node::Leaf { entries, next } => Ok((entries, next)),
            other => Err(self.corrupt_page(
                page_no,
                &format!("expected a leaf, found a {} page", other.type_name()),
            )),
        }
    }

    fn expect_internal(
        &self,
        page_no: u32,
        node: Node,
    ) -> Result<(Vec<Vec<u8>>, Vec<u32>), EngineError> {
        match node {
            Node::Internal { keys, children } => Ok((keys, children)),
            other => Err(self.corrupt_page(
                page_no,
                &format!(
                    "expected an internal node, found a {} page",
                    other.type_name()
                ),
            )),
        }
    }

    /// Descends to the leaf that holds `key`, checking page types against the height.
    fn find_leaf(&self, key: Option<&[u8]>) -> Result<(u32, LeafEntries, u32), EngineError> {
        let mut p = self.meta.root;
        for _ in 1..self.meta.height {
            let (keys, children) = self.expect_internal(p, self.read_node(p)?)?;
            let idx = match key {
                Some(k) => keys.partition_point(|s| s.as_slice() <= k),
                None => 0,
            };
            p = children[idx];
        }
        let (entries, next) = self.expect_leaf(p, self.read_node(p)?)?;
        Ok((p, entries, next))
    }

    fn capacity(&self) -> usize {
        self.options.page_size
    }

    fn underfull(&self, node: &Node) -> bool {
        node.encoded_len() < (self.options.page_size - PAGE_HEADER_LEN) / 4 + PAGE_HEADER_LEN
    }

    /// Inserts into the subtree at `page_no` (`level` 1 is a leaf); returns a new right
    /// sibling and its separator if the node split.
    fn insert(
        &self,
        txn: &mut Txn,
        page_no: u32,
        level: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<(Vec<u8>, u32)>, EngineError> {
        let node = self.node(txn, page_no)?;
        if level == 1 {
            let (mut entries, next) = self.expect_leaf(page_no, node)?;
            match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                Ok(i) => entries[i].1 = value.to_vec(),
                Err(i) => {
                    entries.insert(i, (key.to_vec(), value.to_vec()));
                    txn.meta.key_count += 1;
                }
            }
            let node = Node::Leaf { entries, next };
            if node.encoded_len() <= self.capacity() {
                txn.pages.insert(page_no, node);
                return Ok(None);
            }
            let Node::Leaf { mut entries, next } = node else {
                unreachable!()
            };
            let at = self.leaf_split(&entries)?;
            crate::sometimes!("btree.page_split");
            let right_entries = entries.split_off(at);
            let right = self.alloc(txn)?;
            let separator = right_entries[0].0.clone();
            // The new right page inherits the old sibling link; both go in one WAL batch.
            txn.pages.insert(
                right,
                Node::Leaf {
                    entries: right_entries,
                    next,
                },
            );
            txn.pages.insert(
                page_no,
                Node::Leaf {
                    entries,
                    next: right,
                },
            );
            return Ok(Some((separator, right)));
        }
        let (mut keys, mut children) = self.expect_internal(page_no, node)?;
        let idx = keys.partition_point(|s| s.as_slice() <= key);
        let Some((separator, right)) = self.insert(txn, children[idx], level - 1, key, value)?
        else {
            return Ok(None);
        };
        keys.insert(idx, separator);
        children.insert(idx + 1, right);
        self.store_internal(txn, page_no, keys, children)
    }

    /// Stores an internal node at `page_no`; if it does not fit in a page, splits it
    /// (both halves non-empty and fitting, the middle key moving up) and returns the new
    /// right sibling and its separator for the parent.
    fn store_internal(
        &self,
        txn: &mut Txn,
        page_no: u32,
        mut keys: Vec<Vec<u8>>,
        mut children: Vec<u32>,
    ) -> Result<Option<(Vec<u8>, u32)>, EngineError> {
        let used = PAGE_HEADER_LEN
            + keys
                .iter()
                .map(|k| page::internal_entry_len(k))
                .sum::<usize>();
        if used <= self.capacity() {
            txn.pages.insert(page_no, Node::Internal { keys, children });
            return Ok(None);
        }
        let mid = self.internal_split(&keys)?;
        let right_keys = keys.split_off(mid + 1);
        let up = keys
            .pop()
            .ok_or_else(|| EngineError::Other("btree: internal: empty split".into()))?;
        let right_children = children.split_off(mid + 1);
        let right_page = self.alloc(txn)?;
        txn.pages.insert(
            right_page,
            Node::Internal {
                keys: right_keys,
                children: right_children,
            },
        );
        txn.pages.insert(page_no, Node::Internal { keys, children });
        Ok(Some((up, right_page)))
    }

    /// The index of the key that moves up when internal `keys` split: `keys[..mid]`
    /// stay left and `keys[mid + 1..]` go right, both non-empty (`mid` in `1..=len-2`)
    /// and fitting in a page. Searches outward from the byte midpoint.
    fn internal_split(&self, keys: &[Vec<u8>]) -> Result<usize, EngineError> {
        let sizes: Vec<usize> = keys.iter().map(|k| page::internal_entry_len(k)).collect();
        let body = self.capacity() - PAGE_HEADER_LEN;
        fitting_split(&sizes, body, true).ok_or_else(|| {
            EngineError::Other(format!(
                "btree: internal: no split of {} separators fits in a page",
                keys.len()
            ))
        })
    }

    /// The index at which leaf entries split: `[..at]` and `[at..]`, both non-empty and
    /// fitting in a page.
    fn leaf_split(&self, entries: &LeafEntries) -> Result<usize, EngineError> {
        let sizes: Vec<usize> = entries
            .iter()
            .map(|(k, v)| page::leaf_entry_len(k, v))
            .collect();
        let body = self.capacity() - PAGE_HEADER_LEN;
        fitting_split(&sizes, body, false).ok_or_else(|| {
            EngineError::Other(format!(
                "btree: internal: no split of {} entries fits in a page",
                entries.len()
            ))
        })
    }

    fn put_in(&self, txn: &mut Txn, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.check_sizes(key, value)?;
        let root = txn.meta.root;
        if let Some((separator, right)) = self.insert(txn, root, txn.meta.height, key, value)? {
            self.grow_root(txn, separator, right)?;
        }
        Ok(())
    }

    /// The root split into itself and `right`: a new root above them adds a level.
    fn grow_root(&self, txn: &mut Txn, separator: Vec<u8>, right: u32) -> Result<(), EngineError> {
        if txn.meta.height >= MAX_HEIGHT {
            return Err(EngineError::Other("btree: maximum height reached".into()));
        }
        let root = txn.meta.root;
        let new_root = self.alloc(txn)?;
        txn.pages.insert(
            new_root,
            Node::Internal {
                keys: vec![separator],
                children: vec![root, right],
            },
        );
        txn.meta.root = new_root;
        txn.meta.height += 1;
        Ok(())
    }

    /// Removes `key` from the subtree; returns whether it was there, and a new right
    /// sibling and its separator if the node split. Underfull children are merged with
    /// or refilled from a sibling; a rebalance can put a longer separator into this
    /// node (or a split child can add one), so a node that no longer fits splits and
    /// the split propagates upward, as in [`BTree::insert`].
    fn remove(
        &self,
        txn: &mut Txn,
        page_no: u32,
        level: u32,
        key: &[u8],
    ) -> Result<Removed, EngineError> {
        let node = self.node(txn, page_no)?;
        if level == 1 {
            let (mut entries, next) = self.expect_leaf(page_no, node)?;
            let Ok(i) = entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) else {
                return Ok(Removed::Absent);
            };
            entries.remove(i);
            txn.meta.key_count = txn.meta.key_count.saturating_sub(1);
            txn.pages.insert(page_no, Node::Leaf { entries, next });
            return Ok(Removed::Done(None));
        }
        let (mut keys, mut children) = self.expect_internal(page_no, node)?;
        let idx = keys.partition_point(|s| s.as_slice() <= key);
        let (keys, children) = match self.remove(txn, children[idx], level - 1, key)? {
            Removed::Absent => return Ok(Removed::Absent),
            Removed::Done(Some((separator, right))) => {
                keys.insert(idx, separator);
                children.insert(idx + 1, right);
                (keys, children)
            }
            Removed::Done(None) => {
                let child = self.node(txn, children[idx])?;
                if self.underfull(&child) {
                    self.rebalance(txn, keys, children, idx)?
                } else {
                    (keys, children)
                }
            }
        };
        Ok(Removed::Done(
            self.store_internal(txn, page_no, keys, children)?,
        ))
    }

    /// Merges the child at `idx` with a sibling if both fit in one page (freeing the
    /// right one), else redistributes their entries evenly.
    fn rebalance(
        &self,
        txn: &mut Txn,
        mut keys: Vec<Vec<u8>>,
        mut children: Vec<u32>,
        idx: usize,
    ) -> Result<(Vec<Vec<u8>>, Vec<u32>), EngineError> {
        if children.len() < 2 {
            return Ok((keys, children));
        }
        let left = if idx > 0 { idx - 1 } else { 0 };
        let (lp, rp) = (children[left], children[left + 1]);
        let (ln, rn) = (self.node(txn, lp)?, self.node(txn, rp)?);
        match (ln, rn) {
            (
                Node::Leaf {
                    entries: mut le, ..
                },
                Node::Leaf {
                    entries: re,
                    next: rnext,
                },
            ) => {
                le.extend(re);
                let merged = Node::Leaf {
                    entries: le,
                    next: rnext,
                };
                if merged.encoded_len() <= self.capacity() {
                    txn.pages.insert(lp, merged);
                    self.free(txn, rp)?;
                    keys.remove(left);
                    children.remove(left + 1);
                } else {
                    let Node::Leaf {
                        entries: mut all,
                        next,
                    } = merged
                    else {
                        unreachable!()
                    };
                    let right = all.split_off(self.leaf_split(&all)?);
                    keys[left] = right[0].0.clone();
                    txn.pages.insert(
                        lp,
                        Node::Leaf {
                            entries: all,
                            next: rp,
                        },
                    );
                    txn.pages.insert(
                        rp,
                        Node::Leaf {
                            entries: right,
                            next,
                        },
                    );
                }
            }
            (
                Node::Internal {
                    keys: mut lk,
                    children: mut lc,
                },
                Node::Internal {
                    keys: rk,
                    children: rc,
                },
            ) => {
                lk.push(keys[left].clone());
                lk.extend(rk);
                lc.extend(rc);
                let merged = Node::Internal {
                    keys: lk,
                    children: lc,
                };
                if merged.encoded_len() <= self.capacity() {
                    txn.pages.insert(lp, merged);
                    self.free(txn, rp)?;
                    keys.remove(left);
                    children.remove(left + 1);
                } else {
                    let Node::Internal {
                        keys: mut all,
                        children: mut ch,
                    } = merged
                    else {
                        unreachable!()
                    };
                    let mid = self.internal_split(&all)?;
                    let right_keys = all.split_off(mid + 1);
                    let up = all
                        .pop()
                        .ok_or_else(|| EngineError::Other("btree: internal: empty split".into()))?;
                    let right_children = ch.split_off(mid + 1);
                    keys[left] = up;
                    txn.pages.insert(
                        lp,
                        Node::Internal {
                            keys: all,
                            children: ch,
                        },
                    );
                    txn.pages.insert(
                        rp,
                        Node::Internal {
                            keys: right_keys,
                            children: right_children,
                        },
                    );
                }
            }
            (l, r) => {
                return Err(self.corrupt_page(
                    rp,
                    &format!(
                        "siblings of different types ({} and {})",
                        l.type_name(),
                        r.type_name()
                    ),
                ));
            }
        }
        Ok((keys, children))
    }

    fn delete_in(&self, txn: &mut Txn, key: &[u8]) -> Result<(), EngineError> {
        let root = txn.meta.root;
        match self.remove(txn, root, txn.meta.height, key)? {
            Removed::Absent => return Ok(()),
            Removed::Done(Some((separator, right))) => {
                // A rebalance lengthened a separator and the root split: a new level.
                return self.grow_root(txn, separator, right);
            }
            Removed::Done(None) => {}
        }
        // An internal root left with one child is replaced by it: the height shrinks.
        if txn.meta.height > 1
            && let Node::Internal { keys, children } = self.node(txn, root)?
            && keys.is_empty()
        {
            txn.meta.root = children[0];
            txn.meta.height -= 1;
            self.free(txn, root)?;
        }
        Ok(())
    }

    fn run(
        &mut self,
        f: impl FnOnce(&Self, &mut Txn) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        self.usable()?;
        let mut txn = self.txn();
        f(self, &mut txn)?;
        self.commit(txn)
    }

    /// Checks the tree's structure: every page reachable once, keys in order within
    /// separator bounds, leaves at one depth and chained in order, the free list
    /// disjoint from the tree, every page accounted for (no leaks), the key count.
    pub fn check_integrity(&self) -> Result<(), EngineError> {
        self.usable()?;
        let mut seen = BTreeSet::new();
        let mut leaves = Vec::new();
        let mut keys_total = 0u64;
        // Depth-first with an explicit stack: (page, level, low bound, high bound).
        let mut stack: Vec<PendingCheck> = vec![(self.meta.root, self.meta.height, None, None)];
        while let Some((p, level, low, high)) = stack.pop() {
            if !seen.insert(p) || self.free_set.contains(&p) {
                return Err(self.corrupt_page(p, "page reachable twice or also free"));
            }
            let in_bounds = |k: &[u8]| {
                low.as_deref().is_none_or(|l| k >= l) && high.as_deref().is_none_or(|h| k < h)
            };
            if level == 1 {
                let (entries, _) = self.expect_leaf(p, self.read_node(p)?)?;
                if !entries.iter().all(|(k, _)| in_bounds(k)) {
                    return Err(self.corrupt_page(p, "leaf key outside its parent's bounds"));
                }
                keys_total += entries.len() as u64;
                leaves.push((low, p));
            } else {
                let (keys, children) = self.expect_internal(p, self.read_node(p)?)?;
                if !keys.iter().all(|k| in_bounds(k)) {
                    return Err(self.corrupt_page(p, "separator outside its parent's bounds"));
                }
                for (i, &c) in children.iter().enumerate().rev() {
                    let lo = if i == 0 {
                        low.clone()
                    } else {
                        Some(keys[i - 1].clone())
                    };
                    let hi = if i == keys.len() {
                        high.clone()
                    } else {
                        Some(keys[i].clone())
                    };
                    stack.push((c, level - 1, lo, hi));
                }
            }
        }
        // Leaves in key order must be chained in that order.
        for w in leaves.windows(2) {
            let (_, next) = self.expect_leaf(w[0].1, self.read_node(w[0].1)?)?;
            if next != w[1].1 {
                return Err(self.corrupt_page(w[0].1, "leaf chain out of order"));
            }
        }
        if let Some((_, last)) = leaves.last() {
            let (_, next) = self.expect_leaf(*last, self.read_node(*last)?)?;
            if next != NO_PAGE {
                return Err(self.corrupt_page(*last, "last leaf has a successor"));
            }
        }
        if keys_total != self.meta.key_count {
            return Err(self.corrupt_page(self.meta.root, "key count mismatch"));
        }
        let accounted = seen.len() + self.free_set.len() + FIRST_DATA_PAGE as usize;
        if accounted != self.meta.page_count as usize {
            return Err(self.corrupt_page(
                self.meta.root,
                "leaked pages (neither in the tree nor free)",
            ));
        }
        Ok(())
    }
}

/// The index splitting entries of the given sizes into two halves of similar size,
/// each non-empty (`1..len`; requires `len >= 2`).
fn split_point(sizes: &[usize]) -> usize {
    let total: usize = sizes.iter().sum();
    let mut acc = 0;
    for (i, s) in sizes.iter().enumerate() {
        acc += s;
        if acc * 2 >= total {
            return (i + 1).clamp(1, sizes.len().saturating_sub(1).max(1));
        }
    }
    sizes.len().saturating_sub(1).max(1)
}

/// A split of entries of the given sizes into two non-empty halves that each fit in
/// `body` bytes, searched outward from the byte midpoint ([`split_point`]). With
/// `drop_middle` (internal nodes) the entry at the split index moves up to the parent:
/// the halves are `[..i]` and `[i + 1..]`, `i` in `1..=len-2`; otherwise they are `[..i]`
/// and `[i..]`, `i` in `1..=len-1`. `None` if no such split exists.
fn fitting_split(sizes: &[usize], body: usize, drop_middle: bool) -> Option<usize> {
    let len = sizes.len();
    let (lo, hi) = if drop_middle {
        (1, len.checked_sub(2)?)
    } else {
        (1, len.checked_sub(1)?)
    };
    if lo > hi {
        return None;
    }
    let total: usize = sizes.iter().sum();
    let fits = |i: usize| {
        let left: usize = sizes[..i].iter().sum();
        let right = total - left - if drop_middle { sizes[i] } else { 0 };
        left <= body && right <= body
    };
    let start = split_point(sizes).clamp(lo, hi);
    (0..=hi - lo).find_map(|d| {
        [start.checked_sub(d), start.checked_add(d)]
            .into_iter()
            .flatten()
            .find(|&i| (lo..=hi).contains(&i) && fits(i))
    })
}

/// Whether page checksums are seeded with the page number (always, but for the
/// `btree.crc_excludes_page_number` defect).
fn crc_covers_page_no(options: &BTreeOptions) -> bool {
    !options.bugs.contains(EngineBug::BtreeCrcExcludesPageNumber)
}

/// Creates the data file durably under a temporary name: superblock generation 1 and
/// an empty root leaf at page 1, synced, renamed, directory synced.
fn create_data_file(
    vfs: &VfsHandle,
    dir: &str,
    tmp: &str,
    path: &str,
    page_size: usize,
    crc_covers_page_no: bool,
) -> Result<(), EngineError> {
    let meta = Meta {
        root: FIRST_DATA_PAGE,
        height: 1,
        page_count: FIRST_DATA_PAGE + 1,
        free_head: NO_PAGE,
        free_count: 0,
        key_count: 0,
    };
    let sb = Superblock {
        generation: 1,
        page_size: page_size as u32,
        wal_seq: 0,
        meta,
    };
    let root = Node::Leaf {
        entries: Vec::new(),
        next: NO_PAGE,
    }
    .encode_with(FIRST_DATA_PAGE, page_size, crc_covers_page_no)
    .ok_or_else(|| EngineError::Other("btree: internal: empty leaf does not fit".into()))?;
    let mut f = vfs.create(tmp)?;
    f.write_at(SUPERBLOCK_SLOT_BYTES as u64, &sb.encode())?;
    f.write_at(page_size as u64, &root)?;
    f.sync()?;
    drop(f);
    vfs.rename(tmp, path)?;
    vfs.sync_dir(dir)?;
    Ok(())
}

/// A lazy range scan along the leaf chain.
struct Scan<'a> {
    tree: &'a BTree,
    entries: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    next: u32,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    /// Leaves visited; more than the file's pages means a cycle.
    leaves_visited: u64,
    done: bool,
}

impl Scan<'_> {
    fn in_range(&self, key: &[u8]) -> (bool, bool) {
        let start = match &self.start {
            Bound::Included(s) => Bound::Included(s.as_slice()),
            Bound::Excluded(s) => Bound::Excluded(s.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match &self.end {
            Bound::Included(e) => Bound::Included(e.as_slice()),
            Bound::Excluded(e) => Bound::Excluded(e.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let past_end = !key_in_range(key, Bound::Unbounded, end);
        (key_in_range(key, start, end), past_end)
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some((k, v)) = self.entries.next() {
                if self.last_key.as_ref().is_some_and(|last| *last >= k) {
                    self.done = true;
                    return Some(Err(self
                        .tree
                        .corrupt_page(self.next, "leaf chain out of key order")));
                }
                self.last_key = Some(k.clone());
                let (inside, past_end) = self.in_range(&k);
                if past_end {
                    self.done = true;
                    return None;
                }
                if inside {
                    return Some(Ok((k, v)));
                }
                continue;
            }
            if self.next == NO_PAGE {
                self.done = true;
                return None;
            }
            self.leaves_visited += 1;
            if self.leaves_visited > u64::from(self.tree.meta.page_count) {
                self.done = true;
                return Some(Err(self
                    .tree
                    .corrupt_page(self.next, "leaf chain has a cycle")));
            }
            let p = self.next;
            match self
                .tree
                .read_node(p)
                .and_then(|n| self.tree.expect_leaf(p, n))
            {
                Ok((entries, next)) => {
                    self.entries = entries.into_iter();
                    self.next = next;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl KvEngine for BTree {
    fn name(&self) -> &'static str {
        "btree"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.usable()?;
        // The descent of `find_leaf`, on the cached nodes without copying them.
        let mut p = self.meta.root;
        for _ in 1..self.meta.height {
            let node = self.shared_node(p)?;
            let Node::Internal { keys, children } = node.as_ref() else {
                return Err(self.corrupt_page(
                    p,
                    &format!(
                        "expected an internal node, found a {} page",
                        node.type_name()
                    ),
                ));
            };
            p = children[keys.partition_point(|s| s.as_slice() <= key)];
        }
        let node = self.shared_node(p)?;
        let Node::Leaf { entries, .. } = node.as_ref() else {
            return Err(self.corrupt_page(
                p,
                &format!("expected a leaf, found a {} page", node.type_name()),
            ));
        };
        Ok(entries
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| entries[i].1.clone()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.run(|t, txn| t.put_in(txn, key, value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), EngineError> {
        self.run(|t, txn| t.delete_in(txn, key))
    }

    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), EngineError> {
        for op in &batch.ops {
            if let BatchOp::Put { key, value } = op {
                self.check_sizes(key, value)?;
            }
        }
        self.run(|t, txn| {
            for op in &batch.ops {
                match op {
                    BatchOp::Put { key, value } => t.put_in(txn, key, value)?,
                    BatchOp::Delete { key } => t.delete_in(txn, key)?,
                }
            }
            Ok(())
        })
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
        let first = match start {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        };
        let (leaf, entries, next) = self.find_leaf(first)?;
        Ok(Box::new(Scan {
            tree: self,
            entries: entries.into_iter(),
            next,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            last_key: None,
            leaves_visited: u64::from(leaf != NO_PAGE),
            done: false,
        }))
    }

    fn sync(&mut self) -> Result<(), EngineError> {
        self.usable()?;
        let wal_dir = vfs::join(&self.dir, WAL_DIR);
        self.guarded(|t| t.wal.sync().map_err(|e| wal_error(&wal_dir, e)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::vfs::real::RealFs;

    /// Reference defect: freeing a page twice created an undetected cycle in the free
    /// list. A second free of a page (in one operation, or of a page already on the
    /// free list) is `Corruption`.
    #[test]
    fn double_free_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let vfs: VfsHandle = Arc::new(RealFs::new(dir.path().to_path_buf()));
        let options = BTreeOptions {
            page_size: 1024,
            ..BTreeOptions::default()
        };
        let mut t = BTree::open(vfs, "t", options).unwrap();
        for i in 0..60u32 {
            t.put(format!("key{i:04}").as_bytes(), &[7; 100]).unwrap();
        }
        assert!(t.meta().height >= 2);
        let Node::Internal { children, .. } = t.read_node(t.meta().root).unwrap() else {
            panic!("root is not internal");
        };
        let mut txn = t.txn();
        t.free(&mut txn, children[0]).unwrap();
        assert!(matches!(
            t.free(&mut txn, children[0]),
            Err(EngineError::Corruption { .. })
        ));
        for i in 0..60u32 {
            t.delete(format!("key{i:04}").as_bytes()).unwrap();
        }
        let head = t.meta().free_head;
        assert_ne!(head, NO_PAGE);
        let mut txn = t.txn();
        assert!(matches!(
            t.free(&mut txn, head),
            Err(EngineError::Corruption { .. })
        ));
        t.check_integrity().unwrap();
    }

    #[test]
    fn split_point_leaves_both_halves_non_empty() {
        assert_eq!(split_point(&[10, 10]), 1);
        assert_eq!(split_point(&[100, 1, 1]), 1);
        assert_eq!(split_point(&[1, 1, 100]), 2);
        assert_eq!(split_point(&[5, 5, 5, 5]), 2);
    }

    /// Reference defect (review): an internal split at `len - 1` left the right node
    /// without keys. `fitting_split` keeps both halves non-empty and fitting.
    #[test]
    fn fitting_split_keeps_internal_halves_non_empty_and_fitting() {
        // The byte midpoint is the last key: an internal split must not take it.
        assert_eq!(split_point(&[10, 10, 100]), 2);
        assert_eq!(fitting_split(&[10, 10, 100], 200, true), Some(1));
        assert_eq!(fitting_split(&[10, 10], 200, true), None);
        assert_eq!(fitting_split(&[10, 10], 200, false), Some(1));
        // Left half too big at the midpoint: search outward.
        assert_eq!(fitting_split(&[90, 90, 30, 10, 10], 100, true), Some(1));
        assert_eq!(fitting_split(&[90, 90, 90], 100, true), Some(1));
        assert_eq!(fitting_split(&[90, 90, 90, 90], 100, true), None);
        for sizes in [vec![5; 3], vec![1, 2, 3, 4, 5, 6], vec![60, 1, 1, 1, 60]] {
            for drop_middle in [false, true] {
                if let Some(i) = fitting_split(&sizes, 100, drop_middle) {
                    let hi = sizes.len() - 1 - usize::from(drop_middle);
                    assert!((1..=hi).contains(&i), "{sizes:?} {drop_middle}: {i}");
                }
            }
        }
    }
}
