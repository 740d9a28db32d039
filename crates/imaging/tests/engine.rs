//! Engine behaviour on in-memory disks and temporary stores.

use imaging::format::SourceDisk;
use imaging::*;
use std::path::Path;

const MIB: usize = 1 << 20;

/// A disk with random, text and zero regions, deterministic per seed.
fn test_disk(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut x = seed | 1;
    // 768 KiB regions: random, text, then three of zeros, so some whole chunks are
    // zero and others mix kinds.
    for (i, chunk) in v.chunks_mut(768 * 1024).enumerate() {
        match i % 5 {
            0 => chunk.iter_mut().for_each(|b| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }),
            1 => {
                let text = b"The quick brown fox jumps over the lazy dog. ";
                chunk
                    .iter_mut()
                    .zip(text.iter().cycle())
                    .for_each(|(b, t)| *b = *t);
            }
            _ => {}
        }
    }
    v
}

fn opts(name: &str, size: u64) -> CaptureOptions {
    CaptureOptions {
        name: name.into(),
        description: "test".into(),
        level: 3,
        source: SourceDisk {
            path: "mem".into(),
            size,
            logical_sector_size: 512,
            physical_sector_size: 512,
            ..Default::default()
        },
        extents: vec![Extent::new(0, size)],
        partition_table: None,
        partitions: vec![],
        threads: 2,
    }
}

fn cap(root: &Path, disk: &[u8], name: &str) -> CaptureReport {
    let store = Store::open_writable(root, DEFAULT_CHUNK_SIZE).unwrap();
    let mut w = store.writer().unwrap();
    let src = MemDisk::from_vec(disk.to_vec());
    capture(&mut w, &src, opts(name, disk.len() as u64), &mut NullSink).unwrap()
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dir_size(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

#[test]
fn capture_then_restore_is_byte_identical_and_verifies() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(24 * MIB + 12345, 1);
    let rep = cap(t.path(), &disk, "a");
    assert!(rep.zero_chunks > 0 && rep.new_chunks > 0);
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    verify_image(&store, &img, 2, &mut NullSink).unwrap();
    let target = MemDisk::new(disk.len());
    let r = restore(
        &store,
        &img,
        &target,
        disk.len() as u64,
        &RestoreOptions::default(),
        &mut NullSink,
    )
    .unwrap();
    assert_eq!(r.chunks, img.map.entries.len() as u64);
    assert!(target.to_vec() == disk, "restored bytes differ");
    verify_against(&img, &target, disk.len() as u64, 2, &mut NullSink).unwrap();
}

#[test]
fn capturing_the_same_disk_twice_adds_almost_nothing_and_one_changed_mib_adds_one_chunk() {
    let t = tempfile::tempdir().unwrap();
    let mut disk = test_disk(32 * MIB, 2);
    cap(t.path(), &disk, "one");
    let before = dir_size(t.path());
    let rep = cap(t.path(), &disk, "two");
    assert_eq!(rep.new_chunks, 0);
    let grown = dir_size(t.path()) - before;
    assert!(
        grown * 100 < before,
        "second capture grew the store by {grown} of {before}"
    );
    for b in &mut disk[5 * MIB..6 * MIB] {
        *b = b.wrapping_add(1);
    }
    let rep = cap(t.path(), &disk, "three");
    assert_eq!(rep.new_chunks, 1);
}

#[test]
fn a_disk_that_differs_fails_verify_against_naming_the_offset() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(8 * MIB, 3);
    cap(t.path(), &disk, "a");
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    let mut other = disk.clone();
    other[3 * MIB + 7] ^= 0xff;
    let e = verify_against(&img, &MemDisk::from_vec(other), 8 << 20, 2, &mut NullSink).unwrap_err();
    assert!(e.is_mismatch());
    assert!(
        e.to_string().contains(&format!("offset {}", 3 * MIB)),
        "{e}"
    );
}

fn flip_byte_in_a_pack(root: &Path) {
    let packs = root.join("packs");
    let p = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    let mut b = std::fs::read(&p).unwrap();
    // The first record's payload starts after the pack header (32) and record header (64).
    b[32 + 64 + 100] ^= 0x55;
    std::fs::write(&p, b).unwrap();
}

#[test]
fn a_flipped_byte_in_a_pack_fails_verify_and_stops_restore_with_the_table_zeroed() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(8 * MIB, 4);
    cap(t.path(), &disk, "a");
    flip_byte_in_a_pack(t.path());
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    let e = verify_image(&store, &img, 2, &mut NullSink).unwrap_err();
    assert!(e.is_mismatch(), "{e}");
    // Workers finish in any order, so the pack's first record may hold any chunk: the
    // message must name a chunk and a disk offset, whichever it is.
    let msg = e.to_string();
    assert!(
        msg.contains("1 damaged chunk") && msg.contains("disk offset"),
        "{msg}"
    );

    // A target that held a bootable-looking first MiB.
    let target = MemDisk::from_vec(vec![0xAA; disk.len()]);
    let e = restore(
        &store,
        &img,
        &target,
        disk.len() as u64,
        &RestoreOptions::default(),
        &mut NullSink,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(e.is_mismatch(), "{msg}");
    assert!(msg.contains("first MiB was zeroed"), "{msg}");
    assert!(target.to_vec()[..MIB].iter().all(|&b| b == 0));
}

#[test]
fn a_truncated_pack_is_reported_as_truncated() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(8 * MIB, 5);
    cap(t.path(), &disk, "a");
    let p = std::fs::read_dir(t.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    let e = verify_image(&store, &img, 2, &mut NullSink).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn an_edited_manifest_fails_its_root_hash_and_a_newer_version_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(4 * MIB, 6);
    cap(t.path(), &disk, "a");
    let mp = t.path().join("images/a.json");
    let orig = std::fs::read_to_string(&mp).unwrap();
    std::fs::write(
        &mp,
        orig.replace("\"description\": \"test\"", "\"description\": \"x\""),
    )
    .unwrap();
    let store = Store::open(t.path()).unwrap();
    assert!(matches!(
        store.load_image("a").unwrap_err(),
        Error::RootHashMismatch { .. }
    ));
    std::fs::write(
        &mp,
        orig.replace("\"format_version\": 1", "\"format_version\": 2"),
    )
    .unwrap();
    let e = store.load_image("a").unwrap_err();
    assert!(matches!(e, Error::FormatVersion { found: 2, .. }), "{e}");
    assert!(e.to_string().contains("upgrade"));
}

#[test]
fn a_capture_that_died_leaves_chunks_a_rerun_reuses() {
    let t = tempfile::tempdir().unwrap();
    let disk: Vec<u8> = (0..16 * MIB as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i >> 20) as u8)
        .collect();
    {
        let store = Store::open_writable(t.path(), DEFAULT_CHUNK_SIZE).unwrap();
        let mut w = store.writer().unwrap();
        // Simulate a crash: chunks appended, no seal, no manifest. Whatever left the
        // write buffer (at least 4 of the 8 MiB) must be found again.
        for c in disk.chunks(MIB).take(8) {
            let id = *blake3::hash(c).as_bytes();
            w.put(id, imaging::format::Encoding::Raw, c.len() as u32, c)
                .unwrap();
        }
        std::mem::forget(w);
    }
    let store = Store::open(t.path()).unwrap();
    assert!(store.image_names().unwrap().is_empty());
    let rep = cap(t.path(), &disk, "a");
    assert!(rep.dedup_chunks >= 3, "{rep:?}");
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    verify_image(&store, &img, 2, &mut NullSink).unwrap();
}

#[test]
fn extents_mask_unused_bytes_to_zero_and_restore_only_writes_inside_the_window() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(4 * MIB, 8);
    let store = Store::open_writable(t.path(), DEFAULT_CHUNK_SIZE).unwrap();
    let mut w = store.writer().unwrap();
    let mut o = opts("m", disk.len() as u64);
    o.extents = vec![Extent::new(100, 1000), Extent::new(3 * MIB as u64, 4096)];
    capture(&mut w, &MemDisk::from_vec(disk.clone()), o, &mut NullSink).unwrap();
    drop(w);
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("m").unwrap();
    assert_eq!(img.map.entries.len(), 2);
    let target = MemDisk::from_vec(vec![7; disk.len()]);
    let ro = RestoreOptions {
        deferred: vec![],
        window: Some(Extent::new(2 * MIB as u64, 2 * MIB as u64)),
        ..Default::default()
    };
    restore(&store, &img, &target, disk.len() as u64, &ro, &mut NullSink).unwrap();
    let out = target.to_vec();
    assert!(
        out[..2 * MIB].iter().all(|&b| b == 7),
        "wrote outside the window"
    );
    assert_eq!(
        &out[3 * MIB..3 * MIB + 4096],
        &disk[3 * MIB..3 * MIB + 4096]
    );
    assert!(out[3 * MIB + 4096..].iter().all(|&b| b == 0));
}

#[test]
fn a_name_taken_in_another_case_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let disk = test_disk(2 * MIB, 9);
    cap(t.path(), &disk, "Lab");
    let store = Store::open_writable(t.path(), DEFAULT_CHUNK_SIZE).unwrap();
    let mut w = store.writer().unwrap();
    let e = capture(
        &mut w,
        &MemDisk::from_vec(disk.clone()),
        opts("lab", disk.len() as u64),
        &mut NullSink,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ImageExists { .. }), "{e}");
}
