//! Partition tables and filesystems end to end through the `imprint` binary (issue 3):
//! real filesystems made by their own tools on disk image files with stale random data
//! in their free space, captured, restored onto new, larger, smaller and partially
//! matching disks, and proven with the tools' own checkers and by reading every file
//! back. Nothing is mounted; the only loop devices are the ones `--grow-last` makes
//! (and detaches) itself, so these tests need root for that one feature only.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// A directory for fixtures shared by several tests of this process. Directories left
/// by earlier runs whose process is gone are removed first, so at most one run's
/// fixtures stay behind under target/tmp.
fn shared_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("partitions-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let d = base.join(format!("partitions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// A disk and a store holding its image under `name`.
struct Captured {
    disk: Disk,
    store: PathBuf,
    name: &'static str,
}

fn capture(disk: Disk, store: PathBuf, name: &'static str) -> Captured {
    imprint_ok(&["capture", p(&disk.path), p(&store), "--name", name]);
    Captured { disk, store, name }
}

/// The GPT disk of the issue: FAT32 ESP, ext4, NTFS, exFAT, swap, an unformatted
/// partition of random data, and 19 MiB of free space after the last partition.
fn gpt_fixture() -> &'static Captured {
    static F: OnceLock<Captured> = OnceLock::new();
    F.get_or_init(|| {
        let dir = shared_dir().join("gpt");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Rng::new(1);
        let specs = vec![
            part(
                Fs::Vfat(32),
                40,
                "ESP",
                vec![
                    file("EFI/BOOT/BOOTX64.EFI", r.bytes(300_000)),
                    file("EFI/debian/grub.cfg", r.text(2_000)),
                    file("readme.txt", r.text(100_000)),
                ],
            ),
            part(
                Fs::Ext("ext4"),
                48,
                "root",
                vec![
                    file("etc/os-release", r.text(400)),
                    file("usr/bin/tool", r.bytes(3 << 20)),
                    file("home/user/notes.txt", r.text(1 << 20)),
                    file("var/empty", Vec::new()),
                    file("data/big.bin", r.bytes(6 << 20)),
                ],
            ),
            part(
                Fs::Ntfs,
                24,
                "WINDATA",
                vec![
                    file("report.txt", r.text(2 << 20)),
                    file("photo.bin", r.bytes(3 << 20)),
                    file("small.txt", r.text(100)),
                ],
            ),
            part(
                Fs::Exfat,
                16,
                "EXDATA",
                vec![
                    file("A.BIN", r.bytes(1 << 20)),
                    file("NOTES.TXT", r.text(300_000)),
                    file("B.BIN", r.bytes(777_777)),
                ],
            ),
            part(Fs::Swap, 8, "swap0", Vec::new()),
            part(Fs::Raw, 4, "", Vec::new()),
        ];
        let disk = make_disk(&dir, "gpt.img", Label::Gpt, 160, &specs);
        capture(disk, dir.join("store"), "gpt")
    })
}

/// The MBR disk: ext2 and ext3 primaries, an extended partition with FAT16 and FAT12
/// logicals.
fn mbr_fixture() -> &'static Captured {
    static F: OnceLock<Captured> = OnceLock::new();
    F.get_or_init(|| {
        let dir = shared_dir().join("mbr");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Rng::new(2);
        let specs = vec![
            part(
                Fs::Ext("ext2"),
                16,
                "boot",
                vec![
                    file("vmlinuz", r.bytes(2 << 20)),
                    file("grub/grub.cfg", r.text(3_000)),
                ],
            ),
            part(
                Fs::Ext("ext3"),
                24,
                "data",
                vec![
                    file("a/b/c/deep.txt", r.text(500_000)),
                    file("blob", r.bytes(3 << 20)),
                ],
            ),
            logical(
                Fs::Vfat(16),
                20,
                "DOS16",
                vec![
                    file("DOCS/LETTER.TXT", r.text(200_000)),
                    file("GAME.EXE", r.bytes(1 << 20)),
                ],
            ),
            logical(
                Fs::Vfat(12),
                8,
                "DOS12",
                vec![
                    file("CONFIG.SYS", r.text(500)),
                    file("DATA.BIN", r.bytes(900_000)),
                ],
            ),
        ];
        let disk = make_disk(&dir, "mbr.img", Label::Mbr, 80, &specs);
        capture(disk, dir.join("store"), "mbr")
    })
}

/// `imprint info` lists each partition on a line starting with its number, with its
/// filesystem and label.
fn assert_info_lists_partitions(c: &Captured) {
    let info = imprint_ok(&["info", p(&c.store), c.name]);
    for b in &c.disk.parts {
        let line = info
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&b.index.to_string()))
            .unwrap_or_else(|| {
                panic!(
                    "imprint info has no line for partition {}:\n{info}",
                    b.index
                )
            });
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.contains(&b.spec.fs.name()),
            "partition {} should show {}:\n{line}",
            b.index,
            b.spec.fs.name()
        );
        if !b.spec.label.is_empty() {
            assert!(
                words.contains(&b.spec.label),
                "label of {}:\n{line}",
                b.index
            );
        }
        let how = if b.spec.fs == Fs::Raw {
            "whole"
        } else {
            "used blocks"
        };
        assert!(
            line.contains(how),
            "partition {} should be captured {how}:\n{line}",
            b.index
        );
    }
}

#[test]
fn gpt_disk_restores_every_filesystem_table_area_and_raw_partition() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("restored.img");
    imprint_ok(&["restore", p(&c.store), c.name, p(&out), "--yes"]);
    assert_eq!(file_len(&out), c.disk.size);
    assert_gpt_valid(&out);
    // Protective MBR with its boot code, GPT header and entries, and the boot loader gap
    // up to the first partition; the backup entries and header in the last 33 sectors.
    let head = c.disk.head_len();
    assert!(
        read_range(&c.disk.path, 0, head) == read_range(&out, 0, head),
        "MBR boot code, primary GPT or the gap before the first partition differ"
    );
    let tail = 33 * SECTOR;
    assert!(
        read_range(&c.disk.path, c.disk.size - tail, tail)
            == read_range(&out, c.disk.size - tail, tail),
        "backup GPT differs"
    );
    check_all_partitions(&c.disk, c.name, &out, t.path());
    imprint_ok(&["verify", p(&c.store), c.name, "--against", p(&out)]);
    assert_info_lists_partitions(c);
}

#[test]
fn mbr_disk_with_logical_partitions_restores_boot_code_ebrs_and_filesystems() {
    let c = mbr_fixture();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("restored.img");
    imprint_ok(&["restore", p(&c.store), c.name, p(&out), "--yes"]);
    assert_mbr_valid(&out);
    assert_eq!(
        sfdisk_partitions(&out),
        sfdisk_partitions(&c.disk.path),
        "partition table differs"
    );
    // MBR (boot code, disk signature, table) and sectors 1..2047.
    let head = c.disk.head_len();
    assert!(
        read_range(&c.disk.path, 0, head) == read_range(&out, 0, head),
        "MBR boot code or the post-MBR gap differ"
    );
    check_all_partitions(&c.disk, c.name, &out, t.path());
    imprint_ok(&["verify", p(&c.store), c.name, "--against", p(&out)]);
    assert_info_lists_partitions(c);
}

/// The size disk: the four filesystems partclone also clones, each with random and
/// text files, free space full of random data.
fn size_fixture(dir: &Path) -> Disk {
    let mut r = Rng::new(3);
    let mut mixed = |rand: usize, text: usize, upper: bool| {
        let (a, b) = if upper {
            ("RANDOM.BIN", "TEXT.TXT")
        } else {
            ("random.bin", "text.txt")
        };
        vec![file(a, r.bytes(rand)), file(b, r.text(text))]
    };
    let specs = vec![
        part(Fs::Ext("ext4"), 40, "root", mixed(4 << 20, 4 << 20, false)),
        part(Fs::Vfat(32), 40, "ESP", mixed(3 << 20, 3 << 20, false)),
        part(Fs::Ntfs, 24, "WIN", mixed(2 << 20, 2 << 20, false)),
        part(Fs::Exfat, 16, "EX", mixed(1 << 20, 1 << 20, true)),
    ];
    make_disk(dir, "size.img", Label::Gpt, 128, &specs)
}

/// Bytes of `partclone.<fs> -c | zstd -3` for one extracted partition.
fn partclone_zstd(prog: &str, img: &Path) -> u64 {
    let script = format!(
        "set -o pipefail; {prog} -c -q -L /dev/null -s '{}' -o - 2>/dev/null | zstd -3 -q -c | wc -c",
        p(img)
    );
    tool_text("bash", &["-c", &script]).trim().parse().unwrap()
}

/// Bytes of `zstd -3` of `len` bytes at `offset` of `disk`.
fn zstd_of(disk: &Path, offset: u64, len: u64, scratch: &Path) -> u64 {
    let f = extract(disk, offset, len, &scratch.join("zstd-in"));
    let script = format!("zstd -3 -q -c '{}' | wc -c", p(&f));
    tool_text("bash", &["-c", &script]).trim().parse().unwrap()
}

fn percent(ours: u64, theirs: u64) -> f64 {
    (ours as f64 / theirs as f64 - 1.0) * 100.0
}

/// The whole disk's image against what Clonezilla stores for it: `partclone.<fs> -c |
/// zstd -3` per filesystem, plus the areas outside partitions that partclone does not
/// read and Clonezilla saves with dd (MBR, primary GPT and the boot loader gap up to
/// the first partition; the backup GPT), compressed the same way. Each filesystem is
/// also compared alone (imprint capturing the extracted partition).
#[test]
fn image_of_disk_with_random_free_space_is_within_5_percent_of_partclone_zstd() {
    let t = tempfile::tempdir().unwrap();
    let disk = size_fixture(t.path());
    let store = t.path().join("store");
    imprint_ok(&["capture", p(&disk.path), p(&store), "--name", "size"]);
    let ours = dir_size(&store);
    let mut theirs = 0;
    for b in &disk.parts {
        let img = extract(&disk.path, b.start, b.size, &t.path().join("part"));
        let pc = partclone_zstd(b.spec.fs.partclone().unwrap(), &img);
        let alone = t.path().join(format!("alone{}", b.index));
        imprint_ok(&["capture", p(&img), p(&alone), "--name", "alone"]);
        let one = dir_size(&alone);
        println!(
            "size: {:<5} partition {}: imprint {one} bytes, partclone | zstd -3 {pc} bytes ({:+.2}%)",
            b.spec.fs.name(),
            b.index,
            percent(one, pc)
        );
        assert!(
            one as f64 <= pc as f64 * 1.05,
            "{}: imprint ({one} bytes) is more than 5% larger than partclone | zstd -3 ({pc} bytes)",
            b.spec.fs.name()
        );
        theirs += pc;
    }
    let head = zstd_of(&disk.path, 0, disk.head_len(), t.path());
    let backup = zstd_of(&disk.path, disk.size - 33 * SECTOR, 33 * SECTOR, t.path());
    println!("size: table areas outside partitions: {head} + {backup} bytes after zstd -3");
    theirs += head + backup;
    println!(
        "size: whole disk: imprint store {ours} bytes, partclone | zstd -3 + table areas {theirs} bytes ({:+.2}%)",
        percent(ours, theirs)
    );
    assert!(
        ours as f64 <= theirs as f64 * 1.05,
        "the image ({ours} bytes) is more than 5% larger than partclone | zstd -3 plus table areas ({theirs} bytes)"
    );
}

/// A small GPT disk whose last partition holds `last` and ends 1 MiB before the disk
/// does; the first holds ext4 or FAT16.
fn grow_fixture(dir: &Path, last: Fs) -> Captured {
    let mut r = Rng::new(4);
    let first = match last {
        Fs::Ntfs => part(
            Fs::Ext("ext4"),
            16,
            "first",
            vec![file("one.txt", r.text(50_000))],
        ),
        _ => part(
            Fs::Vfat(16),
            16,
            "FIRST",
            vec![file("ONE.TXT", r.text(50_000))],
        ),
    };
    let specs = vec![
        first,
        part(
            last,
            46,
            "last",
            vec![
                file("big.bin", r.bytes(5 << 20)),
                file("notes.txt", r.text(1 << 20)),
            ],
        ),
    ];
    let disk = make_disk(dir, "grow.img", Label::Gpt, 64, &specs);
    capture(disk, dir.join("store"), "grow")
}

/// `(last usable LBA, [(start LBA, sectors)])` as sfdisk reads a GPT.
fn gpt_geometry(disk: &Path) -> (u64, Vec<(u64, u64)>) {
    let j: serde_json::Value =
        serde_json::from_slice(&tool_ok("sfdisk", &["-J", p(disk)])).unwrap();
    let t = &j["partitiontable"];
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["start"].as_u64().unwrap(), q["size"].as_u64().unwrap()))
        .collect();
    (t["lastlba"].as_u64().unwrap(), parts)
}

fn dumpe2fs_block_count(img: &Path) -> u64 {
    let text = tool_text("dumpe2fs", &["-h", p(img)]);
    text.lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .expect("dumpe2fs prints the block count")
        .trim()
        .parse()
        .unwrap()
}

fn ntfs_volume_size(img: &Path) -> u64 {
    let text = tool_text(
        "ntfsresize",
        &["--info", "--force", "--no-progress-bar", p(img)],
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Current volume size:"))
        .unwrap_or_else(|| panic!("ntfsresize --info:\n{text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Restores a grow fixture onto a 25% larger existing file with --grow-last and checks
/// the table, the grown partition and its filesystem; returns the fs size before and
/// after (ext: blocks; NTFS: bytes).
fn restore_grow_last(last: Fs) -> (u64, u64) {
    let t = tempfile::tempdir().unwrap();
    let c = grow_fixture(t.path(), last.clone());
    let out = t.path().join("larger.img");
    let new_size = c.disk.size / 4 * 5;
    std::fs::File::create(&out)
        .unwrap()
        .set_len(new_size)
        .unwrap();
    let json = imprint_ok(&[
        "--json",
        "restore",
        p(&c.store),
        c.name,
        p(&out),
        "--yes",
        "--grow-last",
    ]);
    let result: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    let grown = &result["data"]["grown"];
    assert_eq!(
        grown["grown"], true,
        "the filesystem was not grown: {grown}"
    );
    assert_eq!(grown["filesystem"], last.name());
    println!("grow-last: {}", grown["message"]);
    assert_eq!(file_len(&out), new_size);
    assert_gpt_valid(&out);
    let (last_usable, parts) = gpt_geometry(&out);
    assert_eq!(
        last_usable,
        new_size / SECTOR - 34,
        "last usable LBA on the new disk"
    );
    let (start, sectors) = *parts.last().unwrap();
    assert_eq!(
        start + sectors - 1,
        last_usable,
        "the last partition must end at the last usable sector"
    );
    let first = &c.disk.parts[0];
    check_partition(
        &out,
        first,
        first.start,
        first.size,
        t.path(),
        "first partition",
    );
    let b = &c.disk.parts[1];
    assert_eq!(start * SECTOR, b.start);
    let src = extract(&c.disk.path, b.start, b.size, &t.path().join("src-last"));
    let img = extract(&out, b.start, sectors * SECTOR, &t.path().join("grown"));
    assert_fs_clean(&b.spec.fs, &img, "grown partition");
    assert_files_match(b, &img, t.path(), "grown partition", last == Fs::Ntfs);
    match last {
        Fs::Ntfs => (ntfs_volume_size(&src), ntfs_volume_size(&img)),
        _ => (dumpe2fs_block_count(&src), dumpe2fs_block_count(&img)),
    }
}

#[test]
fn grow_last_extends_last_ext4_partition_and_filesystem_to_the_end_of_a_larger_disk() {
    let (before, after) = restore_grow_last(Fs::Ext("ext4"));
    println!("ext4 blocks: {before} -> {after}");
    // 46 MiB grew by 16 MiB: at least 10 MiB more blocks of 1 or 4 KiB.
    assert!(
        after > before + before / 5,
        "ext4 did not grow: {before} -> {after} blocks"
    );
}

#[test]
fn grow_last_extends_last_ntfs_partition_and_filesystem_to_the_end_of_a_larger_disk() {
    let (before, after) = restore_grow_last(Fs::Ntfs);
    println!("NTFS bytes: {before} -> {after}");
    assert!(
        after > before + 10 * MIB,
        "NTFS did not grow: {before} -> {after} bytes"
    );
}

#[test]
fn larger_disk_without_grow_last_gets_the_backup_gpt_at_its_new_end() {
    let t = tempfile::tempdir().unwrap();
    let c = grow_fixture(t.path(), Fs::Ext("ext4"));
    let out = t.path().join("larger.img");
    let new_size = c.disk.size / 4 * 5;
    std::fs::File::create(&out)
        .unwrap()
        .set_len(new_size)
        .unwrap();
    imprint_ok(&["restore", p(&c.store), c.name, p(&out), "--yes"]);
    assert_gpt_valid(&out);
    let last = read_range(&out, new_size - SECTOR, SECTOR);
    assert_eq!(
        &last[..8],
        b"EFI PART",
        "backup GPT header on the new last sector"
    );
    let (last_usable, parts) = gpt_geometry(&out);
    assert_eq!(last_usable, new_size / SECTOR - 34);
    let want: Vec<(u64, u64)> = c
        .disk
        .parts
        .iter()
        .map(|b| (b.start / SECTOR, b.size / SECTOR))
        .collect();
    assert_eq!(parts, want, "partitions keep their place and size");
    for b in &c.disk.parts {
        check_partition(&out, b, b.start, b.size, t.path(), "larger disk");
    }
}

#[test]
fn smaller_disk_that_holds_every_partition_restores_clean() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("smaller.img");
    let last_end = c.disk.parts.iter().map(Built::end).max().unwrap();
    // Just room for the backup GPT after the last partition: 19 MiB less than the source,
    // and the deferred last MiB of the target overlaps the last partition.
    let new_size = last_end + 33 * SECTOR;
    assert!(new_size < c.disk.size);
    std::fs::File::create(&out)
        .unwrap()
        .set_len(new_size)
        .unwrap();
    imprint_ok(&["restore", p(&c.store), c.name, p(&out), "--yes"]);
    assert_eq!(file_len(&out), new_size);
    assert_gpt_valid(&out);
    let (last_usable, parts) = gpt_geometry(&out);
    assert_eq!(last_usable, new_size / SECTOR - 34);
    let want: Vec<(u64, u64)> = c
        .disk
        .parts
        .iter()
        .map(|b| (b.start / SECTOR, b.size / SECTOR))
        .collect();
    assert_eq!(parts, want);
    check_all_partitions(&c.disk, c.name, &out, t.path());
}

#[test]
fn smaller_disk_that_cannot_hold_the_partitions_is_refused_and_left_unchanged() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("small.img");
    let last_end = c.disk.parts.iter().map(Built::end).max().unwrap();
    let need = last_end + 33 * SECTOR;
    // The last partition fits, but not the backup GPT after it.
    let have = last_end + 16 * SECTOR;
    random_file(&out, have, 99);
    let before = digest(&out, 0, have);
    let o = imprint(&["restore", p(&c.store), c.name, p(&out), "--yes", "--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("{need} bytes")),
        "should say {need} bytes are needed: {err}"
    );
    assert!(
        err.contains(&format!("{have} bytes")),
        "should say the disk has {have} bytes: {err}"
    );
    assert_eq!(file_len(&out), have);
    assert!(
        digest(&out, 0, have) == before,
        "the refused target was modified"
    );
}

/// Checksums of a disk outside `[start, end)`.
fn outside(disk: &Path, start: u64, end: u64) -> (u64, u64) {
    (
        digest(disk, 0, start),
        digest(disk, end, file_len(disk) - end),
    )
}

/// A GPT disk file with the fixture's partitions, partition 2 resized to `p2_mib`, all
/// holding random data.
fn layout_like_gpt_fixture(dir: &Path, p2_mib: u64) -> Disk {
    let c = gpt_fixture();
    let specs: Vec<PartSpec> = c
        .disk
        .parts
        .iter()
        .map(|b| {
            let mib = if b.index == 2 { p2_mib } else { b.size / MIB };
            part(Fs::Raw, mib, "", Vec::new())
        })
        .collect();
    make_disk(dir, "other.img", Label::Gpt, c.disk.size / MIB, &specs)
}

/// Restores partition `index` alone onto a copy of the source disk whose partition
/// `index` had its first `wreck_mib` MiB overwritten; only that partition may change,
/// and it must come back clean with its files.
fn partition_restore_onto_wrecked_copy(c: &Captured, index: u32, wreck_mib: u64) {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("same.img");
    std::fs::copy(&c.disk.path, &out).unwrap();
    let b = c.disk.part(index);
    let mut junk = vec![0u8; (wreck_mib * MIB) as usize];
    Rng::new(u64::from(index)).fill(&mut junk);
    write_at(&out, b.start, &junk);
    let before = outside(&out, b.start, b.end());
    let n = index.to_string();
    imprint_ok(&[
        "restore",
        p(&c.store),
        c.name,
        p(&out),
        "--yes",
        "--partition",
        &n,
    ]);
    assert!(
        outside(&out, b.start, b.end()) == before,
        "bytes outside partition {index} changed"
    );
    let what = format!("partition {index} restored alone");
    check_partition(&out, b, b.start, b.size, t.path(), &what);
}

#[test]
fn partition_restore_onto_same_layout_changes_only_that_partition() {
    partition_restore_onto_wrecked_copy(gpt_fixture(), 2, 8);
}

#[test]
fn partition_restore_into_larger_partition_changes_only_that_partition() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let disk = layout_like_gpt_fixture(t.path(), 56);
    let (index, start, size) = sfdisk_partitions(&disk.path)[1];
    assert_eq!((index, size), (2, 56 * MIB));
    let before = outside(&disk.path, start, start + size);
    imprint_ok(&[
        "restore",
        p(&c.store),
        c.name,
        p(&disk.path),
        "--yes",
        "--partition",
        "2",
    ]);
    assert!(
        outside(&disk.path, start, start + size) == before,
        "bytes outside partition 2 changed"
    );
    check_partition(
        &disk.path,
        c.disk.part(2),
        start,
        size,
        t.path(),
        "partition 2 in a larger partition",
    );
}

#[test]
fn partition_restore_into_smaller_partition_is_refused_and_left_unchanged() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let disk = layout_like_gpt_fixture(t.path(), 40);
    let before = digest(&disk.path, 0, disk.size);
    let o = imprint(&[
        "restore",
        p(&c.store),
        c.name,
        p(&disk.path),
        "--yes",
        "--partition",
        "2",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(&format!("{} bytes", 40 * MIB)), "{err}");
    assert!(
        digest(&disk.path, 0, disk.size) == before,
        "the refused target was modified"
    );
}

/// The `result` object of `imprint --json ...`.
fn json_result(stdout: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["type"], "result");
    v["data"].clone()
}

#[test]
fn disk_without_table_holding_ext4_captures_used_blocks_and_restores_clean() {
    let t = tempfile::tempdir().unwrap();
    let mut r = Rng::new(6);
    let b = Built {
        index: 0,
        start: 0,
        size: 48 * MIB,
        spec: part(
            Fs::Ext("ext4"),
            48,
            "floppy",
            vec![
                file("a/random.bin", r.bytes(3 << 20)),
                file("b.txt", r.text(1 << 20)),
            ],
        ),
        exfat_clusters: Vec::new(),
        swap_uuid: None,
    };
    let disk = make_superfloppy(t.path(), &b);
    let store = t.path().join("store");
    let res = json_result(&imprint_ok(&[
        "--json",
        "capture",
        p(&disk),
        p(&store),
        "--name",
        "floppy",
    ]));
    let read = res["read_bytes"].as_u64().unwrap();
    println!("superfloppy ext4: read {read} of {} bytes", b.size);
    assert!(
        read < b.size / 3,
        "read {read} bytes of a {} byte disk: not used blocks only",
        b.size
    );
    let out = t.path().join("restored.img");
    imprint_ok(&["restore", p(&store), "floppy", p(&out), "--yes"]);
    assert_eq!(file_len(&out), b.size);
    check_partition(&out, &b, 0, b.size, t.path(), "superfloppy");
    imprint_ok(&["verify", p(&store), "floppy", "--against", p(&out)]);
    let info = imprint_ok(&["info", p(&store), "floppy"]);
    assert!(info.contains("ext4") && info.contains("floppy"), "{info}");
}

#[test]
fn disk_without_table_holding_random_data_restores_byte_identical() {
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("random.img");
    random_file(&disk, 24 * MIB, 7);
    let store = t.path().join("store");
    let res = json_result(&imprint_ok(&[
        "--json",
        "capture",
        p(&disk),
        p(&store),
        "--name",
        "noise",
    ]));
    assert_eq!(res["read_bytes"].as_u64(), Some(24 * MIB));
    let out = t.path().join("restored.img");
    imprint_ok(&["restore", p(&store), "noise", p(&out), "--yes"]);
    assert!(
        std::fs::read(&disk).unwrap() == std::fs::read(&out).unwrap(),
        "restored disk differs"
    );
}

#[test]
fn grow_last_on_mbr_extends_the_last_logical_partition_and_says_fat_cannot_grow() {
    let c = mbr_fixture();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("larger.img");
    let new_size = c.disk.size / 4 * 5;
    std::fs::File::create(&out)
        .unwrap()
        .set_len(new_size)
        .unwrap();
    let res = json_result(&imprint_ok(&[
        "--json",
        "restore",
        p(&c.store),
        c.name,
        p(&out),
        "--yes",
        "--grow-last",
    ]));
    assert_eq!(res["grown"]["grown"], false, "{res}");
    let msg = res["grown"]["message"].as_str().unwrap();
    assert!(
        msg.contains("fat12"),
        "the message should name the filesystem: {msg}"
    );
    assert_mbr_valid(&out);
    let parts = sfdisk_partitions(&out);
    let &(index, start, size) = parts.last().unwrap();
    assert_eq!(
        (index, start + size),
        (6, new_size),
        "logical 6 should end at the disk's end"
    );
    for (b, &(_, start, size)) in c.disk.parts.iter().zip(&parts) {
        assert_eq!(start, b.start);
        check_partition(&out, b, start, size, t.path(), "MBR grown");
    }
}

#[test]
fn partition_restore_of_a_logical_partition_changes_only_that_partition() {
    partition_restore_onto_wrecked_copy(mbr_fixture(), 5, 4);
}

#[test]
fn partition_restore_into_a_file_standing_for_the_partition() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let b = c.disk.part(3);
    let out = t.path().join("ntfs-part.img");
    random_file(&out, b.size, 9);
    imprint_ok(&[
        "restore",
        p(&c.store),
        c.name,
        p(&out),
        "--yes",
        "--partition",
        "3",
    ]);
    assert_eq!(file_len(&out), b.size);
    assert_fs_clean(&b.spec.fs, &out, "partition 3 into a file");
    assert_files_match(b, &out, t.path(), "partition 3 into a file", false);
}

/// A delta restore (the target carries the image's layout) must still rewrite every
/// byte the image holds that differs: the boot loader gap and each filesystem's start.
#[test]
fn whole_disk_delta_restore_onto_a_damaged_copy_repairs_it() {
    let c = gpt_fixture();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("damaged.img");
    std::fs::copy(&c.disk.path, &out).unwrap();
    let mut junk = vec![0u8; 2 * MIB as usize];
    Rng::new(10).fill(&mut junk);
    // Everything after the primary GPT entries up to the first partition, and the start
    // of every partition.
    let gap = 34 * SECTOR;
    write_at(&out, gap, &junk[..(c.disk.head_len() - gap) as usize]);
    for b in &c.disk.parts {
        write_at(&out, b.start, &junk);
    }
    let res = json_result(&imprint_ok(&[
        "--json",
        "restore",
        p(&c.store),
        c.name,
        p(&out),
        "--yes",
        "--force",
    ]));
    assert_eq!(res["delta"], true, "{res}");
    assert_gpt_valid(&out);
    let head = c.disk.head_len();
    assert!(read_range(&c.disk.path, 0, head) == read_range(&out, 0, head));
    check_all_partitions(&c.disk, c.name, &out, t.path());
    imprint_ok(&["verify", p(&c.store), c.name, "--against", p(&out)]);
}

/// fdisk's usual MBR layout: the extended partition runs to the end of the disk, with
/// free space after the last logical. A smaller disk that holds every logical takes the
/// image; the extended partition is cut at the new disk's end.
#[test]
fn smaller_disk_holding_every_logical_restores_when_the_extended_partition_spans_free_space() {
    let t = tempfile::tempdir().unwrap();
    let mut r = Rng::new(11);
    let specs = vec![
        part(
            Fs::Ext("ext4"),
            16,
            "first",
            vec![file("a.txt", r.text(70_000))],
        ),
        logical(
            Fs::Vfat(16),
            20,
            "LOG5",
            vec![file("B.BIN", r.bytes(1 << 20))],
        ),
        logical(
            Fs::Ext("ext2"),
            12,
            "log6",
            vec![file("c.txt", r.text(300_000))],
        ),
    ];
    let disk = make_disk(t.path(), "ext.img", Label::Mbr, 96, &specs);
    tool_ok(
        "bash",
        &[
            "-c",
            &format!(
                "echo ',+' | sfdisk -N 2 --no-reread --no-tell-kernel -q '{}'",
                p(&disk.path)
            ),
        ],
    );
    assert_mbr_valid(&disk.path);
    let c = capture(disk, t.path().join("store"), "ext");
    let last_end = c.disk.parts.iter().map(Built::end).max().unwrap();
    let new_size = last_end + MIB;
    let out = t.path().join("smaller.img");
    std::fs::File::create(&out)
        .unwrap()
        .set_len(new_size)
        .unwrap();
    imprint_ok(&["restore", p(&c.store), c.name, p(&out), "--yes"]);
    assert_mbr_valid(&out);
    let j: serde_json::Value =
        serde_json::from_slice(&tool_ok("sfdisk", &["-J", p(&out)])).unwrap();
    let ext = &j["partitiontable"]["partitions"][1];
    assert_eq!(ext["type"], "5");
    let ext_end = (ext["start"].as_u64().unwrap() + ext["size"].as_u64().unwrap()) * SECTOR;
    assert_eq!(
        ext_end, new_size,
        "the extended partition should end at the new disk's end"
    );
    for b in &c.disk.parts {
        check_partition(&out, b, b.start, b.size, t.path(), "smaller MBR disk");
    }
}
