//! Mounting an image: the FUSE directory, a read-only loop device on one of its files,
//! the filesystem mounted read-only on top; a state record per mount so that
//! `imprint umount` finds the serving process, or cleans up after one that died.
//!
//! ```text
//! RUN/mounts/<hash of mountpoint>.json   the record (pid, loop device, FUSE directory)
//! RUN/fuse/<hash>/                        the FUSE directory: disk.img, p1.img, …
//! RUN/private/<pid>-<n>/                  mountpoints of `extract`
//! ```
//! RUN is `/run/imprint` (a tmpfs: records never outlive a reboot), or `$IMPRINT_RUN_DIR`.

use crate::fs::{ImageFile, ImageFs};
use crate::parts::{self, Part};
use crate::reader::{ImageReader, View};
use crate::sys;
use crate::sys::io_err;
use imaging::Store;
use ops::OpsError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where records, FUSE directories and private mountpoints live.
pub fn run_dir() -> PathBuf {
    std::env::var_os("IMPRINT_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/imprint"))
}

fn path_hash(p: &Path) -> String {
    let h = blake3::hash(p.as_os_str().as_encoded_bytes());
    h.to_hex()[..16].to_string()
}

/// What `imprint mount` leaves in `RUN/mounts/` while it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub pid: u32,
    /// Start time of `pid` (`/proc/PID/stat` field 22), to tell it from a reused pid.
    pub pid_start: u64,
    pub mountpoint: PathBuf,
    pub fuse_dir: PathBuf,
    /// The FUSE file the loop device reads.
    pub fuse_file: PathBuf,
    pub loop_device: Option<String>,
    pub store: PathBuf,
    pub image: String,
    pub partition: u32,
    pub fstype: String,
    /// The mountpoint is a private directory of `extract`, removed on unmount.
    pub private: bool,
}

fn record_path(mountpoint: &Path) -> PathBuf {
    run_dir()
        .join("mounts")
        .join(format!("{}.json", path_hash(mountpoint)))
}

impl Record {
    fn save(&self) -> Result<(), OpsError> {
        let p = record_path(&self.mountpoint);
        let dir = p.parent().expect("record path has a parent");
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).expect("a record serializes");
        std::fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("writing", &p))
    }

    /// The record of the Imprint mount at `mountpoint`, if there is one.
    pub fn load(mountpoint: &Path) -> Option<Record> {
        let bytes = std::fs::read(record_path(mountpoint)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(record_path(&self.mountpoint));
    }
}

/// An image opened for browsing: the store, the image, a shared reader and its
/// partitions.
#[derive(Debug)]
pub struct Opened {
    pub store: Arc<Store>,
    pub image: imaging::Image,
    pub reader: Arc<ImageReader>,
    pub parts: Vec<Part>,
}

/// Opens `name` in the store at `store` (read-only: no lock, nothing written).
pub fn open(store: &Path, name: &str) -> Result<Opened, OpsError> {
    let store = Arc::new(Store::open_location(&store.to_string_lossy())?);
    let image = store.load_image(name)?;
    let reader = Arc::new(ImageReader::new(store.clone(), &image));
    let parts = parts::partitions(&image.manifest);
    Ok(Opened {
        store,
        image,
        reader,
        parts,
    })
}

impl Opened {
    /// The files of the FUSE directory: `disk.img` and one `pN.img` per partition.
    pub fn files(&self) -> Vec<ImageFile> {
        let mut v = vec![ImageFile {
            name: "disk.img".into(),
            view: View::whole(self.reader.clone()),
        }];
        for p in self.parts.iter().filter(|p| p.index != 0) {
            v.push(ImageFile {
                name: p.file_name(),
                view: View {
                    reader: self.reader.clone(),
                    start: p.start,
                    size: p.size,
                },
            });
        }
        v
    }

    /// The view of partition `n` (0: the whole disk).
    pub fn view(&self, n: Option<u32>) -> Result<View, OpsError> {
        match n {
            None | Some(0) => Ok(View::whole(self.reader.clone())),
            Some(n) => {
                let p = self.parts.iter().find(|p| p.index == n).ok_or_else(|| {
                    OpsError::Usage(format!(
                        "image {:?} has no partition {n}",
                        self.image.manifest.name
                    ))
                })?;
                Ok(View {
                    reader: self.reader.clone(),
                    start: p.start,
                    size: p.size,
                })
            }
        }
    }
}

/// A FUSE directory being served by this process.
#[derive(Debug)]
pub struct Served {
    session: Option<fuser::BackgroundSession>,
    pub dir: PathBuf,
    pub last_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Bytes read from the directory's files so far.
    pub served: Arc<std::sync::atomic::AtomicU64>,
}

/// Serves the image's files read-only over FUSE at `dir` (created when missing).
pub fn serve(opened: &Opened, dir: &Path) -> Result<Served, OpsError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let time =
        humantime::parse_rfc3339(&opened.image.manifest.created).unwrap_or(std::time::UNIX_EPOCH);
    let fs = ImageFs::new(opened.files(), time);
    let last_error = fs.last_error.clone();
    let served = fs.served.clone();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::FSName(format!("imprint:{}", opened.image.manifest.name)),
        fuser::MountOption::Subtype("imprint".into()),
    ];
    let session = fuser::spawn_mount(fs, dir, &cfg).map_err(|e| {
        let _ = std::fs::remove_dir(dir);
        OpsError::Failed(format!(
            "starting the FUSE server at {}: {e} (is /dev/fuse there? `modprobe fuse`)",
            dir.display()
        ))
    })?;
    Ok(Served {
        session: Some(session),
        dir: dir.to_path_buf(),
        last_error,
        served,
    })
}

impl Served {
    /// Unmounts the FUSE directory and removes it.
    pub fn stop(&mut self) -> Result<(), OpsError> {
        if let Some(s) = self.session.take() {
            s.umount_and_join().map_err(|e| {
                OpsError::Failed(format!(
                    "unmounting the FUSE directory {}: {e}",
                    self.dir.display()
                ))
            })?;
        }
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What to mount.
#[derive(Debug, Clone)]
pub struct MountRequest {
    pub store: PathBuf,
    pub name: String,
    pub mountpoint: PathBuf,
    pub partition: Option<u32>,
}

/// An image mounted by this process. Unmount with [`Mounted::unmount`]; dropping it
/// unmounts too (lazily when busy), so an error path never leaves a mount behind.
#[derive(Debug)]
pub struct Mounted {
    pub record: Record,
    pub part: Part,
    pub reader: Arc<ImageReader>,
    served: Option<Served>,
    done: bool,
}

static PRIVATE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Mounts into a fresh private directory (for `extract`).
pub fn mount_private(
    store: &Path,
    name: &str,
    partition: Option<u32>,
) -> Result<Mounted, OpsError> {
    let dir = run_dir().join("private").join(format!(
        "{}-{}",
        std::process::id(),
        PRIVATE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let req = MountRequest {
        store: store.to_path_buf(),
        name: name.to_string(),
        mountpoint: dir.clone(),
        partition,
    };
    mount_inner(&req, true).inspect_err(|_| {
        let _ = std::fs::remove_dir(&dir);
    })
}

/// Mounts partition `req.partition` (or the only mountable one) of the image read-only
/// at `req.mountpoint`.
pub fn mount(req: &MountRequest) -> Result<Mounted, OpsError> {
    mount_inner(req, false)
}

fn mount_inner(req: &MountRequest, private: bool) -> Result<Mounted, OpsError> {
    let opened = open(&req.store, &req.name)?;
    let part = parts::choose(&opened.parts, req.partition, &req.name)?;
    let fs_name = part.filesystem.clone().unwrap_or_default();
    let (fstype, options) = parts::mount_type(&fs_name).ok_or_else(|| {
        OpsError::Usage(format!(
            "partition {} of {:?} holds {}, which Imprint cannot mount; `imprint export` can write it as a raw file",
            part.index,
            req.name,
            if fs_name.is_empty() { "no filesystem it recognized" } else { &fs_name }
        ))
    })?;
    let mp = std::fs::canonicalize(&req.mountpoint).map_err(|e| {
        OpsError::Usage(format!(
            "mountpoint {}: {e}; it must be an existing directory",
            req.mountpoint.display()
        ))
    })?;
    if !mp.is_dir() {
        return Err(OpsError::Usage(format!(
            "mountpoint {} is not a directory",
            mp.display()
        )));
    }
    if let Some(r) = Record::load(&mp) {
        return Err(OpsError::Refused(format!(
            "{} already has an Imprint mount of {:?} (process {}); run `imprint umount {}` first",
            mp.display(),
            r.image,
            r.pid,
            mp.display()
        )));
    }
    if let Some(m) = sys::mount_at(&mp) {
        return Err(OpsError::Refused(format!(
            "{} is already a mountpoint ({} from {})",
            mp.display(),
            m.fstype,
            m.source
        )));
    }
    let fuse_dir = run_dir().join("fuse").join(path_hash(&mp));
    let pid = std::process::id();
    let mut record = Record {
        pid,
        pid_start: sys::start_time(pid).unwrap_or(0),
        mountpoint: mp.clone(),
        fuse_file: fuse_dir.join(part.file_name()),
        fuse_dir: fuse_dir.clone(),
        loop_device: None,
        store: req.store.clone(),
        image: req.name.clone(),
        partition: part.index,
        fstype: fstype.to_string(),
        private,
    };
    // The record exists before anything is set up, so whatever a kill leaves behind
    // is found by `imprint umount`.
    record.save()?;
    let mut mounted = Mounted {
        record: record.clone(),
        part: part.clone(),
        reader: opened.reader.clone(),
        served: None,
        done: false,
    };
    mounted.served = Some(serve(&opened, &fuse_dir)?);
    sys::ensure_module("loop", || Path::new("/dev/loop-control").exists());
    sys::ensure_module(fstype, || sys::has_filesystem(fstype));
    let dev = sys::run(
        "attaching a read-only loop device",
        Command::new("losetup")
            .args(["-r", "-f", "--show"])
            .arg(&record.fuse_file),
    )?;
    record.loop_device = Some(dev.clone());
    mounted.record = record.clone();
    record.save()?;
    sys::run(
        "mounting",
        Command::new("mount")
            .args(["-t", fstype, "-o", options])
            .arg(&dev)
            .arg(&mp),
    )
    .map_err(|e| mount_hint(e, fstype, part.index))?;
    Ok(mounted)
}

/// Says what a failed mount most likely means for this filesystem.
fn mount_hint(e: OpsError, fstype: &str, index: u32) -> OpsError {
    let msg = e.to_string();
    let hint = if msg.contains("unknown filesystem type") {
        format!(
            "this kernel has no {fstype} driver (`modprobe {fstype}`; the Imprint boot environment has it)"
        )
    } else if fstype == "ntfs3" {
        "ntfs3 cannot mount an NTFS volume whose journal ($LogFile) still needs replaying (Windows hibernated it, \
         Fast Startup, or a crash), not even read-only; Imprint never repairs the image: restore the partition \
         and start Windows once (or run `ntfsfix` on the copy), then capture again"
            .to_string()
    } else {
        "the filesystem may be damaged in the image, or was captured while in use".to_string()
    };
    OpsError::Failed(format!(
        "partition {index} cannot be mounted as {fstype}: {msg}; {hint}"
    ))
}

/// Why an unmount did not happen.
pub const BUSY_HINT: &str = "files or directories in it are still in use (a shell's current directory, an open file): close them and retry";

impl Mounted {
    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.record.mountpoint
    }

    /// The last read error the FUSE server answered EIO for (a damaged chunk).
    pub fn last_error(&self) -> Option<String> {
        self.served
            .as_ref()
            .and_then(|s| s.last_error.lock().ok().and_then(|g| g.clone()))
    }

    /// Unmounts the filesystem, detaches the loop device, stops FUSE, removes the
    /// record. When the filesystem is busy it fails and everything stays as it was.
    pub fn unmount(&mut self) -> Result<(), OpsError> {
        if self.done {
            return Ok(());
        }
        let mp = self.record.mountpoint.clone();
        if let Some(dev) = &self.record.loop_device {
            if sys::mount_at(&mp).is_some_and(|m| &m.source == dev) {
                sys::run("unmounting", Command::new("umount").arg(&mp)).map_err(|e| {
                    if e.to_string().contains("busy") {
                        OpsError::Failed(format!("{} is busy: {BUSY_HINT}", mp.display()))
                    } else {
                        e
                    }
                })?;
            }
            detach_loop(dev, &self.record.fuse_file)?;
        }
        if let Some(mut s) = self.served.take() {
            s.stop()?;
        }
        if self.record.private {
            let _ = std::fs::remove_dir(&mp);
        }
        self.record.remove();
        self.done = true;
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.unmount().is_ok() {
            return;
        }
        // An error path: never leave a mount behind this process's FUSE server, which
        // is about to go away. Lazy: the kernel finishes once the last user lets go.
        cleanup(&self.record);
    }
}

/// Detaches `dev` if it is still attached to `file` (a device number may have been
/// reused since), by name, never by a scan of all loop devices.
fn detach_loop(dev: &str, file: &Path) -> Result<(), OpsError> {
    if sys::loop_backing(dev).is_some_and(|b| b == file) {
        sys::run(
            "detaching the loop device",
            Command::new("losetup").args(["-d", dev]),
        )?;
    }
    Ok(())
}

/// Tears down what a record describes without any help from its server (dead, or
/// about to be): lazy unmount of the filesystem, loop detach (the kernel clears it
/// when the filesystem lets go), lazy unmount of the FUSE directory.
fn cleanup(r: &Record) -> Vec<String> {
    let mut errors = vec![];
    if let Some(dev) = &r.loop_device {
        if sys::mount_at(&r.mountpoint).is_some_and(|m| &m.source == dev) {
            if let Err(e) = sys::run(
                "unmounting",
                Command::new("umount").arg("-l").arg(&r.mountpoint),
            ) {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = detach_loop(dev, &r.fuse_file) {
            errors.push(e.to_string());
        }
    }
    if sys::mount_at(&r.fuse_dir).is_some_and(|m| m.fstype.starts_with("fuse")) {
        if let Err(e) = sys::run(
            "unmounting the FUSE directory",
            Command::new("umount").arg("-l").arg(&r.fuse_dir),
        ) {
            errors.push(e.to_string());
        }
    }
    let _ = std::fs::remove_dir(&r.fuse_dir);
    if r.private {
        let _ = std::fs::remove_dir(&r.mountpoint);
    }
    if errors.is_empty() {
        r.remove();
    }
    errors
}

/// What `imprint umount` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UmountOutcome {
    /// The serving process unmounted everything and exited.
    Stopped { pid: u32 },
    /// The serving process was gone; its leftovers were removed.
    RecoveredStale { pid: u32 },
}

/// Unmounts the Imprint mount at `mountpoint`: asks its serving process to stop and
/// waits for it, or cleans up after a process that died. Refuses anything that is not
/// an Imprint mount.
pub fn umount(mountpoint: &Path, wait: Duration) -> Result<(Record, UmountOutcome), OpsError> {
    let mp = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let Some(rec) = Record::load(&mp) else {
        let what = match sys::mount_at(&mp) {
            Some(m) => format!("a {} mount of {}", m.fstype, m.source),
            None => "not mounted".to_string(),
        };
        return Err(OpsError::Refused(format!(
            "{} is not an Imprint mount ({what}; no record in {}); Imprint unmounts only what `imprint mount` mounted",
            mp.display(),
            run_dir().join("mounts").display()
        )));
    };
    if sys::alive(rec.pid, rec.pid_start) {
        sys::terminate(rec.pid)
            .map_err(|e| OpsError::Failed(format!("signalling process {}: {e}", rec.pid)))?;
        let t = Instant::now();
        while sys::alive(rec.pid, rec.pid_start) {
            if t.elapsed() > wait {
                return Err(OpsError::Failed(format!(
                    "process {} serving {} did not stop within {} s; {} is probably busy: {BUSY_HINT}",
                    rec.pid,
                    mp.display(),
                    wait.as_secs(),
                    mp.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if Record::load(&mp).is_none() {
            return Ok((rec.clone(), UmountOutcome::Stopped { pid: rec.pid }));
        }
        // It died without cleaning up (killed while stopping): recover below.
    }
    let errors = cleanup(&rec);
    if !errors.is_empty() {
        return Err(OpsError::Failed(format!(
            "cleaning up the Imprint mount at {} (process {} is gone): {}",
            mp.display(),
            rec.pid,
            errors.join("; ")
        )));
    }
    Ok((rec.clone(), UmountOutcome::RecoveredStale { pid: rec.pid }))
}
