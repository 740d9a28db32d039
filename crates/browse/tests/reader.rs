//! `ImageReader` against the bytes it was captured from: every read equals the source
//! (zeros where nothing was stored), only touched chunks are fetched, the cache holds.
//! No root needed: a raw disk file with no partition table is captured whole.

mod common;

use browse::{ImageReader, View};
use common::Nginx;
use imaging::{ReadAt, Store};
use std::path::Path;
use std::sync::Arc;

const MIB: usize = 1 << 20;

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

/// A 24 MiB + 12 KiB disk (the last chunk is short): random MiBs, zero MiBs, text.
fn disk() -> Vec<u8> {
    let mut v = vec![0u8; 24 * MIB + 12 * 1024];
    for (i, c) in v.chunks_mut(MIB).enumerate() {
        match i % 4 {
            0 => fill_random(c, i as u64 + 7),
            1 => {}
            2 => {
                for (b, t) in c.iter_mut().zip(b"one file back, please\n".iter().cycle()) {
                    *b = *t;
                }
            }
            _ => fill_random(&mut c[..4096], i as u64),
        }
    }
    v
}

fn capture(dir: &Path, bytes: &[u8]) -> (Arc<Store>, imaging::Image) {
    let src = dir.join("disk.raw");
    std::fs::write(&src, bytes).unwrap();
    let store = common::capture(&src, &dir.join("store"), "raw");
    let image = store.load_image("raw").unwrap();
    (store, image)
}

#[test]
fn reads_equal_the_captured_disk_and_fetch_only_touched_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = disk();
    let (store, image) = capture(dir.path(), &src);
    let r = ImageReader::with_cache(store, &image, 4);
    assert_eq!(r.size(), src.len() as u64);

    // A read inside one stored chunk fetches exactly that chunk, once.
    let mut b = vec![0u8; 5000];
    r.read_exact_at(&mut b, 2 * MIB as u64 + 100).unwrap();
    assert_eq!(b, src[2 * MIB + 100..2 * MIB + 5100]);
    assert_eq!(r.chunks_fetched(), 1);
    r.read_exact_at(&mut b, 2 * MIB as u64 + 9000).unwrap();
    assert_eq!(r.chunks_fetched(), 1, "a cached chunk is not fetched again");

    // An all-zero chunk reads as zeros without touching the store.
    r.read_exact_at(&mut b, MIB as u64 + 1).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    assert_eq!(r.chunks_fetched(), 1);

    // A read across chunk boundaries, and one to the disk's short end.
    let mut big = vec![0u8; 3 * MIB];
    r.read_exact_at(&mut big, (3 * MIB - 17) as u64).unwrap();
    assert_eq!(big, src[3 * MIB - 17..6 * MIB - 17]);
    let mut tail = vec![0xAAu8; 64 * 1024];
    let n = r.read_at(&mut tail, (src.len() - 1000) as u64).unwrap();
    assert_eq!(n, 1000);
    assert_eq!(tail[..n], src[src.len() - 1000..]);
    assert!(r
        .read_exact_at(&mut tail, (src.len() - 1000) as u64)
        .is_err());

    // The whole disk, read in odd-sized pieces, equals the source.
    let mut all = vec![0u8; src.len()];
    for (i, piece) in all.chunks_mut(333_333).enumerate() {
        r.read_exact_at(piece, (i * 333_333) as u64).unwrap();
    }
    assert!(all == src, "a full read differs from the captured disk");
}

#[test]
fn a_partition_view_is_a_window_of_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let src = disk();
    let (store, image) = capture(dir.path(), &src);
    let r = Arc::new(ImageReader::new(store, &image));
    let v = View {
        reader: r,
        start: 3 * MIB as u64 + 512,
        size: 5 * MIB as u64,
    };
    let mut b = vec![0u8; 6 * MIB];
    let n = v.read_at(&mut b, 0).unwrap();
    assert_eq!(n, 5 * MIB, "reads stop at the window's end");
    assert_eq!(b[..n], src[3 * MIB + 512..8 * MIB + 512]);
    assert_eq!(v.read_at(&mut b, 5 * MIB as u64).unwrap(), 0);
}

#[test]
fn a_damaged_chunk_is_an_error_not_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = disk();
    let (_, _) = capture(dir.path(), &src);
    // Flip one byte in the middle of every pack's payload area.
    for e in std::fs::read_dir(dir.path().join("store/packs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pack") {
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
            std::fs::write(&p, b).unwrap();
        }
    }
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let image = store.load_image("raw").unwrap();
    let r = ImageReader::new(store, &image);
    let mut all = vec![0u8; src.len()];
    let errors = all
        .chunks_mut(MIB)
        .enumerate()
        .filter_map(|(i, c)| r.read_exact_at(c, (i * MIB) as u64).err())
        .count();
    assert!(errors >= 1, "the damaged chunk must fail its hash check");
}

#[test]
fn an_http_store_reads_the_same_bytes_with_range_requests_for_touched_chunks_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = disk();
    capture(dir.path(), &src);
    let web = dir.path().join("nginx");
    std::fs::create_dir(&web).unwrap();
    let Some(nginx) = Nginx::serve(&web, dir.path()) else {
        eprintln!("skipped: nginx (Debian package nginx) is not installed or did not start");
        return;
    };
    let store =
        Arc::new(Store::open_location(&format!("http://127.0.0.1:{}/store/", nginx.1)).unwrap());
    let image = store.load_image("raw").unwrap();
    let r = ImageReader::with_cache(store, &image, 4);
    let ranges = |above| common::ranges_above(&web, "/store/packs/", above);
    let before = common::ranges(&web, "/store/packs/");

    // One small read: one chunk, fetched with range requests into its pack.
    let mut b = vec![0u8; 5000];
    r.read_exact_at(&mut b, 2 * MIB as u64 + 100).unwrap();
    assert_eq!(b, src[2 * MIB + 100..2 * MIB + 5100]);
    assert_eq!(r.chunks_fetched(), 1);
    let one = ranges(before) - before;
    assert!(one >= 1, "no range request into a pack for one chunk");

    // The whole disk over HTTP equals the source.
    let mut all = vec![0u8; src.len()];
    for (i, piece) in all.chunks_mut(777_777).enumerate() {
        r.read_exact_at(piece, (i * 777_777) as u64).unwrap();
    }
    assert!(
        all == src,
        "a full read over HTTP differs from the captured disk"
    );
    assert!(
        ranges(before + one) > before + one,
        "later chunks were not read with range requests"
    );
}
