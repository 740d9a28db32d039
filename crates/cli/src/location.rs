//! STORE arguments that are network locations (docs/CLI.md "Store locations"): SMB and
//! NFS shares are mounted by `ops::locations` for the length of the command; HTTP URLs
//! go to the engine as they are. The password for an SMB user comes from
//! `--password-file`, `IMPRINT_STORE_PASSWORD`, or a prompt without echo on the
//! terminal, in that order, and is never printed.

use crate::Command;
use ops::locations::{open_location, MountedStore, StoreLocation};
use ops::OpsError;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Environment variable holding the password of an `smb://USER@…` store.
pub const PASSWORD_ENV: &str = "IMPRINT_STORE_PASSWORD";

/// Mounts the command's store when it is a share, rewriting the STORE argument to the
/// mounted directory. The returned guard unmounts it when dropped.
pub fn prepare(
    command: &mut Command,
    password_file: Option<&Path>,
) -> Result<Option<MountedStore>, OpsError> {
    let (store, writable) = match command {
        Command::Capture { store, .. } => (store, true),
        Command::Restore { store, .. }
        | Command::Verify { store, .. }
        | Command::Images { store }
        | Command::Info { store, .. }
        | Command::Extract { store, .. }
        | Command::Export { store, .. } => (store, false),
        Command::Mount { store, .. } => {
            let loc = StoreLocation::parse(&store.to_string_lossy())?;
            if loc.needs_mount() {
                return Err(OpsError::Usage(format!(
                    "`imprint mount` keeps the image open after it returns: mount the share {loc} yourself and give its directory, or use an http:// store"
                )));
            }
            return Ok(None);
        }
        _ => return Ok(None),
    };
    let loc = StoreLocation::parse(&store.to_string_lossy())?;
    if matches!(loc, StoreLocation::Local(_)) {
        return Ok(None);
    }
    let opened = open_location(&loc, writable, &mut |who| password(who, password_file))?;
    *store = opened.store;
    Ok(opened.mount)
}

/// `--ca-cert FILE`: trusted for https:// stores besides the system's CA certificates.
/// The file is read here so a typo fails before any network traffic, whatever the store.
pub fn trust_ca(file: Option<&Path>) -> Result<(), OpsError> {
    let Some(f) = file else { return Ok(()) };
    let bytes = std::fs::read(f).map_err(|source| OpsError::Io {
        what: "reading the --ca-cert file",
        path: f.into(),
        source,
    })?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !bytes.windows(marker.len()).any(|w| w == marker) {
        return Err(OpsError::Usage(format!(
            "--ca-cert {}: no PEM certificate in it (want a file with -----BEGIN CERTIFICATE-----)",
            f.display()
        )));
    }
    imaging::backend::trust_ca_file(f, "--ca-cert");
    Ok(())
}

fn password(who: &str, file: Option<&Path>) -> Result<String, OpsError> {
    if let Some(f) = file {
        return password_from_file(f);
    }
    if let Some(p) = std::env::var_os(PASSWORD_ENV) {
        return Ok(p.to_string_lossy().into_owned());
    }
    prompt(who)
}

/// `--password-file FILE`: its first line (a file written by `echo` ends in a newline).
pub fn password_from_file(f: &Path) -> Result<String, OpsError> {
    let text = std::fs::read_to_string(f).map_err(|source| OpsError::Io {
        what: "reading the password file",
        path: f.into(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Reads a password from the terminal with echo off, restoring the terminal after.
fn prompt(who: &str) -> Result<String, OpsError> {
    let tty_path = PathBuf::from("/dev/tty");
    let no_tty = || {
        OpsError::Usage(format!(
            "a password is needed for {who}: give --password-file FILE or set {PASSWORD_ENV} (no terminal to ask on)"
        ))
    };
    if !std::io::stdin().is_terminal() {
        return Err(no_tty());
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty_path)
        .map_err(|_| no_tty())?;
    let old = rustix::termios::tcgetattr(&tty).map_err(|_| no_tty())?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    let _ = (&tty).write_all(format!("Password for {who}: ").as_bytes());
    let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Flush, &quiet);
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Flush, &old);
    let _ = (&tty).write_all(b"\n");
    r.map_err(|source| OpsError::Io {
        what: "reading the password from",
        path: tty_path,
        source,
    })?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
