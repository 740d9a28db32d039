//! The terminal: raw mode and the alternate screen behind a guard and a panic hook so
//! the console is always given back, the console size, and the event loop.

use crate::action::{keymap, Action};
use crate::app::{App, Exit};
use crate::model::DiscoveredDisks;
use crate::runtime::{dispatch, Runtime};
use crate::ui::render;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Disks are listed again this often even without a hotplug event: mounts and swaps
/// change the in-use marks without one.
const DISK_POLL: Duration = Duration::from_secs(2);
/// Stores are read again this often (manifests and maps are checked on every read).
const STORE_POLL: Duration = Duration::from_secs(30);

/// What `imprint tui` is given.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stores besides the boot image's `/run/imprint/store`: directories, or
    /// `smb://`, `nfs://`, `http(s)://` locations connected at start.
    pub stores: Vec<PathBuf>,
    /// The password for those stores (`--password-file`); else `$IMPRINT_STORE_PASSWORD`.
    pub password: Option<String>,
}

/// The password of an `smb://USER@...` store, as the CLI reads it (docs/CLI.md
/// "Store locations"); without it the TUI asks on its form.
const PASSWORD_ENV: &str = "IMPRINT_STORE_PASSWORD";

/// Splits `--store` values into directories and network locations.
pub fn split_stores(stores: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut paths = vec![PathBuf::from(crate::model::BOOT_STORE)];
    let mut remote = Vec::new();
    for p in stores {
        let s = p.to_string_lossy();
        if s.contains("://") {
            remote.push(s.into_owned());
        } else if !paths.contains(p) {
            paths.push(p.clone());
        }
    }
    (paths, remote)
}

/// Gives the console back: cooked mode, main screen, cursor shown.
pub fn suspend() -> io::Result<()> {
    terminal::disable_raw_mode()?;
    execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show)
}

/// Takes the console again after [`suspend`].
pub fn resume() -> io::Result<()> {
    terminal::enable_raw_mode()?;
    execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
}

/// Restores the terminal when dropped, on every way out of [`run`].
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = suspend();
    }
}

/// `$COLUMNS`×`$LINES` when set (a serial console cannot be asked), else what the
/// terminal says, else 80×25: a serial line often reports 0×0.
pub fn console_size() -> (u16, u16) {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|v| *v > 0)
    };
    if let (Some(w), Some(h)) = (env("COLUMNS"), env("LINES")) {
        return (w, h);
    }
    match terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => (w, h),
        _ => (80, 25),
    }
}

/// A cleared screen and a terminal whose next draw paints everything. Not
/// `Terminal::clear`/`resize`: they ask the terminal where its cursor is (`ESC[6n`),
/// and a serial line with nothing answering makes that fail after a timeout.
fn fresh_terminal(w: u16, h: u16) -> io::Result<Terminal<CrosstermBackend<io::Stdout>>> {
    execute!(
        io::stdout(),
        terminal::Clear(terminal::ClearType::All),
        cursor::MoveTo(0, 0)
    )?;
    Terminal::with_options(
        CrosstermBackend::new(io::stdout()),
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, w, h)),
        },
    )
}

/// Runs the TUI until the person quits or asks to reboot or power off. The caller
/// does the reboot: PID 1 with reboot(2), the CLI just exits.
pub fn run(opts: Options) -> io::Result<Exit> {
    // Taken out of the environment before any thread starts, so the rescue shell and
    // every other child of the TUI never inherit the password.
    let env_password = std::env::var(PASSWORD_ENV).ok();
    std::env::remove_var(PASSWORD_ENV);
    let password = opts.password.or(env_password).map(crate::app::Secret);
    let (paths, remote) = split_stores(&opts.stores);
    let mut rt = Runtime::new(Box::new(DiscoveredDisks), paths);
    rt.interactive = true;
    rt.network = ops::net::from_env();
    // Looking for stores on other disks mounts their partitions (read-only), which
    // only root may do: the boot environment, or `sudo imprint tui`.
    if rustix::process::geteuid().is_root() {
        rt.disk_stores = Some(crate::diskstores::DiskStores::new(
            crate::diskstores::MOUNT_BASE,
        ));
    }
    let mut app = App::new();

    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = suspend();
        prev(info);
    }));
    resume()?;
    let _guard = Guard;
    let (w, h) = console_size();
    let mut term = fresh_terminal(w, h)?;

    // Without udev the monitor polls sysfs itself; either way a failure to start it
    // only costs the instant refresh (the periodic one remains).
    let monitor = disks::DiskMonitor::start(false).ok();
    let snap = rt.snapshot(true);
    dispatch(&mut app, &mut rt, snap);
    // In the boot environment the network comes up in the background from the start,
    // so the form and a store named at boot find it ready.
    for a in rt.apply(crate::action::Effect::BringUpNetwork) {
        dispatch(&mut app, &mut rt, a);
    }
    for location in remote {
        let password = password.clone();
        dispatch(
            &mut app,
            &mut rt,
            Action::ConnectLocation { location, password },
        );
    }
    let mut last_disks = Instant::now();
    let mut last_stores = Instant::now();
    let mut was_running = false;
    loop {
        if rt.needs_clear {
            let area = term.get_frame().area();
            term = fresh_terminal(area.width, area.height)?;
            rt.needs_clear = false;
        }
        term.draw(|f| render(&app, f))?;
        if let Some(e) = app.exit {
            return Ok(e);
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(k) => {
                    if let Some(a) = keymap(&app, k) {
                        dispatch(&mut app, &mut rt, a);
                    }
                }
                Event::Resize(w, h) if w > 0 && h > 0 => term = fresh_terminal(w, h)?,
                _ => {}
            }
        }
        for a in rt.poll() {
            dispatch(&mut app, &mut rt, a);
        }
        let hotplug = monitor
            .as_ref()
            .is_some_and(|m| m.events().try_iter().count() > 0);
        // A finished job changed a store (capture) or a disk (restore).
        let job_ended = was_running && !app.job_running();
        was_running = app.job_running();
        let mut stores_due = hotplug || job_ended || last_stores.elapsed() >= STORE_POLL;
        if stores_due || last_disks.elapsed() >= DISK_POLL {
            stores_due |= rt.stores_changed();
            let snap = rt.snapshot(stores_due);
            dispatch(&mut app, &mut rt, snap);
            last_disks = Instant::now();
            if stores_due {
                last_stores = Instant::now();
            }
        }
    }
}
