//! The outside world of a mount: util-linux commands (`losetup`, `mount`, `umount`),
//! `/proc/self/mountinfo`, processes. Kept in one place so the rest reads as steps.

use ops::OpsError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An `OpsError::Io` maker for `map_err`: `.map_err(io_err("reading", path))`.
pub fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OpsError {
    let path = path.to_path_buf();
    move |source| OpsError::Io { what, path, source }
}

/// Runs a command, returning its trimmed stdout, or an error naming the step and
/// carrying the command's own message.
pub fn run(what: &str, cmd: &mut Command) -> Result<String, OpsError> {
    let out = cmd.output().map_err(|e| {
        OpsError::Failed(format!("{what}: cannot run {:?}: {e}", cmd.get_program()))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(OpsError::Failed(format!(
            "{what}: {} failed ({}): {err}",
            cmd.get_program().to_string_lossy(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Loads the kernel module a step needs when it is not there yet: the boot
/// environment loads modules only on demand, and nothing asks for `loop` before the first
/// `losetup` (without the module there is no /dev/loop-control to trigger autoloading).
/// A failure is left for the step itself to report.
pub fn ensure_module(module: &str, present: impl Fn() -> bool) {
    if !present() {
        let _ = Command::new("modprobe")
            .args(["-q", module])
            .stdin(std::process::Stdio::null())
            .status();
    }
}

/// Whether the running kernel knows filesystem type `fstype` (/proc/filesystems).
pub fn has_filesystem(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fstype))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts this process sees.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            Some(MountEntry {
                target: PathBuf::from(unescape(target)),
                fstype: r.next()?.to_string(),
                source: unescape(r.next()?),
            })
        })
        .collect()
}

/// The mount at exactly `path`, the topmost when several are stacked.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.target == path)
}

/// What a loop device is attached to, from sysfs (`/dev/loop3` → its backing file).
pub fn loop_backing(dev: &str) -> Option<PathBuf> {
    let name = dev.strip_prefix("/dev/")?;
    let s = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim_end_matches('\n')))
}

/// The start time of a process in clock ticks since boot (`/proc/PID/stat` field 22),
/// which tells a live process from a later one that reused its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its end.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// True while the process `pid` that started at `started` is alive (not a zombie).
pub fn alive(pid: u32, started: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = s
        .rfind(')')
        .and_then(|i| s.get(i + 2..i + 3))
        .is_some_and(|st| st == "Z");
    !zombie && start_time(pid) == Some(started)
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("bad pid"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).map_err(Into::into)
}
