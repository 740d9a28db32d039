//! ext2/3/4 from the block group bitmaps.
//!
//! Field offsets and rules follow the kernel's Documentation/filesystems/ext4/
//! (super.rst, group_descr.rst, blockgroup.rst, inodes.rst, ifork.rst) and the code
//! they describe (fs/ext4/balloc.c: `ext4_init_block_bitmap`,
//! `ext4_num_base_meta_clusters`, `ext4_bg_has_super`; fs/ext4/super.c:
//! `descriptor_loc`, `ext4_group_desc_csum`).

use crate::extents::ExtentList;
use crate::util::{
    add, bad, ensure, latin_label, le16, le32, mul, uuid_string, Dev, Fail, MAX_READ,
};
use crate::{FsInfo, FsKind};

// Feature bits, super.rst "s_feature_*".
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Incompat features that change nothing about where blocks are or how the block
/// bitmaps are read. RECOVER and JOURNAL_DEV are understood but refused below.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_JOURNAL_DEV
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

const RO_SPARSE_SUPER: u32 = 0x1;
const RO_LARGE_FILE: u32 = 0x2;
const RO_BTREE_DIR: u32 = 0x4;
const RO_HUGE_FILE: u32 = 0x8;
const RO_GDT_CSUM: u32 = 0x10;
const RO_DIR_NLINK: u32 = 0x20;
const RO_EXTRA_ISIZE: u32 = 0x40;
const RO_QUOTA: u32 = 0x100;
const RO_METADATA_CSUM: u32 = 0x400;
const RO_READONLY: u32 = 0x1000;
const RO_PROJECT: u32 = 0x2000;
const RO_VERITY: u32 = 0x8000;
const RO_ORPHAN_PRESENT: u32 = 0x10000;
/// Read-only-compat features we know leave the block bitmaps one bit per block.
/// Notably absent: BIGALLOC (bitmaps count clusters), HAS_SNAPSHOT, REPLICA.
const RO_KNOWN: u32 = RO_SPARSE_SUPER
    | RO_LARGE_FILE
    | RO_BTREE_DIR
    | RO_HUGE_FILE
    | RO_GDT_CSUM
    | RO_DIR_NLINK
    | RO_EXTRA_ISIZE
    | RO_QUOTA
    | RO_METADATA_CSUM
    | RO_READONLY
    | RO_PROJECT
    | RO_VERITY
    | RO_ORPHAN_PRESENT;

/// group_descr.rst "bg_flags": the block bitmap was never written; its content is
/// defined by `ext4_init_block_bitmap` (the group's own metadata only).
const BG_BLOCK_UNINIT: u16 = 0x2;

/// Every extent-tree or indirect-block node visited while mapping the journal costs
/// one unit; a hostile tree cannot make us walk more than this.
const NODE_BUDGET: u64 = 1 << 16;

pub(crate) struct Superblock {
    pub info: FsInfo,
    block_size: u64,
    blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inode_size: u64,
    groups: u64,
    desc_size: u64,
    descs_per_block: u64,
    gdt_blocks: u64,
    reserved_gdt: u64,
    first_meta_bg: u64,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    backup_bgs: [u64; 2],
    journal_inum: u32,
    uuid: [u8; 16],
    csum_seed: u32,
}

struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
}

pub(crate) fn probe(dev: &Dev) -> Result<Option<Superblock>, Fail> {
    let Some(s) = dev.peek(1024, 1024)? else {
        return Ok(None);
    };
    if le16(&s, 0x38) != 0xEF53 {
        return Ok(None);
    }
    let log_block = le32(&s, 0x18);
    ensure!(log_block <= 6, "block size 2^(10+{log_block}) is not valid");
    let block_size = 1024u64 << log_block;
    let compat = le32(&s, 0x5C);
    let incompat = le32(&s, 0x60);
    let ro_compat = le32(&s, 0x64);
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let mut blocks_count = u64::from(le32(&s, 0x4));
    if is64 {
        blocks_count |= u64::from(le32(&s, 0x150)) << 32;
    }
    let first_data_block = u64::from(le32(&s, 0x14));
    let blocks_per_group = u64::from(le32(&s, 0x20));
    let inodes_per_group = u64::from(le32(&s, 0x28));
    let inodes_count = u64::from(le32(&s, 0x0));
    let rev = le32(&s, 0x4C);
    let inode_size = if rev == 0 {
        128
    } else {
        u64::from(le16(&s, 0x58))
    };
    // super.rst: s_first_data_block is 1 for 1 KiB blocks, else 0 (the superblock
    // always lives at byte 1024).
    ensure!(
        first_data_block <= 1 && (first_data_block == 0 || block_size == 1024),
        "first data block {first_data_block} with {block_size}-byte blocks"
    );
    ensure!(
        blocks_count > first_data_block,
        "block count {blocks_count} is too small"
    );
    // A group's block bitmap is one block, so it can describe at most 8 * block_size;
    // mke2fs refuses fewer than 256 per group, and the floor bounds the per-group work
    // (one bitmap block read per 256+ blocks) on hostile input.
    ensure!(
        blocks_per_group >= 256 && blocks_per_group <= 8 * block_size && blocks_per_group % 8 == 0,
        "{blocks_per_group} blocks per group with {block_size}-byte blocks"
    );
    ensure!(
        inodes_per_group >= 1 && inodes_per_group <= 8 * block_size,
        "{inodes_per_group} inodes per group"
    );
    ensure!(
        inode_size >= 128 && inode_size <= block_size && inode_size.is_power_of_two(),
        "inode size {inode_size}"
    );
    let desc_size = if is64 { u64::from(le16(&s, 0xFE)) } else { 32 };
    ensure!(
        (32..=1024).contains(&desc_size)
            && desc_size.is_power_of_two()
            && (!is64 || desc_size >= 64),
        "group descriptor size {desc_size}"
    );
    let fs_bytes = mul(blocks_count, block_size, "filesystem size")?;
    ensure!(
        fs_bytes <= dev.size,
        "filesystem ({fs_bytes} bytes) is larger than the partition ({} bytes)",
        dev.size
    );
    let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
    // The kernel refuses to mount when this does not hold (ext4_fill_super).
    ensure!(
        groups.checked_mul(inodes_per_group) == Some(inodes_count),
        "inode count {inodes_count} is not {groups} groups * {inodes_per_group}"
    );
    let descs_per_block = block_size / desc_size;
    let gdt_blocks = groups.div_ceil(descs_per_block);
    let first_meta_bg = u64::from(le32(&s, 0x104));
    if incompat & INCOMPAT_META_BG != 0 {
        ensure!(
            first_meta_bg <= gdt_blocks,
            "first_meta_bg {first_meta_bg} beyond {gdt_blocks} descriptor blocks"
        );
    }

    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&s[0x68..0x78]);
    if ro_compat & RO_METADATA_CSUM != 0 {
        // super.rst "s_checksum": crc32c over the superblock up to the checksum.
        let want = le32(&s, 0x3FC);
        let got = crc32c(!0, &s[..0x3FC]);
        ensure!(
            want == got,
            "superblock checksum {want:#x} does not match {got:#x}"
        );
    }
    let csum_seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
        le32(&s, 0x270)
    } else {
        crc32c(!0, &uuid)
    };
    let kind = kind_of(compat, incompat, ro_compat);
    Ok(Some(Superblock {
        info: FsInfo {
            kind,
            label: latin_label(&s[0x78..0x88]),
            uuid: uuid_string(&uuid),
            block_size: block_size as u32,
        },
        block_size,
        blocks_count,
        first_data_block,
        blocks_per_group,
        inodes_per_group,
        inode_size,
        groups,
        desc_size,
        descs_per_block,
        gdt_blocks,
        reserved_gdt: u64::from(le16(&s, 0xCE)),
        first_meta_bg,
        compat,
        incompat,
        ro_compat,
        backup_bgs: [u64::from(le32(&s, 0x24C)), u64::from(le32(&s, 0x250))],
        journal_inum: le32(&s, 0xE0),
        uuid,
        csum_seed,
    }))
}

/// libblkid's rule (superblocks/ext.c): ext2 and ext3 are the feature sets the old
/// drivers knew; anything beyond them is ext4; ext3 is ext2 with a journal.
fn kind_of(compat: u32, incompat: u32, ro_compat: u32) -> FsKind {
    let ro_ext3 = RO_SPARSE_SUPER | RO_LARGE_FILE | RO_BTREE_DIR;
    let inc_ext3 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
    let inc_ext2 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
    if ro_compat & !ro_ext3 != 0 || incompat & !inc_ext3 != 0 {
        FsKind::Ext4
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        FsKind::Ext3
    } else if incompat & !inc_ext2 != 0 {
        FsKind::Ext4
    } else {
        FsKind::Ext2
    }
}

impl Superblock {
    pub fn used(&self, dev: &Dev) -> Result<ExtentList, Fail> {
        let unknown = self.incompat & !INCOMPAT_KNOWN;
        ensure!(unknown == 0, "unknown incompatible features {unknown:#x}");
        let unknown = self.ro_compat & !RO_KNOWN;
        ensure!(
            unknown == 0,
            "read-only-compatible features {unknown:#x} not understood (e.g. bigalloc)"
        );
        ensure!(
            self.incompat & INCOMPAT_RECOVER == 0,
            "the journal needs recovery; its uncheckpointed blocks are not in the bitmaps"
        );
        ensure!(
            self.incompat & INCOMPAT_JOURNAL_DEV == 0,
            "this is an external journal device, not a filesystem"
        );

        let mut list = ExtentList::new(dev.size);
        // The boot block and the superblock (byte 1024) are used whatever the groups say.
        list.add(0, (self.first_data_block + 1) * self.block_size);

        let csum = self.ro_compat & (RO_GDT_CSUM | RO_METADATA_CSUM) != 0;
        let mut cache: Option<(u64, Vec<u8>)> = None;
        for g in 0..self.groups {
            let d = self.desc(dev, g, &mut cache)?;
            let first = self.group_first(g);
            let in_group = (self.blocks_count - first).min(self.blocks_per_group);

            // The group's own metadata is used whatever its bitmap says: this is what
            // ext4_init_block_bitmap marks for a BLOCK_UNINIT group, and marking it for
            // every group also covers the reserved GDT blocks of the resize inode.
            self.add_blocks(&mut list, first, self.base_meta_blocks(g), "group metadata")?;
            self.add_blocks(&mut list, d.block_bitmap, 1, "block bitmap")?;
            self.add_blocks(&mut list, d.inode_bitmap, 1, "inode bitmap")?;
            let itable = (self.inodes_per_group * self.inode_size).div_ceil(self.block_size);
            self.add_blocks(&mut list, d.inode_table, itable, "inode table")?;

            // The flag only means something with group descriptor checksums
            // (ext4_has_group_desc_csum); without them the kernel reads the bitmap.
            if csum && d.flags & BG_BLOCK_UNINIT != 0 {
                continue;
            }
            let bitmap = dev.read(
                d.block_bitmap * self.block_size,
                self.block_size as usize,
                "block bitmap",
            )?;
            add_bitmap(
                &mut list,
                &bitmap,
                in_group,
                first * self.block_size,
                self.block_size,
            );
        }
        if self.compat & COMPAT_HAS_JOURNAL != 0 && self.journal_inum != 0 {
            self.add_journal(dev, &mut list, &mut cache)?;
        }
        Ok(list)
    }

    fn group_first(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    fn has_meta_bg(&self) -> bool {
        self.incompat & INCOMPAT_META_BG != 0
    }

    /// `ext4_bg_has_super`: whether group `g` holds a superblock copy.
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g == 1 || self.ro_compat & RO_SPARSE_SUPER == 0 {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p *= base;
            }
            p == g
        })
    }

    /// `ext4_num_base_meta_clusters`: superblock copy, descriptor blocks and reserved
    /// GDT blocks at the start of group `g`.
    fn base_meta_blocks(&self, g: u64) -> u64 {
        let sup = u64::from(self.has_super(g));
        if !self.has_meta_bg() || g < self.first_meta_bg * self.descs_per_block {
            if sup == 0 {
                return 0;
            }
            let gdb = if self.has_meta_bg() {
                self.first_meta_bg
            } else {
                self.gdt_blocks
            };
            sup + gdb + self.reserved_gdt
        } else {
            // ext4_bg_num_gdb_meta: a meta group's descriptor block sits in its first,
            // second and last group.
            let first = g - g % self.descs_per_block;
            let last = first + self.descs_per_block - 1;
            sup + u64::from(g == first || g == first + 1 || g == last)
        }
    }

    /// `descriptor_loc`: the block holding descriptor block `n`.
    fn desc_block(&self, n: u64) -> u64 {
        if !self.has_meta_bg() || n < self.first_meta_bg {
            return self.first_data_block + n + 1;
        }
        let bg = self.descs_per_block * n;
        let mut sup = u64::from(self.has_super(bg));
        if bg == 0 && self.first_data_block == 0 && self.block_size == 1024 {
            sup += 1;
        }
        sup + self.group_first(bg)
    }

    fn desc(&self, dev: &Dev, g: u64, cache: &mut Option<(u64, Vec<u8>)>) -> Result<Desc, Fail> {
        let blk = self.desc_block(g / self.descs_per_block);
        ensure!(
            blk < self.blocks_count,
            "descriptor block {blk} of group {g} is past the filesystem end"
        );
        if cache.as_ref().map(|c| c.0) != Some(blk) {
            let b = dev.read(
                blk * self.block_size,
                self.block_size as usize,
                "group descriptors",
            )?;
            *cache = Some((blk, b));
        }
        let block = &cache.as_ref().expect("filled above").1;
        let at = ((g % self.descs_per_block) * self.desc_size) as usize;
        let raw = &block[at..at + self.desc_size as usize];
        self.check_desc_csum(g, raw)?;
        let hi = |off: usize| {
            if self.desc_size >= 64 {
                u64::from(le32(raw, off)) << 32
            } else {
                0
            }
        };
        let d = Desc {
            block_bitmap: u64::from(le32(raw, 0x0)) | hi(0x20),
            inode_bitmap: u64::from(le32(raw, 0x4)) | hi(0x24),
            inode_table: u64::from(le32(raw, 0x8)) | hi(0x28),
            flags: le16(raw, 0x12),
        };
        for (what, b) in [
            ("block bitmap", d.block_bitmap),
            ("inode bitmap", d.inode_bitmap),
            ("inode table", d.inode_table),
        ] {
            ensure!(
                b >= self.first_data_block && b < self.blocks_count,
                "group {g}: {what} at block {b} is outside the filesystem"
            );
        }
        Ok(d)
    }

    /// `ext4_group_desc_csum`: crc16 (gdt_csum) or the low half of crc32c
    /// (metadata_csum) over the group number and the descriptor, checksum field skipped.
    fn check_desc_csum(&self, g: u64, raw: &[u8]) -> Result<(), Fail> {
        let le_group = (g as u32).to_le_bytes();
        let want = le16(raw, 0x1E);
        let got = if self.ro_compat & RO_METADATA_CSUM != 0 {
            let mut c = crc32c(self.csum_seed, &le_group);
            c = crc32c(c, &raw[..0x1E]);
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, &raw[0x20..]);
            (c & 0xFFFF) as u16
        } else if self.ro_compat & RO_GDT_CSUM != 0 {
            let mut c = crc16(!0, &self.uuid);
            c = crc16(c, &le_group);
            c = crc16(c, &raw[..0x1E]);
            if self.incompat & INCOMPAT_64BIT != 0 {
                c = crc16(c, &raw[0x20..]);
            }
            c
        } else {
            return Ok(());
        };
        ensure!(
            want == got,
            "group {g} descriptor checksum {want:#06x} does not match {got:#06x}"
        );
        Ok(())
    }

    fn add_blocks(
        &self,
        list: &mut ExtentList,
        first: u64,
        n: u64,
        what: &str,
    ) -> Result<(), Fail> {
        let end = add(first, n, what)?;
        ensure!(
            end <= self.blocks_count,
            "{what} blocks {first}..{end} run past the filesystem end {}",
            self.blocks_count
        );
        list.add(first * self.block_size, n * self.block_size);
        Ok(())
    }

    /// The journal inode's blocks (inodes.rst "i_block", ifork.rst). They are allocated
    /// in the bitmaps of a consistent filesystem; walking them explicitly makes the
    /// journal's capture independent of that.
    fn add_journal(
        &self,
        dev: &Dev,
        list: &mut ExtentList,
        cache: &mut Option<(u64, Vec<u8>)>,
    ) -> Result<(), Fail> {
        let ino = u64::from(self.journal_inum);
        ensure!(
            ino <= self.groups * self.inodes_per_group,
            "journal inode {ino} does not exist"
        );
        let g = (ino - 1) / self.inodes_per_group;
        let idx = (ino - 1) % self.inodes_per_group;
        let d = self.desc(dev, g, cache)?;
        let at = d.inode_table * self.block_size + idx * self.inode_size;
        let inode = dev.read(at, 128, "journal inode")?;
        ensure!(
            le16(&inode, 0) & 0xF000 == 0x8000,
            "journal inode {ino} is not a regular file"
        );
        let size = u64::from(le32(&inode, 0x4)) | (u64::from(le32(&inode, 0x6C)) << 32);
        let blocks = size.div_ceil(self.block_size);
        ensure!(
            blocks <= self.blocks_count,
            "journal of {size} bytes is larger than the filesystem"
        );
        let i_block = &inode[0x28..0x64];
        let mut budget = NODE_BUDGET;
        const EXTENTS_FL: u32 = 0x80000;
        if le32(&inode, 0x20) & EXTENTS_FL != 0 {
            self.walk_extents(dev, list, i_block, None, &mut budget)
        } else {
            let mut left = blocks;
            for (i, p) in i_block.chunks_exact(4).enumerate() {
                let level = i.saturating_sub(11) as u32; // 0..11 direct, then 1, 2, 3
                self.walk_indirect(
                    dev,
                    list,
                    u64::from(le32(p, 0)),
                    level,
                    &mut left,
                    &mut budget,
                )?;
            }
            Ok(())
        }
    }

    fn walk_extents(
        &self,
        dev: &Dev,
        list: &mut ExtentList,
        node: &[u8],
        want_depth: Option<u16>,
        budget: &mut u64,
    ) -> Result<(), Fail> {
        ensure!(*budget > 0, "journal extent tree has too many nodes");
        *budget -= 1;
        // ifork.rst "Extent Tree": 12-byte header, then 12-byte entries.
        ensure!(
            le16(node, 0) == 0xF30A,
            "bad extent header magic in journal"
        );
        let entries = le16(node, 2) as usize;
        let depth = le16(node, 6);
        ensure!(
            12 + entries * 12 <= node.len(),
            "journal extent node claims {entries} entries"
        );
        ensure!(depth <= 5, "journal extent tree depth {depth}");
        if let Some(w) = want_depth {
            ensure!(
                depth == w,
                "journal extent node depth {depth}, expected {w}"
            );
        }
        for e in node[12..12 + entries * 12].chunks_exact(12) {
            if depth == 0 {
                let mut len = u64::from(le16(e, 4));
                if len > 32768 {
                    len -= 32768; // uninitialised extent; still allocated
                }
                let start = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
                self.add_blocks(list, start, len, "journal extent")?;
            } else {
                let leaf = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
                self.add_blocks(list, leaf, 1, "journal extent index")?;
                let child = dev.read(
                    leaf * self.block_size,
                    self.block_size as usize,
                    "journal extent node",
                )?;
                self.walk_extents(dev, list, &child, Some(depth - 1), budget)?;
            }
        }
        Ok(())
    }

    /// Old-style block map: `level` 0 is a data block, 1..3 single to triple indirect.
    fn walk_indirect(
        &self,
        dev: &Dev,
        list: &mut ExtentList,
        block: u64,
        level: u32,
        left: &mut u64,
        budget: &mut u64,
    ) -> Result<(), Fail> {
        if block == 0 || *left == 0 {
            return Ok(());
        }
        self.add_blocks(list, block, 1, "journal block")?;
        if level == 0 {
            *left -= 1;
            return Ok(());
        }
        ensure!(
            *budget > 0,
            "journal block map has too many indirect blocks"
        );
        *budget -= 1;
        debug_assert!(self.block_size as usize <= MAX_READ);
        let b = dev.read(
            block * self.block_size,
            self.block_size as usize,
            "journal indirect block",
        )?;
        for p in b.chunks_exact(4) {
            if *left == 0 {
                break;
            }
            self.walk_indirect(dev, list, u64::from(le32(p, 0)), level - 1, left, budget)?;
        }
        Ok(())
    }
}

/// Adds the runs of set bits among the first `nbits` of `bitmap` (LSB first, as ext4,
/// exFAT and NTFS all store them), bit `i` standing for the `unit` bytes at
/// `base + i * unit`.
pub(crate) fn add_bitmap(list: &mut ExtentList, bitmap: &[u8], nbits: u64, base: u64, unit: u64) {
    let nbits = nbits.min(bitmap.len() as u64 * 8);
    let mut run: Option<u64> = None;
    let mut i = 0u64;
    let flush = |list: &mut ExtentList, run: &mut Option<u64>, end: u64| {
        if let Some(s) = run.take() {
            list.add(
                base.saturating_add(s.saturating_mul(unit)),
                (end - s).saturating_mul(unit),
            );
        }
    };
    while i < nbits {
        let byte = bitmap[(i / 8) as usize];
        if i & 7 == 0 && i + 8 <= nbits && (byte == 0 || byte == 0xFF) {
            if byte == 0 {
                flush(list, &mut run, i);
            } else if run.is_none() {
                run = Some(i);
            }
            i += 8;
            continue;
        }
        if byte >> (i % 8) & 1 == 1 {
            if run.is_none() {
                run = Some(i);
            }
        } else {
            flush(list, &mut run, i);
        }
        i += 1;
    }
    flush(list, &mut run, nbits);
}

/// CRC-32C (Castagnoli, reflected 0x82F63B78) without pre/post inversion, the way
/// the kernel's `ext4_chksum` chains it.
pub(crate) fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// The kernel's lib/crc16.c: reflected 0x8005 (0xA001), no inversion.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xA001 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The catalogued CRC-32C check: "123456789" with init and final inversion.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc16_matches_the_arc_check_value() {
        // CRC-16/ARC ("123456789", init 0) is 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    #[test]
    fn bitmap_runs_become_extents() {
        let mut l = ExtentList::new(1 << 20);
        // bits 0-2, 8-23, 30 set; only the first 31 bits count.
        add_bitmap(&mut l, &[0x07, 0xFF, 0xFF, 0xC0, 0xFF], 31, 40, 4);
        let got = l.finish();
        let want = [(40, 12), (72, 64), (160, 4)];
        assert_eq!(
            got.iter().map(|e| (e.offset, e.len)).collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn sparse_super_backups_are_in_groups_0_1_and_powers_of_3_5_7() {
        let sb = Superblock {
            info: FsInfo {
                kind: FsKind::Ext4,
                label: None,
                uuid: None,
                block_size: 4096,
            },
            block_size: 4096,
            blocks_count: 1 << 30,
            first_data_block: 0,
            blocks_per_group: 32768,
            inodes_per_group: 8192,
            inode_size: 256,
            groups: 32768,
            desc_size: 64,
            descs_per_block: 64,
            gdt_blocks: 512,
            reserved_gdt: 0,
            first_meta_bg: 0,
            compat: 0,
            incompat: 0,
            ro_compat: RO_SPARSE_SUPER,
            backup_bgs: [0, 0],
            journal_inum: 0,
            uuid: [0; 16],
            csum_seed: 0,
        };
        let with: Vec<u64> = (0..400).filter(|&g| sb.has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }
}
