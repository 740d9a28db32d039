//! `imprint mount / umount / extract / export` end to end on a real ext4 made by
//! `mkfs.ext4 -d` inside a GPT disk file. Needs root, /dev/fuse and loop devices (this
//! host kernel has them; vfat, exFAT and NTFS mounts belong in the QEMU tests, see
//! docs/ARCHITECTURE.md "Browsing images"). Every mount and loop device a test makes is
//! removed by name in a Drop guard, also when the test fails.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

const MIB: u64 = 1 << 20;
/// The partition starts at 1 MiB (sector 2048).
const PART_START: u64 = MIB;

fn imprint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imprint"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running imprint")
}

fn out_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn imprint_ok(args: &[&str]) -> Output {
    let o = imprint(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "imprint {args:?}: {}",
        out_text(&o)
    );
    o
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn sh(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"))
}

fn sh_ok(prog: &str, args: &[&str]) -> String {
    let o = sh(prog, args);
    assert!(o.status.success(), "{prog} {args:?}: {}", out_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// These tests mount: they need root, FUSE and loop devices.
fn can_mount() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse (CI runs as root)");
        return false;
    }
    true
}

fn mounted_at(path: &Path) -> bool {
    let o = sh("findmnt", &["-n", "--mountpoint", p(path)]);
    o.status.success() && !o.stdout.is_empty()
}

/// Whether `dev` is still attached to a file in this mount's FUSE directory. The name
/// alone is not enough: tests run in parallel, and another test's mount may have taken
/// the freed device number already (the product's detach checks the same way).
fn loop_attached(dev: &str, fuse_dir: &Path) -> bool {
    let backing = format!("({}/", fuse_dir.display());
    String::from_utf8_lossy(&sh("losetup", &["-a"]).stdout)
        .lines()
        .any(|l| l.starts_with(&format!("{dev}:")) && l.contains(&backing))
}

fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

const DEEP: &str = "deep/l01/l02/l03/l04/l05/l06/l07/l08/l09/l10/l11/l12";

/// A tree of real files: a copy of /usr/share/doc (thousands of files, links, odd
/// names), plus a 12-level deep directory with files of known modes and old times.
fn make_tree(dir: &Path, with_doc: bool) {
    std::fs::create_dir_all(dir.join(DEEP)).unwrap();
    if with_doc {
        sh_ok("cp", &["-a", "/usr/share/doc", p(&dir.join("doc"))]);
    }
    let deep = dir.join(DEEP);
    std::fs::write(deep.join("note.txt"), b"the one file somebody needs back\n").unwrap();
    let mut data = vec![0u8; 200_000];
    fill_random(&mut data, 42);
    std::fs::write(deep.join("data.bin"), &data).unwrap();
    std::os::unix::fs::symlink("note.txt", deep.join("link-to-note")).unwrap();
    std::fs::create_dir(deep.join("private")).unwrap();
    std::fs::write(deep.join("private/secret"), b"s3cret\n").unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for (rel, mode) in [
        ("note.txt", 0o640),
        ("data.bin", 0o600),
        ("private/secret", 0o400),
        ("private", 0o750),
    ] {
        let f = deep.join(rel);
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        File::open(&f)
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_modified(old)
                    .set_accessed(old),
            )
            .unwrap();
    }
}

/// A GPT disk file of `disk_mib` MiB with one ext4 partition of `part_mib` MiB at
/// 1 MiB made by `mkfs.ext4 -d tree`. Free space is zeros (a fresh sparse file), so
/// the image holds every non-zero byte of the disk.
fn make_disk(dir: &Path, tree: &Path, disk_mib: u64, part_mib: u64) -> PathBuf {
    let disk = dir.join("disk.img");
    File::create(&disk)
        .unwrap()
        .set_len(disk_mib * MIB)
        .unwrap();
    // Without -q: `sgdisk -q` writes nothing to image files (shared/notes/host-kernel.md).
    sh_ok(
        "sgdisk",
        &[
            "-n",
            &format!("1:2048:+{part_mib}M"),
            "-t",
            "1:8300",
            p(&disk),
        ],
    );
    let part = dir.join("p1.raw");
    File::create(&part)
        .unwrap()
        .set_len(part_mib * MIB)
        .unwrap();
    sh_ok("mkfs.ext4", &["-q", "-F", "-d", p(tree), p(&part)]);
    copy_into(&part, &disk, PART_START);
    std::fs::remove_file(&part).unwrap();
    disk
}

fn copy_into(from: &Path, to: &Path, at: u64) {
    let src = File::open(from).unwrap();
    let dst = std::fs::OpenOptions::new().write(true).open(to).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    loop {
        let n = src.read_at(&mut buf, off).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], at + off).unwrap();
        }
        off += n as u64;
    }
}

/// One captured disk shared by the tests that only read it; removed when the last
/// test holding it is done.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }
    fn disk(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = g.upgrade() {
        return f;
    }
    let dir = tempfile::tempdir().unwrap();
    make_tree(&dir.path().join("tree"), true);
    let disk = make_disk(dir.path(), &dir.path().join("tree"), 300, 256);
    imprint_ok(&[
        "capture",
        p(&disk),
        p(&dir.path().join("store")),
        "--name",
        "docs",
    ]);
    let f = Arc::new(Fixture { dir });
    *g = Arc::downgrade(&f);
    f
}

/// Every file of a store with its size, mtime and content hash.
fn store_state(store: &Path) -> BTreeMap<PathBuf, (u64, i64, String)> {
    let mut m = BTreeMap::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let md = std::fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                stack.push(path);
            } else {
                let hash = blake3::hash(&std::fs::read(&path).unwrap())
                    .to_hex()
                    .to_string();
                m.insert(path, (md.len(), md.mtime(), hash));
            }
        }
    }
    m
}

/// A running `imprint --json mount`. Dropping it unmounts through `imprint umount`,
/// then removes by name whatever is still there.
struct Served {
    child: Option<Child>,
    mountpoint: PathBuf,
    mounted: Value,
}

impl Served {
    fn start(store: &Path, name: &str, mountpoint: &Path) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imprint"))
            .args(["--json", "mount", p(store), name, p(mountpoint)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning imprint mount");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["type"] != "mounted" {
            let o = child.wait_with_output().unwrap();
            panic!("imprint mount did not mount: {line}\n{}", out_text(&o));
        }
        Served {
            child: Some(child),
            mountpoint: mountpoint.to_path_buf(),
            mounted: v["data"].clone(),
        }
    }

    fn loop_device(&self) -> String {
        self.mounted["loop_device"].as_str().unwrap().to_string()
    }

    fn fuse_dir(&self) -> PathBuf {
        PathBuf::from(self.mounted["fuse_dir"].as_str().unwrap())
    }

    /// `imprint umount`, then the serving process's exit and its JSON result.
    fn umount(&mut self) -> Value {
        let o = imprint_ok(&["umount", p(&self.mountpoint)]);
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "serving process: {}",
            out_text(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or("");
        let v: Value = serde_json::from_str(last).unwrap();
        assert_eq!(v["data"]["ok"], true, "{last}\n{}", out_text(&o));
        v["data"].clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = imprint(&["umount", p(&self.mountpoint)]);
            let _ = c.kill();
            let _ = c.wait();
        }
        if mounted_at(&self.mountpoint) {
            let _ = sh("umount", &["-l", p(&self.mountpoint)]);
        }
        let dev = self.loop_device();
        if loop_attached(&dev, &self.fuse_dir()) {
            let _ = sh("losetup", &["-d", &dev]);
        }
        if mounted_at(&self.fuse_dir()) {
            let _ = sh("umount", &["-l", p(&self.fuse_dir())]);
        }
        let _ = imprint(&["umount", p(&self.mountpoint)]);
    }
}

/// Asserts that `got` holds the same tree as `want`: names, kinds, contents, link
/// targets, permission bits, owners and modification times (seconds).
fn assert_same_tree(want: &Path, got: &Path, check_times: bool) {
    let mut stack = vec![PathBuf::new()];
    let mut files = 0;
    while let Some(rel) = stack.pop() {
        let (w, g) = (want.join(&rel), got.join(&rel));
        let (wm, gm) = (
            std::fs::symlink_metadata(&w).unwrap(),
            std::fs::symlink_metadata(&g).unwrap_or_else(|e| panic!("{}: {e}", g.display())),
        );
        assert_eq!(wm.file_type(), gm.file_type(), "{}", rel.display());
        if !wm.file_type().is_symlink() {
            assert_eq!(
                wm.mode() & 0o7777,
                gm.mode() & 0o7777,
                "mode of {}",
                rel.display()
            );
            if check_times && !rel.as_os_str().is_empty() {
                assert_eq!(wm.mtime(), gm.mtime(), "mtime of {}", rel.display());
            }
        }
        assert_eq!(
            (wm.uid(), wm.gid()),
            (gm.uid(), gm.gid()),
            "owner of {}",
            rel.display()
        );
        if wm.is_dir() {
            let names = |d: &Path| {
                let mut v: Vec<_> = std::fs::read_dir(d)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .filter(|n| n != "lost+found")
                    .collect();
                v.sort();
                v
            };
            let wn = names(&w);
            assert_eq!(wn, names(&g), "entries of {}", rel.display());
            stack.extend(wn.into_iter().map(|n| rel.join(n)));
        } else if wm.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&w).unwrap(),
                std::fs::read_link(&g).unwrap()
            );
        } else {
            files += 1;
            assert!(
                blake3::hash(&std::fs::read(&w).unwrap())
                    == blake3::hash(&std::fs::read(&g).unwrap()),
                "contents of {}",
                rel.display()
            );
        }
    }
    assert!(files > 0);
}

#[test]
fn mount_serves_a_deep_tree_read_only_and_umount_removes_everything() {
    if !can_mount() {
        return;
    }
    let f = fixture();
    let before = store_state(&f.store());
    let mp = tempfile::tempdir().unwrap();
    let mut s = Served::start(&f.store(), "docs", mp.path());
    assert!(mounted_at(mp.path()));
    assert_eq!(s.mounted["fstype"], "ext4");
    assert_eq!(s.mounted["partition"], 1);

    let mut deep: Vec<String> = std::fs::read_dir(mp.path().join(DEEP))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    deep.sort();
    assert_eq!(deep, ["data.bin", "link-to-note", "note.txt", "private"]);
    assert_eq!(
        std::fs::read(mp.path().join(DEEP).join("link-to-note")).unwrap(),
        b"the one file somebody needs back\n"
    );
    // Every file of the tree (thousands, from /usr/share/doc) reads back identical.
    assert_same_tree(&f.tree(), mp.path(), true);
    // Read-only all the way down.
    let e = File::create(mp.path().join("new-file")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30 /* EROFS */), "{e}");
    let opts = sh_ok(
        "findmnt",
        &["-n", "-o", "OPTIONS", "--mountpoint", p(mp.path())],
    );
    assert!(
        opts.contains("ro,") && opts.contains("norecovery"),
        "{opts}"
    );

    let dev = s.loop_device();
    let fuse = s.fuse_dir();
    assert!(
        loop_attached(&dev, &fuse),
        "{dev} is not attached to a file in {fuse:?}"
    );
    let result = s.umount();
    assert!(result["chunks_fetched"].as_u64().unwrap() > 0);
    assert!(!mounted_at(mp.path()), "filesystem still mounted");
    assert!(!mounted_at(&fuse), "FUSE directory still mounted");
    assert!(!fuse.exists(), "FUSE directory left behind");
    assert!(!loop_attached(&dev, &fuse), "{dev} still attached");
    assert_eq!(store_state(&f.store()), before, "the store changed");
}

/// Honest chunk counting: a fresh mount in a new process starts with a cold cache (a
/// new FUSE file has no page cache), so what the server reports fetching is exactly
/// what mounting ext4 (superblock, group descriptors, root inode) plus a 12-level
/// lookup and one small read needed, kernel readahead included.
#[test]
fn reading_one_small_file_fetches_only_a_few_chunks() {
    if !can_mount() {
        return;
    }
    let f = fixture();
    let info: Value =
        serde_json::from_slice(&imprint_ok(&["--json", "info", p(&f.store()), "docs"]).stdout)
            .unwrap();
    let stored = info["data"]["manifest"]["stats"]["stored_chunks"]
        .as_u64()
        .unwrap();
    assert!(
        stored >= 100,
        "the image should be large: {stored} stored chunks"
    );
    let mp = tempfile::tempdir().unwrap();
    let mut s = Served::start(&f.store(), "docs", mp.path());
    let text = std::fs::read(mp.path().join(DEEP).join("note.txt")).unwrap();
    assert_eq!(text, b"the one file somebody needs back\n");
    let fetched = s.umount()["chunks_fetched"].as_u64().unwrap();
    eprintln!("mount + one small file: {fetched} of {stored} stored chunks fetched");
    assert!(
        fetched <= 12,
        "reading one small file fetched {fetched} of {stored} chunks"
    );
}

#[test]
fn extract_copies_trees_with_contents_modes_owners_and_times() {
    if !can_mount() {
        return;
    }
    let f = fixture();
    let before = store_state(&f.store());
    let to = tempfile::tempdir().unwrap();
    let o = imprint_ok(&[
        "--json",
        "extract",
        p(&f.store()),
        "docs",
        "--partition",
        "1",
        "/deep",
        "doc/git",
        "--to",
        p(to.path()),
    ]);
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let extracted: Vec<&str> = lines
        .iter()
        .filter(|v| v["type"] == "extracted")
        .map(|v| v["data"]["path"].as_str().unwrap())
        .collect();
    assert!(extracted.contains(&format!("/{DEEP}/note.txt").as_str()));
    let result = &lines.last().unwrap()["data"];
    assert_eq!(result["ok"], true);
    assert!(result["files"].as_u64().unwrap() >= 5);
    assert_same_tree(&f.tree().join("deep"), &to.path().join("deep"), true);
    if f.tree().join("doc/git").is_dir() {
        assert_same_tree(&f.tree().join("doc/git"), &to.path().join("git"), true);
    }
    // The private mount is gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/imprint/private/"), "{mounts}");

    // Never overwrites; a missing path is a usage error; neither leaves a mount.
    let again = imprint(&[
        "extract",
        p(&f.store()),
        "docs",
        "/deep",
        "--to",
        p(to.path()),
    ]);
    assert_eq!(again.status.code(), Some(4), "{}", out_text(&again));
    assert!(
        out_text(&again).contains("never overwrites"),
        "{}",
        out_text(&again)
    );
    let missing = imprint(&[
        "extract",
        p(&f.store()),
        "docs",
        "/no/such/file",
        "--to",
        p(to.path()),
    ]);
    assert_eq!(missing.status.code(), Some(2), "{}", out_text(&missing));
    assert!(out_text(&missing).contains("does not exist in the image"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/imprint/private/"), "{mounts}");
    assert_eq!(store_state(&f.store()), before, "the store changed");
}

#[test]
fn export_qcow2_and_raw_give_back_the_original_disk() {
    if !can_mount() {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let q = out.path().join("disk.qcow2");
    imprint_ok(&["export", p(&f.store()), "docs", p(&q), "--format", "qcow2"]);
    let back = out.path().join("back.raw");
    sh_ok(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", p(&q), p(&back)],
    );
    // The source's free space was zeros, so the whole disk must match byte for byte.
    sh_ok("cmp", &[p(&back), p(&f.disk())]);
    std::fs::remove_file(&back).unwrap();

    let raw = out.path().join("disk.raw");
    imprint_ok(&["export", p(&f.store()), "docs", p(&raw), "--format", "raw"]);
    sh_ok("cmp", &[p(&raw), p(&f.disk())]);
    let md = std::fs::metadata(&raw).unwrap();
    assert!(
        md.blocks() * 512 < md.len() * 3 / 4,
        "raw export is not sparse"
    );
    std::fs::remove_file(&raw).unwrap();

    let part = out.path().join("p1.raw");
    imprint_ok(&[
        "export",
        p(&f.store()),
        "docs",
        p(&part),
        "--format",
        "raw",
        "--partition",
        "1",
    ]);
    let want = sh_ok(
        "sh",
        &[
            "-c",
            &format!(
                "dd if={} bs=1M skip=1 count=256 status=none | cmp - {} && echo same",
                p(&f.disk()),
                p(&part)
            ),
        ],
    );
    assert_eq!(want.trim(), "same");
    // An existing file is never overwritten.
    let o = imprint(&["export", p(&f.store()), "docs", p(&part), "--format", "raw"]);
    assert_eq!(o.status.code(), Some(4), "{}", out_text(&o));
}

/// `--json` lines of one type, in order.
fn events(o: &Output, kind: &str) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .map(|v| v["data"].clone())
        .collect()
}

#[test]
fn export_reports_progress_with_rate_and_eta() {
    if !can_mount() {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let disk_size = std::fs::metadata(f.disk()).unwrap().len();
    for (format, phase) in [
        ("qcow2", "converting to qcow2"),
        ("raw", "writing raw file"),
    ] {
        let file = out.path().join(format!("j.{format}"));
        let o = imprint_ok(&[
            "--json",
            "export",
            p(&f.store()),
            "docs",
            p(&file),
            "--format",
            format,
        ]);
        let phases = events(&o, "phase");
        assert_eq!(
            phases,
            vec![serde_json::json!({ "phase": phase })],
            "{}",
            out_text(&o)
        );
        let progress = events(&o, "progress");
        assert!(!progress.is_empty(), "no progress events: {}", out_text(&o));
        let done: Vec<u64> = progress
            .iter()
            .map(|e| e["done_bytes"].as_u64().unwrap())
            .collect();
        assert!(
            done.windows(2).all(|w| w[0] <= w[1]),
            "progress went back: {done:?}"
        );
        let last = progress.last().unwrap();
        assert_eq!(
            last["done_bytes"], last["total_bytes"],
            "never finished: {last}"
        );
        if format == "qcow2" {
            // qemu-img reads the whole disk through the FUSE file.
            assert_eq!(last["total_bytes"].as_u64(), Some(disk_size), "{last}");
        } else {
            // A raw export reads only the stored chunks: less than the disk, not nothing.
            let total = last["total_bytes"].as_u64().unwrap();
            assert!(total > 0 && total < disk_size, "{last}");
            assert!(last["done_chunks"].as_u64().unwrap() > 0, "{last}");
        }
        for key in [
            "rate_bytes_per_sec",
            "average_rate_bytes_per_sec",
            "eta_seconds",
            "phase",
        ] {
            assert!(
                last.get(key).is_some(),
                "progress event without {key}: {last}"
            );
        }
        let result = &events(&o, "result")[0];
        assert_eq!(result["ok"], true);
    }
    // Without --json: the human progress line on stderr (bytes, percent, rate, ETA).
    let file = out.path().join("h.raw");
    let o = imprint_ok(&["export", p(&f.store()), "docs", p(&file), "--format", "raw"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .rfind(|l| l.starts_with("writing raw file"))
        .unwrap_or_else(|| panic!("no progress line: {}", out_text(&o)));
    assert!(
        line.contains("100.0%") && line.contains("/s") && line.contains("ETA"),
        "{line}"
    );
    assert!(err.contains("exported \"docs\""), "{}", out_text(&o));
}

#[test]
fn a_killed_server_leaves_nothing_stuck_after_umount() {
    if !can_mount() {
        return;
    }
    let f = fixture();
    let mp = tempfile::tempdir().unwrap();
    let mut s = Served::start(&f.store(), "docs", mp.path());
    let (dev, fuse) = (s.loop_device(), s.fuse_dir());
    let mut child = s.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    assert!(
        mounted_at(mp.path()),
        "the kernel keeps the mount of a dead server"
    );
    let o = imprint_ok(&["umount", p(mp.path())]);
    assert!(out_text(&o).contains("had died"), "{}", out_text(&o));
    assert!(!mounted_at(mp.path()), "filesystem still mounted");
    assert!(!mounted_at(&fuse), "FUSE directory still mounted");
    // The loop device goes once the lazily unmounted filesystem lets go of it.
    let t = std::time::Instant::now();
    while loop_attached(&dev, &fuse) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!loop_attached(&dev, &fuse), "{dev} still attached");
    let again = imprint(&["umount", p(mp.path())]);
    assert_eq!(again.status.code(), Some(4), "{}", out_text(&again));
}

#[test]
fn umount_refuses_what_imprint_did_not_mount() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = imprint(&["umount", p(dir.path())]);
    assert_eq!(o.status.code(), Some(4), "{}", out_text(&o));
    assert!(
        out_text(&o).contains("is not an Imprint mount"),
        "{}",
        out_text(&o)
    );

    // Somebody else's mount stays mounted.
    sh_ok(
        "mount",
        &["-t", "tmpfs", "-o", "size=1m", "tmpfs", p(dir.path())],
    );
    let o = imprint(&["umount", p(dir.path())]);
    let still = mounted_at(dir.path());
    let _ = sh("umount", &[p(dir.path())]);
    assert_eq!(o.status.code(), Some(4), "{}", out_text(&o));
    assert!(out_text(&o).contains("tmpfs"), "{}", out_text(&o));
    assert!(
        still,
        "imprint umount unmounted a mount that is not its own"
    );
}

#[test]
fn an_ext4_captured_dirty_mounts_read_only_without_journal_replay() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree, false);
    let disk = make_disk(dir.path(), &tree, 80, 64);
    // Mark the filesystem as needing journal recovery, as after a crash.
    let part = dir.path().join("p1.raw");
    sh_ok(
        "sh",
        &[
            "-c",
            &format!(
                "dd if={} of={} bs=1M skip=1 count=64 status=none",
                p(&disk),
                p(&part)
            ),
        ],
    );
    sh_ok("debugfs", &["-w", "-R", "feature needs_recovery", p(&part)]);
    let features = sh_ok("dumpe2fs", &["-h", p(&part)]);
    assert!(features.contains("needs_recovery"), "{features}");
    copy_into(&part, &disk, PART_START);
    let store = dir.path().join("store");
    imprint_ok(&["capture", p(&disk), p(&store), "--name", "dirty"]);
    let before = store_state(&store);

    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut s = Served::start(&store, "dirty", &mp);
    assert_same_tree(&tree.join("deep"), &mp.join("deep"), true);
    s.umount();
    assert_eq!(store_state(&store), before, "the store changed");
    imprint_ok(&["verify", p(&store), "dirty"]);
}
