//! Unattended jobs: mount the store, resolve the disk, run the `imprint` CLI with
//! `--json`, relay its JSON Lines to the consoles and report one final
//! `{"type":"imprint-job",...}` line of our own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::boot;
use crate::cmdline::{Action, Config, SmbShare, Store};
use crate::console::Console;
use crate::probe;
use crate::process::{self, RunError};
use crate::sys;

pub const IMPRINT: &str = "/usr/bin/imprint";
pub const STORE_MOUNT: &str = "/run/imprint/store";

/// Exit codes shared with the CLI (docs/BOOT.md): 0 ok, 1 failed, 2 usage, 3 verification
/// mismatch, 4 target refused.
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Why a job could not start or finish, before the CLI's own report.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("imprint.store={store}: no such filesystem after waiting {waited:?} (is the disk attached?)")]
    StoreNotFound { store: String, waited: Duration },
    #[error(
        "imprint.store={store}: HTTP stores are read-only; capture into a disk or an smb:// share"
    )]
    ReadOnlyStore { store: String },
    #[error("imprint.store={store}: no network (no interface got a DHCP lease)")]
    NoNetwork { store: String },
    #[error("imprint.store={store}: cannot resolve server {server}")]
    Resolve { store: String, server: String },
    #[error("mounting store {device} ({fstype}) on {STORE_MOUNT}: {source}")]
    MountStore {
        device: String,
        fstype: String,
        #[source]
        source: std::io::Error,
    },
    /// A disk selector that picked no disk or several (the text lists the disks).
    #[error("imprint.disk={selector}: {message}")]
    Select { selector: String, message: String },
    #[error("{IMPRINT} is missing from this initramfs")]
    ImprintMissing,
    #[error(transparent)]
    Run(#[from] RunError),
}

impl JobError {
    fn exit_code(&self) -> i32 {
        match self {
            JobError::Select { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }
}

/// The outcome printed as the final JSON line.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub action: Option<String>,
    pub ok: bool,
    pub exit_code: i32,
    pub error: Option<String>,
    pub image: Option<String>,
    pub disk: Option<String>,
    pub store: Option<String>,
    pub seconds: f64,
    /// The `data` of the CLI's own `{"type":"result"}` line.
    pub result: Option<Value>,
}

impl Report {
    /// A report for a job that never ran because the command line was wrong.
    pub fn rejected(action: Option<String>, error: String) -> Report {
        Report {
            action,
            ok: false,
            exit_code: EXIT_USAGE,
            error: Some(error),
            image: None,
            disk: None,
            store: None,
            seconds: 0.0,
            result: None,
        }
    }

    /// `{"type":"imprint-job","action":...,"ok":...,"exit_code":...,"error":...}` on one line,
    /// `type` first like every JSON Lines event of the CLI.
    pub fn to_json_line(&self) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            r#type: &'static str,
            action: &'a Option<String>,
            ok: bool,
            exit_code: i32,
            error: &'a Option<String>,
            image: &'a Option<String>,
            disk: &'a Option<String>,
            store: &'a Option<String>,
            seconds: f64,
            result: &'a Option<Value>,
        }
        let line = Line {
            r#type: "imprint-job",
            action: &self.action,
            ok: self.ok,
            exit_code: self.exit_code,
            error: &self.error,
            image: &self.image,
            disk: &self.disk,
            store: &self.store,
            seconds: (self.seconds * 100.0).round() / 100.0,
            result: &self.result,
        };
        serde_json::to_string(&line).unwrap_or_else(|e| {
            format!(r#"{{"type":"imprint-job","ok":false,"exit_code":1,"error":"encoding the report: {e}"}}"#)
        })
    }
}

/// Meaning of a CLI exit code, for the error text when the CLI itself gave none.
fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "failed",
        2 => "usage error",
        3 => "verification mismatch",
        4 => "target refused",
        _ => "unexpected exit",
    }
}

/// Runs the job the command line asked for. Never panics on bad input; every failure
/// ends up in the report.
pub fn run(cfg: &Config, console: &Console) -> Report {
    let started = Instant::now();
    let mut report = Report {
        action: Some(cfg.action.name().to_string()),
        ok: false,
        exit_code: EXIT_FAILED,
        error: None,
        image: cfg.image.clone(),
        disk: None,
        store: Some(cfg.store.to_string()),
        seconds: 0.0,
        result: None,
    };
    if let Err(e) = run_inner(cfg, console, &mut report) {
        report.ok = false;
        report.exit_code = e.exit_code();
        report.error = Some(e.to_string());
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn run_inner(cfg: &Config, console: &Console, report: &mut Report) -> Result<(), JobError> {
    if !Path::new(IMPRINT).exists() {
        return Err(JobError::ImprintMissing);
    }
    let deadline = Instant::now() + cfg.wait;
    let writable = cfg.action == Action::Capture;
    let (store_dev, store_disk) = match &cfg.store {
        Store::Smb(share) => (mount_smb(&cfg.store, share, writable, console)?, None),
        Store::Http(url) => {
            if writable {
                return Err(JobError::ReadOnlyStore {
                    store: cfg.store.to_string(),
                });
            }
            crate::net::dhcp(console).ok_or_else(|| JobError::NoNetwork {
                store: cfg.store.to_string(),
            })?;
            (PathBuf::from(url), None)
        }
        Store::Label(l) => {
            let link = PathBuf::from("/dev/disk/by-label").join(l);
            let dev = wait_for_store(&link, &cfg.store, deadline, cfg.wait)?;
            let disk = probe::parent_disk(&dev);
            (dev, disk)
        }
        Store::Device(node) => {
            let dev = wait_for_store(node, &cfg.store, deadline, cfg.wait)?;
            let disk = probe::parent_disk(&dev);
            (dev, disk)
        }
    };
    let disk = match &cfg.disk {
        Some(sel) => {
            let exclude: Vec<String> = store_disk.into_iter().collect();
            Some(wait_for_disk(sel, &exclude, deadline)?)
        }
        None => None,
    };
    report.disk = disk.as_ref().map(|d| d.display().to_string());
    if !matches!(cfg.store, Store::Smb(_) | Store::Http(_)) {
        mount_store(&store_dev, writable)?;
    }
    console.say(&format!(
        "imprint: {} image {:?} {} {} (store {} on {})",
        cfg.action.name(),
        cfg.image.as_deref().unwrap_or(""),
        if cfg.action == Action::Capture {
            "from"
        } else {
            "to"
        },
        report.disk.as_deref().unwrap_or("-"),
        cfg.store,
        store_dev.display(),
    ));

    let args = cli_args(cfg, disk.as_deref());
    let mut child = Command::new(IMPRINT)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: IMPRINT.into(),
            source,
        })?;
    let pid = child.id();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            console.say(&line);
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("type").and_then(Value::as_str) == Some("result") {
                    report.result = v.get("data").cloned();
                }
            }
        }
    }
    let status = process::wait_for(pid).map_err(|source| RunError::Wait {
        program: IMPRINT.into(),
        pid,
        source,
    })?;
    sys::sync();
    let code = process::exit_code(status);
    report.exit_code = code;
    report.ok = code == 0;
    if code != 0 {
        let from_cli = report.result.as_ref().and_then(|r| {
            r.get("error").or_else(|| r.get("message")).and_then(|e| {
                e.as_str()
                    .map(str::to_string)
                    .or_else(|| Some(e.to_string()))
            })
        });
        report.error = Some(from_cli.unwrap_or_else(|| {
            format!(
                "imprint {} exited with code {code} ({})",
                cfg.action.name(),
                exit_meaning(code)
            )
        }));
    }
    Ok(())
}

/// The CLI's argument shape (fixed by the CLI's documentation).
pub fn cli_args(cfg: &Config, disk: Option<&Path>) -> Vec<String> {
    let name = cfg.image.clone().unwrap_or_default();
    let disk = disk.map(|d| d.display().to_string());
    let mut args: Vec<String> = Vec::new();
    // The CLI reads an HTTP store itself; every other store is mounted at STORE_MOUNT.
    let store: String = match &cfg.store {
        Store::Http(url) => url.clone(),
        _ => STORE_MOUNT.into(),
    };
    match cfg.action {
        Action::Capture => {
            args.extend(["capture".into(), disk.unwrap_or_default(), store]);
            args.extend(["--name".into(), name]);
            if let Some(d) = &cfg.description {
                args.extend(["--description".into(), d.clone()]);
            }
        }
        Action::Restore => {
            args.extend(["restore".into(), store, name]);
            args.extend([disk.unwrap_or_default(), "--yes".into()]);
            if cfg.force {
                args.push("--force".into());
            }
        }
        Action::Verify => {
            args.extend(["verify".into(), store, name]);
            if let Some(d) = disk {
                args.extend(["--against".into(), d]);
            }
        }
        Action::Shell | Action::Menu => {}
    }
    args.push("--json".into());
    args
}

/// DHCP, then mounts the share with the kernel's SMB client (no mount.cifs needed: the
/// address goes in `ip=`; notes §3). Returns a display path for the log.
fn mount_smb(
    store: &Store,
    share: &SmbShare,
    writable: bool,
    console: &Console,
) -> Result<PathBuf, JobError> {
    let name = store.to_string();
    crate::net::dhcp(console).ok_or_else(|| JobError::NoNetwork {
        store: name.clone(),
    })?;
    let ip = crate::net::resolve(&share.server).ok_or_else(|| JobError::Resolve {
        store: name.clone(),
        server: share.server.clone(),
    })?;
    let unc = format!("//{}/{}", share.server, share.path);
    // Without a user, the guest account (QEMU's and most lab Samba shares).
    let mut opts = format!(
        "vers=3.0,ip={ip},username={},password={},noperm,nobrl",
        share.user.as_deref().unwrap_or("guest"),
        share.password.as_deref().unwrap_or("")
    );
    if !writable {
        opts.push_str(",ro");
    }
    let target = Path::new(STORE_MOUNT);
    let _ = std::fs::create_dir_all(target);
    boot::modprobe("cifs");
    let flags = if writable { 0 } else { libc::MS_RDONLY } | libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount(&unc, target, "cifs", flags, Some(&opts)).map_err(|source| {
        JobError::MountStore {
            // The UNC path and fstype only: `opts` holds the password.
            device: name,
            fstype: "cifs".into(),
            source,
        }
    })?;
    Ok(PathBuf::from(unc))
}

fn wait_for_store(
    path: &Path,
    store: &Store,
    deadline: Instant,
    wait: Duration,
) -> Result<PathBuf, JobError> {
    loop {
        if let Ok(real) = std::fs::canonicalize(path) {
            return Ok(real);
        }
        if Instant::now() >= deadline {
            return Err(JobError::StoreNotFound {
                store: store.to_string(),
                waited: wait,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
        boot::settle(Duration::from_secs(2));
    }
}

/// One attempt at resolving a disk selector.
enum Pick {
    Found(PathBuf),
    /// Nothing matches yet; a late disk may still appear.
    NotYet(String),
    Failed(String),
}

/// Resolves with `disks::select` (the selectors every front end shares); `model:` and
/// `bus:`, which it does not know, fall back to this crate's probe.
fn pick(selector: &str, exclude: &[String]) -> Pick {
    use disks::select::SelectError as E;
    if let Ok(sel) = selector.parse::<disks::Selector>() {
        let list = match disks::discover(&disks::DiscoverOptions::default()) {
            Ok(list) => list,
            Err(e) => return Pick::NotYet(format!("listing disks: {e}")),
        };
        return match disks::select(&list, &sel) {
            Ok(s) => Pick::Found(s.node),
            Err(e @ E::NoMatch { .. }) => Pick::NotYet(e.to_string()),
            Err(e) => Pick::Failed(e.to_string()),
        };
    }
    let list = probe::list_disks();
    match probe::select(selector, &list, exclude) {
        Ok(d) => Pick::Found(d.node.clone()),
        Err(e) if e.may_appear_later() => Pick::NotYet(e.to_string()),
        Err(e) => Pick::Failed(e.to_string()),
    }
}

fn wait_for_disk(
    selector: &str,
    exclude: &[String],
    deadline: Instant,
) -> Result<PathBuf, JobError> {
    let fail = |message: String| JobError::Select {
        selector: selector.to_string(),
        // probe's messages already name the parameter.
        message: message
            .strip_prefix(&format!("imprint.disk={selector}: "))
            .map(str::to_string)
            .unwrap_or(message),
    };
    loop {
        match pick(selector, exclude) {
            Pick::Found(node) => return Ok(node),
            Pick::NotYet(m) if Instant::now() >= deadline => return Err(fail(m)),
            Pick::NotYet(_) => {
                std::thread::sleep(Duration::from_millis(500));
                boot::settle(Duration::from_secs(2));
            }
            Pick::Failed(m) => return Err(fail(m)),
        }
    }
}

/// Mounts the store read-write at STORE_MOUNT for the text UI (captures write there);
/// a store a job mounted read-only before is remounted read-write.
pub fn mount_store_rw(device: &Path) -> Result<(), JobError> {
    let target = Path::new(STORE_MOUNT);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(STORE_MOUNT));
    if !mounted {
        return mount_store(device, true);
    }
    let flags = libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount("", target, "", flags, None).map_err(|source| JobError::MountStore {
        device: device.display().to_string(),
        fstype: "remount".into(),
        source,
    })
}

/// Mounts the store's filesystem at STORE_MOUNT, read-only unless capturing.
fn mount_store(device: &Path, writable: bool) -> Result<(), JobError> {
    let target = Path::new(STORE_MOUNT);
    let _ = std::fs::create_dir_all(target);
    let flags = if writable { 0 } else { libc::MS_RDONLY } | libc::MS_NOSUID | libc::MS_NODEV;
    let dev = device.display().to_string();
    let candidates: Vec<String> = match probe::fstype_of(device) {
        Some(t) => vec![if t == "ntfs" { "ntfs3".into() } else { t }],
        None => ["exfat", "vfat", "ext4", "ntfs3"]
            .map(String::from)
            .to_vec(),
    };
    let mut last = None;
    for fstype in &candidates {
        // The kernel would ask /sbin/modprobe for fs-TYPE itself; loading it first makes
        // the failure message about the mount, not about a missing module.
        boot::modprobe(fstype);
        match sys::mount(&dev, target, fstype, flags, None) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some((fstype.clone(), e)),
        }
    }
    let (fstype, source) = last.expect("at least one candidate filesystem");
    Err(JobError::MountStore {
        device: dev,
        fstype,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    #[test]
    fn capture_args_follow_the_cli_shape() {
        let cfg = parse("imprint.action=capture imprint.image=gold imprint.disk=largest imprint.description=\"a b\"").unwrap();
        assert_eq!(
            cli_args(&cfg, Some(Path::new("/dev/vda"))),
            [
                "capture",
                "/dev/vda",
                STORE_MOUNT,
                "--name",
                "gold",
                "--description",
                "a b",
                "--json"
            ]
        );
    }

    #[test]
    fn restore_and_verify_args_follow_the_cli_shape() {
        let cfg =
            parse("imprint.action=restore imprint.image=gold imprint.disk=/dev/nvme0n1").unwrap();
        assert_eq!(
            cli_args(&cfg, Some(Path::new("/dev/nvme0n1"))),
            [
                "restore",
                STORE_MOUNT,
                "gold",
                "/dev/nvme0n1",
                "--yes",
                "--json"
            ]
        );
        let cfg = parse("imprint.action=verify imprint.image=gold").unwrap();
        assert_eq!(
            cli_args(&cfg, None),
            ["verify", STORE_MOUNT, "gold", "--json"]
        );
    }

    #[test]
    fn rejected_report_is_one_json_line_with_the_error() {
        let line = Report::rejected(Some("destroy".into()), "unknown action".into()).to_json_line();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with(r#"{"type":"imprint-job","action":"destroy","ok":false"#),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "imprint-job");
        assert_eq!(v["action"], "destroy");
        assert_eq!(v["ok"], false);
        assert_eq!(v["exit_code"], EXIT_USAGE);
        assert_eq!(v["error"], "unknown action");
    }
}
