//! Hostile and corrupt input: every case must end in a whole-partition capture with a
//! reason that names the problem, never a panic, a hang or a huge allocation.

mod common;

use common::*;
use fsmap::{used_map, FsKind, Method, UsedMap};

const MIB: u64 = 1 << 20;

fn map(buf: &[u8]) -> UsedMap {
    let m = used_map(&buf, buf.len() as u64).unwrap();
    check_shape(&m.extents, buf.len() as u64);
    m
}

fn assert_whole(m: &UsedMap, needle: &str) {
    match &m.method {
        Method::Whole { reason } => assert!(
            reason.contains(needle),
            "reason {reason:?} does not mention {needle:?}"
        ),
        Method::UsedBlocks => panic!("expected a whole-partition fallback ({needle})"),
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// A hand-built FAT16 volume: 512-byte sectors, one sector per cluster, 1 reserved
/// sector, 2 FATs of 17 sectors, a one-sector root directory, 4200 clusters.
fn fat16() -> Vec<u8> {
    let total = 1 + 2 * 17 + 1 + 4200;
    let mut b = vec![0u8; total * 512];
    b[0] = 0xEB;
    b[1] = 0x3C;
    b[2] = 0x90;
    b[3..11].copy_from_slice(b"IMPRINT ");
    put16(&mut b, 0x0B, 512);
    b[0x0D] = 1;
    put16(&mut b, 0x0E, 1);
    b[0x10] = 2;
    put16(&mut b, 0x11, 16);
    put16(&mut b, 0x13, total as u16);
    b[0x15] = 0xF8;
    put16(&mut b, 0x16, 17);
    b[0x26] = 0x29;
    put32(&mut b, 0x27, 0xDEAD_BEEF);
    b[0x2B..0x36].copy_from_slice(b"HANDMADE   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    for fat in 0..2 {
        let f = 512 * (1 + 17 * fat);
        put16(&mut b, f, 0xFFF8);
        put16(&mut b, f + 2, 0xFFFF);
        // A three-cluster file at 10..=12 and a one-cluster file at 100.
        put16(&mut b, f + 20, 11);
        put16(&mut b, f + 22, 12);
        put16(&mut b, f + 24, 0xFFFF);
        put16(&mut b, f + 200, 0xFFFF);
    }
    b
}

#[test]
fn hand_built_fat16_maps_metadata_and_allocated_clusters() {
    let m = map(&fat16());
    assert_eq!(m.method, Method::UsedBlocks);
    let fs = m.fs.unwrap();
    assert_eq!(fs.kind, FsKind::Fat16);
    assert_eq!(fs.uuid.as_deref(), Some("DEAD-BEEF"));
    assert_eq!(fs.label.as_deref(), Some("HANDMADE"));
    let data = 36 * 512;
    let got: Vec<(u64, u64)> = m.extents.iter().map(|e| (e.offset, e.len)).collect();
    assert_eq!(
        got,
        [(0, data), (data + 8 * 512, 3 * 512), (data + 98 * 512, 512)]
    );
}

#[test]
fn fat_entry_pointing_past_the_last_cluster_falls_back() {
    let mut b = fat16();
    put16(&mut b, 512 + 22, 4300); // cluster 11 -> 4300, beyond 4201
    assert_whole(&map(&b), "neither a cluster nor end of chain");
}

#[test]
fn fat_volume_larger_than_its_partition_falls_back() {
    let b = fat16();
    let cut = &b[..b.len() - 512];
    assert_whole(&map(cut), "larger than the partition");
}

#[test]
fn fat_with_absurd_sector_counts_falls_back() {
    let mut b = fat16();
    put16(&mut b, 0x13, 0);
    put32(&mut b, 0x20, u32::MAX);
    assert_whole(&map(&b), "larger than the partition");
    let mut b = fat16();
    put16(&mut b, 0x16, u16::MAX); // FATs bigger than the volume
    assert_whole(&map(&b), "fills the whole");
}

#[test]
fn empty_and_tiny_partitions_are_whole_without_panic() {
    for n in [0usize, 1, 511, 512, 1024, 2048, 4095, 4096, 70_000] {
        let m = map(&vec![0u8; n]);
        assert_eq!(m.used_bytes, n as u64);
        assert!(matches!(m.method, Method::Whole { .. }));
    }
}

#[test]
fn containers_are_labelled_and_captured_whole() {
    let mut luks = vec![0u8; 1 << 20];
    luks[0..6].copy_from_slice(b"LUKS\xba\xbe");
    luks[7] = 2;
    luks[24..29].copy_from_slice(b"vault");
    luks[168..204].copy_from_slice(b"6b1e2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e");
    let m = map(&luks);
    let fs = m.fs.clone().unwrap();
    assert_eq!(fs.kind, FsKind::Luks);
    assert_eq!(fs.kind.name(), "crypto_LUKS");
    assert_eq!(fs.label.as_deref(), Some("vault"));
    assert_eq!(
        fs.uuid.as_deref(),
        Some("6b1e2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e")
    );
    assert_whole(&m, "no used-block parser for crypto_LUKS; captured whole");

    let mut lvm = vec![0u8; 1 << 20];
    lvm[512..520].copy_from_slice(b"LABELONE");
    lvm[512 + 20] = 32;
    lvm[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
    lvm[512 + 32..512 + 64].copy_from_slice(b"abcdefghijklmnopqrstuvwxyz012345");
    let m = map(&lvm);
    assert_eq!(m.fs.as_ref().unwrap().kind, FsKind::Lvm);
    assert_eq!(
        m.fs.as_ref().unwrap().uuid.as_deref(),
        Some("abcdef-ghij-klmn-opqr-stuv-wxyz-012345")
    );
    assert_whole(&m, "LVM2_member");

    let mut bl = vec![0u8; 1 << 20];
    bl[3..11].copy_from_slice(b"-FVE-FS-");
    assert_whole(&map(&bl), "BitLocker");

    let mut btrfs = vec![0u8; 1 << 20];
    btrfs[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
    btrfs[0x1012B..0x1012F].copy_from_slice(b"root");
    let m = map(&btrfs);
    assert_eq!(m.fs.as_ref().unwrap().label.as_deref(), Some("root"));
    assert_whole(&m, "no used-block parser for btrfs");

    let mut xfs = vec![0u8; 1 << 20];
    xfs[0..4].copy_from_slice(b"XFSB");
    assert_whole(&map(&xfs), "no used-block parser for xfs");
}

/// A small ext4 without checksums, so single fields can be corrupted without the
/// checksum check catching it first.
fn ext4_plain(extra: &[&str]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, 1, 64 << 10);
    let img = random_image(tmp.path(), "e.img", 16 * MIB, 2);
    let mut args = vec!["-q", "-F", "-b", "1024", "-d", tree.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(img.to_str().unwrap());
    run("mkfs.ext4", &args);
    std::fs::read(&img).unwrap()
}

const SB: usize = 1024;

/// Offset of group `g`'s descriptor in a 1 KiB-block image (table in block 2).
fn desc(b: &[u8], g: usize) -> usize {
    let size = if le32(b, SB + 0x60) & 0x80 != 0 {
        le16(b, SB + 0xFE) as usize
    } else {
        32
    };
    2048 + g * size
}

#[test]
fn ext_bitmap_pointing_past_the_partition_falls_back() {
    let mut b = ext4_plain(&["-O", "^metadata_csum,^uninit_bg"]);
    assert_eq!(map(&b).method, Method::UsedBlocks);
    let d = desc(&b, 1);
    put32(&mut b, d, 0x7FFF_FFFF); // group 1's block bitmap
    assert_whole(&map(&b), "outside the filesystem");
}

#[test]
fn ext_descriptor_checksum_mismatch_falls_back() {
    let mut b = ext4_plain(&[]);
    assert_eq!(map(&b).method, Method::UsedBlocks);
    let d = desc(&b, 1);
    b[d + 0x12] ^= 0x2; // flip BLOCK_UNINIT in group 1
    assert_whole(&map(&b), "descriptor checksum");
}

#[test]
fn ext_absurd_counts_fall_back() {
    let base = ext4_plain(&["-O", "^metadata_csum,^uninit_bg"]);
    let cases: [(usize, u32, &str); 5] = [
        (0x20, u32::MAX, "blocks per group"),
        (0x20, 0, "blocks per group"),
        (0x04, u32::MAX, "larger than the partition"),
        (0x18, 40, "block size"),
        (0x28, 0, "inodes per group"),
    ];
    for (at, v, needle) in cases {
        let mut b = base.clone();
        put32(&mut b, SB + at, v);
        assert_whole(&map(&b), needle);
    }
}

#[test]
fn ext_features_not_understood_fall_back() {
    let base = ext4_plain(&["-O", "^metadata_csum,^uninit_bg"]);
    let incompat = le32(&base, SB + 0x60);
    let mut b = base.clone();
    put32(&mut b, SB + 0x60, incompat | 0x4); // RECOVER
    assert_whole(&map(&b), "needs recovery");
    let mut b = base.clone();
    put32(&mut b, SB + 0x60, incompat | 0x4000_0000);
    assert_whole(&map(&b), "unknown incompatible features");
    let ro = le32(&base, SB + 0x64);
    let mut b = base.clone();
    put32(&mut b, SB + 0x64, ro | 0x200); // BIGALLOC
    assert_whole(&map(&b), "bigalloc");
}

#[test]
fn ext_truncated_partition_falls_back() {
    let b = ext4_plain(&[]);
    assert_whole(&map(&b[..b.len() / 2]), "larger than the partition");
}

fn ntfs_image() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let img = random_image(tmp.path(), "n.img", 16 * MIB, 3);
    run(
        "mkntfs",
        &["-F", "-Q", "-L", "HOSTILE", img.to_str().unwrap()],
    );
    std::fs::read(&img).unwrap()
}

/// Byte offset of MFT record `n`, assuming the first records are contiguous (mkntfs).
fn mft_record(b: &[u8], n: usize) -> usize {
    let bps = le16(b, 0x0B) as usize;
    let cluster = bps * b[0x0D] as usize;
    let lcn = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) as usize;
    let rec = 1usize << (-(b[0x40] as i8) as u32);
    lcn * cluster + n * rec
}

/// Offset of the first attribute of `ty` in the record at `rec`.
fn attr(b: &[u8], rec: usize, ty: u32) -> usize {
    let mut at = rec + le16(b, rec + 0x14) as usize;
    while le32(b, at) != ty {
        assert_ne!(le32(b, at), 0xFFFF_FFFF, "attribute {ty:#x} not found");
        at += le32(b, at + 4) as usize;
    }
    at
}

#[test]
fn ntfs_torn_mft_record_falls_back() {
    let mut b = ntfs_image();
    assert_eq!(map(&b).method, Method::UsedBlocks);
    let r6 = mft_record(&b, 6);
    b[r6 + 510] ^= 0xFF; // the fixup slot of the first stride
    assert_whole(&map(&b), "fixup 1 does not match");
}

#[test]
fn ntfs_run_list_tricks_fall_back() {
    let base = ntfs_image();
    let r0 = mft_record(&base, 0);
    let data = attr(&base, r0, 0x80);
    let runs = data + le16(&base, data + 0x20) as usize;
    let cases: [(&[u8], &str); 4] = [
        // A run going to a negative LCN.
        (&[0x11, 0x01, 0x80, 0x00], "negative"),
        // A huge run past the volume.
        (&[0x14, 0xFF, 0xFF, 0xFF, 0x7F, 0x10, 0x00], "past the"),
        // The same clusters mapped over and over (delta 0), more than the attribute has.
        (&[0x11, 0x7F, 0x10, 0x11, 0x7F, 0x00, 0x00], "more than VCN"),
        // A header with a 9-byte length.
        (&[0x19, 0x01, 0x00], "data run header"),
    ];
    let room = data + le32(&base, data + 4) as usize - runs;
    for (bytes, needle) in cases {
        assert!(
            bytes.len() <= room,
            "case {bytes:?} does not fit {room} bytes"
        );
        let mut b = base.clone();
        b[runs..runs + bytes.len()].copy_from_slice(bytes);
        assert_whole(&map(&b), needle);
    }
}

#[test]
fn ntfs_dirty_volume_falls_back() {
    let mut b = ntfs_image();
    let r3 = mft_record(&b, 3);
    let vi = attr(&b, r3, 0x70);
    let value = vi + le16(&b, vi + 0x14) as usize;
    b[value + 0x0A] |= 1;
    assert_whole(&map(&b), "dirty");
}

/// Deterministic stand-in for a fuzzer: flip bytes of real images' metadata thousands
/// of times; every result must be a well-formed map (no panic, no hang).
#[test]
fn mutated_real_images_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let mut images: Vec<(&str, Vec<u8>)> = Vec::new();
    let mk = |name: &str, size: u64, cmd: &str, args: &[&str]| -> Vec<u8> {
        let img = random_image(p, name, size, 5);
        let mut a: Vec<&str> = args.to_vec();
        let s = img.to_str().unwrap().to_string();
        a.push(&s);
        run(cmd, &a);
        std::fs::read(&img).unwrap()
    };
    let m8 = 8 * MIB;
    images.push((
        "ext4",
        mk("e4", m8, "mkfs.ext4", &["-q", "-F", "-b", "1024"]),
    ));
    images.push((
        "ext2",
        mk(
            "e2",
            m8,
            "mkfs.ext2",
            &["-q", "-F", "-b", "4096", "-g", "1024"],
        ),
    ));
    images.push(("fat12", mk("f12", m8, "mkfs.vfat", &["-F", "12"])));
    images.push((
        "fat32",
        mk("f32", 40 * MIB, "mkfs.vfat", &["-F", "32", "-s", "1"]),
    ));
    images.push(("exfat", mk("x", m8, "mkfs.exfat", &[])));
    images.push(("ntfs", mk("n", m8, "mkntfs", &["-F", "-Q"])));
    images.push(("swap", mk("s", m8, "mkswap", &[])));

    let mut rng = Rng::new(99);
    for (name, img) in &mut images {
        let clean = map(img);
        assert_eq!(clean.method, Method::UsedBlocks, "{name}");
        // Mutate where metadata lives: inside the used extents, mostly near the start.
        let meta: Vec<_> = clean
            .extents
            .iter()
            .filter(|e| e.offset < 4 * MIB)
            .copied()
            .collect();
        for _ in 0..1500 {
            // Mutate in place and put the bytes back afterwards: no 8 MiB copy per round.
            let mut saved = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let e = meta[rng.below(meta.len() as u64) as usize];
                let span = e.len.min(64 << 10);
                let at = (e.offset + rng.below(span)) as usize;
                saved.push((at, img[at]));
                img[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xFF,
                    2 => img[at] ^ (1 << rng.below(8)),
                    _ => rng.next() as u8,
                };
            }
            let cut = if rng.below(10) == 0 {
                rng.below(img.len() as u64) as usize
            } else {
                img.len()
            };
            let m = map(&img[..cut]);
            if let Method::Whole { reason } = &m.method {
                assert!(!reason.is_empty());
                assert_eq!(m.used_bytes, cut as u64);
            }
            for (at, v) in saved.into_iter().rev() {
                img[at] = v;
            }
        }
    }
}
