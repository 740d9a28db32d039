//! Writing an image (or one partition) as a file for virtual machines: a sparse raw
//! file, or qcow2 through `qemu-img` reading the FUSE file (no temporary raw copy).

use crate::reader::View;
use crate::session::{self, Opened};
use crate::sys;
use crate::sys::io_err;
use ops::OpsError;
use serde::Serialize;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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
/// must not exist. A failed export removes its partial file.
pub fn export(
    store: &Path,
    name: &str,
    file: &Path,
    format: Format,
    partition: Option<u32>,
    progress: &mut dyn FnMut(u64, u64),
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
        Format::Raw => write_raw(&view, file, progress),
        Format::Qcow2 => write_qcow2(&opened, partition, file),
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
/// written in place: never-captured and all-zero chunks stay holes.
fn write_raw(
    view: &View,
    file: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, OpsError> {
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
    let mut buf = vec![0u8; cs as usize];
    let mut written = 0;
    for (n, idx) in chunks.iter().enumerate() {
        let from = (idx * cs).max(view.start);
        let to = ((idx + 1) * cs).min(end);
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
        progress(n as u64 + 1, chunks.len() as u64);
    }
    out.sync_all().map_err(io_err("syncing", file))?;
    Ok(written)
}

fn write_qcow2(opened: &Opened, partition: Option<u32>, file: &Path) -> Result<u64, OpsError> {
    let dir = session::run_dir()
        .join("fuse")
        .join(format!("export-{}", std::process::id()));
    let mut served = session::serve(opened, &dir)?;
    let src = match partition {
        None | Some(0) => dir.join("disk.img"),
        Some(n) => dir.join(format!("p{n}.img")),
    };
    let r = sys::run(
        "converting to qcow2",
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&src)
            .arg(file),
    );
    let stopped = served.stop();
    if let Err(e) = r {
        let detail = served
            .last_error
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .map(|m| format!(" (image read error: {m})"))
            .unwrap_or_default();
        return Err(OpsError::Failed(format!("{e}{detail}")));
    }
    stopped?;
    Ok(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0))
}
