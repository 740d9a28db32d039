//! Capturing a disk whose filesystem is mounted (docs/CLI.md "capture"), with the host
//! kernel's own mounts of a loop device: refused while the filesystem is writable, read
//! when it is read-only (the text UI's probes for stores mount partitions that way, on
//! both consoles, and a probe may hold one just as a capture starts).
//!
//! Needs root (loop devices, mount), mkfs.ext4 and losetup; the loop device is detached by
//! name in a `Drop` guard.

mod common;

use common::{imprint, imprint_ok, json_result, ok, p, text, tool_ok, Loop, Mounted, MIB};
use std::fs::File;

const SIZE: u64 = 64 * MIB;

#[test]
fn capture_refuses_a_writable_mount_and_reads_a_read_only_one() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    File::create(&img).unwrap().set_len(SIZE).unwrap();
    tool_ok("mkfs.ext4", &["-q", "-F", "-L", "mounted", p(&img)]);
    let dev = Loop::attach(&img, 0, SIZE, false);
    let store = dir.path().join("store");

    let mnt = dir.path().join("mnt");
    let m = Mounted::new(&dev, &mnt, "rw");
    std::fs::write(mnt.join("hello.txt"), b"written while mounted\n").unwrap();
    let o = imprint(&["capture", &dev.0, p(&store), "--name", "rw"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(
        out.contains(&format!("{} is mounted on {}", dev.0, mnt.display()))
            && out.contains("--force"),
        "{out}"
    );

    // The same mount made read-only: the filesystem cannot change while it is read.
    tool_ok("mount", &["-o", "remount,ro", p(&mnt)]);
    imprint_ok(&["capture", &dev.0, p(&store), "--name", "ro"]);
    imprint_ok(&["verify", p(&store), "ro", "--against", &dev.0]);
    drop(m);

    // A second mount of it read-write (and so the filesystem) makes it writable again.
    let m = Mounted::new(&dev, &mnt, "rw");
    let o = imprint(&["capture", &dev.0, p(&store), "--name", "rw-again"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    drop(m);

    let listed = json_result(&ok(imprint(&["--json", "images", p(&store)])));
    let names: Vec<&str> = listed["store"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ro"], "only the read-only capture made an image");
}
