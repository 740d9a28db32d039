//! PID 1 of the Imprint boot environment: mounts the API filesystems, starts udev,
//! opens the consoles, reads the `imprint.*` kernel parameters, runs the unattended job
//! they ask for (through the `imprint` CLI) or the text UI on every console (`imprint
//! tui`; the old text menu as the fallback), reaps every child, and finally
//! powers off or reboots with reboot(2).
//!
//! It never exits and never panics on bad input: PID 1 exiting is a kernel panic, so every
//! error is printed and ends in the menu or a rescue shell. Image and disk logic belongs to
//! the `imprint` CLI and the crates behind it, never here.

pub mod boot;
pub mod cmdline;
pub mod console;
pub mod credentials;
pub mod job;
pub mod menu;
pub mod probe;
pub mod process;
mod sys;
pub mod ui;

use std::fs::{File, OpenOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boot::Halt;
use cmdline::{Action, Config, Then};
use console::Console;

/// What PID 1 does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Menu,
    Shell,
    Halt(Halt),
}

impl From<Then> for Next {
    fn from(t: Then) -> Next {
        match t {
            Then::Menu => Next::Menu,
            Then::Shell => Next::Shell,
            Then::Reboot => Next::Halt(Halt::Reboot),
            Then::Poweroff => Next::Halt(Halt::Poweroff),
        }
    }
}

/// Runs as PID 1. Never returns.
pub fn pid1() -> ! {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("imprint-init: internal error: {info}");
    }));
    let started = Instant::now();
    let mut console = Console::stderr_only();
    let (next, cfg) = match catch_unwind(AssertUnwindSafe(|| start(started, &mut console))) {
        Ok(r) => r,
        Err(_) => {
            console.say("imprint: start-up failed; starting a rescue shell");
            (Next::Shell, None)
        }
    };
    run_forever(&console, next, cfg.as_ref())
}

/// Starts the machine and runs a job when asked; returns what comes next and the command
/// line (when it parsed), which the text UI gets its network settings from.
fn start(started: Instant, console: &mut Console) -> (Next, Option<Config>) {
    // Children find busybox applets and our tools here; the kernel passes no PATH.
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    if std::env::var_os("TERM").is_none() {
        std::env::set_var("TERM", "linux");
    }
    boot::mount_api_filesystems(console);
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let parsed = cmdline::parse(&line);
    let (cols, rows) = parsed.as_ref().map_or((80, 25), |c| c.console_size);
    *console = Console::open(cols, rows);
    boot::mount_efivarfs(console);
    console.say(&format!(
        "imprint-init {}: starting (kernel uptime {:.2} s; firmware {}; consoles {})",
        env!("CARGO_PKG_VERSION"),
        boot::uptime(),
        boot::firmware(),
        console.names().join(", ")
    ));
    boot::loopback_up();
    let udev = boot::start_udev(console);
    let disks = probe::list_disks();
    for l in probe::describe(&disks).lines() {
        console.say(l);
    }
    console.say(&format!(
        "imprint: ready in {:.2} s (udev settled in {:.2} s; kernel uptime {:.2} s; {} disk{})",
        started.elapsed().as_secs_f64(),
        udev.as_secs_f64(),
        boot::uptime(),
        disks.len(),
        if disks.len() == 1 { "" } else { "s" }
    ));

    match parsed {
        Err(e) => {
            console.say(&format!("imprint: error on the kernel command line: {e}"));
            let report = job::Report::rejected(cmdline::requested_action(&line), e.to_string());
            console.say(&report.to_json_line());
            (cmdline::requested_on_error(&line).into(), None)
        }
        Ok(cfg) => {
            let next = match cfg.action {
                Action::Menu => Next::Menu,
                Action::Shell => Next::Shell,
                Action::Capture | Action::Restore | Action::Verify => {
                    let report = job::run(&cfg, console);
                    if let Some(e) = &report.error {
                        console.say(&format!("imprint: {} failed: {e}", cfg.action.name()));
                    }
                    console.say(&report.to_json_line());
                    if report.ok { cfg.then } else { cfg.on_error }.into()
                }
            };
            (next, Some(cfg))
        }
    }
}

fn run_forever(console: &Console, mut next: Next, cfg: Option<&Config>) -> ! {
    let mut setup: Option<ui::TuiSetup> = None;
    loop {
        let step = catch_unwind(AssertUnwindSafe(|| match next {
            Next::Menu => {
                let setup = setup.get_or_insert_with(|| ui::prepare(console, cfg));
                Next::Halt(ui::run(console, console.size(), setup))
            }
            Next::Shell => {
                run_shell(console);
                Next::Menu
            }
            Next::Halt(how) => boot::halt(console, how),
        }));
        next = step.unwrap_or(Next::Shell);
        process::reap_orphans();
    }
}

/// Opens the primary console as a child's stdin/stdout/stderr.
fn console_stdio(console: &Console) -> Option<(File, File, File)> {
    let path = console.primary()?;
    let tty = OpenOptions::new().read(true).write(true).open(path).ok()?;
    Some((tty.try_clone().ok()?, tty.try_clone().ok()?, tty))
}

/// Spawns `cmd` on the primary console as a session leader owning it, and waits.
fn run_on_console(
    console: &Console,
    cmd: &mut Command,
) -> Result<std::process::ExitStatus, process::RunError> {
    if let Some((i, o, e)) = console_stdio(console) {
        cmd.stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e));
    }
    sys::session_with_controlling_tty(cmd);
    let status = process::run(cmd);
    // The child's exit hung up the terminal it controlled, and our descriptors with it.
    console.reopen();
    status
}

fn run_shell(console: &Console) {
    if !Path::new(menu::SHELL).exists() {
        console.say(&format!(
            "imprint: {} is missing; cannot start a shell",
            menu::SHELL
        ));
        std::thread::sleep(Duration::from_secs(10));
        return;
    }
    console.say("imprint: starting a shell; type 'exit' to get the menu");
    let t = Instant::now();
    if let Err(e) = run_on_console(console, &mut Command::new(menu::SHELL)) {
        console.say(&format!("imprint: {e}"));
    }
    if t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_secs(1));
    }
}
