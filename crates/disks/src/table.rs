//! Partition tables (MBR with extended/logical partitions, GPT) read into our
//! own model, the byte areas outside partitions that capture must keep, and
//! the rewrite that fits a restored table to a disk of another size.
//!
//! The parser is our own rather than the `gpt`/`mbrman` crates' (which the
//! tests use to build disks): a table read here comes from any disk a
//! technician plugs in, and both crates trust it too far for that — `gpt`
//! allocates `entries × entry size` straight from the header (2^31 × 128
//! bytes aborts the process), checks the header CRC over a fixed 92 bytes and
//! never the entry array's CRC; `mbrman` follows an EBR chain without a hop
//! limit. Here every count, offset and link is bounded before it is used, and
//! hostile input yields a [`TableError`], never a panic or a hang.
//!
//! References: UEFI 2.10 §5.2 (legacy and protective MBR), §5.3 (GPT header
//! and entry array); Linux `block/partitions/msdos.c` (EBR chain) and
//! `efi.c` (header validation).

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

/// Which kind of partition table a disk carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    None,
    Mbr,
    Gpt,
}

/// One partition, numbered as Linux numbers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// 1-based; MBR primaries keep their slot number 1..=4, logicals count from 5.
    pub index: u32,
    /// Bytes from the start of the disk.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// `0x83` for MBR, the lower-case type GUID for GPT.
    pub type_id: String,
    /// A human name for common types ("Linux filesystem", "EFI System").
    pub type_name: String,
    /// GPT unique partition GUID.
    pub part_guid: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT attribute bits (UEFI §5.3.3 table 5.8); the MBR status byte.
    pub attributes: u64,
    /// MBR status 0x80, or GPT attribute bit 2 (legacy BIOS bootable).
    pub bootable: bool,
    /// An MBR logical partition (inside the extended partition).
    pub logical: bool,
}

impl Partition {
    /// First byte past the partition.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Where the GPT structures are, in LBAs of [`PartitionTable::sector_size`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptLayout {
    pub primary_entries_lba: u64,
    pub backup_header_lba: u64,
    pub backup_entries_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    /// True when the primary header or entries were damaged and the table
    /// was read from the backup.
    pub from_backup: bool,
}

impl GptLayout {
    /// Bytes of the entry array rounded up to whole sectors.
    pub fn entries_sectors(&self, sector_size: u32) -> u64 {
        (u64::from(self.entry_count) * u64::from(self.entry_size)).div_ceil(u64::from(sector_size))
    }
}

/// A partition table in our own model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Logical sector size the table was read with: the unit of its LBAs.
    pub sector_size: u32,
    /// GPT disk GUID, or the MBR disk signature as `0x1234abcd`.
    pub disk_guid: Option<String>,
    /// Data partitions in on-disk order of index; never the extended container.
    pub partitions: Vec<Partition>,
    /// A GPT disk whose MBR also lists partitions besides the 0xEE one
    /// (made by `gdisk`'s hybrid option for BIOS-only operating systems).
    pub hybrid_mbr: bool,
    /// MBR extended partition container, `(start, size)` in bytes.
    pub extended: Option<(u64, u64)>,
    /// Byte offsets of the EBRs, in chain order.
    pub ebrs: Vec<u64>,
    pub gpt: Option<GptLayout>,
    /// Things a person should know that did not stop the read ("primary GPT
    /// header damaged: read the backup").
    pub warnings: Vec<String>,
}

impl PartitionTable {
    fn empty(kind: TableKind, sector_size: u32) -> PartitionTable {
        PartitionTable {
            kind,
            sector_size,
            disk_guid: None,
            partitions: Vec::new(),
            hybrid_mbr: false,
            extended: None,
            ebrs: Vec::new(),
            gpt: None,
            warnings: Vec::new(),
        }
    }
}

/// Why a table could not be read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("sector size {0} is not a power of two between 512 and 65536")]
    BadSectorSize(u32),
    #[error("reading {len} bytes at offset {offset}: {source}")]
    Read {
        offset: u64,
        len: usize,
        source: io::Error,
    },
    #[error("writing {len} bytes at offset {offset}: {source}")]
    Write {
        offset: u64,
        len: usize,
        source: io::Error,
    },
    #[error("both GPT headers are unusable (primary: {primary}; backup: {backup})")]
    NoValidGpt { primary: String, backup: String },
    #[error("MBR partition {index} is malformed: {reason}")]
    BadMbrEntry { index: u32, reason: String },
    #[error("more than one extended partition in the MBR")]
    MultipleExtended,
    #[error("EBR at byte {offset} is invalid: {reason}")]
    BadEbr { offset: u64, reason: String },
    #[error("the EBR chain loops back to byte {offset}")]
    EbrLoop { offset: u64 },
    #[error("the EBR chain is longer than {0} links")]
    EbrChainTooLong(usize),
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
    #[error("partition {index} ends at byte {end}, past the end of the disk ({disk_size} bytes)")]
    PastEnd {
        index: u32,
        end: u64,
        disk_size: u64,
    },
    #[error("GPT partition {index} lies outside the usable LBAs {first}..={last}")]
    OutsideUsable { index: u32, first: u64, last: u64 },
    #[error(
        "partition {index} ends at LBA {end_lba}, past the last usable LBA {last_usable} of the \
         new disk"
    )]
    DoesNotFit {
        index: u32,
        end_lba: u64,
        last_usable: u64,
    },
}

/// Largest entry array we accept. UEFI requires at least 16 KiB; tools write
/// 16 KiB (128 × 128); a few write more. 4 MiB bounds memory on hostile input.
const MAX_GPT_ARRAY: u64 = 4 << 20;
/// Linux stops at DISK_MAX_PARTS (256) partitions; we stop the EBR chain there.
const MAX_EBR_HOPS: usize = 256;

fn rd<D: Read + Seek + ?Sized>(
    dev: &mut D,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, TableError> {
    let mut buf = vec![0u8; len];
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.read_exact(&mut buf))
        .map_err(|source| TableError::Read {
            offset,
            len,
            source,
        })?;
    Ok(buf)
}

fn wr<D: Write + Seek + ?Sized>(dev: &mut D, offset: u64, data: &[u8]) -> Result<(), TableError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.write_all(data))
        .map_err(|source| TableError::Write {
            offset,
            len: data.len(),
            source,
        })
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320) as UEFI §5.3.2 requires.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Formats a GUID stored mixed-endian (UEFI appendix A): the first three
/// fields little-endian, the rest as bytes.
pub fn guid_to_string(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// Human name of a GPT partition type GUID (any case); "unknown" otherwise.
pub fn gpt_type_name(guid: &str) -> &'static str {
    const NAMES: &[(&str, &str)] = &[
        ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"),
        ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
        (
            "024dee41-33e7-11d3-9d69-0008c781f39f",
            "MBR partition scheme",
        ),
        ("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"),
        ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
        ("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"),
        ("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"),
        (
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "Linux root (x86-64)",
        ),
        ("44479540-f297-41b2-9af7-d131d5f0458a", "Linux root (x86)"),
        ("b921b045-1df0-41c3-af44-4c6f280d3fae", "Linux root (ARM64)"),
        (
            "bc13c2ff-59e6-4262-a352-b275fd6f7172",
            "Linux extended boot",
        ),
        ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
        ("3b8f8425-20e0-4f3b-907f-1a25a76f98e8", "Linux server data"),
        ("ca7d7ccb-63ed-4c53-861c-1742536059cc", "Linux LUKS"),
        ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"),
        (
            "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
            "Microsoft basic data",
        ),
        (
            "de94bba4-06d1-4d40-a16a-bfd50179d6ac",
            "Windows recovery environment",
        ),
        (
            "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3",
            "Windows LDM metadata",
        ),
        ("af9b60a0-1431-4f62-bc68-3311714a69ad", "Windows LDM data"),
        (
            "e75caf8f-f680-4cee-afa3-b001e56efc2d",
            "Windows Storage Spaces",
        ),
        ("48465300-0000-11aa-aa11-00306543ecac", "Apple HFS+"),
        ("7c3457ef-0000-11aa-aa11-00306543ecac", "Apple APFS"),
        ("426f6f74-0000-11aa-aa11-00306543ecac", "Apple boot"),
        ("516e7cb4-6ecf-11d6-8ff8-00022d09712b", "FreeBSD UFS"),
        ("516e7cb5-6ecf-11d6-8ff8-00022d09712b", "FreeBSD swap"),
        ("516e7cba-6ecf-11d6-8ff8-00022d09712b", "FreeBSD ZFS"),
        ("83bd6b9d-7f41-11dc-be0b-001560b84f0f", "FreeBSD boot"),
        (
            "6a898cc3-1dd2-11b2-99a6-080020736631",
            "Solaris /usr or Apple ZFS",
        ),
        ("fe3a2a5d-4f32-41a7-b725-accc3285a309", "ChromeOS kernel"),
        ("3cb8e202-3b7e-47dd-8a3c-7ff2a13cfcec", "ChromeOS root"),
        ("9e1a2d38-c612-4316-aa26-8b49521e5a8b", "PowerPC PReP boot"),
    ];
    let g = guid.to_ascii_lowercase();
    NAMES
        .iter()
        .find(|(id, _)| *id == g)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// Human name of an MBR partition type byte; "unknown" otherwise.
pub fn mbr_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "empty",
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x05 => "Extended",
        0x07 => "NTFS/exFAT/HPFS",
        0x0b | 0x0c => "FAT32",
        0x0f => "Extended (LBA)",
        0x11 | 0x14 | 0x16 | 0x1e => "Hidden FAT12/16",
        0x12 => "OEM diagnostics/recovery",
        0x17 => "Hidden NTFS/exFAT",
        0x1b | 0x1c => "Hidden FAT32",
        0x27 => "Windows recovery environment",
        0x42 => "Windows dynamic disk (LDM)",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xaf => "Apple HFS/HFS+",
        0xde => "Dell utility",
        0xee => "GPT protective",
        0xef => "EFI System",
        0xfd => "Linux RAID autodetect",
        _ => "unknown",
    }
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// A raw MBR/EBR slot (UEFI §5.2.1 table 5.2): status, type, LBA start, sectors.
#[derive(Clone, Copy, Debug)]
struct MbrSlot {
    status: u8,
    kind: u8,
    start: u32,
    sectors: u32,
}

fn mbr_slots(sector: &[u8]) -> [MbrSlot; 4] {
    std::array::from_fn(|i| {
        let o = 446 + 16 * i;
        MbrSlot {
            status: sector[o],
            kind: sector[o + 4],
            start: le32(sector, o + 8),
            sectors: le32(sector, o + 12),
        }
    })
}

fn has_boot_signature(sector: &[u8]) -> bool {
    sector.len() >= 512 && sector[510] == 0x55 && sector[511] == 0xaa
}

/// A FAT or NTFS volume boot record carries 0x55AA too; it is a filesystem
/// on the whole disk, not a table (what Linux msdos.c's FAT check guards).
fn looks_like_volume_boot_record(sector: &[u8]) -> bool {
    &sector[3..11] == b"NTFS    "
        || &sector[3..11] == b"EXFAT   "
        || &sector[0x36..0x3b] == b"FAT12"
        || &sector[0x36..0x3b] == b"FAT16"
        || &sector[0x52..0x57] == b"FAT32"
}

/// Reads the partition table of a disk of `disk_size` bytes with logical
/// sectors of `sector_size` bytes. GPT is probed first (a GPT disk also
/// carries an MBR); a disk with neither yields `TableKind::None`.
pub fn read_table<D: Read + Seek + ?Sized>(
    dev: &mut D,
    disk_size: u64,
    sector_size: u32,
) -> Result<PartitionTable, TableError> {
    if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(TableError::BadSectorSize(sector_size));
    }
    let ss = u64::from(sector_size);
    if disk_size < 2 * ss {
        return Ok(PartitionTable::empty(TableKind::None, sector_size));
    }
    let mbr = rd(dev, 0, sector_size as usize)?;
    let mbr_valid = has_boot_signature(&mbr);
    let slots = mbr_slots(&mbr);
    let protective = mbr_valid && slots.iter().any(|s| s.kind == 0xee);
    let lba1 = rd(dev, ss, 8)?;
    if protective || lba1 == b"EFI PART" {
        let mut table = match read_gpt(dev, disk_size, sector_size) {
            Err(e @ TableError::NoValidGpt { .. }) => {
                gpt_of_other_sector_size(dev, disk_size, sector_size)?.ok_or(e)?
            }
            r => r?,
        };
        if protective {
            table.hybrid_mbr = slots.iter().any(|s| s.kind != 0xee && s.kind != 0);
        } else {
            table
                .warnings
                .push("GPT without a protective MBR: firmware may not boot it".into());
        }
        check_layout(&table, disk_size)?;
        return Ok(table);
    }
    if !mbr_valid || looks_like_volume_boot_record(&mbr) {
        return Ok(PartitionTable::empty(TableKind::None, sector_size));
    }
    let table = read_mbr(dev, &mbr, disk_size, sector_size)?;
    check_layout(&table, disk_size)?;
    Ok(table)
}

/// A GPT written for the other common sector size (512 or 4096 bytes) than the one
/// `sector_size` the device reports, read with its own, with a warning first among the
/// table's. That is a disk moved between a USB enclosure or adapter that presents 4 KiB
/// sectors and a direct connection with 512-byte ones (or back): its table still counts
/// the sectors it was written with, and every partition is where that size puts it.
/// None when there is no valid GPT at the other size either.
fn gpt_of_other_sector_size<D: Read + Seek + ?Sized>(
    dev: &mut D,
    disk_size: u64,
    sector_size: u32,
) -> Result<Option<PartitionTable>, TableError> {
    for alt in other_sector_sizes(sector_size) {
        let a = u64::from(alt);
        if disk_size < 2 * a || rd(dev, a, 8)? != b"EFI PART" {
            continue;
        }
        if let Ok(mut t) = read_gpt(dev, disk_size, alt) {
            say_counted_otherwise(&mut t, sector_size, "");
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// The common sector sizes (512 and 4096 bytes) other than the `reported` one that a
/// table may count in: a disk moved into or out of a USB enclosure that changes it.
pub fn other_sector_sizes(reported: u32) -> impl Iterator<Item = u32> {
    [512u32, 4096].into_iter().filter(move |&s| s != reported)
}

/// Puts first among `t`'s warnings that it was read with its own sector size, not the
/// `reported` one of the device; `why` says how that size was told (empty for a GPT,
/// whose headers tell it).
pub fn say_counted_otherwise(t: &mut PartitionTable, reported: u32, why: &str) {
    let kind = match t.kind {
        TableKind::Gpt => "GPT",
        TableKind::Mbr => "MBR",
        TableKind::None => "table",
    };
    let own = t.sector_size;
    t.warnings.insert(
        0,
        format!(
            "the {kind} counts {own}-byte sectors{why} but the device reports {reported}-byte \
             ones (a USB enclosure or adapter that changes the sector size?): it is read with \
             {own}-byte sectors, and restores onto a disk that has them"
        ),
    );
}

fn read_mbr<D: Read + Seek + ?Sized>(
    dev: &mut D,
    mbr: &[u8],
    disk_size: u64,
    sector_size: u32,
) -> Result<PartitionTable, TableError> {
    let ss = u64::from(sector_size);
    let mut t = PartitionTable::empty(TableKind::Mbr, sector_size);
    t.disk_guid = Some(format!("0x{:08x}", le32(mbr, 440)));
    let mut extended = None;
    for (i, s) in mbr_slots(mbr).iter().enumerate() {
        let index = i as u32 + 1;
        if s.status != 0 && s.status != 0x80 {
            return Err(TableError::BadMbrEntry {
                index,
                reason: format!("status byte 0x{:02x} is neither 0x00 nor 0x80", s.status),
            });
        }
        if s.kind == 0 || s.sectors == 0 {
            continue;
        }
        if s.start == 0 {
            return Err(TableError::BadMbrEntry {
                index,
                reason: "starts at LBA 0, over the MBR itself".into(),
            });
        }
        let start = u64::from(s.start) * ss;
        let size = u64::from(s.sectors) * ss;
        if is_extended(s.kind) {
            if extended.is_some() {
                return Err(TableError::MultipleExtended);
            }
            extended = Some((start, size));
            continue;
        }
        t.partitions
            .push(mbr_partition(index, s, start, size, false));
    }
    if let Some((ext_start, ext_size)) = extended {
        t.extended = Some((ext_start, ext_size));
        if ext_start + ext_size > disk_size {
            return Err(TableError::PastEnd {
                index: 0,
                end: ext_start + ext_size,
                disk_size,
            });
        }
        read_ebr_chain(dev, &mut t, ext_start, ext_size, ss)?;
    }
    Ok(t)
}

fn mbr_partition(index: u32, s: &MbrSlot, start: u64, size: u64, logical: bool) -> Partition {
    Partition {
        index,
        start,
        size,
        type_id: format!("0x{:02x}", s.kind),
        type_name: mbr_type_name(s.kind).into(),
        part_guid: None,
        name: None,
        attributes: u64::from(s.status),
        bootable: s.status == 0x80,
        logical,
    }
}

/// Follows the EBR chain (msdos.c `parse_extended`): each EBR's first slot
/// is a logical partition relative to that EBR, its second the next EBR
/// relative to the extended partition's start.
fn read_ebr_chain<D: Read + Seek + ?Sized>(
    dev: &mut D,
    t: &mut PartitionTable,
    ext_start: u64,
    ext_size: u64,
    ss: u64,
) -> Result<(), TableError> {
    let ext_end = ext_start + ext_size;
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    let mut index = 5;
    loop {
        if !seen.insert(ebr) {
            return Err(TableError::EbrLoop { offset: ebr });
        }
        if seen.len() > MAX_EBR_HOPS {
            return Err(TableError::EbrChainTooLong(MAX_EBR_HOPS));
        }
        if ebr + ss > ext_end {
            return Err(TableError::BadEbr {
                offset: ebr,
                reason: "lies outside the extended partition".into(),
            });
        }
        let sector = rd(dev, ebr, ss as usize)?;
        if !has_boot_signature(&sector) {
            // An extended partition with nothing in it yet (fdisk writes a
            // zeroed first EBR) is legal; a broken link further on is not.
            if ebr == ext_start {
                return Ok(());
            }
            return Err(TableError::BadEbr {
                offset: ebr,
                reason: "no 0x55AA signature".into(),
            });
        }
        t.ebrs.push(ebr);
        let slots = mbr_slots(&sector);
        let (logical, link) = (slots[0], slots[1]);
        if logical.kind != 0 && logical.sectors != 0 {
            let start = ebr + u64::from(logical.start) * ss;
            let size = u64::from(logical.sectors) * ss;
            if logical.start == 0 || start + size > ext_end {
                return Err(TableError::BadEbr {
                    offset: ebr,
                    reason: format!(
                        "logical partition {index} does not fit in the extended partition"
                    ),
                });
            }
            t.partitions
                .push(mbr_partition(index, &logical, start, size, true));
            index += 1;
        }
        if link.kind == 0 || link.start == 0 {
            return Ok(());
        }
        if !is_extended(link.kind) {
            return Err(TableError::BadEbr {
                offset: ebr,
                reason: format!(
                    "second slot has type 0x{:02x}, not an extended link",
                    link.kind
                ),
            });
        }
        ebr = ext_start + u64::from(link.start) * ss;
    }
}

/// A validated GPT header (UEFI §5.3.2 table 5.5), with its raw bytes kept
/// so a rewrite preserves fields we do not model.
#[derive(Clone, Debug)]
struct GptHeader {
    raw: Vec<u8>,
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn parse_gpt_header(sector: &[u8], lba: u64, disk_sectors: u64) -> Result<GptHeader, String> {
    if &sector[..8] != b"EFI PART" {
        return Err(format!("no \"EFI PART\" signature at LBA {lba}"));
    }
    let header_size = le32(sector, 12) as usize;
    if header_size < 92 || header_size > sector.len() {
        return Err(format!("header size {header_size} out of range"));
    }
    let mut raw = sector[..header_size].to_vec();
    let stored_crc = le32(&raw, 16);
    put32(&mut raw, 16, 0);
    if crc32(&raw) != stored_crc {
        return Err("header CRC mismatch".into());
    }
    put32(&mut raw, 16, stored_crc);
    let h = GptHeader {
        my_lba: le64(&raw, 24),
        alternate_lba: le64(&raw, 32),
        first_usable: le64(&raw, 40),
        last_usable: le64(&raw, 48),
        entries_lba: le64(&raw, 72),
        entry_count: le32(&raw, 80),
        entry_size: le32(&raw, 84),
        entries_crc: le32(&raw, 88),
        raw,
    };
    if h.my_lba != lba {
        return Err(format!(
            "header says it is at LBA {}, found at LBA {lba}",
            h.my_lba
        ));
    }
    if h.entry_size < 128 || !h.entry_size.is_power_of_two() {
        return Err(format!("entry size {} is not 128 × 2^n", h.entry_size));
    }
    let array = u64::from(h.entry_count) * u64::from(h.entry_size);
    if array > MAX_GPT_ARRAY {
        return Err(format!(
            "{} entries of {} bytes exceed the {} MiB limit",
            h.entry_count,
            h.entry_size,
            MAX_GPT_ARRAY >> 20
        ));
    }
    let ss = sector.len() as u64;
    let array_sectors = array.div_ceil(ss);
    if h.first_usable > h.last_usable || h.last_usable >= disk_sectors {
        return Err(format!(
            "usable LBAs {}..={} do not fit a disk of {disk_sectors} sectors",
            h.first_usable, h.last_usable
        ));
    }
    if h.entries_lba < 2 || h.entries_lba.saturating_add(array_sectors) > disk_sectors {
        return Err(format!(
            "entry array at LBA {} lies outside the disk",
            h.entries_lba
        ));
    }
    Ok(h)
}

/// Reads and checks the entry array of a valid header.
fn read_gpt_entries<D: Read + Seek + ?Sized>(
    dev: &mut D,
    h: &GptHeader,
    ss: u64,
) -> Result<Result<Vec<u8>, String>, TableError> {
    let len = h.entry_count as usize * h.entry_size as usize;
    let array = rd(dev, h.entries_lba * ss, len)?;
    if crc32(&array) != h.entries_crc {
        return Ok(Err("entry array CRC mismatch".into()));
    }
    Ok(Ok(array))
}

fn try_gpt_at<D: Read + Seek + ?Sized>(
    dev: &mut D,
    lba: u64,
    disk_sectors: u64,
    ss: u64,
) -> Result<Result<(GptHeader, Vec<u8>), String>, TableError> {
    let sector = match rd(dev, lba * ss, ss as usize) {
        Ok(s) => s,
        Err(TableError::Read { source, .. }) => return Ok(Err(format!("unreadable: {source}"))),
        Err(e) => return Err(e),
    };
    let h = match parse_gpt_header(&sector, lba, disk_sectors) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    Ok(read_gpt_entries(dev, &h, ss)?.map(|a| (h, a)))
}

fn read_gpt<D: Read + Seek + ?Sized>(
    dev: &mut D,
    disk_size: u64,
    sector_size: u32,
) -> Result<PartitionTable, TableError> {
    let ss = u64::from(sector_size);
    let disk_sectors = disk_size / ss;
    let mut t = PartitionTable::empty(TableKind::Gpt, sector_size);
    let primary = try_gpt_at(dev, 1, disk_sectors, ss)?;
    // The backup header is where the primary says, else on the last LBA.
    let backup_lba = match &primary {
        Ok((h, _)) if h.alternate_lba < disk_sectors => h.alternate_lba,
        _ => disk_sectors - 1,
    };
    let backup = try_gpt_at(dev, backup_lba, disk_sectors, ss)?;
    let (h, array, from_backup, backup_header) = match (primary, backup) {
        (Ok((h, a)), Ok((b, _))) => (h, a, false, Some(b)),
        (Ok((h, a)), Err(why)) => {
            t.warnings.push(format!(
                "backup GPT at LBA {backup_lba} is unusable ({why}); restore rewrites it"
            ));
            (h, a, false, None)
        }
        (Err(why), Ok((b, a))) => {
            t.warnings.push(format!(
                "primary GPT is unusable ({why}); read the backup GPT at LBA {backup_lba}"
            ));
            (b.clone(), a, true, Some(b))
        }
        (Err(primary), Err(backup)) => return Err(TableError::NoValidGpt { primary, backup }),
    };
    let entries_sectors = (u64::from(h.entry_count) * u64::from(h.entry_size)).div_ceil(ss);
    let (primary_entries_lba, backup_header_lba, backup_entries_lba) = if from_backup {
        (2, h.my_lba, h.entries_lba)
    } else {
        let bentries = backup_header
            .as_ref()
            .map(|b| b.entries_lba)
            .unwrap_or_else(|| h.alternate_lba.saturating_sub(entries_sectors));
        (h.entries_lba, h.alternate_lba, bentries)
    };
    t.disk_guid = Some(guid_to_string(&h.raw[56..72]));
    t.gpt = Some(GptLayout {
        primary_entries_lba,
        backup_header_lba,
        backup_entries_lba,
        first_usable_lba: h.first_usable,
        last_usable_lba: h.last_usable,
        entry_count: h.entry_count,
        entry_size: h.entry_size,
        from_backup,
    });
    for (i, e) in array.chunks_exact(h.entry_size as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let index = i as u32 + 1;
        let first = le64(e, 32);
        let last = le64(e, 40);
        if first < h.first_usable || last > h.last_usable || last < first {
            return Err(TableError::OutsideUsable {
                index,
                first: h.first_usable,
                last: h.last_usable,
            });
        }
        let type_id = guid_to_string(&e[..16]);
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16_lossy(&units);
        let attributes = le64(e, 48);
        t.partitions.push(Partition {
            index,
            start: first * ss,
            size: (last - first + 1) * ss,
            type_name: gpt_type_name(&type_id).into(),
            type_id,
            part_guid: Some(guid_to_string(&e[16..32])),
            name: (!name.is_empty()).then_some(name),
            attributes,
            bootable: attributes & (1 << 2) != 0,
            logical: false,
        });
    }
    Ok(t)
}

/// Rejects partitions past the end of the disk and overlapping partitions.
fn check_layout(t: &PartitionTable, disk_size: u64) -> Result<(), TableError> {
    for p in &t.partitions {
        if p.end() > disk_size {
            return Err(TableError::PastEnd {
                index: p.index,
                end: p.end(),
                disk_size,
            });
        }
    }
    let mut sorted: Vec<&Partition> = t.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for w in sorted.windows(2) {
        if w[1].start < w[0].end() {
            return Err(TableError::Overlap {
                a: w[0].index,
                b: w[1].index,
            });
        }
    }
    // Primaries must not overlap the extended container either.
    if let Some((es, esz)) = t.extended {
        for p in t.partitions.iter().filter(|p| !p.logical) {
            if p.start < es + esz && es < p.end() {
                return Err(TableError::Overlap { a: p.index, b: 0 });
            }
        }
    }
    Ok(())
}

/// A byte range outside all partitions that capture must keep whole.
pub type TableArea = (u64, u64, &'static str);

/// Every byte range outside partitions that a capture must store raw, in
/// disk order: the MBR sector (boot code, disk signature, table), the gap up
/// to the first partition (GRUB's core.img on MBR disks, vendor boot code),
/// GPT headers and entry arrays, and each EBR sector. Empty for `None`.
pub fn table_areas(t: &PartitionTable, disk_size: u64) -> Vec<TableArea> {
    let ss = u64::from(t.sector_size);
    let mut areas: Vec<TableArea> = Vec::new();
    if t.kind == TableKind::None {
        return areas;
    }
    areas.push((
        0,
        ss.min(disk_size),
        "MBR sector (boot code and partition table)",
    ));
    let mut table_end = ss;
    if let Some(g) = &t.gpt {
        let es = g.entries_sectors(t.sector_size);
        areas.push((ss, ss, "primary GPT header"));
        areas.push((g.primary_entries_lba * ss, es * ss, "primary GPT entries"));
        table_end = (g.primary_entries_lba + es) * ss;
    }
    let first_data = t
        .partitions
        .iter()
        .map(|p| p.start)
        .chain(t.extended.map(|e| e.0))
        .min()
        .unwrap_or(match &t.gpt {
            Some(g) => g.first_usable_lba * ss,
            None => (1u64 << 20).min(disk_size),
        });
    if first_data > table_end {
        areas.push((
            table_end,
            first_data - table_end,
            "gap before the first partition (boot loader area)",
        ));
    }
    for &e in &t.ebrs {
        areas.push((e, ss, "EBR (extended boot record)"));
    }
    if let Some(g) = &t.gpt {
        let es = g.entries_sectors(t.sector_size);
        if (g.backup_entries_lba + es) * ss <= disk_size {
            areas.push((g.backup_entries_lba * ss, es * ss, "backup GPT entries"));
        }
        if (g.backup_header_lba + 1) * ss <= disk_size {
            areas.push((g.backup_header_lba * ss, ss, "backup GPT header"));
        }
    }
    areas.sort_by_key(|a| a.0);
    areas
}

/// What [`relocate_gpt`] changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocated {
    /// New backup GPT header LBA (GPT only).
    pub backup_header_lba: Option<u64>,
    /// New last usable LBA (GPT only).
    pub last_usable_lba: Option<u64>,
    /// `(index, old size, new size)` in bytes of a grown partition.
    pub grown: Option<(u32, u64, u64)>,
}

/// Fits a freshly restored table to the disk it now lives on.
///
/// GPT (UEFI §5.3.2): the backup header and entries move to the end of the
/// new disk, the last usable LBA follows, CRCs are recomputed, the stale
/// backup header is zeroed, and a protective MBR's size field (UEFI §5.2.3)
/// is set to the new disk size (capped at 0xFFFFFFFF). With `grow_last` the
/// partition that ends last grows to the last usable LBA.
///
/// MBR: an extended container that runs past a smaller disk's end is cut
/// there (every EBR and logical must fit); `grow_last` extends the last
/// primary or logical partition (and the extended container and EBR link
/// that cover a logical) to the disk end, within the 2^32-sector limit of the
/// format.
///
/// The table is read with `old_disk_size` (where it was written); every
/// partition must end before the new disk's last usable sector.
pub fn relocate_gpt<D: Read + Write + Seek + ?Sized>(
    dev: &mut D,
    old_disk_size: u64,
    new_disk_size: u64,
    sector_size: u32,
    grow_last: bool,
) -> Result<Relocated, TableError> {
    let t = read_table(dev, old_disk_size, sector_size)?;
    match t.kind {
        TableKind::None => Ok(Relocated {
            backup_header_lba: None,
            last_usable_lba: None,
            grown: None,
        }),
        TableKind::Mbr => grow_mbr(dev, &t, new_disk_size, grow_last),
        TableKind::Gpt => relocate_gpt_inner(dev, &t, new_disk_size, grow_last),
    }
}

fn relocate_gpt_inner<D: Read + Write + Seek + ?Sized>(
    dev: &mut D,
    t: &PartitionTable,
    new_disk_size: u64,
    grow_last: bool,
) -> Result<Relocated, TableError> {
    let ss = u64::from(t.sector_size);
    let g = t.gpt.as_ref().expect("GPT table has a layout");
    let new_sectors = new_disk_size / ss;
    let es = g.entries_sectors(t.sector_size);
    let new_backup = new_sectors.saturating_sub(1);
    let new_backup_entries = new_backup.saturating_sub(es);
    let new_last_usable = new_backup_entries.saturating_sub(1);
    if new_last_usable < g.first_usable_lba {
        return Err(TableError::DoesNotFit {
            index: 0,
            end_lba: g.first_usable_lba,
            last_usable: new_last_usable,
        });
    }
    // The header to rewrite: the primary, or the backup when the primary was bad.
    let src_lba = if g.from_backup {
        g.backup_header_lba
    } else {
        1
    };
    let mut header = rd(dev, src_lba * ss, ss as usize)?;
    let header_size = le32(&header, 12) as usize;
    let src_entries = if g.from_backup {
        g.backup_entries_lba
    } else {
        g.primary_entries_lba
    };
    let mut array = rd(
        dev,
        src_entries * ss,
        (u64::from(g.entry_count) * u64::from(g.entry_size)) as usize,
    )?;

    for p in &t.partitions {
        let end_lba = p.end() / ss - 1;
        if end_lba > new_last_usable {
            return Err(TableError::DoesNotFit {
                index: p.index,
                end_lba,
                last_usable: new_last_usable,
            });
        }
    }
    let mut grown = None;
    if grow_last {
        if let Some(p) = t.partitions.iter().max_by_key(|p| p.end()) {
            let old_last = p.end() / ss - 1;
            if new_last_usable > old_last {
                let o = (p.index as usize - 1) * g.entry_size as usize;
                put64(&mut array, o + 40, new_last_usable);
                grown = Some((p.index, p.size, (new_last_usable + 1) * ss - p.start));
            }
        }
    }
    let entries_crc = crc32(&array);

    let seal = |h: &mut Vec<u8>, my: u64, alt: u64, entries: u64| {
        put64(h, 24, my);
        put64(h, 32, alt);
        put64(h, 48, new_last_usable);
        put64(h, 72, entries);
        put32(h, 88, entries_crc);
        put32(h, 16, 0);
        let c = crc32(&h[..header_size]);
        put32(h, 16, c);
    };
    let mut primary = header.clone();
    seal(&mut primary, 1, new_backup, g.primary_entries_lba);
    seal(&mut header, new_backup, 1, new_backup_entries);

    // Entries first, headers after: a crash in between leaves headers whose
    // entry CRC fails rather than headers pointing at garbage.
    wr(dev, g.primary_entries_lba * ss, &array)?;
    wr(dev, new_backup_entries * ss, &array)?;
    if g.backup_header_lba != new_backup && (g.backup_header_lba + 1) * ss <= new_disk_size {
        wr(dev, g.backup_header_lba * ss, &vec![0u8; ss as usize])?;
    }
    wr(dev, new_backup * ss, &header)?;
    wr(dev, ss, &primary)?;

    // Protective MBR: the 0xEE slot covers LBA 1 to the end (UEFI §5.2.3).
    // A hybrid MBR's 0xEE slot covers only part of the disk: left alone.
    if !t.hybrid_mbr {
        let mut mbr = rd(dev, 0, 512)?;
        if has_boot_signature(&mbr) {
            for i in 0..4 {
                let o = 446 + 16 * i;
                if mbr[o + 4] == 0xee && le32(&mbr, o + 8) == 1 {
                    let sectors = (new_sectors - 1).min(0xffff_ffff) as u32;
                    put32(&mut mbr, o + 12, sectors);
                }
            }
            wr(dev, 0, &mbr)?;
        }
    }
    dev.flush().map_err(|source| TableError::Write {
        offset: 0,
        len: 0,
        source,
    })?;
    Ok(Relocated {
        backup_header_lba: Some(new_backup),
        last_usable_lba: Some(new_last_usable),
        grown,
    })
}

fn grow_mbr<D: Read + Write + Seek + ?Sized>(
    dev: &mut D,
    t: &PartitionTable,
    new_disk_size: u64,
    grow_last: bool,
) -> Result<Relocated, TableError> {
    let ss = u64::from(t.sector_size);
    let new_sectors = (new_disk_size / ss).min(1 << 32);
    for p in &t.partitions {
        if p.end() > new_disk_size {
            return Err(TableError::DoesNotFit {
                index: p.index,
                end_lba: p.end() / ss - 1,
                last_usable: new_sectors - 1,
            });
        }
    }
    let mut out = Relocated {
        backup_header_lba: None,
        last_usable_lba: None,
        grown: None,
    };
    let new_end = new_sectors * ss;
    let mut extended = t.extended;
    if let Some((es, _)) = t.extended.filter(|(es, esz)| es + esz > new_end) {
        // fdisk makes the extended container span the rest of the disk, so on a
        // smaller disk it runs past the end although every logical fits: cut it
        // at the new end (Linux msdos.c would truncate it and warn; sfdisk
        // --verify calls it an error). Its first sector and every EBR must fit.
        if let Some(&e) = t.ebrs.iter().chain([&es]).find(|&&e| e + ss > new_end) {
            return Err(TableError::DoesNotFit {
                index: 0,
                end_lba: e / ss,
                last_usable: new_sectors - 1,
            });
        }
        let mut mbr = rd(dev, 0, ss as usize)?;
        for slot in 0..4 {
            let o = 446 + 16 * slot;
            if is_extended(mbr[o + 4]) && u64::from(le32(&mbr, o + 8)) * ss == es {
                put32(&mut mbr, o + 12, (new_sectors - es / ss) as u32);
            }
        }
        wr(dev, 0, &mbr)?;
        extended = Some((es, new_end - es));
    }
    let Some(last) = t
        .partitions
        .iter()
        .max_by_key(|p| p.end())
        .filter(|_| grow_last)
    else {
        return Ok(out);
    };
    if let Some((es, esz)) = extended {
        if !last.logical && es + esz > last.end() {
            // An (empty) extended container ends after the last data
            // partition: growing that partition would overlap it.
            return Ok(out);
        }
    }
    if new_end <= last.end() {
        return Ok(out);
    }
    let set_sectors = |sector: &mut Vec<u8>, slot: usize, start_lba: u64| {
        let o = 446 + 16 * slot;
        put32(sector, o + 12, (new_sectors - start_lba) as u32);
    };
    if last.logical {
        let (es, _) = t.extended.expect("logical partitions have a container");
        // The logical's own EBR is the one whose first slot describes it.
        let mut ebr_of_last = None;
        for (i, &e) in t.ebrs.iter().enumerate() {
            let sector = rd(dev, e, ss as usize)?;
            let s = mbr_slots(&sector)[0];
            if s.kind != 0 && e + u64::from(s.start) * ss == last.start {
                ebr_of_last = Some(i);
            }
        }
        let Some(i) = ebr_of_last else {
            return Ok(out);
        };
        let e = t.ebrs[i];
        let mut sector = rd(dev, e, ss as usize)?;
        set_sectors(&mut sector, 0, last.start / ss);
        wr(dev, e, &sector)?;
        if i > 0 {
            // The previous EBR's link slot spans this EBR to the logical's end.
            let prev = t.ebrs[i - 1];
            let mut sector = rd(dev, prev, ss as usize)?;
            set_sectors(&mut sector, 1, e / ss);
            wr(dev, prev, &sector)?;
        }
        let mut mbr = rd(dev, 0, ss as usize)?;
        for slot in 0..4 {
            let o = 446 + 16 * slot;
            if is_extended(mbr[o + 4]) && u64::from(le32(&mbr, o + 8)) * ss == es {
                set_sectors(&mut mbr, slot, es / ss);
            }
        }
        wr(dev, 0, &mbr)?;
    } else {
        let mut mbr = rd(dev, 0, ss as usize)?;
        set_sectors(&mut mbr, last.index as usize - 1, last.start / ss);
        wr(dev, 0, &mbr)?;
    }
    dev.flush().map_err(|source| TableError::Write {
        offset: 0,
        len: 0,
        source,
    })?;
    out.grown = Some((last.index, last.size, new_end - last.start));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;

    /// A GPT disk made by the `gpt` crate: ESP 8 MiB, root 16 MiB, rest free.
    fn gpt_disk(size: u64, lb: gpt::disk::LogicalBlockSize) -> Cursor<Vec<u8>> {
        let ss: u64 = lb.into();
        let mut mem = Cursor::new(vec![0u8; size as usize]);
        let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(size / ss - 1).unwrap());
        mbr.overwrite_lba0(&mut mem).unwrap();
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(lb)
            .create_from_device(mem, None)
            .unwrap();
        disk.add_partition("ESP", 8 * MIB, gpt::partition_types::EFI, 0, Some(MIB / ss))
            .unwrap();
        disk.add_partition(
            "root",
            16 * MIB,
            gpt::partition_types::LINUX_FS,
            1 << 2,
            Some(MIB / ss),
        )
        .unwrap();
        disk.write().unwrap()
    }

    fn check_gpt_disk(t: &PartitionTable, ss: u32) {
        assert_eq!(t.kind, TableKind::Gpt);
        assert_eq!(t.sector_size, ss);
        assert!(!t.hybrid_mbr);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.partitions.len(), 2);
        let esp = &t.partitions[0];
        assert_eq!(esp.index, 1);
        assert_eq!(esp.type_name, "EFI System");
        assert_eq!(esp.name.as_deref(), Some("ESP"));
        assert_eq!(esp.size, 8 * MIB);
        assert_eq!(esp.start % MIB, 0);
        let root = &t.partitions[1];
        assert_eq!(root.type_name, "Linux filesystem");
        assert!(root.bootable);
        assert_eq!(root.size, 16 * MIB);
    }

    #[test]
    fn gpt_with_512_byte_sectors_is_read() {
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb512);
        let t = read_table(&mut d, 64 * MIB, 512).unwrap();
        check_gpt_disk(&t, 512);
        let g = t.gpt.unwrap();
        assert_eq!(g.backup_header_lba, 64 * MIB / 512 - 1);
    }

    #[test]
    fn gpt_with_4096_byte_sectors_is_read() {
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb4096);
        let t = read_table(&mut d, 64 * MIB, 4096).unwrap();
        check_gpt_disk(&t, 4096);
    }

    #[test]
    fn a_gpt_of_the_other_sector_size_is_read_with_its_own_and_said() {
        // A 4 KiB-sector table on a device that reports 512 (a disk taken out of a
        // 4 KiB USB enclosure), and a 512-byte one on a device that reports 4096.
        for (written, reported) in [(4096u32, 512u32), (512, 4096)] {
            let lb = if written == 4096 {
                gpt::disk::LogicalBlockSize::Lb4096
            } else {
                gpt::disk::LogicalBlockSize::Lb512
            };
            let mut d = gpt_disk(64 * MIB, lb);
            let mut t = read_table(&mut d, 64 * MIB, reported).unwrap();
            let w = t.warnings.remove(0);
            assert!(
                w.contains(&format!("counts {written}-byte sectors"))
                    && w.contains(&format!("reports {reported}-byte")),
                "{w}"
            );
            check_gpt_disk(&t, written);
            assert_eq!(t.partitions[0].start, MIB);
        }
        // With no GPT at either size, the device's own size's error stands.
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb4096);
        d.get_mut()[4096..4104].copy_from_slice(b"NOT PART");
        let size = d.get_ref().len();
        d.get_mut()[size - 4096..size - 4088].copy_from_slice(b"NOT PART");
        assert!(matches!(
            read_table(&mut d, 64 * MIB, 512),
            Err(TableError::NoValidGpt { .. })
        ));
    }

    #[test]
    fn damaged_primary_gpt_falls_back_to_the_backup_and_says_so() {
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb512);
        d.get_mut()[512 + 40] ^= 0xff; // first usable LBA: CRC now fails
        let t = read_table(&mut d, 64 * MIB, 512).unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert!(t.gpt.as_ref().unwrap().from_backup);
        assert!(
            t.warnings[0].contains("primary GPT is unusable"),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn both_gpt_headers_damaged_is_an_error() {
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb512);
        d.get_mut()[512 + 40] ^= 0xff;
        let last = 64 * MIB as usize - 512;
        d.get_mut()[last + 40] ^= 0xff;
        let err = read_table(&mut d, 64 * MIB, 512).unwrap_err();
        assert!(matches!(err, TableError::NoValidGpt { .. }), "{err}");
    }

    /// Rewrites the primary header with `f` applied and a correct CRC.
    fn patch_primary(d: &mut Cursor<Vec<u8>>, f: impl Fn(&mut [u8])) {
        let b = d.get_mut();
        let h = &mut b[512..512 + 92];
        f(h);
        put32(h, 16, 0);
        let c = crc32(h);
        put32(h, 16, c);
    }

    #[test]
    fn gpt_entry_count_of_2_pow_31_is_refused_without_allocating() {
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb512);
        patch_primary(&mut d, |h| put32(h, 80, 1 << 31));
        let last = 64 * MIB as usize - 512;
        d.get_mut()[last..last + 8].copy_from_slice(b"XXXXXXXX");
        let err = read_table(&mut d, 64 * MIB, 512).unwrap_err();
        match err {
            TableError::NoValidGpt { primary, .. } => {
                assert!(primary.contains("2147483648"), "{primary}")
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn overlapping_gpt_partitions_are_refused() {
        let mut d = gpt_disk(64 * MIB, gpt::disk::LogicalBlockSize::Lb512);
        // Make entry 2 start inside entry 1, in both arrays, with good CRCs.
        let t = read_table(&mut d, 64 * MIB, 512).unwrap();
        let g = t.gpt.unwrap();
        for (hdr, arr) in [
            (1u64, g.primary_entries_lba),
            (g.backup_header_lba, g.backup_entries_lba),
        ] {
            let b = d.get_mut();
            let a = (arr * 512) as usize;
            let first1 = le64(b, a + 32);
            put64(b, a + 128 + 32, first1 + 8);
            let c = crc32(&b[a..a + 128 * 128]);
            let h = (hdr * 512) as usize;
            put32(b, h + 88, c);
            put32(b, h + 16, 0);
            let hc = crc32(&b[h..h + 92]);
            put32(b, h + 16, hc);
        }
        let err = read_table(&mut d, 64 * MIB, 512).unwrap_err();
        assert!(matches!(err, TableError::Overlap { a: 1, b: 2 }), "{err}");
    }

    fn mbr_sector(slots: &[(u8, u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for (i, &(status, kind, start, sectors)) in slots.iter().enumerate() {
            let o = 446 + 16 * i;
            s[o] = status;
            s[o + 4] = kind;
            put32(&mut s, o + 8, start);
            put32(&mut s, o + 12, sectors);
        }
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    fn disk_with(sectors: &[(u64, Vec<u8>)], size: u64) -> Cursor<Vec<u8>> {
        let mut v = vec![0u8; size as usize];
        for (lba, s) in sectors {
            let o = (*lba * 512) as usize;
            v[o..o + s.len()].copy_from_slice(s);
        }
        Cursor::new(v)
    }

    #[test]
    fn mbr_with_logical_partitions_is_read_in_linux_numbering() {
        // Primary 1 at 2048 (8 MiB), extended 2 from 18432 to the end,
        // three logicals each behind its EBR.
        let size = 64 * MIB;
        let mut sectors = vec![(
            0,
            mbr_sector(&[(0x80, 0x83, 2048, 16384), (0, 0x05, 18432, 112640)]),
        )];
        let ebrs = [18432u64, 40960, 61440];
        for (i, &e) in ebrs.iter().enumerate() {
            let next = ebrs
                .get(i + 1)
                .map(|n| (0, 0x05, (n - 18432) as u32, 20480))
                .unwrap_or((0, 0, 0, 0));
            sectors.push((e, mbr_sector(&[(0, 0x83, 2048, 16384), next])));
        }
        let mut d = disk_with(&sectors, size);
        let t = read_table(&mut d, size, 512).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        let idx: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
        assert_eq!(idx, [1, 5, 6, 7]);
        assert!(t.partitions[0].bootable);
        assert!(t.partitions[1].logical);
        assert_eq!(t.partitions[1].start, (18432 + 2048) * 512);
        assert_eq!(t.partitions[3].start, (61440 + 2048) * 512);
        assert_eq!(t.ebrs, ebrs.map(|e| e * 512));
        assert_eq!(t.extended, Some((18432 * 512, 112640 * 512)));

        let areas = table_areas(&t, size);
        assert_eq!(
            areas[0],
            (0, 512, "MBR sector (boot code and partition table)")
        );
        assert_eq!(areas[1].0, 512);
        assert_eq!(areas[1].1, 2048 * 512 - 512);
        assert_eq!(areas.iter().filter(|a| a.2.starts_with("EBR")).count(), 3);
    }

    #[test]
    fn ebr_loop_is_detected() {
        let size = 16 * MIB;
        let mut d = disk_with(
            &[
                (0, mbr_sector(&[(0, 0x05, 2048, 20000)])),
                (2048, mbr_sector(&[(0, 0x83, 1, 10), (0, 0x05, 100, 10)])),
                (2148, mbr_sector(&[(0, 0x83, 1, 10), (0, 0x05, 0x0, 0)])),
            ],
            size,
        );
        // Make the second EBR link back to the first (relative 0 ends a
        // chain, so link to itself at 100).
        let o = 2148 * 512 + 446 + 16;
        d.get_mut()[o + 4] = 0x05;
        put32(d.get_mut(), o + 8, 100);
        put32(d.get_mut(), o + 12, 10);
        let err = read_table(&mut d, size, 512).unwrap_err();
        assert!(matches!(err, TableError::EbrLoop { .. }), "{err}");
    }

    #[test]
    fn long_ebr_chain_stops_at_the_hop_limit() {
        let size = 8 * MIB;
        let n = 300u64;
        let mut sectors = vec![(0, mbr_sector(&[(0, 0x05, 2048, 2 * n as u32 + 10)]))];
        for i in 0..n {
            sectors.push((
                2048 + 2 * i,
                mbr_sector(&[(0, 0x83, 1, 1), (0, 0x05, 2 * (i + 1) as u32, 2)]),
            ));
        }
        let mut d = disk_with(&sectors, size);
        let err = read_table(&mut d, size, 512).unwrap_err();
        assert!(matches!(err, TableError::EbrChainTooLong(_)), "{err}");
    }

    #[test]
    fn mbr_partition_past_the_disk_end_is_refused() {
        let size = 8 * MIB;
        let mut d = disk_with(&[(0, mbr_sector(&[(0, 0x83, 2048, 1 << 20)]))], size);
        let err = read_table(&mut d, size, 512).unwrap_err();
        assert!(matches!(err, TableError::PastEnd { index: 1, .. }), "{err}");
    }

    #[test]
    fn overlapping_mbr_partitions_are_refused() {
        let size = 8 * MIB;
        let mut d = disk_with(
            &[(
                0,
                mbr_sector(&[(0, 0x83, 2048, 4096), (0, 0x83, 4000, 100)]),
            )],
            size,
        );
        assert!(matches!(
            read_table(&mut d, size, 512),
            Err(TableError::Overlap { .. })
        ));
    }

    #[test]
    fn blank_disk_and_fat_boot_sector_have_no_table() {
        let size = 4 * MIB;
        let mut d = Cursor::new(vec![0u8; size as usize]);
        let t = read_table(&mut d, size, 512).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert!(table_areas(&t, size).is_empty());
        let mut vbr = mbr_sector(&[]);
        vbr[0x52..0x57].copy_from_slice(b"FAT32");
        vbr[446] = 0x12; // boot code bytes where slot 1 would be
        let mut d = disk_with(&[(0, vbr)], size);
        assert_eq!(read_table(&mut d, size, 512).unwrap().kind, TableKind::None);
    }

    #[test]
    fn tiny_and_truncated_inputs_do_not_panic() {
        for len in [0usize, 1, 511, 512, 1023, 1024, 4096] {
            let mut d = Cursor::new(vec![0xffu8; len]);
            let _ = read_table(&mut d, len as u64, 512);
            let mut d = Cursor::new(vec![0u8; len]);
            let _ = read_table(&mut d, len as u64, 4096);
        }
        // Claimed size larger than the data: reads fail cleanly.
        let mut d = Cursor::new(mbr_sector(&[(0, 0x05, 1, 100)]));
        assert!(read_table(&mut d, 1 << 20, 512).is_err());
    }

    #[test]
    fn gpt_areas_cover_headers_entries_and_the_boot_gap() {
        let size = 64 * MIB;
        let mut d = gpt_disk(size, gpt::disk::LogicalBlockSize::Lb512);
        let t = read_table(&mut d, size, 512).unwrap();
        let areas = table_areas(&t, size);
        let whats: Vec<&str> = areas.iter().map(|a| a.2).collect();
        assert_eq!(
            whats,
            [
                "MBR sector (boot code and partition table)",
                "primary GPT header",
                "primary GPT entries",
                "gap before the first partition (boot loader area)",
                "backup GPT entries",
                "backup GPT header"
            ]
        );
        assert_eq!(areas[2], (1024, 16384, "primary GPT entries"));
        assert_eq!(areas[3].0 + areas[3].1, MIB);
        assert_eq!(areas[5].0, size - 512);
        // No area overlaps a partition.
        for a in &areas {
            for p in &t.partitions {
                assert!(
                    a.0 + a.1 <= p.start || a.0 >= p.end(),
                    "{a:?} overlaps {p:?}"
                );
            }
        }
    }

    #[test]
    fn gpt_relocated_to_a_larger_4k_disk_reads_back_with_the_last_partition_grown() {
        let old = 64 * MIB;
        let new = 96 * MIB;
        let mut d = gpt_disk(old, gpt::disk::LogicalBlockSize::Lb4096);
        d.get_mut().resize(new as usize, 0);
        let r = relocate_gpt(&mut d, old, new, 4096, true).unwrap();
        let nsec = new / 4096;
        assert_eq!(r.backup_header_lba, Some(nsec - 1));
        let t = read_table(&mut d, new, 4096).unwrap();
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let g = t.gpt.as_ref().unwrap();
        assert_eq!(g.backup_header_lba, nsec - 1);
        assert_eq!(g.last_usable_lba, r.last_usable_lba.unwrap());
        let root = &t.partitions[1];
        assert_eq!(root.end(), (g.last_usable_lba + 1) * 4096);
        assert_eq!(r.grown, Some((2, 16 * MIB, root.size)));
        // The `gpt` crate agrees, from both headers.
        let disk = gpt::GptConfig::new()
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb4096)
            .only_valid_headers(true)
            .open_from_device(&mut d)
            .unwrap();
        assert_eq!(disk.partitions().len(), 2);
        // Protective MBR covers the new disk.
        assert_eq!(le32(d.get_ref(), 446 + 12) as u64, nsec - 1);
    }

    #[test]
    fn mbr_last_logical_grows_with_its_container_and_link() {
        let size = 64 * MIB;
        let mut sectors = vec![(
            0,
            mbr_sector(&[(0, 0x83, 2048, 16384), (0, 0x05, 18432, 112640)]),
        )];
        sectors.push((
            18432,
            mbr_sector(&[(0, 0x83, 2048, 16384), (0, 0x05, 20480, 20480)]),
        ));
        sectors.push((38912, mbr_sector(&[(0, 0x83, 2048, 16384)])));
        let mut d = disk_with(&sectors, size);
        let new = 100 * MIB;
        d.get_mut().resize(new as usize, 0);
        let r = relocate_gpt(&mut d, size, new, 512, true).unwrap();
        assert_eq!(r.grown.map(|g| g.0), Some(6));
        let t = read_table(&mut d, new, 512).unwrap();
        assert_eq!(t.partitions.last().unwrap().end(), new);
        assert_eq!(t.extended.map(|e| e.0 + e.1), Some(new));
        // mbrman reads the same chain.
        d.set_position(0);
        let m = mbrman::MBR::read_from(&mut d, 512).unwrap();
        assert_eq!(m.logical_partitions.len(), 2);
        assert_eq!(
            u64::from(m.logical_partitions[1].partition.sectors) * 512,
            t.partitions.last().unwrap().size
        );
    }

    #[test]
    fn mbr_extended_container_past_a_smaller_disk_end_is_cut_there() {
        // fdisk's layout: the extended partition spans to the end of a 64 MiB
        // disk; its two logicals end at 38912 + 2048 + 8192 sectors (~24 MiB).
        let size = 64 * MIB;
        let sectors = vec![
            (
                0,
                mbr_sector(&[(0, 0x83, 2048, 16384), (0, 0x05, 18432, 112640)]),
            ),
            (
                18432,
                mbr_sector(&[(0, 0x83, 2048, 16384), (0, 0x05, 20480, 10240)]),
            ),
            (38912, mbr_sector(&[(0, 0x0b, 2048, 8192)])),
        ];
        let mut d = disk_with(&sectors, size);
        let new = 32 * MIB;
        let r = relocate_gpt(&mut d, size, new, 512, false).unwrap();
        assert_eq!(r.grown, None);
        d.get_mut().truncate(new as usize);
        let t = read_table(&mut d, new, 512).expect("the table fits the smaller disk");
        assert_eq!(t.extended, Some((18432 * 512, new - 18432 * 512)));
        assert_eq!(t.partitions.len(), 3);
        // Too small for the last EBR: refused before anything is written.
        let mut d = disk_with(&sectors, size);
        let err = relocate_gpt(&mut d, size, 38912 * 512, 512, false).unwrap_err();
        assert!(matches!(err, TableError::DoesNotFit { .. }), "{err}");
        assert_eq!(d.get_ref()[..512], sectors[0].1[..]);
    }

    #[test]
    fn relocation_refuses_a_disk_too_small_for_the_partitions() {
        let old = 64 * MIB;
        let mut d = gpt_disk(old, gpt::disk::LogicalBlockSize::Lb512);
        let err = relocate_gpt(&mut d, old, 20 * MIB, 512, false).unwrap_err();
        assert!(
            matches!(err, TableError::DoesNotFit { index: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }
}
