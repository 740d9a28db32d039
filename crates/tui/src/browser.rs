//! The image browser (issue 9): pick a store, an image and a partition, walk its
//! directories read-only, mark files and folders, copy them into a directory or onto a
//! disk's filesystem. The state is plain data in [`App::browser`]; this module's
//! [`update`] is called by the one `update` for the browser's screens and returns
//! [`Effect`]s; [`render`] draws them. Mounting, listing and copying happen in the
//! runtime ([`crate::browser_io`]): the image is mounted read-only by `browse`, never
//! written.

use crate::action::{Action, Effect, JobSpec};
use crate::app::{App, JobKind, Popup, Screen};
use crate::model::ImageRow;
use crate::ui::{block, cut, list};
use crate::update::{pick_image, pick_store};
use disks::usage::human_size;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Sockets, fifos, device nodes: shown, never copied.
    Other,
}

/// One line of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, seconds since 1970 (UTC).
    pub mtime: Option<i64>,
}

/// Where marked files go. The copy lands in a folder named after the image and
/// partition inside it ([`copy_folder`]), never over existing files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A directory typed by the person.
    Directory(PathBuf),
    /// A partition of a disk: its mountpoint, or mounted read-write for the copy and
    /// unmounted afterwards.
    Partition {
        node: PathBuf,
        /// The whole disk holding it (never probed for stores while a copy writes it).
        disk: PathBuf,
        /// `sda1 ext4 "data" 500.1 GB`.
        line: String,
        fs: String,
        mounted: Option<PathBuf>,
    },
}

impl Dest {
    /// The line the destination list shows.
    pub fn describe(&self) -> String {
        match self {
            Dest::Directory(p) => format!("the directory {}", p.display()),
            Dest::Partition {
                line,
                mounted: Some(m),
                ..
            } => format!("{line}, mounted at {}", m.display()),
            Dest::Partition { line, .. } => {
                format!("{line} (mounted for the copy, unmounted after)")
            }
        }
    }
}

/// A copy for the worker thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    /// Where the image's partition is mounted read-only.
    pub root: PathBuf,
    /// Paths inside the partition, from `/`.
    pub items: Vec<String>,
    pub dest: Dest,
    /// The folder created inside the destination.
    pub folder: String,
}

/// The browser's part of the UI state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserState {
    pub store_sel: usize,
    pub image_sel: usize,
    pub part_sel: usize,
    pub store: Option<PathBuf>,
    pub image: Option<ImageRow>,
    pub partition: Option<u32>,
    /// Where the partition is mounted while it is browsed.
    pub root: Option<PathBuf>,
    /// The directory shown, inside the partition, from `/`.
    pub dir: String,
    pub entries: Vec<Entry>,
    /// Why the directory could not be read.
    pub listing_error: Option<String>,
    pub entry_sel: usize,
    /// Marked paths inside the partition (kept while walking directories).
    pub marked: BTreeSet<String>,
    /// Destinations found by the runtime; `None` while it looks.
    pub dests: Option<Vec<Dest>>,
    pub dest_sel: usize,
    /// A directory typed on the path screen.
    pub typed: String,
    /// The folder just left by going up: the cursor lands on it in the new listing.
    pub reselect: Option<String>,
}

/// `/a/b` + `c` → `/a/b/c`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of `/a/b` (`/a`), `/` for `/`.
pub fn parent(dir: &str) -> String {
    match dir.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((p, _)) => p.into(),
    }
}

/// The folder a copy creates in its destination: `IMAGE-partN`.
pub fn copy_folder(image: &str, partition: u32) -> String {
    format!("{image}-part{partition}")
}

impl BrowserState {
    /// Rows of the file list: `..` first below the root, then the entries.
    fn has_up(&self) -> bool {
        self.dir != "/"
    }

    fn rows(&self) -> usize {
        self.entries.len() + usize::from(self.has_up())
    }

    /// The entry under the cursor (`None` on `..`).
    pub fn selected(&self) -> Option<&Entry> {
        let i = self.entry_sel.checked_sub(usize::from(self.has_up()))?;
        self.entries.get(i)
    }

    /// What a copy takes: the marked paths, else the entry under the cursor.
    pub fn to_copy(&self) -> Vec<String> {
        if !self.marked.is_empty() {
            return self.marked.iter().cloned().collect();
        }
        self.selected()
            .filter(|e| e.kind != EntryKind::Other)
            .map(|e| vec![join(&self.dir, &e.name)])
            .unwrap_or_default()
    }
}

fn opened_title(app: &App) -> String {
    let b = &app.browser;
    format!(
        "{} partition {}",
        b.image.as_ref().map(|i| i.name.as_str()).unwrap_or("?"),
        b.partition.unwrap_or(0)
    )
}

/// Enters the browser from the home screen.
pub fn start(app: &mut App) -> Vec<Effect> {
    if app.stores_with_images().is_empty() {
        app.status = Some(
            "no store holds an image yet: capture one first, or start with --store PATH".into(),
        );
        return vec![];
    }
    // A partition still open from before (a copy's result screen left with Home) is
    // closed here, so only one image is ever mounted.
    let close = app.browser.root.is_some();
    app.browser = BrowserState::default();
    app.screen = Screen::BrowseStore;
    if close {
        vec![Effect::BrowseClose]
    } else {
        vec![]
    }
}

/// Leaves the file list: the partition is unmounted.
fn close(app: &mut App, to: Screen) -> Vec<Effect> {
    let b = &mut app.browser;
    b.root = None;
    b.entries.clear();
    b.marked.clear();
    b.dests = None;
    app.screen = to;
    vec![Effect::BrowseClose]
}

fn list_effect(app: &App) -> Vec<Effect> {
    match &app.browser.root {
        Some(root) => vec![Effect::BrowseList {
            root: root.clone(),
            dir: app.browser.dir.clone(),
        }],
        None => vec![],
    }
}

/// The browser's screens; `update` calls it for them.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    match app.screen {
        Screen::BrowseStore => {
            match action {
                Action::Back | Action::Quit => app.screen = Screen::Home,
                a => {
                    if let Some(s) = pick_store(app, &a, |app| &mut app.browser.store_sel) {
                        app.browser.store = Some(s);
                        app.browser.image_sel = 0;
                        app.screen = Screen::BrowseImage;
                    }
                }
            }
            vec![]
        }
        Screen::BrowseImage => {
            match action {
                Action::Back => app.screen = Screen::BrowseStore,
                Action::Quit => app.screen = Screen::Home,
                a => {
                    let store = app.browser.store.clone().unwrap_or_default();
                    match pick_image(app, &a, &store, |app| &mut app.browser.image_sel) {
                        Some(img) if img.partitions.is_empty() => {
                            app.status = Some(
                                "this image has no partitions recorded: nothing to browse".into(),
                            );
                        }
                        Some(img) => {
                            app.browser.image = Some(img);
                            app.browser.part_sel = 0;
                            app.screen = Screen::BrowsePartition;
                        }
                        None => {}
                    }
                }
            }
            vec![]
        }
        Screen::BrowsePartition => {
            let parts: Vec<u32> = app
                .browser
                .image
                .as_ref()
                .map(|i| i.partitions.iter().map(|p| p.number).collect())
                .unwrap_or_default();
            match action {
                Action::Select => match parts.get(app.browser.part_sel) {
                    Some(&n) => {
                        app.browser.partition = Some(n);
                        vec![Effect::BrowseOpen {
                            store: app.browser.store.clone().unwrap_or_default(),
                            image: app
                                .browser
                                .image
                                .as_ref()
                                .map(|i| i.name.clone())
                                .unwrap_or_default(),
                            partition: n,
                        }]
                    }
                    None => vec![],
                },
                Action::Back => {
                    app.screen = Screen::BrowseImage;
                    vec![]
                }
                Action::Quit => {
                    app.screen = Screen::Home;
                    vec![]
                }
                a => {
                    crate::update::move_sel(&mut app.browser.part_sel, parts.len(), &a);
                    vec![]
                }
            }
        }
        Screen::BrowseFiles => files_key(app, action),
        Screen::BrowseDest => {
            let n = app.browser.dests.as_ref().map_or(0, |d| d.len()) + 1;
            match action {
                Action::Select if app.browser.dest_sel == 0 => {
                    app.screen = Screen::BrowseDestPath;
                    vec![]
                }
                Action::Select => {
                    let dest = app
                        .browser
                        .dests
                        .as_ref()
                        .and_then(|d| d.get(app.browser.dest_sel - 1))
                        .cloned();
                    match dest {
                        Some(d) => start_copy(app, d),
                        None => vec![],
                    }
                }
                Action::Back | Action::Quit => {
                    app.screen = Screen::BrowseFiles;
                    vec![]
                }
                a => {
                    crate::update::move_sel(&mut app.browser.dest_sel, n, &a);
                    vec![]
                }
            }
        }
        Screen::BrowseDestPath => match action {
            Action::Input(c) if app.browser.typed.chars().count() < 200 => {
                app.browser.typed.push(c);
                vec![]
            }
            Action::Erase => {
                app.browser.typed.pop();
                vec![]
            }
            Action::Select => {
                let t = app.browser.typed.trim().to_string();
                if !t.starts_with('/') {
                    app.status = Some("type a full path, starting with /".into());
                    return vec![];
                }
                start_copy(app, Dest::Directory(PathBuf::from(t)))
            }
            Action::Back => {
                app.screen = Screen::BrowseDest;
                vec![]
            }
            _ => vec![],
        },
        _ => vec![],
    }
}

fn files_key(app: &mut App, action: Action) -> Vec<Effect> {
    let b = &mut app.browser;
    match action {
        Action::Select => {
            if b.has_up() && b.entry_sel == 0 {
                return up(app);
            }
            match b.selected().cloned() {
                Some(e) if e.kind == EntryKind::Dir => {
                    b.dir = join(&b.dir, &e.name);
                    b.entry_sel = 0;
                    list_effect(app)
                }
                Some(_) => {
                    app.status = Some("Space marks it, c copies it".into());
                    vec![]
                }
                None => vec![],
            }
        }
        Action::Back if b.has_up() => up(app),
        Action::Back => close(app, Screen::BrowsePartition),
        Action::Quit => close(app, Screen::Home),
        Action::Mark => {
            match b.selected().cloned() {
                Some(e) if e.kind == EntryKind::Other => {
                    app.status = Some(format!(
                        "{} is not a file or folder: it cannot be copied",
                        e.name
                    ));
                }
                Some(e) => {
                    let p = join(&b.dir, &e.name);
                    if !b.marked.remove(&p) {
                        b.marked.insert(p);
                    }
                    let n = b.rows();
                    crate::update::move_sel(&mut b.entry_sel, n, &Action::Down);
                }
                None => {}
            }
            vec![]
        }
        Action::CopyMarked => {
            if b.to_copy().is_empty() {
                app.status = Some("nothing to copy: Space marks files and folders".into());
                return vec![];
            }
            b.dests = None;
            b.dest_sel = 0;
            app.screen = Screen::BrowseDest;
            vec![Effect::BrowseDestinations]
        }
        a => {
            let n = b.rows();
            crate::update::move_sel(&mut b.entry_sel, n, &a);
            vec![]
        }
    }
}

fn up(app: &mut App) -> Vec<Effect> {
    let b = &mut app.browser;
    b.reselect = b.dir.rsplit('/').next().map(str::to_string);
    b.dir = parent(&b.dir);
    b.entry_sel = 0;
    b.entries.clear();
    list_effect(app)
}

fn start_copy(app: &mut App, dest: Dest) -> Vec<Effect> {
    let b = &app.browser;
    let (Some(root), Some(img), Some(n)) = (&b.root, &b.image, b.partition) else {
        return vec![];
    };
    let req = CopyRequest {
        root: root.clone(),
        items: b.to_copy(),
        dest,
        folder: copy_folder(&img.name, n),
    };
    let title = format!(
        "Copying {} from \"{}\" partition {n} to {}",
        match req.items.as_slice() {
            [one] => one.clone(),
            many => format!("{} items", many.len()),
        },
        img.name,
        req.dest.describe()
    );
    crate::update::begin_job(app, JobKind::Copy, title);
    vec![Effect::StartJob(JobSpec::Copy(req))]
}

/// News from the runtime for the browser.
pub fn opened(app: &mut App, r: Result<PathBuf, String>) {
    match r {
        Ok(root) => {
            let b = &mut app.browser;
            b.root = Some(root);
            b.dir = "/".into();
            b.entries.clear();
            b.entry_sel = 0;
            b.marked.clear();
            app.screen = Screen::BrowseFiles;
            let t = opened_title(app);
            crate::update::log(app, format!("browsing {t} (mounted read-only)"));
        }
        Err(e) => {
            crate::update::log(app, format!("browse: {e}"));
            app.popup = Some(Popup::Message {
                title: "Cannot open this partition".into(),
                lines: crate::ui::wrap(&e, 60),
            });
        }
    }
}

pub fn listed(app: &mut App, dir: String, r: Result<Vec<Entry>, String>) {
    let b = &mut app.browser;
    if b.root.is_none() || dir != b.dir {
        return; // an answer for a directory already left
    }
    let from = b.reselect.take();
    match r {
        Ok(mut entries) => {
            entries.sort_by(|x, y| {
                (x.kind != EntryKind::Dir, x.name.to_lowercase())
                    .cmp(&(y.kind != EntryKind::Dir, y.name.to_lowercase()))
            });
            b.entries = entries;
            b.listing_error = None;
        }
        Err(e) => {
            b.entries.clear();
            b.listing_error = Some(e);
        }
    }
    if let Some(i) = from.and_then(|f| b.entries.iter().position(|e| e.name == f)) {
        b.entry_sel = i + usize::from(b.has_up());
    }
    b.entry_sel = b.entry_sel.min(b.rows().saturating_sub(1));
}

pub fn destinations(app: &mut App, dests: Vec<Dest>) {
    if app.screen == Screen::BrowseDest {
        app.browser.dests = Some(dests);
    }
}

// ---- drawing ------------------------------------------------------------------------

/// The title bar's text for the browser's screens.
pub fn title(s: Screen) -> &'static str {
    match s {
        Screen::BrowseStore => "Browse 1/4: store",
        Screen::BrowseImage => "Browse 2/4: image",
        Screen::BrowsePartition => "Browse 3/4: partition",
        Screen::BrowseFiles => "Browse 4/4: files (read-only)",
        Screen::BrowseDest | Screen::BrowseDestPath => "Copy: destination",
        _ => "",
    }
}

/// The key line for the browser's screens.
pub fn help(s: Screen) -> &'static str {
    match s {
        Screen::BrowseFiles => "Enter open  Space mark  c copy  Esc/Backspace up  q close",
        Screen::BrowseDestPath => "type a path   Backspace erase   Enter copy   Esc back",
        Screen::BrowseDest => "Up/Down choose   Enter copy there   Esc back",
        _ => "Up/Down choose   Enter next   Esc back",
    }
}

/// `2024-05-01 10:22` (UTC).
fn date(secs: i64) -> String {
    let t = if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .take(16)
        .collect::<String>()
        .replace('T', " ")
}

fn entry_line(b: &BrowserState, e: &Entry) -> String {
    let mark = if b.marked.contains(&join(&b.dir, &e.name)) {
        "[x]"
    } else if e.kind == EntryKind::Other {
        "   "
    } else {
        "[ ]"
    };
    let (name, size) = match e.kind {
        EntryKind::Dir => (format!("{}/", e.name), "<dir>".to_string()),
        EntryKind::Symlink => (format!("{}@", e.name), "<link>".to_string()),
        EntryKind::Other => (e.name.clone(), "<other>".to_string()),
        EntryKind::File => (e.name.clone(), human_size(e.size)),
    };
    format!(
        "{mark} {:<44} {:>9}  {}",
        cut(&name, 44),
        size,
        e.mtime.map(date).unwrap_or_default()
    )
}

/// Draws the browser's screens.
pub fn render(app: &App, f: &mut Frame, body: Rect) {
    let b = &app.browser;
    match app.screen {
        Screen::BrowseStore => {
            let lines = app
                .stores_with_images()
                .iter()
                .map(|s| Line::raw(cut(&format!("{}: {}", s.path.display(), s.status()), 78)))
                .collect();
            list(
                f,
                body,
                "Which store holds the image?",
                lines,
                Some(b.store_sel),
            );
        }
        Screen::BrowseImage => crate::ui::image_list(
            app,
            f,
            body,
            &b.store.clone().unwrap_or_default(),
            b.image_sel,
        ),
        Screen::BrowsePartition => {
            let lines = b
                .image
                .as_ref()
                .map(|i| i.partitions.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|p| Line::raw(format!("  {}", cut(&p.line, 74))))
                .collect();
            list(
                f,
                body,
                "Which partition? (mounted read-only: nothing is written)",
                lines,
                Some(b.part_sel),
            );
        }
        Screen::BrowseFiles => files(app, f, body),
        Screen::BrowseDest => {
            let mut lines = vec![Line::raw("  A directory: type its path")];
            match &b.dests {
                None => lines.push(Line::raw("  (looking for disks to copy to...)")),
                Some(d) => lines.extend(
                    d.iter()
                        .map(|d| Line::raw(format!("  {}", cut(&d.describe(), 74)))),
                ),
            }
            let [top, bottom] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(body);
            list(f, top, &copy_title(b), lines, Some(b.dest_sel));
            f.render_widget(
                Paragraph::new(where_note(app)).block(block("Where the files go")),
                bottom,
            );
        }
        Screen::BrowseDestPath => {
            let lines = vec![
                Line::raw(format!("Directory: {}_", b.typed)),
                Line::raw(""),
                Line::raw(
                    "It is created when missing; an existing file there is never overwritten.",
                ),
            ];
            let [top, bottom] =
                Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(body);
            f.render_widget(Paragraph::new(lines).block(block(&copy_title(b))), top);
            f.render_widget(
                Paragraph::new(where_note(app)).block(block("Where the files go")),
                bottom,
            );
        }
        _ => {}
    }
}

fn copy_title(b: &BrowserState) -> String {
    let n = b.to_copy().len();
    format!("Copy {n} item{} to where?", if n == 1 { "" } else { "s" })
}

fn where_note(app: &App) -> Vec<Line<'static>> {
    let b = &app.browser;
    let folder = copy_folder(
        b.image.as_ref().map(|i| i.name.as_str()).unwrap_or("?"),
        b.partition.unwrap_or(0),
    );
    vec![
        Line::raw(cut(
            &format!("Into a new folder {folder}/ in the place you choose, keeping"),
            78,
        )),
        Line::raw("names, times and permissions. Nothing in the image is changed."),
    ]
}

fn files(app: &App, f: &mut Frame, body: Rect) {
    let b = &app.browser;
    let mut lines = Vec::new();
    if b.has_up() {
        lines.push(Line::raw("    ../"));
    }
    lines.extend(b.entries.iter().map(|e| Line::raw(entry_line(b, e))));
    if let Some(e) = &b.listing_error {
        lines.push(Line::raw(cut(
            &format!("  cannot read this folder: {e}"),
            76,
        )));
    } else if b.entries.is_empty() {
        lines.push(Line::raw("  (empty folder)"));
    }
    let marked = if b.marked.is_empty() {
        String::new()
    } else {
        format!("  [{} marked]", b.marked.len())
    };
    let title = cut(&format!("{}: {}{marked}", opened_title(app), b.dir), 74);
    list(f, body, &title, lines, Some(b.entry_sel));
}
