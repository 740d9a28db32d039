//! Starting children and reaping them as PID 1.
//!
//! PID 1 inherits every orphan (udevd's daemonised process, its workers, whatever a shell
//! left behind), so it never calls `Child::wait`: it reaps with waitpid(-1) and picks its
//! own child's status out of the stream, discarding the orphans' (a SIGCHLD/waitpid loop
//! without the signal handler: the blocking wait is the loop).

use std::io;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::sys;

/// Failures around running one program.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for {program} (pid {pid}): {source}")]
    Wait {
        program: String,
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// Waits for `pid`, reaping every other child that exits meanwhile.
pub fn wait_for(pid: u32) -> io::Result<ExitStatus> {
    loop {
        match sys::reap_any(true)? {
            Some(r) if r.pid == pid => return Ok(r.status),
            _ => continue,
        }
    }
}

/// Reaps every child that has already exited; returns how many.
pub fn reap_orphans() -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = sys::reap_any(false) {
        n += 1;
    }
    n
}

/// Spawns `cmd` and waits for it.
pub fn run(cmd: &mut Command) -> Result<ExitStatus, RunError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    wait_for(pid).map_err(|source| RunError::Wait {
        program,
        pid,
        source,
    })
}

/// Exit code as a shell reports it: the code, or 128 + the signal number.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Ends every process but PID 1: SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn terminate_all(grace: Duration) {
    let _ = sys::kill(-1, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match sys::reap_any(false) {
            Err(_) => return, // ECHILD: nobody left
            Ok(Some(_)) => continue,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let _ = sys::kill(-1, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    reap_orphans();
}
