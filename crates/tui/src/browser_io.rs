//! The image browser's contact with the world, run by the runtime: mounting a
//! partition of an image read-only (`browse`), listing a directory, finding where files
//! can be copied to, and the copy job itself on the worker thread.

use crate::app::{JobFailure, JobKind, JobSuccess};
use crate::browser::{CopyRequest, Dest, Entry, EntryKind};
use crate::model::DiskRow;
use disks::usage::human_size;
use imaging::{Event, Progress, Sink};
use ops::OpsError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where a destination partition that is not mounted yet is mounted for a copy.
const DEST_MOUNTS: &str = "/run/imprint/dest";

/// Mounts partition `partition` of the image read-only in a private directory.
pub fn open(store: &Path, image: &str, partition: u32) -> Result<browse::Mounted, String> {
    browse::mount_private(store, image, Some(partition)).map_err(|e| e.to_string())
}

/// The entries of `dir` (from `/`) of the partition mounted at `root`.
pub fn list(root: &Path, dir: &str) -> Result<Vec<Entry>, String> {
    let rel = browse::extract::inside(dir).map_err(|e| e.to_string())?;
    let path = root.join(rel);
    let rd = std::fs::read_dir(&path).map_err(|e| format!("{dir}: {e}"))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("{dir}: {e}"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        out.push(Entry {
            name,
            kind,
            size: if kind == EntryKind::File { m.len() } else { 0 },
            mtime: Some(m.mtime()),
        });
    }
    Ok(out)
}

/// The kernel filesystem type to mount a destination partition with, for the
/// filesystems Imprint can write files onto.
fn writable_fstype(fs: &str) -> Option<&'static str> {
    Some(match fs {
        "ext2" | "ext3" | "ext4" => "ext4",
        "vfat" | "fat12" | "fat16" | "fat32" => "vfat",
        "exfat" => "exfat",
        "ntfs" => "ntfs3",
        "xfs" => "xfs",
        "btrfs" => "btrfs",
        _ => return None,
    })
}

/// Partitions files can be copied onto: mounted read-write ones, and unmounted ones
/// with a filesystem Imprint can mount. `boot_medium` is where init mounted the boot
/// partition (`IMPRINT_BOOT_MEDIUM`, docs/BOOT.md): the disk holding it offers only its
/// partitions mounted already (its IMPRINT store partition is). Never a partition that
/// is swap, part of a RAID or otherwise held, nor one mounted only read-only
/// (`writable` says whether a mountpoint takes writes: [`writable_mount`]).
pub fn destinations(
    disks: &[DiskRow],
    boot_medium: Option<&Path>,
    writable: &dyn Fn(&Path) -> bool,
) -> Vec<Dest> {
    let mut out = Vec::new();
    for d in disks {
        let on_boot_medium = boot_medium.is_some_and(|b| {
            let m = format!("mounted {}", b.display());
            d.partitions.iter().any(|p| p.in_use.contains(&m)) || d.in_use.contains(&m)
        });
        for p in &d.partitions {
            let Some(fs) = p.fs.clone() else { continue };
            if p.name.starts_with('#') || writable_fstype(&fs).is_none() {
                continue;
            }
            let mounted: Vec<PathBuf> = p
                .in_use
                .iter()
                .filter_map(|u| u.strip_prefix("mounted ").map(PathBuf::from))
                .collect();
            if p.in_use.len() > mounted.len() || (on_boot_medium && mounted.is_empty()) {
                continue;
            }
            let mounted = mounted.into_iter().find(|m| writable(m));
            if mounted.is_none() && !p.in_use.is_empty() {
                continue; // mounted read-only only
            }
            out.push(Dest::Partition {
                node: Path::new("/dev").join(&p.name),
                disk: d.node.clone(),
                line: p.describe(),
                fs,
                mounted,
            });
        }
    }
    out
}

/// Whether the filesystem mounted at `path` takes writes (statvfs without ST_RDONLY).
pub fn writable_mount(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|s| !s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

fn failed(msg: String, advice: &str) -> JobFailure {
    JobFailure {
        kind: "failed".into(),
        exit_code: ops::exit::FAILED,
        message: msg,
        advice: vec![advice.into()],
    }
}

/// A partition mounted read-write for a copy; unmounted (after a sync) when dropped.
struct DestMount {
    dir: PathBuf,
    mounted: bool,
}

impl DestMount {
    fn mount(node: &Path, fs: &str) -> Result<DestMount, String> {
        let fstype = writable_fstype(fs).ok_or_else(|| format!("cannot write onto {fs}"))?;
        let name = node.file_name().map(|n| n.to_string_lossy().into_owned());
        let dir = Path::new(DEST_MOUNTS).join(name.unwrap_or_else(|| "disk".into()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", fstype, "-o", "rw,nosuid,nodev,noexec"])
            .arg(node)
            .arg(&dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mounting {} ({fstype}) read-write: {}",
                node.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(DestMount { dir, mounted: true })
    }

    fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let out = Command::new("umount")
            .arg(&self.dir)
            .output()
            .map_err(|e| format!("running umount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "unmounting {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.mounted = false;
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

impl Drop for DestMount {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// Bytes and files under `path` (not following links).
fn measure(path: &Path, bytes: &mut u64, files: &mut u64) {
    let Ok(m) = path.symlink_metadata() else {
        return;
    };
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                measure(&e.path(), bytes, files);
            }
        }
    } else if m.is_file() {
        *bytes += m.len();
        *files += 1;
    }
}

/// The copy job: marked paths of the mounted partition into a new folder of the
/// destination, with progress in bytes and files; stops between files when cancelled.
pub fn run_copy(req: &CopyRequest, sink: &mut dyn Sink) -> Result<JobSuccess, JobFailure> {
    let started = Instant::now();
    let keep = "Files copied before the error are in the destination folder; nothing in the image changed.";
    let mut mount = None;
    let base = match &req.dest {
        Dest::Directory(p) => p.clone(),
        Dest::Partition {
            mounted: Some(m), ..
        } => m.clone(),
        Dest::Partition { node, fs, .. } => {
            sink.event(Event::Phase("mounting the destination"));
            let m = DestMount::mount(node, fs)
                .map_err(|e| failed(e, "Choose another destination, or check the disk."))?;
            let dir = m.dir.clone();
            mount = Some(m);
            dir
        }
    };
    let to = base.join(&req.folder);
    std::fs::create_dir_all(&to).map_err(|e| {
        failed(
            format!("creating {}: {e}", to.display()),
            "Choose another destination.",
        )
    })?;

    let mut total = Progress::default();
    for item in &req.items {
        let rel = browse::extract::inside(item).map_err(|e| failed(e.to_string(), keep))?;
        measure(
            &req.root.join(rel),
            &mut total.total_bytes,
            &mut total.total_chunks,
        );
    }
    sink.event(Event::Phase("copying files"));
    sink.event(Event::Progress(total));
    let mut progress = total;
    let mut report = browse::ExtractReport::default();
    let mut cancelled = false;
    for item in &req.items {
        if sink.cancelled() {
            cancelled = true;
            break;
        }
        let rel = browse::extract::inside(item).map_err(|e| failed(e.to_string(), keep))?;
        browse::extract::copy_out(&req.root, &rel, &to, &mut report, &mut |e| {
            if e.kind == "file" {
                progress.done_bytes += e.bytes;
                progress.done_chunks += 1;
                progress.written_chunks += 1;
                sink.event(Event::Progress(progress));
            }
        })
        .map_err(|e| copy_failure(&e, keep))?;
    }
    // Mounted for the copy: flushed and unmounted before the result says "done", so
    // the disk can be unplugged at once.
    if let Some(mut m) = mount.take() {
        sink.event(Event::Phase("unmounting the destination"));
        m.unmount().map_err(|e| {
            failed(
                e,
                "Run `sync` in the rescue shell before unplugging the disk.",
            )
        })?;
    } else {
        sync_dir(&to);
    }
    if cancelled {
        return Err(JobFailure {
            kind: "cancelled".into(),
            exit_code: ops::exit::CANCELLED,
            message: format!(
                "stopped after {} files; they are in {}",
                report.files,
                to.display()
            ),
            advice: vec![keep.into()],
        });
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lines = vec![format!(
        "{} files ({}), {} folders, {} links in {:.1} s",
        report.files,
        human_size(report.bytes),
        report.dirs,
        report.symlinks,
        secs
    )];
    if report.skipped > 0 {
        lines.push(format!(
            "{} entries skipped (not files, folders or links)",
            report.skipped
        ));
    }
    let dest = match &req.dest {
        Dest::Partition {
            node,
            mounted: None,
            ..
        } => format!(
            "{} (on {}, unmounted again)",
            Path::new(&req.folder).display(),
            node.display()
        ),
        _ => to.display().to_string(),
    };
    Ok(JobSuccess {
        headline: format!("Copied {} item(s) into {dest}", req.items.len()),
        lines,
    })
}

fn copy_failure(e: &OpsError, keep: &str) -> JobFailure {
    let mut f = crate::runtime::failure(e, JobKind::Copy);
    f.advice.push(keep.into());
    f
}

/// Flushes the filesystem holding `dir` (the destination may be a USB disk unplugged
/// right after).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = rustix::fs::syncfs(&f);
    }
}
