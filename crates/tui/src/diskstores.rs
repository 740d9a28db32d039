//! Stores on other disks' filesystems (issue 6, "stores on other disks"): every
//! partition with a filesystem the kernel can mount is mounted read-only under
//! `/run/imprint/disks/NAME` with options that replay no journal, looked into for an
//! Imprint store (at its root or one folder down), and kept mounted only when it holds
//! one. A partition that leaves (USB stick pulled) is detached; one that changes (size,
//! filesystem) is probed again.
//!
//! Safety: only read-only mounts, never of a disk a job writes or the restore wizard
//! has chosen; the store's filesystem becomes writable only for a capture into it, and
//! read-only again after. A disk holding a store shown here is refused as a restore
//! target by the interlocks (it is mounted); [`DiskStores::refusal`] says why in words.

use crate::model::{DiskRow, STORE_MARKER};
use rustix::mount::{MountFlags, UnmountFlags};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Where partitions are mounted (the boot image's `/run` is a tmpfs).
pub const MOUNT_BASE: &str = "/run/imprint/disks";

/// The kernel filesystem and the mount(2) options that read a filesystem without
/// writing it (journal replay skipped), as `imprint mount` uses them
/// (`browse::parts::mount_type`); `None`: not probed.
pub fn read_only_mount(fs: &str) -> Option<(&'static str, String)> {
    let (fstype, opts) = browse::parts::mount_type(fs)?;
    // `ro` is the RDONLY flag of mount(2), not filesystem data.
    let data: Vec<&str> = opts.split(',').filter(|o| *o != "ro").collect();
    Some((fstype, data.join(",")))
}

/// A partition that may hold a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub disk: PathBuf,
    pub node: PathBuf,
    /// Kernel name (`sdc1`): the mount directory's name.
    pub name: String,
    /// As discovery names it (`ext4`, `vfat`, ...).
    pub fs: String,
    pub label: Option<String>,
    pub size: u64,
}

impl Candidate {
    /// `sdc1 ext4 "DATA"`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.name, self.fs);
        if let Some(l) = &self.label {
            s.push_str(&format!(" \"{l}\""));
        }
        s
    }
}

/// The partitions worth probing: a filesystem [`read_only_mount`] knows, a kernel
/// node, nothing using it (a mount elsewhere, swap, a RAID or LVM holder), and not on
/// a `busy` disk (the one a job writes or the restore wizard chose). A partition
/// already mounted at `base/NAME` (by this or another Imprint TUI: tty1 and the serial
/// console run one each) comes with that mount point, to be listed, not probed.
pub fn candidates(
    disks: &[DiskRow],
    busy: &[PathBuf],
    base: &Path,
) -> Vec<(Candidate, Option<PathBuf>)> {
    disks
        .iter()
        .filter(|d| !busy.contains(&d.node) && d.in_use.is_empty())
        .flat_map(|d| {
            d.partitions.iter().filter_map(move |p| {
                let fs = p.fs.as_deref()?;
                read_only_mount(fs)?;
                if p.name.starts_with('#') || p.name.contains('/') {
                    return None;
                }
                let ours = base.join(&p.name);
                let at = match p.in_use.as_slice() {
                    [] => None,
                    [u] if u.strip_prefix("mounted ").map(Path::new) == Some(ours.as_path()) => {
                        Some(ours)
                    }
                    _ => return None,
                };
                let c = Candidate {
                    disk: d.node.clone(),
                    node: Path::new("/dev").join(&p.name),
                    name: p.name.clone(),
                    fs: fs.to_string(),
                    label: p.label.clone(),
                    size: p.size,
                };
                Some((c, at))
            })
        })
        .collect()
}

/// True when `mounted` (a partition Imprint mounted) is still the partition now listed
/// as `now`: same node, filesystem and size. Our own mount shows in its in-use marks.
fn same_partition(mounted: &Candidate, disks: &[DiskRow]) -> bool {
    disks.iter().any(|d| {
        d.node == mounted.disk
            && d.partitions.iter().any(|p| {
                p.name == mounted.name
                    && p.size == mounted.size
                    && p.fs.as_deref() == Some(mounted.fs.as_str())
            })
    })
}

/// Store directories inside a mounted filesystem: its root, or folders one level down.
pub fn find_stores(root: &Path) -> Vec<PathBuf> {
    if root.join(STORE_MARKER).is_file() {
        return vec![root.to_owned()];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join(STORE_MARKER).is_file())
        .collect();
    v.sort();
    v
}

/// One mounted partition holding stores.
#[derive(Debug)]
pub struct Mounted {
    pub part: Candidate,
    pub mountpoint: PathBuf,
    pub stores: Vec<PathBuf>,
    pub writable: bool,
    /// Mounted by this process (else found mounted by another Imprint TUI): only
    /// this process unmounts it when it exits.
    pub owned: bool,
}

/// The partitions Imprint mounted, and those it looked into and let go.
#[derive(Debug)]
pub struct DiskStores {
    base: PathBuf,
    pub mounted: Vec<Mounted>,
    /// Probed: no store, or not mountable (with why). Probed again when they change.
    passed: Vec<(Candidate, Option<String>)>,
}

impl DiskStores {
    pub fn new(base: impl Into<PathBuf>) -> DiskStores {
        DiskStores {
            base: base.into(),
            mounted: Vec::new(),
            passed: Vec::new(),
        }
    }

    /// Detaches what left, probes what is new. Returns log lines (empty: no change).
    pub fn sync(&mut self, disks: &[DiskRow], busy: &[PathBuf]) -> Vec<String> {
        let mut log = Vec::new();
        let mut keep = Vec::new();
        let now = candidates(disks, busy, &self.base);
        for m in std::mem::take(&mut self.mounted) {
            let still_there = now
                .iter()
                .any(|(c, at)| c.node == m.part.node && at.as_ref() == Some(&m.mountpoint));
            if same_partition(&m.part, disks) && (m.owned || still_there) {
                keep.push(m);
            } else if same_partition(&m.part, disks) {
                // The other TUI let it go (it exited): probed again below.
            } else {
                // The stick was pulled (or the partition changed): a lazy detach, as
                // the device may be gone; nothing of ours has a file open on it.
                let _ = rustix::mount::unmount(&m.mountpoint, UnmountFlags::DETACH);
                let _ = std::fs::remove_dir(&m.mountpoint);
                log.push(format!(
                    "store on {} gone: {} unmounted",
                    m.part.describe(),
                    m.mountpoint.display()
                ));
            }
        }
        self.mounted = keep;
        self.passed.retain(|(c, _)| now.iter().any(|(n, _)| n == c));
        // One probe at a time across the two TUIs: else one reads the other's brief
        // probe mount just as it is unmounted (which then fails), or mounts a partition
        // the other is mounting. Busy: the next look, a few seconds on, probes instead.
        let Some(_turn) = ProbeLock::try_take(&self.base) else {
            return log;
        };
        for (c, at) in now {
            if self.mounted.iter().any(|m| m.part.node == c.node) {
                continue;
            }
            if let Some(at) = at {
                // Mounted by the other TUI. No store (yet): its probe is under way.
                let stores = find_stores(&at);
                if !stores.is_empty() {
                    log.push(format!(
                        "store on {} listed from {}",
                        c.describe(),
                        at.display()
                    ));
                    self.mounted.push(Mounted {
                        part: c,
                        mountpoint: at,
                        stores,
                        writable: false,
                        owned: false,
                    });
                }
                continue;
            }
            if self.passed.iter().any(|(p, _)| *p == c) {
                continue;
            }
            match self.probe(&c) {
                Ok(Some(m)) => {
                    log.push(format!(
                        "store found on {} ({}), mounted read-only at {}",
                        c.describe(),
                        c.disk.display(),
                        m.mountpoint.display()
                    ));
                    self.mounted.push(m);
                }
                Ok(None) => self.passed.push((c, None)),
                // Held by a writer (a restore holds its disk exclusively): not
                // remembered, so it is probed again once the writer lets go.
                Err(Refused::Busy) => {}
                Err(Refused::Other(e)) => {
                    log.push(format!("looking for a store on {}: {e}", c.describe()));
                    self.passed.push((c, Some(e)));
                }
            }
        }
        log
    }

    /// Mounts `c` read-only, keeps it when it holds a store.
    fn probe(&self, c: &Candidate) -> Result<Option<Mounted>, Refused> {
        let other = Refused::Other;
        let (fstype, opts) =
            read_only_mount(&c.fs).ok_or(other("not a filesystem Imprint reads".into()))?;
        let opts = opts.as_str();
        let mountpoint = self.base.join(&c.name);
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| other(format!("creating {}: {e}", mountpoint.display())))?;
        if let Err(e) = mount(&c.node, &mountpoint, fstype, opts, false) {
            let _ = std::fs::remove_dir(&mountpoint);
            if e == rustix::io::Errno::BUSY {
                return Err(Refused::Busy);
            }
            return Err(other(format!(
                "mounting {} read-only: {e}",
                c.node.display()
            )));
        }
        let stores = find_stores(&mountpoint);
        if stores.is_empty() {
            release(&mountpoint);
            return Ok(None);
        }
        Ok(Some(Mounted {
            part: c.clone(),
            mountpoint,
            stores,
            writable: false,
            owned: true,
        }))
    }

    /// The mount holding store directory `store`, if it is one of ours.
    pub fn holding(&self, store: &Path) -> Option<&Mounted> {
        self.mounted
            .iter()
            .find(|m| store.starts_with(&m.mountpoint))
    }

    /// Makes the filesystem holding `store` writable for a capture: unmounted and
    /// mounted again read-write (an ext4 mounted with `noload` cannot be remounted
    /// read-write). A store not on a disk Imprint mounted is left alone.
    pub fn make_writable(&mut self, store: &Path) -> Result<(), String> {
        let Some(m) = self
            .mounted
            .iter_mut()
            .find(|m| store.starts_with(&m.mountpoint))
        else {
            return Ok(());
        };
        if m.writable {
            return Ok(());
        }
        let (fstype, ro_opts) = read_only_mount(&m.part.fs).unwrap_or_default();
        rustix::mount::unmount(&m.mountpoint, UnmountFlags::empty()).map_err(|e| {
            format!(
                "the store's filesystem {} is busy ({e}); try again",
                m.mountpoint.display()
            )
        })?;
        // The journal is replayed, as any writer must; FAT keeps its charset.
        let rw_opts = if fstype == "vfat" {
            "iocharset=utf8"
        } else {
            ""
        };
        if let Err(e) = mount(&m.part.node, &m.mountpoint, fstype, rw_opts, true) {
            // Back to how it was, so the store stays listed.
            let _ = mount(&m.part.node, &m.mountpoint, fstype, &ro_opts, false);
            return Err(format!(
                "{} cannot be mounted for writing ({e}): the filesystem may need a check \
                 (fsck) or be write-protected; choose another store",
                m.part.describe()
            ));
        }
        m.writable = true;
        m.owned = true;
        Ok(())
    }

    /// Every filesystem made writable for a capture goes back to read-only.
    pub fn make_read_only(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        for m in self.mounted.iter_mut().filter(|m| m.writable) {
            let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
            match rustix::mount::mount_remount(&m.mountpoint, flags, "") {
                Ok(()) => m.writable = false,
                Err(e) => log.push(format!(
                    "{} stays writable: remounting read-only failed ({e})",
                    m.mountpoint.display()
                )),
            }
        }
        log
    }

    /// Why the interlocks refuse `disk` in words, when a store shown here is on it.
    pub fn refusal(&self, disk: &Path) -> Option<String> {
        let m = self.mounted.iter().find(|m| m.part.disk == disk)?;
        Some(format!(
            "it holds the image store on {} (mounted read-only by Imprint at {} to list its \
             images), and Imprint never writes a disk whose store it shows; choose another disk",
            m.part.describe(),
            m.mountpoint.display()
        ))
    }
}

impl Drop for DiskStores {
    fn drop(&mut self) {
        for m in self.mounted.iter().filter(|m| m.owned) {
            release(&m.mountpoint);
        }
    }
}

/// Why a probe mounted nothing.
#[derive(Debug)]
enum Refused {
    /// The device is held (`EBUSY`): a writer has it, for now.
    Busy,
    Other(String),
}

/// Unmounts `at` and removes the directory. When something still has a file open there
/// (the other TUI listing it), the mount is detached instead: it leaves the mount table
/// at once and the kernel lets go of the filesystem when the last file closes. A probe's
/// mount never outlives the probe, where a capture of its disk would find it and refuse.
fn release(at: &Path) {
    if rustix::mount::unmount(at, UnmountFlags::empty()).is_err() {
        let _ = rustix::mount::unmount(at, UnmountFlags::DETACH);
    }
    let _ = std::fs::remove_dir(at);
}

/// An exclusive `flock` on `BASE/.probing`, shared by every process that probes under
/// `BASE` (the TUIs on tty1 and on the serial console); released when dropped or when the
/// process dies.
struct ProbeLock {
    _file: Option<std::fs::File>,
}

impl ProbeLock {
    /// The lock, or None while another process holds it. When the lock file cannot be
    /// made or locked at all, the probes go on unlocked, as they did before the lock.
    fn try_take(base: &Path) -> Option<ProbeLock> {
        use rustix::fs::{flock, FlockOperation};
        let open = || {
            std::fs::create_dir_all(base)?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(base.join(".probing"))
        };
        let Ok(f) = open() else {
            return Some(ProbeLock { _file: None });
        };
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Err(rustix::io::Errno::WOULDBLOCK) => None,
            _ => Some(ProbeLock { _file: Some(f) }),
        }
    }
}

fn mount(
    node: &Path,
    at: &Path,
    fstype: &str,
    opts: &str,
    writable: bool,
) -> Result<(), rustix::io::Errno> {
    let data = CString::new(opts).map_err(|_| rustix::io::Errno::INVAL)?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if !writable {
        flags |= MountFlags::RDONLY;
    }
    let try_mount = || rustix::mount::mount(node, at, fstype, flags, data.as_c_str());
    match try_mount() {
        // The boot environment loads filesystem modules on demand (as ops::locations
        // does for cifs and nfs).
        Err(rustix::io::Errno::NODEV) => {
            let _ = std::process::Command::new("modprobe")
                .args(["-q", fstype])
                .stdin(std::process::Stdio::null())
                .status();
            try_mount()
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PartRow;

    fn part(name: &str, fs: &str, in_use: &[&str]) -> PartRow {
        PartRow {
            name: name.into(),
            size: 1 << 30,
            fs: (!fs.is_empty()).then(|| fs.into()),
            label: None,
            in_use: in_use.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn disk(node: &str, parts: Vec<PartRow>) -> DiskRow {
        DiskRow {
            node: node.into(),
            size: 8 << 30,
            model: None,
            serial: None,
            bus: "usb".into(),
            removable: true,
            partitions: parts,
            in_use: vec![],
        }
    }

    #[test]
    fn only_unused_partitions_with_a_known_filesystem_are_probed() {
        let disks = vec![
            disk(
                "/dev/sdb",
                vec![
                    part("sdb1", "vfat", &[]),
                    part("sdb2", "ext4", &["mounted /"]),
                    part("sdb3", "swap", &[]),
                    part("sdb4", "", &[]),
                    part("sdb5", "ntfs", &[]),
                ],
            ),
            disk("/dev/sdc", vec![part("sdc1", "exfat", &[])]),
        ];
        let base = Path::new(MOUNT_BASE);
        let names: Vec<String> = candidates(&disks, &[], base)
            .into_iter()
            .map(|(c, _)| c.name)
            .collect();
        assert_eq!(names, ["sdb1", "sdb5", "sdc1"]);
        assert_eq!(
            candidates(&disks, &[], base)[0].0.node,
            Path::new("/dev/sdb1")
        );
    }

    #[test]
    fn a_busy_disk_is_never_probed() {
        let disks = vec![
            disk("/dev/sdb", vec![part("sdb1", "ext4", &[])]),
            disk("/dev/sdc", vec![part("sdc1", "ext4", &[])]),
        ];
        let c = candidates(&disks, &["/dev/sdb".into()], Path::new(MOUNT_BASE));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0.disk, Path::new("/dev/sdc"));
    }

    #[test]
    fn a_disk_held_as_a_whole_is_not_probed() {
        let mut d = disk("/dev/sdb", vec![part("sdb1", "ext4", &[])]);
        d.in_use = vec!["held by md127".into()];
        assert!(candidates(&[d], &[], Path::new(MOUNT_BASE)).is_empty());
    }

    #[test]
    fn a_partition_mounted_by_the_other_tui_is_listed_from_its_mount() {
        let base = Path::new(MOUNT_BASE);
        let disks = vec![disk(
            "/dev/sdb",
            vec![
                part("sdb1", "ext4", &["mounted /run/imprint/disks/sdb1"]),
                part("sdb2", "ext4", &["mounted /media/x"]),
            ],
        )];
        let c = candidates(&disks, &[], base);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1.as_deref(), Some(base.join("sdb1").as_path()));
    }

    #[test]
    fn journals_are_never_replayed_by_a_probe() {
        assert_eq!(read_only_mount("ext3"), Some(("ext4", "noload".into())));
        assert_eq!(read_only_mount("xfs"), Some(("xfs", "norecovery".into())));
        assert_eq!(read_only_mount("ntfs"), Some(("ntfs3", String::new())));
        assert_eq!(
            read_only_mount("vfat"),
            Some(("vfat", "iocharset=utf8".into()))
        );
        assert_eq!(read_only_mount("swap"), None);
        assert_eq!(read_only_mount("LVM2_member"), None);
    }

    #[test]
    fn a_partition_that_changed_or_left_is_not_the_one_mounted() {
        let c = Candidate {
            disk: "/dev/sdb".into(),
            node: "/dev/sdb1".into(),
            name: "sdb1".into(),
            fs: "ext4".into(),
            label: None,
            size: 1 << 30,
        };
        let mut disks = vec![disk(
            "/dev/sdb",
            vec![part("sdb1", "ext4", &["mounted /run/imprint/disks/sdb1"])],
        )];
        assert!(same_partition(&c, &disks), "our own mount does not count");
        disks[0].partitions[0].size = 2 << 30;
        assert!(!same_partition(&c, &disks));
        assert!(!same_partition(&c, &[]));
    }

    #[test]
    fn stores_are_found_at_the_root_or_one_folder_down() {
        let d = tempfile::tempdir().unwrap();
        assert!(find_stores(d.path()).is_empty());
        for sub in ["imprint", "other/deeper"] {
            std::fs::create_dir_all(d.path().join(sub)).unwrap();
            std::fs::write(d.path().join(sub).join(STORE_MARKER), "{}").unwrap();
        }
        assert_eq!(find_stores(d.path()), [d.path().join("imprint")]);
        std::fs::write(d.path().join(STORE_MARKER), "{}").unwrap();
        assert_eq!(find_stores(d.path()), [d.path().to_owned()]);
    }
}
