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
    // The first record's payload starts after the pack header (32) and record header
    // (64); a group record's frame after its member table (FORMAT.md §3).
    let mut frame = 32 + 64;
    if b[32 + 4] == 2 {
        let members = u32::from_le_bytes(b[frame..frame + 4].try_into().unwrap()) as usize;
        frame += 4 + 36 * members;
    }
    b[frame + 100] ^= 0x55;
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
    let (target, r) = restore_onto(&store, &img, 0xAA, disk.len());
    let e = r.unwrap_err();
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

/// 24 MiB of text that compresses, different in every MiB, with a random MiB and a
/// zero MiB among it.
fn text_disk() -> Vec<u8> {
    let mut v = Vec::with_capacity(24 * MIB);
    let mut x = 7u64;
    for mib in 0..24 {
        for line in 0.. {
            if v.len() >= (mib + 1) * MIB {
                break;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = match mib {
                5 => format!("{}", x as u8 as char),
                9 => "\0".to_string(),
                _ => format!(
                    "mib {mib} line {line}: value {} of the sequence\n",
                    x % 1000
                ),
            };
            v.extend_from_slice(s.as_bytes());
        }
        v.truncate((mib + 1) * MIB);
    }
    v
}

/// Restores `img` onto a disk of `len` bytes of `fill`; returns the disk and the result.
fn restore_onto(
    store: &Store,
    img: &Image,
    fill: u8,
    len: usize,
) -> (MemDisk, Result<RestoreReport>) {
    let target = MemDisk::from_vec(vec![fill; len]);
    let opts = RestoreOptions::default();
    let r = restore(store, img, &target, len as u64, &opts, &mut NullSink);
    (target, r)
}

/// Restores `img` onto a zeroed disk and checks it comes out as `disk`.
fn restores_to(store: &Store, img: &Image, disk: &[u8]) -> RestoreReport {
    let (target, r) = restore_onto(store, img, 0, disk.len());
    assert!(target.to_vec() == disk);
    r.unwrap()
}

/// The encodings of every chunk the image refers to.
fn encodings(store: &Store, img: &Image) -> Vec<imaging::format::Encoding> {
    img.map
        .entries
        .iter()
        .filter(|(_, id)| *id != imaging::format::ZERO_ID)
        .map(|(_, id)| store.location(id).unwrap().encoding)
        .collect()
}

#[test]
fn new_chunks_are_compressed_in_group_frames_that_restore_verify_and_delta_like_chunks() {
    use imaging::format::Encoding;
    let t = tempfile::tempdir().unwrap();
    let disk = text_disk();
    let rep = cap(t.path(), &disk, "a");
    assert_eq!((rep.new_chunks, rep.zero_chunks), (23, 1), "{rep:?}");
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    let enc = encodings(&store, &img);
    // Frames of up to four 1 MiB chunks; the random MiB compresses too (one byte a
    // line of text), so every chunk is in a frame.
    assert!(enc.iter().all(|e| *e == Encoding::Group), "{enc:?}");
    let frames: std::collections::HashSet<_> = img
        .map
        .entries
        .iter()
        .filter_map(|(_, id)| store.location(id).and_then(|l| l.frame()))
        .collect();
    assert_eq!(
        frames.len(),
        6,
        "24 chunks less the zero one, in runs of four"
    );
    // The image's size counts each frame once, and is what the packs hold.
    let packs = dir_size(&t.path().join("packs"));
    let stats = &img.manifest.stats;
    assert!(
        stats.stored_bytes < packs && packs - stats.stored_bytes < 4096,
        "{stats:?} {packs}"
    );
    assert_eq!(
        stats.stored_bytes,
        stats.new_bytes - 6 * (4 + 4 * 36) + 36,
        "{stats:?}"
    );

    let r = verify_image(&store, &img, 2, &mut NullSink).unwrap();
    assert_eq!(r.read_bytes, stats.stored_bytes, "each frame read once");
    let full = restores_to(&store, &img, &disk);
    assert_eq!(full.read_bytes, stats.stored_bytes, "each frame read once");

    // Chunk by chunk (as the browser reads files), backwards across frames too.
    for &(idx, id) in img.map.entries.iter().rev() {
        if id != imaging::format::ZERO_ID {
            let at = idx as usize * MIB;
            let got = store.read_chunk(&id, at as u64).unwrap();
            assert!(got[..] == disk[at..at + MIB], "chunk {idx}");
        }
    }

    // A delta onto a copy with one changed byte in the third chunk of a frame reads
    // and writes only that chunk's frame and block.
    let mut old = disk.clone();
    old[14 * MIB + 5000] ^= 1;
    let target = MemDisk::from_vec(old);
    let delta = RestoreOptions {
        delta: true,
        ..Default::default()
    };
    let r = restore(
        &store,
        &img,
        &target,
        disk.len() as u64,
        &delta,
        &mut NullSink,
    )
    .unwrap();
    assert_eq!(target.to_vec(), disk);
    assert_eq!((r.unchanged_chunks, r.hashed_chunks), (22, 2), "{r:?}");
    // The table area (first MiB) is always written; the changed chunk is one 4 KiB block.
    assert_eq!(r.written_bytes, MIB as u64 + 4096, "{r:?}");

    // A damaged frame fails each of its members, and the restore stops.
    let key = store.location(&img.map.entries[13].1).unwrap();
    let pack = std::fs::read_dir(t.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    b[key.offset as usize + key.stored_len as usize / 2] ^= 0x55;
    std::fs::write(&pack, b).unwrap();
    let e = verify_image(&store, &img, 2, &mut NullSink).unwrap_err();
    assert!(e.to_string().starts_with("4 damaged chunk"), "{e}");
    let e = restore_onto(&store, &img, 0, disk.len()).1.unwrap_err();
    assert!(e.is_mismatch(), "{e}");
}

#[test]
fn group_records_of_a_capture_that_died_are_recovered_and_reused() {
    let t = tempfile::tempdir().unwrap();
    // Random bytes: frames as large as their chunks, so the first leaves the 4 MiB
    // write buffer before the crash.
    let mut x = 99u64;
    let disk: Vec<u8> = (0..12 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    {
        let store = Store::open_writable(t.path(), DEFAULT_CHUNK_SIZE).unwrap();
        let mut w = store.writer().unwrap();
        // Two group frames of four chunks each, then the crash: no seal, no manifest.
        for frame in disk.chunks(4 * MIB).take(2) {
            let members: Vec<_> = frame
                .chunks(MIB)
                .map(|c| (*blake3::hash(c).as_bytes(), c.len() as u32))
                .collect();
            let z = zstd::bulk::compress(frame, 3).unwrap();
            assert_eq!(w.put_group(&members, &z).unwrap(), vec![true; 4]);
        }
        std::mem::forget(w);
    }
    let store = Store::open_writable(t.path(), DEFAULT_CHUNK_SIZE).unwrap();
    assert!(
        store.chunk_count() >= 4,
        "at least the first frame left the write buffer"
    );
    let first = store
        .location(blake3::hash(&disk[MIB..2 * MIB]).as_bytes())
        .unwrap();
    assert_eq!(
        (first.encoding, first.skip),
        (imaging::format::Encoding::Group, MIB as u32)
    );
    drop(store);
    let rep = cap(t.path(), &disk, "a");
    assert!(rep.dedup_chunks >= 4, "{rep:?}");
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    verify_image(&store, &img, 2, &mut NullSink).unwrap();
    restores_to(&store, &img, &disk);
}

#[test]
fn a_version_1_store_gets_no_group_records_and_stays_version_1() {
    use imaging::format::Encoding;
    let t = tempfile::tempdir().unwrap();
    drop(Store::create(t.path(), DEFAULT_CHUNK_SIZE).unwrap());
    let cfg = t.path().join("imprint-store.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
    std::fs::write(&cfg, text.replace("\"version\": 2", "\"version\": 1")).unwrap();
    let disk = text_disk();
    cap(t.path(), &disk, "a");
    let store = Store::open(t.path()).unwrap();
    assert!(!store.groups());
    let img = store.load_image("a").unwrap();
    assert!(encodings(&store, &img).iter().all(|e| *e == Encoding::Zstd));
    for e in std::fs::read_dir(t.path().join("packs")).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        if p.extension().is_some_and(|x| x == "pack" || x == "idx") {
            assert_eq!(b[8..12], 1u32.to_le_bytes(), "{}", p.display());
        }
    }
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .contains("\"version\": 1"));
    restores_to(&store, &img, &disk);
}

#[test]
fn jobs_batch_a_frames_members_together_and_every_other_stored_chunk_alone() {
    let t = tempfile::tempdir().unwrap();
    // Text (one frame of four), a zero MiB inside the next frame's run, random MiBs
    // (raw records, one each), then text again.
    let text = text_disk();
    let mut disk = text[..4 * MIB].to_vec();
    disk.extend_from_slice(&text[4 * MIB..5 * MIB]);
    disk.extend(std::iter::repeat_n(0u8, MIB));
    disk.extend_from_slice(&text[6 * MIB..8 * MIB]);
    let mut x = 5u64;
    disk.extend((0..4 * MIB).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    disk.extend_from_slice(&text[16 * MIB..20 * MIB]);
    cap(t.path(), &disk, "a");
    let store = Store::open(t.path()).unwrap();
    let img = store.load_image("a").unwrap();
    let batches = std::sync::Mutex::new(Vec::new());
    store.batches(&img.map.entries, |e| e.1, &|b| {
        batches
            .lock()
            .unwrap()
            .push(b.iter().map(|e| e.0).collect::<Vec<_>>());
        true
    });
    let want: Vec<Vec<u64>> = vec![
        vec![0, 1, 2, 3],
        vec![4, 5, 6, 7],
        vec![8],
        vec![9],
        vec![10],
        vec![11],
        vec![12, 13, 14, 15],
    ];
    assert_eq!(batches.into_inner().unwrap(), want);
    restores_to(&store, &img, &disk);
}
