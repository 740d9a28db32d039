//! The state machine: what `update` allows and what it asks the runtime to do.

mod common;

use common::*;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui::app::{JobFailure, Popup};
use tui::{keymap, Action, Effect, Exit, JobMsg, JobSpec, Screen};

fn starts_restore(fx: &[Effect]) -> bool {
    fx.iter()
        .any(|e| matches!(e, Effect::StartJob(JobSpec::Restore { .. })))
}

#[test]
fn restore_never_starts_without_the_typed_confirmation() {
    let mut app = app();
    to_confirm(&mut app);
    assert_eq!(app.screen, Screen::RestoreConfirm);
    assert!(!starts_restore(&send(&mut app, Action::Select)));
    assert_eq!(app.screen, Screen::RestoreConfirm);
    assert!(app.restore.mismatch);
}

#[test]
fn wrong_characters_keep_the_restore_locked() {
    let mut app = app();
    to_confirm(&mut app);
    for wrong in ["3456", "345", "345K5", "S4EVNX0M912345K", "ERASE", "yes"] {
        type_text(&mut app, wrong);
        assert!(!starts_restore(&send(&mut app, Action::Select)), "{wrong}");
        assert_eq!(app.screen, Screen::RestoreConfirm);
        while !app.restore.typed.is_empty() {
            send(&mut app, Action::Erase);
        }
    }
    type_text(&mut app, "345k");
    let fx = send(&mut app, Action::Select);
    assert!(starts_restore(&fx), "{fx:?}");
    assert_eq!(app.screen, Screen::Progress);
    match &fx[0] {
        Effect::StartJob(JobSpec::Restore { req, confirmed }) => {
            assert_eq!(req.target, std::path::PathBuf::from("/dev/nvme0n1"));
            assert_eq!(req.name, "lab-win11-2024-05");
            assert_eq!(confirmed.word, "345K");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn going_back_from_the_confirmation_forgets_what_was_typed() {
    let mut app = app();
    to_confirm(&mut app);
    type_text(&mut app, "345K");
    send(&mut app, Action::Back);
    assert_eq!(app.screen, Screen::RestoreOptions);
    assert!(app.restore.typed.is_empty() && app.restore.confirm.is_none());
}

#[test]
fn refused_disks_cannot_be_chosen() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Down); // sda: mounted
    assert!(send(&mut app, Action::Select).is_empty());
    assert_eq!(app.screen, Screen::RestoreTarget);
    assert!(app.status.as_deref().unwrap().contains("mounted"));
}

#[test]
fn disks_not_yet_checked_cannot_be_chosen() {
    let mut app = app();
    send(&mut app, Action::Restore);
    send(&mut app, Action::Select);
    let fx = send(&mut app, Action::Select);
    assert!(matches!(fx.as_slice(), [Effect::CheckTargets { nodes, .. }] if nodes.len() == 4));
    assert!(send(&mut app, Action::Select).is_empty());
    assert_eq!(app.screen, Screen::RestoreTarget);
}

#[test]
fn a_hotplugged_disk_is_checked_again_on_the_target_list() {
    let mut app = app();
    to_restore_target(&mut app);
    let mut d = disks();
    d.pop();
    let fx = send(
        &mut app,
        Action::Refresh {
            disks: d,
            stores: stores(),
        },
    );
    assert!(matches!(fx.as_slice(), [Effect::CheckTargets { nodes, .. }] if nodes.len() == 3));
    assert!(app.log.iter().any(|l| l.contains("disk removed: /dev/vda")));
}

fn planned_request(fx: &[Effect]) -> ops::RestoreRequest {
    match fx {
        [Effect::PlanRestore(req)] => req.clone(),
        other => panic!("expected one PlanRestore, got {other:?}"),
    }
}

#[test]
fn one_partition_option_plans_the_chosen_partition_only() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select); // nvme0n1
    send(&mut app, Action::Down);
    assert!(
        send(&mut app, Action::Select).is_empty(),
        "choosing the option plans nothing yet"
    );
    assert_eq!(app.screen, Screen::RestorePartition);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    let req = planned_request(&send(&mut app, Action::Select));
    assert_eq!(req.partition, Some(3));
    assert!(!req.grow_last);
    send(&mut app, Action::Planned(Ok(confirm_view_partition())));
    assert_eq!(app.screen, Screen::RestoreConfirm);
    // Only that partition is named as destroyed, in discovery's words.
    let destroyed = &app.restore.confirm.as_ref().unwrap().destroyed;
    assert_eq!(destroyed.len(), 1, "{destroyed:?}");
    assert!(destroyed[0].starts_with("nvme0n1p3"), "{destroyed:?}");
    // The typed confirmation still guards it, and the job carries the partition.
    type_text(&mut app, "0000");
    assert!(send(&mut app, Action::Select).is_empty());
    for _ in 0..4 {
        send(&mut app, Action::Erase);
    }
    type_text(&mut app, "345k");
    match send(&mut app, Action::Select).as_slice() {
        [Effect::StartJob(JobSpec::Restore { req, .. })] => {
            assert_eq!(req.partition, Some(3));
            assert!(!req.grow_last);
        }
        other => panic!("expected the restore to start, got {other:?}"),
    }
    assert!(app.job.title.contains("partition 3"), "{}", app.job.title);
}

#[test]
fn grow_last_option_plans_a_whole_disk_restore_that_grows() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    let req = planned_request(&send(&mut app, Action::Select));
    assert!(req.grow_last);
    assert_eq!(req.partition, None);
    send(&mut app, Action::Planned(Ok(confirm_view())));
    type_text(&mut app, "345K");
    match send(&mut app, Action::Select).as_slice() {
        [Effect::StartJob(JobSpec::Restore { req, .. })] => assert!(req.grow_last),
        other => panic!("expected the restore to start, got {other:?}"),
    }
}

#[test]
fn whole_disk_after_backing_out_of_one_partition_restores_everything() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    send(&mut app, Action::Select); // partition 1
    send(&mut app, Action::Planned(Ok(confirm_view_partition())));
    send(&mut app, Action::Back);
    assert_eq!(
        app.screen,
        Screen::RestorePartition,
        "Esc goes back one step"
    );
    send(&mut app, Action::Back);
    send(&mut app, Action::Up);
    let req = planned_request(&send(&mut app, Action::Select));
    assert_eq!((req.partition, req.grow_last), (None, false));
}

#[test]
fn one_partition_is_refused_for_an_image_without_partitions() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    app.restore.image.as_mut().unwrap().partitions.clear();
    send(&mut app, Action::Down);
    assert!(send(&mut app, Action::Select).is_empty());
    assert_eq!(app.screen, Screen::RestoreOptions);
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("no partition table"));
}

#[test]
fn a_refused_plan_writes_nothing_and_says_why() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    assert!(send(&mut app, Action::Planned(Err("too small".into()))).is_empty());
    assert_eq!(app.screen, Screen::RestoreOptions);
    assert!(matches!(&app.popup, Some(Popup::Message { lines, .. }) if lines[0] == "too small"));
    send(&mut app, Action::No);
    assert!(app.popup.is_none());
}

#[test]
fn cancel_asks_first() {
    let mut app = app();
    to_confirm(&mut app);
    type_text(&mut app, "345K");
    send(&mut app, Action::Select);
    assert!(send(&mut app, Action::Cancel).is_empty());
    assert_eq!(app.popup, Some(Popup::ConfirmCancel));
    assert!(send(&mut app, Action::No).is_empty());
    assert!(app.popup.is_none() && !app.job.cancel_requested);
    send(&mut app, Action::Cancel);
    let fx = send(&mut app, Action::Yes);
    assert!(matches!(fx.as_slice(), [Effect::CancelJob]));
    assert!(app.job.cancel_requested);
    // A second request does not ask again nor send a second cancel.
    assert!(send(&mut app, Action::Cancel).is_empty());
    assert!(app.popup.is_none());
}

#[test]
fn a_failed_job_shows_the_failure_not_success() {
    let mut app = app();
    to_confirm(&mut app);
    type_text(&mut app, "345K");
    send(&mut app, Action::Select);
    send(
        &mut app,
        Action::Job(JobMsg::Done {
            at_ms: 5,
            outcome: Err(JobFailure {
                kind: "cancelled".into(),
                exit_code: 5,
                message: "cancelled".into(),
                advice: vec!["Run the restore again to get a working disk.".into()],
            }),
        }),
    );
    assert_eq!(app.screen, Screen::Result);
    let r = app.result.as_ref().unwrap();
    assert!(r.outcome.is_err() && r.verify_offer.is_none());
    let text = screen(&app);
    assert!(text.contains("CANCELLED (exit code 5)"), "{text}");
    assert!(!text.to_lowercase().contains("success"), "{text}");
    // No verify offer after a failure.
    assert!(send(&mut app, Action::Verify).is_empty());
}

#[test]
fn keys_leave_the_progress_screen_only_through_cancel() {
    let mut app = app();
    to_confirm(&mut app);
    type_text(&mut app, "345K");
    send(&mut app, Action::Select);
    for a in [Action::Back, Action::Quit, Action::Tools, Action::Select] {
        send(&mut app, a);
        assert_eq!(app.screen, Screen::Progress);
        assert!(app.exit.is_none());
    }
}

#[test]
fn the_capture_name_is_validated_before_going_on() {
    let mut app = app();
    send(&mut app, Action::Capture);
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    type_text(&mut app, "CON");
    send(&mut app, Action::Select);
    assert_eq!(app.screen, Screen::CaptureName);
    while !app.capture.name.is_empty() {
        send(&mut app, Action::Erase);
    }
    type_text(&mut app, "Reception-PC");
    send(&mut app, Action::Select);
    assert_eq!(
        app.screen,
        Screen::CaptureName,
        "names are unique ignoring case"
    );
    type_text(&mut app, " 2");
    send(&mut app, Action::Select);
    assert_eq!(app.screen, Screen::CaptureDescription);
    send(&mut app, Action::Select);
    send(&mut app, previewed("/dev/nvme0n1", 5_000_000_000));
    let fx = send(&mut app, Action::Select);
    match fx.as_slice() {
        [Effect::StartJob(JobSpec::Capture(req))] => {
            assert_eq!(req.name, "Reception-PC 2");
            assert_eq!(req.source, std::path::PathBuf::from("/dev/nvme0n1"));
            assert!(!req.force, "a mounted source is never captured silently");
        }
        f => panic!("{f:?}"),
    }
}

#[test]
fn text_fields_take_letters_that_are_keys_elsewhere() {
    let mut app = app();
    send(&mut app, Action::Capture);
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    let q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
    assert!(matches!(keymap(&app, q), Some(Action::Input('q'))));
    app.screen = Screen::Home;
    assert!(matches!(keymap(&app, q), Some(Action::Quit)));
}

#[test]
fn reboot_and_power_off_ask_then_return_to_the_caller() {
    let mut app = app();
    send(&mut app, Action::Tools);
    for _ in 0..3 {
        send(&mut app, Action::Down);
    }
    send(&mut app, Action::Select);
    send(&mut app, Action::No);
    assert_eq!(app.exit, None);
    send(&mut app, Action::Select);
    send(&mut app, Action::Yes);
    assert_eq!(app.exit, Some(Exit::Reboot));
    let mut app = common::app();
    send(&mut app, Action::Tools);
    for _ in 0..4 {
        send(&mut app, Action::Down);
    }
    send(&mut app, Action::Select);
    send(&mut app, Action::Yes);
    assert_eq!(app.exit, Some(Exit::PowerOff));
}

#[test]
fn restore_and_verify_need_a_store_with_images() {
    let mut app = tui::App::new();
    send(&mut app, Action::Restore);
    assert_eq!(app.screen, Screen::Home);
    assert!(app.status.is_some());
}

#[test]
fn choosing_the_source_measures_what_the_capture_reads() {
    let mut app = app();
    send(&mut app, Action::Capture);
    let fx = send(&mut app, Action::Select);
    assert!(
        matches!(fx.as_slice(), [Effect::PreviewCapture(p)] if p == std::path::Path::new("/dev/nvme0n1")),
        "{fx:?}"
    );
    // News about another disk (an earlier choice) is not taken for this one.
    send(&mut app, previewed("/dev/sda", 1));
    assert_eq!(app.capture.preview, None);
}

#[test]
fn a_capture_waits_for_the_measurement_then_refuses_what_cannot_fit() {
    let mut app = to_capture_summary(1);
    assert!(send(&mut app, Action::Select).is_empty(), "still measuring");
    assert_eq!(app.screen, Screen::CaptureSummary);
    // 60 GB to read, 9.7 GB free, no image of this disk in the store.
    send(&mut app, previewed("/dev/sda", 60_000_000_000));
    assert!(send(&mut app, Action::Select).is_empty());
    let status = app.status.clone().unwrap();
    assert!(
        status.contains("60.0 GB") && status.contains("9.7 GB"),
        "{status}"
    );
    // 5 GB fits.
    send(&mut app, previewed("/dev/sda", 5_000_000_000));
    let fx = send(&mut app, Action::Select);
    assert!(
        matches!(fx.as_slice(), [Effect::StartJob(JobSpec::Capture(_))]),
        "{fx:?}"
    );
}

#[test]
fn a_store_holding_the_same_disk_only_warns() {
    let mut app = to_capture_summary(0);
    send(&mut app, previewed("/dev/nvme0n1", 60_000_000_000));
    let fit = tui::update::capture_fit(&app);
    assert!(matches!(fit.verdict, tui::update::Fit::Warn(_)), "{fit:?}");
    // About 21.5/48.3 of the read bytes at the store's compression so far.
    assert_eq!(fit.estimate, Some(26_666_666_666));
    let fx = send(&mut app, Action::Select);
    assert!(
        matches!(fx.as_slice(), [Effect::StartJob(JobSpec::Capture(_))]),
        "{fx:?}"
    );
}

#[test]
fn the_network_form_sends_the_location_and_never_keeps_or_prints_the_password() {
    let mut app = app();
    fill_smb_form(&mut app);
    assert!(
        !format!("{app:?}").contains("s3cret"),
        "Debug hides the password"
    );
    let fx = send(&mut app, Action::Select);
    match fx.as_slice() {
        [Effect::ConnectStore { location, password }] => {
            assert_eq!(location, "smb://lab@10.0.2.4/qemu/images");
            assert_eq!(password.0, "s3cret");
            assert!(!format!("{fx:?}").contains("s3cret"));
        }
        f => panic!("{f:?}"),
    }
    assert_eq!(app.net.password.0, "", "the App forgets it once sent");
    assert!(!app.log.iter().any(|l| l.contains("s3cret")));
    // While connecting, keys do nothing (one attempt at a time).
    assert!(send(&mut app, Action::Select).is_empty());
}

#[test]
fn the_network_form_says_what_is_missing_before_connecting() {
    let mut app = app();
    send(&mut app, Action::AddStore);
    for _ in 0..4 {
        send(&mut app, Action::Down);
    }
    assert!(send(&mut app, Action::Select).is_empty());
    assert_eq!(app.net.field, 1, "back on the server field");
    assert!(app.net.error.clone().unwrap().contains("server"));
    type_text(&mut app, "fs1");
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    assert!(send(&mut app, Action::Select).is_empty());
    assert!(app.net.error.clone().unwrap().contains("share name"));
}

#[test]
fn letters_that_are_keys_elsewhere_are_text_in_the_network_form() {
    let mut app = app();
    send(&mut app, Action::AddStore);
    send(&mut app, Action::Down);
    for c in ['q', 'c', 'r', 'n'] {
        let a = keymap(&app, KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)).unwrap();
        send(&mut app, a);
    }
    assert_eq!(app.net.host, "qcrn");
    assert_eq!(app.screen, Screen::AddStore);
    let a = keymap(&app, KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)).unwrap();
    send(&mut app, a);
    assert_eq!(app.screen, Screen::Home);
}

#[test]
fn an_smb_user_on_the_command_line_is_asked_for_the_password() {
    let mut app = app();
    let fx = send(
        &mut app,
        Action::ConnectLocation {
            location: "smb://lab@fs1/images/pcs".into(),
            password: None,
        },
    );
    assert!(fx.is_empty());
    assert_eq!(app.screen, Screen::AddStore);
    assert_eq!(
        (app.net.host.as_str(), app.net.path.as_str()),
        ("fs1", "images/pcs")
    );
    assert_eq!(app.net.field, 4, "on the password field");
    // With a password (IMPRINT_STORE_PASSWORD), or for a guest share, it connects at once.
    let mut app = common::app();
    let fx = send(
        &mut app,
        Action::ConnectLocation {
            location: "nfs://nas/srv/imprint".into(),
            password: None,
        },
    );
    assert!(
        matches!(fx.as_slice(), [Effect::ConnectStore { location, .. }] if location == "nfs://nas/srv/imprint")
    );
    send(
        &mut app,
        Action::StoreConnected {
            location: "nfs://nas/srv/imprint".into(),
            result: Err("host unreachable".into()),
        },
    );
    assert_eq!(app.screen, Screen::Home);
    assert!(app.status.clone().unwrap().contains("host unreachable"));
}

#[test]
fn a_read_only_store_is_never_a_capture_destination() {
    let mut app = app();
    let mut http = smb_store_row();
    http.read_only = Some("read-only (HTTP)".into());
    send(
        &mut app,
        Action::Refresh {
            disks: disks(),
            stores: vec![http],
        },
    );
    send(&mut app, Action::Capture);
    send(&mut app, Action::Select);
    assert_eq!(app.screen, Screen::CaptureSource);
    assert!(app.status.clone().unwrap().contains("no store to write to"));
    // Restore and verify still use it.
    send(&mut app, Action::Back);
    send(&mut app, Action::Restore);
    assert_eq!(app.screen, Screen::RestoreStore);
}
