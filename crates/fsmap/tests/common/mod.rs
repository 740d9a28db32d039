//! Helpers for tests that build real filesystems with their own tools.
//!
//! Each test: fill an image with pseudo-random bytes (stale data in free space), run
//! mkfs and a copy-in tool, take the used map, then copy *only* the used extents into
//! a zero-filled image and prove that copy with the filesystem's own checker and by
//! reading every file back. A missing tool is a test failure, not a skip: CI installs
//! them from .ci/apt-packages.
#![allow(dead_code)]

pub mod exfat_fixture;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fsmap::{used_map, Extent, FsKind, Method, UsedMap};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An image of `size` bytes full of pseudo-random "stale" data.
pub fn random_image(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    path
}

/// A tree of files with pseudo-random content: empty, tiny, odd-sized, several MiB,
/// nested. Returns (relative path, content) for every file.
pub fn make_tree(dir: &Path, seed: u64, big: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    let sizes = [0usize, 1, 511, 4097, 100_000, big, 12_345, 65_536];
    let mut files = Vec::new();
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let rel = match i % 3 {
            0 => format!("file{i}.bin"),
            1 => format!("sub/file{i}.bin"),
            _ => format!("sub/deeper/file{i}.bin"),
        };
        let mut data = vec![0u8; n];
        rng.fill(&mut data);
        fs::write(dir.join(&rel), &data).unwrap();
        files.push((rel, data));
    }
    files
}

/// Runs a tool; panics with its output when it is missing or fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = run_status(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a tool and returns its output whatever the exit status; panics only when the
/// tool is missing.
pub fn run_status(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}); install it (see .ci/apt-packages)"))
}

pub fn map_of(img: &Path) -> UsedMap {
    let f = File::open(img).unwrap();
    let size = f.metadata().unwrap().len();
    let m = used_map(&f, size).unwrap();
    check_shape(&m.extents, size);
    assert_eq!(m.used_bytes, m.extents.iter().map(|e| e.len).sum::<u64>());
    m
}

/// The promise of `UsedMap::extents`: sorted, merged, inside the partition.
pub fn check_shape(ext: &[Extent], size: u64) {
    for w in ext.windows(2) {
        assert!(w[0].end() < w[1].offset, "not sorted/merged: {w:?}");
    }
    for e in ext {
        assert!(
            e.len > 0 && e.end() <= size,
            "bad extent {e:?} (size {size})"
        );
    }
}

pub fn assert_used_blocks(m: &UsedMap, kind: FsKind) {
    assert_eq!(m.method, Method::UsedBlocks, "fell back: {:?}", m.method);
    assert_eq!(m.fs.as_ref().map(|f| f.kind), Some(kind));
}

/// A zero-filled image of the same size holding only `extents` of `src`.
pub fn copy_used(src: &Path, extents: &[Extent]) -> PathBuf {
    let dst = src.with_extension("used");
    let s = File::open(src).unwrap();
    let d = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&dst)
        .unwrap();
    d.set_len(s.metadata().unwrap().len()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for e in extents {
        let mut off = e.offset;
        while off < e.end() {
            let n = (e.end() - off).min(buf.len() as u64) as usize;
            s.read_exact_at(&mut buf[..n], off).unwrap();
            d.write_all_at(&buf[..n], off).unwrap();
            off += n as u64;
        }
    }
    dst
}

/// `blkid -p` of an image as KEY=VALUE pairs: the reference for kind, label, uuid.
pub fn blkid(img: &Path) -> Vec<(String, String)> {
    let out = run("blkid", &["-p", "-o", "export", img.to_str().unwrap()]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn blkid_get(tags: &[(String, String)], key: &str) -> Option<String> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// Bytes in use according to partclone (`Space in use: ... = N Blocks`, `Block size`).
pub fn partclone_used(tool: &str, img: &Path) -> u64 {
    let log = img.with_extension("pclog");
    let out = run(
        tool,
        &[
            "-c",
            "-s",
            img.to_str().unwrap(),
            "-O",
            "/dev/null",
            "-L",
            log.to_str().unwrap(),
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no '{name}' in partclone output:\n{text}"));
        let tail = line.rsplit('=').next().unwrap_or(line);
        let digits: String = tail
            .split_whitespace()
            .find(|w| w.chars().all(|c| c.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no number in '{line}'"))
            .to_string();
        digits.parse().unwrap()
    };
    let blocks = field("Space in use:");
    let bs = {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("Block size:"))
            .unwrap_or_else(|| panic!("no block size in partclone output:\n{text}"));
        line.split_whitespace()
            .find_map(|w| w.parse::<u64>().ok())
            .unwrap()
    };
    blocks * bs
}

/// Our used bytes and partclone's must agree within `tolerance` bytes.
pub fn assert_close_to_partclone(name: &str, ours: u64, theirs: u64, tolerance: u64) {
    let diff = ours.abs_diff(theirs);
    eprintln!(
        "{name}: fsmap {ours} bytes, partclone {theirs} bytes, diff {}",
        ours as i64 - theirs as i64
    );
    assert!(
        diff <= tolerance,
        "{name}: fsmap says {ours} bytes used, partclone {theirs} (diff {diff} > {tolerance})"
    );
}
