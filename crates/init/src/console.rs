//! The consoles PID 1 talks on: every device in /sys/class/tty/console/active (the
//! kernel's `console=` list), so status lines and JSON results reach both the screen
//! (tty1) and the serial line. The last entry is /dev/console, where interactive
//! programs run.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::sys;

/// Open console devices. The files stay open for PID 1's lifetime: a serial tty forgets
/// its window size (and the VT its termios) when the last descriptor closes.
///
/// When a child that owned a console as its controlling terminal exits, the kernel hangs
/// the terminal up and every descriptor open on it (ours too) fails with EIO from then on,
/// so PID 1 calls [`Console::reopen`] after each interactive child.
#[derive(Debug)]
pub struct Console {
    outputs: RefCell<Vec<(String, File)>>,
    size: (u16, u16),
}

/// Kernel console names as device names: `tty0` means "the current VT", which is tty1
/// at boot and is the one a program can own.
fn device_name(name: &str) -> String {
    if name == "tty0" {
        "tty1".to_string()
    } else {
        name.to_string()
    }
}

/// Serial-like consoles have no window size of their own.
pub fn is_serial(name: &str) -> bool {
    ["ttyS", "ttyUSB", "ttyAMA", "hvc", "ttyACM"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Device names of the active consoles, /dev/console's own device last.
pub fn active_names() -> Vec<String> {
    // The kernel prints its console list in reverse, so /dev/console's device is last
    // (busybox cttyhack relies on the same order). `tty0 tty1` would name one VT twice.
    let mut names: Vec<String> = Vec::new();
    for name in std::fs::read_to_string("/sys/class/tty/console/active")
        .unwrap_or_default()
        .split_whitespace()
        .map(device_name)
    {
        names.retain(|n| n != &name);
        names.push(name);
    }
    names
}

impl Console {
    /// Opens every active console; falls back to /dev/console. Serial consoles get the
    /// window size `cols` x `rows`.
    pub fn open(cols: u16, rows: u16) -> Console {
        let console = Console {
            outputs: RefCell::new(Vec::new()),
            size: (cols, rows),
        };
        console.reopen();
        console
    }

    /// Opens the console devices again (after a hangup).
    pub fn reopen(&self) {
        let (cols, rows) = self.size;
        let mut outputs = Vec::new();
        for name in active_names() {
            let path = PathBuf::from("/dev").join(&name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&path);
            if let Ok(file) = file {
                if is_serial(&name) {
                    let _ = sys::set_window_size(&file, cols, rows);
                }
                outputs.push((name, file));
            }
        }
        if outputs.is_empty() {
            if let Ok(f) = OpenOptions::new().write(true).open("/dev/console") {
                outputs.push(("console".into(), f));
            }
        }
        *self.outputs.borrow_mut() = outputs;
    }

    /// A console that writes to stderr only (before /dev is mounted, and in tests).
    pub fn stderr_only() -> Console {
        Console {
            outputs: RefCell::new(Vec::new()),
            size: (80, 25),
        }
    }

    /// Writes one line to every console, in one write(2) each so lines do not tear.
    pub fn say(&self, line: &str) {
        let mut buf = String::with_capacity(line.len() + 2);
        buf.push_str(line);
        buf.push('\n');
        let outputs = self.outputs.borrow();
        if outputs.is_empty() {
            let _ = io::stderr().write_all(buf.as_bytes());
        }
        for (_, mut f) in outputs.iter().map(|(n, f)| (n, f)) {
            let _ = f.write_all(buf.as_bytes());
        }
    }

    /// The device interactive programs run on: the last active console.
    pub fn primary(&self) -> Option<PathBuf> {
        self.outputs
            .borrow()
            .last()
            .filter(|(n, _)| n != "console")
            .map(|(n, _)| PathBuf::from("/dev").join(n))
    }

    /// The serial consoles' window size, columns x rows.
    pub fn size(&self) -> (u16, u16) {
        self.size
    }

    /// Names of the open consoles, for the log.
    pub fn names(&self) -> Vec<String> {
        self.outputs
            .borrow()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}
