//! Stores on other disks, for real: ext4 filesystems made with mkfs.ext4 on loop
//! devices (needs root, losetup, mkfs.ext4, e2fsck). The runtime mounts the one holding
//! a store read-only (and lets the other go), lists its images, refuses its disk as a
//! restore target in words, makes it writable only for a capture into it and
//! read-only again after, and unmounts it when the disk leaves.

mod common;

use common::{file_disk, pump_while};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use tui::diskstores::DiskStores;
use tui::model::DiskSource;
use tui::{dispatch, Action, App, DiskRow, PartRow, Runtime, Screen};

/// Disks a test can plug and pull.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<DiskRow>>>);

impl DiskSource for Shared {
    fn disks(&self) -> Vec<DiskRow> {
        self.0.lock().unwrap().clone()
    }
}

/// A loop device, detached by name when dropped.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    /// The loop device as discovery lists it: a disk whose one "partition" is itself.
    fn disk(&self, size: u64) -> DiskRow {
        let name = self.0.trim_start_matches("/dev/").to_string();
        DiskRow {
            node: PathBuf::from(&self.0),
            size,
            model: Some("Loop stick".into()),
            serial: None,
            bus: "usb".into(),
            removable: true,
            partitions: vec![PartRow {
                name,
                size,
                fs: Some("ext4".into()),
                label: Some("STICK".into()),
                in_use: vec![],
            }],
            in_use: vec![],
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The options of the mount at `at` in /proc/self/mountinfo, if mounted.
fn mount_options(at: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (Path::new(f[4]) == at).then(|| f[5].to_string())
    })
}

/// Captures `source` into `store` as `name`, as the text UI's capture does.
fn capture(
    source: &Path,
    store: &Path,
    name: &str,
) -> Result<imaging::CaptureReport, ops::OpsError> {
    ops::capture(
        &ops::CaptureRequest {
            source: source.to_owned(),
            store: store.to_owned(),
            name: name.into(),
            description: String::new(),
            level: 3,
            chunk_size: imaging::DEFAULT_CHUNK_SIZE,
            force: false,
            threads: 0,
        },
        &mut imaging::NullSink,
    )
}

/// In `d`: a 4 MiB source disk file `source.img` captured as "golden" into a store in the
/// "imprint" folder of a 64 MiB ext4 `stick.img` (label STICK), and a 32 MiB ext4
/// `other.img` without a store. Returns the source's path and loop devices of the stick
/// and the other.
fn sticks(d: &Path) -> (PathBuf, Loop, Loop) {
    // A 4 MiB source disk captured into a store inside the filesystem's "imprint" folder.
    let src = d.join("source.img");
    std::fs::write(
        &src,
        (0..4u32 << 20)
            .map(|i| (i / 512 % 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let content = d.join("content");
    capture(&src, &content.join("imprint"), "golden").unwrap();
    let with_store = d.join("stick.img");
    let without = d.join("other.img");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "STICK",
            "-d",
            &path(&content),
            &path(&with_store),
            "64M",
        ],
    );
    run("mkfs.ext4", &["-q", "-F", &path(&without), "32M"]);
    (src, Loop::attach(&with_store), Loop::attach(&without))
}

#[test]
fn a_store_on_another_disk_is_found_listed_protected_written_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, stick, other) = sticks(d);
    let target = d.join("target.img");
    std::fs::write(&target, vec![0u8; 8 << 20]).unwrap();

    let disks = Shared::default();
    *disks.0.lock().unwrap() = vec![
        stick.disk(64 << 20),
        other.disk(32 << 20),
        file_disk(&target),
    ];
    let base = d.join("mnt");
    let mut rt = Runtime::new(Box::new(disks.clone()), Vec::new());
    rt.disk_stores = Some(DiskStores::new(&base));
    let mut app = App::new();
    let snap = rt.snapshot(true);
    dispatch(&mut app, &mut rt, snap);
    for a in rt.poll() {
        dispatch(&mut app, &mut rt, a);
    }

    // Found: mounted read-only without journal replay, listed with its image.
    let stick_name = stick.0.trim_start_matches("/dev/");
    let other_name = other.0.trim_start_matches("/dev/");
    let at = base.join(stick_name);
    let opts = mount_options(&at).expect("the stick holding a store stays mounted");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    assert_eq!(
        mount_options(&base.join(other_name)),
        None,
        "no store: let go"
    );
    assert!(!base.join(other_name).exists());
    assert_eq!(app.stores.len(), 1, "{:?}", app.stores);
    let row = app.stores[0].clone();
    assert_eq!(row.path, at.join("imprint"));
    assert_eq!(
        row.name(),
        format!("{stick_name} ext4 \"STICK\" ({}) /imprint", stick.0)
    );
    assert_eq!(row.images()[0].name, "golden");
    assert!(
        app.log.iter().any(|l| l.contains("store found on")),
        "{:?}",
        app.log
    );

    // The other console's TUI sees the partition mounted there (as discovery reports
    // it) and lists the store from that mount; it leaves the mount alone on exit.
    let mut seen = disks.0.lock().unwrap().clone();
    seen[0].partitions[0].in_use = vec![format!("mounted {}", at.display())];
    let mut rt2 = Runtime::new(Box::new(Shared(Arc::new(Mutex::new(seen)))), Vec::new());
    rt2.disk_stores = Some(DiskStores::new(&base));
    let mut app2 = App::new();
    let snap = rt2.snapshot(true);
    dispatch(&mut app2, &mut rt2, snap);
    assert_eq!(app2.stores.len(), 1, "{:?}", app2.stores);
    assert_eq!(app2.stores[0].images()[0].name, "golden");
    drop(rt2);
    assert!(mount_options(&at).is_some(), "the owner's mount stays");

    // The restore target list refuses the stick's disk, saying why.
    dispatch(&mut app, &mut rt, Action::Restore);
    dispatch(&mut app, &mut rt, Action::Select);
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::RestoreTarget);
    let check = |n: &str| {
        app.restore
            .checks
            .iter()
            .find(|c| c.node == Path::new(n))
            .cloned()
            .unwrap()
    };
    let r = check(&stick.0).refusal.unwrap();
    assert!(r.contains("mounted read-only by Imprint"), "{r}");
    assert_eq!(check(target.to_str().unwrap()).refusal, None);
    dispatch(&mut app, &mut rt, Action::Back);
    dispatch(&mut app, &mut rt, Action::Back);
    dispatch(&mut app, &mut rt, Action::Back);
    assert_eq!(app.screen, Screen::Home);

    // A capture into it: writable for the job, read-only again after.
    let disks_now = disks.0.lock().unwrap().clone();
    let src_row = file_disk(&src);
    disks.0.lock().unwrap().push(src_row);
    let snap = rt.snapshot(false);
    dispatch(&mut app, &mut rt, snap);
    dispatch(&mut app, &mut rt, Action::Capture);
    for _ in 0..disks_now.len() {
        dispatch(&mut app, &mut rt, Action::Down);
    }
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::CaptureStore, "{:?}", app.status);
    dispatch(&mut app, &mut rt, Action::Select);
    for c in "second".chars() {
        dispatch(&mut app, &mut rt, Action::Input(c));
    }
    dispatch(&mut app, &mut rt, Action::Select);
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::CaptureSummary);
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::Progress, "{:?}", app.status);
    assert!(mount_options(&at).unwrap().split(',').any(|o| o == "rw"));
    pump_while(&mut app, &mut rt, |a| a.screen == Screen::Progress);
    let res = app.result.clone().unwrap();
    assert!(res.outcome.is_ok(), "{:?}", res.outcome);
    let opts = mount_options(&at).unwrap();
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "read-only again: {opts}"
    );
    dispatch(&mut app, &mut rt, Action::Select);
    let snap = rt.snapshot(true);
    dispatch(&mut app, &mut rt, snap);
    let names: Vec<String> = app.stores[0]
        .images()
        .iter()
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(names, ["golden", "second"]);

    // Pulled out: unmounted, gone from the list; the filesystem is clean.
    disks
        .0
        .lock()
        .unwrap()
        .retain(|d| d.node != Path::new(&stick.0));
    let snap = rt.snapshot(false);
    dispatch(&mut app, &mut rt, snap);
    for a in rt.poll() {
        dispatch(&mut app, &mut rt, a);
    }
    assert!(app.stores.is_empty(), "{:?}", app.stores);
    assert_eq!(mount_options(&at), None);
    assert!(
        app.log.iter().any(|l| l.contains("unmounted")),
        "{:?}",
        app.log
    );
    drop(rt);
    run("e2fsck", &["-fn", &stick.0]);
}

#[test]
fn probes_take_turns_with_the_other_console_and_wait_out_a_writer() {
    use rustix::fs::{flock, FlockOperation, OFlags};
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, stick, other) = sticks(d);
    let rows = vec![stick.disk(64 << 20), other.disk(32 << 20)];
    let base = d.join("mnt");
    let at = base.join(stick.0.trim_start_matches("/dev/"));
    let mut ds = DiskStores::new(&base);

    // The other console's TUI is probing (it holds the lock): nothing is mounted or
    // remembered now, and the next look probes both.
    std::fs::create_dir_all(&base).unwrap();
    let other_tui = std::fs::File::create(base.join(".probing")).unwrap();
    flock(&other_tui, FlockOperation::NonBlockingLockExclusive).unwrap();
    assert_eq!(ds.sync(&rows, &[]), Vec::<String>::new());
    assert!(ds.mounted.is_empty() && mount_options(&at).is_none());
    drop(other_tui);

    // A writer holds the stick exclusively, as a restore holds its target: the probe's
    // mount fails with EBUSY, which is neither logged nor remembered.
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::EXCL.bits() as i32)
        .open(&stick.0)
        .unwrap();
    let log = ds.sync(&rows, &[]);
    assert!(log.is_empty(), "{log:?}");
    assert!(ds.mounted.is_empty() && mount_options(&at).is_none());
    drop(writer);
    let log = ds.sync(&rows, &[]);
    assert!(log.iter().any(|l| l.contains("store found on")), "{log:?}");
    assert!(mount_options(&at).is_some());

    // The disk without a store was probed and let go: nothing of it stays mounted, so
    // a capture of it (started on the other console) reads it.
    let other_at = base.join(other.0.trim_start_matches("/dev/"));
    assert!(mount_options(&other_at).is_none() && !other_at.exists());
    let r = capture(Path::new(&other.0), &d.join("store"), "other");
    assert!(r.is_ok(), "{r:?}");
    drop(ds);
    assert!(mount_options(&at).is_none(), "unmounted when the TUI exits");
}
