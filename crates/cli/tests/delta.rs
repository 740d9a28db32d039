//! Delta restore, resume and incremental capture (issue 7), end to end through the
//! `imprint` binary on a real filesystem: a GPT disk file whose ext4 partition is made by
//! `mkfs.ext4 -d` from files of /usr/share/doc plus random files; version B has ~5% of
//! the files rewritten, deleted or added through a loop mount of a copy.
//!
//! Needs root (loop devices, mount), mkfs.ext4, e2fsck, sgdisk and losetup. Loop devices
//! are attached with `-o OFFSET --sizelimit SIZE` (the host kernel parses no partition
//! tables, shared/notes/host-kernel.md) and detached by name in a `Drop` guard.
//!
//! Every count the tool reports is checked against one computed here from the bytes:
//! the chunk maps are parsed per docs/FORMAT.md §6 and chunks are compared masked the
//! way §6 defines a chunk's content.

mod common;

use common::{imprint, imprint_env, json_result as result, ok, p, text, Loop, Mounted, Rng, MIB};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const DISK_SIZE: u64 = 256 * MIB;
/// The ext4 partition: from 1 MiB to 1 MiB before the end (the backup GPT's MiB).
const PART_START: u64 = MIB;
const PART_SIZE: u64 = DISK_SIZE - 2 * MIB;
/// Files of /usr/share/doc copied into the filesystem, and random files of 1 MiB.
const DOC_FILES: usize = 4000;
const RANDOM_FILES: usize = 24;

// ---- running the binary ----

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

fn capture_json(disk: &Path, store: &Path, name: &str) -> Value {
    result(&ok(imprint(&[
        "--json",
        "capture",
        p(disk),
        p(store),
        "--name",
        name,
    ])))
}

fn restore_json(store: &Path, name: &str, target: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "restore", p(store), name, p(target), "--yes"];
    if target.exists() {
        args.push("--force");
    }
    args.extend_from_slice(extra);
    result(&ok(imprint(&args)))
}

/// Runs a job with a crash hook (docs/CLI.md "Test hooks") and checks it died by abort.
fn crash(args: &[&str], env: (&str, &str)) {
    let o = imprint_env(args, &[env]);
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGABRT),
        "expected a crash at {env:?}: {}",
        text(&o)
    );
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let o = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (is it installed?): {e}"));
    assert!(o.status.success(), "{cmd} {args:?} failed: {}", text(&o));
    o
}

// ---- files ----

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

/// Regular files under `root` (recursively, no symlinks), sorted, relative paths.
fn walk(root: &Path) -> Vec<PathBuf> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                go(root, &e.path(), out);
            } else if t.is_file() {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut v = Vec::new();
    go(root, root, &mut v);
    v.sort();
    v
}

/// Every file's length and content hash, by relative path (lost+found left out).
fn file_sums(root: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    walk(root)
        .into_iter()
        .filter(|f| !f.starts_with("lost+found"))
        .map(|f| {
            let bytes = std::fs::read(root.join(&f)).unwrap();
            let mut h = std::hash::DefaultHasher::new();
            h.write(&bytes);
            (f, (bytes.len() as u64, h.finish()))
        })
        .collect()
}

fn read_at(f: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0; len as usize];
    f.read_exact_at(&mut v, offset).unwrap();
    v
}

fn copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).unwrap();
}

// ---- chunk maps (docs/FORMAT.md §6) ----

/// An image's chunk map, parsed independently of the `imaging` crate.
#[derive(Debug, Clone)]
struct Map {
    chunk_size: u64,
    disk_size: u64,
    /// (offset, length), sorted.
    extents: Vec<(u64, u64)>,
    entries: BTreeMap<u64, [u8; 32]>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Map {
    fn load(store: &Path, name: &str) -> Map {
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(store.join("images").join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let file = manifest["map_file"].as_str().unwrap();
        let b = std::fs::read(store.join("images").join(file)).unwrap();
        assert_eq!(&b[..8], b"IMPRMAP1");
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 1);
        let chunk_size = u64::from(u32::from_le_bytes(b[12..16].try_into().unwrap()));
        let (e, n) = (u64_at(&b, 24) as usize, u64_at(&b, 32) as usize);
        assert_eq!(b.len(), 40 + 16 * e + 40 * n + 32, "map size");
        let extents = (0..e)
            .map(|i| (u64_at(&b, 40 + 16 * i), u64_at(&b, 48 + 16 * i)))
            .collect();
        let base = 40 + 16 * e;
        let entries = (0..n)
            .map(|i| {
                let at = base + 40 * i;
                (u64_at(&b, at), b[at + 8..at + 40].try_into().unwrap())
            })
            .collect();
        Map {
            chunk_size,
            disk_size: u64_at(&b, 16),
            extents,
            entries,
        }
    }

    fn range(&self, idx: u64) -> (u64, u64) {
        let start = idx * self.chunk_size;
        (start, (start + self.chunk_size).min(self.disk_size) - start)
    }

    /// Chunks the restore holds back and always rewrites: those touching the first or
    /// the last MiB (FORMAT.md §8).
    fn is_table(&self, idx: u64) -> bool {
        let (s, l) = self.range(idx);
        s < MIB || s + l > self.disk_size - MIB
    }

    /// Chunk `idx` of `disk` as the image sees it: bytes outside the extents are zero.
    fn masked(&self, disk: &File, idx: u64) -> Vec<u8> {
        let (start, len) = self.range(idx);
        let mut buf = read_at(disk, start, len);
        let mut pos = start;
        for &(o, l) in &self.extents {
            let (lo, hi) = (o.max(start), (o + l).min(start + len));
            if hi <= lo {
                continue;
            }
            buf[(pos - start) as usize..(lo - start) as usize].fill(0);
            pos = hi;
        }
        buf[(pos - start) as usize..].fill(0);
        buf
    }

    /// Non-table chunks of this image where `a` and `b` differ, masked by this image, each
    /// with the bytes of its 4 KiB blocks that differ.
    fn differing(&self, a: &Path, b: &Path) -> Vec<(u64, u64)> {
        let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
        self.entries
            .keys()
            .copied()
            .filter(|&i| !self.is_table(i))
            .filter_map(|i| {
                let (ma, mb) = (self.masked(&fa, i), self.masked(&fb, i));
                let blocks: u64 = ma
                    .chunks(4096)
                    .zip(mb.chunks(4096))
                    .filter(|(x, y)| x != y)
                    .map(|(x, _)| x.len() as u64)
                    .sum();
                (blocks > 0).then_some((i, blocks))
            })
            .collect()
    }

    /// Bytes of this image's table-area chunks (always rewritten).
    fn table_bytes(&self) -> u64 {
        self.entries
            .keys()
            .filter(|&&i| self.is_table(i))
            .map(|&i| self.range(i).1)
            .sum()
    }

    /// True when `a` and `b` hold the same bytes in every extent and in both table MiBs.
    fn same_used_and_tables(&self, a: &Path, b: &Path) -> bool {
        let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
        let tables = [(0, MIB), (self.disk_size - MIB, MIB)];
        self.extents.iter().chain(&tables).all(|&(o, l)| {
            (0..l).step_by(MIB as usize).all(|d| {
                let n = (l - d).min(MIB);
                read_at(&fa, o + d, n) == read_at(&fb, o + d, n)
            })
        })
    }

    /// Byte ranges of the disk outside every extent.
    fn gaps(&self) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        let mut pos = 0;
        for &(o, l) in &self.extents {
            if o > pos {
                v.push((pos, o - pos));
            }
            pos = o + l;
        }
        if pos < self.disk_size {
            v.push((pos, self.disk_size - pos));
        }
        v
    }
}

fn first_mib_is_zero(disk: &Path) -> bool {
    read_at(&File::open(disk).unwrap(), 0, MIB)
        .iter()
        .all(|&b| b == 0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    len == fb.metadata().unwrap().len()
        && (0..len).step_by(4 * MIB as usize).all(|o| {
            read_at(&fa, o, (len - o).min(4 * MIB)) == read_at(&fb, o, (len - o).min(4 * MIB))
        })
}

/// How version 2's changed files are spread over the sorted file list.
#[derive(Debug, Clone, Copy)]
enum Spread {
    /// Every 20th file: the worst case for fixed chunks, as every MiB of small files
    /// holds a changed one.
    Scattered,
    /// Runs of 50 neighbouring files (one in 20 overall), as a package update changes
    /// the files of a few packages.
    Clustered,
}

/// Changes ~5% of the documentation files of `disk`'s filesystem through a loop mount at
/// `mnt`: of the chosen files half are rewritten, a quarter deleted, and next to a
/// quarter a file is added; one 1 MiB random file gets 64 KiB changed in place. Returns
/// every file of the changed filesystem.
fn change_files(disk: &Path, mnt: &Path, spread: Spread) -> BTreeMap<PathBuf, (u64, u64)> {
    let dev = Loop::attach(disk, PART_START, PART_SIZE, false);
    let m = Mounted::new(&dev, mnt, "rw");
    let files: Vec<PathBuf> = walk(&m.0)
        .into_iter()
        .filter(|f| f.starts_with("doc"))
        .collect();
    let (mut rewritten, mut deleted, mut added) = (0, 0, 0);
    for (i, f) in files.iter().enumerate() {
        let path = m.0.join(f);
        let nth = match spread {
            Spread::Scattered if i % 20 == 0 => i / 20,
            Spread::Clustered if i % 1000 < 50 => i % 1000,
            _ => continue,
        };
        match nth % 4 {
            0 | 2 => {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.reverse();
                bytes.extend_from_slice(format!("\nrevision 2 of {f:?}\n").as_bytes());
                std::fs::write(&path, bytes).unwrap();
                rewritten += 1;
            }
            1 => {
                std::fs::remove_file(&path).unwrap();
                deleted += 1;
            }
            _ => {
                let body = format!("added in version 2 next to {f:?}\n").repeat(1 + i % 50);
                std::fs::write(path.with_extension("added"), body).unwrap();
                added += 1;
            }
        }
    }
    let big = m.0.join("random/r07.bin");
    let f = std::fs::OpenOptions::new().write(true).open(big).unwrap();
    f.write_all_at(&random_bytes(64 << 10, 99), 300 << 10)
        .unwrap();
    f.sync_all().unwrap();
    eprintln!(
        "{spread:?} change: of {} documentation files, {rewritten} rewritten, {deleted} deleted, {added} added; 1 large file changed in place",
        files.len()
    );
    file_sums(&m.0)
}

/// A test's directory of disk images (hundreds of MiB): removed unless the test failed.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---- the shared fixture: disks A and B, a store holding both, a full restore of B ----

struct Fixture {
    dir: PathBuf,
    disk_a: PathBuf,
    disk_b: PathBuf,
    /// Store with images "A" and "B", captured in that order.
    store: PathBuf,
    capture_b: Value,
    /// B restored with `--full` onto a new file: the reference every restore must equal.
    full_b: PathBuf,
    map_a: Map,
    map_b: Map,
    /// B's files (path → length, hash), read from the mounted filesystem.
    files_b: BTreeMap<PathBuf, (u64, u64)>,
}

impl Fixture {
    fn get() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(Fixture::build)
    }

    /// A scratch directory for one test, removed when the test passes (kept for a look
    /// when it fails; the next run removes it).
    fn scratch(&self, name: &str) -> Scratch {
        let d = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn build() -> Fixture {
        // Under target/tmp (kept small by sparse files); a dead run's directory is removed.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(tmp) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("delta-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = tmp.join(format!("delta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        // Version A's files: real documentation plus incompressible data.
        let src = dir.join("src");
        let docs: Vec<PathBuf> = walk(Path::new("/usr/share/doc"))
            .into_iter()
            .filter(|f| {
                std::fs::symlink_metadata(Path::new("/usr/share/doc").join(f))
                    .is_ok_and(|m| m.len() < 64 << 10)
            })
            .take(DOC_FILES)
            .collect();
        assert!(docs.len() > 1000, "too few files in /usr/share/doc");
        for f in &docs {
            let to = src.join("doc").join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(Path::new("/usr/share/doc").join(f), &to).unwrap();
        }
        std::fs::create_dir_all(src.join("random")).unwrap();
        for i in 0..RANDOM_FILES {
            let path = src.join("random").join(format!("r{i:02}.bin"));
            std::fs::write(path, random_bytes(MIB as usize, i as u64 + 1)).unwrap();
        }

        let disk_a = dir.join("a.img");
        File::create(&disk_a).unwrap().set_len(DISK_SIZE).unwrap();
        // Without -q: `sgdisk -q` writes nothing to image files (host-kernel.md).
        let end = (PART_START + PART_SIZE) / 512 - 1;
        run(
            "sgdisk",
            &[
                "-n",
                &format!("1:{}:{end}", PART_START / 512),
                "-t",
                "1:8300",
                p(&disk_a),
            ],
        );
        run(
            "mkfs.ext4",
            &[
                "-F",
                "-q",
                "-b",
                "4096",
                "-E",
                &format!("offset={PART_START}"),
                "-d",
                p(&src),
                p(&disk_a),
                &(PART_SIZE / 4096).to_string(),
            ],
        );

        // Version B: ~5% of the files rewritten, deleted or added, on a loop mount.
        let disk_b = dir.join("b.img");
        copy(&disk_a, &disk_b);
        let files_b = change_files(&disk_b, &dir.join("mnt-b"), Spread::Scattered);

        let store = dir.join("store");
        let capture_a = capture_json(&disk_a, &store, "A");
        let capture_b = capture_json(&disk_b, &store, "B");
        eprintln!("capture A: {capture_a}\ncapture B: {capture_b}");
        let full_b = dir.join("full-b.img");
        let r = restore_json(&store, "B", &full_b, &["--full"]);
        assert_eq!(r["delta"], false);
        Fixture {
            map_a: Map::load(&store, "A"),
            map_b: Map::load(&store, "B"),
            dir,
            disk_a,
            disk_b,
            store,
            capture_b,
            full_b,
            files_b,
        }
    }
}

/// e2fsck -fn on the ext4 partition of `disk`, then every file compared with B's.
fn assert_filesystem_is_b(fx: &Fixture, disk: &Path, what: &str) {
    let dev = Loop::attach(disk, PART_START, PART_SIZE, true);
    let fsck = Command::new("e2fsck")
        .args(["-fn", &dev.0])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn on {what} is not clean: {}",
        text(&fsck)
    );
    let mnt = fx.dir.join(format!("mnt-{what}"));
    let m = Mounted::new(&dev, &mnt, "ro,noload");
    let got = file_sums(&m.0);
    assert_eq!(got.len(), fx.files_b.len(), "{what}: number of files");
    for (f, sum) in &fx.files_b {
        assert_eq!(got.get(f), Some(sum), "{what}: file {f:?} differs from B's");
    }
}

fn assert_verifies_against(fx: &Fixture, disk: &Path) {
    ok(imprint(&[
        "verify",
        p(&fx.store),
        "B",
        "--against",
        p(disk),
    ]));
}

// ---- 1: delta restore of a 5% change writes exactly the chunks that differ ----

#[test]
fn delta_restore_of_b_over_a_writes_only_differing_chunks_and_equals_a_full_restore() {
    let fx = Fixture::get();
    let d = fx.scratch("delta-over-a");
    let t = d.join("t.img");
    let ra = restore_json(&fx.store, "A", &t, &[]);
    assert_eq!(ra["delta"], false, "a new file gets a full restore");
    let before = d.join("t-holding-a.img");
    copy(&t, &before);

    let r = restore_json(&fx.store, "B", &t, &[]);
    assert_eq!(r["delta"], true, "{r}");
    let written = num(&r, "written_chunks") - num(&r, "table_chunks");

    // Independent counts: chunks whose content (masked as B masks it) differs between
    // the disk holding A and the reference; and chunks whose id differs from A's.
    let differ = fx.map_b.differing(&before, &fx.full_b);
    let masked_differ = differ.len() as u64;
    let b_chunks: Vec<u64> = fx
        .map_b
        .entries
        .keys()
        .copied()
        .filter(|&i| !fx.map_b.is_table(i))
        .collect();
    let ids_differ = b_chunks
        .iter()
        .filter(|i| fx.map_a.entries.get(i) != fx.map_b.entries.get(i))
        .count() as u64;
    eprintln!(
        "delta restore of B over A: {} chunks in B ({} outside the table areas); ids differing \
         from A: {ids_differ}; differing on the target (masked as B): {masked_differ}; written: \
         {written} + {} table-area chunks; unchanged: {}; read from the target: {} bytes; \
         from the store: {} bytes",
        num(&r, "chunks"),
        b_chunks.len(),
        num(&r, "table_chunks"),
        num(&r, "unchanged_chunks"),
        num(&r, "target_read_bytes"),
        num(&r, "read_bytes"),
    );
    assert_eq!(
        written, masked_differ,
        "chunks written vs chunks that differ"
    );
    // Inside those chunks only the 4 KiB blocks that differ are written.
    let block_bytes: u64 = differ.iter().map(|d| d.1).sum();
    let table_bytes = fx.map_b.table_bytes();
    eprintln!(
        "bytes written: {} ({table_bytes} in the table areas); bytes of differing 4 KiB blocks: \
         {block_bytes}; of the chunks holding them: {}",
        num(&r, "written_bytes"),
        masked_differ * fx.map_b.chunk_size
    );
    assert_eq!(num(&r, "written_bytes"), table_bytes + block_bytes, "{r}");
    assert!(block_bytes < masked_differ * fx.map_b.chunk_size);
    // An id can differ only in blocks B no longer uses (a deleted file): the target then
    // already holds B's content there once masked, so it is not written.
    assert!(written <= ids_differ);
    assert!(written > 0 && written < b_chunks.len() as u64 / 2, "{r}");
    assert_eq!(
        num(&r, "unchanged_chunks"),
        b_chunks.len() as u64 - written,
        "{r}"
    );

    assert!(
        fx.map_b.same_used_and_tables(&t, &fx.full_b),
        "the delta-restored disk differs from the full restore in B's used blocks or tables"
    );
    assert_verifies_against(fx, &t);
    assert_filesystem_is_b(fx, &t, "delta");
}

// ---- 2: a restore killed anywhere resumes and ends identical ----

/// Crashes a restore of B onto `target` at `env`, checks the disk cannot boot, reruns,
/// and checks the rerun resumed and wrote exactly what was missing.
fn crash_and_resume(fx: &Fixture, target: &Path, env: (&str, &str)) -> Value {
    crash(
        &[
            "--json",
            "restore",
            p(&fx.store),
            "B",
            p(target),
            "--yes",
            "--force",
        ],
        env,
    );
    assert!(
        first_mib_is_zero(target),
        "after a crash at {env:?} the first MiB is not zero: the disk could boot half-written"
    );
    let missing = fx.map_b.differing(target, &fx.full_b).len() as u64;
    let r = restore_json(&fx.store, "B", target, &[]);
    let written = num(&r, "written_chunks") - num(&r, "table_chunks");
    eprintln!(
        "restore crashed at {env:?}: {missing} chunks missing; the rerun wrote {written} (+{} table-area), \
         {} unchanged: {}",
        num(&r, "table_chunks"),
        num(&r, "unchanged_chunks"),
        r["delta_reason"]
    );
    assert_eq!(r["delta"], true, "{r}");
    assert!(
        r["delta_reason"].as_str().unwrap().contains("resuming"),
        "{r}"
    );
    assert_eq!(
        written, missing,
        "the rerun wrote more than was missing: {r}"
    );
    r
}

#[test]
fn a_killed_restore_resumes_writing_only_what_is_missing_and_ends_identical() {
    let fx = Fixture::get();
    let d = fx.scratch("resume");
    let n = fx.map_b.entries.len();
    let half = (n / 2).to_string();
    let points = [
        ("IMPRINT_TEST_CRASH_AFTER_CHUNKS", "1"),
        ("IMPRINT_TEST_CRASH_AFTER_CHUNKS", half.as_str()),
        ("IMPRINT_TEST_CRASH_AT_PHASE", "writing partition tables"),
    ];
    for (i, env) in points.into_iter().enumerate() {
        // Onto a new file: it must end byte for byte like the uninterrupted restore.
        let t = d.join(format!("new-{i}.img"));
        crash_and_resume(fx, &t, env);
        assert!(
            same_file(&t, &fx.full_b),
            "after a crash at {env:?} and a rerun the disk differs from an uninterrupted restore"
        );
        std::fs::remove_file(&t).unwrap();
    }

    // A delta restore over A killed half way: same used blocks and tables as the reference.
    let t = d.join("over-a.img");
    ok(imprint(&["restore", p(&fx.store), "A", p(&t), "--yes"]));
    crash_and_resume(fx, &t, ("IMPRINT_TEST_CRASH_AFTER_CHUNKS", &half));
    assert!(fx.map_b.same_used_and_tables(&t, &fx.full_b));
    assert_verifies_against(fx, &t);
}

// ---- 3: a capture killed anywhere leaves the store consistent; the rerun reuses ----

fn image_names(store: &Path) -> Vec<String> {
    let r = result(&ok(imprint(&["--json", "images", p(store)])));
    r["store"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Bytes in packs that have no index (what a dead capture left).
fn unsealed_pack_bytes(store: &Path) -> u64 {
    let packs = store.join("packs");
    std::fs::read_dir(&packs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .filter(|p| !p.with_extension("idx").exists())
        .map(|p| p.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_killed_capture_leaves_the_store_consistent_and_the_rerun_reuses_flushed_chunks() {
    let fx = Fixture::get();
    let d = fx.scratch("capture-crash");
    // The store already holds an earlier image; disk A is then mostly new data (~30 MiB
    // compressed), more than the pack writer's 4 MiB buffer.
    let early = d.join("early.img");
    std::fs::write(&early, random_bytes(6 * MIB as usize, 7)).unwrap();
    let base = d.join("base-store");
    capture_json(&early, &base, "early");

    let n = fx.map_a.entries.len();
    let points = [
        ("IMPRINT_TEST_CRASH_AFTER_CHUNKS", "1".to_string()),
        ("IMPRINT_TEST_CRASH_AFTER_CHUNKS", (n / 2).to_string()),
        ("IMPRINT_TEST_CRASH_AFTER_CHUNKS", (n - 1).to_string()),
        (
            "IMPRINT_TEST_CRASH_AT_PHASE",
            "committing image".to_string(),
        ),
    ];
    let mut reused_somewhere = false;
    for (i, (k, v)) in points.iter().enumerate() {
        let store = d.join(format!("store-{i}"));
        run("cp", &["-a", p(&base), p(&store)]);
        crash(
            &["--json", "capture", p(&fx.disk_a), p(&store), "--name", "A"],
            (k, v),
        );
        assert_eq!(image_names(&store), ["early"], "after a crash at {k}={v}");
        ok(imprint(&["verify", p(&store), "early"]));
        let flushed = unsealed_pack_bytes(&store);

        let r = capture_json(&fx.disk_a, &store, "A");
        eprintln!(
            "capture crashed at {k}={v}: {flushed} bytes of unsealed pack left; the rerun \
             reused {} chunks and stored {} new",
            num(&r, "dedup_chunks"),
            num(&r, "new_chunks")
        );
        if flushed > 64 << 10 {
            assert!(
                num(&r, "dedup_chunks") > 0,
                "flushed chunks not reused: {r}"
            );
            reused_somewhere = true;
        }
        assert_eq!(unsealed_pack_bytes(&store), 0, "every pack is sealed");
        assert_eq!(image_names(&store), ["A", "early"]);
        ok(imprint(&["verify", p(&store), "A"]));
        ok(imprint(&[
            "verify",
            p(&store),
            "A",
            "--against",
            p(&fx.disk_a),
        ]));
        ok(imprint(&["verify", p(&store), "early"]));
    }
    assert!(
        reused_somewhere,
        "no crash point left flushed data to reuse"
    );
}

// ---- 4: incremental capture ----

#[test]
fn capturing_again_stores_only_new_chunks_and_reports_every_count() {
    let fx = Fixture::get();
    let d = fx.scratch("incremental");
    let store = d.join("store");
    let a = capture_json(&fx.disk_a, &store, "A");
    // A clustered 5% change (a package update) on top of A.
    let disk_c = d.join("c.img");
    copy(&fx.disk_a, &disk_c);
    change_files(&disk_c, &d.join("mnt-c"), Spread::Clustered);
    let c = capture_json(&disk_c, &store, "C");
    let b = &fx.capture_b;
    for (what, r) in [("clustered (C)", &c), ("scattered (B)", b)] {
        eprintln!(
            "incremental capture after A, {what} 5% change: {} chunks ({} empty), {} already stored, {} new; {} new bytes of {} referenced ({:.0}%)",
            num(r, "chunks"),
            num(r, "zero_chunks"),
            num(r, "dedup_chunks"),
            num(r, "new_chunks"),
            num(r, "new_bytes"),
            num(r, "referenced_bytes"),
            100.0 * num(r, "new_bytes") as f64 / num(r, "referenced_bytes") as f64
        );
        assert_eq!(
            num(r, "chunks"),
            num(r, "zero_chunks") + num(r, "dedup_chunks") + num(r, "new_chunks"),
            "{r}"
        );
        assert_eq!(
            num(r, "hashed_chunks"),
            num(r, "chunks") - num(r, "zero_chunks")
        );
        assert!(num(r, "read_bytes") > 0 && r["elapsed_seconds"].as_f64().is_some());
        assert!(num(r, "new_bytes") < num(r, "referenced_bytes"), "{r}");
    }
    assert!(
        num(&c, "new_bytes") * 4 < num(&c, "referenced_bytes"),
        "an incremental capture of a clustered 5% change stored too much: {c}"
    );
    assert_eq!(num(&a, "dedup_chunks"), 0);

    // The human result line says the same: bytes read, elapsed, chunks new, already
    // stored (deduplicated) and empty.
    let o = ok(imprint(&[
        "capture",
        p(&fx.disk_b),
        p(&store),
        "--name",
        "B",
    ]));
    let human = String::from_utf8_lossy(&o.stderr).into_owned();
    let m = &result(&ok(imprint(&["--json", "info", p(&store), "B"])))["manifest"]["stats"];
    let line = human
        .lines()
        .find(|l| l.starts_with("captured"))
        .unwrap_or_else(|| panic!("no result line in {human}"));
    eprintln!("human: {line}");
    let dedup = num(m, "chunks") - num(m, "zero_chunks") - num(m, "new_chunks");
    for want in [
        format!("{} chunks", num(m, "chunks")),
        format!("{} new", num(m, "new_chunks")),
        format!("{dedup} already stored"),
        format!("{} empty", num(m, "zero_chunks")),
        "read ".to_string(),
        " s (".to_string(),
    ] {
        assert!(line.contains(&want), "{want:?} missing in {line:?}");
    }
}

// ---- 5: unused blocks: left alone, zeroed or discarded ----

#[test]
fn zero_unused_and_discard_unused_clear_free_space_and_the_default_leaves_it() {
    let fx = Fixture::get();
    let d = fx.scratch("unused");
    let noise = d.join("noise.img");
    std::fs::write(&noise, random_bytes(DISK_SIZE as usize, 42)).unwrap();
    let map = &fx.map_b;
    let gaps = map.gaps();
    // Chunks the image does not capture at all: a restore never writes them.
    let untouched: Vec<u64> = (0..DISK_SIZE / map.chunk_size)
        .filter(|i| !map.entries.contains_key(i))
        .collect();
    assert!(!untouched.is_empty(), "the test disk has no free chunk");
    let noise_f = File::open(&noise).unwrap();

    for mode in ["default", "--zero-unused", "--discard-unused"] {
        let t = d.join(format!("t{mode}.img"));
        copy(&noise, &t);
        let extra: &[&str] = if mode == "default" { &[] } else { &[mode] };
        let r = restore_json(&fx.store, "B", &t, extra);
        eprintln!(
            "restore {mode} onto random data: unused {} bytes {}",
            r["unused"], r["unused_bytes"]
        );
        assert!(
            map.same_used_and_tables(&t, &fx.full_b),
            "{mode}: used data"
        );
        let tf = File::open(&t).unwrap();
        for &i in &untouched {
            let (o, l) = map.range(i);
            let got = read_at(&tf, o, l);
            if mode == "default" {
                assert!(
                    got == read_at(&noise_f, o, l),
                    "default: chunk {i} was written"
                );
            } else {
                assert!(got.iter().all(|&b| b == 0), "{mode}: chunk {i} not cleared");
            }
        }
        if mode != "default" {
            for &(o, l) in &gaps {
                assert!(
                    read_at(&tf, o, l).iter().all(|&b| b == 0),
                    "{mode}: unused bytes at {o}+{l} not cleared"
                );
            }
            assert_eq!(
                num(&r, "unused_bytes"),
                gaps.iter().map(|g| g.1).sum::<u64>()
            );
        }
    }

    // A delta restore over A with --zero-unused: A's deleted files are gone too.
    let t = d.join("over-a.img");
    ok(imprint(&["restore", p(&fx.store), "A", p(&t), "--yes"]));
    let r = restore_json(&fx.store, "B", &t, &["--zero-unused"]);
    assert_eq!(r["delta"], true);
    let tf = File::open(&t).unwrap();
    for &(o, l) in &gaps {
        assert!(
            read_at(&tf, o, l).iter().all(|&b| b == 0),
            "stale data at {o}"
        );
    }
    assert!(map.same_used_and_tables(&t, &fx.full_b));
}

// ---- 6: an unchanged disk ----

#[test]
fn delta_restore_of_an_unchanged_disk_rewrites_only_the_table_areas() {
    let fx = Fixture::get();
    let d = fx.scratch("unchanged");
    let t = d.join("t.img");
    copy(&fx.full_b, &t);
    let r = restore_json(&fx.store, "B", &t, &[]);
    eprintln!("delta restore of an unchanged disk: {r}");
    assert_eq!(r["delta"], true);
    let tables = fx
        .map_b
        .entries
        .keys()
        .filter(|&&i| fx.map_b.is_table(i))
        .count() as u64;
    assert_eq!(num(&r, "table_chunks"), tables);
    assert_eq!(num(&r, "written_chunks"), tables, "{r}");
    assert_eq!(num(&r, "unchanged_chunks"), num(&r, "chunks") - tables);
    assert!(num(&r, "target_read_bytes") > 0);
    assert!(num(&r, "hashed_chunks") <= tables);
    assert!(same_file(&t, &fx.full_b));
}

#[test]
fn the_summary_counts_unchanged_chunks_only_after_a_delta_compare() {
    let fx = Fixture::get();
    let d = fx.scratch("summary");
    let t = d.join("t.img");
    copy(&fx.full_b, &t);
    let summary = |extra: &[&str]| {
        let mut args = vec!["restore", p(&fx.store), "B", p(&t), "--yes", "--force"];
        args.extend_from_slice(extra);
        let o = ok(imprint(&args));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        err.lines()
            .find(|l| l.starts_with("restored \"B\""))
            .unwrap_or_else(|| panic!("no summary line in {err}"))
            .to_owned()
    };
    let delta = summary(&[]);
    assert!(delta.contains(" unchanged (delta, "), "{delta}");
    let full = summary(&["--full"]);
    assert!(!full.contains("unchanged"), "{full}");
    assert!(full.contains("; skipped 0 empty"), "{full}");
}
