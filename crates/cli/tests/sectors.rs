//! Disks with 4096-byte logical sectors ("4Kn": many NVMe drives, and USB bridges that
//! present 4 KiB sectors) end to end through the `imprint` binary, on loop devices made
//! with `losetup --sector-size 4096`, which the kernel reports through `BLKSSZGET` as a
//! real 4Kn disk does. Partition tables count in sectors, so a 4Kn disk's table read or
//! written in 512-byte units would point every partition at the wrong place: the capture
//! must record 4096, the restore must place the backup GPT in 4 KiB units on a larger
//! disk, and a disk with 512-byte sectors must be refused before anything is written.
//!
//! Needs root (loop devices), sfdisk, sgdisk, mkfs.vfat, mkfs.ext4 and the checkers;
//! every loop device is detached by name in a `Drop` guard.

mod common;

use common::*;
use std::path::Path;

const SECTOR_4K: u64 = 4096;

fn empty_file(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// Restoring image `name` onto a new empty `size`-byte disk with `sector`-byte sectors is
/// refused by the sector-size rule (exit 4) and leaves it all zeros; returns the output.
fn assert_refused_untouched(
    store: &Path,
    name: &str,
    target: &Path,
    size: u64,
    sector: u64,
) -> String {
    empty_file(target, size);
    let out = {
        let dev = Loop::whole(target, sector, false);
        let o = imprint(&["restore", p(store), name, &dev.0, "--yes"]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(4), "{out}");
        out
    };
    assert!(
        read_range(target, 0, size).iter().all(|&b| b == 0),
        "the refused {sector}-byte disk was written to"
    );
    out
}

#[test]
fn a_4kn_disk_restores_onto_a_larger_4kn_disk_and_is_refused_by_a_512_byte_one() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut r = Rng::new(4096);
    let specs = vec![
        // FAT32 needs 65525 clusters (256 MiB at 4 KiB sectors): FAT16 keeps the test small.
        part(
            Fs::Vfat(16),
            24,
            "ESP4K",
            vec![
                file("EFI/BOOT/BOOTX64.EFI", r.bytes(700_000)),
                file("EFI/debian/grub.cfg", r.text(3_000)),
            ],
        ),
        part(
            Fs::Ext("ext4"),
            40,
            "root4k",
            vec![
                file("etc/hostname", r.text(20)),
                file("usr/lib/big.bin", r.bytes(5 << 20)),
                file("home/notes.txt", r.text(900_000)),
            ],
        ),
        part(Fs::Raw, 4, "", Vec::new()),
    ];
    let disk = make_disk_sectored(dir, "4kn.img", Label::Gpt, 80, &specs, SECTOR_4K);
    let store = dir.join("store");

    // Capture through a 4Kn device: the image records the sector size and the table in
    // 4 KiB sectors.
    {
        let src = Loop::whole(&disk.path, SECTOR_4K, true);
        imprint_ok(&["capture", &src.0, p(&store), "--name", "4kn"]);
    }
    let info = imprint_ok(&["info", p(&store), "4kn"]);
    assert!(info.contains("sectors 4096/"), "{info}");
    assert!(info.contains("sector size 4096 bytes"), "{info}");

    // Onto a 512-byte-sector disk: refused before the first write, the disk untouched.
    let out = assert_refused_untouched(&store, "4kn", &dir.join("512.img"), 128 * MIB, 512);
    assert!(
        out.contains("its logical sector size is 512 bytes") && out.contains("4096-byte sectors"),
        "{out}"
    );

    // Onto a larger 4Kn disk: the backup GPT moves to its last 4 KiB sectors.
    let big = dir.join("big4kn.img");
    empty_file(&big, 128 * MIB);
    {
        let dev = Loop::whole(&big, SECTOR_4K, false);
        imprint_ok(&["restore", p(&store), "4kn", &dev.0, "--yes"]);
        let v = tool("sgdisk", &["-v", &dev.0]);
        let v_out = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && v_out.contains("No problems found"),
            "sgdisk -v of the restored 4Kn disk:\n{v_out}"
        );
        imprint_ok(&["verify", p(&store), "4kn", "--against", &dev.0]);
    }
    assert_eq!(
        sfdisk_partitions_sectored(&big, SECTOR_4K),
        sfdisk_partitions_sectored(&disk.path, SECTOR_4K),
        "the partitions of the restored 4Kn disk"
    );
    // The backup GPT header: the last 4 KiB sector, "EFI PART", pointing back at LBA 1.
    let backup = read_range(&big, 128 * MIB - SECTOR_4K, SECTOR_4K);
    assert_eq!(
        &backup[..8],
        b"EFI PART",
        "no backup GPT header in the last 4 KiB sector"
    );
    let alternate = u64::from_le_bytes(backup[32..40].try_into().unwrap());
    assert_eq!(alternate, 1, "the backup header's alternate LBA");
    check_all_partitions(&disk, "4kn", &big, dir);
}

/// A disk whose GPT was written with 512-byte sectors, read through a USB adapter that
/// presents 4 KiB ones: its table is read with the sectors it counts, the capture says so,
/// and the image (recording 512) restores onto a 512-byte disk and not onto a 4Kn one.
#[test]
fn a_512_byte_table_read_through_a_4096_byte_adapter_is_captured_as_the_disk_it_is() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut r = Rng::new(512);
    let specs = vec![
        part(
            Fs::Vfat(32),
            40,
            "ESP",
            vec![file("EFI/BOOT/BOOTX64.EFI", r.bytes(400_000))],
        ),
        part(
            Fs::Ext("ext4"),
            24,
            "root",
            vec![
                file("etc/fstab", r.text(300)),
                file("srv/data.bin", r.bytes(3 << 20)),
            ],
        ),
    ];
    let disk = make_disk(dir, "512.img", Label::Gpt, 72, &specs);
    let store = dir.join("store");
    let out = {
        let src = Loop::whole(&disk.path, SECTOR_4K, true);
        let out = text(&ok(imprint(&[
            "capture",
            &src.0,
            p(&store),
            "--name",
            "bridged",
        ])));
        // The disk through the adapter still matches its image.
        imprint_ok(&["verify", p(&store), "bridged", "--against", &src.0]);
        out
    };
    assert!(
        out.contains("the GPT counts 512-byte sectors but the device reports 4096-byte ones"),
        "{out}"
    );
    let info = imprint_ok(&["info", p(&store), "bridged"]);
    assert!(info.contains("sectors 512/"), "{info}");
    for b in &disk.parts {
        let name = b.spec.fs.name();
        assert!(info.contains(name), "no {name} partition in\n{info}");
    }

    // Through a 4 KiB adapter again: refused, untouched.
    let bridged = dir.join("bridged-target.img");
    let out = assert_refused_untouched(&store, "bridged", &bridged, 72 * MIB, SECTOR_4K);
    assert!(
        out.contains("connect this one the way the source was"),
        "{out}"
    );

    // Connected directly (512-byte sectors): the disk as it was.
    let direct = dir.join("direct-target.img");
    empty_file(&direct, 72 * MIB);
    {
        let dev = Loop::whole(&direct, 512, false);
        imprint_ok(&["restore", p(&store), "bridged", &dev.0, "--yes"]);
    }
    assert_gpt_valid(&direct);
    assert_eq!(sfdisk_partitions(&direct), sfdisk_partitions(&disk.path));
    check_all_partitions(&disk, "bridged", &direct, dir);
}

/// A disk partitioned with an MBR inside a USB enclosure that presents 4 KiB sectors (as
/// enclosures of large disks did, so an MBR could address them), then connected directly
/// with 512-byte sectors: its MBR's LBAs count 4 KiB, which only the file systems where
/// they point reveal. The capture reads it so and says so; the image restores onto a
/// 4Kn disk.
#[test]
fn an_mbr_written_through_a_4096_byte_enclosure_is_read_with_its_sectors() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut r = Rng::new(4097);
    let specs = vec![
        part(
            Fs::Ext("ext4"),
            32,
            "data",
            vec![
                file("photos/a.jpg", r.bytes(2 << 20)),
                file("notes.txt", r.text(50_000)),
            ],
        ),
        logical(
            Fs::Vfat(16),
            24,
            "BACKUP",
            vec![file("OLD/REPORT.DOC", r.bytes(300_000))],
        ),
    ];
    let disk = make_disk_sectored(dir, "enclosure.img", Label::Mbr, 64, &specs, SECTOR_4K);
    let store = dir.join("store");
    let out = {
        let src = Loop::whole(&disk.path, 512, true);
        text(&ok(imprint(&[
            "capture",
            &src.0,
            p(&store),
            "--name",
            "shucked",
        ])))
    };
    assert!(
        out.contains("the MBR counts 4096-byte sectors") && out.contains("reports 512-byte"),
        "{out}"
    );
    let info = imprint_ok(&["info", p(&store), "shucked"]);
    assert!(info.contains("sectors 4096/"), "{info}");
    assert!(info.contains("ext4") && info.contains("fat16"), "{info}");

    let target = dir.join("4kn-target.img");
    empty_file(&target, 64 * MIB);
    {
        let dev = Loop::whole(&target, SECTOR_4K, false);
        imprint_ok(&["restore", p(&store), "shucked", &dev.0, "--yes"]);
        imprint_ok(&["verify", p(&store), "shucked", "--against", &dev.0]);
    }
    assert_eq!(
        sfdisk_partitions_sectored(&target, SECTOR_4K),
        sfdisk_partitions_sectored(&disk.path, SECTOR_4K)
    );
    check_all_partitions(&disk, "shucked", &target, dir);

    // One partition restored onto the disk still connected directly lands where its
    // MBR, counted in 4 KiB sectors, puts it: partition 1 wiped, then restored.
    let p1 = disk.part(1);
    write_at(&disk.path, p1.start, &vec![0u8; p1.size as usize]);
    {
        let dev = Loop::whole(&disk.path, 512, false);
        imprint_ok(&[
            "restore",
            p(&store),
            "shucked",
            &dev.0,
            "--partition",
            "1",
            "--yes",
        ]);
    }
    let what = "partition 1 restored alone through 512-byte sectors";
    let img = check_partition(&disk.path, p1, p1.start, p1.size, dir, what);
    std::fs::remove_file(img).unwrap();
}
