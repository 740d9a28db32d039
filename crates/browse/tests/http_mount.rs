//! `mount` and `extract` of an image on an HTTP store (nginx on 127.0.0.1): the same
//! FUSE + loop + read-only mount as for a local store, reading chunks with range
//! requests. Needs root, /dev/fuse, loop devices, mkfs.ext4 and nginx; skipped without.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn ready() -> bool {
    let tools = Command::new("sh")
        .args(["-c", "command -v mkfs.ext4 losetup nginx"])
        .output()
        .is_ok_and(|o| o.status.success());
    rustix::process::geteuid().is_root() && Path::new("/dev/fuse").exists() && tools
}

fn write(p: &Path, data: &[u8], mtime: u64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(t).unwrap();
}

#[test]
fn an_image_on_an_http_store_mounts_and_extracts_like_a_local_one() {
    if !ready() {
        eprintln!("skipped: needs root, /dev/fuse, mkfs.ext4, losetup and nginx");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(
        &tree.join("docs/a/b/c/deep.txt"),
        b"twelve levels are not needed here\n",
        1_600_000_000,
    );
    write(&tree.join("docs/big.bin"), &big, 1_600_000_100);
    write(&tree.join("other.txt"), b"not asked for", 1_600_000_200);
    // A filesystem on the whole "disk" (no partition table): partition 0.
    let fs = dir.path().join("fs.img");
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&fs)
        .status()
        .unwrap();
    assert!(ok.success());
    let www = dir.path().join("www");
    common::capture(&fs, &www.join("store"), "fs");
    let web = dir.path().join("nginx");
    std::fs::create_dir(&web).unwrap();
    let Some(nginx) = common::Nginx::serve(&web, &www) else {
        eprintln!("skipped: nginx did not start");
        return;
    };
    let url = format!("http://127.0.0.1:{}/store/", nginx.1);

    let to = dir.path().join("out");
    let mut seen = Vec::new();
    let r = browse::extract(
        Path::new(&url),
        "fs",
        None,
        &["/docs".into()],
        &to,
        &mut |e| seen.push(e.path.clone()),
    )
    .unwrap();
    assert_eq!((r.files, r.dirs), (2, 4), "{seen:?}");
    assert_eq!(std::fs::read(to.join("docs/big.bin")).unwrap(), big);
    let deep = to.join("docs/a/b/c/deep.txt");
    assert_eq!(
        std::fs::read(&deep).unwrap(),
        b"twelve levels are not needed here\n"
    );
    assert_eq!(std::fs::metadata(&deep).unwrap().mtime(), 1_600_000_000);
    assert!(!to.join("other.txt").exists());
    assert!(
        common::ranges_above(&web, "/store/packs/", 0) >= 1,
        "no range reads into packs"
    );

    // A mount: one small file, then everything is gone after unmount.
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut m = browse::mount(&browse::MountRequest {
        store: url.clone().into(),
        name: "fs".into(),
        mountpoint: mp.clone(),
        partition: None,
    })
    .unwrap();
    assert_eq!(
        std::fs::read(mp.join("other.txt")).unwrap(),
        b"not asked for"
    );
    let fetched = m.reader.chunks_fetched();
    assert!(
        fetched <= 8,
        "{fetched} chunks fetched to read one small file"
    );
    m.unmount().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(mp.to_str().unwrap()), "{mounts}");
    assert!(!mp.join("other.txt").exists());
}
