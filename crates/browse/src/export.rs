//! Writing an image (or one partition) as a file for virtual machines: a sparse raw
//! file, or qcow2 through `qemu-img` reading the FUSE file (no temporary raw copy).
//! Progress goes to an [`imaging::Sink`] like every other job's, which can also cancel.

use crate::reader::View;
use crate::session::{self, Opened};
use crate::sys::io_err;
use imaging::{Event, Progress, Sink};
use ops::OpsError;
use serde::Serialize;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Phase names of the progress events.
pub const PHASE_RAW: &str = "writing raw file";
pub const PHASE_QCOW2: &str = "converting to qcow2";

/// Progress events at most this often (a raw export reports every chunk).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Paces progress events; the last one (all done) always goes out.
struct Pace(Option<Instant>);

impl Pace {
    fn report(&mut self, sink: &mut dyn Sink, p: Progress) {
        let now = Instant::now();
        if p.done_bytes < p.total_bytes && self.0.is_some_and(|t| now - t < PROGRESS_EVERY) {
            return;
        }
        self.0 = Some(now);
        sink.event(Event::Progress(p));
    }
}

fn cancelled() -> OpsError {
    OpsError::Engine(imaging::Error::Cancelled)
}

/// Output format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
}

/// What was written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportReport {
    pub file: PathBuf,
    pub format: Format,
    /// The size of the disk (or partition) the file holds.
    pub size: u64,
    /// Bytes of data written (raw: everything that is not zero; qcow2: as raw input).
    pub data_bytes: u64,
    pub chunks_fetched: u64,
}

/// Exports partition `partition` (or the whole disk) of image `name` to `file`, which
/// must not exist. A failed or cancelled export removes its partial file.
pub fn export(
    store: &Path,
    name: &str,
    file: &Path,
    format: Format,
    partition: Option<u32>,
    sink: &mut dyn Sink,
) -> Result<ExportReport, OpsError> {
    let opened = session::open(store, name)?;
    let view = opened.view(partition)?;
    if file.symlink_metadata().is_ok() {
        return Err(OpsError::Refused(format!(
            "{} already exists; export never overwrites",
            file.display()
        )));
    }
    let r = match format {
        Format::Raw => write_raw(&view, file, sink),
        Format::Qcow2 => write_qcow2(&opened, partition, file, view.size, sink),
    };
    match r {
        Ok(data_bytes) => Ok(ExportReport {
            file: file.to_path_buf(),
            format,
            size: view.size,
            data_bytes,
            chunks_fetched: opened.reader.chunks_fetched(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(file);
            Err(e)
        }
    }
}

/// A sparse file of the view's size with every non-zero block of the stored chunks
/// written in place: never-captured and all-zero chunks stay holes. Progress counts the
/// bytes of stored chunks, the only ones read.
fn write_raw(view: &View, file: &Path, sink: &mut dyn Sink) -> Result<u64, OpsError> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(io_err("creating", file))?;
    out.set_len(view.size).map_err(io_err("sizing", file))?;
    let cs = view.reader.chunk_size();
    let end = view.start + view.size;
    let chunks: Vec<u64> = view
        .reader
        .stored_chunks()
        .filter(|&i| i * cs < end && (i + 1) * cs > view.start)
        .collect();
    let span = |idx: u64| ((idx * cs).max(view.start), ((idx + 1) * cs).min(end));
    let mut progress = Progress {
        total_bytes: chunks.iter().map(|&i| span(i).1 - span(i).0).sum(),
        total_chunks: chunks.len() as u64,
        ..Progress::default()
    };
    sink.event(Event::Phase(PHASE_RAW));
    let mut pace = Pace(None);
    pace.report(sink, progress);
    let mut buf = vec![0u8; cs as usize];
    let mut written = 0;
    for &idx in &chunks {
        if sink.cancelled() {
            return Err(cancelled());
        }
        let (from, to) = span(idx);
        let b = &mut buf[..(to - from) as usize];
        view.reader.read_at(b, from)?;
        // Skip zero 4 KiB blocks inside a stored chunk too (unused filesystem blocks
        // are zeros in a chunk's content, FORMAT.md §6): they stay holes.
        for (k, block) in b.chunks(4096).enumerate() {
            if block.iter().any(|&x| x != 0) {
                let at = from - view.start + (k * 4096) as u64;
                out.write_all_at(block, at)
                    .map_err(io_err("writing", file))?;
                written += block.len() as u64;
            }
        }
        progress.done_bytes += to - from;
        progress.done_chunks += 1;
        progress.written_chunks += 1;
        pace.report(sink, progress);
    }
    out.sync_all().map_err(io_err("syncing", file))?;
    Ok(written)
}

fn write_qcow2(
    opened: &Opened,
    partition: Option<u32>,
    file: &Path,
    size: u64,
    sink: &mut dyn Sink,
) -> Result<u64, OpsError> {
    let dir = session::run_dir()
        .join("fuse")
        .join(format!("export-{}", std::process::id()));
    let mut served = session::serve(opened, &dir)?;
    let src = match partition {
        None | Some(0) => dir.join("disk.img"),
        Some(n) => dir.join(format!("p{n}.img")),
    };
    sink.event(Event::Phase(PHASE_QCOW2));
    let r = convert(&src, file, size, &served, sink);
    let stopped = served.stop();
    if let Err(e) = r {
        let detail = served
            .last_error
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .map(|m| format!(" (image read error: {m})"))
            .unwrap_or_default();
        return Err(match e {
            OpsError::Failed(m) => OpsError::Failed(format!("{m}{detail}")),
            e => e,
        });
    }
    stopped?;
    Ok(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0))
}

/// Runs `qemu-img convert` on the FUSE file, reporting how far its reads got (it reads
/// the raw input once, in order) and stopping it when the sink cancels.
fn convert(
    src: &Path,
    file: &Path,
    size: u64,
    served: &session::Served,
    sink: &mut dyn Sink,
) -> Result<(), OpsError> {
    let mut child = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(src)
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            OpsError::Failed(format!(
                "converting to qcow2: cannot run qemu-img: {e} (install qemu-utils, or export --format raw)"
            ))
        })?;
    let mut pace = Pace(None);
    let at = |done: u64| Progress {
        done_bytes: done.min(size),
        total_bytes: size,
        ..Progress::default()
    };
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io_err("waiting for qemu-img on", src))?
        {
            break status;
        }
        if sink.cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(cancelled());
        }
        // Never 100 % before qemu-img is done: the kernel's readahead may have read the
        // end of the file while qemu-img is still writing.
        pace.report(
            sink,
            at(served
                .served
                .load(Ordering::Relaxed)
                .min(size.saturating_sub(1))),
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    if !status.success() {
        return Err(OpsError::Failed(format!(
            "converting to qcow2: qemu-img failed ({status}): {}",
            err.trim()
        )));
    }
    pace.report(sink, at(size));
    Ok(())
}
