//! The unattended interface: `imprint.*` parameters on the kernel command line
//! (docs/BOOT.md is the reference). Parsing is pure so every rule is unit-tested.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    /// An SMB share (`smb://[USER[:PASSWORD]@]SERVER/SHARE[/DIR]`), reached after DHCP.
    Smb(SmbShare),
    /// A read-only HTTP(S) store (`http://SERVER[:PORT]/PATH/`), reached after DHCP and
    /// read by the CLI itself (docs/FORMAT.md §9).
    Http(String),
}

/// An SMB/CIFS store. The credentials never appear in `Display` (logs, JSON, screen).
#[derive(Clone, PartialEq, Eq)]
pub struct SmbShare {
    /// IPv4 address or host name.
    pub server: String,
    /// `SHARE` or `SHARE/DIR/...`.
    pub path: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for SmbShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmbShare")
            .field("server", &self.server)
            .field("path", &self.path)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Label(l) => write!(f, "label:{l}"),
            Store::Device(p) => write!(f, "{}", p.display()),
            Store::Smb(s) => write!(f, "smb://{}/{}", s.server, s.path),
            Store::Http(u) => f.write_str(u),
        }
    }
}

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
    #[error("imprint.store={0}: unsupported store (use label:LABEL, a /dev node, smb://SERVER/SHARE[/DIR] or http://SERVER/PATH/)")]
    UnsupportedStore(String),
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
    #[error("{0}: unknown imprint parameter (known: imprint.action, .store, .image, .disk, .description, .force, .then, .onerror, .console, .wait)")]
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
            "store" => cfg.store = parse_store(&value)?,
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

fn parse_store(value: &str) -> Result<Store, CmdlineError> {
    if let Some(label) = value.strip_prefix("label:") {
        if !label.is_empty() && !label.contains('/') {
            return Ok(Store::Label(label.to_string()));
        }
    } else if value.starts_with("/dev/") {
        return Ok(Store::Device(PathBuf::from(value)));
    } else if value.starts_with("http://") || value.starts_with("https://") {
        // No user info: a password on the kernel command line would show in every log
        // line that prints the store.
        let host = value.split("://").nth(1).and_then(|r| r.split('/').next());
        if host.is_some_and(|h| !h.is_empty() && !h.contains('@')) {
            return Ok(Store::Http(value.to_string()));
        }
    } else if let Some(rest) = value.strip_prefix("smb://") {
        let (creds, rest) = match rest.rsplit_once('@') {
            Some((c, r)) => (Some(c), r),
            None => (None, rest),
        };
        let (user, password) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        if let Some((server, path)) = rest.split_once('/') {
            let path = path.trim_end_matches('/');
            let safe = |t: &str| !t.is_empty() && !t.contains(',') && !t.contains(['\\', '\0']);
            if safe(server) && safe(path) && !user.as_deref().is_some_and(|u| u.contains(',')) {
                return Ok(Store::Smb(SmbShare {
                    server: server.to_string(),
                    path: path.to_string(),
                    user,
                    password,
                }));
            }
        }
    }
    Err(CmdlineError::UnsupportedStore(redact(value)))
}

/// A store value for error messages, without any `user:password@`.
fn redact(value: &str) -> String {
    match (value.strip_prefix("smb://"), value.rsplit_once('@')) {
        (Some(_), Some((_, rest))) => format!("smb://***@{rest}"),
        _ => value.to_string(),
    }
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
        let cfg = parse("imprint.store=smb://lab:s3cret@10.0.2.4/images/pcs/").unwrap();
        let Store::Smb(share) = &cfg.store else {
            panic!("not smb: {:?}", cfg.store)
        };
        assert_eq!(share.server, "10.0.2.4");
        assert_eq!(share.path, "images/pcs");
        assert_eq!(share.user.as_deref(), Some("lab"));
        assert_eq!(share.password.as_deref(), Some("s3cret"));
        assert_eq!(cfg.store.to_string(), "smb://10.0.2.4/images/pcs");
        assert!(!format!("{:?}", cfg.store).contains("s3cret"));
        let err = parse("imprint.store=smb://lab:s3cret@host")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn bad_sizes_and_stores_are_reported() {
        assert!(parse("imprint.console=80").is_err());
        assert!(parse("imprint.console=0x0").is_err());
        assert!(parse("imprint.store=nfs://host/export").is_err());
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
