//! The B+tree's page and superblock formats. Integers are little-endian. See
//! `docs/storage/btree.md`.

use crate::codec::{u16_at, u32_at, u64_at};

/// "No page" in a link field.
pub const NO_PAGE: u32 = u32::MAX;
/// The page header's length.
pub const PAGE_HEADER_LEN: usize = 16;
/// Superblock slots: two copies at offsets 0 and 512 of page 0.
pub const SUPERBLOCK_SLOT_BYTES: usize = 512;
const SUPERBLOCK_LEN: usize = 64;
const SUPERBLOCK_MAGIC: &[u8; 8] = b"FLBTREE1";
pub const FORMAT_VERSION: u32 = 1;
/// The first page that holds tree data (page 0 holds the superblocks).
pub const FIRST_DATA_PAGE: u32 = 1;
const LEAF_ENTRY_OVERHEAD: usize = 4;
const INTERNAL_ENTRY_OVERHEAD: usize = 6;

const TYPE_LEAF: u8 = 1;
const TYPE_INTERNAL: u8 = 2;
const TYPE_FREE: u8 = 3;

/// A decoded page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Sorted entries and the next leaf of the chain.
    Leaf {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        next: u32,
    },
    /// `children.len() == keys.len() + 1`; `children[i]` holds keys in
    /// `[keys[i-1], keys[i])`.
    Internal {
        keys: Vec<Vec<u8>>,
        children: Vec<u32>,
    },
    /// A page on the free list.
    Free { next: u32 },
}

/// The bytes an entry of a leaf takes.
pub fn leaf_entry_len(key: &[u8], value: &[u8]) -> usize {
    LEAF_ENTRY_OVERHEAD + key.len() + value.len()
}

/// The bytes a separator of an internal node takes.
pub fn internal_entry_len(key: &[u8]) -> usize {
    INTERNAL_ENTRY_OVERHEAD + key.len()
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Leaf { .. } => "leaf",
            Node::Internal { .. } => "internal",
            Node::Free { .. } => "free",
        }
    }

    /// The encoded length (header included).
    pub fn encoded_len(&self) -> usize {
        PAGE_HEADER_LEN
            + match self {
                Node::Leaf { entries, .. } => {
                    entries.iter().map(|(k, v)| leaf_entry_len(k, v)).sum()
                }
                Node::Internal { keys, .. } => keys.iter().map(|k| internal_entry_len(k)).sum(),
                Node::Free { .. } => 0,
            }
    }

    /// Encodes the node as page `page_no`; `None` if it does not fit, or if it is an
    /// internal node without keys (which `decode` rejects: it must never be written).
    pub fn encode(&self, page_no: u32, page_size: usize) -> Option<Vec<u8>> {
        self.encode_with(page_no, page_size, true)
    }

    /// [`encode`](Self::encode); `crc_covers_page_no` false is the
    /// `btree.crc_excludes_page_number` defect (the checksum covers the bytes only).
    pub fn encode_with(
        &self,
        page_no: u32,
        page_size: usize,
        crc_covers_page_no: bool,
    ) -> Option<Vec<u8>> {
        let used = self.encoded_len();
        if used > page_size {
            return None;
        }
        if let Node::Internal { keys, .. } = self {
            debug_assert!(!keys.is_empty(), "internal page {page_no} without keys");
            if keys.is_empty() {
                return None;
            }
        }
        let mut b = vec![0u8; page_size];
        let (tag, count, link) = match self {
            Node::Leaf { entries, next } => (TYPE_LEAF, entries.len(), *next),
            Node::Internal { keys, children } => (TYPE_INTERNAL, keys.len(), *children.first()?),
            Node::Free { next } => (TYPE_FREE, 0, *next),
        };
        b[4] = tag;
        b[6..8].copy_from_slice(&u16::try_from(count).ok()?.to_le_bytes());
        b[8..12].copy_from_slice(&link.to_le_bytes());
        b[12..14].copy_from_slice(&u16::try_from(used).ok()?.to_le_bytes());
        let mut at = PAGE_HEADER_LEN;
        match self {
            Node::Leaf { entries, .. } => {
                for (k, v) in entries {
                    b[at..at + 2].copy_from_slice(&u16::try_from(k.len()).ok()?.to_le_bytes());
                    b[at + 2..at + 4].copy_from_slice(&u16::try_from(v.len()).ok()?.to_le_bytes());
                    at += 4;
                    b[at..at + k.len()].copy_from_slice(k);
                    at += k.len();
                    b[at..at + v.len()].copy_from_slice(v);
                    at += v.len();
                }
            }
            Node::Internal { keys, children } => {
                if children.len() != keys.len() + 1 {
                    return None;
                }
                for (k, c) in keys.iter().zip(&children[1..]) {
                    b[at..at + 2].copy_from_slice(&u16::try_from(k.len()).ok()?.to_le_bytes());
                    b[at + 2..at + 6].copy_from_slice(&c.to_le_bytes());
                    at += 6;
                    b[at..at + k.len()].copy_from_slice(k);
                    at += k.len();
                }
            }
            Node::Free { .. } => {}
        }
        let crc = page_crc(page_no, &b[4..], crc_covers_page_no);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        Some(b)
    }

    /// Decodes and validates page `page_no`: checksum (seeded with the page number, so a
    /// page written to the wrong place fails), type, lengths, strictly increasing keys,
    /// links inside `page_count`.
    pub fn decode(b: &[u8], page_no: u32, page_count: u32) -> Result<Node, &'static str> {
        Node::decode_with(b, page_no, page_count, true)
    }

    /// [`decode`](Self::decode); `crc_covers_page_no` false is the
    /// `btree.crc_excludes_page_number` defect: a valid page of another number (a
    /// misdirected write) decodes as this one.
    pub fn decode_with(
        b: &[u8],
        page_no: u32,
        page_count: u32,
        crc_covers_page_no: bool,
    ) -> Result<Node, &'static str> {
        if b.len() < PAGE_HEADER_LEN {
            return Err("short page");
        }
        if page_crc(page_no, &b[4..], crc_covers_page_no) != u32_at(b, 0) {
            return Err("page checksum mismatch");
        }
        if b[5] != 0 || b[14] != 0 || b[15] != 0 {
            return Err("nonzero reserved bytes in page header");
        }
        let count = usize::from(u16_at(b, 6));
        let link = u32_at(b, 8);
        let used = usize::from(u16_at(b, 12));
        if used < PAGE_HEADER_LEN || used > b.len() {
            return Err("page used length out of range");
        }
        let valid_link = |p: u32| p == NO_PAGE || (p >= FIRST_DATA_PAGE && p < page_count);
        let valid_child = |p: u32| p >= FIRST_DATA_PAGE && p < page_count;
        let mut at = PAGE_HEADER_LEN;
        let node = match b[4] {
            TYPE_LEAF => {
                if !valid_link(link) || link == page_no {
                    return Err("bad leaf sibling link");
                }
                let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count);
                for _ in 0..count {
                    if used - at < LEAF_ENTRY_OVERHEAD {
                        return Err("leaf entry past the used length");
                    }
                    let klen = usize::from(u16_at(b, at));
                    let vlen = usize::from(u16_at(b, at + 2));
                    at += LEAF_ENTRY_OVERHEAD;
                    if used - at < klen + vlen {
                        return Err("leaf entry past the used length");
                    }
                    let key = b[at..at + klen].to_vec();
                    let value = b[at + klen..at + klen + vlen].to_vec();
                    at += klen + vlen;
                    if entries.last().is_some_and(|(last, _)| *last >= key) {
                        return Err("leaf keys out of order");
                    }
                    entries.push((key, value));
                }
                Node::Leaf {
                    entries,
                    next: link,
                }
            }
            TYPE_INTERNAL => {
                if count == 0 {
                    return Err("internal node without keys");
                }
                if !valid_child(link) {
                    return Err("bad child link");
                }
                let mut keys: Vec<Vec<u8>> = Vec::with_capacity(count);
                let mut children = Vec::with_capacity(count + 1);
                children.push(link);
                for _ in 0..count {
                    if used - at < INTERNAL_ENTRY_OVERHEAD {
                        return Err("internal entry past the used length");
                    }
                    let klen = usize::from(u16_at(b, at));
                    let child = u32_at(b, at + 2);
                    at += INTERNAL_ENTRY_OVERHEAD;
                    if used - at < klen {
                        return Err("internal entry past the used length");
                    }
                    if !valid_child(child) {
                        return Err("bad child link");
                    }
                    let key = b[at..at + klen].to_vec();
                    at += klen;
                    if keys.last().is_some_and(|last| *last >= key) {
                        return Err("internal keys out of order");
                    }
                    keys.push(key);
                    children.push(child);
                }
                Node::Internal { keys, children }
            }
            TYPE_FREE => {
                if count != 0 || !valid_link(link) || link == page_no {
                    return Err("bad free page");
                }
                Node::Free { next: link }
            }
            _ => return Err("unknown page type"),
        };
        if at != used {
            return Err("page used length mismatch");
        }
        if b[used..].iter().any(|&x| x != 0) {
            return Err("nonzero bytes after the used length");
        }
        Ok(node)
    }
}

fn page_crc(page_no: u32, rest: &[u8], covers_page_no: bool) -> u32 {
    if covers_page_no {
        crc32c::crc32c_append(crc32c::crc32c(&page_no.to_le_bytes()), rest)
    } else {
        crc32c::crc32c(rest)
    }
}

/// The tree's metadata: in a superblock and in every logged operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub root: u32,
    pub height: u32,
    pub page_count: u32,
    pub free_head: u32,
    pub free_count: u32,
    pub key_count: u64,
}

/// The encoded length of [`Meta`].
pub const META_LEN: usize = 28;

impl Meta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..4].copy_from_slice(&self.root.to_le_bytes());
        b[4..8].copy_from_slice(&self.height.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.free_head.to_le_bytes());
        b[16..20].copy_from_slice(&self.free_count.to_le_bytes());
        b[20..28].copy_from_slice(&self.key_count.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Meta, &'static str> {
        if b.len() != META_LEN {
            return Err("bad metadata length");
        }
        let m = Meta {
            root: u32_at(b, 0),
            height: u32_at(b, 4),
            page_count: u32_at(b, 8),
            free_head: u32_at(b, 12),
            free_count: u32_at(b, 16),
            key_count: u64_at(b, 20),
        };
        m.check()?;
        Ok(m)
    }

    pub fn check(&self) -> Result<(), &'static str> {
        let in_file = |p: u32| p >= FIRST_DATA_PAGE && p < self.page_count;
        if !in_file(self.root) || self.height == 0 || self.height > super::MAX_HEIGHT {
            return Err("bad root or height");
        }
        if self.free_head != NO_PAGE && !in_file(self.free_head) {
            return Err("bad free-list head");
        }
        if (self.free_head == NO_PAGE) != (self.free_count == 0)
            || self.free_count >= self.page_count
        {
            return Err("bad free-list count");
        }
        Ok(())
    }
}

/// A superblock: the metadata as of a checkpoint, the WAL sequence number the data file
/// reflects, a generation number and the page size. Two copies alternate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub generation: u64,
    pub page_size: u32,
    /// Every WAL record up to this sequence number is in the data file.
    pub wal_seq: u64,
    pub meta: Meta,
}

impl Superblock {
    /// `magic(8) version u32, page size u32, generation u64, wal seq u64, meta(28),
    /// CRC32C of bytes 0..60`, zero-padded to the slot.
    pub fn encode(&self) -> [u8; SUPERBLOCK_SLOT_BYTES] {
        let mut b = [0u8; SUPERBLOCK_SLOT_BYTES];
        b[0..8].copy_from_slice(SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.wal_seq.to_le_bytes());
        b[32..60].copy_from_slice(&self.meta.encode());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, &'static str> {
        if b.len() < SUPERBLOCK_SLOT_BYTES {
            return Err("short superblock");
        }
        if &b[0..8] != SUPERBLOCK_MAGIC || crc32c::crc32c(&b[..60]) != u32_at(b, 60) {
            return Err("superblock checksum mismatch");
        }
        if u32_at(b, 8) != FORMAT_VERSION {
            return Err("unsupported superblock version");
        }
        if b[SUPERBLOCK_LEN..].iter().any(|&x| x != 0) {
            return Err("nonzero superblock padding");
        }
        Ok(Superblock {
            page_size: u32_at(b, 12),
            generation: u64_at(b, 16),
            wal_seq: u64_at(b, 24),
            meta: Meta::decode(&b[32..60])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trip_and_every_byte_checked() {
        let leaf = Node::Leaf {
            entries: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])],
            next: 3,
        };
        let internal = Node::Internal {
            keys: vec![b"m".to_vec()],
            children: vec![2, 3],
        };
        for node in [leaf, internal, Node::Free { next: NO_PAGE }] {
            let b = node.encode(5, 1024).unwrap();
            assert_eq!(Node::decode(&b, 5, 10).unwrap(), node);
            assert!(Node::decode(&b, 6, 10).is_err(), "wrong page number");
            for i in 0..b.len() {
                let mut c = b.clone();
                c[i] ^= 1;
                assert!(Node::decode(&c, 5, 10).is_err(), "byte {i}");
            }
        }
    }
}
