//! Network store locations in the CLI (issue 8) where no server is needed: a password
//! in the URL is refused without being echoed, and a share that cannot be mounted says
//! why, never shows the password and leaves nothing mounted. Traffic, if the host kernel
//! has a cifs client at all, goes to 127.0.0.1 only (nothing listens on 445 there).

use std::process::{Command, Output, Stdio};

fn imprint(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imprint"));
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running imprint")
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_password_in_an_smb_url_is_refused_and_not_echoed() {
    let o = imprint(&["images", "smb://lab:s3cret@127.0.0.1/images"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", all_output(&o));
    let out = all_output(&o);
    assert!(out.contains("--password-file"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
}

#[test]
fn an_smb_store_that_cannot_be_mounted_says_why_and_leaves_no_mount() {
    let o = imprint(
        &["--json", "images", "smb://lab@127.0.0.1/images"],
        &[("IMPRINT_STORE_PASSWORD", "s3cret")],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = all_output(&o);
    assert!(out.contains("mounting failed"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("/run/imprint/net/"), "{mounts}");
}

#[test]
fn an_smb_user_without_a_password_source_is_told_how_to_give_one() {
    let o = imprint(&["images", "smb://lab@127.0.0.1/images"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", all_output(&o));
    assert!(
        all_output(&o).contains("IMPRINT_STORE_PASSWORD"),
        "{}",
        all_output(&o)
    );
}

#[test]
fn tui_takes_password_file_and_a_missing_one_fails_before_the_screen() {
    let o = imprint(
        &[
            "tui",
            "--password-file",
            "/nonexistent/imprint-pw",
            "--store",
            "smb://lab@127.0.0.1/images",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let out = all_output(&o);
    assert!(
        out.contains("reading the password file") && out.contains("/nonexistent/imprint-pw"),
        "{out}"
    );
    // Nothing drew a screen: the alternate screen was never entered.
    assert!(!out.contains("\x1b[?1049h"), "{out}");
}
