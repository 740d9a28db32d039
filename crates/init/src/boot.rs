//! Bringing the initramfs up (API filesystems, udev, late USB disks) and taking it down
//! (stop udev, end processes, sync, unmount, reboot(2)). The order follows
//! shared/notes/boot-environment.md §6, measured on these machines.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::process;
use crate::sys;

pub const UDEVD: &str = "/lib/systemd/systemd-udevd";
pub const UDEVADM: &str = "/bin/udevadm";
pub const MODPROBE: &str = "/sbin/modprobe";

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run and /tmp. Failures are reported and
/// skipped: a half-mounted system can still reach a shell.
pub fn mount_api_filesystems(console: &Console) {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let table: [(&str, &str, &str, libc::c_ulong, Option<&str>); 7] = [
        ("proc", "/proc", "proc", nosuid_nodev_noexec, None),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None),
        // The kernel does not mount devtmpfs itself (CONFIG_DEVTMPFS_MOUNT is off).
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            libc::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=000"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    for (source, target, fstype, flags, data) in table {
        let target = Path::new(target);
        let _ = fs::create_dir_all(target);
        match sys::mount(source, target, fstype, flags, data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => console.say(&format!(
                "imprint: mounting {fstype} on {}: {e}",
                target.display()
            )),
        }
    }
    for dir in ["/run/imprint", "/run/udev"] {
        let _ = fs::create_dir_all(dir);
    }
}

/// Mounts efivarfs when booted by UEFI firmware (boot entries, Secure Boot state).
pub fn mount_efivarfs(console: &Console) {
    if !Path::new("/sys/firmware/efi").exists() {
        return;
    }
    let _ = modprobe("efivarfs");
    let target = Path::new("/sys/firmware/efi/efivars");
    if let Err(e) = sys::mount(
        "efivarfs",
        target,
        "efivarfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            console.say(&format!("imprint: mounting efivarfs: {e}"));
        }
    }
}

/// "BIOS", "UEFI" or "UEFI, Secure Boot on" — for the start-up line (and the firmware tests).
pub fn firmware() -> &'static str {
    if !Path::new("/sys/firmware/efi").exists() {
        return "BIOS";
    }
    // efivarfs files start with 4 bytes of attributes, then the variable's value.
    let sb = fs::read("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
        .ok()
        .and_then(|v| v.get(4).copied());
    match sb {
        Some(1) => "UEFI, Secure Boot on",
        Some(_) => "UEFI, Secure Boot off",
        None => "UEFI",
    }
}

/// Loads a module with busybox modprobe (quietly; absence is not an error here).
pub fn modprobe(module: &str) -> bool {
    process::run(
        Command::new(MODPROBE)
            .args(["-q", module])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .map(|s| s.success())
    .unwrap_or(false)
}

/// Brings up the loopback interface (some tools expect it).
pub fn loopback_up() {
    let _ = process::run(
        Command::new("/sbin/ip")
            .args(["link", "set", "lo", "up"])
            .stderr(Stdio::null()),
    );
}

/// Coldplug replays only what a rule of ours acts on. Of the subsystem events (one per
/// bus, driver and module: ~250 on a q35 VM) only `module/block` has a rule (60-block
/// turns on media-change polling).
const COLDPLUG_SUBSYSTEMS: [&str; 5] = [
    "trigger",
    "--type=subsystems",
    "--action=add",
    "--subsystem-match=module",
    "--sysname-match=block",
];

/// Of the device events, the classes skipped here have no driver to load and no rule we
/// ship that does more than devtmpfs already did (~150 of ~290 events, 71 of them ttys).
/// Every skipped event is a udev worker run through all the rules: under TCG the full
/// replay cost 1-2 s of a 5 s udev phase.
const COLDPLUG_DEVICES: [&str; 21] = [
    "trigger",
    "--type=devices",
    "--action=add",
    "--subsystem-nomatch=tty",
    "--subsystem-nomatch=vc",
    "--subsystem-nomatch=vtconsole",
    "--subsystem-nomatch=serial-base",
    "--subsystem-nomatch=mem",
    "--subsystem-nomatch=misc",
    "--subsystem-nomatch=memory",
    "--subsystem-nomatch=memory_tiering",
    "--subsystem-nomatch=node",
    "--subsystem-nomatch=workqueue",
    "--subsystem-nomatch=wakeup",
    "--subsystem-nomatch=bdi",
    "--subsystem-nomatch=clockevents",
    "--subsystem-nomatch=clocksource",
    "--subsystem-nomatch=event_source",
    "--subsystem-nomatch=machinecheck",
    "--subsystem-nomatch=devlink",
    "--subsystem-nomatch=edac",
];

/// Starts systemd-udevd, replays the coldplug events and waits for them to be handled.
/// udevd's builtin libkmod loads the drivers (80-drivers.rules), so no modprobe loop is
/// needed. Returns the time spent.
pub fn start_udev(console: &Console) -> Duration {
    let t = Instant::now();
    let mut marks = Vec::new();
    let steps: [(&str, &[&str]); 4] = [
        (UDEVD, &["--daemon", "--resolve-names=never"]),
        (UDEVADM, &COLDPLUG_SUBSYSTEMS),
        (UDEVADM, &COLDPLUG_DEVICES),
        (UDEVADM, &["settle", "--timeout=60"]),
    ];
    for (program, args) in steps {
        match process::run(Command::new(program).args(args).stdin(Stdio::null())) {
            Ok(s) if s.success() => {}
            Ok(s) => console.say(&format!(
                "imprint: {program} {} exited with {s}",
                args.join(" ")
            )),
            Err(e) => {
                console.say(&format!("imprint: {e}"));
                if program == UDEVD {
                    break;
                }
            }
        }
        marks.push(t.elapsed());
    }
    wait_for_usb_storage(Duration::from_secs(5));
    settle(Duration::from_secs(10));
    marks.push(t.elapsed());
    let m: Vec<String> = marks
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    console.say(&format!(
        "imprint: udev timeline (s): daemon {}, subsystems {}, devices {}, settled {}, usb disks {}",
        m.first().map_or("-", String::as_str),
        m.get(1).map_or("-", String::as_str),
        m.get(2).map_or("-", String::as_str),
        m.get(3).map_or("-", String::as_str),
        m.get(4).map_or("-", String::as_str),
    ));
    t.elapsed()
}

/// Waits for udev's event queue to drain.
pub fn settle(timeout: Duration) {
    let _ = process::run(
        Command::new(UDEVADM)
            .arg("settle")
            .arg(format!("--timeout={}", timeout.as_secs().max(1)))
            .stdin(Stdio::null()),
    );
}

/// `udevadm settle` returns before USB disks exist: usb-storage scans its SCSI bus from
/// a work item after `delay_use` (notes §2.2). Wait until every interface bound to
/// usb-storage or uas has a block device below it, or `timeout`.
pub fn wait_for_usb_storage(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !usb_storage_pending() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn usb_storage_pending() -> bool {
    [
        "/sys/bus/usb/drivers/usb-storage",
        "/sys/bus/usb/drivers/uas",
    ]
    .iter()
    .filter_map(|d| fs::read_dir(d).ok())
    .flat_map(|entries| entries.flatten())
    .filter(|e| e.file_name().to_string_lossy().contains(':'))
    .any(|e| !has_block_below(&e.path(), 6))
}

fn has_block_below(dir: &Path, depth: u32) -> bool {
    if dir.join("block").is_dir() {
        return true;
    }
    if depth == 0 {
        return false;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        // Follow only child devices (hostN, targetN:N:N, N:N:N:N), never the
        // `driver`/`subsystem`/`port` links that lead back up the tree.
        (name.starts_with("host") || name.starts_with("target") || name.contains(':'))
            && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && has_block_below(&e.path(), depth - 1)
    })
}

/// Kernel uptime in seconds, for the timing lines.
pub fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// How the machine ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Reboot,
    Poweroff,
}

/// Stops udevd, ends every process, syncs, unmounts disks and shares, then reboot(2).
/// Never returns: if reboot(2) fails, PID 1 idles (it must not exit).
pub fn halt(console: &Console, how: Halt) -> ! {
    console.say(match how {
        Halt::Reboot => "imprint: rebooting",
        Halt::Poweroff => "imprint: powering off",
    });
    let _ = process::run(
        Command::new(UDEVADM)
            .args(["control", "--exit"])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    process::terminate_all(Duration::from_secs(2));
    sys::sync();
    unmount_disks(console);
    sys::sync();
    let err = sys::reboot(match how {
        Halt::Reboot => libc::RB_AUTOBOOT,
        Halt::Poweroff => libc::RB_POWER_OFF,
    });
    console.say(&format!("imprint: reboot(2) failed: {err}"));
    loop {
        process::reap_orphans();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Unmounts every filesystem that lives on a block device or a network share, innermost
/// first; the API filesystems and the initramfs itself need nothing.
fn unmount_disks(console: &Console) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let targets: Vec<(String, String)> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (src, target, fstype) = (f.next()?, f.next()?, f.next()?);
            let on_disk = src.starts_with("/dev/")
                || matches!(
                    fstype,
                    "cifs" | "smb3" | "nfs" | "nfs4" | "fuseblk" | "fuse"
                );
            on_disk.then(|| (target.replace("\\040", " "), src.to_string()))
        })
        .collect();
    for (target, src) in targets.iter().rev() {
        let path = Path::new(target);
        if let Err(e) = sys::umount(path, 0) {
            console.say(&format!(
                "imprint: unmounting {src} from {target}: {e}; detaching"
            ));
            let _ = sys::umount(path, libc::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coldplug_skips_no_class_that_loads_drivers_or_names_disks() {
        assert!(COLDPLUG_SUBSYSTEMS.contains(&"--subsystem-match=module"));
        assert!(COLDPLUG_SUBSYSTEMS.contains(&"--sysname-match=block"));
        assert_eq!(
            COLDPLUG_DEVICES[..3],
            ["trigger", "--type=devices", "--action=add"]
        );
        // Buses whose modalias events load drivers, and the classes our rules act on.
        for needed in [
            "pci", "usb", "scsi", "block", "nvme", "virtio", "acpi", "platform", "pnp", "net",
            "input", "hid", "mmc", "serio", "cpu",
        ] {
            assert!(
                !COLDPLUG_DEVICES.contains(&format!("--subsystem-nomatch={needed}").as_str()),
                "{needed} must be replayed"
            );
        }
        // After the three trigger words, only exclusions: nothing narrows the replay to
        // a subset by accident (a --subsystem-match here would drop every other bus).
        assert!(COLDPLUG_DEVICES[3..]
            .iter()
            .all(|a| a.starts_with("--subsystem-nomatch=")));
    }
}
