//! FAT12/16/32 from the file allocation table.
//!
//! Section references are to Microsoft's "FAT: General Overview of On-Disk Format"
//! (fatgen103, v1.03): §3.1-3.3 the BPB, §3.5 the type determination by cluster
//! count, §4 the FAT and its entry values, §6 the root directory.

use crate::extents::ExtentList;
use crate::util::{bad, ensure, latin_label, le16, le32, Dev, Fail, MAX_READ};
use crate::{FsInfo, FsKind};

pub(crate) struct BootSector {
    pub info: FsInfo,
    bps: u64,
    spc: u64,
    first_data_sector: u64,
    clusters: u64,
    fat_start: u64,
    /// FAT12/16: the fixed root directory region follows all FATs.
    root_start: u64,
    root_cluster: u64,
}

pub(crate) fn probe(dev: &Dev) -> Result<Option<BootSector>, Fail> {
    let Some(b) = dev.peek(0, 512)? else {
        return Ok(None);
    };
    // No magic of its own: accept a boot sector only when the jump, the signature and
    // every BPB field that has a fixed set of legal values (§3.1) agree.
    let bps = u64::from(le16(&b, 0x0B));
    let spc = u64::from(b[0x0D]);
    let reserved = u64::from(le16(&b, 0x0E));
    let nfats = u64::from(b[0x10]);
    let media = b[0x15];
    let plausible = (b[0] == 0xEB || b[0] == 0xE9)
        && b[510] == 0x55
        && b[511] == 0xAA
        && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && reserved >= 1
        && (1..=4).contains(&nfats)
        && (media == 0xF0 || media >= 0xF8);
    if !plausible {
        return Ok(None);
    }
    let root_entries = u64::from(le16(&b, 0x11));
    let tot16 = u64::from(le16(&b, 0x13));
    let fat16_size = u64::from(le16(&b, 0x16));
    let tot32 = u64::from(le32(&b, 0x20));
    let fat_size = if fat16_size != 0 {
        fat16_size
    } else {
        u64::from(le32(&b, 0x24))
    };
    let total = if tot16 != 0 { tot16 } else { tot32 };
    ensure!(fat_size > 0 && total > 0, "zero FAT size or sector count");
    // §3.5: the type follows from the count of data clusters, nothing else.
    let root_dir_sectors = (root_entries * 32).div_ceil(bps);
    let first_data_sector = reserved + nfats * fat_size + root_dir_sectors;
    ensure!(
        first_data_sector < total,
        "metadata ({first_data_sector} sectors) fills the whole {total}-sector volume"
    );
    let clusters = (total - first_data_sector) / spc;
    let kind = if clusters < 4085 {
        FsKind::Fat12
    } else if clusters < 65525 {
        FsKind::Fat16
    } else {
        FsKind::Fat32
    };
    let fs_bytes = total * bps;
    ensure!(
        fs_bytes <= dev.size,
        "filesystem ({fs_bytes} bytes) is larger than the partition ({} bytes)",
        dev.size
    );
    let (serial_at, label_at) = if kind == FsKind::Fat32 {
        ensure!(
            root_entries == 0 && fat16_size == 0,
            "FAT32 by cluster count but the BPB has a FAT12/16 root directory or FAT size"
        );
        (0x43, 0x47)
    } else {
        ensure!(root_entries > 0, "FAT12/16 without root directory entries");
        (0x27, 0x2B)
    };
    // §3.3 BPB_ExtFlags: with mirroring off, only the FAT numbered in bits 0-3 is live.
    let ext_flags = le16(&b, 0x28);
    let active = if kind == FsKind::Fat32 && ext_flags & 0x80 != 0 {
        u64::from(ext_flags & 0xF)
    } else {
        0
    };
    ensure!(active < nfats, "active FAT {active} of {nfats}");
    let fat_bytes = fat_size * bps;
    let entry_bits = match kind {
        FsKind::Fat12 => 12,
        FsKind::Fat16 => 16,
        _ => 32,
    };
    ensure!(
        (clusters + 2) * entry_bits <= fat_bytes * 8,
        "a {fat_bytes}-byte FAT cannot hold {clusters} clusters"
    );
    let root_cluster = if kind == FsKind::Fat32 {
        u64::from(le32(&b, 0x2C))
    } else {
        0
    };
    let mut bs = BootSector {
        info: FsInfo {
            kind,
            label: None,
            uuid: None,
            block_size: (spc * bps) as u32,
        },
        bps,
        spc,
        first_data_sector,
        clusters,
        fat_start: (reserved + active * fat_size) * bps,
        root_start: (reserved + nfats * fat_size) * bps,
        root_cluster,
    };
    // The boot sector's extended fields exist only with signature 0x29 (§3.2/§3.3).
    if b[serial_at - 1] == 0x29 {
        let serial = le32(&b, serial_at);
        bs.info.uuid = Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF));
        bs.info.label = fat_label(&b[label_at..label_at + 11]);
    }
    // libblkid prefers the volume-label entry of the root directory (§6: ATTR_VOLUME_ID)
    // over the BPB copy, which formatting tools often leave stale.
    if let Some(l) = bs.root_label(dev)? {
        bs.info.label = fat_label(&l);
    }
    Ok(Some(bs))
}

fn fat_label(b: &[u8]) -> Option<String> {
    latin_label(b).filter(|l| l != "NO NAME")
}

impl BootSector {
    fn cluster_offset(&self, n: u64) -> u64 {
        (self.first_data_sector + (n - 2) * self.spc) * self.bps
    }

    /// First sector (FAT12/16: the fixed root region; FAT32: the root's first cluster).
    fn root_label(&self, dev: &Dev) -> Result<Option<[u8; 11]>, Fail> {
        let (off, len) = if self.info.kind == FsKind::Fat32 {
            if self.root_cluster < 2 || self.root_cluster >= self.clusters + 2 {
                return Ok(None);
            }
            (self.cluster_offset(self.root_cluster), self.bps * self.spc)
        } else {
            (
                self.root_start,
                self.first_data_sector * self.bps - self.root_start,
            )
        };
        let dir = dev.read(off, len.min(MAX_READ as u64) as usize, "root directory")?;
        for e in dir.chunks_exact(32) {
            match e[0] {
                0 => break,
                0xE5 => continue,
                _ if e[11] & 0x3F == 0x08 => {
                    let mut l = [0u8; 11];
                    l.copy_from_slice(&e[..11]);
                    return Ok(Some(l));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    pub fn used(&self, dev: &Dev) -> Result<ExtentList, Fail> {
        let mut list = ExtentList::new(dev.size);
        // §3: reserved sectors (boot sector, FSInfo, backup boot), all FATs and the
        // FAT12/16 root directory precede the data area and are always in use.
        list.add(0, self.first_data_sector * self.bps);
        let kind = self.info.kind;
        let max = self.clusters + 1;
        let cluster_bytes = self.spc * self.bps;
        let check = |n: u64, v: u64, list: &mut ExtentList| -> Result<(), Fail> {
            // §4 entry values: 0 free, 2..=max next cluster, BAD, then end-of-chain.
            let (bad_mark, eoc) = match kind {
                FsKind::Fat12 => (0xFF7, 0xFF8),
                FsKind::Fat16 => (0xFFF7, 0xFFF8),
                _ => (0x0FFF_FFF7, 0x0FFF_FFF8),
            };
            if v == 0 || v == bad_mark {
                // Bad clusters hold no data and may not even read back.
                return Ok(());
            }
            ensure!(
                v >= eoc || (2..=max).contains(&v),
                "cluster {n} has FAT entry {v:#x}, neither a cluster nor end of chain"
            );
            list.add(self.cluster_offset(n), cluster_bytes);
            Ok(())
        };
        let entries = self.clusters + 2;
        if kind == FsKind::Fat12 {
            let need = (entries * 3).div_ceil(2);
            let fat = dev.read(self.fat_start, need as usize, "FAT")?;
            for n in 2..entries {
                let at = (n + n / 2) as usize;
                let pair = u64::from(le16(&fat, at));
                let v = if n % 2 == 0 { pair & 0xFFF } else { pair >> 4 };
                check(n, v, &mut list)?;
            }
        } else {
            let width = if kind == FsKind::Fat16 { 2 } else { 4 };
            let per_read = (MAX_READ / width) as u64;
            let mut n = 0u64;
            while n < entries {
                let count = per_read.min(entries - n);
                let fat = dev.read(
                    self.fat_start + n * width as u64,
                    (count as usize) * width,
                    "FAT",
                )?;
                for (i, e) in fat.chunks_exact(width).enumerate() {
                    let idx = n + i as u64;
                    if idx < 2 {
                        continue;
                    }
                    let v = if width == 2 {
                        u64::from(le16(e, 0))
                    } else {
                        // §4: the high 4 bits of a FAT32 entry are reserved.
                        u64::from(le32(e, 0) & 0x0FFF_FFFF)
                    };
                    check(idx, v, &mut list)?;
                }
                n += count;
            }
        }
        if kind == FsKind::Fat32 {
            ensure!(
                (2..=max).contains(&self.root_cluster),
                "root directory cluster {} outside the volume",
                self.root_cluster
            );
            let at = self.fat_start + self.root_cluster * 4;
            let e = dev.read(at, 4, "FAT")?;
            if le32(&e, 0) & 0x0FFF_FFFF == 0 {
                bad!(
                    "root directory cluster {} is free in the FAT",
                    self.root_cluster
                );
            }
        }
        Ok(list)
    }
}
