//! Store locations (issue 8): a local path, `http(s)://HOST/PATH/` (read-only, read by
//! `imaging` itself), `smb://[USER@]HOST/SHARE[/DIR]` and `nfs://HOST/EXPORT[/DIR]`,
//! which are mounted with the kernel's own cifs and nfs clients for the length of a job
//! and unmounted by a guard.
//!
//! Mounting is mount(2) through rustix, not mount(8): the password travels in the mount
//! data straight to the kernel, so it is never in a process's argv, never in a file,
//! and never printed (the kernel's cifs client needs no mount.cifs helper when the
//! server's address is given as `ip=`; shared/notes/boot-environment.md §3).

use crate::error::OpsError;
use rustix::mount::{MountFlags, UnmountFlags};
use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Where a store is, parsed from the STORE argument.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Local(PathBuf),
    /// `http://` or `https://`, kept as given (with a trailing `/`).
    Http(String),
    Smb(SmbShare),
    Nfs(NfsExport),
}

/// `smb://[USER@]HOST/SHARE[/DIR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbShare {
    pub user: Option<String>,
    pub host: String,
    pub share: String,
    /// Directory inside the share holding the store ("" for the share's root).
    pub dir: String,
}

/// `nfs://HOST/EXPORT[/DIR]`: the whole path is mounted (NFSv4 mounts any directory
/// below an export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsExport {
    pub host: String,
    pub path: String,
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Local(p) => write!(f, "{}", p.display()),
            StoreLocation::Http(u) => f.write_str(u),
            StoreLocation::Smb(s) => {
                write!(f, "smb://")?;
                if let Some(u) = &s.user {
                    write!(f, "{u}@")?;
                }
                write!(f, "{}/{}", s.host, s.share)?;
                if !s.dir.is_empty() {
                    write!(f, "/{}", s.dir)?;
                }
                Ok(())
            }
            StoreLocation::Nfs(n) => write!(f, "nfs://{}/{}", n.host, n.path),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

impl StoreLocation {
    /// Parses a STORE argument. A password in the URL is refused: argv is visible to
    /// every user of the machine.
    pub fn parse(s: &str) -> Result<StoreLocation, OpsError> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let mut u = s.to_string();
            if !u.ends_with('/') {
                u.push('/');
            }
            return Ok(StoreLocation::Http(u));
        }
        let bad = |why: &str| OpsError::Usage(format!("store {}: {why}", redact(s)));
        if let Some(rest) = strip_prefix_ci(s, "smb://") {
            let (user, rest) = match rest.split_once('@') {
                Some((u, r)) => {
                    if u.contains(':') {
                        return Err(bad("do not put a password in the URL (every user can read a command line); use --password-file FILE or IMPRINT_STORE_PASSWORD"));
                    }
                    if u.is_empty() {
                        return Err(bad("empty user name before '@'"));
                    }
                    (Some(u.to_string()), r)
                }
                None => (None, rest),
            };
            let mut parts = rest.trim_end_matches('/').splitn(3, '/');
            let host = parts.next().unwrap_or("").to_string();
            let share = parts.next().unwrap_or("").to_string();
            let dir = parts.next().unwrap_or("").trim_matches('/').to_string();
            if host.is_empty() || share.is_empty() {
                return Err(bad("want smb://[USER@]HOST/SHARE[/DIR]"));
            }
            if [&host, &share, &dir]
                .iter()
                .any(|p| p.contains(',') || p.contains(".."))
            {
                return Err(bad("',' and '..' are not allowed in a share location"));
            }
            return Ok(StoreLocation::Smb(SmbShare {
                user,
                host,
                share,
                dir,
            }));
        }
        if let Some(rest) = strip_prefix_ci(s, "nfs://") {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let path = path.trim_matches('/');
            if host.is_empty() || path.is_empty() || host.contains('@') {
                return Err(bad("want nfs://HOST/EXPORT[/DIR]"));
            }
            if path.contains("..") || path.contains(',') {
                return Err(bad("',' and '..' are not allowed in an NFS path"));
            }
            return Ok(StoreLocation::Nfs(NfsExport {
                host: host.into(),
                path: path.into(),
            }));
        }
        if lower.contains("://") {
            return Err(bad(
                "unknown scheme; a store is a directory, smb://, nfs://, http:// or https://",
            ));
        }
        Ok(StoreLocation::Local(PathBuf::from(s)))
    }

    /// True for locations that must be mounted.
    pub fn needs_mount(&self) -> bool {
        matches!(self, StoreLocation::Smb(_) | StoreLocation::Nfs(_))
    }

    /// The user name to ask a password for, for SMB locations that name one.
    pub fn user(&self) -> Option<&str> {
        match self {
            StoreLocation::Smb(s) => s.user.as_deref(),
            _ => None,
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A location for messages, with anything between `://` and `@` hidden.
pub fn redact(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***{}", &s[..a + 3], &s[b..]),
        _ => s.to_string(),
    }
}

/// A network store mounted for one job; unmounted (and its directory removed) on drop.
#[derive(Debug)]
pub struct MountedStore {
    mountpoint: PathBuf,
    /// The store directory: the mountpoint, or a directory inside the share.
    store: PathBuf,
    location: String,
}

impl MountedStore {
    /// The local directory of the store while this guard lives.
    pub fn store(&self) -> &Path {
        &self.store
    }
}

impl Drop for MountedStore {
    fn drop(&mut self) {
        // A lazy detach if something still has a file open (a dying worker thread):
        // the share goes away as soon as it is closed.
        if rustix::mount::unmount(&self.mountpoint, UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(&self.mountpoint, UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

/// What a job opens: a local directory (maybe a mounted share) or an HTTP URL, as the
/// path-or-URL that `imaging::Store::open_location` takes, plus the mount guard.
#[derive(Debug)]
pub struct OpenedLocation {
    pub store: PathBuf,
    pub mount: Option<MountedStore>,
}

/// Where shares are mounted (one directory per job).
const MOUNT_BASE: &str = "/run/imprint/net";

/// Makes `loc` usable as a store path: mounts SMB/NFS (read-only unless `writable`),
/// passes the rest through. `password` is asked for only when an SMB location names a
/// user; it is called with `USER@HOST`.
pub fn open_location(
    loc: &StoreLocation,
    writable: bool,
    password: &mut dyn FnMut(&str) -> Result<String, OpsError>,
) -> Result<OpenedLocation, OpsError> {
    match loc {
        StoreLocation::Local(p) => Ok(OpenedLocation {
            store: p.clone(),
            mount: None,
        }),
        StoreLocation::Http(u) => {
            if writable {
                return Err(OpsError::Usage(format!(
                    "HTTP stores are read-only: cannot capture into {u}; capture into a directory or an smb:// or nfs:// share"
                )));
            }
            Ok(OpenedLocation {
                store: PathBuf::from(u),
                mount: None,
            })
        }
        StoreLocation::Smb(s) => {
            let ip = resolve(&s.host, loc)?;
            let (user, pass) = match &s.user {
                // The guest account, as QEMU's and most lab Samba shares offer.
                None => ("guest".to_string(), String::new()),
                Some(u) => (u.clone(), password(&format!("{u}@{}", s.host))?),
            };
            if pass.contains(',') || user.contains(',') {
                return Err(OpsError::Usage(
                    "the kernel's SMB client cannot take a ',' in a user name or password".into(),
                ));
            }
            // SMB 3.0 and later only: SMB1 is insecure and off in current kernels'
            // defaults; a server that offers nothing newer gets a message saying so.
            let mut opts = format!(
                "vers=3.0,ip={ip},username={user},password={pass},noperm,nobrl,echo_interval=10"
            );
            if !writable {
                opts.push_str(",ro");
            }
            let unc = format!("//{}/{}", s.host, s.share);
            let m = mount(loc, &unc, "cifs", &opts, writable, &s.dir)?;
            Ok(OpenedLocation {
                store: m.store.clone(),
                mount: Some(m),
            })
        }
        StoreLocation::Nfs(n) => {
            let ip = resolve(&n.host, loc)?;
            // NFSv4.1, not 4.2: against nfs-ganesha 4.3 (Debian 12) the 6.12 kernel's
            // v4.2 reads (READ_PLUS) returned all zeros (qemu-test/tests_netstores.py);
            // 4.1 has everything a store needs.
            let mut opts = format!("vers=4.1,addr={ip},soft,timeo=100,retrans=2");
            if !writable {
                opts.push_str(",ro");
            }
            let src = format!("{}:/{}", n.host, n.path);
            let m = mount(loc, &src, "nfs4", &opts, writable, "")?;
            Ok(OpenedLocation {
                store: m.store.clone(),
                mount: Some(m),
            })
        }
    }
}

fn resolve(host: &str, loc: &StoreLocation) -> Result<IpAddr, OpsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| {
            OpsError::Failed(format!(
                "store {loc}: cannot resolve host {host:?} (check the name, DNS, or use its IP address)"
            ))
        })
}

fn mount(
    loc: &StoreLocation,
    source: &str,
    fstype: &str,
    opts: &str,
    writable: bool,
    subdir: &str,
) -> Result<MountedStore, OpsError> {
    let base = Path::new(MOUNT_BASE);
    std::fs::create_dir_all(base).map_err(|source| OpsError::Io {
        what: "creating",
        path: base.into(),
        source,
    })?;
    let mountpoint = base.join(format!("{}-{}", std::process::id(), fstype_counter()));
    std::fs::create_dir_all(&mountpoint).map_err(|source| OpsError::Io {
        what: "creating mount point",
        path: mountpoint.clone(),
        source,
    })?;
    let data = CString::new(opts)
        .map_err(|_| OpsError::Usage(format!("store {loc}: a NUL byte in the options")))?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    if !writable {
        flags |= MountFlags::RDONLY;
    }
    let try_mount = || rustix::mount::mount(source, &mountpoint, fstype, flags, data.as_c_str());
    let mut r = try_mount();
    if r == Err(rustix::io::Errno::NODEV) {
        // Not loaded yet (the boot environment loads modules only on demand).
        let module = if fstype == "cifs" { "cifs" } else { "nfsv4" };
        let _ = std::process::Command::new("modprobe")
            .args(["-q", module])
            .stdin(std::process::Stdio::null())
            .status();
        r = try_mount();
    }
    if let Err(e) = r {
        let _ = std::fs::remove_dir(&mountpoint);
        return Err(mount_error(loc, fstype, e.into()));
    }
    Ok(MountedStore {
        store: if subdir.is_empty() {
            mountpoint.clone()
        } else {
            mountpoint.join(subdir)
        },
        mountpoint,
        location: loc.to_string(),
    })
}

fn fstype_counter() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Turns a failed mount(2) into what a technician can act on. The kernel reports most
/// SMB failures as a plain errno; cifs(7)'s log lines are more precise but need root
/// to read, so the errno is the message and the log is only a hint.
pub fn mount_error(loc: &StoreLocation, fstype: &str, e: io::Error) -> OpsError {
    let smb = fstype == "cifs";
    let what = match e.raw_os_error().unwrap_or(0) {
        libc_errno::ENODEV => format!(
            "this kernel has no {fstype} support (modprobe {fstype} failed or the module is missing)"
        ),
        libc_errno::EACCES | libc_errno::EPERM | libc_errno::EKEYREJECTED => {
            "access denied: wrong user name or password, or the user may not use this share".into()
        }
        libc_errno::ENOENT | libc_errno::ENXIO => {
            if smb {
                "share not found on the server (check the share name)".into()
            } else {
                "export or directory not found on the server".into()
            }
        }
        libc_errno::EHOSTUNREACH | libc_errno::ENETUNREACH | libc_errno::ETIMEDOUT => {
            "host unreachable (check the address, the network and the server)".into()
        }
        libc_errno::ECONNREFUSED => format!(
            "the host refused the connection: no {} server is listening there",
            if smb { "SMB" } else { "NFS" }
        ),
        libc_errno::EOPNOTSUPP | libc_errno::EHOSTDOWN | libc_errno::EPROTONOSUPPORT
            if smb =>
        {
            "the server does not speak SMB 3 (an SMB1-only server?): enable SMB2/3 on it; \
             Imprint does not use SMB1"
                .into()
        }
        _ => e.to_string(),
    };
    OpsError::Failed(format!("store {loc}: mounting failed: {what} ({e})"))
}

/// The errno values we tell apart (Linux, all architectures we build for).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ENXIO: i32 = 6;
    pub const EACCES: i32 = 13;
    pub const ENODEV: i32 = 19;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EPROTONOSUPPORT: i32 = 93;
    pub const ENETUNREACH: i32 = 101;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EKEYREJECTED: i32 = 129;
}

impl fmt::Display for MountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.location, self.mountpoint.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smb_locations_parse_user_host_share_and_dir() {
        let l = StoreLocation::parse("smb://lab@fs1/images/pcs/").unwrap();
        assert_eq!(
            l,
            StoreLocation::Smb(SmbShare {
                user: Some("lab".into()),
                host: "fs1".into(),
                share: "images".into(),
                dir: "pcs".into()
            })
        );
        assert_eq!(l.to_string(), "smb://lab@fs1/images/pcs");
        let l = StoreLocation::parse("SMB://10.0.2.4/qemu").unwrap();
        assert!(matches!(l, StoreLocation::Smb(ref s) if s.user.is_none() && s.dir.is_empty()));
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_never_echoed() {
        let e = StoreLocation::parse("smb://lab:s3cret@fs1/images")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--password-file"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn nfs_http_and_local_locations() {
        assert_eq!(
            StoreLocation::parse("nfs://nas/export/imprint").unwrap(),
            StoreLocation::Nfs(NfsExport {
                host: "nas".into(),
                path: "export/imprint".into()
            })
        );
        assert_eq!(
            StoreLocation::parse("https://cdn.example/store").unwrap(),
            StoreLocation::Http("https://cdn.example/store/".into())
        );
        assert_eq!(
            StoreLocation::parse("/mnt/store").unwrap(),
            StoreLocation::Local("/mnt/store".into())
        );
        assert!(StoreLocation::parse("smb://host").is_err());
        assert!(StoreLocation::parse("nfs://host").is_err());
        assert!(StoreLocation::parse("ftp://host/x").is_err());
    }

    #[test]
    fn capture_into_http_is_refused_before_anything_happens() {
        let loc = StoreLocation::parse("http://127.0.0.1:9/store/").unwrap();
        let e = open_location(&loc, true, &mut |_| unreachable!()).unwrap_err();
        assert!(e.to_string().contains("HTTP stores are read-only"), "{e}");
    }

    #[test]
    fn mount_errors_name_what_a_technician_can_fix() {
        let loc = StoreLocation::parse("smb://lab@fs1/images").unwrap();
        let msg =
            |errno| mount_error(&loc, "cifs", io::Error::from_raw_os_error(errno)).to_string();
        assert!(msg(13).contains("access denied"));
        assert!(msg(2).contains("share not found"));
        assert!(msg(113).contains("host unreachable"));
        assert!(msg(95).contains("SMB1"));
    }
}
