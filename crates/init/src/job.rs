//! Unattended jobs: mount the store, resolve the disk, run the `imprint` CLI with
//! `--json`, relay its JSON Lines to the consoles and report one final
//! `{"type":"imprint-job",...}` line of our own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use ops::locations::{open_location, MountedStore, StoreLocation};

use crate::boot;
use crate::cmdline::{Action, Config, Secret, Store};
use crate::console::Console;
use crate::credentials::{self, Credentials};
use crate::probe;
use crate::process::{self, RunError};
use crate::sys;

pub const IMPRINT: &str = "/usr/bin/imprint";
pub const STORE_MOUNT: &str = "/run/imprint/store";
/// The label of the partition holding the credentials file and `imprint.store.ca=`.
pub const IMPRINT_LABEL: &str = "IMPRINT";
/// Where the IMPRINT partition is mounted read-only for a moment to read those files.
const FILES_MOUNT: &str = "/run/imprint/files";
/// Where the certificate of `imprint.store.ca=` is copied for the CLI's `--ca-cert`.
pub const CA_COPY: &str = "/run/imprint/store-ca.pem";

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
    #[error("imprint.store={store}: no network: {why}")]
    NoNetwork { store: String, why: String },
    /// A share that could not be mounted; ops::locations' message names the cause.
    #[error("{0}")]
    Share(String),
    #[error("IMPRINT:/{}: {message}", credentials::PATH)]
    Credentials { message: String },
    #[error("imprint.store.ca={path}: {message}")]
    Ca { path: String, message: String },
    #[error("imprint.store={store}: a password is given but the store names no user: use smb://USER@SERVER/SHARE or user= in IMPRINT:/{}", credentials::PATH)]
    PasswordWithoutUser { store: String },
    #[error("mounting {device} ({fstype}) on {target}: {source}")]
    MountStore {
        device: String,
        fstype: String,
        target: String,
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
    let files = if cfg.store.is_network() {
        read_partition_files(cfg, console, deadline)?
    } else {
        PartitionFiles::default()
    };
    let password = cfg.password.clone().or(files.credentials.password.clone());
    // Unmounts the share when dropped, after the CLI has ended.
    let mut share: Option<MountedStore> = None;
    let (store_arg, store_where, store_dev, store_disk) = match &cfg.store {
        Store::Share(loc) => {
            network(cfg, console)?;
            let m = mount_share(cfg, loc, &files.credentials, password.as_ref(), writable)?;
            let dir = m.store().display().to_string();
            share = Some(m);
            (dir.clone(), dir, None, None)
        }
        Store::Http(url) => {
            if writable {
                return Err(JobError::ReadOnlyStore {
                    store: cfg.store.to_string(),
                });
            }
            network(cfg, console)?;
            (
                url.clone(),
                "the network (read by the CLI)".to_string(),
                None,
                None,
            )
        }
        Store::Label(l) => {
            let link = PathBuf::from("/dev/disk/by-label").join(l);
            let dev = wait_for_store(&link, &cfg.store, deadline, cfg.wait)?;
            let disk = probe::parent_disk(&dev);
            let shown = dev.display().to_string();
            (STORE_MOUNT.to_string(), shown, Some(dev), disk)
        }
        Store::Device(node) => {
            let dev = wait_for_store(node, &cfg.store, deadline, cfg.wait)?;
            let disk = probe::parent_disk(&dev);
            let shown = dev.display().to_string();
            (STORE_MOUNT.to_string(), shown, Some(dev), disk)
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
    if let Some(dev) = &store_dev {
        mount_store(dev, writable)?;
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
        store_where,
    ));

    let args = cli_args(cfg, &store_arg, disk.as_deref(), files.ca.as_deref());
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
            // The CLI never sees the password, but nothing PID 1 prints may hold it.
            let line = scrub(&line, password.as_ref());
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
    if let Some(m) = share.take() {
        let shown = m.to_string();
        drop(m);
        console.say(&format!("imprint: unmounted {shown}"));
    }
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

/// `line` with every occurrence of the password replaced by `***`. The CLI never gets the
/// password, so this is a second line of defence; a password shorter than 4 characters is
/// left alone, as replacing it would garble ordinary words ("lab" in "label").
fn scrub(line: &str, password: Option<&Secret>) -> String {
    match password.map(Secret::expose) {
        Some(p) if p.chars().count() >= 4 => line.replace(p, "***"),
        _ => line.to_string(),
    }
}

/// Brings the network up as `imprint.net=` says (DHCP on every wired link by default).
fn network(cfg: &Config, console: &Console) -> Result<(), JobError> {
    ops::net::bring_up(&cfg.net, &mut |line| {
        console.say(&format!("imprint: {line}"))
    })
    .map(|_| ())
    .map_err(|why| JobError::NoNetwork {
        store: cfg.store.to_string(),
        why,
    })
}

/// Mounts an SMB or NFS store with ops::locations (the CLI's own code: mount(2), the
/// password only in the mount data). The user comes from the URL, else the credentials
/// file; the password from `imprint.store.password=`, else the credentials file.
fn mount_share(
    cfg: &Config,
    loc: &StoreLocation,
    creds: &Credentials,
    password: Option<&Secret>,
    writable: bool,
) -> Result<MountedStore, JobError> {
    let loc = with_user(loc, creds);
    if loc.user().is_none() && password.is_some() && matches!(loc, StoreLocation::Smb(_)) {
        return Err(JobError::PasswordWithoutUser {
            store: cfg.store.to_string(),
        });
    }
    let opened = open_location(&loc, writable, &mut |who| {
        password.map(|p| p.expose().to_string()).ok_or_else(|| {
            ops::OpsError::Usage(format!(
                "store {loc}: no password for {who}: set imprint.store.password= or, better, password= in IMPRINT:/{}",
                credentials::PATH
            ))
        })
    })
    .map_err(|e| JobError::Share(scrub(&e.to_string(), password)))?;
    opened
        .mount
        .ok_or_else(|| JobError::Share(format!("store {loc}: not mounted")))
}

/// An SMB location with the credentials file's user when the URL names none.
pub(crate) fn with_user(loc: &StoreLocation, creds: &Credentials) -> StoreLocation {
    let mut loc = loc.clone();
    if let StoreLocation::Smb(s) = &mut loc {
        if s.user.is_none() {
            s.user = creds.user.clone();
        }
    }
    loc
}

/// What a network store takes from the IMPRINT partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionFiles {
    pub(crate) credentials: Credentials,
    /// The copy of `imprint.store.ca=` for `--ca-cert`.
    pub(crate) ca: Option<PathBuf>,
}

/// Reads the credentials file (SMB stores; optional) and `imprint.store.ca=` (required when
/// given) from the partition labelled IMPRINT, mounted read-only for the moment.
fn read_partition_files(
    cfg: &Config,
    console: &Console,
    deadline: Instant,
) -> Result<PartitionFiles, JobError> {
    let smb = matches!(cfg.store, Store::Share(StoreLocation::Smb(_)));
    if !smb && cfg.ca.is_none() {
        return Ok(PartitionFiles::default());
    }
    let link = PathBuf::from("/dev/disk/by-label").join(IMPRINT_LABEL);
    let dev = match &cfg.ca {
        Some(_) => Some(wait_for_store(
            &link,
            &Store::Label(IMPRINT_LABEL.into()),
            deadline,
            cfg.wait,
        )?),
        None => {
            // A stick may still be appearing; the file is optional, so no long wait.
            boot::wait_for_usb_storage(cfg.wait.min(Duration::from_secs(5)));
            std::fs::canonicalize(&link).ok()
        }
    };
    let Some(dev) = dev else {
        return Ok(PartitionFiles::default());
    };
    let target = Path::new(FILES_MOUNT);
    mount_fs(&dev, target, false)?;
    let read = read_files(cfg, smb, target, console);
    if let Err(e) = sys::umount(target, 0) {
        console.say(&format!(
            "imprint: unmounting {FILES_MOUNT}: {e}; detaching"
        ));
        let _ = sys::umount(target, libc::MNT_DETACH);
    }
    read
}

/// Reads the credentials file (when `smb`) and `imprint.store.ca=` from the IMPRINT
/// partition's filesystem mounted at `root`.
pub(crate) fn read_files(
    cfg: &Config,
    smb: bool,
    root: &Path,
    console: &Console,
) -> Result<PartitionFiles, JobError> {
    let mut files = PartitionFiles::default();
    if smb {
        match std::fs::read(root.join(credentials::PATH)) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| JobError::Credentials {
                    message: "not UTF-8 text".into(),
                })?;
                files.credentials = credentials::parse(&text)
                    .map_err(|message| JobError::Credentials { message })?;
                console.say(&format!(
                    "imprint: store credentials read from IMPRINT:/{}{}",
                    credentials::PATH,
                    files
                        .credentials
                        .user
                        .as_ref()
                        .map(|u| format!(" (user {u})"))
                        .unwrap_or_default()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(JobError::Credentials {
                    message: e.to_string(),
                })
            }
        }
    }
    if let Some(ca) = &cfg.ca {
        let src = root.join(ca.trim_start_matches('/'));
        let fail = |message: String| JobError::Ca {
            path: ca.clone(),
            message,
        };
        let pem = std::fs::read(&src)
            .map_err(|e| fail(format!("reading it on the IMPRINT partition: {e}")))?;
        let marker = b"-----BEGIN CERTIFICATE-----";
        if !pem.windows(marker.len()).any(|w| w == marker) {
            return Err(fail("no PEM certificate in it".into()));
        }
        let _ = std::fs::create_dir_all("/run/imprint");
        std::fs::write(CA_COPY, &pem).map_err(|e| fail(format!("copying to {CA_COPY}: {e}")))?;
        console.say(&format!(
            "imprint: trusting the CA certificate IMPRINT:/{} for https:// stores",
            ca.trim_start_matches('/')
        ));
        files.ca = Some(PathBuf::from(CA_COPY));
    }
    Ok(files)
}

/// The CLI's argument shape (fixed by the CLI's documentation). `store` is the STORE
/// argument: the mounted directory, or the URL of an HTTP store (the CLI reads it itself).
pub fn cli_args(cfg: &Config, store: &str, disk: Option<&Path>, ca: Option<&Path>) -> Vec<String> {
    let name = cfg.image.clone().unwrap_or_default();
    let disk = disk.map(|d| d.display().to_string());
    let store = store.to_string();
    let mut args: Vec<String> = Vec::new();
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
    if let Some(ca) = ca {
        args.extend(["--ca-cert".into(), ca.display().to_string()]);
    }
    args.push("--json".into());
    args
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
        target: STORE_MOUNT.into(),
        source,
    })
}

/// Mounts the store's filesystem at STORE_MOUNT, read-only unless capturing.
fn mount_store(device: &Path, writable: bool) -> Result<(), JobError> {
    mount_fs(device, Path::new(STORE_MOUNT), writable)
}

/// Mounts a local filesystem (exFAT, FAT, ext4 or NTFS) at `target`.
fn mount_fs(device: &Path, target: &Path, writable: bool) -> Result<(), JobError> {
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
        // Debian's default FAT iocharset is ascii, whose nls module the initramfs lacks.
        let data = (fstype == "vfat").then_some("iocharset=utf8");
        match sys::mount(&dev, target, fstype, flags, data) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some((fstype.clone(), e)),
        }
    }
    let (fstype, source) = last.expect("at least one candidate filesystem");
    Err(JobError::MountStore {
        device: dev,
        fstype,
        target: target.display().to_string(),
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
            cli_args(&cfg, STORE_MOUNT, Some(Path::new("/dev/vda")), None),
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
            cli_args(&cfg, STORE_MOUNT, Some(Path::new("/dev/nvme0n1")), None),
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
            cli_args(&cfg, STORE_MOUNT, None, None),
            ["verify", STORE_MOUNT, "gold", "--json"]
        );
        let cfg = parse("imprint.action=verify imprint.image=gold imprint.store=https://h/s/ imprint.store.ca=/imprint/ca.pem").unwrap();
        assert_eq!(
            cli_args(&cfg, "https://h/s/", None, Some(Path::new(CA_COPY))),
            [
                "verify",
                "https://h/s/",
                "gold",
                "--ca-cert",
                CA_COPY,
                "--json"
            ]
        );
    }

    #[test]
    fn scrub_hides_the_password_everywhere_in_a_line() {
        let p = Secret::new("s3cret");
        assert_eq!(scrub("a s3cret b s3cret", Some(&p)), "a *** b ***");
        assert_eq!(scrub("a b", None), "a b");
        assert_eq!(scrub("a b", Some(&Secret::new(""))), "a b");
        assert_eq!(scrub("label", Some(&Secret::new("lab"))), "label");
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
