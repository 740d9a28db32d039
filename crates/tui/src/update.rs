//! The one place the UI's state changes. Pure: no I/O, no clock; whatever needs the
//! world is returned as an [`Effect`] and comes back as an [`Action`].

use crate::action::{Action, Effect, JobMsg, JobSpec};
use crate::app::{
    App, ConfirmView, Exit, HomeFocus, JobKind, JobView, NetForm, NetState, Popup, RestoreMode,
    ResultView, Screen, Secret, TargetCheck, LAYOUTS, NET_KINDS, RATE_WINDOW_MS, RESTORE_OPTIONS,
    TOOLS,
};
use crate::model::{DiskRow, ImageRow, StoreRow};
use disks::usage::human_size;
use std::path::PathBuf;

/// Longest description kept (the manifest has no limit; the screen has).
const MAX_DESCRIPTION: usize = 200;
/// Log lines kept.
const MAX_LOG: usize = 1000;

/// Applies one action; returns what the runtime must do.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Refresh { disks, stores } => return refresh(app, disks, stores),
        Action::Checked(checks) => {
            if app.screen == Screen::RestoreTarget {
                app.restore.checks = checks;
            }
            return vec![];
        }
        Action::Planned(plan) => return planned(app, plan),
        Action::StoreConnected { location, result } => {
            connected(app, location, result);
            return vec![];
        }
        Action::ConnectLocation { location, password } => {
            return connect_location(app, &location, password)
        }
        Action::Network(state) => {
            match &state {
                NetState::Starting => {}
                NetState::Up(links) => log(app, format!("network: {links}")),
                NetState::Down(why) => log(app, format!("no network: {why}")),
            }
            app.network = Some(state);
            return vec![];
        }
        Action::CapturePreviewed { source, preview } => {
            if app
                .capture
                .source
                .as_ref()
                .is_some_and(|d| d.node == source)
            {
                app.capture.preview = Some(preview);
            }
            return vec![];
        }
        Action::Job(msg) => {
            job_msg(app, msg);
            return vec![];
        }
        Action::Note(line) => {
            log(app, line);
            return vec![];
        }
        Action::Tick(ms) => {
            if app.job_running() {
                app.job.elapsed_ms = app.job.elapsed_ms.max(ms);
            }
            return vec![];
        }
        Action::KeyboardApplied { layout, note } => {
            log(app, format!("keyboard {layout}: {note}"));
            app.layout_note = Some(note);
            return vec![];
        }
        Action::BrowseOpened(r) => {
            crate::browser::opened(app, r);
            return match &app.browser.root {
                Some(root) if app.screen == Screen::BrowseFiles => vec![Effect::BrowseList {
                    root: root.clone(),
                    dir: app.browser.dir.clone(),
                }],
                _ => vec![],
            };
        }
        Action::BrowseListed { dir, entries } => {
            crate::browser::listed(app, dir, entries);
            return vec![];
        }
        Action::BrowseDests(d) => {
            crate::browser::destinations(app, d);
            return vec![];
        }
        Action::BrowseCloseFailed(e) => {
            log(app, format!("browse: {e}"));
            app.status = Some(format!("the image stays mounted: {e}"));
            return vec![];
        }
        Action::ShellReturned(r) => {
            match r {
                Ok(()) => log(app, "rescue shell ended".into()),
                Err(e) => {
                    log(app, format!("rescue shell: {e}"));
                    app.status = Some(format!("the rescue shell could not start: {e}"));
                }
            }
            return vec![];
        }
        _ => {}
    }
    if let Some(popup) = app.popup.clone() {
        return answer_popup(app, popup, action);
    }
    app.status = None;
    match app.screen {
        Screen::Home => home(app, action),
        Screen::AddStore => add_store(app, action),
        Screen::BrowseStore
        | Screen::BrowseImage
        | Screen::BrowsePartition
        | Screen::BrowseFiles
        | Screen::BrowseDest
        | Screen::BrowseDestPath => crate::browser::update(app, action),
        Screen::CaptureSource => {
            let n = app.disks.len();
            match action {
                Action::Select => match app.disks.get(app.capture.source_sel) {
                    Some(d) => {
                        if app.writable_stores().is_empty() {
                            app.status = Some(
                                "no store to write to: mount the IMPRINT partition or start with --store PATH"
                                    .into(),
                            );
                        } else {
                            let node = d.node.clone();
                            app.capture.source = Some(d.clone());
                            app.capture.preview = None;
                            app.screen = Screen::CaptureStore;
                            return vec![Effect::PreviewCapture(node)];
                        }
                    }
                    None => app.status = Some("no disk to capture".into()),
                },
                Action::Back => app.screen = Screen::Home,
                a => move_sel(&mut app.capture.source_sel, n, &a),
            }
            vec![]
        }
        Screen::CaptureStore => {
            let stores: Vec<StoreRow> = app.writable_stores().into_iter().cloned().collect();
            match action {
                Action::Select => {
                    if let Some(s) = stores.get(app.capture.store_sel) {
                        app.capture.store = Some(s.clone());
                        app.screen = Screen::CaptureName;
                    }
                }
                Action::Back => app.screen = Screen::CaptureSource,
                a => move_sel(&mut app.capture.store_sel, stores.len(), &a),
            }
            vec![]
        }
        Screen::CaptureName => {
            match action {
                Action::Input(c)
                    if app.capture.name.len() + c.len_utf8() <= imaging::format::MAX_NAME_LEN =>
                {
                    app.capture.name.push(c);
                }
                Action::Erase => {
                    app.capture.name.pop();
                }
                Action::Select => match name_problem(app) {
                    None => app.screen = Screen::CaptureDescription,
                    Some(p) => app.status = Some(p),
                },
                Action::Back => app.screen = Screen::CaptureStore,
                _ => {}
            }
            vec![]
        }
        Screen::CaptureDescription => {
            match action {
                Action::Input(c) if app.capture.description.chars().count() < MAX_DESCRIPTION => {
                    app.capture.description.push(c);
                }
                Action::Erase => {
                    app.capture.description.pop();
                }
                Action::Select => app.screen = Screen::CaptureSummary,
                Action::Back => app.screen = Screen::CaptureName,
                _ => {}
            }
            vec![]
        }
        Screen::CaptureSummary => match action {
            Action::Select => start_capture(app),
            Action::Back => {
                app.screen = Screen::CaptureDescription;
                vec![]
            }
            _ => vec![],
        },
        Screen::RestoreStore => {
            match action {
                Action::Back => app.screen = Screen::Home,
                a => {
                    if let Some(s) = pick_store(app, &a, |app| &mut app.restore.store_sel) {
                        app.restore.store = Some(s);
                        app.restore.image_sel = 0;
                        app.screen = Screen::RestoreImage;
                    }
                }
            }
            vec![]
        }
        Screen::RestoreImage => match action {
            Action::Back => {
                app.screen = Screen::RestoreStore;
                vec![]
            }
            a => {
                let store = app.restore.store.clone().unwrap_or_default();
                match pick_image(app, &a, &store, |app| &mut app.restore.image_sel) {
                    Some(img) => {
                        app.restore.image = Some(img);
                        app.restore.checks.clear();
                        app.restore.target_sel = 0;
                        app.screen = Screen::RestoreTarget;
                        vec![check_targets(app)]
                    }
                    None => vec![],
                }
            }
        },
        Screen::RestoreTarget => {
            match action {
                Action::Select => {
                    let Some(d) = app.disks.get(app.restore.target_sel) else {
                        app.status = Some("no disk to restore onto".into());
                        return vec![];
                    };
                    match app.restore.checks.iter().find(|c| c.node == d.node) {
                        None => app.status = Some("still checking this disk; wait a moment".into()),
                        Some(TargetCheck {
                            refusal: Some(r), ..
                        }) => app.status = Some(format!("cannot use this disk: {r}")),
                        Some(_) => {
                            app.restore.target = Some(d.node.clone());
                            app.restore.option_sel = 0;
                            app.screen = Screen::RestoreOptions;
                        }
                    }
                }
                Action::Back => app.screen = Screen::RestoreImage,
                a => move_sel(&mut app.restore.target_sel, app.disks.len(), &a),
            }
            vec![]
        }
        Screen::RestoreOptions => match action {
            Action::Select => match app.restore.option_sel {
                1 => {
                    if image_partitions(app).is_empty() {
                        app.status = Some(
                            "this image has no partition table: restore the whole disk".into(),
                        );
                    } else {
                        app.restore.part_sel = 0;
                        app.screen = Screen::RestorePartition;
                    }
                    vec![]
                }
                sel => {
                    let mode = if sel == 2 {
                        RestoreMode::GrowLast
                    } else {
                        RestoreMode::WholeDisk
                    };
                    plan(app, mode)
                }
            },
            Action::Back => {
                app.screen = Screen::RestoreTarget;
                vec![]
            }
            a => {
                move_sel(&mut app.restore.option_sel, RESTORE_OPTIONS.len(), &a);
                vec![]
            }
        },
        Screen::RestorePartition => {
            let parts = image_partitions(app);
            match action {
                Action::Select => match parts.get(app.restore.part_sel) {
                    Some(&n) => plan(app, RestoreMode::Partition(n)),
                    None => vec![],
                },
                Action::Back => {
                    app.screen = Screen::RestoreOptions;
                    vec![]
                }
                a => {
                    move_sel(&mut app.restore.part_sel, parts.len(), &a);
                    vec![]
                }
            }
        }
        Screen::RestoreConfirm => confirm_key(app, action),
        Screen::VerifyStore => {
            match action {
                Action::Back => app.screen = Screen::Home,
                a => {
                    if let Some(s) = pick_store(app, &a, |app| &mut app.verify.store_sel) {
                        app.verify.store = Some(s);
                        app.verify.image_sel = 0;
                        app.screen = Screen::VerifyImage;
                    }
                }
            }
            vec![]
        }
        Screen::VerifyImage => {
            match action {
                Action::Back => app.screen = Screen::VerifyStore,
                a => {
                    let store = app.verify.store.clone().unwrap_or_default();
                    if let Some(img) = pick_image(app, &a, &store, |app| &mut app.verify.image_sel)
                    {
                        app.verify.image = Some(img.name);
                        app.verify.mode_sel = 0;
                        app.screen = Screen::VerifyMode;
                    }
                }
            }
            vec![]
        }
        Screen::VerifyMode => match action {
            Action::Select if app.verify.mode_sel == 0 => start_verify(app, None),
            Action::Select => {
                app.verify.target_sel = 0;
                app.screen = Screen::VerifyTarget;
                vec![]
            }
            Action::Back => {
                app.screen = Screen::VerifyImage;
                vec![]
            }
            a => {
                move_sel(&mut app.verify.mode_sel, 2, &a);
                vec![]
            }
        },
        Screen::VerifyTarget => match action {
            Action::Select => match app.disks.get(app.verify.target_sel) {
                Some(d) => {
                    let node = d.node.clone();
                    start_verify(app, Some(node))
                }
                None => vec![],
            },
            Action::Back => {
                app.screen = Screen::VerifyMode;
                vec![]
            }
            a => {
                move_sel(&mut app.verify.target_sel, app.disks.len(), &a);
                vec![]
            }
        },
        Screen::Progress => {
            if matches!(action, Action::Cancel) && app.job_running() {
                if app.job.cancel_requested {
                    app.status = Some("already stopping at the next chunk boundary".into());
                } else {
                    app.popup = Some(Popup::ConfirmCancel);
                }
            }
            vec![]
        }
        Screen::Result => match action {
            Action::Verify => {
                let offer = app.result.as_ref().and_then(|r| r.verify_offer.clone());
                match offer {
                    Some((store, name, target)) => {
                        app.verify.store = Some(store);
                        app.verify.image = Some(name);
                        start_verify(app, Some(target))
                    }
                    None => vec![],
                }
            }
            Action::Select | Action::Back | Action::Quit => {
                // After a copy the browser is still open where it was.
                let browsing = app.result.as_ref().is_some_and(|r| r.kind == JobKind::Copy)
                    && app.browser.root.is_some();
                app.screen = if browsing {
                    app.browser.marked.clear();
                    Screen::BrowseFiles
                } else {
                    Screen::Home
                };
                vec![]
            }
            _ => vec![],
        },
        Screen::Tools => match action {
            Action::Select => match app.tools_sel {
                0 => {
                    log(app, "rescue shell started".into());
                    vec![Effect::Shell]
                }
                1 => {
                    app.screen = Screen::Log;
                    vec![]
                }
                2 => {
                    app.layout_sel = LAYOUTS
                        .iter()
                        .position(|(c, _)| *c == app.layout)
                        .unwrap_or(0);
                    app.screen = Screen::Keyboard;
                    vec![]
                }
                3 => {
                    app.popup = Some(Popup::ConfirmReboot);
                    vec![]
                }
                _ => {
                    app.popup = Some(Popup::ConfirmPowerOff);
                    vec![]
                }
            },
            Action::Back | Action::Quit => {
                app.screen = Screen::Home;
                vec![]
            }
            a => {
                move_sel(&mut app.tools_sel, TOOLS.len(), &a);
                vec![]
            }
        },
        Screen::Keyboard => match action {
            Action::Select => {
                let code = LAYOUTS[app.layout_sel].0.to_string();
                app.layout = code.clone();
                app.layout_note = Some("applying...".into());
                vec![Effect::SetKeyboard(code)]
            }
            Action::Back | Action::Quit => {
                app.screen = Screen::Tools;
                vec![]
            }
            a => {
                move_sel(&mut app.layout_sel, LAYOUTS.len(), &a);
                vec![]
            }
        },
        Screen::Log => {
            let max = app.log.len().saturating_sub(1);
            match action {
                Action::Up => app.log_scroll = app.log_scroll.saturating_sub(1),
                Action::Down => app.log_scroll = (app.log_scroll + 1).min(max),
                Action::PageUp => app.log_scroll = app.log_scroll.saturating_sub(10),
                Action::PageDown => app.log_scroll = (app.log_scroll + 10).min(max),
                Action::Back | Action::Quit | Action::Select => app.screen = Screen::Home,
                _ => {}
            }
            vec![]
        }
    }
}

pub(crate) fn log(app: &mut App, line: String) {
    app.log.push(line);
    if app.log.len() > MAX_LOG {
        let extra = app.log.len() - MAX_LOG;
        app.log.drain(..extra);
    }
}

/// Up/Down/PageUp/PageDown over a list of `n`.
pub(crate) fn move_sel(sel: &mut usize, n: usize, action: &Action) {
    if n == 0 {
        *sel = 0;
        return;
    }
    *sel = match action {
        Action::Up => sel.saturating_sub(1),
        Action::Down => (*sel + 1).min(n - 1),
        Action::PageUp => sel.saturating_sub(10),
        Action::PageDown => (*sel + 10).min(n - 1),
        _ => *sel,
    }
    .min(n - 1);
}

/// A store list (restore, verify, browse): arrows move the wizard's cursor `sel`;
/// Enter returns the store under it.
pub(crate) fn pick_store(
    app: &mut App,
    action: &Action,
    sel: fn(&mut App) -> &mut usize,
) -> Option<PathBuf> {
    let stores: Vec<PathBuf> = app
        .stores_with_images()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    let cur = sel(app);
    match action {
        Action::Select => stores.get(*cur).cloned(),
        a => {
            move_sel(cur, stores.len(), a);
            None
        }
    }
}

/// An image list of `store` (restore, verify, browse): arrows move `sel`; Enter
/// returns the image under it.
pub(crate) fn pick_image(
    app: &mut App,
    action: &Action,
    store: &std::path::Path,
    sel: fn(&mut App) -> &mut usize,
) -> Option<ImageRow> {
    let images: Vec<ImageRow> = app.images_of(store).into_iter().cloned().collect();
    let cur = sel(app);
    match action {
        Action::Select => images.get(*cur).cloned(),
        a => {
            move_sel(cur, images.len(), a);
            None
        }
    }
}

/// Rows of the home screen's store pane: each store, then its images.
pub fn store_lines(app: &App) -> usize {
    app.stores.iter().map(|s| 1 + s.images().len()).sum()
}

fn home(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Focus => {
            app.focus = match app.focus {
                HomeFocus::Disks => HomeFocus::Stores,
                HomeFocus::Stores => HomeFocus::Disks,
            }
        }
        a @ (Action::Up | Action::Down | Action::PageUp | Action::PageDown) => match app.focus {
            HomeFocus::Disks => move_sel(&mut app.disk_sel, app.disks.len(), &a),
            HomeFocus::Stores => {
                let n = store_lines(app);
                move_sel(&mut app.store_sel, n, &a)
            }
        },
        Action::Capture => {
            if app.disks.is_empty() {
                app.status = Some("no disks found: plug one in, it appears here by itself".into());
            } else {
                app.capture = Default::default();
                app.capture.source_sel = app.disk_sel.min(app.disks.len() - 1);
                app.screen = Screen::CaptureSource;
            }
        }
        Action::Restore | Action::Verify => {
            if app.stores_with_images().is_empty() {
                app.status = Some(
                    "no store holds an image yet: capture one first, or start with --store PATH"
                        .into(),
                );
            } else if matches!(action, Action::Restore) {
                app.restore = Default::default();
                app.screen = Screen::RestoreStore;
            } else {
                app.verify = Default::default();
                app.screen = Screen::VerifyStore;
            }
        }
        Action::Browse => return crate::browser::start(app),
        Action::Tools => app.screen = Screen::Tools,
        Action::Log => app.screen = Screen::Log,
        Action::AddStore => {
            app.net.error = None;
            app.net.field = 0;
            app.screen = Screen::AddStore;
            // A cable plugged in since boot is found now; at once when already up.
            return vec![Effect::BringUpNetwork];
        }
        Action::Quit => app.exit = Some(Exit::Quit),
        _ => {}
    }
    vec![]
}

/// Longest text in a field of the network store form.
const MAX_FIELD: usize = 128;

fn add_store(app: &mut App, action: Action) -> Vec<Effect> {
    let f = &mut app.net;
    if f.connecting.is_some() {
        // One attempt at a time; its answer comes as `StoreConnected`.
        return vec![];
    }
    let n = f.fields();
    match action {
        Action::Up => f.field = (f.field + n - 1) % n,
        Action::Down => f.field = (f.field + 1) % n,
        Action::Left if f.field == 0 => f.kind = (f.kind + NET_KINDS.len() - 1) % NET_KINDS.len(),
        Action::Right | Action::Input(' ') if f.field == 0 => {
            f.kind = (f.kind + 1) % NET_KINDS.len()
        }
        Action::Input(c) => {
            let text = match f.field {
                1 => &mut f.host,
                2 => &mut f.path,
                3 => &mut f.user,
                4 => &mut f.password.0,
                _ => return vec![],
            };
            if text.chars().count() < MAX_FIELD {
                text.push(c);
            }
            f.error = None;
        }
        Action::Erase => {
            match f.field {
                1 => f.host.pop(),
                2 => f.path.pop(),
                3 => f.user.pop(),
                4 => f.password.0.pop(),
                _ => None,
            };
            f.error = None;
        }
        Action::Back => {
            f.password = Default::default();
            app.screen = Screen::Home;
        }
        Action::Select if f.field + 1 < n => f.field += 1,
        Action::Select => return connect(app),
        _ => {}
    }
    vec![]
}

/// Checks the form and asks the runtime to connect; the password leaves the App here.
fn connect(app: &mut App) -> Vec<Effect> {
    let f = &mut app.net;
    let problem = if f.host.trim().is_empty() {
        Some((1, "type the server's name or IP address".to_string()))
    } else if f.path.trim().trim_matches('/').is_empty() && f.kind < 2 {
        Some((
            2,
            format!(
                "type the {}",
                if f.is_smb() {
                    "share name"
                } else {
                    "export path"
                }
            ),
        ))
    } else if f.host.contains(['/', '@', ' ']) {
        Some((
            1,
            "the server is a name or an address, without '/', '@' or spaces".into(),
        ))
    } else {
        None
    };
    if let Some((field, why)) = problem {
        f.field = field;
        f.error = Some(why);
        return vec![];
    }
    let location = f.location();
    if let Err(e) = ops::locations::StoreLocation::parse(&location) {
        f.error = Some(e.to_string());
        return vec![];
    }
    let password = std::mem::take(&mut f.password);
    f.connecting = Some(location.clone());
    f.error = None;
    log(app, format!("connecting to {location}"));
    vec![Effect::ConnectStore { location, password }]
}

/// A store named on the command line: connected at once, or the form asks for the
/// password of an SMB user when none was given.
fn connect_location(app: &mut App, location: &str, password: Option<Secret>) -> Vec<Effect> {
    let loc = match ops::locations::StoreLocation::parse(location) {
        Ok(l) => l,
        Err(e) => {
            log(app, e.to_string());
            app.status = Some(e.to_string());
            return vec![];
        }
    };
    match password {
        None if loc.user().is_some() => {
            app.net = NetForm::from_location(&loc);
            app.net.field = 4;
            app.net.error = Some(format!(
                "type the password for {}@{} and press Enter",
                loc.user().unwrap_or_default(),
                app.net.host
            ));
            app.screen = Screen::AddStore;
            vec![]
        }
        password => {
            let location = loc.to_string();
            log(app, format!("connecting to {location}"));
            vec![Effect::ConnectStore {
                location,
                password: password.unwrap_or_default(),
            }]
        }
    }
}

fn connected(app: &mut App, location: String, r: Result<StoreRow, String>) {
    let from_form = app.net.connecting.as_deref() == Some(location.as_str());
    if from_form {
        app.net.connecting = None;
    }
    match r {
        Ok(row) => {
            let what = row.status();
            log(app, format!("connected {}: {what}", row.name()));
            app.status = Some(format!("connected to {}: {what}", row.name()));
            // The store and its images are on the home screen's store pane.
            if let Some(i) = app.stores.iter().position(|s| s.path == row.path) {
                app.stores[i] = row.clone();
            } else {
                app.stores.push(row.clone());
            }
            let mut line = 0;
            for s in &app.stores {
                if s.path == row.path {
                    break;
                }
                line += 1 + s.images().len();
            }
            if from_form {
                app.store_sel = line;
                app.focus = HomeFocus::Stores;
                app.net = Default::default();
                app.screen = Screen::Home;
            }
        }
        Err(e) => {
            log(app, format!("connecting to {location} failed: {e}"));
            if from_form {
                app.net.error = Some(e);
            } else {
                app.status = Some(format!("store {location} not connected: {e}"));
            }
        }
    }
}

fn refresh(app: &mut App, disks: Vec<DiskRow>, stores: Vec<StoreRow>) -> Vec<Effect> {
    let old: Vec<PathBuf> = app.disks.iter().map(|d| d.node.clone()).collect();
    let new: Vec<PathBuf> = disks.iter().map(|d| d.node.clone()).collect();
    for n in new.iter().filter(|n| !old.contains(n)) {
        if !old.is_empty() {
            log(app, format!("disk appeared: {}", n.display()));
        }
    }
    for n in old.iter().filter(|n| !new.contains(n)) {
        log(app, format!("disk removed: {}", n.display()));
    }
    let changed = app.disks != disks;
    app.disks = disks;
    app.stores = stores;
    let clamp = |sel: &mut usize, n: usize| *sel = (*sel).min(n.saturating_sub(1));
    clamp(&mut app.disk_sel, app.disks.len());
    let lines = store_lines(app);
    clamp(&mut app.store_sel, lines);
    clamp(&mut app.capture.source_sel, app.disks.len());
    clamp(&mut app.restore.target_sel, app.disks.len());
    clamp(&mut app.verify.target_sel, app.disks.len());
    if changed && app.screen == Screen::RestoreTarget {
        return vec![check_targets(app)];
    }
    vec![]
}

fn check_targets(app: &App) -> Effect {
    Effect::CheckTargets {
        store: app.restore.store.clone().unwrap_or_default(),
        image: app
            .restore
            .image
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default(),
        nodes: app.disks.iter().map(|d| d.node.clone()).collect(),
    }
}

/// Why the typed name cannot be used, if it cannot.
pub fn name_problem(app: &App) -> Option<String> {
    let name = &app.capture.name;
    if let Err(reason) = imaging::format::validate_name(name) {
        return Some(format!("this name cannot be used: {reason}"));
    }
    let taken = app
        .capture
        .store
        .as_ref()
        .map(|s| s.images().iter().any(|i| i.name.eq_ignore_ascii_case(name)))
        .unwrap_or(false);
    taken.then(|| "the store already has an image of this name (names ignore case)".into())
}

/// Whether the capture can fit the store, and the figures the summary shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFit {
    /// Bytes the capture reads (tables, boot areas, used blocks): at most this much
    /// goes into the store. The disk's size when the plan failed.
    pub read: u64,
    /// Why the plan failed (the disk's size is the bound then).
    pub unplanned: Option<String>,
    /// `read` at the compression of the images already in the store.
    pub estimate: Option<u64>,
    pub free: Option<u64>,
    pub verdict: Fit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// The disk is still being measured: Enter waits.
    Measuring,
    Fits,
    /// May not fit; the capture may start (it stops cleanly when the store fills).
    Warn(String),
    /// Cannot fit: refused before anything is read.
    Refused(String),
}

/// The fit rule (docs/ARCHITECTURE.md "Text UI"): the capture stores at most the bytes
/// it reads, less after compression and deduplication. Free space below that is
/// refused, unless the store already holds an image of the same disk (same serial):
/// then unchanged chunks are not stored again and it is only a warning. Nothing is
/// refused when the free space is unknown.
pub fn capture_fit(app: &App) -> CaptureFit {
    let c = &app.capture;
    let disk_size = c.source.as_ref().map(|d| d.size).unwrap_or(0);
    let (read, unplanned) = match &c.preview {
        Some(Ok(p)) => (p.read_bytes, None),
        Some(Err(e)) => (disk_size, Some(e.clone())),
        None => (disk_size, None),
    };
    let images = c.store.as_ref().map(|s| s.images()).unwrap_or_default();
    let (used, stored) = images
        .iter()
        .filter(|i| i.error.is_none())
        .fold((0u128, 0u128), |(u, s), i| {
            (u + u128::from(i.used_bytes), s + u128::from(i.stored_bytes))
        });
    let estimate = (used > 0)
        .then(|| u64::try_from(u128::from(read) * stored.min(used) / used).unwrap_or(read));
    let free = c.store.as_ref().and_then(|s| s.free_bytes);
    let store_path = c.store.as_ref().map(|s| s.name()).unwrap_or_default();
    let same_disk = c
        .source
        .as_ref()
        .and_then(|d| d.serial.as_deref())
        .is_some_and(|serial| {
            images
                .iter()
                .any(|i| i.source_serial.as_deref() == Some(serial))
        });
    let verdict = match free {
        // A store needs room for at least one pack header, a chunk and a manifest.
        Some(f) if f < 2 * u64::from(imaging::DEFAULT_CHUNK_SIZE) => Fit::Refused(format!(
            "the store {store_path} has only {} free: free space on it or choose another store",
            human_size(f)
        )),
        _ if c.preview.is_none() => Fit::Measuring,
        Some(f) if f < read && same_disk => Fit::Warn(format!(
            "The store has {} free for up to {} of data. It already holds an image of this \
             disk, whose unchanged data is not stored again, so it probably fits; if the \
             store fills, the capture stops and removes its partial data.",
            human_size(f),
            human_size(read)
        )),
        Some(f) if f < read => Fit::Refused(format!(
            "the disk has {} of data to read but the store {store_path} has only {} free; \
             compression often saves a third or more, but that cannot be counted on: free \
             space on the store or choose another store",
            human_size(read),
            human_size(f)
        )),
        _ => Fit::Fits,
    };
    CaptureFit {
        read,
        unplanned,
        estimate,
        free,
        verdict,
    }
}

fn start_capture(app: &mut App) -> Vec<Effect> {
    match capture_fit(app).verdict {
        Fit::Refused(r) => {
            app.status = Some(format!("cannot capture: {r}"));
            return vec![];
        }
        Fit::Measuring => {
            app.status = Some("still measuring what the capture reads; a moment".into());
            return vec![];
        }
        Fit::Fits | Fit::Warn(_) => {}
    }
    let (Some(src), Some(store)) = (&app.capture.source, &app.capture.store) else {
        return vec![];
    };
    let req = ops::CaptureRequest {
        source: src.node.clone(),
        store: store.path.clone(),
        name: app.capture.name.clone(),
        description: app.capture.description.clone(),
        level: 3,
        chunk_size: imaging::DEFAULT_CHUNK_SIZE,
        force: false,
        threads: 0,
    };
    let title = format!(
        "Capturing {} into {} as \"{}\"",
        src.node.display(),
        store.name(),
        req.name
    );
    begin_job(app, JobKind::Capture, title);
    vec![Effect::StartJob(JobSpec::Capture(req))]
}

/// Numbers of the chosen image's partitions.
pub fn image_partitions(app: &App) -> Vec<u32> {
    app.restore
        .image
        .as_ref()
        .map(|i| i.partitions.iter().map(|p| p.number).collect())
        .unwrap_or_default()
}

/// Asks `ops::plan_restore` (which writes nothing) for the confirmation's content.
fn plan(app: &mut App, mode: RestoreMode) -> Vec<Effect> {
    app.restore.mode = mode;
    app.status = Some("checking the target...".into());
    vec![Effect::PlanRestore(restore_request(app))]
}

fn restore_request(app: &App) -> ops::RestoreRequest {
    let (partition, grow_last) = match app.restore.mode {
        RestoreMode::WholeDisk => (None, false),
        RestoreMode::Partition(n) => (Some(n), false),
        RestoreMode::GrowLast => (None, true),
    };
    ops::RestoreRequest {
        partition,
        grow_last,
        store: app.restore.store.clone().unwrap_or_default(),
        name: app
            .restore
            .image
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default(),
        target: app.restore.target.clone().unwrap_or_default(),
        // The typed confirmation is what allows overwriting a disk that carries data;
        // every other interlock still applies.
        force: true,
        ..Default::default()
    }
}

fn planned(app: &mut App, plan: Result<ConfirmView, String>) -> Vec<Effect> {
    if !matches!(
        app.screen,
        Screen::RestoreOptions | Screen::RestorePartition
    ) {
        return vec![];
    }
    app.status = None;
    match plan {
        Ok(mut view) => {
            // Prefer the partitions as discovery names them (fs, label, size); a
            // one-partition restore destroys that partition only.
            if let Some(d) = app.disks.iter().find(|d| d.node == view.target) {
                let parts: Vec<_> = match app.restore.mode {
                    RestoreMode::Partition(n) => d
                        .partitions
                        .iter()
                        .filter(|p| partition_number(&p.name) == Some(n))
                        .collect(),
                    _ => d.partitions.iter().collect(),
                };
                if !parts.is_empty() {
                    view.destroyed = parts.iter().map(|p| p.describe()).collect();
                } else if let RestoreMode::Partition(n) = app.restore.mode {
                    view.destroyed = vec![format!("partition {n}")];
                }
            }
            app.restore.confirm = Some(view);
            app.restore.typed.clear();
            app.restore.mismatch = false;
            app.screen = Screen::RestoreConfirm;
        }
        Err(msg) => {
            log(app, format!("restore refused: {msg}"));
            app.popup = Some(Popup::Message {
                title: "Restore refused: nothing was written".into(),
                lines: vec![msg],
            });
        }
    }
    vec![]
}

/// The number at the end of a partition's name (`sda2`, `nvme0n1p3`, `#3`).
fn partition_number(name: &str) -> Option<u32> {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let num = &name[stem.len()..];
    // `nvme0n1` alone is a disk: a stem with digits needs the `p` separator.
    let separated = stem.ends_with(['p', '#'])
        || (!stem.is_empty() && !stem.contains(|c: char| c.is_ascii_digit()));
    separated.then(|| num.parse().ok()).flatten()
}

/// True when the typed text is the word the confirmation asks for.
pub fn confirmation_matches(view: &ConfirmView, typed: &str) -> bool {
    !view.word.is_empty() && typed.trim().eq_ignore_ascii_case(&view.word)
}

fn confirm_key(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Input(c) => {
            if app.restore.typed.chars().count() < 40 {
                app.restore.typed.push(c);
            }
            app.restore.mismatch = false;
        }
        Action::Erase => {
            app.restore.typed.pop();
            app.restore.mismatch = false;
        }
        Action::Back => {
            app.restore.typed.clear();
            app.restore.confirm = None;
            app.screen = match app.restore.mode {
                RestoreMode::Partition(_) => Screen::RestorePartition,
                _ => Screen::RestoreOptions,
            };
        }
        Action::Select => {
            let Some(view) = app.restore.confirm.clone() else {
                return vec![];
            };
            if !confirmation_matches(&view, &app.restore.typed) {
                app.restore.mismatch = true;
                app.status = Some(format!(
                    "\"{}\" is not \"{}\": nothing was written",
                    app.restore.typed, view.word
                ));
                return vec![];
            }
            let req = restore_request(app);
            let title = match req.partition {
                Some(n) => format!(
                    "Restoring partition {n} of \"{}\" onto {}",
                    req.name,
                    req.target.display()
                ),
                None => format!("Restoring \"{}\" onto {}", req.name, req.target.display()),
            };
            begin_job(app, JobKind::Restore, title);
            return vec![Effect::StartJob(JobSpec::Restore {
                req,
                confirmed: view,
            })];
        }
        _ => {}
    }
    vec![]
}

fn start_verify(app: &mut App, against: Option<PathBuf>) -> Vec<Effect> {
    let req = ops::VerifyRequest {
        store: app.verify.store.clone().unwrap_or_default(),
        name: app.verify.image.clone().unwrap_or_default(),
        against,
        threads: 0,
    };
    let title = match &req.against {
        None => format!("Verifying image \"{}\"", req.name),
        Some(d) => format!("Comparing {} with image \"{}\"", d.display(), req.name),
    };
    begin_job(app, JobKind::Verify, title);
    vec![Effect::StartJob(JobSpec::Verify(req))]
}

pub(crate) fn begin_job(app: &mut App, kind: JobKind, title: String) {
    log(app, format!("{title}: started"));
    app.job = JobView {
        kind: Some(kind),
        title,
        phase: "starting".into(),
        ..Default::default()
    };
    app.result = None;
    app.screen = Screen::Progress;
}

fn job_msg(app: &mut App, msg: JobMsg) {
    match msg {
        JobMsg::Event { at_ms, event } => {
            app.job.elapsed_ms = app.job.elapsed_ms.max(at_ms);
            match event {
                imaging::Event::Phase(p) => {
                    app.job.phase = p.to_string();
                    log(app, format!("phase: {p}"));
                }
                imaging::Event::Progress(p) => {
                    app.job.progress = p;
                    let s = &mut app.job.samples;
                    s.push_back((at_ms, p.done_bytes));
                    while s.len() > 2 && s.front().is_some_and(|(t, _)| at_ms - t > RATE_WINDOW_MS)
                    {
                        s.pop_front();
                    }
                }
                imaging::Event::Warning(w) => {
                    log(app, format!("warning: {w}"));
                    app.job.warnings.push(w);
                }
            }
        }
        JobMsg::Done { at_ms, mut outcome } => {
            let Some(kind) = app.job.kind else { return };
            app.job.elapsed_ms = app.job.elapsed_ms.max(at_ms);
            app.job.finished = true;
            if let (Ok(s), JobKind::Capture, Some(store)) = (&mut outcome, kind, &app.capture.store)
            {
                // The worker names the directory it wrote; a person knows a share by its
                // address (smb://fs1/images), not by where Imprint mounted it.
                s.headline = s
                    .headline
                    .replace(&store.path.display().to_string(), &store.name());
            }
            match &outcome {
                Ok(s) => log(app, format!("{}: {}", app.job.title, s.headline)),
                Err(f) => log(
                    app,
                    format!("{}: FAILED ({}): {}", app.job.title, f.kind, f.message),
                ),
            }
            let verify_offer = match (&outcome, kind) {
                (Ok(_), JobKind::Restore) => Some((
                    app.restore.store.clone().unwrap_or_default(),
                    app.restore
                        .image
                        .as_ref()
                        .map(|i| i.name.clone())
                        .unwrap_or_default(),
                    app.restore.target.clone().unwrap_or_default(),
                )),
                _ => None,
            };
            app.result = Some(ResultView {
                kind,
                title: app.job.title.clone(),
                outcome,
                warnings: app.job.warnings.clone(),
                verify_offer,
            });
            if app.popup == Some(Popup::ConfirmCancel) {
                app.popup = None;
            }
            app.screen = Screen::Result;
        }
    }
}

fn answer_popup(app: &mut App, popup: Popup, action: Action) -> Vec<Effect> {
    let yes = match action {
        Action::Yes => true,
        Action::No => false,
        _ => return vec![],
    };
    app.popup = None;
    match popup {
        Popup::ConfirmCancel if yes && app.job_running() => {
            app.job.cancel_requested = true;
            log(
                app,
                "cancel requested: stopping at the next chunk boundary".into(),
            );
            vec![Effect::CancelJob]
        }
        Popup::ConfirmReboot if yes => {
            app.exit = Some(Exit::Reboot);
            vec![]
        }
        Popup::ConfirmPowerOff if yes => {
            app.exit = Some(Exit::PowerOff);
            vec![]
        }
        _ => vec![],
    }
}
