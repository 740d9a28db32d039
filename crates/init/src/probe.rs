//! Disk discovery from sysfs and the udev database, and disk selectors
//! (`imprint.disk=`).
//!
//! This is the boot environment's stopgap until `disks::select` lands; it reads only what
//! udev has already written (/run/udev/data) and sysfs, so it needs no libudev.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// One whole disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name: `sda`, `nvme0n1`, `vda`.
    pub name: String,
    pub node: PathBuf,
    pub size: u64,
    pub model: String,
    pub serial: String,
    /// Long udev serial (`ID_SERIAL`), which includes the model for ATA/SCSI/USB.
    pub serial_long: String,
    pub bus: String,
    pub removable: bool,
    /// Names under /dev/disk/by-id.
    pub by_id: Vec<String>,
    pub partitions: Vec<Partition>,
}

/// One partition of a disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub size: u64,
    pub fstype: String,
    pub label: String,
}

/// Reads one device's udev properties (`E:` lines) and symlinks (`S:` lines).
fn udev_data(sys: &Path) -> (BTreeMap<String, String>, Vec<String>) {
    let mut props = BTreeMap::new();
    let mut links = Vec::new();
    let Ok(dev) = fs::read_to_string(sys.join("dev")) else {
        return (props, links);
    };
    let path = format!("/run/udev/data/b{}", dev.trim());
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        if let Some(kv) = line.strip_prefix("E:") {
            if let Some((k, v)) = kv.split_once('=') {
                props.insert(k.to_string(), v.to_string());
            }
        } else if let Some(l) = line.strip_prefix("S:") {
            links.push(l.to_string());
        }
    }
    (props, links)
}

fn read_trim(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn sectors_to_bytes(sys: &Path) -> u64 {
    // /sys/block/*/size counts 512-byte units whatever the logical sector size.
    read_trim(sys.join("size")).parse::<u64>().unwrap_or(0) * 512
}

/// Derives the bus when udev sets no ID_BUS (virtio-blk and NVMe never get one).
fn bus_of(name: &str, props: &BTreeMap<String, String>) -> String {
    let path = props.get("ID_PATH").map(String::as_str).unwrap_or("");
    let bus = if path.contains("-usb-") {
        "usb"
    } else if name.starts_with("nvme") || path.contains("-nvme-") {
        "nvme"
    } else if name.starts_with("vd") {
        "virtio"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if let Some(b) = props.get("ID_BUS") {
        b.as_str()
    } else if path.contains("-ata-") {
        "ata"
    } else if path.contains("-scsi-") {
        "scsi"
    } else {
        "unknown"
    };
    bus.to_string()
}

fn is_listed(name: &str) -> bool {
    !["loop", "ram", "zram", "sr", "fd", "dm-", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Lists the whole disks the kernel knows, skipping loop/ram/optical devices and empty
/// drives (card readers without a card report size 0).
pub fn list_disks() -> Vec<Disk> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_listed(&name) {
                return None;
            }
            let sys = e.path();
            let size = sectors_to_bytes(&sys);
            if size == 0 {
                return None;
            }
            let (props, links) = udev_data(&sys);
            let get = |k: &str| props.get(k).cloned().unwrap_or_default();
            let mut model = get("ID_MODEL");
            if model.is_empty() {
                model = read_trim(sys.join("device/model"));
            }
            let mut serial = get("ID_SERIAL_SHORT");
            if serial.is_empty() {
                serial = get("ID_SERIAL");
            }
            if serial.is_empty() {
                serial = read_trim(sys.join("serial"));
            }
            let by_id = links
                .iter()
                .filter_map(|l| l.strip_prefix("disk/by-id/"))
                .map(str::to_string)
                .collect();
            let partitions = list_partitions(&sys, &name);
            Some(Disk {
                node: PathBuf::from("/dev").join(&name),
                size,
                model,
                serial,
                serial_long: get("ID_SERIAL"),
                bus: bus_of(&name, &props),
                removable: read_trim(sys.join("removable")) == "1",
                by_id,
                partitions,
                name,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

fn list_partitions(sys: &Path, disk: &str) -> Vec<Partition> {
    let Ok(entries) = fs::read_dir(sys) else {
        return Vec::new();
    };
    let mut parts: Vec<Partition> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(disk) && e.path().join("partition").exists()
        })
        .map(|e| {
            let p = e.path();
            let (props, _) = udev_data(&p);
            Partition {
                name: e.file_name().to_string_lossy().into_owned(),
                size: sectors_to_bytes(&p),
                fstype: props.get("ID_FS_TYPE").cloned().unwrap_or_default(),
                label: props.get("ID_FS_LABEL").cloned().unwrap_or_default(),
            }
        })
        .collect();
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    parts
}

/// Filesystem type udev's blkid builtin saw on a block device, if any.
pub fn fstype_of(node: &Path) -> Option<String> {
    let name = fs::canonicalize(node).ok()?;
    let name = name.file_name()?.to_string_lossy().into_owned();
    let sys = fs::canonicalize(Path::new("/sys/class/block").join(&name)).ok()?;
    let (props, _) = udev_data(&sys);
    props.get("ID_FS_TYPE").cloned().filter(|t| !t.is_empty())
}

/// `12.3 GiB` style sizes for people.
pub use disks::usage::binary_size as human_size;

/// One line per disk, with its partitions, for the console.
pub fn describe(disks: &[Disk]) -> String {
    let mut out = String::new();
    for d in disks {
        let _ = write!(
            out,
            "  {:<9} {:>10}  {:<7} {:<24} serial {}",
            d.node.display(),
            human_size(d.size),
            d.bus,
            if d.model.is_empty() { "-" } else { &d.model },
            if d.serial.is_empty() { "-" } else { &d.serial },
        );
        if d.removable {
            out.push_str("  removable");
        }
        out.push('\n');
        for p in &d.partitions {
            let _ = writeln!(
                out,
                "      {:<11} {:>10}  {:<6} {}",
                p.name,
                human_size(p.size),
                if p.fstype.is_empty() { "-" } else { &p.fstype },
                p.label
            );
        }
    }
    if disks.is_empty() {
        out.push_str("  (no disks found)\n");
    }
    out
}

/// Why a selector did not pick exactly one disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("imprint.disk={selector}: no disk matches (disks: {available})")]
    NoMatch { selector: String, available: String },
    #[error(
        "imprint.disk={selector}: {count} disks match ({names}); use serial: or by-id: to pick one"
    )]
    Ambiguous {
        selector: String,
        count: usize,
        names: String,
    },
    #[error("imprint.disk={0}: unknown selector (use /dev/NODE, serial:S, by-id:NAME, model:M, bus:B, largest or smallest)")]
    Unknown(String),
}

impl SelectError {
    /// Whether waiting longer could help (a late USB disk may still appear).
    pub fn may_appear_later(&self) -> bool {
        matches!(self, SelectError::NoMatch { .. })
    }
}

fn norm(s: &str) -> String {
    s.trim().replace(' ', "_").to_ascii_lowercase()
}

/// Picks exactly one disk. `exclude` holds disks that must never be picked by a generic
/// selector (`largest`, `bus:`), such as the one holding the image store; explicit
/// selectors (node, serial, by-id) are taken at their word and checked by the job itself.
pub fn select<'a>(
    selector: &str,
    disks: &'a [Disk],
    exclude: &[String],
) -> Result<&'a Disk, SelectError> {
    let candidates: Vec<&Disk> = if selector.starts_with("/dev/") {
        let want = fs::canonicalize(selector).unwrap_or_else(|_| PathBuf::from(selector));
        disks
            .iter()
            .filter(|d| d.node == Path::new(selector) || d.node == want)
            .collect()
    } else if let Some(s) = selector.strip_prefix("serial:") {
        disks
            .iter()
            .filter(|d| d.serial == s || d.serial_long == s)
            .collect()
    } else if let Some(id) = selector.strip_prefix("by-id:") {
        disks
            .iter()
            .filter(|d| d.by_id.iter().any(|b| b == id))
            .collect()
    } else if let Some(m) = selector.strip_prefix("model:") {
        disks.iter().filter(|d| norm(&d.model) == norm(m)).collect()
    } else if let Some(b) = selector.strip_prefix("bus:") {
        disks
            .iter()
            .filter(|d| d.bus == b && !exclude.contains(&d.name))
            .collect()
    } else if selector == "largest" || selector == "smallest" {
        let pool = disks
            .iter()
            .filter(|d| !d.removable && !exclude.contains(&d.name));
        let best = if selector == "largest" {
            pool.max_by_key(|d| d.size)
        } else {
            pool.min_by_key(|d| d.size)
        };
        best.into_iter().collect()
    } else {
        return Err(SelectError::Unknown(selector.to_string()));
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(SelectError::NoMatch {
            selector: selector.to_string(),
            available: if disks.is_empty() {
                "none".into()
            } else {
                disks
                    .iter()
                    .map(|d| format!("{} serial={}", d.name, d.serial))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
        many => Err(SelectError::Ambiguous {
            selector: selector.to_string(),
            count: many.len(),
            names: many
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The whole disk a partition or disk node belongs to (`/dev/sdb2` -> `sdb`).
pub fn parent_disk(node: &Path) -> Option<String> {
    let real = fs::canonicalize(node).ok()?;
    let name = real.file_name()?.to_string_lossy().into_owned();
    let sys = fs::canonicalize(Path::new("/sys/class/block").join(&name)).ok()?;
    if sys.join("partition").exists() {
        Some(sys.parent()?.file_name()?.to_string_lossy().into_owned())
    } else {
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, size: u64, serial: &str, bus: &str, removable: bool) -> Disk {
        Disk {
            name: name.into(),
            node: PathBuf::from("/dev").join(name),
            size,
            serial: serial.into(),
            serial_long: format!("QEMU_{serial}"),
            bus: bus.into(),
            removable,
            by_id: vec![format!("{bus}-{serial}")],
            model: "QEMU HARDDISK".into(),
            ..Disk::default()
        }
    }

    fn lab() -> Vec<Disk> {
        vec![
            disk("nvme0n1", 64 << 30, "NVME-1", "nvme", false),
            disk("sda", 8 << 30, "USB-1", "usb", true),
            disk("vda", 32 << 30, "VDA-1", "virtio", false),
        ]
    }

    #[test]
    fn serial_and_by_id_and_node_pick_one_disk() {
        let d = lab();
        assert_eq!(select("serial:VDA-1", &d, &[]).unwrap().name, "vda");
        assert_eq!(select("serial:QEMU_USB-1", &d, &[]).unwrap().name, "sda");
        assert_eq!(
            select("by-id:nvme-NVME-1", &d, &[]).unwrap().name,
            "nvme0n1"
        );
        assert_eq!(select("/dev/sda", &d, &[]).unwrap().name, "sda");
        assert_eq!(
            select("model:qemu_harddisk", &d[..1], &[]).unwrap().name,
            "nvme0n1"
        );
    }

    #[test]
    fn largest_skips_removable_and_excluded_disks() {
        let d = lab();
        assert_eq!(select("largest", &d, &[]).unwrap().name, "nvme0n1");
        assert_eq!(
            select("largest", &d, &["nvme0n1".into()]).unwrap().name,
            "vda"
        );
        assert_eq!(select("smallest", &d, &[]).unwrap().name, "vda");
    }

    #[test]
    fn selector_matching_nothing_lists_the_disks() {
        let err = select("serial:NOPE", &lab(), &[]).unwrap_err();
        assert!(err.may_appear_later());
        let msg = err.to_string();
        assert!(msg.contains("no disk matches"), "{msg}");
        assert!(msg.contains("vda serial=VDA-1"), "{msg}");
    }

    #[test]
    fn ambiguous_selector_is_refused() {
        let mut d = lab();
        d.push(disk("nvme1n1", 64 << 30, "NVME-2", "nvme", false));
        let err = select("bus:nvme", &d, &[]).unwrap_err();
        assert!(matches!(err, SelectError::Ambiguous { count: 2, .. }));
        assert!(!err.may_appear_later());
    }

    #[test]
    fn unknown_selector_kind_is_reported() {
        assert_eq!(
            select("biggest", &lab(), &[]).unwrap_err(),
            SelectError::Unknown("biggest".into())
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(64 << 30), "64.0 GiB");
    }
}
