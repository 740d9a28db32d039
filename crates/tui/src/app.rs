//! The whole state of the UI as plain data. Only [`crate::update::update`] changes it;
//! [`crate::ui::render`] only reads it.

use crate::model::{DiskRow, ImageRow, StoreRow};
use imaging::Progress;
use std::collections::VecDeque;
use std::path::PathBuf;

/// What `run` returns so the caller (init, PID 1) does the actual reboot(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Quit,
    Reboot,
    PowerOff,
}

impl Exit {
    /// `imprint tui`'s exit code (docs/CLI.md "Exit codes"); the same codes as
    /// imprint-init's text menu, so PID 1 reads both alike.
    pub fn code(self) -> i32 {
        match self {
            Exit::Quit => 0,
            Exit::Reboot => 10,
            Exit::PowerOff => 11,
        }
    }
}

/// Which screen is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Home,
    CaptureSource,
    CaptureStore,
    CaptureName,
    CaptureDescription,
    CaptureSummary,
    RestoreStore,
    RestoreImage,
    RestoreTarget,
    RestoreOptions,
    /// Which of the image's partitions (the "one partition" option).
    RestorePartition,
    RestoreConfirm,
    VerifyStore,
    VerifyImage,
    VerifyMode,
    VerifyTarget,
    Progress,
    Result,
    Tools,
    Keyboard,
    Log,
    /// The form that connects a network store (smb, nfs, http, https).
    AddStore,
    /// The image browser (browser.rs).
    BrowseStore,
    BrowseImage,
    BrowsePartition,
    BrowseFiles,
    BrowseDest,
    BrowseDestPath,
}

/// The pane of the home screen that arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeFocus {
    Disks,
    Stores,
}

/// A question over the current screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popup {
    /// Stop the running job?
    ConfirmCancel,
    ConfirmReboot,
    ConfirmPowerOff,
    /// A message to acknowledge (a refusal before anything was written).
    Message {
        title: String,
        lines: Vec<String>,
    },
}

/// A password: shown as `*`, never printed by `{:?}`, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// The boot environment's network, as the network store form shows it
/// (`ops::net::ensure_up` on a helper thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetState {
    /// DHCP (or `imprint.net=`'s static address) is being set up.
    Starting,
    /// On the network: `eth0 10.0.2.15/24`.
    Up(String),
    /// Why not, in words for a technician.
    Down(String),
}

/// Network store types in the form's order.
pub const NET_KINDS: [&str; 4] = ["smb", "nfs", "http", "https"];

/// The "Add network store" form. Fields: 0 type, 1 host, 2 share/export/path,
/// 3 user and 4 password (SMB only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetForm {
    /// Index into [`NET_KINDS`].
    pub kind: usize,
    pub field: usize,
    pub host: String,
    pub path: String,
    pub user: String,
    pub password: Secret,
    /// The location being connected (no password in it).
    pub connecting: Option<String>,
    /// Why the last attempt failed, in plain words.
    pub error: Option<String>,
}

impl NetForm {
    pub fn is_smb(&self) -> bool {
        self.kind == 0
    }

    /// How many fields the form shows for its type.
    pub fn fields(&self) -> usize {
        if self.is_smb() {
            5
        } else {
            3
        }
    }

    /// The label of the path field for the type.
    pub fn path_label(&self) -> &'static str {
        match self.kind {
            0 => "Share/dir:",
            1 => "Export/dir:",
            _ => "Path:",
        }
    }

    /// The location as `ops::locations::StoreLocation::parse` takes it; never holds
    /// the password.
    pub fn location(&self) -> String {
        let path = self.path.trim().trim_matches('/');
        let host = self.host.trim();
        let user = self.user.trim();
        match self.kind {
            0 if !user.is_empty() => format!("smb://{user}@{host}/{path}"),
            k => format!("{}://{host}/{path}", NET_KINDS[k.min(3)]),
        }
    }

    /// The form filled from a parsed location (`imprint tui --store smb://...`).
    pub fn from_location(loc: &ops::locations::StoreLocation) -> NetForm {
        use ops::locations::StoreLocation as L;
        let mut f = NetForm::default();
        match loc {
            L::Smb(s) => {
                f.host = s.host.clone();
                f.path = if s.dir.is_empty() {
                    s.share.clone()
                } else {
                    format!("{}/{}", s.share, s.dir)
                };
                f.user = s.user.clone().unwrap_or_default();
            }
            L::Nfs(n) => {
                f.kind = 1;
                f.host = n.host.clone();
                f.path = n.path.clone();
            }
            L::Http(u) => {
                let (scheme, rest) = u.split_once("://").unwrap_or(("http", u));
                f.kind = if scheme.eq_ignore_ascii_case("https") {
                    3
                } else {
                    2
                };
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                f.host = host.into();
                f.path = path.trim_end_matches('/').into();
            }
            L::Local(_) => {}
        }
        f
    }
}

/// Keyboard layouts offered (DESIGN.md: at least us, de, fr, es).
pub const LAYOUTS: [(&str, &str); 4] = [
    ("us", "English (US)"),
    ("de", "German"),
    ("fr", "French"),
    ("es", "Spanish"),
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureWizard {
    pub source_sel: usize,
    pub store_sel: usize,
    pub source: Option<DiskRow>,
    pub store: Option<StoreRow>,
    pub name: String,
    pub description: String,
    /// What the capture of `source` would read (`ops::preview_capture`), or why it
    /// could not be planned; `None` while it is being measured.
    pub preview: Option<Result<ops::CapturePreview, String>>,
}

/// A disk as the restore target list shows it: refused with the interlock's reason, or
/// acceptable with a note of what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCheck {
    pub node: PathBuf,
    /// The interlock's refusal, in its own words.
    pub refusal: Option<String>,
    /// "carries data: sda1, sda2" for an acceptable disk.
    pub note: Option<String>,
}

/// Restore options, in the order of [`RESTORE_OPTIONS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestoreMode {
    #[default]
    WholeDisk,
    /// `ops::RestoreRequest::partition`: one partition into the target's partition of
    /// the same number; the table and the other partitions are kept.
    Partition(u32),
    /// `ops::RestoreRequest::grow_last`: the whole disk, then the last partition and
    /// its filesystem extended to the end of a larger target.
    GrowLast,
}

/// The options screen's lines.
pub const RESTORE_OPTIONS: [&str; 3] = [
    "Whole disk: partition table, boot areas and every partition",
    "One partition onto the target's partition of the same number",
    "Whole disk, then grow the last partition to fill a larger disk",
];

/// What the confirmation screen names, from `ops::plan_restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfirmView {
    /// `RestorePlan::describe()`.
    pub plan_lines: Vec<String>,
    pub target: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size: u64,
    /// Partitions (or data) that will be destroyed.
    pub destroyed: Vec<String>,
    /// What must be typed: the serial's last 4 characters, or a word.
    pub word: String,
    /// True when `word` comes from the serial.
    pub word_is_serial: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreWizard {
    pub store_sel: usize,
    pub image_sel: usize,
    pub target_sel: usize,
    pub option_sel: usize,
    /// Selected line of the image's partitions (one-partition restore).
    pub part_sel: usize,
    pub mode: RestoreMode,
    pub store: Option<PathBuf>,
    pub image: Option<ImageRow>,
    /// Interlock results for the disks; empty while they are being checked.
    pub checks: Vec<TargetCheck>,
    pub target: Option<PathBuf>,
    pub confirm: Option<ConfirmView>,
    pub typed: String,
    /// Set after a wrong word was entered.
    pub mismatch: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyWizard {
    pub store_sel: usize,
    pub image_sel: usize,
    pub mode_sel: usize,
    pub target_sel: usize,
    pub store: Option<PathBuf>,
    pub image: Option<String>,
}

/// Which job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Capture,
    Restore,
    Verify,
    /// Files copied out of an image by the browser.
    Copy,
}

/// Measured progress of the running (or last) job. Times are milliseconds since the
/// job started, measured on the worker, so rendering needs no clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobView {
    pub kind: Option<JobKind>,
    pub title: String,
    pub phase: String,
    pub progress: Progress,
    pub elapsed_ms: u64,
    /// (ms, done_bytes) over the last seconds, for the current rate.
    pub samples: VecDeque<(u64, u64)>,
    pub warnings: Vec<String>,
    pub cancel_requested: bool,
    pub finished: bool,
}

/// How long the current rate is averaged over.
pub const RATE_WINDOW_MS: u64 = 5_000;

impl JobView {
    /// Bytes per second over the last [`RATE_WINDOW_MS`].
    pub fn current_rate(&self) -> Option<u64> {
        let (t0, b0) = *self.samples.front()?;
        let (t1, b1) = *self.samples.back()?;
        (t1 > t0).then(|| (b1 - b0) * 1000 / (t1 - t0))
    }

    /// Bytes per second since the start.
    pub fn average_rate(&self) -> Option<u64> {
        (self.elapsed_ms > 0).then(|| self.progress.done_bytes * 1000 / self.elapsed_ms)
    }

    /// Seconds left at the average rate.
    pub fn eta_secs(&self) -> Option<u64> {
        let rate = self.average_rate().filter(|r| *r > 0)?;
        Some(
            self.progress
                .total_bytes
                .saturating_sub(self.progress.done_bytes)
                / rate,
        )
    }
}

/// What a finished job did, in figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSuccess {
    pub headline: String,
    pub lines: Vec<String>,
}

/// Why a job failed, as `ops::OpsError` said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// `OpsError::kind()`: usage, refused, mismatch, cancelled, failed.
    pub kind: String,
    pub exit_code: i32,
    pub message: String,
    /// What to do next.
    pub advice: Vec<String>,
}

/// The result screen's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultView {
    pub kind: JobKind,
    pub title: String,
    pub outcome: Result<JobSuccess, JobFailure>,
    pub warnings: Vec<String>,
    /// After a restore: the comparison the screen offers (store, image, target).
    pub verify_offer: Option<(PathBuf, String, PathBuf)>,
}

/// Everything the UI knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub screen: Screen,
    pub disks: Vec<DiskRow>,
    pub stores: Vec<StoreRow>,
    pub focus: HomeFocus,
    pub disk_sel: usize,
    pub store_sel: usize,
    pub capture: CaptureWizard,
    pub restore: RestoreWizard,
    pub verify: VerifyWizard,
    pub net: NetForm,
    /// `None` where the operating system, not Imprint, runs the network.
    pub network: Option<NetState>,
    pub browser: crate::browser::BrowserState,
    pub job: JobView,
    pub result: Option<ResultView>,
    pub log: Vec<String>,
    pub log_scroll: usize,
    pub tools_sel: usize,
    pub layout_sel: usize,
    /// The chosen keyboard layout and what became of applying it.
    pub layout: String,
    pub layout_note: Option<String>,
    pub popup: Option<Popup>,
    /// One line of feedback under the screen (a refused key, a wrong word).
    pub status: Option<String>,
    pub exit: Option<Exit>,
    pub version: String,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

/// Entries of the tools screen.
pub const TOOLS: [&str; 5] = [
    "Rescue shell (/bin/sh; type exit to come back)",
    "Show log",
    "Keyboard layout",
    "Reboot",
    "Power off",
];

impl App {
    pub fn new() -> App {
        App {
            screen: Screen::Home,
            disks: Vec::new(),
            stores: Vec::new(),
            focus: HomeFocus::Disks,
            disk_sel: 0,
            store_sel: 0,
            capture: CaptureWizard::default(),
            restore: RestoreWizard::default(),
            verify: VerifyWizard::default(),
            net: NetForm::default(),
            network: None,
            browser: Default::default(),
            job: JobView::default(),
            result: None,
            log: Vec::new(),
            log_scroll: 0,
            tools_sel: 0,
            layout_sel: 0,
            layout: "us".into(),
            layout_note: None,
            popup: None,
            status: None,
            exit: None,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// True while a job runs: navigation away from the progress screen is blocked.
    pub fn job_running(&self) -> bool {
        self.job.kind.is_some() && !self.job.finished
    }

    /// Stores that hold at least one usable image.
    pub fn stores_with_images(&self) -> Vec<&StoreRow> {
        self.stores
            .iter()
            .filter(|s| s.images().iter().any(|i| i.error.is_none()))
            .collect()
    }

    /// Stores a capture can write to.
    pub fn writable_stores(&self) -> Vec<&StoreRow> {
        self.stores.iter().filter(|s| s.writable()).collect()
    }

    /// Usable images of the store at `path`.
    pub fn images_of(&self, path: &std::path::Path) -> Vec<&ImageRow> {
        self.stores
            .iter()
            .find(|s| s.path == path)
            .map(|s| s.images().iter().filter(|i| i.error.is_none()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ops::locations::StoreLocation;

    #[test]
    fn the_network_form_round_trips_every_kind_of_location() {
        for s in [
            "smb://lab@fs1/images/pcs",
            "smb://10.0.2.4/qemu",
            "nfs://nas/srv/imprint",
            "http://10.0.2.100:8080/stores/lab",
            "https://cdn.example/imprint",
        ] {
            let loc = StoreLocation::parse(s).unwrap();
            let form = NetForm::from_location(&loc);
            assert_eq!(form.location(), s, "{form:?}");
            assert_eq!(StoreLocation::parse(&form.location()).unwrap(), loc);
        }
    }

    #[test]
    fn a_secret_never_shows_in_debug() {
        let f = NetForm {
            password: Secret("hunter22".into()),
            ..Default::default()
        };
        assert!(!format!("{f:?}").contains("hunter22"));
    }
}
