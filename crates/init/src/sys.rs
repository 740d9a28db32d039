//! The only place in this crate that calls into libc: mounts, reboot(2), waitpid(2),
//! terminal ioctls and the pre-exec hook that gives a child a controlling terminal.
//!
//! Each function wraps exactly one syscall (or one tightly coupled pair) and returns
//! `io::Error` from errno, so callers can say which step failed.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2).
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source.as_bytes())?;
    let target = cstring(target.as_os_str().as_bytes())?;
    let fstype = cstring(fstype.as_bytes())?;
    let data = data.map(|d| cstring(d.as_bytes())).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is a live NUL-terminated CString (or null for `data`, which
    // mount(2) accepts) that outlives the call; the kernel copies them.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    })
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target.as_os_str().as_bytes())?;
    // SAFETY: `target` is a live NUL-terminated string for the duration of the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// sync(2).
pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// reboot(2) with one of the `RB_*` commands. Returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot(2) takes a plain integer command; on success it does not return.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// One reaped child.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub pid: u32,
    pub status: ExitStatus,
}

/// waitpid(-1): reaps any child. `block` waits for one; otherwise returns `Ok(None)` when
/// no child has changed state. `Err` with ECHILD means there are no children at all.
pub fn reap_any(block: bool) -> io::Result<Option<Reaped>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status: libc::c_int = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(Reaped {
            pid: pid.unsigned_abs(),
            status: ExitStatus::from_raw(status),
        }));
    }
}

/// kill(2). `pid` -1 signals every process except PID 1 itself.
pub fn kill(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers.
    check(unsafe { libc::kill(pid, signal) })
}

/// Sets a terminal's window size (TIOCSWINSZ). Serial lines have none of their own
/// (TIOCGWINSZ reports 0x0), so full-screen programs need one set for them.
pub fn set_window_size(tty: &impl AsRawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call;
    // the fd is owned by the caller and open.
    check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) })
}

/// Makes the child a session leader whose controlling terminal is its stdin (which must
/// be a tty), like busybox `setsid cttyhack`: job control and Ctrl-C then work in a shell.
pub fn session_with_controlling_tty(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and only calls the
    // async-signal-safe setsid(2) and ioctl(2).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Failure is not fatal: the program still runs, only without job control.
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
}
