//! What can happen to the UI ([`Action`]: a key turned into intent, or news from the
//! runtime), what `update` asks the runtime to do ([`Effect`]), and the keymap.

use crate::app::{App, ConfirmView, JobFailure, JobSuccess, Popup, Screen, TargetCheck};
use crate::browser::{CopyRequest, Dest, Entry};
use crate::model::{DiskRow, StoreRow};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::path::PathBuf;

/// Everything `update` reacts to.
#[derive(Debug, Clone)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    /// Enter: choose, go on, confirm.
    Select,
    /// Esc: one step back.
    Back,
    Quit,
    /// Tab on the home screen: disks ↔ stores.
    Focus,
    /// Left/Right: the type field of the network store form.
    Left,
    Right,
    Capture,
    /// Open the "Add network store" form.
    AddStore,
    Restore,
    Verify,
    Tools,
    Log,
    /// A character typed into a text field.
    Input(char),
    /// Backspace in a text field.
    Erase,
    /// Ask to stop the running job.
    Cancel,
    /// Answers to a popup.
    Yes,
    No,
    /// The image browser: open it (home), mark an entry (Space), copy (c).
    Browse,
    Mark,
    CopyMarked,

    // ---- from the runtime ----
    /// A fresh look at disks and stores (polled every 2 s: hotplug).
    Refresh {
        disks: Vec<DiskRow>,
        stores: Vec<StoreRow>,
    },
    /// What capturing this disk would read, or why it could not be planned.
    CapturePreviewed {
        source: PathBuf,
        preview: Result<ops::CapturePreview, String>,
    },
    /// Interlock results for the restore target list.
    Checked(Vec<TargetCheck>),
    /// `ops::plan_restore` accepted the target (the confirmation's content) or refused it.
    Planned(Result<ConfirmView, String>),
    /// Connect a network store given on the command line (`--store smb://...`); an
    /// SMB user without a password opens the form to ask for it.
    ConnectLocation {
        location: String,
        password: Option<crate::app::Secret>,
    },
    /// The network came up or not (`ops::net::ensure_up`), or is being brought up.
    Network(crate::app::NetState),
    /// A network store was connected (its row, images listed), or why not.
    StoreConnected {
        location: String,
        result: Result<StoreRow, String>,
    },
    /// News from the worker thread.
    Job(JobMsg),
    /// A line for the log from the runtime (a store found on a disk, unmounted).
    Note(String),
    /// Milliseconds since the running job started.
    Tick(u64),
    /// The keyboard layout was applied, or why not.
    KeyboardApplied {
        layout: String,
        note: String,
    },
    /// The rescue shell ended.
    ShellReturned(Result<(), String>),
    /// The browsed partition was mounted (where) or not (why).
    BrowseOpened(Result<PathBuf, String>),
    /// A directory of the browsed partition.
    BrowseListed {
        dir: String,
        entries: Result<Vec<Entry>, String>,
    },
    /// Where marked files can be copied to.
    BrowseDests(Vec<Dest>),
    /// The browsed partition could not be unmounted (why).
    BrowseCloseFailed(String),
}

/// A message from a job's worker thread.
#[derive(Debug, Clone)]
pub enum JobMsg {
    /// An engine event, `at_ms` after the job started.
    Event { at_ms: u64, event: imaging::Event },
    /// The job ended.
    Done {
        at_ms: u64,
        outcome: Result<JobSuccess, JobFailure>,
    },
}

/// A job for the worker thread.
#[derive(Debug, Clone)]
pub enum JobSpec {
    Capture(ops::CaptureRequest),
    /// Planned again on the worker; refused when the target no longer matches what
    /// the person confirmed.
    Restore {
        req: ops::RestoreRequest,
        confirmed: ConfirmView,
    },
    Verify(ops::VerifyRequest),
    /// Files out of a browsed image.
    Copy(CopyRequest),
}

/// What `update` asks the runtime to do; results come back as actions.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Run the write-target interlocks on each disk for this image.
    CheckTargets {
        store: PathBuf,
        image: String,
        nodes: Vec<PathBuf>,
    },
    /// `ops::preview_capture`: plan the capture of a disk (reads its tables and
    /// filesystem metadata, writes nothing).
    PreviewCapture(PathBuf),
    /// `ops::plan_restore`, which writes nothing.
    PlanRestore(ops::RestoreRequest),
    /// Mount or open a network store (`ops::locations`) on a helper thread and list
    /// its images; the password goes to the kernel in the mount data only.
    ConnectStore {
        location: String,
        password: crate::app::Secret,
    },
    /// Bring the network up in the boot environment (links, DHCP or `imprint.net=`) on
    /// a helper thread; nothing where the operating system runs the network.
    BringUpNetwork,
    StartJob(JobSpec),
    /// Set the job's cancel flag; it stops at the next chunk boundary.
    CancelJob,
    /// Leave the screen, run `/bin/sh`, come back.
    Shell,
    /// Load a console keymap.
    SetKeyboard(String),
    /// Mount a partition of an image read-only for the browser (one at a time).
    BrowseOpen {
        store: PathBuf,
        image: String,
        partition: u32,
    },
    /// List a directory of the mounted partition.
    BrowseList {
        root: PathBuf,
        dir: String,
    },
    /// Unmount the browsed partition.
    BrowseClose,
    /// Find where files can be copied to.
    BrowseDestinations,
}

/// True on screens where printable keys are text.
pub fn is_text_screen(s: Screen) -> bool {
    matches!(
        s,
        Screen::CaptureName
            | Screen::CaptureDescription
            | Screen::RestoreConfirm
            | Screen::BrowseDestPath
    )
}

/// Turns a key into an action for the current screen.
pub fn keymap(app: &App, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if let Some(p) = &app.popup {
        return match (p, key.code) {
            (Popup::Message { .. }, KeyCode::Enter | KeyCode::Esc) => Some(Action::No),
            (Popup::Message { .. }, _) => None,
            (_, KeyCode::Char('y' | 'Y')) => Some(Action::Yes),
            (_, KeyCode::Char('n' | 'N') | KeyCode::Esc) => Some(Action::No),
            _ => None,
        };
    }
    if app.screen == Screen::Progress {
        return match key.code {
            KeyCode::Esc | KeyCode::Char('c' | 'q') => Some(Action::Cancel),
            _ => None,
        };
    }
    if app.screen == Screen::AddStore {
        return match key.code {
            KeyCode::Enter => Some(Action::Select),
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Backspace => Some(Action::Erase),
            KeyCode::Up | KeyCode::BackTab => Some(Action::Up),
            KeyCode::Down | KeyCode::Tab => Some(Action::Down),
            KeyCode::Left => Some(Action::Left),
            KeyCode::Right => Some(Action::Right),
            KeyCode::Char(_) if ctrl => None,
            KeyCode::Char(c) => Some(Action::Input(c)),
            _ => None,
        };
    }
    if is_text_screen(app.screen) {
        return match key.code {
            KeyCode::Enter => Some(Action::Select),
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Backspace => Some(Action::Erase),
            KeyCode::Char(_) if ctrl => None,
            KeyCode::Char(c) => Some(Action::Input(c)),
            _ => None,
        };
    }
    if app.screen == Screen::BrowseFiles {
        match key.code {
            KeyCode::Char(' ') => return Some(Action::Mark),
            KeyCode::Char('c') => return Some(Action::CopyMarked),
            _ => {}
        }
    }
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Enter => Action::Select,
        KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => Action::Back,
        KeyCode::Tab => Action::Focus,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('c') => Action::Capture,
        KeyCode::Char('n') => Action::AddStore,
        KeyCode::Char('r') => Action::Restore,
        KeyCode::Char('v') => Action::Verify,
        KeyCode::Char('b') => Action::Browse,
        KeyCode::Char('t') => Action::Tools,
        KeyCode::Char('l') => Action::Log,
        _ => return None,
    })
}
