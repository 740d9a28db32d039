//! The image browser: its state machine on the fixed machine, its screens at 80×25
//! (tests/snapshots/browse_*.txt), the copy job on real directories, and a real
//! browse of a captured ext4 image (root, FUSE and loop devices; skipped without).

mod common;

use common::*;
use imaging::{Event, Sink, VecSink};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tui::browser::{CopyRequest, Dest, Entry, EntryKind};
use tui::{dispatch, keymap, Action, App, Effect, FixedDisks, JobMsg, JobSpec, Runtime, Screen};

const ROOT: &str = "/run/imprint/private/77-0";

fn entry(name: &str, kind: EntryKind, size: u64) -> Entry {
    Entry {
        name: name.into(),
        kind,
        size,
        mtime: Some(1_714_555_320), // 2024-05-01 09:22 UTC
    }
}

fn root_entries() -> Vec<Entry> {
    vec![
        entry("pagefile.sys", EntryKind::File, 4_294_967_296),
        entry("Windows", EntryKind::Dir, 0),
        entry("bootmgr", EntryKind::File, 413_738),
        entry("Users", EntryKind::Dir, 0),
        entry("Documents and Settings", EntryKind::Symlink, 0),
    ]
}

fn docs_entries() -> Vec<Entry> {
    vec![
        entry("Report 2024.docx", EntryKind::File, 1_234_567),
        entry("budget.xlsx", EntryKind::File, 88_000),
        entry("Photos", EntryKind::Dir, 0),
        entry("pipe", EntryKind::Other, 0),
    ]
}

/// Drives to partition 3 of the first image, mounted, root listed.
fn to_files(app: &mut App) {
    send(app, Action::Browse);
    assert_eq!(app.screen, Screen::BrowseStore);
    send(app, Action::Select);
    assert_eq!(app.screen, Screen::BrowseImage);
    send(app, Action::Select);
    assert_eq!(app.screen, Screen::BrowsePartition);
    send(app, Action::Down);
    send(app, Action::Down);
    let fx = send(app, Action::Select);
    match fx.as_slice() {
        [Effect::BrowseOpen {
            store,
            image,
            partition,
        }] => {
            assert_eq!(store, Path::new("/run/imprint/store"));
            assert_eq!(image, "lab-win11-2024-05");
            assert_eq!(*partition, 3);
        }
        other => panic!("{other:?}"),
    }
    let fx = send(app, Action::BrowseOpened(Ok(ROOT.into())));
    assert_eq!(app.screen, Screen::BrowseFiles);
    assert!(
        matches!(fx.as_slice(), [Effect::BrowseList { root, dir }] if root == Path::new(ROOT) && dir == "/"),
        "{fx:?}"
    );
    send(
        app,
        Action::BrowseListed {
            dir: "/".into(),
            entries: Ok(root_entries()),
        },
    );
}

/// From the root into /Users/ann/Documents.
fn to_documents(app: &mut App) {
    to_files(app);
    // Folders first, by name: Users, Windows, then the files and the link.
    assert_eq!(app.browser.entries[0].name, "Users");
    let fx = send(app, Action::Select);
    assert!(
        matches!(fx.as_slice(), [Effect::BrowseList { dir, .. }] if dir == "/Users"),
        "{fx:?}"
    );
    send(
        app,
        Action::BrowseListed {
            dir: "/Users".into(),
            entries: Ok(vec![entry("ann", EntryKind::Dir, 0)]),
        },
    );
    send(app, Action::Down); // past ..
    send(app, Action::Select);
    send(
        app,
        Action::BrowseListed {
            dir: "/Users/ann".into(),
            entries: Ok(vec![entry("Documents", EntryKind::Dir, 0)]),
        },
    );
    send(app, Action::Down);
    send(app, Action::Select);
    send(
        app,
        Action::BrowseListed {
            dir: "/Users/ann/Documents".into(),
            entries: Ok(docs_entries()),
        },
    );
    assert_eq!(app.browser.dir, "/Users/ann/Documents");
}

fn key(app: &App, code: KeyCode) -> Option<Action> {
    keymap(app, KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn b_opens_the_browser_and_space_and_c_mark_and_copy_in_the_file_list() {
    let mut app = app();
    assert!(matches!(
        key(&app, KeyCode::Char('b')),
        Some(Action::Browse)
    ));
    to_files(&mut app);
    assert!(matches!(key(&app, KeyCode::Char(' ')), Some(Action::Mark)));
    assert!(matches!(
        key(&app, KeyCode::Char('c')),
        Some(Action::CopyMarked)
    ));
    assert!(matches!(key(&app, KeyCode::Backspace), Some(Action::Back)));
}

#[test]
fn walking_down_and_back_up_lands_on_the_folder_left() {
    let mut app = app();
    to_documents(&mut app);
    let fx = send(&mut app, Action::Back);
    assert_eq!(app.browser.dir, "/Users/ann");
    assert!(matches!(fx.as_slice(), [Effect::BrowseList { dir, .. }] if dir == "/Users/ann"));
    send(
        &mut app,
        Action::BrowseListed {
            dir: "/Users/ann".into(),
            entries: Ok(vec![
                entry("AppData", EntryKind::Dir, 0),
                entry("Documents", EntryKind::Dir, 0),
            ]),
        },
    );
    // Row 0 is "..", then AppData, Documents.
    assert_eq!(app.browser.entry_sel, 2);
    assert_eq!(app.browser.selected().unwrap().name, "Documents");
    // Enter on ".." goes up as well.
    send(&mut app, Action::Up);
    send(&mut app, Action::Up);
    send(&mut app, Action::Select);
    assert_eq!(app.browser.dir, "/Users");
}

#[test]
fn a_listing_for_a_folder_already_left_is_ignored() {
    let mut app = app();
    to_files(&mut app);
    send(&mut app, Action::Select); // into /Users
    send(
        &mut app,
        Action::BrowseListed {
            dir: "/".into(),
            entries: Ok(vec![entry("stale", EntryKind::File, 1)]),
        },
    );
    assert_eq!(app.browser.dir, "/Users");
    assert!(app.browser.entries.iter().all(|e| e.name != "stale"));
}

#[test]
fn marks_survive_walking_and_the_copy_names_every_marked_path() {
    let mut app = app();
    to_documents(&mut app);
    // Row 0 "..", 1 Photos/, 2 budget.xlsx, 3 pipe, 4 Report 2024.docx.
    send(&mut app, Action::Down);
    send(&mut app, Action::Mark); // Photos/, moves down
    send(&mut app, Action::Down);
    send(&mut app, Action::Down); // Report
    send(&mut app, Action::Mark);
    assert_eq!(app.browser.marked.len(), 2);
    // A socket cannot be marked.
    send(&mut app, Action::Up);
    send(&mut app, Action::Mark);
    assert!(app.status.as_deref().unwrap().contains("cannot be copied"));
    assert_eq!(app.browser.marked.len(), 2);
    // Marks stay when going up.
    send(&mut app, Action::Back);
    assert_eq!(app.browser.marked.len(), 2);

    let fx = send(&mut app, Action::CopyMarked);
    assert_eq!(app.screen, Screen::BrowseDest);
    assert!(
        matches!(fx.as_slice(), [Effect::BrowseDestinations]),
        "{fx:?}"
    );
    let dest = Dest::Partition {
        node: "/dev/vda1".into(),
        disk: "/dev/vda".into(),
        line: "vda1 ext4 \"data\" 1.0 TB".into(),
        fs: "ext4".into(),
        mounted: None,
    };
    send(&mut app, Action::BrowseDests(vec![dest.clone()]));
    send(&mut app, Action::Down);
    let fx = send(&mut app, Action::Select);
    let [Effect::StartJob(JobSpec::Copy(req))] = fx.as_slice() else {
        panic!("{fx:?}")
    };
    assert_eq!(
        req,
        &CopyRequest {
            root: ROOT.into(),
            items: vec![
                "/Users/ann/Documents/Photos".into(),
                "/Users/ann/Documents/Report 2024.docx".into()
            ],
            dest,
            folder: "lab-win11-2024-05-part3".into(),
        }
    );
    assert_eq!(app.screen, Screen::Progress);
}

#[test]
fn without_marks_the_entry_under_the_cursor_is_copied_to_a_typed_directory() {
    let mut app = app();
    to_documents(&mut app);
    // On "..": nothing to copy.
    send(&mut app, Action::CopyMarked);
    assert_eq!(app.screen, Screen::BrowseFiles);
    assert!(app.status.as_deref().unwrap().contains("nothing to copy"));
    send(&mut app, Action::Down);
    send(&mut app, Action::Down); // budget.xlsx
    send(&mut app, Action::CopyMarked);
    send(&mut app, Action::BrowseDests(vec![]));
    send(&mut app, Action::Select); // "A directory: type its path"
    assert_eq!(app.screen, Screen::BrowseDestPath);
    type_text(&mut app, "mnt/x");
    assert!(send(&mut app, Action::Select).is_empty());
    assert!(app.status.as_deref().unwrap().contains("full path"));
    while !app.browser.typed.is_empty() {
        send(&mut app, Action::Erase);
    }
    type_text(&mut app, "/mnt/usb");
    let fx = send(&mut app, Action::Select);
    let [Effect::StartJob(JobSpec::Copy(req))] = fx.as_slice() else {
        panic!("{fx:?}")
    };
    assert_eq!(
        req.items,
        vec!["/Users/ann/Documents/budget.xlsx".to_string()]
    );
    assert_eq!(req.dest, Dest::Directory("/mnt/usb".into()));
}

#[test]
fn leaving_the_file_list_unmounts_and_a_copy_result_returns_to_it() {
    let mut app = app();
    to_files(&mut app);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down); // bootmgr
    send(&mut app, Action::CopyMarked);
    send(&mut app, Action::BrowseDests(vec![]));
    send(&mut app, Action::Select);
    type_text(&mut app, "/tmp/out");
    send(&mut app, Action::Select);
    send(
        &mut app,
        Action::Job(JobMsg::Done {
            at_ms: 900,
            outcome: Ok(tui::app::JobSuccess {
                headline: "Copied 1 item(s) into /tmp/out/lab-win11-2024-05-part3".into(),
                lines: vec!["1 files (413.7 kB), 0 folders, 0 links in 0.9 s".into()],
            }),
        }),
    );
    assert_eq!(app.screen, Screen::Result);
    send(&mut app, Action::Select);
    assert_eq!(app.screen, Screen::BrowseFiles);
    // Esc at the root closes the partition: the runtime unmounts it.
    let fx = send(&mut app, Action::Back);
    assert_eq!(app.screen, Screen::BrowsePartition);
    assert!(matches!(fx.as_slice(), [Effect::BrowseClose]), "{fx:?}");
    assert!(app.browser.root.is_none());
}

#[test]
fn a_partition_that_cannot_be_mounted_says_why_and_stays_on_the_list() {
    let mut app = app();
    send(&mut app, Action::Browse);
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    send(
        &mut app,
        Action::BrowseOpened(Err("partition 2 of \"lab-win11-2024-05\" holds no filesystem it recognized, which Imprint cannot mount; `imprint export` can write it as a raw file".into())),
    );
    assert_eq!(app.screen, Screen::BrowsePartition);
    snapshot("browse_open_failed", &app);
}

// ---- screens ------------------------------------------------------------------------

#[test]
fn screens() {
    let mut app = app();
    send(&mut app, Action::Browse);
    snapshot("browse_store", &app);
    send(&mut app, Action::Select);
    snapshot("browse_image", &app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    snapshot("browse_partition", &app);

    let mut app = {
        let mut a = common::app();
        to_documents(&mut a);
        a
    };
    send(&mut app, Action::Down);
    send(&mut app, Action::Mark);
    send(&mut app, Action::Mark);
    snapshot("browse_files", &app);
    send(&mut app, Action::CopyMarked);
    snapshot("browse_dest_looking", &app);
    send(
        &mut app,
        Action::BrowseDests(vec![
            Dest::Partition {
                node: "/dev/sdb1".into(),
                disk: "/dev/sdb".into(),
                line: "sdb1 exfat \"IMPRINT\" 32.0 GB".into(),
                fs: "exfat".into(),
                mounted: Some("/run/imprint/store".into()),
            },
            Dest::Partition {
                node: "/dev/vda1".into(),
                disk: "/dev/vda".into(),
                line: "vda1 ext4 \"data\" 1.0 TB".into(),
                fs: "ext4".into(),
                mounted: None,
            },
        ]),
    );
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    snapshot("browse_dest", &app);
    send(&mut app, Action::Up);
    send(&mut app, Action::Up);
    send(&mut app, Action::Select);
    type_text(&mut app, "/mnt/usb");
    snapshot("browse_dest_path", &app);
    send(&mut app, Action::Select);
    send(
        &mut app,
        Action::Job(JobMsg::Event {
            at_ms: 2_000,
            event: Event::Phase("copying files"),
        }),
    );
    send(
        &mut app,
        Action::Job(JobMsg::Event {
            at_ms: 2_000,
            event: Event::Progress(imaging::Progress {
                done_bytes: 700_000,
                total_bytes: 1_322_567,
                done_chunks: 3,
                total_chunks: 7,
                written_chunks: 3,
                skipped_chunks: 0,
            }),
        }),
    );
    snapshot("browse_copy_progress", &app);
}

// ---- the copy job and the runtime, for real --------------------------------------------

fn write(p: &Path, data: &[u8], mtime: i64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(mtime as u64);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn the_copy_job_copies_the_marked_tree_with_times_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("part");
    write(&root.join("a/b/deep.txt"), b"deep", 1_600_000_000);
    write(&root.join("a/big.bin"), &vec![7u8; 300_000], 1_600_000_100);
    write(&root.join("top.txt"), b"top", 1_600_000_200);
    write(&root.join("other.txt"), b"not marked", 1_600_000_300);
    let out = dir.path().join("out");
    let req = CopyRequest {
        root: root.clone(),
        items: vec!["/a".into(), "/top.txt".into()],
        dest: Dest::Directory(out.clone()),
        folder: "img-part1".into(),
    };
    let mut sink = VecSink::default();
    let ok = tui::browser_io::run_copy(&req, &mut sink).unwrap();
    let to = out.join("img-part1");
    assert_eq!(std::fs::read(to.join("a/b/deep.txt")).unwrap(), b"deep");
    assert_eq!(std::fs::read(to.join("a/big.bin")).unwrap().len(), 300_000);
    assert_eq!(std::fs::read(to.join("top.txt")).unwrap(), b"top");
    assert!(!to.join("other.txt").exists());
    assert_eq!(
        std::fs::metadata(to.join("a/b/deep.txt")).unwrap().mtime(),
        1_600_000_000
    );
    assert!(
        ok.headline.contains(&to.display().to_string()),
        "{}",
        ok.headline
    );
    assert!(ok.lines[0].starts_with("3 files"), "{:?}", ok.lines);
    let last = sink
        .0
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Progress(p) => Some(*p),
            _ => None,
        })
        .unwrap();
    assert_eq!((last.done_bytes, last.total_bytes), (300_007, 300_007));
    assert_eq!((last.done_chunks, last.total_chunks), (3, 3));

    // Again into the same place: nothing is overwritten, the error says so.
    let err = tui::browser_io::run_copy(&req, &mut VecSink::default()).unwrap_err();
    assert!(err.message.contains("already exists"), "{}", err.message);
    assert_eq!(err.exit_code, ops::exit::REFUSED);
}

#[test]
fn a_cancelled_copy_stops_between_items() {
    struct Cancel(VecSink);
    impl Sink for Cancel {
        fn event(&mut self, e: Event) {
            self.0.event(e)
        }
        fn cancelled(&self) -> bool {
            true
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("part");
    write(&root.join("x.txt"), b"x", 1_600_000_000);
    let req = CopyRequest {
        root,
        items: vec!["/x.txt".into()],
        dest: Dest::Directory(dir.path().join("out")),
        folder: "f".into(),
    };
    let err = tui::browser_io::run_copy(&req, &mut Cancel(VecSink::default())).unwrap_err();
    assert_eq!(err.kind, "cancelled");
    assert!(!dir.path().join("out/f/x.txt").exists());
}

#[test]
fn destinations_are_writable_filesystems_never_the_unmounted_boot_medium() {
    let mut disks = disks();
    // The stick that booted: its boot partition (mounted read-only) and an unmounted
    // one are not offered, its mounted store partition is.
    disks[2].partitions.insert(
        0,
        part(
            "sdb0",
            1 << 30,
            "vfat",
            "IMPRINTBOOT",
            &["mounted /run/imprint/boot"],
        ),
    );
    disks[2]
        .partitions
        .push(part("sdb2", 1 << 30, "ext4", "spare", &[]));
    let writable = |m: &Path| m != Path::new("/mnt/old") && m != Path::new("/run/imprint/boot");
    let boot = Path::new("/run/imprint/boot");
    let d = tui::browser_io::destinations(&disks, Some(boot), &writable);
    let names: Vec<String> = d
        .iter()
        .map(|d| match d {
            Dest::Partition { node, .. } => node.display().to_string(),
            Dest::Directory(p) => p.display().to_string(),
        })
        .collect();
    // nvme0n1p2 has no filesystem; sda2 is mounted read-only at /mnt/old.
    assert_eq!(
        names,
        vec!["/dev/nvme0n1p1", "/dev/nvme0n1p3", "/dev/sda1", "/dev/sdb1"]
    );
    assert!(matches!(&d[0], Dest::Partition { mounted: None, fs, .. } if fs == "vfat"));
    assert!(
        matches!(&d[3], Dest::Partition { mounted: Some(m), .. } if m == Path::new("/run/imprint/store"))
    );
}

fn sh(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn can_mount() -> bool {
    let root = rustix::process::geteuid().is_root();
    root && Path::new("/dev/fuse").exists()
        && sh("sh", &["-c", "command -v mkfs.ext4 sgdisk losetup"])
}

/// A 64 MiB GPT disk file whose ext4 partition (from 1 MiB) holds `tree`.
fn ext4_disk(dir: &Path, tree: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert!(sh(
        "sgdisk",
        &["-n", "1:2048:+48M", "-t", "1:8300", disk.to_str().unwrap()]
    ));
    let part = dir.join("p1.raw");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    assert!(sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            tree.to_str().unwrap(),
            part.to_str().unwrap()
        ]
    ));
    assert!(sh(
        "dd",
        &[
            &format!("if={}", part.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none"
        ]
    ));
    disk
}

#[test]
fn browse_a_captured_ext4_image_and_copy_one_file_out() {
    if !can_mount() {
        eprintln!("skipped: needs root, /dev/fuse, mkfs.ext4, sgdisk and losetup");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(
        &tree.join("home/ann/notes.txt"),
        b"the one file to get back\n",
        1_650_000_000,
    );
    write(&tree.join("home/ann/other.txt"), b"stays", 1_650_000_000);
    let disk = ext4_disk(dir.path(), &tree);
    let store = dir.path().join("store");
    let req = ops::CaptureRequest {
        source: disk.clone(),
        store: store.clone(),
        name: "pc".into(),
        description: String::new(),
        level: 3,
        chunk_size: imaging::DEFAULT_CHUNK_SIZE,
        force: false,
        threads: 0,
    };
    ops::capture(&req, &mut imaging::NullSink).unwrap();

    let mut rt = Runtime::new(Box::new(FixedDisks(vec![])), vec![store.clone()]);
    let mut app = App::new();
    let snap = rt.snapshot(true);
    dispatch(&mut app, &mut rt, snap);
    dispatch(&mut app, &mut rt, Action::Browse);
    dispatch(&mut app, &mut rt, Action::Select); // the store
    dispatch(&mut app, &mut rt, Action::Select); // "pc"
    dispatch(&mut app, &mut rt, Action::Select); // partition 1: mounts and lists
    assert_eq!(app.screen, Screen::BrowseFiles, "popup: {:?}", app.popup);
    let root = app.browser.root.clone().unwrap();
    let names: Vec<&str> = app
        .browser
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        names.contains(&"home") && names.contains(&"lost+found"),
        "{names:?}"
    );
    while app.browser.selected().map(|e| e.name.as_str()) != Some("home") {
        dispatch(&mut app, &mut rt, Action::Down);
    }
    dispatch(&mut app, &mut rt, Action::Select);
    dispatch(&mut app, &mut rt, Action::Down);
    dispatch(&mut app, &mut rt, Action::Select); // ann
    assert_eq!(app.browser.dir, "/home/ann");
    dispatch(&mut app, &mut rt, Action::Down); // notes.txt
    dispatch(&mut app, &mut rt, Action::Mark);
    dispatch(&mut app, &mut rt, Action::CopyMarked);
    assert_eq!(app.screen, Screen::BrowseDest);
    assert_eq!(app.browser.dests, Some(vec![]));
    dispatch(&mut app, &mut rt, Action::Select);
    let out = dir.path().join("out");
    for c in out.display().to_string().chars() {
        dispatch(&mut app, &mut rt, Action::Input(c));
    }
    dispatch(&mut app, &mut rt, Action::Select);
    let t0 = Instant::now();
    while app.screen == Screen::Progress {
        assert!(t0.elapsed() < Duration::from_secs(60), "copy did not end");
        for a in rt.wait(Duration::from_millis(200)) {
            dispatch(&mut app, &mut rt, a);
        }
    }
    let r = app.result.clone().unwrap();
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    let copied = out.join("pc-part1/notes.txt");
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        b"the one file to get back\n"
    );
    assert_eq!(std::fs::metadata(&copied).unwrap().mtime(), 1_650_000_000);
    assert!(!out.join("pc-part1/other.txt").exists());

    // Back to the list, then out: the private mount is gone.
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::BrowseFiles);
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(root.to_str().unwrap()));
    dispatch(&mut app, &mut rt, Action::Quit);
    assert_eq!(app.screen, Screen::Home);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root.to_str().unwrap()), "{mounts}");
    assert!(!root.exists());
}
