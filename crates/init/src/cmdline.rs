//! The unattended interface: `imprint.*` parameters on the kernel command line
//! (docs/BOOT.md is the reference). Parsing is pure so every rule is unit-tested.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ops::locations::StoreLocation;

/// What the boot should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Capture,
    Restore,
    Verify,
    Shell,
    Menu,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Capture => "capture",
            Action::Restore => "restore",
            Action::Verify => "verify",
            Action::Shell => "shell",
            Action::Menu => "menu",
        }
    }

    /// Whether the action runs an `imprint` job (as opposed to an interactive session).
    pub fn is_job(self) -> bool {
        matches!(self, Action::Capture | Action::Restore | Action::Verify)
    }
}

/// What to do once the job has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Reboot,
    Poweroff,
    Shell,
    Menu,
}

impl Then {
    fn parse(value: &str) -> Option<Then> {
        Some(match value {
            "reboot" => Then::Reboot,
            "poweroff" => Then::Poweroff,
            "shell" => Then::Shell,
            "menu" => Then::Menu,
            _ => return None,
        })
    }
}

/// Where the image store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// A filesystem with this label (`label:IMPRINT`, the default).
    Label(String),
    /// A device node holding the store's filesystem.
    Device(PathBuf),
    /// An SMB or NFS share (`smb://[USER@]SERVER/SHARE[/DIR]`, `nfs://SERVER/EXPORT[/DIR]`),
    /// mounted by `ops::locations` (the code the CLI uses) once the network is up.
    Share(StoreLocation),
    /// A read-only HTTP(S) store (`http://SERVER[:PORT]/PATH/`), reached after DHCP and
    /// read by the CLI itself (docs/FORMAT.md §9).
    Http(String),
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Label(l) => write!(f, "label:{l}"),
            Store::Device(p) => write!(f, "{}", p.display()),
            Store::Share(loc) => write!(f, "{loc}"),
            Store::Http(u) => f.write_str(u),
        }
    }
}

impl Store {
    /// Whether the store is reached over the network (DHCP or `imprint.net=` first).
    pub fn is_network(&self) -> bool {
        matches!(self, Store::Share(_) | Store::Http(_))
    }
}

/// A password. It has no `Display`, and its `Debug` is `***`, so it cannot end up in a log
/// line, a report or an error by accident; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `imprint.net=`: DHCP on every wired link, or one static address (ops::net, which the
/// TUI uses too).
pub use ops::net::{Net, StaticNet};

/// A parsed, validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub action: Action,
    pub store: Store,
    pub image: Option<String>,
    /// A disk selector (see `select`), unresolved.
    pub disk: Option<String>,
    pub description: Option<String>,
    /// `imprint.force=1`: restore over a disk that holds partitions or data (lab
    /// reimaging). Never overrides the other safety rules.
    pub force: bool,
    pub then: Then,
    pub on_error: Then,
    /// Serial console window size, columns x rows.
    pub console_size: (u16, u16),
    /// How long to wait for the store and the disk to appear (late USB disks).
    pub wait: Duration,
    /// `console=` devices in order; the last one is /dev/console.
    pub consoles: Vec<String>,
    /// `imprint.store.password=` (or the legacy `smb://USER:PASSWORD@…`): the password of
    /// an SMB store's user. Else the credentials file on the IMPRINT partition.
    pub password: Option<Secret>,
    /// `imprint.store.ca=PATH`: a PEM file on the IMPRINT partition trusted for https://.
    pub ca: Option<String>,
    /// `imprint.net=`.
    pub net: Net,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            action: Action::Menu,
            store: Store::Label("IMPRINT".into()),
            image: None,
            disk: None,
            description: None,
            force: false,
            then: Then::Menu,
            on_error: Then::Menu,
            console_size: (80, 25),
            wait: Duration::from_secs(15),
            consoles: Vec::new(),
            password: None,
            ca: None,
            net: Net::Dhcp,
        }
    }
}

/// A command line Imprint cannot act on. The message names the parameter and what is
/// allowed, because the reader is at a console with no documentation at hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("imprint.action={0}: unknown action (use capture, restore, verify, shell or menu)")]
    UnknownAction(String),
    #[error("imprint.{key}={value}: unknown value (use reboot, poweroff, shell or menu)")]
    UnknownThen { key: &'static str, value: String },
    #[error("imprint.store={0}: unsupported store (use label:LABEL, a /dev node, smb://[USER@]SERVER/SHARE[/DIR], nfs://SERVER/EXPORT[/DIR] or http(s)://SERVER/PATH/)")]
    UnsupportedStore(String),
    #[error("imprint.net={0}: expected dhcp or IFACE:ADDR/PREFIX[:GATEWAY[:DNS[,DNS]]] (IPv4), e.g. eth0:192.168.1.50/24:192.168.1.1:192.168.1.1")]
    BadNet(String),
    #[error("imprint.store.ca={0}: expected a path to a PEM file on the IMPRINT partition, e.g. /imprint/ca.pem")]
    BadCa(String),
    #[error("the store password is given twice (in the smb:// URL and as imprint.store.password=); keep imprint.store.password= or, better, the credentials file")]
    PasswordTwice,
    #[error("imprint.console={0}: expected COLSxROWS, e.g. 120x40")]
    BadConsoleSize(String),
    #[error("imprint.force={0}: expected 0 or 1")]
    BadForce(String),
    #[error("imprint.wait={0}: expected a number of seconds")]
    BadWait(String),
    #[error("imprint.image=NAME is required for imprint.action={0}")]
    MissingImage(&'static str),
    #[error("imprint.disk=SELECTOR is required for imprint.action={0}")]
    MissingDisk(&'static str),
    #[error("imprint.image={0}: not a valid image name (1-100 characters, none of / \\ : * ? \" < > |, not starting with '.')")]
    BadImageName(String),
    #[error("{0}: unknown imprint parameter (known: imprint.action, .store, .store.password, .store.ca, .net, .image, .disk, .description, .force, .then, .onerror, .console, .wait)")]
    UnknownKey(String),
    #[error("{0} given twice")]
    Duplicate(String),
}

/// Splits a kernel command line into words, honouring double quotes the way the kernel
/// does (`imprint.description="two words"`; the quotes are dropped).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Parses the `imprint.*` and `console=` parameters; ignores every other word.
pub fn parse(line: &str) -> Result<Config, CmdlineError> {
    let mut cfg = Config::default();
    let mut seen: Vec<String> = Vec::new();
    for word in split_words(line) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (word.clone(), String::new()),
        };
        if key == "console" {
            let dev = value.split(',').next().unwrap_or_default();
            if !dev.is_empty() {
                cfg.consoles.push(dev.to_string());
            }
            continue;
        }
        let Some(name) = key.strip_prefix("imprint.") else {
            continue;
        };
        if seen.contains(&key) {
            return Err(CmdlineError::Duplicate(key));
        }
        seen.push(key.clone());
        match name {
            "action" => {
                cfg.action = match value.as_str() {
                    "capture" => Action::Capture,
                    "restore" => Action::Restore,
                    "verify" => Action::Verify,
                    "shell" => Action::Shell,
                    "menu" | "tui" => Action::Menu,
                    _ => return Err(CmdlineError::UnknownAction(value)),
                }
            }
            "then" | "onerror" => {
                let key = if name == "then" { "then" } else { "onerror" };
                let t = Then::parse(&value).ok_or(CmdlineError::UnknownThen { key, value })?;
                if name == "then" {
                    cfg.then = t;
                } else {
                    cfg.on_error = t;
                }
            }
            "store" => {
                let (store, password) = parse_store(&value)?;
                cfg.store = store;
                if password.is_some() {
                    if cfg.password.is_some() {
                        return Err(CmdlineError::PasswordTwice);
                    }
                    cfg.password = password;
                }
            }
            "store.password" => {
                if cfg.password.is_some() {
                    return Err(CmdlineError::PasswordTwice);
                }
                cfg.password = Some(Secret::new(value));
            }
            "store.ca" => {
                let ok = !value.is_empty()
                    && !value.split('/').any(|c| c == "..")
                    && !value.contains('\0');
                if !ok {
                    return Err(CmdlineError::BadCa(value));
                }
                cfg.ca = Some(value);
            }
            "net" => cfg.net = Net::parse(&value).ok_or(CmdlineError::BadNet(value))?,
            "image" => {
                if !valid_image_name(&value) {
                    return Err(CmdlineError::BadImageName(value));
                }
                cfg.image = Some(value);
            }
            "disk" => cfg.disk = Some(value).filter(|v| !v.is_empty()),
            "description" => cfg.description = Some(value),
            "force" => {
                cfg.force = match value.as_str() {
                    "1" | "yes" | "true" | "" => true,
                    "0" | "no" | "false" => false,
                    _ => return Err(CmdlineError::BadForce(value)),
                }
            }
            "console" => {
                cfg.console_size = parse_size(&value).ok_or(CmdlineError::BadConsoleSize(value))?
            }
            "wait" => {
                let secs: u64 = value.parse().map_err(|_| CmdlineError::BadWait(value))?;
                cfg.wait = Duration::from_secs(secs);
            }
            _ => return Err(CmdlineError::UnknownKey(key)),
        }
    }
    if cfg.action.is_job() && cfg.image.is_none() {
        return Err(CmdlineError::MissingImage(cfg.action.name()));
    }
    if matches!(cfg.action, Action::Capture | Action::Restore) && cfg.disk.is_none() {
        return Err(CmdlineError::MissingDisk(cfg.action.name()));
    }
    Ok(cfg)
}

/// The action a command line asked for even when the rest of it is invalid, so the error
/// report can name it.
pub fn requested_action(line: &str) -> Option<String> {
    split_words(line)
        .into_iter()
        .find_map(|w| w.strip_prefix("imprint.action=").map(str::to_string))
}

/// The `then`/`onerror` a command line asked for, when they parse; used to decide what to do
/// after an invalid command line (an unattended lab run should still power off).
pub fn requested_on_error(line: &str) -> Then {
    split_words(line)
        .into_iter()
        .find_map(|w| w.strip_prefix("imprint.onerror=").and_then(Then::parse))
        .unwrap_or(Then::Menu)
}

/// Parses `imprint.store=`; a password in a legacy `smb://USER:PASSWORD@…` URL is split
/// off and returned on its own.
fn parse_store(value: &str) -> Result<(Store, Option<Secret>), CmdlineError> {
    let unsupported = || CmdlineError::UnsupportedStore(redact(value));
    if let Some(label) = value.strip_prefix("label:") {
        if !label.is_empty() && !label.contains('/') {
            return Ok((Store::Label(label.to_string()), None));
        }
    } else if value.starts_with("/dev/") {
        return Ok((Store::Device(PathBuf::from(value)), None));
    } else if value.starts_with("http://") || value.starts_with("https://") {
        // No user info: a password on the kernel command line would show in every log
        // line that prints the store.
        let host = value.split("://").nth(1).and_then(|r| r.split('/').next());
        if host.is_some_and(|h| !h.is_empty() && !h.contains('@')) {
            return Ok((Store::Http(value.to_string()), None));
        }
    } else if value.starts_with("smb://") || value.starts_with("nfs://") {
        // ops::locations refuses a password in the URL (argv is public); the kernel
        // command line accepted one before imprint.store.password= existed, so it is
        // taken out here and handled like imprint.store.password=.
        let (url, password) = match value.strip_prefix("smb://").and_then(|r| {
            let (creds, rest) = r.rsplit_once('@')?;
            let (user, pass) = creds.split_once(':')?;
            Some((format!("smb://{user}@{rest}"), pass.to_string()))
        }) {
            Some((url, pass)) => (url, Some(Secret::new(pass))),
            None => (value.to_string(), None),
        };
        if let Ok(loc) = StoreLocation::parse(&url) {
            if loc.needs_mount() {
                return Ok((Store::Share(loc), password));
            }
        }
    }
    Err(unsupported())
}

/// Parses `imprint.net=`: `dhcp`, or `IFACE:ADDR/PREFIX[:GATEWAY[:DNS[,DNS...]]]`.
/// A store value for error messages, without any `user:password@`.
fn redact(value: &str) -> String {
    ops::locations::redact(value)
}

fn parse_size(value: &str) -> Option<(u16, u16)> {
    let (c, r) = value.split_once(['x', 'X'])?;
    let (c, r) = (c.parse().ok()?, r.parse().ok()?);
    (c >= 20 && r >= 5).then_some((c, r))
}

/// Image names become file names in the store: the CLI's rule (no path or reserved
/// characters), checked here too so a typo fails before any disk is touched.
pub fn valid_image_name(name: &str) -> bool {
    (1..=100).contains(&name.chars().count())
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || "/\\:*?\"<>|".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn plain_boot_opens_the_menu() {
        let cfg =
            parse("BOOT_IMAGE=/boot/vmlinuz console=tty1 console=ttyS0,115200 quiet").unwrap();
        assert_eq!(cfg.action, Action::Menu);
        assert_eq!(cfg.store, Store::Label("IMPRINT".into()));
        assert_eq!(cfg.consoles, ["tty1", "ttyS0"]);
        assert_eq!(cfg.console_size, (80, 25));
    }

    #[test]
    fn restore_line_is_parsed() {
        let cfg = parse(
            "imprint.action=restore imprint.store=/dev/sdb2 imprint.image=lab-2024 \
             imprint.disk=serial:ABC imprint.then=reboot imprint.onerror=poweroff imprint.console=120x40",
        )
        .unwrap();
        assert_eq!(cfg.action, Action::Restore);
        assert_eq!(cfg.store, Store::Device("/dev/sdb2".into()));
        assert_eq!(cfg.image.as_deref(), Some("lab-2024"));
        assert_eq!(cfg.disk.as_deref(), Some("serial:ABC"));
        assert_eq!(cfg.then, Then::Reboot);
        assert_eq!(cfg.on_error, Then::Poweroff);
        assert_eq!(cfg.console_size, (120, 40));
    }

    #[test]
    fn quoted_description_keeps_spaces() {
        let cfg = parse(r#"imprint.action=capture imprint.image=a imprint.disk=largest imprint.description="golden image v2""#)
            .unwrap();
        assert_eq!(cfg.description.as_deref(), Some("golden image v2"));
    }

    #[test]
    fn unknown_action_is_an_error_naming_the_choices() {
        let err = parse("imprint.action=destroy").unwrap_err();
        assert_eq!(err, CmdlineError::UnknownAction("destroy".into()));
        assert!(err.to_string().contains("capture, restore, verify"));
    }

    #[test]
    fn restore_without_disk_is_refused() {
        let err = parse("imprint.action=restore imprint.image=x").unwrap_err();
        assert_eq!(err, CmdlineError::MissingDisk("restore"));
    }

    #[test]
    fn verify_needs_only_an_image() {
        let cfg = parse("imprint.action=verify imprint.image=x").unwrap();
        assert_eq!(cfg.disk, None);
        assert_eq!(
            parse("imprint.action=verify").unwrap_err(),
            CmdlineError::MissingImage("verify")
        );
    }

    #[test]
    fn misspelt_key_is_reported() {
        assert_eq!(
            parse("imprint.acton=restore").unwrap_err(),
            CmdlineError::UnknownKey("imprint.acton".into())
        );
    }

    #[test]
    fn path_traversal_in_image_name_is_refused() {
        assert!(matches!(
            parse("imprint.action=verify imprint.image=../etc").unwrap_err(),
            CmdlineError::BadImageName(_)
        ));
    }

    #[test]
    fn quoted_image_name_with_spaces_and_force() {
        let cfg = parse(r#"imprint.action=restore imprint.image="lab pc 3" imprint.disk=largest imprint.force=1"#)
            .unwrap();
        assert_eq!(cfg.image.as_deref(), Some("lab pc 3"));
        assert!(cfg.force);
        assert!(parse("imprint.force=maybe").is_err());
    }

    #[test]
    fn smb_store_keeps_credentials_out_of_display_and_errors() {
        // The legacy form: the password moves out of the location into `password`.
        let cfg = parse("imprint.store=smb://lab:s3cret@10.0.2.4/images/pcs/").unwrap();
        let Store::Share(StoreLocation::Smb(share)) = &cfg.store else {
            panic!("not smb: {:?}", cfg.store)
        };
        assert_eq!(share.host, "10.0.2.4");
        assert_eq!(share.share, "images");
        assert_eq!(share.dir, "pcs");
        assert_eq!(share.user.as_deref(), Some("lab"));
        assert_eq!(cfg.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(cfg.store.to_string(), "smb://lab@10.0.2.4/images/pcs");
        assert!(!format!("{cfg:?}").contains("s3cret"));
        let err = parse("imprint.store=smb://lab:s3cret@host")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        // Twice (URL and parameter) is refused without echoing either.
        let err = parse("imprint.store=smb://lab:one@h/s imprint.store.password=two")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("one") && !err.contains("two"), "{err}");
    }

    #[test]
    fn store_password_and_ca_parameters() {
        let cfg = parse(
            r#"imprint.store=smb://lab@fs1/images imprint.store.password="pass word" imprint.store.ca=/imprint/ca.pem"#,
        )
        .unwrap();
        assert_eq!(cfg.password, Some(Secret::new("pass word")));
        assert_eq!(cfg.ca.as_deref(), Some("/imprint/ca.pem"));
        assert!(!format!("{cfg:?}").contains("pass word"));
        let err = parse("imprint.store.password=a imprint.store.password=b").unwrap_err();
        assert_eq!(
            err,
            CmdlineError::Duplicate("imprint.store.password".into())
        );
        assert!(matches!(
            parse("imprint.store.ca=../../etc/x").unwrap_err(),
            CmdlineError::BadCa(_)
        ));
    }

    #[test]
    fn nfs_store_is_a_share() {
        let cfg = parse("imprint.store=nfs://10.0.2.100/imprint/lab").unwrap();
        assert_eq!(
            cfg.store,
            Store::Share(StoreLocation::parse("nfs://10.0.2.100/imprint/lab").unwrap())
        );
        assert_eq!(cfg.store.to_string(), "nfs://10.0.2.100/imprint/lab");
        assert!(cfg.store.is_network());
        assert!(parse("imprint.store=nfs://host").is_err());
        assert!(parse("imprint.store=nfs://u:p@host/x").is_err());
    }

    #[test]
    fn net_parameter_dhcp_or_static() {
        assert_eq!(parse("").unwrap().net, Net::Dhcp);
        assert_eq!(parse("imprint.net=dhcp").unwrap().net, Net::Dhcp);
        assert_eq!(
            parse("imprint.net=eth1:192.168.1.50/24:192.168.1.1:192.168.1.2,9.9.9.9")
                .unwrap()
                .net,
            Net::Static(StaticNet {
                iface: "eth1".into(),
                addr: Ipv4Addr::new(192, 168, 1, 50),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
                dns: vec![Ipv4Addr::new(192, 168, 1, 2), Ipv4Addr::new(9, 9, 9, 9)],
            })
        );
        let Net::Static(n) = parse("imprint.net=enp3s0:10.0.2.20/8").unwrap().net else {
            panic!("not static")
        };
        assert_eq!((n.prefix, n.gateway, n.dns.len()), (8, None, 0));
        let Net::Static(n) = parse("imprint.net=eth0:10.0.0.5/16::10.0.0.1").unwrap().net else {
            panic!("not static")
        };
        assert_eq!((n.gateway, n.dns), (None, vec![Ipv4Addr::new(10, 0, 0, 1)]));
        for bad in [
            "imprint.net=eth0",
            "imprint.net=eth0:10.0.0.5",
            "imprint.net=eth0:10.0.0.5/33",
            "imprint.net=eth0:10.0.0.300/24",
            "imprint.net=:10.0.0.5/24",
            "imprint.net=eth0:10.0.0.5/24:gw",
            "imprint.net=eth0:10.0.0.5/24:10.0.0.1:10.0.0.1:extra",
            "imprint.net=static",
        ] {
            assert!(matches!(parse(bad), Err(CmdlineError::BadNet(_))), "{bad}");
        }
    }

    #[test]
    fn bad_sizes_and_stores_are_reported() {
        assert!(parse("imprint.console=80").is_err());
        assert!(parse("imprint.console=0x0").is_err());
        assert!(parse("imprint.store=ftp://host/export").is_err());
        assert!(parse("imprint.store=smb://host").is_err());
        assert_eq!(
            parse("imprint.store=http://10.0.2.100/store/")
                .unwrap()
                .store,
            Store::Http("http://10.0.2.100/store/".into())
        );
        assert!(parse("imprint.store=http://u:p@10.0.2.100/store/").is_err());
        assert!(parse("imprint.wait=soon").is_err());
    }

    #[test]
    fn on_error_is_recovered_from_an_invalid_line() {
        let line = "imprint.action=nope imprint.onerror=poweroff";
        assert!(parse(line).is_err());
        assert_eq!(requested_on_error(line), Then::Poweroff);
        assert_eq!(requested_action(line).as_deref(), Some("nope"));
    }
}
