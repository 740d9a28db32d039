//! Carries out [`Effect`]s: runs jobs on a worker thread whose [`Sink`] sends events
//! over a channel, runs the interlocks and `ops::plan_restore` for the restore wizard,
//! polls disks and stores, loads keymaps. Results come back as [`Action`]s.

use crate::action::{Action, Effect, JobMsg, JobSpec};
use crate::app::{
    App, ConfirmView, JobFailure, JobKind, JobSuccess, NetState, Secret, TargetCheck,
};
use crate::browser::Dest;
use crate::browser_io;
use crate::diskstores::DiskStores;
use crate::model::{scan_store, DiskSource, StoreRow, StoreState};
use crate::update::update;
use disks::interlock::{check_write_target, CheckOptions, Protected};
use disks::usage::human_size;
use imaging::{Event, Sink};
use ops::locations::{open_location, MountedStore, StoreLocation};
use ops::OpsError;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Progress events sent at most this often (the engine reports every chunk).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The word typed to confirm a restore onto a disk without a usable serial.
pub const CONFIRM_WORD: &str = "ERASE";

/// A [`Sink`] on the worker thread: events go to the UI, cancel comes from it.
#[derive(Debug)]
pub struct ChannelSink {
    tx: Sender<JobMsg>,
    cancel: Arc<AtomicBool>,
    start: Instant,
    last_progress: Option<Instant>,
}

impl ChannelSink {
    fn at_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

impl Sink for ChannelSink {
    fn event(&mut self, event: Event) {
        if let Event::Progress(p) = &event {
            let now = Instant::now();
            let last = p.done_bytes >= p.total_bytes;
            if !last && self.last_progress.is_some_and(|t| now - t < PROGRESS_EVERY) {
                return;
            }
            self.last_progress = Some(now);
        }
        let at_ms = self.at_ms();
        // The UI may be gone (it panicked); the job still finishes or cancels cleanly.
        let _ = self.tx.send(JobMsg::Event { at_ms, event });
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct RunningJob {
    rx: Receiver<JobMsg>,
    cancel: Arc<AtomicBool>,
    start: Instant,
    handle: Option<JoinHandle<()>>,
}

/// Does what `update` asks.
pub struct Runtime {
    pub disks: Box<dyn DiskSource>,
    /// Store directories shown on the home screen.
    pub store_paths: Vec<PathBuf>,
    /// True when a real terminal is attached (the shell can run).
    pub interactive: bool,
    /// Set after the shell ran: the screen must be redrawn from scratch.
    pub needs_clear: bool,
    job: Option<RunningJob>,
    /// Network stores connected from the form or `--store URL`, with their mounts
    /// (unmounted when the runtime is dropped).
    net: Vec<NetStore>,
    /// The connection being made on a helper thread.
    connecting: Vec<(String, Receiver<Result<NetStore, String>>)>,
    stores: Option<Vec<crate::model::StoreRow>>,
    /// Stores found on other disks' partitions (`None`: not looked for).
    pub disk_stores: Option<DiskStores>,
    /// The disk a running restore writes, and the one the restore wizard planned on:
    /// never probed.
    job_target: Option<PathBuf>,
    planned_target: Option<PathBuf>,
    /// Lines for the log from the runtime's own work (stores found, unmounted).
    notes: Vec<String>,
    /// [`store_stamps`] when the stores were last read.
    stamps: Vec<Option<std::time::SystemTime>>,
    /// The partition the image browser has mounted (read-only); unmounted on drop.
    browsed: Option<browse::Mounted>,
    /// `imprint.net=` from PID 1 (`ops::net::from_env`): set in the boot environment,
    /// where the TUI brings the network up itself before it connects a network store.
    pub network: Option<ops::net::Net>,
    /// The bring-up running on a helper thread: its log lines and outcome.
    bringing_up: Option<Receiver<NetOutcome>>,
}

/// What a bring-up said, and the interfaces on the network or why none is.
type NetOutcome = (Vec<String>, Result<Vec<ops::net::Link>, String>);

/// `ops::net::ensure_up`, with its lines kept for the log.
fn bring_up(net: &ops::net::Net) -> NetOutcome {
    let mut lines = Vec::new();
    let r = ops::net::ensure_up(net, &mut |l| lines.push(l.to_string()));
    (lines, r)
}

/// Modification times of each store directory and its `images/` (a capture from
/// another console or process adds a manifest there): a cheap way to notice change.
fn store_stamps(paths: &[PathBuf]) -> Vec<Option<std::time::SystemTime>> {
    paths
        .iter()
        .flat_map(|p| [p.clone(), p.join("images")])
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("store_paths", &self.store_paths)
            .field("interactive", &self.interactive)
            .field("job", &self.job.is_some())
            .finish()
    }
}

impl Runtime {
    pub fn new(disks: Box<dyn DiskSource>, store_paths: Vec<PathBuf>) -> Runtime {
        Runtime {
            disks,
            store_paths,
            interactive: false,
            needs_clear: false,
            job: None,
            net: Vec::new(),
            connecting: Vec::new(),
            stores: None,
            disk_stores: None,
            job_target: None,
            planned_target: None,
            notes: Vec::new(),
            stamps: Vec::new(),
            browsed: None,
            network: None,
            bringing_up: None,
        }
    }

    /// True when a store directory changed since the stores were last read.
    pub fn stores_changed(&self) -> bool {
        self.stores.is_some() && store_stamps(&self.all_store_paths()) != self.stamps
    }

    /// The store directories: given ones, then those found on disks.
    fn all_store_paths(&self) -> Vec<PathBuf> {
        let mut v = self.store_paths.clone();
        if let Some(ds) = &self.disk_stores {
            v.extend(ds.mounted.iter().flat_map(|m| m.stores.iter().cloned()));
        }
        v
    }

    /// Disks never probed for stores: written by a job or chosen as restore target.
    fn busy(&self) -> Vec<PathBuf> {
        self.job_target
            .iter()
            .chain(self.planned_target.iter())
            .cloned()
            .collect()
    }

    /// The rows of the stores found on disks, named after their partitions.
    fn disk_store_rows(&self) -> Vec<StoreRow> {
        let Some(ds) = &self.disk_stores else {
            return vec![];
        };
        ds.mounted
            .iter()
            .flat_map(|m| {
                m.stores.iter().map(move |s| {
                    let inside = s
                        .strip_prefix(&m.mountpoint)
                        .ok()
                        .filter(|p| !p.as_os_str().is_empty())
                        .map(|p| format!(" /{}", p.display()))
                        .unwrap_or_default();
                    StoreRow {
                        label: Some(format!(
                            "{} ({}){inside}",
                            m.part.describe(),
                            m.part.disk.display()
                        )),
                        ..scan_store(s)
                    }
                })
            })
            .collect()
    }

    /// A fresh look at the disks, and at the stores when `stores` (reading every
    /// manifest and map is too slow to repeat every few seconds).
    pub fn snapshot(&mut self, stores: bool) -> Action {
        let disks = self.disks.disks();
        let busy = self.busy();
        let found = match &mut self.disk_stores {
            Some(ds) => ds.sync(&disks, &busy),
            None => vec![],
        };
        let disks_changed = !found.is_empty();
        self.notes.extend(found);
        if stores || disks_changed || self.stores.is_none() {
            self.stamps = store_stamps(&self.all_store_paths());
            let mut rows: Vec<StoreRow> = self.store_paths.iter().map(|p| scan_store(p)).collect();
            rows.extend(self.disk_store_rows());
            rows.extend(self.net.iter().map(NetStore::scan));
            self.stores = Some(rows);
        }
        Action::Refresh {
            disks,
            stores: self.stores.clone().unwrap_or_default(),
        }
    }

    /// Carries out one effect; returns the actions it produced at once.
    pub fn apply(&mut self, effect: Effect) -> Vec<Action> {
        match effect {
            Effect::CheckTargets {
                store,
                image,
                nodes,
            } => {
                self.planned_target = None;
                let mut checks = check_targets(&store, &image, &nodes);
                if let Some(ds) = &self.disk_stores {
                    for c in checks.iter_mut() {
                        if let Some(r) = ds.refusal(&c.node) {
                            c.refusal = Some(r);
                            c.note = None;
                        }
                    }
                }
                vec![Action::Checked(checks)]
            }
            Effect::PreviewCapture(source) => vec![Action::CapturePreviewed {
                preview: ops::preview_capture(&source).map_err(|e| e.to_string()),
                source,
            }],
            Effect::PlanRestore(req) => {
                self.planned_target = Some(req.target.clone());
                vec![Action::Planned(
                    ops::plan_restore(&req)
                        .map(|p| confirm_view(&p))
                        .map_err(|e| e.to_string()),
                )]
            }
            Effect::BringUpNetwork => {
                let Some(net) = self.network.clone() else {
                    return vec![];
                };
                if self.bringing_up.is_some() {
                    return vec![];
                }
                let (tx, rx) = mpsc::channel();
                match std::thread::Builder::new()
                    .name("imprint-net".into())
                    .spawn(move || {
                        let _ = tx.send(bring_up(&net));
                    }) {
                    Ok(_) => {
                        self.bringing_up = Some(rx);
                        vec![Action::Network(NetState::Starting)]
                    }
                    Err(e) => vec![Action::Network(NetState::Down(format!(
                        "cannot start a thread: {e}"
                    )))],
                }
            }
            Effect::ConnectStore { location, password } => {
                let (tx, rx) = mpsc::channel();
                let loc = location.clone();
                let net = self.network.clone();
                match std::thread::Builder::new()
                    .name("imprint-connect".into())
                    .spawn(move || {
                        let _ = tx.send(connect_store(&loc, &password, net.as_ref()));
                    }) {
                    Ok(_) => {
                        self.connecting.push((location, rx));
                        vec![]
                    }
                    Err(e) => vec![Action::StoreConnected {
                        location,
                        result: Err(format!("cannot start a thread: {e}")),
                    }],
                }
            }
            Effect::StartJob(spec) => {
                if self.job.as_ref().is_some_and(|j| j.handle.is_some()) {
                    return vec![Action::Job(JobMsg::Done {
                        at_ms: 0,
                        outcome: Err(JobFailure {
                            kind: "usage".into(),
                            exit_code: ops::exit::USAGE,
                            message: "another job is still running".into(),
                            advice: vec!["Wait for it to finish.".into()],
                        }),
                    })];
                }
                match &spec {
                    JobSpec::Restore { req, .. } => self.job_target = Some(req.target.clone()),
                    JobSpec::Capture(req) => {
                        let writable = match &mut self.disk_stores {
                            Some(ds) => ds.make_writable(&req.store),
                            None => Ok(()),
                        };
                        if let Err(message) = writable {
                            return vec![Action::Job(JobMsg::Done {
                                at_ms: 0,
                                outcome: Err(JobFailure {
                                    kind: "refused".into(),
                                    exit_code: ops::exit::REFUSED,
                                    message,
                                    advice: vec!["Nothing was written.".into()],
                                }),
                            })];
                        }
                    }
                    JobSpec::Copy(req) => {
                        // A disk mounted read-write for the copy is not probed meanwhile.
                        if let Dest::Partition {
                            disk,
                            mounted: None,
                            ..
                        } = &req.dest
                        {
                            self.job_target = Some(disk.clone());
                        }
                    }
                    JobSpec::Verify(_) => {}
                }
                self.job = Some(spawn(spec));
                vec![]
            }
            Effect::CancelJob => {
                if let Some(j) = &self.job {
                    j.cancel.store(true, Ordering::Relaxed);
                }
                vec![]
            }
            Effect::Shell => vec![Action::ShellReturned(self.shell())],
            Effect::SetKeyboard(code) => {
                let note = set_keyboard(&code);
                vec![Action::KeyboardApplied { layout: code, note }]
            }
            Effect::BrowseOpen {
                store,
                image,
                partition,
            } => {
                if let Err(e) = self.close_browsed() {
                    return vec![Action::BrowseOpened(Err(e))];
                }
                let r = browser_io::open(&store, &image, partition).map(|m| {
                    let root = m.mountpoint().to_path_buf();
                    self.browsed = Some(m);
                    root
                });
                vec![Action::BrowseOpened(r)]
            }
            Effect::BrowseList { root, dir } => {
                let entries = browser_io::list(&root, &dir);
                vec![Action::BrowseListed { dir, entries }]
            }
            Effect::BrowseClose => match self.close_browsed() {
                Ok(()) => vec![],
                Err(e) => vec![Action::BrowseCloseFailed(e)],
            },
            Effect::BrowseDestinations => {
                let boot = std::env::var_os(ops::BOOT_MEDIUM_ENV).map(PathBuf::from);
                vec![Action::BrowseDests(browser_io::destinations(
                    &self.disks.disks(),
                    boot.as_deref(),
                    &browser_io::writable_mount,
                ))]
            }
        }
    }

    /// The job's messages that arrived, without waiting, and a tick.
    pub fn poll(&mut self) -> Vec<Action> {
        let mut out: Vec<Action> = self.notes.drain(..).map(Action::Note).collect();
        out.extend(self.network_news());
        out.extend(self.connection(Duration::ZERO));
        out.extend(self.collect(Duration::ZERO));
        out
    }

    /// The outcome of the bring-up, once it came.
    fn network_news(&mut self) -> Vec<Action> {
        let Some(rx) = &self.bringing_up else {
            return vec![];
        };
        let (lines, r) = match rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return vec![],
            Err(mpsc::TryRecvError::Disconnected) => (
                vec![],
                Err("the network bring-up crashed (a bug in Imprint)".to_string()),
            ),
            Ok(o) => o,
        };
        self.bringing_up = None;
        let mut out: Vec<Action> = lines.into_iter().map(Action::Note).collect();
        out.push(Action::Network(match r {
            Ok(links) => NetState::Up(ops::net::describe(&links)),
            Err(why) => NetState::Down(why),
        }));
        out
    }

    /// Waits up to `timeout` for the job's next message, then drains the rest.
    pub fn wait(&mut self, timeout: Duration) -> Vec<Action> {
        let mut out: Vec<Action> = self.notes.drain(..).map(Action::Note).collect();
        out.extend(self.network_news());
        out.extend(self.connection(if self.job.is_some() {
            Duration::ZERO
        } else {
            timeout
        }));
        out.extend(self.collect(timeout));
        out
    }

    /// The answer of the connection being made, if it came.
    fn connection(&mut self, timeout: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.connecting.len() {
            let wait = if out.is_empty() {
                timeout
            } else {
                Duration::ZERO
            };
            let r = match self.connecting[i].1.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {
                    i += 1;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    Err("the connection attempt crashed (a bug in Imprint)".to_string())
                }
                Ok(r) => r,
            };
            let (location, _) = self.connecting.remove(i);
            let result = r.map(|n| {
                let row = n.row.clone();
                // A store connected twice keeps one mount: the newer one.
                self.net.retain(|o| o.row.label != n.row.label);
                self.net.push(n);
                if let Some(rows) = &mut self.stores {
                    rows.retain(|s| s.label != row.label);
                    rows.push(row.clone());
                }
                row
            });
            out.push(Action::StoreConnected { location, result });
        }
        out
    }

    fn collect(&mut self, timeout: Duration) -> Vec<Action> {
        let Some(job) = &mut self.job else {
            return vec![];
        };
        let mut out = Vec::new();
        let mut done = false;
        let mut first = true;
        loop {
            let msg = if first && !timeout.is_zero() {
                match job.rx.recv_timeout(timeout) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        done = true;
                        None
                    }
                }
            } else {
                match job.rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        done = true;
                        None
                    }
                }
            };
            first = false;
            match msg {
                Some(m) => {
                    done |= matches!(m, JobMsg::Done { .. });
                    out.push(Action::Job(m));
                }
                None => break,
            }
        }
        if !done {
            out.push(Action::Tick(job.start.elapsed().as_millis() as u64));
            return out;
        }
        self.job_target = None;
        if let Some(ds) = &mut self.disk_stores {
            out.extend(ds.make_read_only().into_iter().map(Action::Note));
        }
        let Some(job) = &mut self.job else {
            return out;
        };
        if let Some(h) = job.handle.take() {
            if h.join().is_err() {
                out.push(Action::Job(JobMsg::Done {
                    at_ms: job.start.elapsed().as_millis() as u64,
                    outcome: Err(JobFailure {
                        kind: "failed".into(),
                        exit_code: ops::exit::FAILED,
                        message: "the job's worker thread crashed (a bug in Imprint)".into(),
                        advice: vec![
                            "If it was a restore, do not boot the target: restore again.".into(),
                            "The log (Tools > Show log) has the last steps.".into(),
                        ],
                    }),
                }));
            }
        }
        out
    }

    /// Unmounts the partition the browser had open, if any. A copy still running from
    /// it keeps it: the job reads there.
    fn close_browsed(&mut self) -> Result<(), String> {
        if self.job.as_ref().is_some_and(|j| j.handle.is_some()) {
            return Ok(());
        }
        match self.browsed.as_mut().map(|m| m.unmount()) {
            Some(Err(e)) => Err(e.to_string()),
            _ => {
                self.browsed = None;
                Ok(())
            }
        }
    }

    /// Leaves the full-screen UI, runs `/bin/sh` on the console, comes back.
    fn shell(&mut self) -> Result<(), String> {
        if !self.interactive {
            return Err("no terminal attached".into());
        }
        crate::term::suspend().map_err(|e| e.to_string())?;
        println!("Imprint rescue shell: type exit to return to the menu.");
        let r = std::process::Command::new("/bin/sh")
            .status()
            .map(|_| ())
            .map_err(|e| format!("starting /bin/sh: {e}"));
        crate::term::resume().map_err(|e| e.to_string())?;
        self.needs_clear = true;
        r
    }
}

/// A connected network store: its row as last read, and the share's mount.
#[derive(Debug)]
struct NetStore {
    row: StoreRow,
    _mount: Option<MountedStore>,
}

impl NetStore {
    /// The store read again, keeping its label and read-only reason.
    fn scan(&self) -> StoreRow {
        StoreRow {
            label: self.row.label.clone(),
            read_only: self.row.read_only.clone(),
            ..scan_store(&self.row.path)
        }
    }
}

/// Why an HTTP store cannot take a capture.
pub const HTTP_READ_ONLY: &str = "read-only (HTTP): restore and verify only";

/// Mounts or opens a network store with `ops::locations` and lists its images. An
/// SMB or NFS share is mounted writable (captures can go there), or read-only when
/// the server allows no more. The password goes into the mount data only.
fn connect_store(
    location: &str,
    password: &Secret,
    net: Option<&ops::net::Net>,
) -> Result<NetStore, String> {
    let loc = StoreLocation::parse(location).map_err(|e| e.to_string())?;
    if let (Some(net), false) = (net, matches!(loc, StoreLocation::Local(_))) {
        // Waits for a bring-up already under way (the form's, or the one at start).
        ops::net::ensure_up(net, &mut |_| {}).map_err(|why| format!("{loc}: no network: {why}"))?;
    }
    let http = matches!(loc, StoreLocation::Http(_));
    let mut pass = |_: &str| Ok(password.0.clone());
    let (opened, read_only) = match open_location(&loc, !http, &mut pass) {
        Ok(o) if http => (o, Some(HTTP_READ_ONLY.to_string())),
        Ok(o) => (o, None),
        Err(e) if !http && e.to_string().contains("access denied") => {
            // The user may read the share but not write it.
            let o = open_location(&loc, false, &mut pass).map_err(|_| e.to_string())?;
            (
                o,
                Some("read-only: the server lets this user read the share only".into()),
            )
        }
        Err(e) => return Err(e.to_string()),
    };
    let row = StoreRow {
        label: Some(loc.to_string()),
        read_only,
        ..scan_store(&opened.store)
    };
    match &row.state {
        StoreState::Ready(_) => {}
        StoreState::Empty if row.read_only.is_none() => {}
        StoreState::Empty => {
            return Err(format!(
            "{loc}: not an Imprint store (the folder is empty, and this user cannot write to it)"
        ))
        }
        StoreState::Missing => {
            return Err(format!(
                "{loc}: the folder is not on the server (check the path after the share name)"
            ))
        }
        StoreState::Broken(e) => {
            return Err(
                if e.contains("not an Imprint store") || e.contains("no imprint-store.json") {
                    format!("{loc}: not an Imprint store: {e}")
                } else {
                    e.clone()
                },
            )
        }
    }
    Ok(NetStore {
        row,
        _mount: opened.mount,
    })
}

/// Runs `update` and carries out its effects, feeding their results back, until
/// nothing is left to do.
pub fn dispatch(app: &mut App, rt: &mut Runtime, action: Action) {
    let mut queue = VecDeque::from([action]);
    while let Some(a) = queue.pop_front() {
        for e in update(app, a) {
            queue.extend(rt.apply(e));
        }
    }
}

fn protected(store: &Path) -> Vec<Protected> {
    let mut v = Vec::new();
    // An HTTP store lives on no local disk (as in `ops::plan_restore`).
    if !imaging::backend::is_http(&store.to_string_lossy()) {
        v.push(Protected::store(store));
    }
    if let Some(p) = std::env::var_os(ops::BOOT_MEDIUM_ENV) {
        v.push(Protected::boot_medium(Path::new(&p)));
    }
    v
}

/// The interlocks for every disk, with the image's sector size and size. `force` is
/// set because a disk that carries data is a choice the typed confirmation makes, not
/// a refusal; what it carries is shown as a note.
pub fn check_targets(store: &Path, image: &str, nodes: &[PathBuf]) -> Vec<TargetCheck> {
    let manifest = match ops::image_info(store, image) {
        Ok(m) => m,
        Err(e) => {
            return nodes
                .iter()
                .map(|n| TargetCheck {
                    node: n.clone(),
                    refusal: Some(format!("the image cannot be read: {e}")),
                    note: None,
                })
                .collect()
        }
    };
    let opts = CheckOptions {
        force: true,
        image_logical_sector_size: Some(manifest.source.logical_sector_size),
        min_size: Some(manifest.source.size),
        root: None,
    };
    let protected = protected(store);
    nodes
        .iter()
        .map(|n| match check_write_target(n, &protected, &opts) {
            Ok(f) if f.size < manifest.source.size => TargetCheck {
                node: n.clone(),
                refusal: Some(format!(
                    "it has {} but the image needs {}; use a larger disk",
                    human_size(f.size),
                    human_size(manifest.source.size)
                )),
                note: None,
            },
            Ok(f) => TargetCheck {
                node: n.clone(),
                refusal: None,
                note: (!f.carries_data.is_empty())
                    .then(|| format!("holds {}", f.carries_data.join(", "))),
            },
            Err(r) => TargetCheck {
                node: n.clone(),
                refusal: Some(r.to_string()),
                note: None,
            },
        })
        .collect()
}

/// What the confirmation screen names, from a checked plan.
pub fn confirm_view(plan: &ops::RestorePlan) -> ConfirmView {
    let (model, serial, size, destroyed) = match &plan.facts {
        Some(f) => (
            f.desc.model.clone(),
            f.desc.serial.clone(),
            f.size,
            f.carries_data.clone(),
        ),
        None => (None, None, plan.image.manifest.source.size, Vec::new()),
    };
    let serial_chars: Vec<char> = serial
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (word, word_is_serial) = if serial_chars.len() >= 4 {
        (
            serial_chars[serial_chars.len() - 4..].iter().collect(),
            true,
        )
    } else {
        (CONFIRM_WORD.to_string(), false)
    };
    ConfirmView {
        plan_lines: plan.describe(),
        target: plan.target.clone(),
        model,
        serial,
        size,
        destroyed,
        word,
        word_is_serial,
    }
}

fn spawn(spec: JobSpec) -> RunningJob {
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut sink = ChannelSink {
        tx: tx.clone(),
        cancel: cancel.clone(),
        start,
        last_progress: None,
    };
    let handle = std::thread::Builder::new()
        .name("imprint-job".into())
        .spawn(move || {
            let outcome = run_job(&spec, &mut sink);
            let _ = tx.send(JobMsg::Done {
                at_ms: start.elapsed().as_millis() as u64,
                outcome,
            });
        })
        .ok();
    RunningJob {
        rx,
        cancel,
        start,
        handle,
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn per_sec(bytes: u64, ms: u64) -> String {
    format!(
        "{}/s",
        human_size((bytes * 1000).checked_div(ms).unwrap_or(0))
    )
}

/// Runs one job on the calling (worker) thread.
pub fn run_job(spec: &JobSpec, sink: &mut dyn Sink) -> Result<JobSuccess, JobFailure> {
    match spec {
        JobSpec::Capture(req) => {
            let r = ops::capture(req, sink).map_err(|e| failure(&e, JobKind::Capture))?;
            let m = &r.manifest;
            Ok(JobSuccess {
                headline: format!(
                    "Captured \"{}\" into {}: the image is complete",
                    m.name,
                    req.store.display()
                ),
                lines: vec![
                    format!(
                        "Read {} of a {} disk in {} ({})",
                        human_size(r.read_bytes),
                        human_size(m.source.size),
                        secs(r.elapsed_ms),
                        per_sec(r.read_bytes, r.elapsed_ms)
                    ),
                    format!(
                        "{} chunks: {} new ({} added to the store), {} already stored, {} empty",
                        m.stats.chunks,
                        r.new_chunks,
                        human_size(r.new_bytes),
                        r.dedup_chunks,
                        r.zero_chunks
                    ),
                    format!("Root hash {}", m.root_hash),
                ],
            })
        }
        JobSpec::Restore { req, confirmed } => {
            let plan = ops::plan_restore(req).map_err(|e| failure(&e, JobKind::Restore))?;
            if plan.describe() != confirmed.plan_lines {
                return Err(JobFailure {
                    kind: "refused".into(),
                    exit_code: ops::exit::REFUSED,
                    message: format!(
                        "{} changed between the confirmation and the start; nothing was written",
                        req.target.display()
                    ),
                    advice: vec!["Start the restore again and check the disk it names.".into()],
                });
            }
            let r = ops::run_restore(&plan, sink).map_err(|e| failure(&e, JobKind::Restore))?;
            let what = match req.partition {
                Some(n) => format!("partition {n} of \"{}\"", req.name),
                None => format!("\"{}\"", req.name),
            };
            let mut lines = vec![
                    format!(
                        "Wrote {} in {} chunks in {} ({})",
                        human_size(r.written_bytes),
                        r.written_chunks,
                        secs(r.elapsed_ms),
                        per_sec(r.written_bytes, r.elapsed_ms)
                    ),
                format!(
                    "{} chunks in the image, {} needed no write, every chunk's hash checked before writing",
                    r.chunks, r.skipped_chunks
                ),
            ];
            if let Some(rel) = r.relocated.as_ref().and_then(|rel| rel.grown) {
                let (index, old, new) = rel;
                lines.push(format!(
                    "Partition {index} grown from {} to {}",
                    human_size(old),
                    human_size(new)
                ));
            }
            // The filesystem may not have followed its partition: say so, never hide it.
            if let Some(g) = &r.grown {
                lines.push(g.message.clone());
            } else if req.grow_last && r.relocated.as_ref().is_none_or(|x| x.grown.is_none()) {
                lines
                    .push("Nothing to grow: the target is not larger than the image's disk".into());
            }
            Ok(JobSuccess {
                headline: format!("Restored {what} onto {}", req.target.display()),
                lines,
            })
        }
        JobSpec::Copy(req) => browser_io::run_copy(req, sink),
        JobSpec::Verify(req) => {
            let r = ops::verify(req, sink).map_err(|e| failure(&e, JobKind::Verify))?;
            let headline = match &req.against {
                None => format!(
                    "Image \"{}\" is intact: every chunk and the root hash check out",
                    req.name
                ),
                Some(d) => format!("{} matches image \"{}\"", d.display(), req.name),
            };
            Ok(JobSuccess {
                headline,
                lines: vec![format!(
                    "{} chunks, {} read in {} ({})",
                    r.chunks,
                    human_size(r.read_bytes),
                    secs(r.elapsed_ms),
                    per_sec(r.read_bytes, r.elapsed_ms)
                )],
            })
        }
    }
}

/// The error in `ops`' own words, and what to do next.
pub fn failure(e: &OpsError, kind: JobKind) -> JobFailure {
    let k = e.kind();
    let advice: Vec<String> = match (k, kind) {
        ("cancelled", JobKind::Restore) => vec![
            "The restore was stopped before it finished: the disk is NOT usable.".into(),
            "Its partition table areas were zeroed so it cannot boot half-written.".into(),
            "Run the restore again to get a working disk.".into(),
        ],
        ("cancelled", JobKind::Capture) => vec![
            "No image was committed; earlier images in the store are intact.".into(),
            "Capturing again reuses the chunks already stored.".into(),
        ],
        ("cancelled", JobKind::Verify) => {
            vec!["Verification was stopped: nothing was proven either way.".into()]
        }
        (_, JobKind::Copy) => vec!["Nothing in the image changed.".into()],
        ("refused", _) | ("usage", _) => vec![
            "Nothing was written.".into(),
            "Do what the message says, then try again.".into(),
        ],
        ("mismatch", JobKind::Verify) => vec![
            "Do not trust this image or disk: the data differs from what was captured.".into(),
            "Restore again, or capture a new image, and verify once more.".into(),
        ],
        (_, JobKind::Restore) => vec![
            "The restore did not finish: the disk is NOT usable.".into(),
            "If writing had started, its partition table areas were zeroed so it cannot boot."
                .into(),
            "Fix the cause above (see Tools > Show log), then restore again.".into(),
        ],
        (_, JobKind::Capture) => vec![
            "No image was committed; earlier images in the store are intact.".into(),
            "Fix the cause above (see Tools > Show log), then capture again.".into(),
        ],
        (_, JobKind::Verify) => {
            vec!["Fix the cause above (see Tools > Show log), then verify again.".into()]
        }
    };
    JobFailure {
        kind: k.into(),
        exit_code: e.exit_code(),
        message: e.to_string(),
        advice,
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Loads the console keymap with `loadkeys` (kbd) when the system has it; otherwise
/// says plainly that only the choice was recorded.
pub fn set_keyboard(code: &str) -> String {
    let Some(loadkeys) = find_in_path("loadkeys") else {
        return format!(
            "no keymap loader (loadkeys) in this system: \"{code}\" is recorded, but the keyboard still types as before"
        );
    };
    match std::process::Command::new(&loadkeys)
        .arg(code)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => format!("loaded with {}", loadkeys.display()),
        Ok(s) => format!(
            "loadkeys {code} failed ({s}): \"{code}\" is recorded, but the keyboard still types as before"
        ),
        Err(e) => format!(
            "loadkeys could not run ({e}): \"{code}\" is recorded, but the keyboard still types as before"
        ),
    }
}
