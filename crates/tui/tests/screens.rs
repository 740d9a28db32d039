//! Every screen at 80×25, compared with tests/snapshots/*.txt.

mod common;

use common::*;
use imaging::{Event, Progress};
use tui::app::{JobFailure, JobSuccess};
use tui::{Action, JobMsg, StoreRow};

fn progress_app() -> tui::App {
    let mut app = app();
    to_confirm(&mut app);
    type_text(&mut app, "345K");
    send(&mut app, Action::Select);
    for (ms, done) in [
        (1_000u64, 40_000_000_000u64),
        (6_000, 90_000_000_000),
        (10_000, 120_000_000_000),
    ] {
        send(
            &mut app,
            Action::Job(JobMsg::Event {
                at_ms: ms,
                event: Event::Progress(Progress {
                    done_bytes: done,
                    total_bytes: 256_060_514_304,
                    done_chunks: done >> 20,
                    total_chunks: 256_060_514_304 >> 20,
                    written_chunks: (done >> 20) - 1200,
                    skipped_chunks: 1200,
                }),
            }),
        );
    }
    send(
        &mut app,
        Action::Job(JobMsg::Event {
            at_ms: 10_000,
            event: Event::Phase("writing target"),
        }),
    );
    app
}

#[test]
fn home() {
    snapshot("home", &app());
}

#[test]
fn home_with_store_pane_focused() {
    let mut app = app();
    send(&mut app, Action::Focus);
    send(&mut app, Action::Down);
    snapshot("home_stores", &app);
}

#[test]
fn capture_wizard() {
    let mut app = app();
    send(&mut app, Action::Capture);
    snapshot("capture_source", &app);
    send(&mut app, Action::Select);
    snapshot("capture_store", &app);
    send(&mut app, Action::Select);
    type_text(&mut app, "lab/pc");
    snapshot("capture_name_invalid", &app);
    for _ in 0..3 {
        send(&mut app, Action::Erase);
    }
    type_text(&mut app, "-pc 07");
    snapshot("capture_name_ok", &app);
    send(&mut app, Action::Select);
    type_text(&mut app, "reference PC, before updates");
    snapshot("capture_description", &app);
    send(&mut app, Action::Select);
    snapshot("capture_summary_measuring", &app);
    send(&mut app, previewed("/dev/nvme0n1", 7_340_032_000));
    snapshot("capture_summary", &app);
}

#[test]
fn capture_summary_refuses_a_disk_whose_data_cannot_fit() {
    // The store has 9.7 GB free and no image of /dev/sda.
    let mut app = to_capture_summary(1);
    send(&mut app, previewed("/dev/sda", 60_000_000_000));
    snapshot("capture_summary_refused", &app);
}

#[test]
fn capture_summary_warns_when_the_store_already_holds_this_disk() {
    // The store holds images of the NVMe disk (same serial): unchanged chunks are shared.
    let mut app = to_capture_summary(0);
    send(&mut app, previewed("/dev/nvme0n1", 60_000_000_000));
    snapshot("capture_summary_dedup_warning", &app);
}

#[test]
fn restore_wizard_up_to_confirmation() {
    let mut app = app();
    send(&mut app, Action::Restore);
    snapshot("restore_store", &app);
    send(&mut app, Action::Select);
    snapshot("restore_image", &app);
    send(&mut app, Action::Select);
    snapshot("restore_target_checking", &app);
    send(&mut app, Action::Checked(checks()));
    snapshot("restore_target_refusals", &app);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    snapshot("restore_target_refused_key", &app);
    send(&mut app, Action::Up);
    send(&mut app, Action::Select);
    snapshot("restore_options", &app);
}

#[test]
fn restore_one_partition() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    snapshot("restore_partition", &app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Planned(Ok(confirm_view_partition())));
    type_text(&mut app, "345K");
    snapshot("restore_confirm_partition", &app);
}

#[test]
fn restore_grow_last() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    send(&mut app, Action::Planned(Ok(confirm_view())));
    snapshot("restore_confirm_grow", &app);
}

#[test]
fn restore_confirmation() {
    let mut app = app();
    to_confirm(&mut app);
    snapshot("restore_confirm", &app);
    type_text(&mut app, "34");
    snapshot("restore_confirm_typing", &app);
    type_text(&mut app, "5X");
    send(&mut app, Action::Select);
    snapshot("restore_confirm_wrong", &app);
    send(&mut app, Action::Erase);
    type_text(&mut app, "K");
    snapshot("restore_confirm_matches", &app);
}

#[test]
fn restore_confirmation_without_serial_asks_for_a_word() {
    let mut app = app();
    to_restore_target(&mut app);
    for _ in 0..3 {
        send(&mut app, Action::Down);
    }
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    let mut v = confirm_view();
    v.target = "/dev/vda".into();
    v.model = None;
    v.serial = None;
    v.size = 1_000_204_886_016;
    v.destroyed = vec![];
    v.word = "ERASE".into();
    v.word_is_serial = false;
    v.plan_lines.truncate(1);
    send(&mut app, tui::Action::Planned(Ok(v)));
    snapshot("restore_confirm_no_serial", &app);
}

#[test]
fn restore_refused_by_plan() {
    let mut app = app();
    to_restore_target(&mut app);
    send(&mut app, Action::Select);
    send(&mut app, Action::Select);
    send(&mut app, Action::Planned(Err("refusing to write /dev/nvme0n1 (Samsung SSD 970 EVO Plus 500GB, serial S4EVNX0M912345K, 512.1 GB): its logical sector size is 4096 bytes but the image was taken from a disk with 512-byte sectors (rule: partition tables count in sectors, so the result would not boot); use a disk with 512-byte sectors, or connect this one the way the source was (USB enclosures and adapters can change a disk's sector size)".into())));
    snapshot("restore_refused_popup", &app);
}

#[test]
fn progress_and_cancel() {
    let mut app = progress_app();
    snapshot("progress", &app);
    send(&mut app, Action::Cancel);
    snapshot("progress_cancel_popup", &app);
    send(&mut app, Action::Yes);
    snapshot("progress_cancelling", &app);
}

#[test]
fn results() {
    let mut app = progress_app();
    send(
        &mut app,
        Action::Job(JobMsg::Done {
            at_ms: 30_000,
            outcome: Ok(JobSuccess {
                headline: "Restored \"lab-win11-2024-05\" onto /dev/nvme0n1".into(),
                lines: vec![
                    "Wrote 48.3 GB in 46080 chunks in 612.0 s (78.9 MB/s)".into(),
                    "244198 chunks in the image, 198118 needed no write, every chunk's hash checked before writing".into(),
                ],
            }),
        }),
    );
    snapshot("result_restore_success", &app);

    let mut app = progress_app();
    send(&mut app, Action::Job(JobMsg::Event { at_ms: 11_000, event: Event::Warning("the kernel did not re-read the new partition table (busy); reboot before using the disk".into()) }));
    send(
        &mut app,
        Action::Job(JobMsg::Done {
            at_ms: 12_000,
            outcome: Err(JobFailure {
                kind: "failed".into(),
                exit_code: 1,
                message: "writing /dev/nvme0n1 at byte 125829120: Input/output error (os error 5); the partition table areas were zeroed".into(),
                advice: vec![
                    "The restore did not finish: the disk is NOT usable.".into(),
                    "Fix the cause above (see Tools > Show log), then restore again.".into(),
                ],
            }),
        }),
    );
    snapshot("result_restore_failed", &app);
}

#[test]
fn verify_wizard() {
    let mut app = app();
    send(&mut app, Action::Verify);
    send(&mut app, Action::Select);
    snapshot("verify_image", &app);
    send(&mut app, Action::Select);
    snapshot("verify_mode", &app);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    snapshot("verify_target", &app);
}

#[test]
fn tools_keyboard_log_and_reboot() {
    let mut app = app();
    send(&mut app, Action::Tools);
    snapshot("tools", &app);
    send(&mut app, Action::Down);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    send(&mut app, Action::Down);
    send(&mut app, Action::Select);
    send(
        &mut app,
        Action::KeyboardApplied {
            layout: "de".into(),
            note: "no keymap loader (loadkeys) in this system: \"de\" is recorded, but the keyboard still types as before".into(),
        },
    );
    snapshot("keyboard", &app);
    send(&mut app, Action::Back);
    send(&mut app, Action::Up);
    send(&mut app, Action::Select);
    snapshot("log", &app);
    send(&mut app, Action::Back);
    send(&mut app, Action::Tools);
    for _ in 0..3 {
        send(&mut app, Action::Down);
    }
    send(&mut app, Action::Select);
    snapshot("reboot_popup", &app);
}

#[test]
fn add_network_store() {
    let mut app = app();
    send(&mut app, Action::AddStore);
    snapshot("add_store_empty", &app);
    fill_smb_form(&mut app);
    snapshot("add_store_smb", &app);
    assert!(
        !screen(&app).contains("s3cret"),
        "the password is never drawn"
    );
    send(&mut app, Action::Select);
    snapshot("add_store_connecting", &app);
    send(
        &mut app,
        Action::StoreConnected {
            location: "smb://lab@10.0.2.4/qemu/images".into(),
            result: Err("store smb://lab@10.0.2.4/qemu/images: mounting failed: access denied: wrong user name or password, or the user may not use this share (Permission denied (os error 13))".into()),
        },
    );
    snapshot("add_store_access_denied", &app);
    assert!(!screen(&app).contains("s3cret"));
    send(&mut app, Action::Select);
    send(
        &mut app,
        Action::StoreConnected {
            location: "smb://lab@10.0.2.4/qemu/images".into(),
            result: Ok(smb_store_row()),
        },
    );
    snapshot("home_network_store", &app);
}

#[test]
fn add_http_store_form() {
    let mut app = app();
    send(&mut app, Action::AddStore);
    send(&mut app, Action::Right);
    send(&mut app, Action::Right);
    send(&mut app, Action::Down);
    type_text(&mut app, "10.0.2.100:8080");
    send(&mut app, Action::Down);
    type_text(&mut app, "stores/lab");
    snapshot("add_store_http", &app);
}

#[test]
fn capture_store_list_greys_a_read_only_http_store() {
    let mut app = app();
    let mut stores = stores();
    stores.push(StoreRow {
        path: "http://10.0.2.100:8080/stores/lab/".into(),
        label: Some("http://10.0.2.100:8080/stores/lab/".into()),
        read_only: Some(tui::runtime::HTTP_READ_ONLY.into()),
        ..smb_store_row()
    });
    send(
        &mut app,
        Action::Refresh {
            disks: disks(),
            stores,
        },
    );
    send(&mut app, Action::Capture);
    send(&mut app, Action::Select);
    snapshot("capture_store_http_greyed", &app);
}
