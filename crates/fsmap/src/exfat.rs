//! exFAT from its allocation bitmap.
//!
//! Section references are to Microsoft's "exFAT file system specification":
//! §3.1 Main Boot Sector, §3.4 Main and Backup Boot Checksum, §4 FAT region,
//! §6 directory structure, §7.1 Allocation Bitmap, §7.2 Up-case Table, §7.3 Volume
//! Label directory entries.

use crate::ext::add_bitmap;
use crate::extents::ExtentList;
use crate::util::{bad, ensure, le16, le32, le64, utf16_label, Dev, Fail, MAX_READ};
use crate::{FsInfo, FsKind};

/// §6: a directory is at most 256 MiB.
const MAX_DIR_BYTES: u64 = 256 << 20;

pub(crate) struct BootSector {
    pub info: FsInfo,
    bps: u64,
    cluster: u64,
    fat_offset: u64,
    fat_length: u64,
    heap_offset: u64,
    cluster_count: u64,
    root_cluster: u64,
    dirty: bool,
    /// What the root directory scan found, or why it failed (reported by `used`).
    root: Result<Root, String>,
}

#[derive(Default)]
struct Root {
    bitmap: Option<(u64, u64)>,
    upcase: Option<(u64, u64)>,
}

pub(crate) fn probe(dev: &Dev) -> Result<Option<BootSector>, Fail> {
    let Some(b) = dev.peek(0, 512)? else {
        return Ok(None);
    };
    if &b[3..11] != b"EXFAT   " {
        return Ok(None);
    }
    // §3.1.2 MustBeZero covers the FAT BPB, so FAT drivers leave the volume alone.
    ensure!(
        b[0x0B..0x40].iter().all(|&x| x == 0),
        "MustBeZero field is not zero"
    );
    ensure!(le16(&b, 510) == 0xAA55, "boot signature missing");
    let bps_shift = u32::from(b[0x6C]);
    let spc_shift = u32::from(b[0x6D]);
    // §3.1.14-15: 512..4096-byte sectors, clusters up to 32 MiB.
    ensure!(
        (9..=12).contains(&bps_shift),
        "bytes-per-sector shift {bps_shift}"
    );
    ensure!(
        spc_shift <= 25 - bps_shift,
        "sectors-per-cluster shift {spc_shift}"
    );
    let bps = 1u64 << bps_shift;
    let cluster = bps << spc_shift;
    let volume_length = le64(&b, 0x48);
    let fat_offset = u64::from(le32(&b, 0x50));
    let fat_length = u64::from(le32(&b, 0x54));
    let heap_offset = u64::from(le32(&b, 0x58));
    let cluster_count = u64::from(le32(&b, 0x5C));
    let root_cluster = u64::from(le32(&b, 0x60));
    let nfats = u64::from(b[0x6E]);
    let flags = le16(&b, 0x6A);
    // TexFAT's second FAT and bitmap pair (§3.1.16) is not supported.
    ensure!(nfats == 1, "{nfats} FATs (TexFAT) not supported");
    ensure!(
        volume_length
            .checked_mul(bps)
            .is_some_and(|v| v <= dev.size),
        "volume of {volume_length} sectors is larger than the partition ({} bytes)",
        dev.size
    );
    ensure!(
        fat_offset >= 24,
        "FAT at sector {fat_offset} overlaps the boot regions"
    );
    ensure!(
        heap_offset >= fat_offset + fat_length,
        "cluster heap at sector {heap_offset} overlaps the FAT"
    );
    ensure!(
        cluster_count <= 0xFFFF_FFF5 && heap_offset + (cluster_count << spc_shift) <= volume_length,
        "{cluster_count} clusters do not fit the volume"
    );
    ensure!(
        (cluster_count + 2) * 4 <= fat_length * bps,
        "a {fat_length}-sector FAT cannot hold {cluster_count} clusters"
    );
    ensure!(
        (2..cluster_count + 2).contains(&root_cluster),
        "root directory cluster {root_cluster} outside the heap"
    );
    check_boot_checksum(dev, bps)?;
    let serial = le32(&b, 0x64);
    let mut bs = BootSector {
        info: FsInfo {
            kind: FsKind::ExFat,
            label: None,
            uuid: Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)),
            block_size: cluster as u32,
        },
        bps,
        cluster,
        fat_offset,
        fat_length,
        heap_offset,
        cluster_count,
        root_cluster,
        // §3.1.13.2 VolumeDirty: metadata may be inconsistent.
        dirty: flags & 0x2 != 0,
        root: Err(String::new()),
    };
    bs.root = match bs.scan_root(dev) {
        Ok((root, label)) => {
            bs.info.label = label;
            Ok(root)
        }
        Err(Fail::Bad(reason)) => Err(reason),
        Err(Fail::Io(e)) => return Err(Fail::Io(e)),
    };
    Ok(Some(bs))
}

/// §3.4: sector 11 repeats a checksum of sectors 0..=10, skipping VolumeFlags and
/// PercentInUse (which change without rewriting the checksum).
fn check_boot_checksum(dev: &Dev, bps: u64) -> Result<(), Fail> {
    let region = dev.read(0, (12 * bps) as usize, "boot region")?;
    let mut sum = 0u32;
    for (i, &byte) in region[..(11 * bps) as usize].iter().enumerate() {
        if i == 106 || i == 107 || i == 112 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(byte));
    }
    for c in region[(11 * bps) as usize..].chunks_exact(4) {
        ensure!(
            le32(c, 0) == sum,
            "boot region checksum does not match ({:#x} != {sum:#x})",
            le32(c, 0)
        );
    }
    Ok(())
}

impl BootSector {
    fn cluster_offset(&self, n: u64) -> u64 {
        self.heap_offset * self.bps + (n - 2) * self.cluster
    }

    /// The clusters of a FAT chain from `first`, at most `max` of them (§4.1.2: the
    /// entry is the next cluster, 0xFFFFFFFF ends the chain).
    fn chain(&self, dev: &Dev, first: u64, max: u64, what: &str) -> Result<Vec<u64>, Fail> {
        let mut out = Vec::new();
        let mut n = first;
        let mut sector: Option<(u64, Vec<u8>)> = None;
        loop {
            ensure!(
                (2..self.cluster_count + 2).contains(&n),
                "{what}: cluster {n} outside the heap"
            );
            // Longer than the data needs means a loop or a corrupt chain.
            ensure!(
                (out.len() as u64) < max,
                "{what}: FAT chain longer than {max} clusters"
            );
            out.push(n);
            let at = self.fat_offset * self.bps + n * 4;
            let sec = at - at % self.bps;
            if sector.as_ref().map(|s| s.0) != Some(sec) {
                sector = Some((sec, dev.read(sec, self.bps as usize, "FAT")?));
            }
            let next = u64::from(le32(
                &sector.as_ref().expect("filled above").1,
                (at - sec) as usize,
            ));
            if next == 0xFFFF_FFFF {
                return Ok(out);
            }
            n = next;
        }
    }

    /// §6: walk the root directory for the bitmap, up-case table and label entries.
    fn scan_root(&self, dev: &Dev) -> Result<(Root, Option<String>), Fail> {
        let max = MAX_DIR_BYTES.div_ceil(self.cluster);
        let clusters = self.chain(dev, self.root_cluster, max, "root directory")?;
        let mut root = Root::default();
        let mut label = None;
        'outer: for c in clusters {
            let mut off = 0;
            while off < self.cluster {
                let len = (self.cluster - off).min(MAX_READ as u64);
                let buf = dev.read(self.cluster_offset(c) + off, len as usize, "root directory")?;
                for e in buf.chunks_exact(32) {
                    match e[0] {
                        0x00 => break 'outer, // §6.2.1.1: end of directory
                        0x81 if e[1] & 1 == 0 => {
                            root.bitmap = Some((u64::from(le32(e, 20)), le64(e, 24)));
                        }
                        0x82 => root.upcase = Some((u64::from(le32(e, 20)), le64(e, 24))),
                        0x83 => {
                            let n = usize::from(e[1]).min(11);
                            label = utf16_label(&e[2..24], n);
                        }
                        _ => {}
                    }
                }
                off += len;
            }
        }
        Ok((root, label))
    }

    pub fn used(&self, dev: &Dev) -> Result<ExtentList, Fail> {
        ensure!(
            !self.dirty,
            "volume is marked dirty; its bitmap may be stale"
        );
        let root = match &self.root {
            Ok(r) => r,
            Err(reason) => bad!("{reason}"),
        };
        let Some((bm_first, bm_len)) = root.bitmap else {
            bad!("no allocation bitmap entry in the root directory");
        };
        let Some((up_first, up_len)) = root.upcase else {
            bad!("no up-case table entry in the root directory");
        };
        // §7.1.5: the bitmap has one bit per heap cluster.
        let need = self.cluster_count.div_ceil(8);
        ensure!(
            bm_len >= need && bm_len <= need + self.cluster,
            "allocation bitmap is {bm_len} bytes, expected {need}"
        );
        ensure!(
            up_len > 0 && up_len <= 128 << 10,
            "up-case table of {up_len} bytes"
        );

        let mut list = ExtentList::new(dev.size);
        // §3: main and backup boot regions, 12 sectors each; §4: the FAT region.
        list.add(0, 24 * self.bps);
        list.add(self.fat_offset * self.bps, self.fat_length * self.bps);

        let chain_of = |first: u64, len: u64, what: &str| {
            self.chain(dev, first, len.div_ceil(self.cluster).max(1), what)
        };
        // These are allocated in the bitmap too; adding them explicitly keeps the
        // metadata captured even if a bit is wrong.
        for c in chain_of(up_first, up_len, "up-case table")? {
            list.add(self.cluster_offset(c), self.cluster);
        }
        let max_root = MAX_DIR_BYTES.div_ceil(self.cluster);
        for c in self.chain(dev, self.root_cluster, max_root, "root directory")? {
            list.add(self.cluster_offset(c), self.cluster);
        }
        let bm_clusters = chain_of(bm_first, bm_len, "allocation bitmap")?;
        let mut bit = 0u64;
        for c in bm_clusters {
            list.add(self.cluster_offset(c), self.cluster);
            let mut off = 0;
            while off < self.cluster && bit < self.cluster_count {
                let len = (self.cluster - off).min(MAX_READ as u64);
                let buf = dev.read(
                    self.cluster_offset(c) + off,
                    len as usize,
                    "allocation bitmap",
                )?;
                let nbits = (len * 8).min(self.cluster_count - bit);
                // Bit i is cluster i + 2 (§7.1.5).
                add_bitmap(
                    &mut list,
                    &buf,
                    nbits,
                    self.cluster_offset(2 + bit),
                    self.cluster,
                );
                off += len;
                bit += nbits;
            }
        }
        ensure!(
            bit == self.cluster_count,
            "allocation bitmap shorter than the heap"
        );
        Ok(list)
    }
}
