//! Used-block maps of filesystems, read from a partition's bytes alone.
//!
//! Owns filesystem detection by magic and the allocated extents of each known
//! filesystem, taken from that filesystem's own metadata. Never writes anything,
//! never mounts, never shells out.
//!
//! The contract with callers: a map may claim more than the filesystem uses (that only
//! costs space), never less (that loses data). So every parser checks what it reads and,
//! on anything it does not fully understand, answers [`Method::Whole`] with a reason
//! instead of guessing. Hostile input can make a parser give up, never panic, loop
//! without bound or allocate without bound: every count read from disk is checked
//! against the partition size before it sizes a loop or a buffer.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

mod exfat;
mod ext;
mod extents;
mod fat;
mod ntfs;
mod other;
mod swap;
mod util;

pub use extents::MAX_EXTENTS;
use util::{Dev, Fail};

/// Positional reads, so a parser can look anywhere without owning a cursor.
pub trait ReadAt {
    /// Fills `buf` from `offset`, or fails (`UnexpectedEof` when the range runs past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| Some((start, start.checked_add(buf.len())?)))
            .and_then(|(start, end)| self.get(start..end))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of buffer")
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// A window `[start, start + len)` of another reader: a partition inside a disk.
#[derive(Debug, Clone)]
pub struct Slice<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Slice<R> {
    pub fn new(inner: R, start: u64, len: u64) -> Self {
        Slice { inner, start, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: ReadAt> ReadAt for Slice<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= self.len => {
                // start + offset cannot overflow when the slice itself was addressable.
                let at = self.start.checked_add(offset).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "slice offset overflows")
                })?;
                self.inner.read_exact_at(buf, at)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} runs past the end of a {}-byte slice",
                    buf.len(),
                    self.len
                ),
            )),
        }
    }
}

/// What a partition holds, by its own signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Fat12,
    Fat16,
    Fat32,
    ExFat,
    Ntfs,
    Swap,
    Luks,
    Lvm,
    BitLocker,
    Xfs,
    Btrfs,
}

impl FsKind {
    /// The name blkid gives the type (`TYPE=`), except that FAT keeps its width
    /// (`fat12`/`fat16`/`fat32`, where blkid says `vfat`) because the used map differs.
    pub fn name(&self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::ExFat => "exfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Swap => "swap",
            FsKind::Luks => "crypto_LUKS",
            FsKind::Lvm => "LVM2_member",
            FsKind::BitLocker => "BitLocker",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identity of a detected filesystem, formatted the way blkid prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: FsKind,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// The allocation unit the used map is counted in (block, cluster or page), in bytes.
    pub block_size: u32,
}

/// A byte range relative to the partition start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// How the extents of a [`UsedMap`] were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// From the filesystem's own allocation metadata.
    UsedBlocks,
    /// The whole partition, because no parser could vouch for less; `reason` says why.
    Whole { reason: String },
}

/// The bytes of a partition that must be captured to reproduce its filesystem.
#[derive(Debug, Clone)]
pub struct UsedMap {
    pub fs: Option<FsInfo>,
    pub method: Method,
    /// Sorted, merged (no two touch), all within `[0, size)`.
    pub extents: Vec<Extent>,
    pub used_bytes: u64,
}

/// Identifies the filesystem (or container) on a partition of `size` bytes.
///
/// A signature whose surrounding metadata is invalid does not count. `Err` is an I/O error.
pub fn detect(dev: &dyn ReadAt, size: u64) -> io::Result<Option<FsInfo>> {
    let dev = Dev::new(dev, size);
    match probe(&dev)? {
        Probe::Found(p) => Ok(Some(p.info().clone())),
        Probe::Invalid(_) | Probe::Nothing => Ok(None),
    }
}

/// The used extents of the filesystem on a partition of `size` bytes.
///
/// `Err` only for I/O errors. Anything the parsers cannot vouch for gives
/// [`Method::Whole`] with a reason and the single extent `[0, size)`.
pub fn used_map(dev: &dyn ReadAt, size: u64) -> io::Result<UsedMap> {
    let dev = Dev::new(dev, size);
    let parsed = match probe(&dev)? {
        Probe::Nothing => return Ok(whole(None, size, "no known filesystem signature".into())),
        Probe::Invalid(reason) => return Ok(whole(None, size, reason)),
        Probe::Found(p) => p,
    };
    map_parsed(&dev, parsed)
}

/// Runs the used-block parser behind a probe result.
fn map_parsed(dev: &Dev, parsed: Parsed) -> io::Result<UsedMap> {
    let size = dev.size;
    let info = parsed.info().clone();
    let result = match &parsed {
        Parsed::Ext(sb) => sb.used(dev),
        Parsed::Fat(bs) => bs.used(dev),
        Parsed::ExFat(bs) => bs.used(dev),
        Parsed::Ntfs(bs) => bs.used(dev),
        Parsed::Swap(h) => h.used(dev),
        Parsed::Other(info) => Err(Fail::Bad(format!(
            "no used-block parser for {}; captured whole",
            info.kind
        ))),
    };
    match result {
        Ok(list) => {
            let extents = list.finish();
            let used_bytes = extents.iter().map(|e| e.len).sum();
            Ok(UsedMap {
                fs: Some(info),
                method: Method::UsedBlocks,
                extents,
                used_bytes,
            })
        }
        Err(Fail::Io(e)) => Err(e),
        Err(Fail::Bad(reason)) => {
            let reason = if matches!(parsed, Parsed::Other(_)) {
                reason
            } else {
                format!("{}: {reason}; captured whole", info.kind)
            };
            Ok(whole(Some(info), size, reason))
        }
    }
}

/// Entry points for the cargo-fuzz targets in `fuzz/`: one parser each, skipping the
/// other probes so the fuzzer spends its time inside that parser. Not API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    fn run(data: &[u8], probe: fn(&Dev) -> Result<Option<Parsed>, Fail>) {
        let dev = Dev::new(&data, data.len() as u64);
        if let Ok(Some(p)) = probe(&dev) {
            let m = map_parsed(&dev, p).expect("in-memory reads do not fail in range");
            let mut end = 0;
            for e in &m.extents {
                assert!(e.len > 0 && e.offset >= end && e.end() <= data.len() as u64);
                end = e.end() + 1;
            }
        }
    }

    pub fn ext(data: &[u8]) {
        run(data, |d| Ok(ext::probe(d)?.map(Parsed::Ext)));
    }

    pub fn fat(data: &[u8]) {
        run(data, |d| Ok(fat::probe(d)?.map(Parsed::Fat)));
    }

    pub fn exfat(data: &[u8]) {
        run(data, |d| Ok(exfat::probe(d)?.map(Parsed::ExFat)));
    }

    pub fn ntfs(data: &[u8]) {
        run(data, |d| Ok(ntfs::probe(d)?.map(Parsed::Ntfs)));
    }

    pub fn swap(data: &[u8]) {
        run(data, |d| Ok(swap::probe(d)?.map(Parsed::Swap)));
    }

    /// Everything a caller can reach: detection and dispatch.
    pub fn any(data: &[u8]) {
        let _ = detect(&data, data.len() as u64);
        let _ = used_map(&data, data.len() as u64);
    }
}

fn whole(fs: Option<FsInfo>, size: u64, reason: String) -> UsedMap {
    let extents = if size == 0 {
        Vec::new()
    } else {
        vec![Extent {
            offset: 0,
            len: size,
        }]
    };
    UsedMap {
        fs,
        method: Method::Whole { reason },
        extents,
        used_bytes: size,
    }
}

enum Parsed {
    Ext(ext::Superblock),
    Fat(fat::BootSector),
    ExFat(exfat::BootSector),
    Ntfs(ntfs::BootSector),
    Swap(swap::Header),
    Other(FsInfo),
}

impl Parsed {
    fn info(&self) -> &FsInfo {
        match self {
            Parsed::Ext(x) => &x.info,
            Parsed::Fat(x) => &x.info,
            Parsed::ExFat(x) => &x.info,
            Parsed::Ntfs(x) => &x.info,
            Parsed::Swap(x) => &x.info,
            Parsed::Other(info) => info,
        }
    }
}

enum Probe {
    Found(Parsed),
    /// A signature matched but the metadata around it did not hold up.
    Invalid(String),
    Nothing,
}

/// Tries every signature. Containers come first: LUKS, LVM and BitLocker sit at
/// offsets where a stale filesystem signature from before may survive, and a
/// container must never be mistaken for the filesystem it once replaced. FAT comes
/// last because it has no magic of its own, only a plausible BPB.
fn probe(dev: &Dev) -> io::Result<Probe> {
    type ProbeFn = fn(&Dev) -> Result<Option<Parsed>, Fail>;
    let probes: [(&str, ProbeFn); 8] = [
        ("container", |d| {
            Ok(other::probe_container(d)?.map(Parsed::Other))
        }),
        ("ntfs", |d| Ok(ntfs::probe(d)?.map(Parsed::Ntfs))),
        ("exfat", |d| Ok(exfat::probe(d)?.map(Parsed::ExFat))),
        ("swap", |d| Ok(swap::probe(d)?.map(Parsed::Swap))),
        ("ext", |d| Ok(ext::probe(d)?.map(Parsed::Ext))),
        ("xfs/btrfs", |d| Ok(other::probe_fs(d)?.map(Parsed::Other))),
        ("fat", |d| Ok(fat::probe(d)?.map(Parsed::Fat))),
        ("none", |_| Ok(None)),
    ];
    let mut invalid = None;
    for (name, f) in probes {
        match f(dev) {
            Ok(Some(p)) => return Ok(Probe::Found(p)),
            Ok(None) => {}
            Err(Fail::Io(e)) => return Err(e),
            Err(Fail::Bad(reason)) => {
                invalid.get_or_insert(format!(
                    "{name} signature found but its metadata is invalid: {reason}"
                ));
            }
        }
    }
    Ok(invalid.map_or(Probe::Nothing, Probe::Invalid))
}
