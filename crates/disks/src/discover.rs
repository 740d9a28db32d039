//! Which disks this machine has, with what a person needs to pick the right
//! one: node, size, sector sizes, model, serial, WWN, bus, removable,
//! rotational, read-only, stable `/dev/disk/by-*` names, partitions with
//! their filesystems, and what uses them.
//!
//! Properties come from udev when udevd runs (`/run/udev/control` exists),
//! else from sysfs alone; [`Disk::missing`] then says which fields sysfs
//! could not give. udev is not trusted to set `ID_BUS`: virtio-blk and NVMe
//! disks have none (shared/notes/boot-environment.md §2.3), so the bus is
//! derived from `ID_PATH` and the sysfs device path too.
//!
//! Both sources are injectable ([`PropertySource`], [`SysRoot`]) so tests run
//! on canned udev property sets and fake sysfs trees.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::table;
use crate::usage::{human_size, partition_number, BlockDev, DevNum, InUse, SysRoot};

/// udev properties of one device (`udevadm info --query=property`).
pub type Properties = HashMap<String, String>;

/// Where device properties come from.
pub trait PropertySource {
    /// Properties of the device at this canonical sysfs path, kernel name
    /// `name`; `None` when the source knows nothing of it.
    fn properties(&self, syspath: &Path, name: &str) -> Option<Properties>;
    /// Short name for reports: "udev", "sysfs".
    fn kind(&self) -> &'static str;
}

/// Reads the udev database through libudev.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdevProperties;

impl PropertySource for UdevProperties {
    fn properties(&self, syspath: &Path, _name: &str) -> Option<Properties> {
        let dev = udev::Device::from_syspath(syspath).ok()?;
        Some(
            dev.properties()
                .map(|e| {
                    (
                        e.name().to_string_lossy().into_owned(),
                        e.value().to_string_lossy().into_owned(),
                    )
                })
                .collect(),
        )
    }

    fn kind(&self) -> &'static str {
        "udev"
    }
}

/// No properties: discovery from sysfs alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProperties;

impl PropertySource for NoProperties {
    fn properties(&self, _: &Path, _: &str) -> Option<Properties> {
        None
    }

    fn kind(&self) -> &'static str {
        "sysfs"
    }
}

/// Canned property sets keyed by kernel name, for tests and replays.
#[derive(Debug, Default, Clone)]
pub struct CannedProperties(pub HashMap<String, Properties>);

impl CannedProperties {
    /// Parses `udevadm info --query=property` output (`KEY=value` lines).
    pub fn add(&mut self, name: &str, text: &str) {
        let props = text
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.0.insert(name.to_owned(), props);
    }
}

impl PropertySource for CannedProperties {
    fn properties(&self, _: &Path, name: &str) -> Option<Properties> {
        self.0.get(name).cloned()
    }

    fn kind(&self) -> &'static str {
        "udev"
    }
}

/// True when udevd is running (it creates its control socket at start).
pub fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// How a disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    Nvme,
    Sata,
    Scsi,
    Usb,
    Virtio,
    Mmc,
    /// loop, ram, zram, nbd, device-mapper, md.
    Virtual,
    Unknown,
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bus::Nvme => "nvme",
            Bus::Sata => "sata",
            Bus::Scsi => "scsi",
            Bus::Usb => "usb",
            Bus::Virtio => "virtio",
            Bus::Mmc => "mmc",
            Bus::Virtual => "virtual",
            Bus::Unknown => "?",
        })
    }
}

/// A partition as discovery sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPartition {
    /// `None` when the kernel made no node (it parsed no table) and the
    /// partition was read from the table by us.
    pub node: Option<PathBuf>,
    pub index: u32,
    /// Bytes.
    pub start: u64,
    pub size: u64,
    pub fs_type: Option<String>,
    pub fs_label: Option<String>,
    pub fs_uuid: Option<String>,
    /// GPT partition name (`ID_PART_ENTRY_NAME`).
    pub part_name: Option<String>,
    pub mountpoints: Vec<PathBuf>,
    pub swap: bool,
    pub holders: Vec<String>,
}

/// A whole disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub node: PathBuf,
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String,
    pub devnum: DevNum,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub bus: Bus,
    pub removable: bool,
    pub rotational: bool,
    pub read_only: bool,
    /// `/dev/disk/by-id/...` links to the disk.
    pub by_id: Vec<PathBuf>,
    /// `/dev/disk/by-path/...` links to the disk.
    pub by_path: Vec<PathBuf>,
    pub partitions: Vec<DiskPartition>,
    /// Mounts, swaps and holders of the disk and its partitions.
    pub in_use: InUse,
    /// Where properties came from: "udev" or "sysfs".
    pub source: String,
    /// Fields nobody could tell (e.g. "serial" for a SATA disk without udev).
    pub missing: Vec<String>,
}

impl Disk {
    /// Removable media or USB: never picked by a rule such as `largest`.
    pub fn is_removable_or_usb(&self) -> bool {
        self.removable || self.bus == Bus::Usb
    }

    /// One line naming the disk for choices and errors:
    /// `/dev/sda  ProtoSATA  serial SATA-SER-3  500.1 GB`.
    pub fn summary(&self) -> String {
        format!(
            "{}  {}  serial {}  {}",
            self.node.display(),
            self.model.as_deref().unwrap_or("(no model)"),
            self.serial.as_deref().unwrap_or("?"),
            human_size(self.size)
        )
    }
}

/// What [`discover`] looks at.
pub struct DiscoverOptions<'a> {
    /// Also list loop, ram, zram, nbd, dm, md, optical (sr) and floppy devices.
    pub include_virtual: bool,
    pub root: SysRoot,
    /// `None`: udev when it runs, else sysfs alone.
    pub properties: Option<&'a dyn PropertySource>,
    /// Read partition tables ourselves when the kernel shows no partitions
    /// (needs read access to the device; a failure is silently skipped).
    pub read_tables: bool,
}

impl fmt::Debug for DiscoverOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverOptions")
            .field("include_virtual", &self.include_virtual)
            .field("root", &self.root)
            .field("properties", &self.properties.map(|p| p.kind()))
            .field("read_tables", &self.read_tables)
            .finish()
    }
}

impl Default for DiscoverOptions<'_> {
    fn default() -> Self {
        DiscoverOptions {
            include_virtual: false,
            root: SysRoot::live(),
            properties: None,
            read_tables: true,
        }
    }
}

/// Why discovery failed as a whole (single disks that fail are skipped).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("listing block devices in {path}: {source}")]
    ListBlock { path: PathBuf, source: io::Error },
    #[error("reading mounts and swaps: {0}")]
    Usage(io::Error),
}

fn read_attr(dir: &Path, attr: &str) -> Option<String> {
    fs::read_to_string(dir.join(attr))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn read_num(dir: &Path, attr: &str) -> Option<u64> {
    read_attr(dir, attr).and_then(|s| s.parse().ok())
}

/// Decodes udev's `\xNN` escapes (ID_MODEL_ENC, ID_VENDOR_ENC).
fn udev_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// A kernel device that is no physical disk (skipped unless asked for).
fn is_virtual(dev: &BlockDev) -> bool {
    let p = dev.sysfs.to_string_lossy();
    p.contains("/devices/virtual/")
        || ["loop", "ram", "zram", "nbd", "dm-", "md", "sr", "fd"]
            .iter()
            .any(|pre| dev.name.starts_with(pre))
}

/// The bus, most trustworthy evidence first. USB comes first: a USB-SATA
/// bridge answers ATA IDENTIFY, so udev may say `ID_BUS=ata` for it.
fn derive_bus(name: &str, sysfs: &Path, props: Option<&Properties>) -> Bus {
    let path = sysfs.to_string_lossy();
    let id_path = props
        .and_then(|p| p.get("ID_PATH"))
        .map(String::as_str)
        .unwrap_or("");
    let id_bus = props
        .and_then(|p| p.get("ID_BUS"))
        .map(String::as_str)
        .unwrap_or("");
    if id_bus == "usb" || id_path.contains("-usb-") || path.contains("/usb") {
        return Bus::Usb;
    }
    if path.contains("/devices/virtual/") {
        return Bus::Virtual;
    }
    if id_bus == "nvme"
        || id_path.contains("-nvme-")
        || path.contains("/nvme/")
        || name.starts_with("nvme")
    {
        return Bus::Nvme;
    }
    if id_bus == "ata" || id_path.contains("-ata-") || path.contains("/ata") {
        return Bus::Sata;
    }
    if name.starts_with("mmcblk")
        || path.contains("/mmc_host/")
        || id_path.contains("-platform-") && name.starts_with("mmc")
    {
        return Bus::Mmc;
    }
    // virtio-blk: a vdX under a virtioN device; virtio-scsi disks carry
    // ID_BUS=scsi and are reported as SCSI (what the guest sees).
    if id_bus == "scsi" || id_path.contains("-scsi-") {
        return Bus::Scsi;
    }
    // A SCSI host under a virtio device is virtio-scsi: the disk is SCSI.
    if path.contains("/host") && path.contains("/target") {
        return Bus::Scsi;
    }
    if path.contains("/virtio") || name.starts_with("vd") {
        return Bus::Virtio;
    }
    Bus::Unknown
}

/// Lists whole disks, sorted by kernel name.
pub fn discover(opts: &DiscoverOptions<'_>) -> Result<Vec<Disk>, DiscoverError> {
    let live;
    let source: &dyn PropertySource = match opts.properties {
        Some(s) => s,
        None if udev_running() => {
            live = UdevProperties;
            &live
        }
        None => &NoProperties,
    };
    let block = opts.root.sys.join("block");
    let mut names: Vec<String> = fs::read_dir(&block)
        .map_err(|source| DiscoverError::ListBlock {
            path: block.clone(),
            source,
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut disks = Vec::new();
    for name in names {
        let Ok(dev) = opts.root.block_dev_by_name(&name) else {
            continue;
        };
        if !opts.include_virtual && is_virtual(&dev) {
            continue;
        }
        if let Ok(disk) = describe_disk(&opts.root, &dev, source, opts.read_tables) {
            disks.push(disk);
        }
    }
    Ok(disks)
}

/// Discovery of one whole disk by kernel name (for hotplug events).
pub fn discover_one(name: &str, opts: &DiscoverOptions<'_>) -> io::Result<Disk> {
    let dev = opts.root.block_dev_by_name(name)?;
    let source: &dyn PropertySource = match opts.properties {
        Some(s) => s,
        None if udev_running() => &UdevProperties,
        None => &NoProperties,
    };
    describe_disk(&opts.root, &dev, source, opts.read_tables)
}

fn links(props: Option<&Properties>, prefix: &str, root: &SysRoot, dev: &BlockDev) -> Vec<PathBuf> {
    if let Some(l) = props.and_then(|p| p.get("DEVLINKS")) {
        let mut v: Vec<PathBuf> = l
            .split_whitespace()
            .filter(|l| l.starts_with(&format!("/dev/disk/{prefix}/")))
            .map(PathBuf::from)
            .collect();
        v.sort();
        return v;
    }
    // Without udev, links exist only if something else made them.
    let dir = root.dev.join("disk").join(prefix);
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if fs::canonicalize(e.path()).ok().as_deref() == Some(dev.node.as_path()) {
                v.push(Path::new("/dev/disk").join(prefix).join(e.file_name()));
            }
        }
    }
    v.sort();
    v
}

fn describe_disk(
    root: &SysRoot,
    dev: &BlockDev,
    source: &dyn PropertySource,
    read_tables: bool,
) -> io::Result<Disk> {
    let sys = &dev.sysfs;
    let props = source.properties(sys, &dev.name);
    let p = props.as_ref();
    let get = |k: &str| p.and_then(|p| p.get(k)).filter(|v| !v.is_empty()).cloned();
    let devdir = sys.join("device");
    let mut missing = Vec::new();

    let model = get("ID_MODEL_ENC")
        .map(|m| udev_unescape(&m))
        .or_else(|| get("ID_MODEL").map(|m| m.replace('_', " ")))
        .or_else(|| read_attr(&devdir, "model"))
        .or_else(|| read_attr(&devdir, "name")); // MMC
    let vendor = get("ID_VENDOR_ENC")
        .map(|m| udev_unescape(&m))
        .or_else(|| get("ID_VENDOR"))
        .or_else(|| read_attr(&devdir, "vendor"));
    // ID_SERIAL_SHORT is the device's own serial; ID_SERIAL prefixes the
    // model for SCSI/ATA/USB but is the bare serial for virtio-blk.
    let serial = get("ID_SERIAL_SHORT")
        .or_else(|| get("ID_SERIAL"))
        .or_else(|| read_attr(&devdir, "serial"))
        .or_else(|| read_attr(sys, "serial"));
    let wwn = get("ID_WWN_WITH_EXTENSION")
        .or_else(|| get("ID_WWN"))
        .or_else(|| read_attr(sys, "wwid"))
        .or_else(|| read_attr(&devdir, "wwid"));
    if model.is_none() {
        missing.push("model".to_owned());
    }
    if serial.is_none() {
        missing.push("serial".to_owned());
    }
    let bus = derive_bus(&dev.name, sys, p);
    let by_id = links(p, "by-id", root, dev);
    let by_path = links(p, "by-path", root, dev);
    if props.is_none() {
        if by_id.is_empty() {
            missing.push("by-id".to_owned());
        }
        if by_path.is_empty() {
            missing.push("by-path".to_owned());
        }
    }

    let usage = root.usage(dev)?;
    let mut partitions = Vec::new();
    for part in root.partitions(dev)? {
        let pp = source.properties(&part.sysfs, &part.name);
        let pget = |k: &str| {
            pp.as_ref()
                .and_then(|p| p.get(k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let start = read_num(&part.sysfs, "start").unwrap_or(0) * 512;
        let size = read_num(&part.sysfs, "size").unwrap_or(0) * 512;
        // Filesystem facts from udev's blkid builtin; without udev, from
        // fsmap::detect below.
        partitions.push(DiskPartition {
            node: Some(part.node.clone()),
            index: partition_number(&part).unwrap_or(0),
            start,
            size,
            fs_type: pget("ID_FS_TYPE"),
            fs_label: pget("ID_FS_LABEL_ENC")
                .map(|l| udev_unescape(&l))
                .or_else(|| pget("ID_FS_LABEL")),
            fs_uuid: pget("ID_FS_UUID"),
            part_name: pget("ID_PART_ENTRY_NAME").map(|l| udev_unescape(&l)),
            mountpoints: usage
                .mounts
                .iter()
                .filter(|m| m.device == part.node)
                .map(|m| m.mountpoint.clone())
                .collect(),
            swap: usage.swaps.contains(&part.node),
            holders: usage
                .holders
                .iter()
                .filter(|h| h.device == part.node)
                .map(|h| h.holder.clone())
                .collect(),
        });
    }
    if partitions.is_empty() && read_tables {
        // A kernel without partition parsers shows none: read the table.
        if let Ok(mut f) = fs::File::open(&dev.node) {
            let lss = read_num(&sys.join("queue"), "logical_block_size").unwrap_or(512) as u32;
            let size = read_num(sys, "size").unwrap_or(0) * 512;
            if let Ok(t) = table::read_table(&mut f, size, lss) {
                partitions.extend(t.partitions.iter().map(|p| DiskPartition {
                    node: None,
                    index: p.index,
                    start: p.start,
                    size: p.size,
                    fs_type: None,
                    fs_label: None,
                    fs_uuid: None,
                    part_name: p.name.clone(),
                    mountpoints: Vec::new(),
                    swap: false,
                    holders: Vec::new(),
                }));
            }
        }
    }
    partitions.sort_by_key(|p| p.index);
    for p in partitions.iter_mut().filter(|p| p.fs_type.is_none()) {
        if let Some(info) = probe_fs(&dev.node, p) {
            p.fs_type = Some(info.kind.name().to_owned());
            p.fs_label = info.label;
            p.fs_uuid = info.uuid;
        }
    }

    let queue = sys.join("queue");
    Ok(Disk {
        node: dev.node.clone(),
        name: dev.name.clone(),
        devnum: dev.devnum,
        size: read_num(sys, "size").unwrap_or(0) * 512,
        logical_sector_size: read_num(&queue, "logical_block_size").unwrap_or(512) as u32,
        physical_sector_size: read_num(&queue, "physical_block_size").unwrap_or(512) as u32,
        model,
        vendor,
        serial,
        wwn,
        bus,
        removable: read_num(sys, "removable") == Some(1),
        rotational: read_num(&queue, "rotational") == Some(1),
        read_only: read_num(sys, "ro") == Some(1),
        by_id,
        by_path,
        partitions,
        in_use: usage,
        source: if props.is_some() { "udev" } else { "sysfs" }.to_owned(),
        missing,
    })
}

/// A partition's bytes seen through its disk, for a partition the kernel
/// made no node for.
struct AtOffset<'a> {
    file: &'a fs::File,
    offset: u64,
    size: u64,
}

impl fsmap::ReadAt for AtOffset<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        std::os::unix::fs::FileExt::read_exact_at(self.file, buf, self.offset + offset)
    }
}

/// Filesystem kind, label and UUID read from the partition itself; `None`
/// when unreadable (not root) or unknown.
fn probe_fs(disk_node: &Path, p: &DiskPartition) -> Option<fsmap::FsInfo> {
    match &p.node {
        Some(node) => {
            let f = fs::File::open(node).ok()?;
            fsmap::detect(&f, p.size).ok().flatten()
        }
        None => {
            let f = fs::File::open(disk_node).ok()?;
            let view = AtOffset {
                file: &f,
                offset: p.start,
                size: p.size,
            };
            fsmap::detect(&view, p.size).ok().flatten()
        }
    }
}

/// A table a person reads at a glance, one line per disk and per partition:
///
/// ```text
/// DISK          SIZE      BUS     MODEL                SERIAL          FLAGS
/// /dev/sda      500.1 GB  sata    ProtoSATA            SATA-SER-3
///   sda1        536.9 MB  vfat    "EFI"                               mounted /boot
/// ```
pub fn render_table(disks: &[Disk]) -> String {
    fn cut(s: &str, n: usize) -> String {
        if s.chars().count() <= n {
            s.to_owned()
        } else {
            let mut t: String = s.chars().take(n - 1).collect();
            t.push('~');
            t
        }
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14}{:>9}  {:<7} {:<20} {:<16} {}\n",
        "DISK", "SIZE", "BUS", "MODEL", "SERIAL", "FLAGS"
    ));
    if disks.is_empty() {
        out.push_str("(no disks found)\n");
    }
    for d in disks {
        let mut flags = Vec::new();
        if d.removable {
            flags.push("removable".to_owned());
        }
        if d.read_only {
            flags.push("read-only".to_owned());
        }
        if d.logical_sector_size != 512 {
            flags.push(format!("{}n", d.logical_sector_size));
        }
        if d.in_use.is_busy() {
            flags.push("IN USE".to_owned());
        }
        out.push_str(&format!(
            "{:<14}{:>9}  {:<7} {:<20} {:<16} {}\n",
            cut(&d.node.to_string_lossy(), 13),
            human_size(d.size),
            d.bus.to_string(),
            cut(d.model.as_deref().unwrap_or("-"), 20),
            cut(d.serial.as_deref().unwrap_or("-"), 16),
            flags.join(" ")
        ));
        for p in &d.partitions {
            let name = match &p.node {
                Some(n) => n
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None => format!("#{}", p.index),
            };
            let label = p
                .fs_label
                .as_ref()
                .map(|l| format!("\"{l}\""))
                .or_else(|| p.part_name.as_ref().map(|n| format!("({n})")))
                .unwrap_or_default();
            let mut use_ = Vec::new();
            for m in &p.mountpoints {
                use_.push(format!("mounted {}", m.display()));
            }
            if p.swap {
                use_.push("swap".to_owned());
            }
            for h in &p.holders {
                use_.push(format!("held by {h}"));
            }
            out.push_str(&format!(
                "  {:<12}{:>9}  {:<7} {:<37} {}\n",
                cut(&name, 11),
                human_size(p.size),
                cut(p.fs_type.as_deref().unwrap_or("-"), 7),
                cut(&label, 37),
                use_.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::fake::FakeSys;

    /// The five property sets measured in boot-environment.md §2.3.
    fn canned() -> CannedProperties {
        let mut c = CannedProperties::default();
        c.add(
            "vda",
            "DEVNAME=/dev/vda\nID_SERIAL=VBLK-SER-1\nID_PATH=pci-0000:00:02.0\n\
             DEVLINKS=/dev/disk/by-id/virtio-VBLK-SER-1 /dev/disk/by-path/pci-0000:00:02.0\n",
        );
        c.add(
            "sda",
            "ID_BUS=scsi\nID_VENDOR=QEMU\nID_MODEL=QEMU_HARDDISK\n\
             ID_SERIAL=0QEMU_QEMU_HARDDISK_VSCSI-SER-2\nID_SERIAL_SHORT=VSCSI-SER-2\n\
             ID_PATH=pci-0000:00:03.0-scsi-0:0:0:0\n",
        );
        c.add(
            "sdb",
            "ID_ATA=1\nID_BUS=ata\nID_MODEL=ProtoSATA\nID_SERIAL=ProtoSATA_SATA-SER-3\n\
             ID_SERIAL_SHORT=SATA-SER-3\nID_PATH=pci-0000:00:1f.2-ata-1.0\n",
        );
        c.add(
            "nvme0n1",
            "ID_MODEL=QEMU NVMe Ctrl\nID_SERIAL=QEMU_NVMe_Ctrl_NVME-SER-4_1\n\
             ID_SERIAL_SHORT=NVME-SER-4\nID_WWN=eui.0000000000000001\nID_REVISION=7.2.22\n\
             ID_PATH=pci-0000:00:04.0-nvme-1\n",
        );
        c.add(
            "sdc",
            "ID_BUS=usb\nID_USB_DRIVER=usb-storage\nID_VENDOR=QEMU\nID_MODEL=QEMU_HARDDISK\n\
             ID_SERIAL=QEMU_QEMU_HARDDISK_USB-SER-5-0:0\nID_SERIAL_SHORT=USB-SER-5\n\
             ID_PATH=pci-0000:00:05.0-usb-0:1:1.0-scsi-0:0:0:0\n",
        );
        c.add(
            "sdb1",
            "ID_FS_TYPE=ext4\nID_FS_LABEL=IMPRINT\nID_FS_UUID=1234\n",
        );
        c
    }

    fn queue(dir: &Path, lss: u32, pss: u32, rot: u8) {
        fs::create_dir_all(dir.join("queue")).unwrap();
        fs::write(dir.join("queue/logical_block_size"), format!("{lss}\n")).unwrap();
        fs::write(dir.join("queue/physical_block_size"), format!("{pss}\n")).unwrap();
        fs::write(dir.join("queue/rotational"), format!("{rot}\n")).unwrap();
    }

    /// The QEMU machine of §2.3 as a fake sysfs tree, plus a loop device.
    fn machine() -> FakeSys {
        let f = FakeSys::new();
        let vda = f.disk("pci0000:00/0000:00:02.0/virtio1", "vda", "254:0", 2 << 21);
        queue(&vda, 512, 512, 1);
        let sda = f.disk(
            "pci0000:00/0000:00:03.0/virtio2/host0/target0:0:0/0:0:0:0",
            "sda",
            "8:0",
            4 << 21,
        );
        queue(&sda, 512, 512, 1);
        let sdb = f.disk(
            "pci0000:00/0000:00:1f.2/ata1/host1/target1:0:0/1:0:0:0",
            "sdb",
            "8:16",
            8 << 21,
        );
        queue(&sdb, 512, 4096, 1);
        f.partition(&sdb, "sdb1", "8:17", 1, 2048, 1 << 21);
        let nvme = f.disk(
            "pci0000:00/0000:00:04.0/nvme/nvme0",
            "nvme0n1",
            "259:0",
            8 << 21,
        );
        queue(&nvme, 4096, 4096, 0);
        let sdc = f.disk(
            "pci0000:00/0000:00:05.0/usb2/2-1/2-1:1.0/host2/target2:0:0/2:0:0:0",
            "sdc",
            "8:32",
            1 << 21,
        );
        queue(&sdc, 512, 512, 1);
        fs::write(sdc.join("removable"), "1\n").unwrap();
        let lp = f.disk("virtual", "loop0", "7:0", 1 << 11);
        queue(&lp, 512, 512, 0);
        f
    }

    fn opts<'a>(f: &FakeSys, props: &'a dyn PropertySource) -> DiscoverOptions<'a> {
        DiscoverOptions {
            include_virtual: false,
            root: f.root.clone(),
            properties: Some(props),
            read_tables: false,
        }
    }

    fn by_name<'a>(disks: &'a [Disk], n: &str) -> &'a Disk {
        disks.iter().find(|d| d.name == n).unwrap()
    }

    #[test]
    fn five_qemu_disks_get_bus_model_and_serial_even_without_id_bus() {
        let f = machine();
        let c = canned();
        let disks = discover(&opts(&f, &c)).unwrap();
        let names: Vec<_> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["nvme0n1", "sda", "sdb", "sdc", "vda"],
            "loop0 skipped"
        );

        let vda = by_name(&disks, "vda");
        assert_eq!(vda.bus, Bus::Virtio);
        assert_eq!(vda.serial.as_deref(), Some("VBLK-SER-1"));
        assert_eq!(vda.model, None);
        assert_eq!(
            vda.by_id,
            [PathBuf::from("/dev/disk/by-id/virtio-VBLK-SER-1")]
        );
        assert_eq!(
            vda.by_path,
            [PathBuf::from("/dev/disk/by-path/pci-0000:00:02.0")]
        );

        let sda = by_name(&disks, "sda");
        assert_eq!(sda.bus, Bus::Scsi);
        assert_eq!(sda.model.as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(sda.serial.as_deref(), Some("VSCSI-SER-2"));

        let sdb = by_name(&disks, "sdb");
        assert_eq!(sdb.bus, Bus::Sata);
        assert_eq!(sdb.physical_sector_size, 4096);
        assert_eq!(sdb.partitions[0].fs_label.as_deref(), Some("IMPRINT"));
        assert_eq!(sdb.partitions[0].start, 2048 * 512);

        let nvme = by_name(&disks, "nvme0n1");
        assert_eq!(nvme.bus, Bus::Nvme);
        assert_eq!(nvme.wwn.as_deref(), Some("eui.0000000000000001"));
        assert_eq!(nvme.logical_sector_size, 4096);
        assert!(!nvme.rotational);

        let sdc = by_name(&disks, "sdc");
        assert_eq!(sdc.bus, Bus::Usb);
        assert!(sdc.removable && sdc.is_removable_or_usb());
        assert!(disks.iter().all(|d| d.source == "udev"));
    }

    #[test]
    fn sysfs_alone_still_finds_bus_and_says_what_is_missing() {
        let f = machine();
        fs::create_dir_all(
            f.root
                .sys
                .join("devices/pci0000:00/0000:00:04.0/nvme/nvme0/block/nvme0n1/device"),
        )
        .unwrap();
        fs::write(
            f.root
                .sys
                .join("devices/pci0000:00/0000:00:04.0/nvme/nvme0/block/nvme0n1/device/serial"),
            "NVME-SER-4   \n",
        )
        .unwrap();
        let disks = discover(&opts(&f, &NoProperties)).unwrap();
        let buses: Vec<_> = disks.iter().map(|d| (d.name.as_str(), d.bus)).collect();
        assert_eq!(
            buses,
            [
                ("nvme0n1", Bus::Nvme),
                ("sda", Bus::Scsi),
                ("sdb", Bus::Sata),
                ("sdc", Bus::Usb),
                ("vda", Bus::Virtio)
            ]
        );
        let nvme = by_name(&disks, "nvme0n1");
        assert_eq!(nvme.serial.as_deref(), Some("NVME-SER-4"));
        let sdb = by_name(&disks, "sdb");
        assert!(
            sdb.missing.contains(&"serial".to_owned()),
            "{:?}",
            sdb.missing
        );
        assert!(sdb.missing.contains(&"by-id".to_owned()));
        assert_eq!(sdb.source, "sysfs");
    }

    #[test]
    fn virtual_devices_are_listed_only_when_asked() {
        let f = machine();
        let c = canned();
        let mut o = opts(&f, &c);
        o.include_virtual = true;
        let disks = discover(&o).unwrap();
        assert_eq!(by_name(&disks, "loop0").bus, Bus::Virtual);
    }

    #[test]
    fn in_use_markers_follow_mounts_swaps_and_holders() {
        let f = machine();
        let sdb = f
            .root
            .sys
            .join("devices/pci0000:00/0000:00:1f.2/ata1/host1/target1:0:0/1:0:0:0/block/sdb");
        f.partition(&sdb, "sdb2", "8:18", 2, 4096, 1000);
        let sdb3 = f.partition(&sdb, "sdb3", "8:19", 3, 8192, 1000);
        f.hold(&sdb3, "md127");
        f.set_mountinfo("30 1 8:17 / /run/imprint/store rw - ext4 /dev/sdb1 rw\n");
        f.set_swaps("Filename Type Size Used Priority\n/dev/sdb2 partition 1 0 -2\n");
        let c = canned();
        let disks = discover(&opts(&f, &c)).unwrap();
        let d = by_name(&disks, "sdb");
        assert!(d.in_use.is_busy());
        assert_eq!(
            d.partitions[0].mountpoints,
            [PathBuf::from("/run/imprint/store")]
        );
        assert!(d.partitions[1].swap);
        assert_eq!(d.partitions[2].holders, ["md127"]);
        let table = render_table(&disks);
        assert!(table.contains("mounted /run/imprint/store"), "{table}");
        assert!(table.contains("swap"), "{table}");
        assert!(table.contains("held by md127"), "{table}");
        assert!(table.contains("IN USE"), "{table}");
    }

    #[test]
    fn rendered_table_fits_an_80_column_console_and_names_each_disk() {
        let f = machine();
        let c = canned();
        let disks = discover(&opts(&f, &c)).unwrap();
        let table = render_table(&disks);
        for line in table.lines() {
            assert!(
                line.chars().count() <= 80,
                "{line:?} is {} wide",
                line.chars().count()
            );
        }
        assert!(table.contains("ProtoSATA"), "{table}");
        assert!(table.contains("SATA-SER-3"));
        assert!(table.contains("\"IMPRINT\""));
        assert!(table.contains("removable"));
        assert!(
            table.contains("4096n"),
            "the 4Kn NVMe disk is marked: {table}"
        );
        let json = serde_json::to_string(&disks).unwrap();
        assert!(json.contains("\"bus\":\"nvme\""));
    }

    #[test]
    fn live_discovery_runs_on_this_machine() {
        let disks = discover(&DiscoverOptions::default()).unwrap();
        let _ = render_table(&disks);
    }

    #[test]
    fn udev_escapes_are_decoded() {
        assert_eq!(
            udev_unescape("Samsung\\x20SSD\\x20860\\x20\\x20"),
            "Samsung SSD 860"
        );
    }
}
