//! `imprint`: parse, dispatch, report, exit. All behaviour lives in the `ops` crate so
//! the CLI, the TUI and the unattended boot mode run the same code. Exit codes are
//! documented in docs/CLI.md.
#![forbid(unsafe_code)]

mod location;
mod progress;

use clap::{Parser, Subcommand};
use ops::{exit, OpsError};
use progress::{bytes, emit, Reporter};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Imprint: capture, restore and verify whole-disk images.
#[derive(Debug, Parser)]
#[command(name = "imprint", version, about, long_about = None)]
struct Cli {
    /// Print JSON Lines events and results on stdout instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// File whose first line is the password of an smb://USER@HOST/SHARE store
    /// (else $IMPRINT_STORE_PASSWORD, else a prompt).
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// PEM file of a CA certificate to trust for an https:// store, besides the
    /// system's CA certificates and $IMPRINT_HTTP_CA.
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture a disk (or disk image file) into a store.
    Capture {
        /// Disk to read: a block device, a disk selector (serial:…, by-id:…, largest, …)
        /// or a regular file.
        source: String,
        /// Store directory (created when missing or empty).
        store: PathBuf,
        /// Image name (letters, digits, spaces, - _ . and the like; no / \ : * ? " < > |).
        #[arg(long)]
        name: String,
        /// Free text kept with the image.
        #[arg(long, default_value = "")]
        description: String,
        /// zstd compression level (1-19).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
        /// Capture even when the source is mounted (the image may be inconsistent).
        #[arg(long)]
        force: bool,
        /// Chunk size in bytes for a store created by this capture (power of two).
        #[arg(long, default_value_t = imaging::DEFAULT_CHUNK_SIZE, hide = true)]
        chunk_size: u32,
        /// Worker threads (default: all cores).
        #[arg(long, default_value_t = 0, hide = true)]
        threads: usize,
    },
    /// Restore an image onto a disk or file, destroying what it holds.
    Restore {
        /// Store directory.
        store: PathBuf,
        /// Image name.
        name: String,
        /// Disk to write: a block device, a disk selector (serial:…, by-id:…, …), an
        /// existing file, or a new file (created at the image's size).
        target: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Overwrite a target that carries partitions or data. Never overrides the
        /// other safety rules (mounted, swap, store or boot disk, sector size, size).
        #[arg(long)]
        force: bool,
        /// On a larger target, extend the last partition to the end of the disk and grow
        /// its filesystem (ext2/3/4 with resize2fs, NTFS with ntfsresize).
        #[arg(long)]
        grow_last: bool,
        /// Restore only partition N of the image, into partition N of TARGET (or into
        /// TARGET when it is a partition device); nothing else is touched.
        #[arg(long, value_name = "N")]
        partition: Option<u32>,
        /// Write every chunk. By default a target that already carries the image's
        /// partition layout (or an interrupted restore of it) gets a delta restore:
        /// chunks it already holds are compared by hash and not rewritten.
        #[arg(long)]
        full: bool,
        /// Write zeros over blocks the image does not use (default: leave them).
        #[arg(long, conflicts_with = "discard_unused")]
        zero_unused: bool,
        /// Discard blocks the image does not use (TRIM on SSDs; holes in files).
        #[arg(long)]
        discard_unused: bool,
        /// Worker threads (default: all cores).
        #[arg(long, default_value_t = 0, hide = true)]
        threads: usize,
    },
    /// Check an image's chunks and root hash, or compare a disk with an image.
    Verify {
        store: PathBuf,
        name: String,
        /// Compare this disk (device, selector or file) with the image.
        #[arg(long)]
        against: Option<String>,
        /// Worker threads (default: all cores).
        #[arg(long, default_value_t = 0, hide = true)]
        threads: usize,
    },
    /// List the images in a store.
    Images { store: PathBuf },
    /// Show one image's details and partition table.
    Info { store: PathBuf, name: String },
    /// The text UI: disks, stores, capture, restore and verify with the keyboard.
    Tui {
        /// A store to show besides /run/imprint/store: a directory, or an smb://, nfs://,
        /// http(s):// location connected at start (repeatable). The password of an SMB
        /// user comes from --password-file, else $IMPRINT_STORE_PASSWORD, else the form.
        #[arg(long)]
        store: Vec<PathBuf>,
    },
    /// List the disks of this machine, what they hold and what uses them.
    Disks {
        /// Also list loop, ram, optical and similar devices.
        #[arg(long)]
        all: bool,
    },
    /// Print a line for every disk plugged in or pulled out, until Ctrl-C or SIGTERM.
    WatchDisks,
    /// Mount an image's filesystem read-only and serve it until `imprint umount` or Ctrl-C.
    Mount {
        store: PathBuf,
        name: String,
        /// An existing directory to mount the filesystem on.
        mountpoint: PathBuf,
        /// Partition to mount (default: the only one with a mountable filesystem).
        #[arg(long, value_name = "N")]
        partition: Option<u32>,
    },
    /// Unmount what `imprint mount` mounted (also after its process was killed).
    Umount { mountpoint: PathBuf },
    /// Copy files and directories out of an image, keeping times and permissions.
    Extract {
        store: PathBuf,
        name: String,
        /// Paths inside the partition (`/home/ann/doc.txt`, `/etc`).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Partition to read (default: the only one with a mountable filesystem).
        #[arg(long, value_name = "N")]
        partition: Option<u32>,
        /// Directory to copy into (created when missing).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Write an image (or one partition) as a raw or qcow2 file for virtual machines.
    Export {
        store: PathBuf,
        name: String,
        /// The file to write; it must not exist.
        file: PathBuf,
        #[arg(long, value_parser = ["raw", "qcow2"])]
        format: String,
        /// Export only partition N.
        #[arg(long, value_name = "N")]
        partition: Option<u32>,
    },
}

fn main() {
    let mut cli = Cli::parse();
    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C asks the job to stop at the next chunk boundary, so a restore can zero
    // the table areas on its way out. A second Ctrl-C kills at once.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, cancel.clone());
        let _ = signal_hook::flag::register(sig, cancel.clone());
    }
    let json = cli.json;
    let command = command_name(&cli.command);
    let mut reporter = Reporter::new(json, cancel);
    // A network store is mounted for the whole command and unmounted before exit.
    let result = location::trust_ca(cli.ca_cert.as_deref())
        .and_then(|()| location::prepare(&mut cli.command, cli.password_file.as_deref()))
        .and_then(|mount| {
            let r = run(cli.command, &mut reporter, cli.password_file.as_deref());
            drop(mount);
            r
        });
    reporter.finish_line();
    let code = match result {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e.exit_code();
            if json {
                emit(
                    "result",
                    json!({
                        "command": command,
                        "ok": false,
                        "exit_code": code,
                        "kind": e.kind(),
                        "error": e.to_string(),
                    }),
                );
            } else {
                eprintln!("imprint: error: {e}");
            }
            code
        }
    };
    std::process::exit(code);
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Capture { .. } => "capture",
        Command::Restore { .. } => "restore",
        Command::Verify { .. } => "verify",
        Command::Images { .. } => "images",
        Command::Info { .. } => "info",
        Command::Tui { .. } => "tui",
        Command::Disks { .. } => "disks",
        Command::WatchDisks => "watch-disks",
        Command::Mount { .. } => "mount",
        Command::Umount { .. } => "umount",
        Command::Extract { .. } => "extract",
        Command::Export { .. } => "export",
    }
}

fn run(
    command: Command,
    rep: &mut Reporter,
    password_file: Option<&std::path::Path>,
) -> Result<(), OpsError> {
    let json = rep.json();
    match command {
        Command::Tui { store } => {
            // Read before the screen is taken, so a wrong path is a plain error line.
            let password = password_file
                .map(location::password_from_file)
                .transpose()?;
            let opts = tui::Options {
                stores: store,
                password,
            };
            let exit = tui::run(opts).map_err(|source| OpsError::Io {
                what: "running the text UI on",
                path: "/dev/tty".into(),
                source,
            })?;
            if exit != tui::Exit::Quit {
                // reboot(2) is PID 1's job: imprint-init acts on this exit code.
                std::process::exit(exit.code());
            }
        }
        Command::Capture {
            source,
            store,
            name,
            description,
            level,
            force,
            chunk_size,
            threads,
        } => {
            let req = ops::CaptureRequest {
                source: ops::resolve_device(&source)?,
                store,
                name,
                description,
                level,
                chunk_size,
                force,
                threads,
            };
            let r = ops::capture(&req, rep)?;
            let m = &r.manifest;
            let data = json!({
                "command": "capture",
                "ok": true,
                "name": m.name,
                "store": req.store,
                "source": req.source,
                "disk_bytes": m.source.size,
                "read_bytes": r.read_bytes,
                "chunks": m.stats.chunks,
                "hashed_chunks": r.hashed_chunks,
                "zero_chunks": r.zero_chunks,
                "dedup_chunks": r.dedup_chunks,
                "new_chunks": r.new_chunks,
                "new_bytes": r.new_bytes,
                "referenced_bytes": r.referenced_bytes,
                "elapsed_seconds": r.elapsed_ms as f64 / 1000.0,
                "root_hash": m.root_hash,
            });
            if json {
                emit("result", data);
            } else {
                eprintln!(
                    "captured {:?}: read {} of a {} disk in {:.1} s ({}/s); {} chunks, {} hashed: {} new ({} added to the store), {} already stored (deduplicated), {} empty",
                    m.name,
                    bytes(r.read_bytes),
                    bytes(m.source.size),
                    r.elapsed_ms as f64 / 1000.0,
                    bytes(rate(r.read_bytes, r.elapsed_ms)),
                    m.stats.chunks,
                    r.hashed_chunks,
                    r.new_chunks,
                    bytes(r.new_bytes),
                    r.dedup_chunks,
                    r.zero_chunks,
                );
            }
        }
        Command::Restore {
            store,
            name,
            target,
            yes,
            force,
            grow_last,
            partition,
            full,
            zero_unused,
            discard_unused,
            threads,
        } => {
            let req = ops::RestoreRequest {
                store,
                name,
                target: ops::resolve_device(&target)?,
                force,
                grow_last,
                partition,
                full,
                unused: if discard_unused {
                    ops::Unused::Discard
                } else if zero_unused {
                    ops::Unused::Zero
                } else {
                    ops::Unused::Leave
                },
                threads,
            };
            let plan = ops::plan_restore(&req)?;
            if !yes {
                confirm(&plan)?;
            }
            let r = ops::run_restore(&plan, rep)?;
            let data = json!({
                "command": "restore",
                "ok": true,
                "name": plan.image.manifest.name,
                "target": plan.target,
                "disk_bytes": plan.image.manifest.source.size,
                "chunks": r.chunks,
                "read_bytes": r.read_bytes,
                "hashed_chunks": r.hashed_chunks,
                "written_chunks": r.written_chunks,
                "written_bytes": r.written_bytes,
                "skipped_chunks": r.skipped_chunks,
                "unchanged_chunks": r.unchanged_chunks,
                "table_chunks": r.table_chunks,
                "target_read_bytes": r.target_read_bytes,
                "delta": r.delta,
                "delta_reason": r.delta_reason,
                "unused": req.unused,
                "unused_bytes": r.unused_bytes,
                "elapsed_seconds": r.elapsed_ms as f64 / 1000.0,
                "partition": req.partition,
                "relocated": r.relocated,
                "grown": r.grown,
            });
            if json {
                emit("result", data);
            } else {
                if let Some(g) = &r.grown {
                    eprintln!("{}", g.message);
                }
                // "unchanged" only means something after a delta compare.
                let unchanged = if r.delta {
                    format!(
                        "{} unchanged (delta, {} of the target compared) and ",
                        r.unchanged_chunks,
                        bytes(r.target_read_bytes)
                    )
                } else {
                    String::new()
                };
                eprintln!(
                    "restored {:?} onto {} in {:.1} s: {} chunks; read {} from the store, hashed {}; wrote {} chunks ({}, {}/s, {} of them table areas); skipped {unchanged}{} empty",
                    plan.image.manifest.name,
                    plan.target.display(),
                    r.elapsed_ms as f64 / 1000.0,
                    r.chunks,
                    bytes(r.read_bytes),
                    r.hashed_chunks,
                    r.written_chunks,
                    bytes(r.written_bytes),
                    bytes(rate(r.written_bytes, r.elapsed_ms)),
                    r.table_chunks,
                    r.skipped_chunks,
                );
            }
        }
        Command::Verify {
            store,
            name,
            against,
            threads,
        } => {
            let req = ops::VerifyRequest {
                store,
                name,
                against: against.as_deref().map(ops::resolve_device).transpose()?,
                threads,
            };
            let r = ops::verify(&req, rep)?;
            if json {
                emit(
                    "result",
                    json!({
                        "command": "verify",
                        "ok": true,
                        "name": req.name,
                        "against": req.against,
                        "chunks": r.chunks,
                        "read_bytes": r.read_bytes,
                        "elapsed_seconds": r.elapsed_ms as f64 / 1000.0,
                    }),
                );
            } else {
                match &req.against {
                    None => eprintln!(
                        "image {:?} is intact: {} chunks checked, root hash ok",
                        req.name, r.chunks
                    ),
                    Some(d) => eprintln!(
                        "{} matches image {:?}: {} chunks compared",
                        d.display(),
                        req.name,
                        r.chunks
                    ),
                }
            }
        }
        Command::Images { store } => {
            let s = ops::list_images(&store)?;
            if json {
                emit(
                    "result",
                    json!({"command": "images", "ok": true, "store": s}),
                );
            } else {
                print_images(&s);
            }
        }
        Command::Disks { all } => {
            let disks = ops::list_disks(all)?;
            if json {
                emit(
                    "result",
                    json!({"command": "disks", "ok": true, "disks": disks}),
                );
            } else {
                print!("{}", disks::discover::render_table(&disks));
            }
        }
        Command::WatchDisks => watch_disks(rep)?,
        Command::Info { store, name } => {
            let m = ops::image_info(&store, &name)?;
            if json {
                emit(
                    "result",
                    json!({"command": "info", "ok": true, "manifest": m}),
                );
            } else {
                print_info(&m);
            }
        }
        Command::Mount {
            store,
            name,
            mountpoint,
            partition,
        } => browse_mount(rep, &store, &name, &mountpoint, partition)?,
        Command::Umount { mountpoint } => browse_umount(json, &mountpoint)?,
        Command::Extract {
            store,
            name,
            paths,
            partition,
            to,
        } => browse_extract(json, &store, &name, &paths, partition, &to)?,
        Command::Export {
            store,
            name,
            file,
            format,
            partition,
        } => browse_export(rep, &store, &name, &file, &format, partition)?,
    }
    Ok(())
}

/// Reports disks appearing and disappearing (udev monitor, or sysfs polling without
/// udevd) on stdout until Ctrl-C or SIGTERM, which end it with exit 0. Disks present at
/// the start are not reported: `imprint disks` lists those.
fn watch_disks(rep: &Reporter) -> Result<(), OpsError> {
    use imaging::Sink;
    let monitor = disks::monitor::DiskMonitor::start(false).map_err(|source| OpsError::Io {
        what: "starting the disk monitor on",
        path: "/run/udev".into(),
        source,
    })?;
    // A first line says the monitor listens, so a script (or a test) knows that a disk
    // plugged in from now on will be reported.
    if rep.json() {
        emit("watching", json!({ "monitor": monitor.kind }));
    } else {
        eprintln!("watching for disks ({}); Ctrl-C to stop", monitor.kind);
    }
    while !rep.cancelled() {
        let event = match monitor
            .events()
            .recv_timeout(std::time::Duration::from_millis(250))
        {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(OpsError::Io {
                    what: "watching disks: the monitor stopped reading",
                    path: "/run/udev".into(),
                    source: std::io::Error::other("disk monitor thread ended"),
                })
            }
        };
        match event {
            disks::monitor::DiskEvent::Added(d) if rep.json() => emit(
                "disk-added",
                serde_json::to_value(&*d).unwrap_or_else(|e| json!({ "error": e.to_string() })),
            ),
            disks::monitor::DiskEvent::Added(d) => println!("added    {}", d.summary()),
            disks::monitor::DiskEvent::Removed(node) if rep.json() => {
                emit("disk-removed", json!({ "node": node }))
            }
            disks::monitor::DiskEvent::Removed(node) => println!("removed  {}", node.display()),
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

fn rate(n: u64, ms: u64) -> u64 {
    (n * 1000).checked_div(ms).unwrap_or(0)
}

/// Shows what will be destroyed and asks for it to be typed back. Refuses when there
/// is no terminal to ask on: scripts must say --yes.
fn confirm(plan: &ops::RestorePlan) -> Result<(), OpsError> {
    if !std::io::stdin().is_terminal() {
        return Err(OpsError::Usage(
            "refusing to restore without confirmation: stdin is not a terminal; pass --yes to \
             confirm in scripts"
                .into(),
        ));
    }
    for line in plan.describe() {
        eprintln!("{line}");
    }
    let word = match plan.target_serial() {
        Some(s) if s.chars().count() >= 4 => {
            let tail: String = s.chars().skip(s.chars().count() - 4).collect();
            eprint!("Type the last 4 characters of the target's serial number ({tail}) to overwrite it: ");
            tail
        }
        _ => {
            eprint!("Type \"yes\" to overwrite {}: ", plan.target.display());
            "yes".to_string()
        }
    };
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() != word {
        return Err(OpsError::Usage("not confirmed; nothing was written".into()));
    }
    Ok(())
}

fn print_images(s: &ops::StoreSummary) {
    println!(
        "store {}: {} images, {} chunks, {} in packs",
        s.path,
        s.images.len(),
        s.chunks,
        bytes(s.pack_bytes)
    );
    if s.images.is_empty() {
        return;
    }
    println!(
        "{:<24} {:<20} {:>10} {:>10} {:>10}  DESCRIPTION",
        "NAME", "CREATED", "DISK", "USED", "STORED"
    );
    for i in &s.images {
        match &i.error {
            Some(e) => println!("{:<24} DAMAGED: {e}", i.name),
            None => println!(
                "{:<24} {:<20} {:>10} {:>10} {:>10}  {}",
                i.name,
                i.created.as_deref().unwrap_or("-"),
                bytes(i.source_size.unwrap_or(0)),
                bytes(i.used_bytes.unwrap_or(0)),
                bytes(i.stored_bytes.unwrap_or(0)),
                i.description.as_deref().unwrap_or("")
            ),
        }
    }
}

fn print_info(m: &imaging::Manifest) {
    println!("Image:        {}", m.name);
    if !m.description.is_empty() {
        println!("Description:  {}", m.description);
    }
    println!("Created:      {} by imprint {}", m.created, m.tool_version);
    println!(
        "Source:       {} ({} bytes, {}), sectors {}/{} bytes",
        m.source.path,
        m.source.size,
        bytes(m.source.size),
        m.source.logical_sector_size,
        m.source.physical_sector_size
    );
    if let Some(model) = &m.source.model {
        println!("Model:        {model}");
    }
    if let Some(serial) = &m.source.serial {
        println!("Serial:       {serial}");
    }
    println!(
        "Data:         {} captured, {} chunks of {} ({} empty), {} stored",
        bytes(m.stats.captured_bytes),
        m.stats.chunks,
        bytes(m.chunk_size as u64),
        m.stats.zero_chunks,
        bytes(m.stats.stored_bytes)
    );
    println!("Root hash:    {}", m.root_hash);
    print_partitions(m);
}

/// The partition table as `fdisk -l` shows it: index, start, end and size in sectors,
/// size, type, filesystem, label, used bytes and how it was captured.
fn print_partitions(m: &imaging::Manifest) {
    let parts: Vec<ops::PartitionRecord> = m
        .partitions
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    let table = m
        .partition_table
        .as_ref()
        .and_then(|t| t.get("kind"))
        .and_then(|k| k.as_str())
        .unwrap_or("none");
    let ss = u64::from(m.source.logical_sector_size.max(1));
    println!();
    println!(
        "Partition table: {}   sector size {} bytes   {} sectors",
        if table == "none" { "none" } else { table },
        ss,
        m.source.size / ss
    );
    if parts.is_empty() {
        return;
    }
    println!(
        "{:>3} {:>10} {:>10} {:>10} {:>9}  {:<20} {:<7} {:<12} {:>9}  CAPTURE",
        "#", "START", "END", "SECTORS", "SIZE", "TYPE", "FS", "LABEL", "USED"
    );
    for p in &parts {
        let start = p.part.start / ss;
        let sectors = p.part.size / ss;
        println!(
            "{:>3} {:>10} {:>10} {:>10} {:>9}  {:<20} {:<7} {:<12} {:>9}  {}",
            p.part.index,
            start,
            (start + sectors).saturating_sub(1),
            sectors,
            bytes(p.part.size),
            truncate(&p.part.type_name, 20),
            p.filesystem.as_deref().unwrap_or("-"),
            truncate(p.label.as_deref().unwrap_or("-"), 12),
            bytes(p.used_bytes),
            match p.captured {
                ops::Captured::UsedBlocks => "used blocks".to_string(),
                ops::Captured::Whole =>
                    format!("whole ({})", p.reason.as_deref().unwrap_or("no parser")),
            }
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

// ---- browsing (crates/browse) ----

/// Mounts and serves until Ctrl-C/SIGTERM (what `imprint umount` sends), then unmounts.
/// A busy mount is retried every second until it is released.
fn browse_mount(
    rep: &mut Reporter,
    store: &std::path::Path,
    name: &str,
    mountpoint: &std::path::Path,
    partition: Option<u32>,
) -> Result<(), OpsError> {
    use imaging::Sink;
    let json = rep.json();
    let mut m = browse::mount(&browse::MountRequest {
        store: store.to_path_buf(),
        name: name.to_string(),
        mountpoint: mountpoint.to_path_buf(),
        partition,
    })?;
    let data = json!({
        "name": name,
        "mountpoint": m.mountpoint(),
        "partition": m.part.index,
        "fstype": m.record.fstype,
        "loop_device": m.record.loop_device,
        "fuse_dir": m.record.fuse_dir,
        "pid": std::process::id(),
    });
    if json {
        emit("mounted", data);
    } else {
        eprintln!(
            "mounted partition {} ({}) of {:?} read-only at {}; `imprint umount {}` or Ctrl-C to unmount",
            m.part.index,
            m.record.fstype,
            name,
            m.mountpoint().display(),
            m.mountpoint().display()
        );
    }
    let mut warned_busy = false;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if !rep.cancelled() {
            continue;
        }
        match m.unmount() {
            Ok(()) => break,
            Err(e) => {
                if !warned_busy {
                    if json {
                        emit("warning", json!({ "message": e.to_string() }));
                    } else {
                        eprintln!("imprint: {e}; retrying every second");
                    }
                    warned_busy = true;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    let data = json!({
        "command": "mount",
        "ok": true,
        "name": name,
        "mountpoint": m.mountpoint(),
        "chunks_fetched": m.reader.chunks_fetched(),
        "read_error": m.last_error(),
    });
    if json {
        emit("result", data);
    } else {
        eprintln!(
            "unmounted {} ({} chunks read from the store)",
            m.mountpoint().display(),
            m.reader.chunks_fetched()
        );
    }
    Ok(())
}

fn browse_umount(json: bool, mountpoint: &std::path::Path) -> Result<(), OpsError> {
    let (rec, outcome) = browse::umount(mountpoint, std::time::Duration::from_secs(20))?;
    if json {
        emit(
            "result",
            json!({
                "command": "umount",
                "ok": true,
                "mountpoint": rec.mountpoint,
                "image": rec.image,
                "outcome": outcome,
            }),
        );
    } else {
        match outcome {
            browse::UmountOutcome::Stopped { pid } => eprintln!(
                "unmounted {} (image {:?}; serving process {pid} stopped)",
                rec.mountpoint.display(),
                rec.image
            ),
            browse::UmountOutcome::RecoveredStale { pid } => eprintln!(
                "unmounted {} (image {:?}): its serving process {pid} had died; the mount, loop device and FUSE directory were removed",
                rec.mountpoint.display(),
                rec.image
            ),
        }
    }
    Ok(())
}

fn browse_extract(
    json: bool,
    store: &std::path::Path,
    name: &str,
    paths: &[String],
    partition: Option<u32>,
    to: &std::path::Path,
) -> Result<(), OpsError> {
    let started = std::time::Instant::now();
    let r = browse::extract(store, name, partition, paths, to, &mut |e| {
        if json {
            emit("extracted", json!(e));
        } else if e.kind == "skipped" {
            eprintln!("skipped {} (not a file, directory or link)", e.path);
        } else {
            println!("{}", e.path);
        }
    })?;
    if json {
        emit(
            "result",
            json!({
                "command": "extract",
                "ok": true,
                "name": name,
                "to": to,
                "files": r.files,
                "dirs": r.dirs,
                "symlinks": r.symlinks,
                "skipped": r.skipped,
                "bytes": r.bytes,
                "elapsed_seconds": started.elapsed().as_secs_f64(),
            }),
        );
    } else {
        eprintln!(
            "extracted {} files ({}), {} directories, {} links from {:?} into {}",
            r.files,
            bytes(r.bytes),
            r.dirs,
            r.symlinks,
            name,
            to.display()
        );
    }
    Ok(())
}

fn browse_export(
    rep: &mut Reporter,
    store: &std::path::Path,
    name: &str,
    file: &std::path::Path,
    format: &str,
    partition: Option<u32>,
) -> Result<(), OpsError> {
    let json = rep.json();
    let format = match format {
        "qcow2" => browse::Format::Qcow2,
        _ => browse::Format::Raw,
    };
    let started = std::time::Instant::now();
    let r = browse::export(store, name, file, format, partition, rep)?;
    rep.finish_line();
    if json {
        emit(
            "result",
            json!({
                "command": "export",
                "ok": true,
                "name": name,
                "file": r.file,
                "format": r.format,
                "partition": partition,
                "size": r.size,
                "data_bytes": r.data_bytes,
                "chunks_fetched": r.chunks_fetched,
                "elapsed_seconds": started.elapsed().as_secs_f64(),
            }),
        );
    } else {
        eprintln!(
            "exported {:?} to {} ({}, {} disk, {} written) in {:.1} s",
            name,
            r.file.display(),
            format!("{:?}", r.format).to_lowercase(),
            bytes(r.size),
            bytes(r.data_bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
