//! Capture job: check the source and the store, plan the extents, run the engine.

use crate::error::OpsError;
use crate::layout;
use disks::usage::{DevNum, SysRoot};
use imaging::{CaptureOptions, CaptureReport, Event, Sink, SourceDisk, Store};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What to capture, where to, under which name.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    /// Block device or regular file.
    pub source: PathBuf,
    /// Store directory (created when missing or empty).
    pub store: PathBuf,
    pub name: String,
    pub description: String,
    /// zstd level.
    pub level: i32,
    /// Chunk size for a store created by this capture.
    pub chunk_size: u32,
    /// Capture a source that is mounted (with a warning).
    pub force: bool,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

/// Runs a capture. Nothing is written to the source, ever; the store gets packs and,
/// last, the manifest.
pub fn capture(req: &CaptureRequest, sink: &mut dyn Sink) -> Result<CaptureReport, OpsError> {
    if imaging::backend::is_http(&req.store.to_string_lossy()) {
        return Err(OpsError::Usage(format!(
            "HTTP stores are read-only: cannot capture into {}; capture into a directory or an smb:// or nfs:// share",
            req.store.display()
        )));
    }
    imaging::format::validate_name(&req.name).map_err(|reason| {
        OpsError::Usage(format!("invalid image name {:?}: {reason}", req.name))
    })?;
    let (src, size, lss, pss) = open_source(&req.source)?;
    let (model, serial) = check_source(req, sink)?;
    let layout = layout::plan(src.file(), size, lss, sink);
    // The disk's sectors are what its table counts in, whatever an adapter reports.
    let lss = layout.table_sector_size.unwrap_or(lss);
    let store = Store::open_writable(&req.store, req.chunk_size)?;
    let mut writer = store.writer()?;
    let opts = CaptureOptions {
        name: req.name.clone(),
        description: req.description.clone(),
        level: req.level,
        source: SourceDisk {
            path: req.source.display().to_string(),
            size,
            logical_sector_size: lss,
            physical_sector_size: pss,
            model,
            serial,
        },
        extents: layout.extents,
        partition_table: layout.table,
        partitions: layout.partitions,
        threads: req.threads,
    };
    // The chunks are read past the page cache where the source allows it: no copy
    // through the cache, and no cache full of a disk nobody reads again.
    let reader = imaging::io::DirectFile::new(src.file(), src.open_direct());
    imaging::capture(&mut writer, &reader, opts, sink).map_err(|e| {
        if imaging::capture::is_out_of_space(&e) {
            OpsError::StoreFull {
                store: req.store.clone(),
                source: e,
            }
        } else {
            e.into()
        }
    })
}

/// The source opened read-only, with its size and logical and physical sector sizes.
fn open_source(source: &Path) -> Result<(disks::blockdev::Target, u64, u32, u32), OpsError> {
    let src = disks::blockdev::open_source(source)?;
    let size = src.size()?;
    let (lss, pss) = if src.is_block_device() {
        (src.logical_sector_size()?, src.physical_sector_size()?)
    } else {
        (512, 512)
    };
    Ok((src, size, lss, pss))
}

/// What a capture of a disk would read, planned exactly as [`capture`] plans it
/// (`layout::plan`), without touching any store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePreview {
    /// The disk's size.
    pub size: u64,
    /// Bytes inside the planned extents: the table areas, boot areas and every
    /// partition's used blocks (unknown partitions whole). The image stores at most
    /// this much, before compression and deduplication.
    pub read_bytes: u64,
    /// Why parts are captured whole, and the like.
    pub warnings: Vec<String>,
}

/// Plans the capture of `source` (read-only) and says how much it would read.
pub fn preview_capture(source: &Path) -> Result<CapturePreview, OpsError> {
    let (src, size, lss, _) = open_source(source)?;
    let mut sink = imaging::VecSink::default();
    let layout = layout::plan(src.file(), size, lss, &mut sink);
    Ok(CapturePreview {
        size,
        read_bytes: layout.extents.iter().map(|e| e.len).sum(),
        warnings: sink
            .0
            .into_iter()
            .filter_map(|e| match e {
                Event::Warning(w) => Some(w),
                _ => None,
            })
            .collect(),
    })
}

/// Refuses a source that contains the store (the image would capture itself being
/// written) and, without `force`, a source with a filesystem mounted writable. Returns model
/// and serial.
fn check_source(
    req: &CaptureRequest,
    sink: &mut dyn Sink,
) -> Result<(Option<String>, Option<String>), OpsError> {
    let root = SysRoot::live();
    let meta = std::fs::metadata(&req.source).map_err(|source| OpsError::Io {
        what: "reading",
        path: req.source.clone(),
        source,
    })?;
    let store_anchor = nearest_existing(&req.store);
    if meta.file_type().is_file() {
        let canon = std::fs::canonicalize(&req.source).map_err(|source| OpsError::Io {
            what: "resolving",
            path: req.source.clone(),
            source,
        })?;
        if let Ok(store) = std::fs::canonicalize(&req.store) {
            if canon.starts_with(&store) {
                return Err(OpsError::Refused(format!(
                    "refusing to capture {}: it is inside the store {}; capture it from elsewhere",
                    req.source.display(),
                    req.store.display()
                )));
            }
        }
        return Ok((None, None));
    }
    if !meta.file_type().is_block_device() {
        return Err(OpsError::Usage(format!(
            "{} is neither a block device nor a regular file",
            req.source.display()
        )));
    }
    let dev = root
        .block_dev(DevNum::from_dev_t(meta.rdev()))
        .map_err(|source| OpsError::Io {
            what: "finding in sysfs",
            path: req.source.clone(),
            source,
        })?;
    let desc = root.describe(&dev);
    let holding = root.devices_holding(&store_anchor).unwrap_or_default();
    let disk = root.whole_disk(&dev).ok();
    if holding
        .iter()
        .any(|h| h.devnum == dev.devnum || disk.as_ref().is_some_and(|d| d.devnum == h.devnum))
    {
        return Err(OpsError::Refused(format!(
            "refusing to capture {desc}: the store {} is on it, so the image would contain itself \
             half-written; put the store on another disk",
            req.store.display()
        )));
    }
    let usage = root.usage(&dev).map_err(|source| OpsError::Io {
        what: "reading mounts of",
        path: req.source.clone(),
        source,
    })?;
    // A read-only filesystem cannot change while it is read (the text UI's probes for
    // stores mount that way, on either console), so only a writable one stops a capture.
    if let Some(m) = usage.mounts.iter().find(|m| !m.read_only) {
        let msg = format!(
            "{} is mounted on {}: files changing during capture make an inconsistent image",
            m.device.display(),
            m.mountpoint.display()
        );
        if !req.force {
            return Err(OpsError::Refused(format!(
                "refusing to capture {desc}: {msg}; unmount it, or pass --force to capture anyway"
            )));
        }
        sink.event(Event::Warning(format!("capturing anyway (--force): {msg}")));
    }
    Ok((desc.model, desc.serial))
}

/// `path` if it exists, else its nearest existing ancestor (a store about to be created).
pub(crate) fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
    p
}
