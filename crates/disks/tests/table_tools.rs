//! Partition tables written by the real tools (`sgdisk`, `sfdisk`) into
//! image files, read by `disks::table`; relocated tables checked by
//! `sgdisk -v` and `sfdisk --verify`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use disks::table::{read_table, relocate_gpt, table_areas, TableKind};

const MIB: u64 = 1 << 20;

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("skipping: {tool} not installed (Debian packages gdisk, fdisk)");
    }
    ok
}

fn image(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("disk.img");
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// Runs a tool; `sgdisk -q` writes nothing to image files
/// (shared/notes/host-kernel.md), so output goes to a pipe instead.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sfdisk(img: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(index, start sector, sectors, type)` from `sfdisk --dump`.
fn sfdisk_dump(img: &Path) -> Vec<(u32, u64, u64, String)> {
    let name = img.to_str().unwrap();
    run("sfdisk", &["--dump", name])
        .lines()
        .filter_map(|l| {
            let (dev, rest) = l.split_once(" : ")?;
            let index = dev.trim().strip_prefix(name)?.parse().ok()?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|f| f.trim().strip_prefix(k).map(|v| v.trim().to_owned()))
            };
            Some((
                index,
                field("start=")?.parse().ok()?,
                field("size=")?.parse().ok()?,
                field("type=")?,
            ))
        })
        .collect()
}

fn read(img: &Path, size: u64) -> disks::table::PartitionTable {
    read_table(&mut File::open(img).unwrap(), size, 512).unwrap()
}

fn sgdisk_layout(img: &Path) {
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-c",
            "1:ESP",
            "-n",
            "2:0:+16M",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-n",
            "3:0:0",
            "-t",
            "3:8200",
            img.to_str().unwrap(),
        ],
    );
}

#[test]
fn sgdisk_gpt_is_read_with_types_names_and_offsets() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 64 * MIB);
    sgdisk_layout(&img);
    let t = read(&img, 64 * MIB);
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(!t.hybrid_mbr);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let names: Vec<_> = t.partitions.iter().map(|p| p.type_name.as_str()).collect();
    assert_eq!(names, ["EFI System", "Linux filesystem", "Linux swap"]);
    assert_eq!(t.partitions[0].name.as_deref(), Some("ESP"));
    assert_eq!(t.partitions[0].start, MIB);
    assert_eq!(t.partitions[1].size, 16 * MIB);
    let disk_guid = run("sgdisk", &["-p", img.to_str().unwrap()]);
    let want = t.disk_guid.clone().unwrap().to_uppercase();
    assert!(disk_guid.contains(&want), "{want} not in {disk_guid}");
    let areas = table_areas(&t, 64 * MIB);
    assert_eq!(areas.first().unwrap().0, 0);
    assert_eq!(areas.last().unwrap().0 + areas.last().unwrap().1, 64 * MIB);
}

#[test]
fn sfdisk_mbr_with_three_logicals_matches_its_dump() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 64 * MIB);
    sfdisk(&img, "label: dos\n,8M,L,*\n,,E\n,8M,L\n,8M,7\n,,S\n");
    let t = read(&img, 64 * MIB);
    assert_eq!(t.kind, TableKind::Mbr);
    let dump = sfdisk_dump(&img);
    // sfdisk lists the extended container (2) too; we keep it apart.
    let data: Vec<_> = dump.iter().filter(|d| d.3 != "5").collect();
    assert_eq!(t.partitions.len(), data.len());
    for (p, d) in t.partitions.iter().zip(&data) {
        assert_eq!(p.index, d.0);
        assert_eq!(p.start, d.1 * 512, "partition {}", p.index);
        assert_eq!(p.size, d.2 * 512, "partition {}", p.index);
        assert_eq!(
            p.type_id,
            format!("0x{:02x}", u8::from_str_radix(&d.3, 16).unwrap())
        );
    }
    assert_eq!(
        t.partitions.iter().map(|p| p.index).collect::<Vec<_>>(),
        [1, 5, 6, 7]
    );
    assert!(t.partitions[0].bootable);
    assert_eq!(t.ebrs.len(), 3);
    let ext = dump.iter().find(|d| d.3 == "5").unwrap();
    assert_eq!(t.extended.unwrap().0, ext.1 * 512);
}

#[test]
fn sgdisk_hybrid_mbr_is_recorded() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 64 * MIB);
    sgdisk_layout(&img);
    run("sgdisk", &["-h", "1:EE", img.to_str().unwrap()]);
    let t = read(&img, 64 * MIB);
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(t.hybrid_mbr);
    assert_eq!(t.partitions.len(), 3);
}

#[test]
fn blank_image_has_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 * MIB);
    let t = read(&img, 8 * MIB);
    assert_eq!(t.kind, TableKind::None);
    assert!(t.partitions.is_empty());
}

fn grow_file(img: &Path, size: u64) {
    OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(size)
        .unwrap();
}

fn sgdisk_verify(img: &Path) {
    let out = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(out.contains("No problems found"), "sgdisk -v: {out}");
}

#[test]
fn gpt_relocated_to_a_larger_disk_passes_sgdisk_verify() {
    if !have("sgdisk") {
        return;
    }
    for grow in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 64 * MIB);
        sgdisk_layout(&img);
        sgdisk_verify(&img);
        grow_file(&img, 200 * MIB);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let r = relocate_gpt(&mut f, 64 * MIB, 200 * MIB, 512, grow).unwrap();
        drop(f);
        sgdisk_verify(&img);
        let t = read(&img, 200 * MIB);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(
            t.gpt.as_ref().unwrap().backup_header_lba,
            200 * MIB / 512 - 1
        );
        let last = t.partitions.last().unwrap();
        if grow {
            assert_eq!(r.grown.unwrap().0, 3);
            // sgdisk reports the largest free block as 0 when the last
            // partition reaches the last usable sector.
            let p = run("sgdisk", &["-p", img.to_str().unwrap()]);
            assert!(last.end() > 199 * MIB, "{p}");
        } else {
            assert!(last.end() < 64 * MIB);
        }
    }
}

#[test]
fn mbr_grown_onto_a_larger_disk_passes_sfdisk_verify() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 64 * MIB);
    sfdisk(&img, "label: dos\n,8M,L\n,,E\n,8M,L\n,,L\n");
    grow_file(&img, 128 * MIB);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let r = relocate_gpt(&mut f, 64 * MIB, 128 * MIB, 512, true).unwrap();
    drop(f);
    assert_eq!(r.grown.unwrap().0, 6);
    let verify = run("sfdisk", &["--verify", img.to_str().unwrap()]);
    assert!(verify.contains("No errors detected"), "{verify}");
    let dump = sfdisk_dump(&img);
    let p6 = dump.iter().find(|d| d.0 == 6).unwrap();
    assert_eq!((p6.1 + p6.2) * 512, 128 * MIB);
    let t = read(&img, 128 * MIB);
    assert_eq!(t.partitions.last().unwrap().end(), 128 * MIB);
    fs::remove_file(&img).unwrap();
}
