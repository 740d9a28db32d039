//! Byte layouts of the store's files. docs/FORMAT.md is the specification; section
//! numbers below refer to it. Every integer is little-endian.

use crate::error::hex;
use crate::extent::Extent;
use serde::{Deserialize, Serialize};

/// Version of the image manifest and chunk map format this build reads and writes (FORMAT.md §1).
pub const FORMAT_VERSION: u32 = 1;
/// Version of the store layout (imprint-store.json, packs, indexes) this build writes
/// into a new store (FORMAT.md §1, §2).
pub const STORE_VERSION: u32 = 2;
/// The oldest store version this build reads and appends to (FORMAT.md §1): version 1
/// has no group records, and a capture into a version 1 store writes none, so the
/// Imprint that made it can still read it.
pub const MIN_STORE_VERSION: u32 = 1;
/// The first store version whose packs may hold group records (FORMAT.md §3).
pub const GROUP_STORE_VERSION: u32 = 2;
/// What one group frame may decode to at most (FORMAT.md §3); a reader refuses more.
pub const MAX_GROUP_RAW: u64 = 64 << 20;
/// Default chunk size: measured in docs/ARCHITECTURE.md ("Chunk size").
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// A pack never grows past this, so every file fits FAT32's 4 GiB limit (FORMAT.md §3).
pub const MAX_PACK_BYTES: u64 = 1 << 30;

/// A chunk id: blake3 of the chunk's (masked, uncompressed) content.
pub type ChunkId = [u8; 32];
/// The map's marker for a chunk that is captured but all zero (never stored).
pub const ZERO_ID: ChunkId = [0; 32];

// ---- pack files (FORMAT.md §3) ----

pub const PACK_MAGIC: &[u8; 8] = b"IMPRPACK";
pub const PACK_HEADER_LEN: u64 = 32;
pub const RECORD_MAGIC: &[u8; 4] = b"CHNK";
pub const RECORD_HEADER_LEN: usize = 64;

/// How a record's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    /// Stored as is (zstd did not make it smaller).
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
    /// A group record: a member table, then one zstd frame that decodes to every
    /// member, back to back (store version 2).
    Group = 2,
}

impl Encoding {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            2 => Some(Encoding::Group),
            _ => None,
        }
    }
}

/// The pack file header: magic, the store's version, the pack's own id (16 random bytes).
pub fn pack_header(pack_id: &[u8; 16], version: u32) -> [u8; PACK_HEADER_LEN as usize] {
    let mut h = [0u8; PACK_HEADER_LEN as usize];
    h[..8].copy_from_slice(PACK_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..32].copy_from_slice(pack_id);
    h
}

/// Header of one chunk record in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub encoding: Encoding,
    pub stored_len: u32,
    pub raw_len: u32,
    pub id: ChunkId,
}

impl RecordHeader {
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(RECORD_MAGIC);
        h[4] = self.encoding as u8;
        h[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        h[16..48].copy_from_slice(&self.id);
        let check = header_check(&h[..60]);
        h[60..64].copy_from_slice(&check);
        h
    }

    /// Parses a header, or says what is wrong with it.
    pub fn decode(h: &[u8; RECORD_HEADER_LEN]) -> Result<Self, String> {
        if &h[0..4] != RECORD_MAGIC {
            return Err("record magic missing".into());
        }
        if h[60..64] != header_check(&h[..60]) {
            return Err("record header checksum mismatch".into());
        }
        let encoding =
            Encoding::from_u8(h[4]).ok_or_else(|| format!("unknown encoding {}", h[4]))?;
        Ok(RecordHeader {
            encoding,
            stored_len: u32::from_le_bytes(arr(&h[8..12])),
            raw_len: u32::from_le_bytes(arr(&h[12..16])),
            id: arr(&h[16..48]),
        })
    }
}

/// One chunk of a group record: its id and its decoded length (FORMAT.md §3).
pub type Member = (ChunkId, u32);
/// Bytes of one member table entry.
pub const MEMBER_LEN: usize = 36;

/// A group record's payload before its frame: u32 member count, then each member's id
/// and u32 length, in the order the frame decodes them (FORMAT.md §3).
pub fn encode_members(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + members.len() * MEMBER_LEN);
    out.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for (id, len) in members {
        out.extend_from_slice(id);
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

/// Parses the member table at the start of a group record's payload; returns the
/// members and the table's length (where the frame starts).
pub fn decode_members(payload: &[u8]) -> Result<(Vec<Member>, usize), String> {
    let count = payload
        .get(..4)
        .map(|b| u32::from_le_bytes(arr(b)) as usize)
        .ok_or("group record too short for its member count")?;
    let table = count
        .checked_mul(MEMBER_LEN)
        .and_then(|n| n.checked_add(4))
        .filter(|&n| count >= 2 && n <= payload.len())
        .ok_or_else(|| format!("group record with a bad member count {count}"))?;
    let members = payload[4..table]
        .chunks_exact(MEMBER_LEN)
        .map(|m| (arr(&m[..32]), u32::from_le_bytes(arr(&m[32..36]))))
        .collect();
    Ok((members, table))
}

fn header_check(bytes: &[u8]) -> [u8; 4] {
    arr(&blake3::hash(bytes).as_bytes()[..4])
}

/// Copies a slice into an array; callers pass slices of exactly N bytes.
pub fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

// ---- pack index files (FORMAT.md §4) ----

pub const INDEX_MAGIC: &[u8; 8] = b"IMPRIDX1";
pub const INDEX_HEADER_LEN: usize = 24;
pub const INDEX_ENTRY_LEN: usize = 56;

/// Where a chunk lives: offset of its payload in a pack, and how it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub id: ChunkId,
    /// Offset of the payload (just after the record header) in the pack; for a group
    /// member, of the group's zstd frame (after the member table).
    pub offset: u64,
    /// Bytes at `offset` to read: the payload, or the group's whole frame.
    pub stored_len: u32,
    pub raw_len: u32,
    pub encoding: Encoding,
    /// A group member's offset in what its frame decodes to; 0 otherwise.
    pub skip: u32,
}

pub fn encode_index(entries: &[IndexEntry], pack_len: u64, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN + 32);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&pack_len.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.push(e.encoding as u8);
        out.extend_from_slice(&e.skip.to_le_bytes());
        out.extend_from_slice(&[0u8; 3]);
    }
    let trailer = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&trailer);
    out
}

/// Parses an index; returns the entries and the sealed pack length.
pub fn decode_index(b: &[u8]) -> Result<(Vec<IndexEntry>, u64), String> {
    if b.len() < INDEX_HEADER_LEN + 32 || &b[..8] != INDEX_MAGIC {
        return Err("not a pack index".into());
    }
    let (body, trailer) = b.split_at(b.len() - 32);
    if blake3::hash(body).as_bytes() != trailer {
        return Err("index checksum mismatch".into());
    }
    let version = u32::from_le_bytes(arr(&b[8..12]));
    if !(MIN_STORE_VERSION..=STORE_VERSION).contains(&version) {
        return Err(format!("index version {version}"));
    }
    let count = u32::from_le_bytes(arr(&b[12..16])) as usize;
    let pack_len = u64::from_le_bytes(arr(&b[16..24]));
    if body.len() != INDEX_HEADER_LEN + count * INDEX_ENTRY_LEN {
        return Err("index length does not match its entry count".into());
    }
    let mut entries = Vec::with_capacity(count);
    for e in body[INDEX_HEADER_LEN..].chunks_exact(INDEX_ENTRY_LEN) {
        let encoding = Encoding::from_u8(e[48])
            .filter(|&enc| enc != Encoding::Group || version >= GROUP_STORE_VERSION)
            .ok_or("unknown encoding in index")?;
        let entry = IndexEntry {
            id: arr(&e[0..32]),
            offset: u64::from_le_bytes(arr(&e[32..40])),
            stored_len: u32::from_le_bytes(arr(&e[40..44])),
            raw_len: u32::from_le_bytes(arr(&e[44..48])),
            encoding,
            skip: u32::from_le_bytes(arr(&e[49..53])),
        };
        if entry.offset.saturating_add(entry.stored_len as u64) > pack_len {
            return Err("index entry points past the end of its pack".into());
        }
        let end = entry.skip as u64 + entry.raw_len as u64;
        if (encoding == Encoding::Group && end > MAX_GROUP_RAW)
            || (encoding != Encoding::Group && entry.skip != 0)
        {
            return Err("index entry with a bad group offset".into());
        }
        entries.push(entry);
    }
    Ok((entries, pack_len))
}

// ---- chunk maps (FORMAT.md §6) ----

pub const MAP_MAGIC: &[u8; 8] = b"IMPRMAP1";
pub const MAP_HEADER_LEN: usize = 40;

/// Which chunks make up an image: the captured extents and, for every chunk that
/// intersects them, its id ([`ZERO_ID`] for an all-zero chunk).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkMap {
    pub chunk_size: u32,
    pub disk_size: u64,
    /// Captured byte ranges, normalized. Bytes outside them are zeros in every chunk.
    pub extents: Vec<Extent>,
    /// (chunk index, id), strictly increasing by index.
    pub entries: Vec<(u64, ChunkId)>,
}

impl ChunkMap {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MAP_HEADER_LEN + self.extents.len() * 16 + self.entries.len() * 40 + 32,
        );
        out.extend_from_slice(MAP_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.disk_size.to_le_bytes());
        out.extend_from_slice(&(self.extents.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.extents {
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        for (idx, id) in &self.entries {
            out.extend_from_slice(&idx.to_le_bytes());
            out.extend_from_slice(id);
        }
        let trailer = *blake3::hash(&out).as_bytes();
        out.extend_from_slice(&trailer);
        out
    }

    /// Parses and checks a map: checksum, version, sorted non-overlapping extents inside
    /// the disk, strictly increasing entries that each intersect an extent.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < MAP_HEADER_LEN + 32 || &b[..8] != MAP_MAGIC {
            return Err("not a chunk map".into());
        }
        let (body, trailer) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != trailer {
            return Err("checksum mismatch (file damaged or truncated)".into());
        }
        let version = u32::from_le_bytes(arr(&b[8..12]));
        if version != FORMAT_VERSION {
            return Err(format!("map version {version}, expected {FORMAT_VERSION}"));
        }
        let chunk_size = u32::from_le_bytes(arr(&b[12..16]));
        let disk_size = u64::from_le_bytes(arr(&b[16..24]));
        let n_ext = u64::from_le_bytes(arr(&b[24..32]));
        let n_ent = u64::from_le_bytes(arr(&b[32..40]));
        let want = n_ext
            .checked_mul(16)
            .and_then(|x| n_ent.checked_mul(40).and_then(|y| x.checked_add(y)))
            .and_then(|x| x.checked_add(MAP_HEADER_LEN as u64));
        if want != Some(body.len() as u64) {
            return Err("length does not match the counts in its header".into());
        }
        if chunk_size == 0 || !chunk_size.is_power_of_two() || chunk_size < 4096 {
            return Err(format!("bad chunk size {chunk_size}"));
        }
        let mut p = MAP_HEADER_LEN;
        let mut extents = Vec::with_capacity(n_ext as usize);
        let mut prev_end = 0u64;
        for i in 0..n_ext {
            let e = Extent::new(
                u64::from_le_bytes(arr(&b[p..p + 8])),
                u64::from_le_bytes(arr(&b[p + 8..p + 16])),
            );
            p += 16;
            if e.len == 0 || (i > 0 && e.offset <= prev_end) || e.end() > disk_size {
                return Err(format!(
                    "extent {i} is empty, out of order or past the disk end"
                ));
            }
            prev_end = e.end();
            extents.push(e);
        }
        let cs = chunk_size as u64;
        let mut entries = Vec::with_capacity(n_ent as usize);
        let mut prev: Option<u64> = None;
        for _ in 0..n_ent {
            let idx = u64::from_le_bytes(arr(&b[p..p + 8]));
            let id: ChunkId = arr(&b[p + 8..p + 40]);
            p += 40;
            if prev.is_some_and(|q| idx <= q) {
                return Err("entries out of order".into());
            }
            let window = Extent::new(idx.saturating_mul(cs), cs);
            if crate::extent::clip(&extents, window).next().is_none() {
                return Err(format!("chunk {idx} lies outside the captured extents"));
            }
            prev = Some(idx);
            entries.push((idx, id));
        }
        Ok(ChunkMap {
            chunk_size,
            disk_size,
            extents,
            entries,
        })
    }

    /// The disk range chunk `idx` covers (the last chunk may be short).
    pub fn chunk_range(&self, idx: u64) -> Extent {
        chunk_range(idx, self.chunk_size, self.disk_size)
    }
}

/// The disk range of chunk `idx` on a disk of `disk_size` bytes.
pub fn chunk_range(idx: u64, chunk_size: u32, disk_size: u64) -> Extent {
    let start = idx * chunk_size as u64;
    Extent::new(
        start,
        (chunk_size as u64).min(disk_size.saturating_sub(start)),
    )
}

// ---- manifests (FORMAT.md §5) ----

/// The disk an image was captured from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SourceDisk {
    /// Where it was read from (device node or file), for the record only.
    pub path: String,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
}

/// Counts recorded at capture time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptureStats {
    /// Bytes inside the captured extents.
    pub captured_bytes: u64,
    /// Chunks in the map (including all-zero ones).
    pub chunks: u64,
    /// Chunks that are all zero (not stored).
    pub zero_chunks: u64,
    /// Distinct stored chunks the image refers to.
    pub stored_chunks: u64,
    /// Compressed bytes of those distinct chunks (the image's size if it were alone).
    pub stored_bytes: u64,
    /// Chunks this capture added to the store (new ids).
    pub new_chunks: u64,
    /// Compressed bytes this capture added to the store.
    pub new_bytes: u64,
}

/// An image's manifest: `images/NAME.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always "imprint-image".
    pub format: String,
    pub format_version: u32,
    pub tool_version: String,
    /// RFC 3339 UTC, seconds.
    pub created: String,
    pub name: String,
    pub description: String,
    pub source: SourceDisk,
    pub chunk_size: u32,
    /// File name of the chunk map inside `images/`.
    pub map_file: String,
    pub stats: CaptureStats,
    /// Partition table of the source as the `disks` crate describes it; null for a
    /// disk captured without one. Opaque to the engine (FORMAT.md §5.2).
    pub partition_table: Option<serde_json::Value>,
    /// One object per partition (FORMAT.md §5.2).
    pub partitions: Vec<serde_json::Value>,
    /// blake3 over this manifest (with `root_hash` empty) and the map (FORMAT.md §5.1).
    pub root_hash: String,
}

impl Manifest {
    /// The root hash of this manifest together with its map bytes.
    pub fn compute_root_hash(&self, map_bytes: &[u8]) -> String {
        let mut m = self.clone();
        m.root_hash = String::new();
        // Serializing a struct is deterministic (field order is declaration order and
        // serde_json's maps are sorted), so whitespace edits to the file do not matter,
        // but any change of value does.
        let canonical = serde_json::to_vec(&m).unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(b"imprint-image-root-v1\0");
        h.update(&(canonical.len() as u64).to_le_bytes());
        h.update(&canonical);
        h.update(map_bytes);
        hex(h.finalize().as_bytes())
    }
}

// ---- image names (FORMAT.md §5.3) ----

pub const MAX_NAME_LEN: usize = 100;

/// Checks an image name can be a file name on FAT32, exFAT, NTFS, ext4 and SMB shares.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 100 bytes");
    }
    if name == "." || name == ".." || name.contains("..") {
        return Err("it contains \"..\"");
    }
    if name.contains(['/', '\\']) {
        return Err("it contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if name.contains([':', '*', '?', '"', '<', '>', '|']) {
        return Err("it contains one of : * ? \" < > | (not allowed on FAT, exFAT, NTFS or SMB)");
    }
    if name.starts_with('.') || name.starts_with(' ') {
        return Err("it starts with a dot or a space");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("it ends with a dot or a space (Windows filesystems drop them)");
    }
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = ["CON", "PRN", "AUX", "NUL"];
    let numbered = ["COM", "LPT"];
    if reserved.contains(&stem.as_str())
        || (stem.len() == 4
            && numbered.contains(&&stem[..3])
            && stem.as_bytes()[3].is_ascii_digit())
    {
        return Err("it is a device name reserved on Windows filesystems");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trips_and_detects_damage() {
        let h = RecordHeader {
            encoding: Encoding::Zstd,
            stored_len: 1234,
            raw_len: 1 << 20,
            id: [7; 32],
        };
        let mut b = h.encode();
        assert_eq!(RecordHeader::decode(&b).unwrap(), h);
        b[9] ^= 1;
        assert!(RecordHeader::decode(&b).unwrap_err().contains("checksum"));
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let e = IndexEntry {
            id: [1; 32],
            offset: 96,
            stored_len: 10,
            raw_len: 4096,
            encoding: Encoding::Raw,
            skip: 0,
        };
        let g = IndexEntry {
            id: [3; 32],
            encoding: Encoding::Group,
            skip: 1 << 20,
            ..e
        };
        let b = encode_index(&[e, IndexEntry { id: [2; 32], ..e }, g], 200, 2);
        let (v, len) = decode_index(&b).unwrap();
        assert_eq!((v.len(), v[0], v[2], len), (3, e, g, 200));
        // A version 1 index holds no group entries.
        assert!(decode_index(&encode_index(&[g], 200, 1)).is_err());
        let b = encode_index(&[e, IndexEntry { id: [2; 32], ..e }], 200, 1);
        let (v, len) = decode_index(&b).unwrap();
        assert_eq!((v.len(), v[0], len), (2, e, 200));
        let mut bad = b.clone();
        bad[30] ^= 1;
        assert!(decode_index(&bad).is_err());
        assert!(decode_index(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn member_tables_round_trip_and_reject_bad_counts() {
        let m = vec![([1; 32], 1 << 20), ([2; 32], 4096)];
        let mut b = encode_members(&m);
        assert_eq!(b.len(), 4 + 2 * MEMBER_LEN);
        b.extend_from_slice(b"frame");
        assert_eq!(decode_members(&b).unwrap(), (m.clone(), 4 + 2 * MEMBER_LEN));
        // A table longer than the payload, or of fewer than two members, is refused.
        assert!(decode_members(&b[..4 + MEMBER_LEN]).is_err());
        assert!(decode_members(&encode_members(&m[..1])).is_err());
        let mut huge = b.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_members(&huge).is_err());
    }

    #[test]
    fn map_round_trips_and_rejects_hostile_maps() {
        let m = ChunkMap {
            chunk_size: 1 << 20,
            disk_size: 10 << 20,
            extents: vec![Extent::new(0, 3 << 20), Extent::new(5 << 20, 100)],
            entries: vec![(0, [1; 32]), (2, ZERO_ID), (5, [3; 32])],
        };
        let b = m.encode();
        assert_eq!(ChunkMap::decode(&b).unwrap(), m);
        // An entry outside every extent.
        let mut m2 = m.clone();
        m2.entries.push((9, [4; 32]));
        assert!(ChunkMap::decode(&m2.encode())
            .unwrap_err()
            .contains("outside"));
        // A header that claims 2^61 extents.
        let mut bad = b.clone();
        bad[24..32].copy_from_slice(&(1u64 << 61).to_le_bytes());
        let n = bad.len() - 32;
        let t = *blake3::hash(&bad[..n]).as_bytes();
        bad[n..].copy_from_slice(&t);
        assert!(ChunkMap::decode(&bad).is_err());
        assert!(ChunkMap::decode(&b[..10]).is_err());
    }

    #[test]
    fn image_names_that_are_unsafe_anywhere_are_refused() {
        for ok in ["lab-pc 2026-11", "win11_golden.v2", "café"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "../x", "a/b", "a\\b", "..", ".hidden", "x\n", "a:b", "CON", "com1.img", "trail.",
            "q?",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(101)).is_err());
    }
}
