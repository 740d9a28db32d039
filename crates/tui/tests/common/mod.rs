//! A fixed machine for screen and state-machine tests: four disks, a store with two
//! images, a missing store.
#![allow(dead_code)]

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use tui::app::TargetCheck;
use tui::model::{ImagePart, ImageRow, StoreState};
use tui::{Action, App, DiskRow, Effect, PartRow, StoreRow};

pub fn part(name: &str, size: u64, fs: &str, label: &str, used: &[&str]) -> PartRow {
    PartRow {
        name: name.into(),
        size,
        fs: (!fs.is_empty()).then(|| fs.into()),
        label: (!label.is_empty()).then(|| label.into()),
        in_use: used.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn disks() -> Vec<DiskRow> {
    vec![
        DiskRow {
            node: "/dev/nvme0n1".into(),
            size: 512_110_190_592,
            model: Some("Samsung SSD 970 EVO Plus 500GB".into()),
            serial: Some("S4EVNX0M912345K".into()),
            bus: "nvme".into(),
            removable: false,
            partitions: vec![
                part("nvme0n1p1", 104_857_600, "vfat", "EFI", &[]),
                part("nvme0n1p2", 16_777_216, "", "Microsoft reserved", &[]),
                part("nvme0n1p3", 510_000_000_000, "ntfs", "Windows", &[]),
            ],
            in_use: vec![],
        },
        DiskRow {
            node: "/dev/sda".into(),
            size: 500_107_862_016,
            model: Some("ProtoSATA".into()),
            serial: Some("SATA-SER-3".into()),
            bus: "sata".into(),
            removable: false,
            partitions: vec![
                part("sda1", 536_870_912, "vfat", "EFI", &[]),
                part(
                    "sda2",
                    499_000_000_000,
                    "ext4",
                    "root",
                    &["mounted /mnt/old"],
                ),
            ],
            in_use: vec![],
        },
        DiskRow {
            node: "/dev/sdb".into(),
            size: 32_017_047_552,
            model: Some("Cruzer Blade".into()),
            serial: Some("4C530001230208117543".into()),
            bus: "usb".into(),
            removable: true,
            partitions: vec![part(
                "sdb1",
                32_000_000_000,
                "exfat",
                "IMPRINT",
                &["mounted /run/imprint/store"],
            )],
            in_use: vec![],
        },
        DiskRow {
            node: "/dev/vda".into(),
            size: 1_000_204_886_016,
            model: None,
            serial: None,
            bus: "virtio".into(),
            removable: false,
            partitions: vec![],
            in_use: vec![],
        },
    ]
}

pub fn image(name: &str, created: &str, desc: &str) -> ImageRow {
    ImageRow {
        name: name.into(),
        created: created.into(),
        description: desc.into(),
        source_path: "/dev/nvme0n1".into(),
        source_serial: Some("S4EVNX0M912345K".into()),
        source_size: 256_060_514_304,
        logical_sector_size: 512,
        used_bytes: 48_318_382_080,
        stored_bytes: 21_474_836_480,
        table: "gpt".into(),
        partitions: [
            "#1 vfat \"EFI\" 104.9 MB",
            "#2 Microsoft reserved 16.8 MB",
            "#3 ntfs \"Windows\" 255.9 GB",
        ]
        .iter()
        .zip(1..)
        .map(|(l, number)| ImagePart {
            number,
            line: l.to_string(),
        })
        .collect(),
        error: None,
    }
}

pub fn stores() -> Vec<StoreRow> {
    vec![
        StoreRow {
            label: None,
            read_only: None,
            path: "/run/imprint/store".into(),
            state: StoreState::Ready(vec![
                image(
                    "lab-win11-2024-05",
                    "2024-05-02T09:14:00Z",
                    "Windows 11 23H2, Office, lab printers",
                ),
                image("reception-pc", "2024-04-18T16:40:12Z", "front desk"),
            ]),
            free_bytes: Some(9_663_676_416),
        },
        StoreRow {
            label: None,
            read_only: None,
            path: "/mnt/share".into(),
            state: StoreState::Missing,
            free_bytes: None,
        },
    ]
}

/// An app on the home screen of the fixed machine.
pub fn app() -> App {
    let mut app = App::new();
    app.version = "0.1.0".into();
    send(
        &mut app,
        Action::Refresh {
            disks: disks(),
            stores: stores(),
        },
    );
    app
}

pub fn send(app: &mut App, a: Action) -> Vec<Effect> {
    tui::update(app, a)
}

pub fn type_text(app: &mut App, s: &str) {
    for c in s.chars() {
        send(app, Action::Input(c));
    }
}

/// The interlock results a real run gives for the fixed disks and the first image.
pub fn checks() -> Vec<TargetCheck> {
    vec![
        TargetCheck {
            node: "/dev/nvme0n1".into(),
            refusal: None,
            note: Some("holds partitions nvme0n1p1, nvme0n1p2, nvme0n1p3".into()),
        },
        TargetCheck {
            node: "/dev/sda".into(),
            refusal: Some("refusing to write /dev/sda (ProtoSATA, serial SATA-SER-3, 500.1 GB): /dev/sda2 is mounted on /mnt/old (rule: never write a mounted disk); unmount it (umount /mnt/old) and try again".into()),
            note: None,
        },
        TargetCheck {
            node: "/dev/sdb".into(),
            refusal: Some("refusing to write /dev/sdb (Cruzer Blade, serial 4C530001230208117543, 32.0 GB): it holds the image store /run/imprint/store (rule: never overwrite the store, the source or the boot medium); choose another disk".into()),
            note: None,
        },
        TargetCheck {
            node: "/dev/vda".into(),
            refusal: None,
            note: None,
        },
    ]
}

/// Drives the restore wizard to the target list of the first image.
pub fn to_restore_target(app: &mut App) -> Vec<Effect> {
    send(app, Action::Restore);
    send(app, Action::Select);
    let fx = send(app, Action::Select);
    send(app, Action::Checked(checks()));
    fx
}

/// The confirmation `ops::plan_restore` gives for the NVMe disk.
pub fn confirm_view() -> tui::app::ConfirmView {
    tui::app::ConfirmView {
        plan_lines: vec![
            "Image:  lab-win11-2024-05 (256.1 GB, captured 2024-05-02T09:14:00Z from /dev/nvme0n1)".into(),
            "Target: /dev/nvme0n1 (Samsung SSD 970 EVO Plus 500GB, serial S4EVNX0M912345K, 512.1 GB)".into(),
            "        EVERYTHING ON IT WILL BE DESTROYED: partitions nvme0n1p1, nvme0n1p2, nvme0n1p3".into(),
        ],
        target: "/dev/nvme0n1".into(),
        model: Some("Samsung SSD 970 EVO Plus 500GB".into()),
        serial: Some("S4EVNX0M912345K".into()),
        size: 512_110_190_592,
        destroyed: vec!["partitions nvme0n1p1, nvme0n1p2, nvme0n1p3".into()],
        word: "345K".into(),
        word_is_serial: true,
    }
}

/// The confirmation `ops::plan_restore` gives for partition 3 of the NVMe disk.
pub fn confirm_view_partition() -> tui::app::ConfirmView {
    let mut v = confirm_view();
    v.plan_lines = vec![
        v.plan_lines[0].clone(),
        "Part:   partition 3 (ntfs) of the image, 255.9 GB".into(),
        v.plan_lines[1].clone(),
        "        THE PARTITION AT BYTE 122683392 (510.0 GB) WILL BE OVERWRITTEN; nothing else is touched".into(),
    ];
    v
}

/// Drives to the confirmation screen for the NVMe disk.
pub fn to_confirm(app: &mut App) {
    to_restore_target(app);
    send(app, Action::Select); // nvme0n1, accepted
    let fx = send(app, Action::Select); // whole disk
    assert!(matches!(fx.as_slice(), [Effect::PlanRestore(_)]), "{fx:?}");
    send(app, Action::Planned(Ok(confirm_view())));
}

/// The screen as text, one line per row, trailing spaces cut.
pub fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(80, 25)).unwrap();
    t.draw(|f| tui::render(app, f)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Compares the screen with tests/snapshots/NAME.txt. UPDATE_SNAPSHOTS=1 rewrites it;
/// a missing file is written and fails, so a new screen is looked at once.
pub fn snapshot(name: &str, app: &App) {
    let got = screen(app);
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(want) if !update => assert!(
            want == got,
            "screen {name} changed; UPDATE_SNAPSHOTS=1 accepts it.\n--- want\n{want}\n--- got\n{got}"
        ),
        _ => {
            std::fs::write(&path, &got).unwrap();
            assert!(update, "new snapshot {name} written; check it and rerun:\n{got}");
        }
    }
}

/// What `ops::preview_capture` says about a disk that reads `read_bytes`.
pub fn previewed(node: &str, read_bytes: u64) -> Action {
    let size = disks()
        .iter()
        .find(|d| d.node == Path::new(node))
        .map(|d| d.size)
        .unwrap_or(0);
    Action::CapturePreviewed {
        source: node.into(),
        preview: Ok(ops::CapturePreview {
            size,
            read_bytes,
            warnings: vec![],
        }),
    }
}

/// Drives the capture wizard for disk number `disk` up to the summary, named "pc-07".
pub fn to_capture_summary(disk: usize) -> App {
    let mut app = app();
    send(&mut app, Action::Capture);
    for _ in 0..disk {
        send(&mut app, Action::Down);
    }
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    type_text(&mut app, "pc-07");
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    assert_eq!(app.screen, tui::Screen::CaptureSummary);
    app
}

/// A network store as `connect_store` reports it: an SMB share with one image.
pub fn smb_store_row() -> StoreRow {
    StoreRow {
        path: "/run/imprint/net/412-0".into(),
        label: Some("smb://lab@10.0.2.4/qemu/images".into()),
        read_only: None,
        state: StoreState::Ready(vec![image(
            "classroom-2024",
            "2024-06-11T08:00:00Z",
            "room B12",
        )]),
        free_bytes: Some(1_099_511_627_776),
    }
}

/// Fills the network store form: SMB, server, share, user, password (not sent).
pub fn fill_smb_form(app: &mut App) {
    send(app, Action::AddStore);
    send(app, Action::Down);
    type_text(app, "10.0.2.4");
    send(app, Action::Select);
    type_text(app, "qemu/images");
    send(app, Action::Select);
    type_text(app, "lab");
    send(app, Action::Select);
    type_text(app, "s3cret");
}

/// A disk image file as a disk row.
pub fn file_disk(path: &Path) -> DiskRow {
    DiskRow {
        node: path.to_owned(),
        size: std::fs::metadata(path).unwrap().len(),
        model: None,
        serial: None,
        bus: "file".into(),
        removable: false,
        partitions: vec![],
        in_use: vec![],
    }
}

/// Feeds the runtime's news to the App while `busy` holds (a job, a connection).
pub fn pump_while(app: &mut App, rt: &mut tui::Runtime, busy: impl Fn(&App) -> bool) {
    let t0 = std::time::Instant::now();
    while busy(app) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "no answer from the runtime"
        );
        for a in rt.wait(std::time::Duration::from_millis(200)) {
            tui::dispatch(app, rt, a);
        }
    }
}
