//! Who uses a block device, read from the kernel's own tables:
//! `/proc/self/mountinfo` (proc(5)), `/proc/swaps`, and sysfs
//! (`/sys/dev/block/MAJ:MIN`, `/sys/class/block/NAME/{holders,slaves,partition}`,
//! see Documentation/ABI/stable/sysfs-block). Also which disk holds a path
//! (the image store, the source image, the boot medium).
//!
//! Every lookup goes through a [`SysRoot`], so tests run on canned text and
//! fake sysfs trees built in a temporary directory.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A device number (`dev_t`) split as the kernel shows it: `MAJ:MIN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Splits a glibc `dev_t` (the encoding of `gnu_dev_major`/`gnu_dev_minor`).
    pub fn from_dev_t(dev: u64) -> DevNum {
        DevNum {
            major: (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32,
            minor: ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32,
        }
    }

    /// Parses `"8:1"` (sysfs `dev` files, mountinfo field 3).
    pub fn parse(s: &str) -> Option<DevNum> {
        let (maj, min) = s.trim().split_once(':')?;
        Some(DevNum {
            major: maj.parse().ok()?,
            minor: min.parse().ok()?,
        })
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Where the kernel's tables are read from. [`SysRoot::live`] is the running
/// system; tests point the three roots into a temporary directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysRoot {
    /// sysfs mount point, normally `/sys`.
    pub sys: PathBuf,
    /// procfs mount point, normally `/proc`; `self/mountinfo` and `swaps` are read.
    pub proc: PathBuf,
    /// devtmpfs mount point, normally `/dev`; device nodes are named under it.
    pub dev: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot::live()
    }
}

/// A block device as sysfs names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name: `sda`, `sda1`, `nvme0n1p2`, `loop3`.
    pub name: String,
    pub devnum: DevNum,
    /// Device node: `/dev/sda1` (under [`SysRoot::dev`]).
    pub node: PathBuf,
    /// True for a partition (sysfs has a `partition` attribute).
    pub is_partition: bool,
    /// The device's canonical sysfs directory.
    pub sysfs: PathBuf,
}

/// One line of `/proc/self/mountinfo`, unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// `st_dev` of files on this mount (field 3).
    pub devnum: DevNum,
    /// Field 4: the directory of the filesystem that forms this mount's root.
    pub root: PathBuf,
    pub mountpoint: PathBuf,
    pub fstype: String,
    /// The mount source: a device node for block filesystems, else free text.
    pub source: String,
    /// The filesystem itself is read-only (its super options start with `ro`), on
    /// every mount of it: nothing can change its files until it is remounted.
    pub read_only: bool,
}

/// One line of `/proc/swaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapEntry {
    pub filename: PathBuf,
    /// `partition` or `file`.
    pub kind: String,
}

/// A mount of a device (the device itself or one of its partitions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountUse {
    pub device: PathBuf,
    pub mountpoint: PathBuf,
    pub fstype: String,
    /// See [`MountEntry::read_only`].
    #[serde(default)]
    pub read_only: bool,
}

/// A device claimed by another kernel device (device-mapper, md, bcache...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderUse {
    pub device: PathBuf,
    /// The holder's kernel name, e.g. `dm-0`, `md127`.
    pub holder: String,
}

/// Everything that uses a device or any of its partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InUse {
    pub mounts: Vec<MountUse>,
    /// Device nodes in use as swap.
    pub swaps: Vec<PathBuf>,
    pub holders: Vec<HolderUse>,
}

impl InUse {
    pub fn is_busy(&self) -> bool {
        !(self.mounts.is_empty() && self.swaps.is_empty() && self.holders.is_empty())
    }
}

/// A short human description of a device: node, and model, serial and size
/// when sysfs knows them. Its `Display` is what refusals show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDesc {
    pub node: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size: Option<u64>,
}

impl DeviceDesc {
    /// A description with only the node (for regular files and unknown devices).
    pub fn bare(node: &Path) -> DeviceDesc {
        DeviceDesc {
            node: node.to_owned(),
            model: None,
            serial: None,
            size: None,
        }
    }
}

impl fmt::Display for DeviceDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.node.display())?;
        let mut extra = Vec::new();
        if let Some(m) = &self.model {
            extra.push(m.clone());
        }
        if let Some(s) = &self.serial {
            extra.push(format!("serial {s}"));
        }
        if let Some(size) = self.size {
            extra.push(human_size(size));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(", "))?;
        }
        Ok(())
    }
}

/// Binary-prefixed size for amounts of data: `1.5 GiB`, `512 B`.
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Decimal size as disk vendors label disks: `500.1 GB`, plus the exact bytes
/// for small values.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Parses `/proc/self/mountinfo` text (proc(5)). Lines that do not parse are
/// skipped: the kernel's format is fixed, and a half line must not make us
/// believe nothing is mounted, so callers read the whole file at once.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let devnum = DevNum::parse(fields.next()?)?;
    let root = unescape(fields.next()?);
    let mountpoint = unescape(fields.next()?);
    let _options = fields.next()?;
    // Zero or more optional fields ("shared:1", "master:2"), ended by "-".
    for f in fields.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fstype = unescape(fields.next()?);
    let source = unescape(fields.next()?);
    // The super options: the filesystem's own, shared by all its mounts (the per-mount
    // options above can be `ro` on one bind mount while another writes). Missing: counted
    // as writable, the safe side.
    let read_only = fields.next().and_then(|o| o.split(',').next()) == Some("ro");
    Some(MountEntry {
        devnum,
        root: PathBuf::from(root),
        mountpoint: PathBuf::from(mountpoint),
        fstype,
        source,
        read_only,
    })
}

/// Undoes the kernel's octal escapes (`\040` for space, `\011` tab, `\012`
/// newline, `\134` backslash) in mountinfo and swaps fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/swaps`: a header line, then `Filename Type Size Used Priority`
/// separated by whitespace, the file name escaped like mountinfo.
pub fn parse_swaps(text: &str) -> Vec<SwapEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let filename = f.next()?;
            let kind = f.next()?;
            Some(SwapEntry {
                filename: PathBuf::from(unescape(filename)),
                kind: kind.to_owned(),
            })
        })
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    let mut names = match fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    names.sort();
    Ok(names)
}

/// How deep loop-over-file and dm/md stacks are followed; real stacks are a
/// few levels, and a cycle must not hang us.
const MAX_STACK_DEPTH: usize = 8;

impl SysRoot {
    /// The running system: `/sys`, `/proc`, `/dev`.
    pub fn live() -> SysRoot {
        SysRoot {
            sys: PathBuf::from("/sys"),
            proc: PathBuf::from("/proc"),
            dev: PathBuf::from("/dev"),
        }
    }

    /// Reads and parses `/proc/self/mountinfo`.
    pub fn mounts(&self) -> io::Result<Vec<MountEntry>> {
        Ok(parse_mountinfo(&fs::read_to_string(
            self.proc.join("self/mountinfo"),
        )?))
    }

    /// Reads and parses `/proc/swaps`; a kernel without swap support has no
    /// such file, which means no swap.
    pub fn swaps(&self) -> io::Result<Vec<SwapEntry>> {
        match fs::read_to_string(self.proc.join("swaps")) {
            Ok(text) => Ok(parse_swaps(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The block device with this number (`/sys/dev/block/MAJ:MIN`).
    pub fn block_dev(&self, devnum: DevNum) -> io::Result<BlockDev> {
        self.block_dev_at(&self.sys.join("dev/block").join(devnum.to_string()))
    }

    /// The block device with this kernel name (`/sys/class/block/NAME`).
    pub fn block_dev_by_name(&self, name: &str) -> io::Result<BlockDev> {
        self.block_dev_at(&self.sys.join("class/block").join(name))
    }

    /// The block device whose node is `node` (stat'ed for its `st_rdev`).
    pub fn block_dev_by_node(&self, node: &Path) -> io::Result<BlockDev> {
        let meta = fs::metadata(node)?;
        if !meta.file_type().is_block_device() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a block device", node.display()),
            ));
        }
        self.block_dev(DevNum::from_dev_t(meta.rdev()))
    }

    fn block_dev_at(&self, link: &Path) -> io::Result<BlockDev> {
        let sysfs = fs::canonicalize(link)?;
        let name = sysfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "sysfs path has no name"))?;
        let devnum = read_trimmed(&sysfs.join("dev"))
            .and_then(|s| DevNum::parse(&s))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}/dev is missing or malformed", sysfs.display()),
                )
            })?;
        // DEVNAME in uevent is the node name relative to /dev; the directory
        // name differs for a few drivers ('!' stands for '/', e.g. cciss!c0d0).
        let devname = fs::read_to_string(sysfs.join("uevent"))
            .ok()
            .and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned))
            })
            .unwrap_or_else(|| name.replace('!', "/"));
        Ok(BlockDev {
            node: self.dev.join(devname),
            is_partition: sysfs.join("partition").exists(),
            name,
            devnum,
            sysfs,
        })
    }

    /// The whole disk a device belongs to: its parent for a partition, itself
    /// otherwise (sysfs puts partitions in their disk's directory).
    pub fn whole_disk(&self, dev: &BlockDev) -> io::Result<BlockDev> {
        if !dev.is_partition {
            return Ok(dev.clone());
        }
        let parent = dev.sysfs.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "partition without parent")
        })?;
        self.block_dev_at(parent)
    }

    /// The partitions the kernel knows on a disk, in sysfs order by name.
    pub fn partitions(&self, disk: &BlockDev) -> io::Result<Vec<BlockDev>> {
        let mut parts = Vec::new();
        for name in list_dir(&disk.sysfs)? {
            let dir = disk.sysfs.join(&name);
            if dir.join("partition").exists() {
                parts.push(self.block_dev_at(&dir)?);
            }
        }
        parts.sort_by_key(|p| partition_number(p).unwrap_or(u32::MAX));
        Ok(parts)
    }

    /// Kernel names of the devices holding `dev` (its `holders/` directory).
    pub fn holders(&self, dev: &BlockDev) -> io::Result<Vec<String>> {
        list_dir(&dev.sysfs.join("holders"))
    }

    /// Kernel names of the devices `dev` is built on (its `slaves/`
    /// directory: the members of a dm or md device).
    pub fn slaves(&self, dev: &BlockDev) -> io::Result<Vec<String>> {
        list_dir(&dev.sysfs.join("slaves"))
    }

    /// A short description (node, model, serial, size) from sysfs alone.
    pub fn describe(&self, dev: &BlockDev) -> DeviceDesc {
        let disk = self.whole_disk(dev).unwrap_or_else(|_| dev.clone());
        let devdir = disk.sysfs.join("device");
        let model = read_trimmed(&devdir.join("model"));
        // NVMe, virtio-blk (since 5.x: `serial`) and MMC put the serial in
        // sysfs; SCSI/SATA only in binary VPD pages, which udev decodes.
        let serial = read_trimmed(&devdir.join("serial"))
            .or_else(|| read_trimmed(&disk.sysfs.join("serial")));
        // sysfs `size` is always in 512-byte units, whatever the sector size.
        let size = read_trimmed(&dev.sysfs.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| s * 512);
        DeviceDesc {
            node: dev.node.clone(),
            model,
            serial,
            size,
        }
    }

    /// Maps a node path as the kernel prints it (`/dev/sda1`,
    /// `/dev/disk/by-uuid/...`) to a kernel device name, through [`Self::dev`].
    fn node_name(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix("/dev").ok()?;
        let local = self.dev.join(rel);
        if let Ok(meta) = fs::metadata(&local) {
            if meta.file_type().is_block_device() {
                if let Ok(dev) = self.block_dev(DevNum::from_dev_t(meta.rdev())) {
                    return Some(dev.name);
                }
            }
        }
        let target = fs::canonicalize(&local).unwrap_or(local);
        target
            .file_name()
            .map(|n| n.to_string_lossy().replace('/', "!"))
    }

    /// Everything using `dev` and, for a whole disk, any of its partitions:
    /// mounts (by device number, or by source node for filesystems such as
    /// btrfs whose `st_dev` is anonymous), swap areas, holders.
    pub fn usage(&self, dev: &BlockDev) -> io::Result<InUse> {
        let mut devs = vec![dev.clone()];
        if !dev.is_partition {
            devs.extend(self.partitions(dev)?);
        }
        let mounts = self.mounts()?;
        let swaps = self.swaps()?;
        let mut usage = InUse::default();
        for d in &devs {
            for m in &mounts {
                let by_source = m.source.starts_with("/dev/")
                    && self.node_name(Path::new(&m.source)).as_deref() == Some(d.name.as_str());
                if m.devnum == d.devnum || by_source {
                    usage.mounts.push(MountUse {
                        device: d.node.clone(),
                        mountpoint: m.mountpoint.clone(),
                        fstype: m.fstype.clone(),
                        read_only: m.read_only,
                    });
                }
            }
            for s in &swaps {
                if s.kind == "partition"
                    && self.node_name(&s.filename).as_deref() == Some(d.name.as_str())
                {
                    usage.swaps.push(d.node.clone());
                }
            }
            for h in self.holders(d)? {
                usage.holders.push(HolderUse {
                    device: d.node.clone(),
                    holder: h,
                });
            }
        }
        Ok(usage)
    }

    /// The device a path's filesystem lives on: from `st_dev`, or — when that
    /// is anonymous (major 0: btrfs subvolumes, overlayfs, tmpfs, NFS) — from
    /// the source of the mount with that device number. `None` when no block
    /// device is behind the path (tmpfs, network filesystems).
    pub fn device_of_path(&self, path: &Path) -> io::Result<Option<BlockDev>> {
        let meta = fs::metadata(path)?;
        let devnum = DevNum::from_dev_t(meta.dev());
        if devnum.major != 0 {
            if let Ok(dev) = self.block_dev(devnum) {
                return Ok(Some(dev));
            }
        }
        for m in self.mounts()? {
            if m.devnum == devnum && m.source.starts_with("/dev/") {
                if let Some(name) = self.node_name(Path::new(&m.source)) {
                    if let Ok(dev) = self.block_dev_by_name(&name) {
                        return Ok(Some(dev));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every block device that holds `path`, nearest first, partitions and
    /// whole disks alike: the device of the filesystem the path is on and its
    /// whole disk; for a loop device also the devices holding its backing file
    /// (a store inside an image file on a USB stick lives on both); for dm/md
    /// devices their members. Empty when no block device is behind the path.
    pub fn devices_holding(&self, path: &Path) -> io::Result<Vec<BlockDev>> {
        let mut out = Vec::new();
        if let Some(dev) = self.device_of_path(path)? {
            self.collect_stack(&dev, &mut out, 0)?;
        }
        Ok(out)
    }

    /// The whole disks among [`Self::devices_holding`].
    pub fn disks_holding(&self, path: &Path) -> io::Result<Vec<BlockDev>> {
        Ok(self
            .devices_holding(path)?
            .into_iter()
            .filter(|d| !d.is_partition)
            .collect())
    }

    fn collect_stack(
        &self,
        dev: &BlockDev,
        out: &mut Vec<BlockDev>,
        depth: usize,
    ) -> io::Result<()> {
        if depth > MAX_STACK_DEPTH || out.iter().any(|d| d.devnum == dev.devnum) {
            return Ok(());
        }
        out.push(dev.clone());
        let disk = self.whole_disk(dev)?;
        if disk.devnum != dev.devnum {
            out.push(disk.clone());
        }
        // Documentation/ABI/testing/sysfs-block-loop: loop/backing_file.
        if let Some(backing) = read_trimmed(&disk.sysfs.join("loop/backing_file")) {
            let backing = PathBuf::from(backing.trim_end_matches(" (deleted)"));
            if let Ok(Some(under)) = self.device_of_path(&backing) {
                self.collect_stack(&under, out, depth + 1)?;
            }
        }
        for slave in self.slaves(dev)? {
            if let Ok(s) = self.block_dev_by_name(&slave) {
                self.collect_stack(&s, out, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Loop devices whose backing file is `file` (sysfs `loop/backing_file`).
    pub fn loops_backed_by(&self, file: &Path) -> io::Result<Vec<BlockDev>> {
        let file = fs::canonicalize(file)?;
        let mut out = Vec::new();
        for name in list_dir(&self.sys.join("block"))? {
            let dir = self.sys.join("block").join(&name);
            if let Some(b) = read_trimmed(&dir.join("loop/backing_file")) {
                if Path::new(&b) == file {
                    out.push(self.block_dev_by_name(&name)?);
                }
            }
        }
        Ok(out)
    }

    /// The whole disk holding `path` (the nearest one of [`Self::disks_holding`]).
    pub fn disk_holding(&self, path: &Path) -> io::Result<Option<BlockDev>> {
        Ok(self.disks_holding(path)?.into_iter().next())
    }
}

/// The partition number from sysfs `partition`.
pub fn partition_number(dev: &BlockDev) -> Option<u32> {
    read_trimmed(&dev.sysfs.join("partition")).and_then(|s| s.parse().ok())
}

/// [`SysRoot::disk_holding`] on the live system.
pub fn disk_holding(path: &Path) -> io::Result<Option<BlockDev>> {
    SysRoot::live().disk_holding(path)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake sysfs/proc/dev tree in a temporary directory.
    use super::*;
    use std::os::unix::fs::symlink;

    pub struct FakeSys {
        pub _dir: tempfile::TempDir,
        pub root: SysRoot,
    }

    impl FakeSys {
        pub fn new() -> FakeSys {
            let dir = tempfile::tempdir().unwrap();
            let root = SysRoot {
                sys: dir.path().join("sys"),
                proc: dir.path().join("proc"),
                dev: dir.path().join("dev"),
            };
            for d in [
                "sys/dev/block",
                "sys/class/block",
                "sys/block",
                "proc/self",
                "dev",
            ] {
                fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            fs::write(root.proc.join("self/mountinfo"), "").unwrap();
            fs::write(
                root.proc.join("swaps"),
                "Filename\tType\tSize\tUsed\tPriority\n",
            )
            .unwrap();
            FakeSys { _dir: dir, root }
        }

        /// Adds a whole disk under `devices/<parent>/block/<name>`.
        pub fn disk(&self, parent: &str, name: &str, devnum: &str, sectors: u64) -> PathBuf {
            let dir = self
                .root
                .sys
                .join("devices")
                .join(parent)
                .join("block")
                .join(name);
            self.node(&dir, name, devnum, sectors);
            symlink(&dir, self.root.sys.join("block").join(name)).unwrap();
            dir
        }

        /// Adds partition `number` of the disk at `disk_dir`.
        pub fn partition(
            &self,
            disk_dir: &Path,
            name: &str,
            devnum: &str,
            number: u32,
            start: u64,
            sectors: u64,
        ) -> PathBuf {
            let dir = disk_dir.join(name);
            self.node(&dir, name, devnum, sectors);
            fs::write(dir.join("partition"), format!("{number}\n")).unwrap();
            fs::write(dir.join("start"), format!("{start}\n")).unwrap();
            dir
        }

        fn node(&self, dir: &Path, name: &str, devnum: &str, sectors: u64) {
            fs::create_dir_all(dir.join("holders")).unwrap();
            fs::create_dir_all(dir.join("slaves")).unwrap();
            fs::write(dir.join("dev"), format!("{devnum}\n")).unwrap();
            fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
            fs::write(dir.join("uevent"), format!("MAJOR=0\nDEVNAME={name}\n")).unwrap();
            symlink(dir, self.root.sys.join("dev/block").join(devnum)).unwrap();
            symlink(dir, self.root.sys.join("class/block").join(name)).unwrap();
        }

        pub fn set_mountinfo(&self, text: &str) {
            fs::write(self.root.proc.join("self/mountinfo"), text).unwrap();
        }

        pub fn set_swaps(&self, text: &str) {
            fs::write(self.root.proc.join("swaps"), text).unwrap();
        }

        pub fn hold(&self, dev_dir: &Path, holder: &str) {
            fs::create_dir_all(dev_dir.join("holders").join(holder)).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeSys;
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
30 27 8:17 / /mnt/my\\040store rw,relatime shared:5 master:2 - ext4 /dev/sdb1 rw
31 27 0:45 /@home /home rw,relatime - btrfs /dev/sdc1 rw,subvol=/@home
40 27 8:65 / /run/imprint/disks/sde1 ro,relatime - vfat /dev/sde1 ro,fmask=0022
41 27 8:18 / /mnt/ro-view ro,relatime - ext4 /dev/sdb2 rw
";

    #[test]
    fn mountinfo_fields_and_escapes_are_parsed() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 6);
        assert_eq!(m[1].devnum, DevNum { major: 8, minor: 2 });
        assert_eq!(m[1].source, "/dev/sda2");
        assert_eq!(m[2].mountpoint, Path::new("/mnt/my store"));
        assert_eq!(m[2].fstype, "ext4");
        assert_eq!(m[3].root, Path::new("/@home"));
        assert_eq!(m[3].source, "/dev/sdc1");
    }

    #[test]
    fn read_only_is_the_filesystem_s_own_flag_not_the_mount_s() {
        let m = parse_mountinfo(MOUNTINFO);
        let ro: Vec<bool> = m.iter().map(|e| e.read_only).collect();
        // A ro view (bind or mount flag) of a filesystem that is writable elsewhere is
        // not read-only; a line cut before its super options counts as writable.
        assert_eq!(ro, [false, false, false, false, true, false]);
        let cut = parse_mountinfo("40 27 8:33 / /x ro,relatime - vfat /dev/sdc1\n");
        assert!(cut.iter().all(|e| !e.read_only));
    }

    #[test]
    fn truncated_mountinfo_lines_are_skipped() {
        assert!(parse_mountinfo("22 27 0:21 / /proc rw\n\n1 2 x").is_empty());
    }

    #[test]
    fn swaps_header_is_skipped_and_kinds_kept() {
        let s = parse_swaps(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/sda3                               partition\t8388604\t\t0\t\t-2\n\
             /swap\\040file                           file\t\t1048572\t\t0\t\t-3\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].filename, Path::new("/dev/sda3"));
        assert_eq!(s[0].kind, "partition");
        assert_eq!(s[1].filename, Path::new("/swap file"));
        assert_eq!(s[1].kind, "file");
    }

    #[test]
    fn dev_t_splits_like_glibc() {
        assert_eq!(DevNum::from_dev_t(0x0801), DevNum { major: 8, minor: 1 });
        // major 259 (blkext, NVMe partitions), minor 300
        let dev = (259u64 & 0xfff) << 8 | (300 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(
            DevNum::from_dev_t(dev),
            DevNum {
                major: 259,
                minor: 300
            }
        );
    }

    #[test]
    fn partition_resolves_to_its_whole_disk() {
        let f = FakeSys::new();
        let sda = f.disk(
            "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
            "sda",
            "8:0",
            1000,
        );
        f.partition(&sda, "sda1", "8:1", 1, 2048, 500);
        let p = f.root.block_dev(DevNum { major: 8, minor: 1 }).unwrap();
        assert!(p.is_partition);
        assert_eq!(p.node, f.root.dev.join("sda1"));
        let d = f.root.whole_disk(&p).unwrap();
        assert_eq!(d.name, "sda");
        assert!(!d.is_partition);
        assert_eq!(f.root.partitions(&d).unwrap().len(), 1);
    }

    #[test]
    fn usage_finds_mounts_of_partitions_swaps_and_holders() {
        let f = FakeSys::new();
        let sda = f.disk("pci0000:00/ata1", "sda", "8:0", 1 << 20);
        f.partition(&sda, "sda1", "8:1", 1, 2048, 1000);
        f.partition(&sda, "sda2", "8:2", 2, 4096, 1000);
        let sda3 = f.partition(&sda, "sda3", "8:3", 3, 8192, 1000);
        let sdc = f.disk("pci0000:00/ata3", "sdc", "8:32", 1 << 20);
        f.partition(&sdc, "sdc1", "8:33", 1, 2048, 1000);
        f.hold(&sda3, "dm-0");
        f.set_mountinfo(MOUNTINFO);
        f.set_swaps("Filename Type Size Used Priority\n/dev/sda1 partition 1 0 -2\n");

        let disk = f.root.block_dev_by_name("sda").unwrap();
        let u = f.root.usage(&disk).unwrap();
        assert_eq!(u.mounts.len(), 1);
        assert_eq!(u.mounts[0].device, f.root.dev.join("sda2"));
        assert_eq!(u.mounts[0].mountpoint, Path::new("/"));
        assert_eq!(u.swaps, vec![f.root.dev.join("sda1")]);
        assert_eq!(u.holders[0].holder, "dm-0");
        assert_eq!(u.holders[0].device, f.root.dev.join("sda3"));

        // btrfs: st_dev is anonymous (0:45), matched by the mount source.
        let sdc = f.root.block_dev_by_name("sdc").unwrap();
        let u = f.root.usage(&sdc).unwrap();
        assert_eq!(u.mounts.len(), 1);
        assert_eq!(u.mounts[0].mountpoint, Path::new("/home"));
        assert!(u.is_busy());
    }

    #[test]
    fn unused_disk_is_not_busy() {
        let f = FakeSys::new();
        let sdb = f.disk("pci0000:00/ata2", "sdd", "8:48", 1 << 20);
        f.partition(&sdb, "sdd1", "8:49", 1, 2048, 1000);
        f.set_mountinfo(MOUNTINFO);
        let d = f.root.block_dev_by_name("sdd").unwrap();
        assert!(!f.root.usage(&d).unwrap().is_busy());
    }

    #[test]
    fn describe_reads_model_serial_and_size_in_512_byte_units() {
        let f = FakeSys::new();
        let nvme = f.disk(
            "pci0000:00/0000:00:04.0/nvme/nvme0",
            "nvme0n1",
            "259:0",
            2_000_000,
        );
        fs::write(nvme.join("../../model"), "QEMU NVMe Ctrl      \n").ok();
        fs::create_dir_all(nvme.join("device")).unwrap();
        fs::write(nvme.join("device/model"), "QEMU NVMe Ctrl      \n").unwrap();
        fs::write(nvme.join("device/serial"), "NVME-SER-4  \n").unwrap();
        let d = f.root.block_dev_by_name("nvme0n1").unwrap();
        let desc = f.root.describe(&d);
        assert_eq!(desc.model.as_deref(), Some("QEMU NVMe Ctrl"));
        assert_eq!(desc.serial.as_deref(), Some("NVME-SER-4"));
        assert_eq!(desc.size, Some(1_024_000_000));
        assert!(desc.to_string().contains("serial NVME-SER-4"));
        assert!(desc.to_string().contains("1.0 GB"));
    }

    #[test]
    fn disk_holding_a_tmpfs_path_is_none_or_a_disk() {
        // Whatever this machine has, the call must not fail on a real path.
        let dir = tempfile::tempdir().unwrap();
        SysRoot::live().disk_holding(dir.path()).unwrap();
    }
}
