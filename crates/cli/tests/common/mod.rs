//! Disk image files for end-to-end tests, made by the real tools and never mounted: a
//! partition table written by sfdisk, then each partition's filesystem made by its own
//! mkfs in a file prefilled with stale random data (so free space is random, as on a
//! used disk) and copied into place. Files are added with `mkfs.ext4 -d`, mtools,
//! ntfscp, and for exFAT (exfatprogs cannot add files) fsmap's spec-built fixture.
//!
//! Reading back is just as tool-bound: each partition is extracted to a file and read
//! with debugfs, mcopy, ntfscat, or (exFAT) at the clusters the fixture placed.
#![allow(dead_code)]

#[allow(dead_code)]
#[path = "../../../fsmap/tests/common/exfat_fixture.rs"]
mod exfat_fixture;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const MIB: u64 = 1 << 20;
pub const SECTOR: u64 = 512;

/// The `imprint` binary under test, stdin closed (no confirmation prompt).
pub fn imprint(args: &[&str]) -> Output {
    imprint_env(args, &[])
}

/// `imprint` with extra environment variables.
pub fn imprint_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imprint"));
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running imprint")
}

/// A finished command's status and output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An `imprint` run that must have succeeded.
pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "imprint failed: {}", text(&o));
    o
}

/// `imprint ...` that must succeed; returns its stdout.
pub fn imprint_ok(args: &[&str]) -> String {
    let o = imprint(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "imprint {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Runs a tool; panics naming the tool's package when it is missing.
pub fn tool(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog} could not run ({e}); see .ci/apt-packages"))
}

/// The `data` of the `result` line of a `--json` run.
pub fn json_result(o: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["type"] == "result")
        .map(|v| v["data"].clone())
        .unwrap_or_else(|| panic!("no result line: {}", text(o)))
}

/// Runs a tool that must succeed; returns its stdout.
pub fn tool_ok(prog: &str, args: &[&str]) -> Vec<u8> {
    let o = tool(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn tool_text(prog: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&tool_ok(prog, args)).into_owned()
}

/// Deterministic xorshift64 bytes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let b = self.next().to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
    }

    /// Incompressible bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// Text made of common words: compresses about as well as real documents.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "the",
            "disk",
            "image",
            "partition",
            "block",
            "restore",
            "capture",
            "of",
            "a",
            "filesystem",
            "table",
            "sector",
            "and",
            "to",
            "is",
            "bitmap",
            "journal",
            "in",
            "used",
            "free",
            "cluster",
            "boot",
            "loader",
            "with",
            "for",
            "every",
            "chunk",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            let r = self.next();
            v.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            v.push(if r >> 32 & 15 == 0 { b'\n' } else { b' ' });
        }
        v.truncate(n);
        v
    }
}

/// A file to put into a filesystem: `/`-separated path from the root, and its bytes.
#[derive(Clone, Debug)]
pub struct FileSpec {
    pub path: String,
    pub data: Vec<u8>,
}

pub fn file(path: &str, data: Vec<u8>) -> FileSpec {
    FileSpec {
        path: path.into(),
        data,
    }
}

/// What a partition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fs {
    /// `mkfs.<name>`: ext2, ext3 or ext4.
    Ext(&'static str),
    /// FAT12, FAT16 or FAT32 (`mkfs.vfat -F bits`).
    Vfat(u8),
    Ntfs,
    Exfat,
    Swap,
    /// No filesystem: random bytes.
    Raw,
}

impl Fs {
    /// The name fsmap (and `imprint info`) gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Fs::Ext(n) => n,
            Fs::Vfat(12) => "fat12",
            Fs::Vfat(16) => "fat16",
            Fs::Vfat(_) => "fat32",
            Fs::Ntfs => "ntfs",
            Fs::Exfat => "exfat",
            Fs::Swap => "swap",
            Fs::Raw => "-",
        }
    }

    /// GPT type alias or MBR type code for sfdisk.
    fn sfdisk_type(&self, gpt: bool) -> &'static str {
        match (self, gpt) {
            (Fs::Ext(_), true) => "L",
            (Fs::Ext(_), false) => "83",
            (Fs::Vfat(32), true) => "U",
            (Fs::Vfat(_) | Fs::Ntfs | Fs::Exfat, true) => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            (Fs::Vfat(12), false) => "1",
            (Fs::Vfat(16), false) => "6",
            (Fs::Vfat(_), false) => "c",
            (Fs::Ntfs | Fs::Exfat, false) => "7",
            (Fs::Swap, true) => "S",
            (Fs::Swap, false) => "82",
            (Fs::Raw, true) => "L",
            (Fs::Raw, false) => "da",
        }
    }

    /// The partclone program that clones it, if any.
    pub fn partclone(&self) -> Option<&'static str> {
        match self {
            Fs::Ext(_) => Some("partclone.extfs"),
            Fs::Vfat(_) => Some("partclone.vfat"),
            Fs::Ntfs => Some("partclone.ntfs"),
            Fs::Exfat => Some("partclone.exfat"),
            Fs::Swap | Fs::Raw => None,
        }
    }
}

/// One partition to make.
#[derive(Clone, Debug)]
pub struct PartSpec {
    pub fs: Fs,
    pub mib: u64,
    pub label: &'static str,
    pub files: Vec<FileSpec>,
    /// MBR only: a logical partition inside the extended one.
    pub logical: bool,
}

pub fn part(fs: Fs, mib: u64, label: &'static str, files: Vec<FileSpec>) -> PartSpec {
    PartSpec {
        fs,
        mib,
        label,
        files,
        logical: false,
    }
}

pub fn logical(fs: Fs, mib: u64, label: &'static str, files: Vec<FileSpec>) -> PartSpec {
    PartSpec {
        logical: true,
        ..part(fs, mib, label, files)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    Gpt,
    Mbr,
}

/// A partition as built: where it is, what it holds.
#[derive(Clone, Debug)]
pub struct Built {
    /// Linux numbering (MBR logicals from 5).
    pub index: u32,
    pub start: u64,
    pub size: u64,
    pub spec: PartSpec,
    /// For exFAT: byte offsets (in the partition) of each file's clusters.
    pub exfat_clusters: Vec<(Vec<u64>, u64)>,
    pub swap_uuid: Option<String>,
}

impl Built {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// A generated disk image file.
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub size: u64,
    pub label: Label,
    pub parts: Vec<Built>,
}

impl Disk {
    pub fn part(&self, index: u32) -> &Built {
        self.parts
            .iter()
            .find(|b| b.index == index)
            .unwrap_or_else(|| panic!("no partition {index}"))
    }

    /// Bytes before the first partition: MBR (boot code), GPT header and entries, and
    /// the boot loader gap.
    pub fn head_len(&self) -> u64 {
        self.parts.iter().map(|b| b.start).min().unwrap()
    }
}

/// A file of `size` random bytes (stale data).
pub fn random_file(path: &Path, size: u64, seed: u64) {
    let f = File::create(path).unwrap();
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(MIB) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all_at(&buf[..n], off).unwrap();
        off += n as u64;
    }
}

pub fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut v, offset)
        .unwrap();
    v
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, offset)
        .unwrap();
}

/// Copies `len` bytes at `offset` of `disk` into a new file `out`.
pub fn extract(disk: &Path, offset: u64, len: u64, out: &Path) -> PathBuf {
    let src = File::open(disk).unwrap();
    let dst = File::create(out).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB) as usize;
        src.read_exact_at(&mut buf[..n], offset + done).unwrap();
        dst.write_all_at(&buf[..n], done).unwrap();
        done += n as u64;
    }
    out.to_path_buf()
}

/// Builds a disk of `size_mib` MiB: stale random data everywhere, then the table, the
/// partitions in order from 1 MiB (MBR logicals each 1 MiB after their EBR), then
/// random boot code in the MBR's first 440 bytes (the gap up to 1 MiB stays random:
/// it stands for a boot loader).
pub fn make_disk(dir: &Path, name: &str, label: Label, size_mib: u64, specs: &[PartSpec]) -> Disk {
    make_disk_sectored(dir, name, label, size_mib, specs, SECTOR)
}

/// [`make_disk`] for a disk with `sector`-byte logical sectors (4096: a 4Kn disk, whose
/// partition table counts in 4 KiB units; FAT file systems on it get 4 KiB sectors too,
/// as Linux mounts no smaller ones there).
pub fn make_disk_sectored(
    dir: &Path,
    name: &str,
    label: Label,
    size_mib: u64,
    specs: &[PartSpec],
    sector: u64,
) -> Disk {
    let path = dir.join(name);
    let size = size_mib * MIB;
    random_file(&path, size, 0xD15C ^ size_mib);
    let mut script = String::from(match label {
        Label::Gpt => "label: gpt\n",
        Label::Mbr => "label: dos\n",
    });
    let mut at = MIB;
    let logicals: u64 = specs.iter().filter(|s| s.logical).map(|s| s.mib + 1).sum();
    let mut extended_written = false;
    for s in specs {
        if s.logical && !extended_written {
            script.push_str(&format!(
                "start={}, size={}, type=5\n",
                at / sector,
                logicals * MIB / sector
            ));
            extended_written = true;
        }
        if s.logical {
            at += MIB;
        }
        script.push_str(&format!(
            "start={}, size={}, type={}\n",
            at / sector,
            s.mib * MIB / sector,
            s.fs.sfdisk_type(label == Label::Gpt)
        ));
        at += s.mib * MIB;
    }
    // Debian 12's sfdisk has no --sector-size: it counts in the sectors of a loop device.
    let dev = (sector != SECTOR).then(|| Loop::whole(&path, sector, false));
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(dev.as_ref().map_or(p(&path), |d| &d.0))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk (package fdisk) must be installed");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed:\n{script}");
    drop(dev);
    let mut boot = vec![0u8; 440];
    Rng::new(440).fill(&mut boot);
    write_at(&path, 0, &boot);

    let placed = sfdisk_partitions_sectored(&path, sector);
    let mut parts = Vec::new();
    for (spec, (index, start, len)) in specs.iter().zip(placed) {
        let img = dir.join(format!("{name}.p{index}"));
        random_file(&img, len, u64::from(index) * 7919 + size_mib);
        let (exfat_clusters, swap_uuid) = make_fs(dir, &img, spec, index, sector);
        copy_into(&img, &path, start);
        std::fs::remove_file(&img).unwrap();
        parts.push(Built {
            index,
            start,
            size: len,
            spec: spec.clone(),
            exfat_clusters,
            swap_uuid,
        });
    }
    Disk {
        path,
        size,
        label,
        parts,
    }
}

/// A disk with no partition table: the filesystem of `b` on the whole of it (a
/// "superfloppy"), made over stale random data.
pub fn make_superfloppy(dir: &Path, b: &Built) -> PathBuf {
    let path = dir.join("superfloppy.img");
    random_file(&path, b.size, 0x5F10);
    make_fs(dir, &path, &b.spec, b.index, SECTOR);
    path
}

/// `(index, start, size)` in bytes of each data partition, as sfdisk reads the table.
pub fn sfdisk_partitions(disk: &Path) -> Vec<(u32, u64, u64)> {
    sfdisk_partitions_sectored(disk, SECTOR)
}

/// [`sfdisk_partitions`] of a disk with `sector`-byte logical sectors.
pub fn sfdisk_partitions_sectored(disk: &Path, sector: u64) -> Vec<(u32, u64, u64)> {
    let dev = (sector != SECTOR).then(|| Loop::whole(disk, sector, true));
    let node = dev.as_ref().map_or(p(disk), |d| &d.0);
    let j: serde_json::Value = serde_json::from_slice(&tool_ok("sfdisk", &["-J", node])).unwrap();
    let mut v = Vec::new();
    for q in j["partitiontable"]["partitions"].as_array().unwrap() {
        let node = q["node"].as_str().unwrap();
        let index: u32 = node
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if matches!(q["type"].as_str(), Some("5" | "f" | "85")) {
            continue;
        }
        v.push((
            index,
            q["start"].as_u64().unwrap() * sector,
            q["size"].as_u64().unwrap() * sector,
        ));
    }
    v
}

fn copy_into(img: &Path, disk: &Path, at: u64) {
    let len = std::fs::metadata(img).unwrap().len();
    let data = read_range(img, 0, len);
    write_at(disk, at, &data);
}

fn make_fs(
    dir: &Path,
    img: &Path,
    spec: &PartSpec,
    index: u32,
    sector: u64,
) -> (Vec<(Vec<u64>, u64)>, Option<String>) {
    let i = p(img);
    let files = &spec.files;
    match &spec.fs {
        Fs::Ext(name) => {
            let tree = dir.join(format!("tree{index}"));
            for f in files {
                let path = tree.join(&f.path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, &f.data).unwrap();
            }
            std::fs::create_dir_all(&tree).unwrap();
            // nodiscard: on a file mke2fs would punch out the stale data first.
            tool_ok(
                &format!("mkfs.{name}"),
                &[
                    "-q",
                    "-F",
                    "-E",
                    "nodiscard",
                    "-L",
                    spec.label,
                    "-d",
                    p(&tree),
                    i,
                ],
            );
            std::fs::remove_dir_all(&tree).unwrap();
        }
        Fs::Vfat(bits) => {
            let (bits, ss) = (bits.to_string(), sector.to_string());
            let mut args = vec!["-F", &bits, "-S", &ss, "-n", spec.label];
            if sector != SECTOR {
                // One sector a cluster: enough clusters for FAT16 on a small partition.
                args.extend(["-s", "1"]);
            }
            args.push(i);
            tool_ok("mkfs.vfat", &args);
            for f in files {
                let mut prefix = String::new();
                let parts: Vec<&str> = f.path.split('/').collect();
                for d in &parts[..parts.len() - 1] {
                    prefix.push('/');
                    prefix.push_str(d);
                    let _ = tool("mmd", &["-i", i, &format!("::{prefix}")]);
                }
                let src = dir.join(format!("src{index}"));
                std::fs::write(&src, &f.data).unwrap();
                tool_ok("mcopy", &["-i", i, p(&src), &format!("::/{}", f.path)]);
            }
        }
        Fs::Ntfs => {
            tool_ok("mkntfs", &["-F", "-Q", "-q", "-L", spec.label, i]);
            for f in files {
                assert!(!f.path.contains('/'), "ntfscp cannot make directories");
                let src = dir.join(format!("src{index}"));
                std::fs::write(&src, &f.data).unwrap();
                tool_ok("ntfscp", &["-f", i, p(&src), &f.path]);
            }
        }
        Fs::Exfat => {
            tool_ok("mkfs.exfat", &["-L", spec.label, i]);
            let list: Vec<(String, Vec<u8>)> = files
                .iter()
                .map(|f| (f.path.clone(), f.data.clone()))
                .collect();
            let placed = exfat_fixture::add_files(img, &list);
            let out = tool("fsck.exfat", &["-n", i]);
            assert!(out.status.success(), "fixture exFAT is not clean");
            return (
                placed
                    .into_iter()
                    .map(|pl| (pl.clusters, pl.cluster_size))
                    .collect(),
                None,
            );
        }
        Fs::Swap => {
            let uuid = format!("5a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c{index:02}");
            tool_ok("mkswap", &["-L", spec.label, "-U", &uuid, i]);
            return (Vec::new(), Some(uuid));
        }
        Fs::Raw => {}
    }
    (Vec::new(), None)
}

/// The filesystem's own read-only checker on an extracted partition; panics with its
/// output unless it is clean.
pub fn assert_fs_clean(fs: &Fs, img: &Path, what: &str) {
    let i = p(img);
    let out = match fs {
        Fs::Ext(_) => tool("e2fsck", &["-fn", i]),
        Fs::Vfat(_) => tool("fsck.vfat", &["-n", i]),
        Fs::Exfat => tool("fsck.exfat", &["-n", i]),
        Fs::Ntfs => tool("ntfsfix", &["-n", i]),
        Fs::Swap | Fs::Raw => return,
    };
    assert!(
        out.status.success(),
        "{what}: {fs:?} checker is not clean:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads every file of the partition back with the filesystem's tools and compares it
/// with what was written. `ntfs_dirty_ok`: read an NTFS volume whose dirty flag is set
/// (ntfsresize sets it on purpose so Windows checks the volume at its next boot).
pub fn assert_files_match(b: &Built, img: &Path, scratch: &Path, what: &str, ntfs_dirty_ok: bool) {
    let i = p(img);
    for (k, f) in b.spec.files.iter().enumerate() {
        let got = match &b.spec.fs {
            Fs::Ext(_) => tool_ok("debugfs", &["-R", &format!("cat /{}", f.path), i]),
            Fs::Vfat(_) => {
                let out = scratch.join(format!("mcopy{}", b.index));
                let _ = std::fs::remove_file(&out);
                tool_ok(
                    "mcopy",
                    &["-n", "-i", i, &format!("::/{}", f.path), p(&out)],
                );
                std::fs::read(&out).unwrap()
            }
            Fs::Ntfs if ntfs_dirty_ok => tool_ok("ntfscat", &["-f", i, &format!("/{}", f.path)]),
            Fs::Ntfs => tool_ok("ntfscat", &[i, &format!("/{}", f.path)]),
            Fs::Exfat => {
                let (clusters, cs) = &b.exfat_clusters[k];
                let mut v = Vec::new();
                for &c in clusters {
                    v.extend(read_range(img, c, *cs));
                }
                v.truncate(f.data.len());
                v
            }
            Fs::Swap | Fs::Raw => continue,
        };
        assert!(
            got == f.data,
            "{what}: partition {} ({}): /{} differs after restore ({} bytes read, {} expected)",
            b.index,
            b.spec.fs.name(),
            f.path,
            got.len(),
            f.data.len()
        );
    }
}

/// Extracts partition `b` (at `offset`, `len` bytes) of `disk`, checks it is clean and
/// that its files match.
pub fn check_partition(
    disk: &Path,
    b: &Built,
    offset: u64,
    len: u64,
    scratch: &Path,
    what: &str,
) -> PathBuf {
    let img = extract(
        disk,
        offset,
        len,
        &scratch.join(format!("check-p{}", b.index)),
    );
    assert_fs_clean(&b.spec.fs, &img, what);
    assert_files_match(b, &img, scratch, what, false);
    img
}

/// A fingerprint of `len` bytes at `offset` (for "unchanged" checks on big files).
pub fn digest(path: &Path, offset: u64, len: u64) -> u64 {
    use std::hash::Hasher;
    let f = File::open(path).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + done).unwrap();
        h.write(&buf[..n]);
        done += n as u64;
    }
    h.finish()
}

/// Every partition of `disk` (captured as image `name`) is where it was on `restored`,
/// clean, with its files; swap keeps its UUID and label; a partition without a
/// filesystem is byte-identical.
pub fn check_all_partitions(disk: &Disk, name: &str, restored: &Path, scratch: &Path) {
    for b in &disk.parts {
        let what = format!("{name} partition {}", b.index);
        let img = check_partition(restored, b, b.start, b.size, scratch, &what);
        match b.spec.fs {
            Fs::Swap => {
                let tags = blkid(&img);
                assert_eq!(blkid_tag(&tags, "TYPE").as_deref(), Some("swap"), "{what}");
                assert_eq!(blkid_tag(&tags, "UUID"), b.swap_uuid, "{what}: swap UUID");
                assert_eq!(
                    blkid_tag(&tags, "LABEL").as_deref(),
                    Some(b.spec.label),
                    "{what}: swap label"
                );
            }
            Fs::Raw => assert!(
                digest(&disk.path, b.start, b.size) == digest(restored, b.start, b.size),
                "{what}: the unformatted partition is not byte-identical"
            ),
            _ => {}
        }
        std::fs::remove_file(img).unwrap();
    }
}

/// `sgdisk -v` must find no problems.
pub fn assert_gpt_valid(disk: &Path) {
    let out = tool("sgdisk", &["-v", p(disk)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "sgdisk -v {}:\n{text}",
        disk.display()
    );
}

/// `sfdisk --verify` must find no errors.
pub fn assert_mbr_valid(disk: &Path) {
    let out = tool("sfdisk", &["--verify", p(disk)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No errors detected"),
        "sfdisk --verify {}:\n{text}",
        disk.display()
    );
}

/// `blkid -p` tags of a file, as `KEY=value` lines.
pub fn blkid(img: &Path) -> String {
    tool_text("blkid", &["-p", "-o", "export", p(img)])
}

pub fn blkid_tag(tags: &str, key: &str) -> Option<String> {
    tags.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// Size of every file under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    dir_size(&e.path())
                } else {
                    e.metadata().unwrap().len()
                }
            })
            .sum()
        })
        .unwrap_or(0)
}

// ---- loop devices and mounts that always go away ----

/// A loop device over a byte range of a file, detached by name when dropped.
pub struct Loop(pub String);

impl Loop {
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> Loop {
        let (o, s) = (offset.to_string(), size.to_string());
        let mut args = vec!["-f", "--show", "-o", &o, "--sizelimit", &s];
        if read_only {
            args.push("-r");
        }
        args.push(p(file));
        let out = tool_ok("losetup", &args);
        Loop(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// A loop device over the whole of `file` with `sector`-byte logical sectors, which
    /// it reports (`BLKSSZGET`) as a disk with such sectors does.
    pub fn whole(file: &Path, sector: u64, read_only: bool) -> Loop {
        let ss = sector.to_string();
        let mut args = vec!["-f", "--show", "--sector-size", &ss];
        if read_only {
            args.push("-r");
        }
        args.push(p(file));
        let out = tool_ok("losetup", &args);
        Loop(String::from_utf8_lossy(&out).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount point, unmounted when dropped (before its loop device: declare it after).
pub struct Mounted(pub PathBuf);

impl Mounted {
    pub fn new(dev: &Loop, dir: &Path, opts: &str) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        tool_ok("mount", &["-o", opts, &dev.0, p(dir)]);
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
