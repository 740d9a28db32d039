//! The boot environment's network as the TUI sees it: the form brings it up and says
//! what came of it; a capture into a share is reported by the share's address.

mod common;

use common::*;
use tui::app::{JobKind, NetState};
use tui::{Action, Effect, FixedDisks, JobMsg, JobSpec, Runtime, Screen};

#[test]
fn opening_the_network_store_form_brings_the_network_up() {
    let mut app = app();
    let fx = send(&mut app, Action::AddStore);
    assert_eq!(app.screen, Screen::AddStore);
    assert!(matches!(fx.as_slice(), [Effect::BringUpNetwork]), "{fx:?}");
}

#[test]
fn the_form_says_which_interface_is_up_or_why_there_is_no_network() {
    let mut app = app();
    send(&mut app, Action::AddStore);
    assert!(
        !screen(&app).contains("network:"),
        "no network line where the OS runs the network"
    );

    send(&mut app, Action::Network(NetState::Starting));
    assert!(screen(&app).contains("network: starting (DHCP on every wired port"));

    send(
        &mut app,
        Action::Network(NetState::Up("eth0 10.0.2.15/24".into())),
    );
    let s = screen(&app);
    assert!(s.contains("network: eth0 10.0.2.15/24"), "{s}");
    assert!(app.log.iter().any(|l| l == "network: eth0 10.0.2.15/24"));

    let why = "no cable on any wired port (eth0, eth1): plug the network cable in and try again";
    send(&mut app, Action::Network(NetState::Down(why.into())));
    let s = screen(&app);
    assert!(
        s.contains("no network: no cable on any wired port (eth0, eth1): plug the"),
        "{s}"
    );
}

#[test]
fn outside_the_boot_environment_the_tui_leaves_the_network_alone() {
    let mut rt = Runtime::new(Box::new(FixedDisks(vec![])), vec![]);
    assert!(rt.network.is_none());
    assert!(rt.apply(Effect::BringUpNetwork).is_empty());
    assert!(rt.poll().is_empty());
}

#[test]
fn a_capture_into_a_share_names_the_share_not_its_mount_directory() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i / 4096) as u8).collect();
    std::fs::write(&disk, data).unwrap();
    // Where ops::locations would have mounted smb://lab@10.0.2.4/qemu/images.
    let mounted = dir.path().join("run/imprint/net/412-0");
    std::fs::create_dir_all(&mounted).unwrap();
    let req = ops::CaptureRequest {
        source: disk,
        store: mounted.clone(),
        name: "pc-07".into(),
        description: String::new(),
        level: 3,
        chunk_size: imaging::DEFAULT_CHUNK_SIZE,
        force: false,
        threads: 0,
    };
    let outcome = tui::runtime::run_job(&JobSpec::Capture(req), &mut imaging::NullSink);
    let from_worker = &outcome.as_ref().unwrap().headline;
    assert!(from_worker.contains(&mounted.display().to_string()));

    let mut app = app();
    let mut store = smb_store_row();
    store.path = mounted.clone();
    app.capture.store = Some(store);
    app.job.kind = Some(JobKind::Capture);
    send(
        &mut app,
        Action::Job(JobMsg::Done {
            at_ms: 900,
            outcome,
        }),
    );
    let result = app.result.as_ref().unwrap();
    let headline = &result.outcome.as_ref().unwrap().headline;
    assert_eq!(
        headline,
        "Captured \"pc-07\" into smb://lab@10.0.2.4/qemu/images: the image is complete"
    );
    assert!(!screen(&app).contains("/run/imprint/net"));
}
