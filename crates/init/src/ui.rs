//! The interactive side of PID 1: one `imprint tui` per console (tty1 and the serial
//! line), each a session leader owning its terminal, restarted when it ends; the old
//! text menu on a console whose TUI is missing or keeps crashing. A UI asks PID 1 to
//! reboot or power off through its exit code (10, 11: docs/CLI.md "Exit codes").

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ops::locations::StoreLocation;
use ops::net::{Net, NET_ENV};

use crate::boot::{self, Halt};
use crate::cmdline::{Config, Secret, Store};
use crate::console::{self, Console};
use crate::job::{self, IMPRINT, STORE_MOUNT};
use crate::{credentials, menu, probe, sys};

/// How the TUI is given a network store's password: the variable the CLI and the TUI
/// read (docs/CLI.md), never argv, which every process can read.
pub const PASSWORD_ENV: &str = "IMPRINT_STORE_PASSWORD";

/// The boot partition's label on the USB image (mkimage.sh).
pub const BOOT_LABEL: &str = "IMPRINTBOOT";
/// Where the boot partition is mounted read-only so the interlock can name it.
pub const BOOT_MOUNT: &str = "/run/imprint/boot";
/// `ops::BOOT_MEDIUM_ENV`, spelt out: PID 1 does not link the imaging crates.
pub const BOOT_MEDIUM_ENV: &str = "IMPRINT_BOOT_MEDIUM";
/// The store's label on the USB image.
pub const STORE_LABEL: &str = "IMPRINT";

/// A UI that ends this soon after starting counts as a crash.
const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// Crashes in a row after which a console falls back to the text menu.
const MAX_CRASHES: u32 = 3;

/// Which program runs on a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tui,
    Menu,
}

#[derive(Debug)]
struct Slot {
    tty: String,
    kind: Kind,
    pid: Option<u32>,
    started: Instant,
    crashes: u32,
}

/// What every `imprint tui` is started with, from the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuiSetup {
    /// `imprint.net=`, handed over in `IMPRINT_NET`: the TUI brings the network up
    /// itself (ops::net) when a network store is wanted.
    pub net: Net,
    /// `--store URL`: a network store named by `imprint.store=` in menu mode, with the
    /// credentials file's user when the URL has none.
    pub store: Option<String>,
    /// Its password (`imprint.store.password=` or the credentials file).
    pub password: Option<Secret>,
    /// `--ca-cert`: the copy of `imprint.store.ca=`.
    pub ca: Option<PathBuf>,
}

impl TuiSetup {
    /// The setup for a command line; `files` is what the IMPRINT partition holds.
    pub fn new(cfg: &Config, files_root: Option<&Path>, console: &Console) -> TuiSetup {
        let mut setup = TuiSetup {
            net: cfg.net.clone(),
            ..TuiSetup::default()
        };
        // After a job the menu lists the IMPRINT partition's stores only: the job's own
        // network store was unmounted on purpose.
        if cfg.action.is_job() {
            return setup;
        }
        let loc = match &cfg.store {
            Store::Share(loc) => loc.clone(),
            Store::Http(url) => match StoreLocation::parse(url) {
                Ok(l) => l,
                Err(e) => {
                    console.say(&format!("imprint: imprint.store: {e}"));
                    return setup;
                }
            },
            Store::Label(_) | Store::Device(_) => return setup,
        };
        let smb = matches!(loc, StoreLocation::Smb(_));
        let files = match files_root {
            Some(root) if smb || cfg.ca.is_some() => job::read_files(cfg, smb, root, console)
                .unwrap_or_else(|e| {
                    console.say(&format!("imprint: {e}"));
                    Default::default()
                }),
            _ => Default::default(),
        };
        let loc = job::with_user(&loc, &files.credentials);
        setup.password = cfg.password.clone().or(files.credentials.password);
        if setup.password.is_some() && loc.user().is_none() && smb {
            console.say(&format!(
                "imprint: imprint.store={loc}: a password is given but no user: the text UI connects as a guest (use smb://USER@SERVER/SHARE or user= in IMPRINT:/{})",
                credentials::PATH
            ));
        }
        setup.store = Some(loc.to_string());
        setup.ca = files.ca;
        setup
    }

    /// The TUI's arguments after `tui`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--store".to_string(), STORE_MOUNT.to_string()];
        if let Some(s) = &self.store {
            args.extend(["--store".to_string(), s.clone()]);
        }
        if let Some(ca) = &self.ca {
            args.extend(["--ca-cert".to_string(), ca.display().to_string()]);
        }
        args
    }

    /// Environment variables for the TUI (the password among them).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![(NET_ENV, self.net.to_string())];
        if let Some(p) = &self.password {
            env.push((PASSWORD_ENV, p.expose().to_string()));
        }
        env
    }
}

/// Prepares what the TUI needs once: the store mounted read-write at STORE_MOUNT,
/// `IMPRINT_BOOT_MEDIUM` when the boot medium can be found, and what the command line
/// says about networking and a network store.
pub fn prepare(console: &Console, cfg: Option<&Config>) -> TuiSetup {
    let store = PathBuf::from("/dev/disk/by-label").join(STORE_LABEL);
    match std::fs::canonicalize(&store) {
        Ok(dev) => match job::mount_store_rw(&dev) {
            Ok(()) => console.say(&format!(
                "imprint: store {} mounted read-write on {STORE_MOUNT}",
                dev.display()
            )),
            Err(e) => console.say(&format!("imprint: {e}")),
        },
        Err(_) => console.say(&format!(
            "imprint: no filesystem labelled {STORE_LABEL}; the text UI shows other stores only"
        )),
    }
    // The kernel and initramfs came from the partition labelled IMPRINTBOOT when we
    // booted from the stick; with PXE or a direct kernel boot there is none, and
    // nothing on the machine is the boot medium.
    let boot = PathBuf::from("/dev/disk/by-label").join(BOOT_LABEL);
    if let Ok(dev) = std::fs::canonicalize(&boot) {
        let target = Path::new(BOOT_MOUNT);
        let _ = std::fs::create_dir_all(target);
        boot::modprobe("vfat");
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // Debian's default FAT iocharset is ascii, whose nls module the initramfs lacks.
        let mounted = is_mounted(target)
            || match sys::mount(
                &dev.display().to_string(),
                target,
                "vfat",
                flags,
                Some("iocharset=utf8"),
            ) {
                Ok(()) => true,
                Err(e) => {
                    console.say(&format!(
                        "imprint: mounting the boot partition {} on {BOOT_MOUNT}: {e}; the boot medium is not protected by name (the store's disk still is)",
                        dev.display()
                    ));
                    false
                }
            };
        if mounted {
            // The interlock resolves a path on a mounted filesystem to its disk.
            std::env::set_var(BOOT_MEDIUM_ENV, BOOT_MOUNT);
            console.say(&format!(
                "imprint: boot medium {} ({}) protected",
                probe::parent_disk(&dev).unwrap_or_default(),
                dev.display()
            ));
        }
    }
    let store_mounted = is_mounted(Path::new(STORE_MOUNT));
    match cfg {
        // The credentials file is read where the IMPRINT partition is already mounted:
        // a second, read-only mount of it would be refused (it would change its RO state).
        Some(cfg) => TuiSetup::new(
            cfg,
            store_mounted.then_some(Path::new(STORE_MOUNT)),
            console,
        ),
        None => TuiSetup::default(),
    }
}

fn is_mounted(target: &Path) -> bool {
    let t = target.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(t.as_str()))
}

/// Consoles that get a UI: every active one (tty1 and the serial line), so the
/// technician can use whichever is in front of them.
fn ui_consoles() -> Vec<String> {
    let names = console::active_names();
    if names.is_empty() {
        vec!["console".into()]
    } else {
        names
    }
}

fn spawn(slot: &Slot, size: (u16, u16), setup: &TuiSetup) -> std::io::Result<u32> {
    let path = PathBuf::from("/dev").join(&slot.tty);
    let tty = OpenOptions::new().read(true).write(true).open(&path)?;
    let mut cmd = match slot.kind {
        Kind::Tui => {
            let mut c = Command::new(IMPRINT);
            c.arg("tui").args(setup.args()).envs(setup.env());
            c
        }
        Kind::Menu => {
            let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "/init".into());
            let mut c = Command::new(exe);
            c.arg("menu");
            c
        }
    };
    cmd.env("TERM", "linux")
        .stdin(Stdio::from(tty.try_clone()?))
        .stdout(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::from(tty));
    if console::is_serial(&slot.tty) {
        // A serial line has no size of its own; crossterm reads these first.
        cmd.env("COLUMNS", size.0.to_string())
            .env("LINES", size.1.to_string());
    }
    sys::session_with_controlling_tty(&mut cmd);
    Ok(cmd.spawn()?.id())
}

/// Runs the UIs until one asks to reboot or power off; returns that request.
pub fn run(console: &Console, size: (u16, u16), setup: &TuiSetup) -> Halt {
    let tui_present = Path::new(IMPRINT).exists();
    if !tui_present {
        console.say(&format!(
            "imprint: {IMPRINT} is missing; starting the text menu"
        ));
    }
    let mut slots: Vec<Slot> = ui_consoles()
        .into_iter()
        .map(|tty| Slot {
            tty,
            kind: if tui_present { Kind::Tui } else { Kind::Menu },
            pid: None,
            started: Instant::now(),
            crashes: 0,
        })
        .collect();
    let mut by_pid: HashMap<u32, usize> = HashMap::new();
    loop {
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.pid.is_some() {
                continue;
            }
            slot.started = Instant::now();
            match spawn(slot, size, setup) {
                Ok(pid) => {
                    slot.pid = Some(pid);
                    by_pid.insert(pid, i);
                }
                Err(e) => {
                    console.say(&format!("imprint: starting the UI on {}: {e}", slot.tty));
                    slot.crashes += 1;
                }
            }
        }
        // Every spawn failed (no usable console at all): wait instead of spinning.
        if by_pid.is_empty() {
            std::thread::sleep(Duration::from_secs(5));
            fallback_if_failing(console, &mut slots);
            continue;
        }
        let reaped = match sys::reap_any(true) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        // Orphans re-parented to PID 1 are reaped here too; only our UIs matter.
        let Some(i) = by_pid.remove(&reaped.pid) else {
            continue;
        };
        let slot = &mut slots[i];
        slot.pid = None;
        // The UI's exit hung up the terminal it controlled, and our descriptors with it.
        console.reopen();
        match reaped.status.code() {
            Some(menu::EXIT_REBOOT) => return Halt::Reboot,
            Some(menu::EXIT_POWEROFF) => return Halt::Poweroff,
            _ => {}
        }
        let what = match slot.kind {
            Kind::Tui => "text UI",
            Kind::Menu => "menu",
        };
        console.say(&format!(
            "imprint: the {what} on {} ended ({}); restarting it",
            slot.tty, reaped.status
        ));
        if slot.started.elapsed() < CRASH_WINDOW {
            slot.crashes += 1;
            std::thread::sleep(Duration::from_secs(1));
        } else {
            slot.crashes = 0;
        }
        fallback_if_failing(console, &mut slots);
    }
}

/// A console whose TUI failed MAX_CRASHES times in a row gets the text menu.
fn fallback_if_failing(console: &Console, slots: &mut [Slot]) {
    for slot in slots.iter_mut() {
        if slot.crashes >= MAX_CRASHES && slot.kind == Kind::Tui {
            console.say(&format!(
                "imprint: the text UI on {} keeps failing; starting the text menu there",
                slot.tty
            ));
            slot.kind = Kind::Menu;
            slot.crashes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    fn setup(line: &str, creds: Option<&str>) -> TuiSetup {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = creds {
            std::fs::create_dir_all(dir.path().join("imprint")).unwrap();
            std::fs::write(dir.path().join(credentials::PATH), text).unwrap();
        }
        TuiSetup::new(
            &parse(line).unwrap(),
            Some(dir.path()),
            &Console::stderr_only(),
        )
    }

    #[test]
    fn menu_mode_hands_the_network_store_to_the_tui_with_the_password_outside_argv() {
        let s = setup(
            "imprint.store=smb://10.0.2.4/qemu/lab imprint.net=eth0:10.0.2.15/24:10.0.2.2",
            Some("user=tech\npassword=s3cret pw\n"),
        );
        assert_eq!(
            s.args(),
            [
                "--store",
                STORE_MOUNT,
                "--store",
                "smb://tech@10.0.2.4/qemu/lab"
            ]
        );
        assert!(!s.args().iter().any(|a| a.contains("s3cret")));
        assert_eq!(
            s.env(),
            [
                (NET_ENV, "eth0:10.0.2.15/24:10.0.2.2".to_string()),
                (PASSWORD_ENV, "s3cret pw".to_string())
            ]
        );
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn the_command_line_password_wins_over_the_credentials_file() {
        let s = setup(
            "imprint.store=smb://lab@fs1/images imprint.store.password=fromcmdline",
            Some("user=other\npassword=fromfile\n"),
        );
        assert_eq!(s.store.as_deref(), Some("smb://lab@fs1/images"));
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("fromcmdline"));
    }

    #[test]
    fn nfs_and_http_stores_are_passed_and_local_ones_are_not() {
        let s = setup("imprint.store=nfs://nas/srv/imprint", None);
        assert_eq!(s.store.as_deref(), Some("nfs://nas/srv/imprint"));
        assert_eq!(s.env(), [(NET_ENV, "dhcp".to_string())]);
        let s = setup("imprint.store=http://10.0.2.100/store/", None);
        assert_eq!(s.store.as_deref(), Some("http://10.0.2.100/store/"));
        let s = setup("imprint.store=label:IMAGES", None);
        assert_eq!(s.args(), ["--store", STORE_MOUNT]);
    }

    #[test]
    fn after_a_job_the_menu_does_not_reconnect_the_jobs_store() {
        let s = setup(
            "imprint.action=verify imprint.image=golden imprint.store=nfs://nas/srv/imprint",
            None,
        );
        assert_eq!(s.store, None);
    }
}
