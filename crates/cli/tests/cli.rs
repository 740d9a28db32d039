//! The `imprint` binary end to end, on generated disk image files. Root is needed only
//! for the full-destination test (it mounts a small tmpfs it made itself).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MIB: usize = 1 << 20;

fn imprint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imprint"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running imprint")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Deterministic xorshift bytes.
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

/// A disk image of `mib` MiB: a GPT made by sgdisk, then regions of random data, text
/// and zeros in the partitions.
fn make_disk(dir: &Path, mib: usize) -> PathBuf {
    let path = dir.join("disk.img");
    let mut v = vec![0u8; mib * MIB];
    for (i, region) in v.chunks_mut(3 * MIB).enumerate().skip(1) {
        match i % 3 {
            0 => fill_random(region, i as u64),
            1 => {
                let text = format!("region {i}: all work and no play makes Jack a dull boy\n");
                for (b, t) in region.iter_mut().zip(text.bytes().cycle()) {
                    *b = t;
                }
            }
            _ => {}
        }
    }
    // The last 2 MiB stay zero apart from the backup GPT.
    let n = v.len();
    v[n - 2 * MIB..].fill(0);
    std::fs::write(&path, &v).unwrap();
    // Without -q: `sgdisk -q` writes nothing to image files (shared/notes/host-kernel.md).
    let st = Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+32M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .expect("sgdisk (package gdisk) must be installed");
    assert!(st.success());
    path
}

fn capture(disk: &Path, store: &Path, name: &str) -> Output {
    imprint(&["capture", p(disk), p(store), "--name", name])
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
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

fn first_pack(store: &Path) -> PathBuf {
    std::fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .expect("a pack")
}

#[test]
fn capture_restore_verify_round_trip_is_byte_identical() {
    let t = tempfile::tempdir().unwrap();
    let disk = make_disk(t.path(), 256);
    let store = t.path().join("store");
    let o = capture(&disk, &store, "golden");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = t.path().join("restored.img");
    let o = imprint(&["restore", p(&store), "golden", p(&out), "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&disk).unwrap(),
        "restored disk differs"
    );
    let o = imprint(&["verify", p(&store), "golden"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = imprint(&["verify", p(&store), "golden", "--against", p(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // sgdisk agrees the restored table is sound.
    let v = Command::new("sgdisk").arg("-v").arg(&out).output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
}

#[test]
fn recapture_adds_under_one_percent_and_one_changed_mib_adds_one_chunk() {
    let t = tempfile::tempdir().unwrap();
    let disk = make_disk(t.path(), 200);
    let store = t.path().join("store");
    assert_eq!(code(&capture(&disk, &store, "one")), 0);
    let before = dir_size(&store);
    let o = imprint(&["--json", "capture", p(&disk), p(&store), "--name", "two"]);
    assert_eq!(code(&o), 0);
    let grown = dir_size(&store) - before;
    println!("second capture of the same disk: store {before} -> +{grown} bytes");
    assert!(grown * 100 < before, "grew by {grown} of {before}");
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["type"], "result");
    assert_eq!(v["data"]["new_chunks"], 0);

    let mut bytes = std::fs::read(&disk).unwrap();
    for b in &mut bytes[100 * MIB..101 * MIB] {
        *b ^= 0x5a;
    }
    std::fs::write(&disk, &bytes).unwrap();
    let o = imprint(&["--json", "capture", p(&disk), p(&store), "--name", "three"]);
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    println!("one changed MiB: {} new chunk(s)", v["data"]["new_chunks"]);
    assert_eq!(v["data"]["new_chunks"], 1);
}

/// A target that holds a recognizable pattern, so "unchanged" is checked byte for byte.
fn sentinel_target(dir: &Path, mib: usize) -> (PathBuf, Vec<u8>) {
    let path = dir.join("target.img");
    let mut v = vec![0u8; mib * MIB];
    fill_random(&mut v, 99);
    std::fs::write(&path, &v).unwrap();
    (path, v)
}

fn assert_refused(o: &Output, exit: i32, words: &[&str], target: &Path, before: &[u8]) {
    let msg = stderr(o);
    assert_eq!(code(o), exit, "exit code; stderr: {msg}");
    for w in words {
        assert!(msg.contains(w), "message lacks {w:?}: {msg}");
    }
    assert!(
        std::fs::read(target).unwrap() == before,
        "the target was modified"
    );
}

#[test]
fn bad_input_is_refused_before_any_write() {
    let t = tempfile::tempdir().unwrap();
    let disk = make_disk(t.path(), 64);
    let store = t.path().join("store");
    assert_eq!(code(&capture(&disk, &store, "img")), 0);
    let (target, before) = sentinel_target(t.path(), 64);
    let tgt = p(&target);
    let restore = |store: &Path, name: &str| imprint(&["restore", p(store), name, tgt, "--yes"]);

    // A store directory that is not a store.
    let not_store = t.path().join("just-a-dir");
    std::fs::create_dir(&not_store).unwrap();
    assert_refused(
        &restore(&not_store, "img"),
        1,
        &["not an Imprint store"],
        &target,
        &before,
    );

    // An image name with ../
    assert_refused(
        &restore(&store, "../img"),
        2,
        &["invalid image name", ".."],
        &target,
        &before,
    );

    // A missing manifest.
    assert_refused(
        &restore(&store, "nosuch"),
        1,
        &["no image named \"nosuch\""],
        &target,
        &before,
    );

    // A malformed manifest.
    let manifest = store.join("images/img.json");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    assert_refused(
        &restore(&store, "img"),
        1,
        &["manifest", "malformed"],
        &target,
        &before,
    );

    // A manifest from a newer format version.
    std::fs::write(
        &manifest,
        good.replace("\"format_version\": 1", "\"format_version\": 7"),
    )
    .unwrap();
    assert_refused(
        &restore(&store, "img"),
        1,
        &["format version 7", "upgrade imprint"],
        &target,
        &before,
    );
    std::fs::write(&manifest, &good).unwrap();

    // A target smaller than the image.
    let small = t.path().join("small.img");
    let small_before = vec![0x11u8; 32 * MIB];
    std::fs::write(&small, &small_before).unwrap();
    let o = imprint(&["restore", p(&store), "img", p(&small), "--yes"]);
    assert_refused(&o, 4, &["need", "bytes", "larger"], &small, &small_before);

    // Without --yes and without a terminal nothing happens.
    let o = imprint(&["restore", p(&store), "img", tgt]);
    assert_refused(&o, 2, &["pass --yes"], &target, &before);

    // And with everything right, the same target is written.
    assert_eq!(code(&restore(&store, "img")), 0);
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&disk).unwrap());
}

#[test]
fn a_flipped_byte_fails_verify_and_stops_restore_with_the_first_mib_zeroed() {
    let t = tempfile::tempdir().unwrap();
    let disk = make_disk(t.path(), 64);
    let store = t.path().join("store");
    assert_eq!(code(&capture(&disk, &store, "img")), 0);
    let pack = first_pack(&store);
    let mut b = std::fs::read(&pack).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&pack, &b).unwrap();

    let o = imprint(&["verify", p(&store), "img"]);
    let msg = stderr(&o);
    assert_eq!(code(&o), 3, "{msg}");
    assert!(
        msg.contains("chunk") && msg.contains("disk offset"),
        "{msg}"
    );

    let (target, _) = sentinel_target(t.path(), 64);
    let o = imprint(&["restore", p(&store), "img", p(&target), "--yes"]);
    let msg = stderr(&o);
    assert_eq!(code(&o), 3, "{msg}");
    assert!(msg.contains("restore stopped at disk offset"), "{msg}");
    assert!(msg.contains("first MiB was zeroed"), "{msg}");
    let after = std::fs::read(&target).unwrap();
    assert!(after[..MIB].iter().all(|&b| b == 0), "first MiB not zeroed");
}

#[test]
fn a_truncated_pack_fails_verify_and_restore() {
    let t = tempfile::tempdir().unwrap();
    let disk = make_disk(t.path(), 64);
    let store = t.path().join("store");
    assert_eq!(code(&capture(&disk, &store, "img")), 0);
    let pack = first_pack(&store);
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 5000)
        .unwrap();
    let o = imprint(&["verify", p(&store), "img"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    let (target, _) = sentinel_target(t.path(), 64);
    let o = imprint(&["restore", p(&store), "img", p(&target), "--yes"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("truncated") && stderr(&o).contains("first MiB was zeroed"));
    assert!(std::fs::read(&target).unwrap()[..MIB]
        .iter()
        .all(|&b| b == 0));
}

/// A tmpfs mounted by the test, unmounted on drop.
struct Tmpfs(PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_destination_fails_cleanly_and_keeps_earlier_images() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs needs root");
    let _guard = Tmpfs(mnt.clone());
    let store = mnt.join("store");

    let small = t.path().join("small.img");
    let mut v = vec![0u8; 8 * MIB];
    fill_random(&mut v, 5);
    std::fs::write(&small, &v).unwrap();
    assert_eq!(code(&capture(&small, &store, "fits")), 0);

    let big = t.path().join("big.img");
    let mut v = vec![0u8; 64 * MIB];
    fill_random(&mut v, 6);
    std::fs::write(&big, &v).unwrap();
    let o = capture(&big, &store, "too-big");
    let msg = stderr(&o);
    assert_eq!(code(&o), 1, "{msg}");
    assert!(
        msg.contains("No space left on device") && msg.contains("earlier images are intact"),
        "{msg}"
    );

    let o = imprint(&["images", p(&store)]);
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(list.contains("fits") && !list.contains("too-big"), "{list}");
    let o = imprint(&["verify", p(&store), "fits"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The failed capture's partial pack was removed, so the space came back.
    assert!(
        dir_size(&store) < 12 * MIB as u64,
        "store holds {}",
        dir_size(&store)
    );
}
