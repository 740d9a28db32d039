//! The minimal text menu: list disks, shell, reboot, power off. The fallback on a
//! console where `imprint tui` is missing or keeps crashing (see `ui`). It runs as a
//! child of PID 1 (`imprint-init menu`) so a crash only restarts the menu; it asks PID
//! 1 to reboot or power off through its exit code, the same codes as `imprint tui`.

use std::io::{self, BufRead, Write};
use std::process::Command;
use std::time::Duration;

use crate::probe;

/// Exit code with which the menu asks PID 1 to reboot.
pub const EXIT_REBOOT: i32 = 10;
/// Exit code with which the menu asks PID 1 to power off.
pub const EXIT_POWEROFF: i32 = 11;

pub const SHELL: &str = "/bin/sh";

/// Runs the menu on stdin/stdout until the user picks reboot or power off; returns the
/// process exit code.
pub fn run() -> i32 {
    let stdin = io::stdin();
    let mut out = io::stdout();
    loop {
        let _ = write!(
            out,
            "\nImprint {} - menu\n  1) list disks\n  2) shell\n  3) reboot\n  4) power off\nchoice: ",
            env!("CARGO_PKG_VERSION")
        );
        let _ = out.flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            // EOF on a console (nothing attached to the serial line): do not spin.
            Ok(0) => {
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(out, "menu: reading the console: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        match line.trim() {
            "1" | "l" => {
                let _ = write!(out, "{}", probe::describe(&probe::list_disks()));
            }
            "2" | "s" => {
                let _ = writeln!(out, "starting a shell; type 'exit' to return to the menu");
                if let Err(e) = Command::new(SHELL).status() {
                    let _ = writeln!(out, "menu: starting {SHELL}: {e}");
                }
            }
            "3" | "r" => return EXIT_REBOOT,
            "4" | "p" => return EXIT_POWEROFF,
            "" => {}
            other => {
                let _ = writeln!(out, "menu: unknown choice {other:?}");
            }
        }
    }
}
