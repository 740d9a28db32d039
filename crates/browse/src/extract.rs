//! Copying files out of a mounted image, keeping timestamps, permissions and (as root)
//! ownership, like `cp -a` without ever overwriting.

use crate::sys::io_err;
use ops::OpsError;
use serde::Serialize;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One thing copied (or skipped).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Extracted {
    /// Path inside the partition, starting with `/`.
    pub path: String,
    /// Where it was written.
    pub to: PathBuf,
    /// `file`, `dir`, `symlink`, or `skipped` (sockets, fifos, device nodes).
    pub kind: &'static str,
    pub bytes: u64,
}

/// Totals of an extraction.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ExtractReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub skipped: u64,
    pub bytes: u64,
}

/// Turns a user's path inside the partition into a relative path, refusing `..` so
/// nothing outside the mounted filesystem can be named.
pub fn inside(path: &str) -> Result<PathBuf, OpsError> {
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(OpsError::Usage(format!(
                    "{path:?}: paths inside the image may not contain \"..\""
                )))
            }
        }
    }
    Ok(rel)
}

fn time_of(secs: i64, nsecs: i64) -> SystemTime {
    let ns = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + ns
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + ns
    }
}

/// Copies `root/rel` to `to_dir/<its name>` (the whole tree for a directory; the
/// contents of the root for `/`), calling `each` for every entry.
pub fn copy_out(
    root: &Path,
    rel: &Path,
    to_dir: &Path,
    report: &mut ExtractReport,
    each: &mut dyn FnMut(&Extracted),
) -> Result<(), OpsError> {
    let src = root.join(rel);
    let meta = fs::symlink_metadata(&src).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            OpsError::Usage(format!("/{} does not exist in the image", rel.display()))
        } else {
            OpsError::Io {
                what: "reading",
                path: src.clone(),
                source: e,
            }
        }
    })?;
    match rel.file_name() {
        Some(name) => copy_entry(&src, &meta, rel, &to_dir.join(name), report, each),
        // The root itself: its contents go straight into `to_dir`.
        None => {
            for entry in sorted_entries(&src)? {
                let m = fs::symlink_metadata(&entry).map_err(io_err("reading", &entry))?;
                let name = entry.file_name().expect("a directory entry has a name");
                copy_entry(
                    &entry,
                    &m,
                    &rel.join(name),
                    &to_dir.join(name),
                    report,
                    each,
                )?;
            }
            Ok(())
        }
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, OpsError> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err("listing", dir))?;
    v.sort();
    Ok(v)
}

fn copy_entry(
    src: &Path,
    meta: &fs::Metadata,
    rel: &Path,
    dst: &Path,
    report: &mut ExtractReport,
    each: &mut dyn FnMut(&Extracted),
) -> Result<(), OpsError> {
    let ft = meta.file_type();
    let shown = format!("/{}", rel.display());
    let mut item = Extracted {
        path: shown,
        to: dst.to_path_buf(),
        kind: "file",
        bytes: 0,
    };
    if ft.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(io_err("creating", dst)(e)),
        }
        item.kind = "dir";
        each(&item);
        report.dirs += 1;
        for entry in sorted_entries(src)? {
            let m = fs::symlink_metadata(&entry).map_err(io_err("reading", &entry))?;
            let name = entry.file_name().expect("a directory entry has a name");
            copy_entry(&entry, &m, &rel.join(name), &dst.join(name), report, each)?;
        }
        // Owner and mode after the contents (a read-only directory must still be
        // filled), times last (creating entries changes a directory's mtime).
        set_owner(dst, meta)?;
        keep_unix(fs::set_permissions(
            dst,
            fs::Permissions::from_mode(meta.mode() & 0o7777),
        ))
        .map_err(io_err("setting permissions of", dst))?;
        set_times(&File::open(dst).map_err(io_err("opening", dst))?, meta, dst)?;
    } else if ft.is_file() {
        let mut from = File::open(src).map_err(io_err("opening", src))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    OpsError::Refused(format!(
                        "{} already exists; extract never overwrites",
                        dst.display()
                    ))
                } else {
                    io_err("creating", dst)(e)
                }
            })?;
        item.bytes = io::copy(&mut from, &mut to).map_err(io_err("copying to", dst))?;
        set_owner(dst, meta)?;
        keep_unix(to.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777)))
            .map_err(io_err("setting permissions of", dst))?;
        set_times(&to, meta, dst)?;
        to.sync_all().map_err(io_err("syncing", dst))?;
        report.files += 1;
        report.bytes += item.bytes;
        each(&item);
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_err("reading link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                OpsError::Refused(format!(
                    "{} already exists; extract never overwrites",
                    dst.display()
                ))
            } else {
                io_err("creating link", dst)(e)
            }
        })?;
        set_owner(dst, meta)?;
        item.kind = "symlink";
        report.symlinks += 1;
        each(&item);
    } else {
        item.kind = "skipped";
        report.skipped += 1;
        each(&item);
    }
    Ok(())
}

fn set_times(f: &File, meta: &fs::Metadata, path: &Path) -> Result<(), OpsError> {
    let times = FileTimes::new()
        .set_accessed(time_of(meta.atime(), meta.atime_nsec()))
        .set_modified(time_of(meta.mtime(), meta.mtime_nsec()));
    f.set_times(times).map_err(io_err("setting times of", path))
}

/// Keeps the owner when running as root (anyone else can only own their files).
fn set_owner(path: &Path, meta: &fs::Metadata) -> Result<(), OpsError> {
    if rustix::process::geteuid().is_root() {
        keep_unix(std::os::unix::fs::lchown(
            path,
            Some(meta.uid()),
            Some(meta.gid()),
        ))
        .map_err(io_err("setting the owner of", path))?;
    }
    Ok(())
}

/// Owners and modes are kept where the destination can hold them: FAT and exFAT (and
/// NTFS without a mapping) refuse most `chown`/`chmod` with EPERM (fat_setattr,
/// exfat_setattr) or do not support them; the data and times are what counts there.
fn keep_unix(r: io::Result<()>) -> io::Result<()> {
    use rustix::io::Errno;
    match r {
        Err(e)
            if matches!(
                Errno::from_io_error(&e),
                Some(Errno::PERM | Errno::OPNOTSUPP)
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_modes_a_filesystem_cannot_hold_do_not_fail_the_copy() {
        let e = |n| Err(io::Error::from_raw_os_error(n));
        assert!(keep_unix(e(1)).is_ok(), "EPERM (vfat, exfat)");
        assert!(keep_unix(e(95)).is_ok(), "EOPNOTSUPP");
        assert!(keep_unix(e(2)).is_err(), "ENOENT is a real failure");
        assert!(keep_unix(e(5)).is_err(), "EIO is a real failure");
    }
}
