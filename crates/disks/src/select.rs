//! Picking a disk or partition from a user's words, for the CLI, the kernel
//! command line (`imprint.disk=…`, `imprint.store=label:IMPRINT`) and the TUI.
//!
//! Exact selectors name one device; rules (`largest`, `smallest`,
//! `first-nonremovable`) choose among fixed disks only: removable and USB
//! disks are never chosen by a rule, so an unattended job cannot overwrite
//! the stick it booted from or the one holding the images. No match or more
//! than one is an error listing the candidates.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::discover::Disk;

/// A way to name a disk or partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `/dev/sda`, `/dev/nvme0n1p2`, or any path resolving to one.
    Node(PathBuf),
    /// `serial:XYZ` (the device's own serial, case-insensitive).
    Serial(String),
    /// `wwn:0x5000…` or `wwn:eui.…`.
    Wwn(String),
    /// `by-id:NAME` (a name in /dev/disk/by-id).
    ById(String),
    /// `by-path:NAME` (a name in /dev/disk/by-path).
    ByPath(String),
    /// `label:FSLABEL`: the partition whose filesystem has this label.
    Label(String),
    Largest,
    Smallest,
    FirstNonRemovable,
}

impl FromStr for Selector {
    type Err = SelectError;

    fn from_str(s: &str) -> Result<Selector, SelectError> {
        let bad = || SelectError::BadSelector(s.to_owned());
        let val = |v: &str| {
            if v.is_empty() {
                Err(bad())
            } else {
                Ok(v.to_owned())
            }
        };
        if s.starts_with('/') {
            return Ok(Selector::Node(PathBuf::from(s)));
        }
        match s {
            "largest" => return Ok(Selector::Largest),
            "smallest" => return Ok(Selector::Smallest),
            "first-nonremovable" => return Ok(Selector::FirstNonRemovable),
            _ => {}
        }
        let (kind, v) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "serial" => Ok(Selector::Serial(val(v)?)),
            "wwn" => Ok(Selector::Wwn(val(v)?)),
            "by-id" => Ok(Selector::ById(val(v)?)),
            "by-path" => Ok(Selector::ByPath(val(v)?)),
            "label" => Ok(Selector::Label(val(v)?)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Node(p) => write!(f, "{}", p.display()),
            Selector::Serial(s) => write!(f, "serial:{s}"),
            Selector::Wwn(s) => write!(f, "wwn:{s}"),
            Selector::ById(s) => write!(f, "by-id:{s}"),
            Selector::ByPath(s) => write!(f, "by-path:{s}"),
            Selector::Label(s) => write!(f, "label:{s}"),
            Selector::Largest => f.write_str("largest"),
            Selector::Smallest => f.write_str("smallest"),
            Selector::FirstNonRemovable => f.write_str("first-nonremovable"),
        }
    }
}

/// What a selector chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection<'a> {
    pub disk: &'a Disk,
    /// The partition index, when a partition was selected.
    pub partition: Option<u32>,
    /// The node to open: the disk's, or the partition's.
    pub node: PathBuf,
}

/// Why nothing (or too much) was selected.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "{0:?} is not a disk selector; use /dev/NODE, serial:…, wwn:…, by-id:…, by-path:…, \
         label:…, largest, smallest or first-nonremovable"
    )]
    BadSelector(String),
    #[error("no disk matches {selector}; disks present:\n{}", list(.candidates))]
    NoMatch {
        selector: String,
        candidates: Vec<String>,
    },
    #[error("{selector} matches several devices; name one exactly:\n{}", list(.matches))]
    Ambiguous {
        selector: String,
        matches: Vec<String>,
    },
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        return "  (none)".into();
    }
    v.iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn whole<'a>(d: &'a Disk) -> Selection<'a> {
    Selection {
        disk: d,
        partition: None,
        node: d.node.clone(),
    }
}

/// Resolves `sel` against discovered disks.
pub fn select<'a>(disks: &'a [Disk], sel: &Selector) -> Result<Selection<'a>, SelectError> {
    let mut hits: Vec<Selection<'a>> = Vec::new();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let link_match = |links: &[PathBuf], dir: &str, name: &str| {
        links
            .iter()
            .any(|l| l == Path::new(name) || *l == Path::new(dir).join(name))
    };
    match sel {
        Selector::Node(p) => {
            // /dev/disk/by-*/… and other symlinks resolve to the node.
            let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            for d in disks {
                if d.node == *p || d.node == canon {
                    hits.push(whole(d));
                }
                for part in &d.partitions {
                    if let Some(n) = &part.node {
                        if n == p || *n == canon {
                            hits.push(Selection {
                                disk: d,
                                partition: Some(part.index),
                                node: n.clone(),
                            });
                        }
                    }
                }
            }
        }
        Selector::Serial(s) => {
            hits.extend(
                disks
                    .iter()
                    .filter(|d| d.serial.as_deref().is_some_and(|x| eq(x, s)))
                    .map(whole),
            );
        }
        Selector::Wwn(w) => {
            hits.extend(
                disks
                    .iter()
                    .filter(|d| d.wwn.as_deref().is_some_and(|x| eq(x, w)))
                    .map(whole),
            );
        }
        Selector::ById(n) => {
            hits.extend(
                disks
                    .iter()
                    .filter(|d| link_match(&d.by_id, "/dev/disk/by-id", n))
                    .map(whole),
            );
        }
        Selector::ByPath(n) => {
            hits.extend(
                disks
                    .iter()
                    .filter(|d| link_match(&d.by_path, "/dev/disk/by-path", n))
                    .map(whole),
            );
        }
        Selector::Label(l) => {
            for d in disks {
                for p in &d.partitions {
                    if p.fs_label.as_deref() == Some(l.as_str()) {
                        if let Some(n) = &p.node {
                            hits.push(Selection {
                                disk: d,
                                partition: Some(p.index),
                                node: n.clone(),
                            });
                        }
                    }
                }
            }
        }
        Selector::Largest | Selector::Smallest | Selector::FirstNonRemovable => {
            let fixed: Vec<&Disk> = disks
                .iter()
                .filter(|d| !d.is_removable_or_usb() && !d.read_only && d.size > 0)
                .collect();
            let pick: Vec<&Disk> = match sel {
                Selector::FirstNonRemovable => fixed.into_iter().take(1).collect(),
                _ => {
                    let want = if *sel == Selector::Largest {
                        fixed.iter().map(|d| d.size).max()
                    } else {
                        fixed.iter().map(|d| d.size).min()
                    };
                    fixed.into_iter().filter(|d| Some(d.size) == want).collect()
                }
            };
            hits.extend(pick.into_iter().map(whole));
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(SelectError::NoMatch {
            selector: sel.to_string(),
            candidates: disks.iter().map(candidate).collect(),
        }),
        _ => Err(SelectError::Ambiguous {
            selector: sel.to_string(),
            matches: hits
                .iter()
                .map(|h| match h.partition {
                    Some(_) => format!("{} on {}", h.node.display(), candidate(h.disk)),
                    None => candidate(h.disk),
                })
                .collect(),
        }),
    }
}

fn candidate(d: &Disk) -> String {
    let mut s = d.summary();
    if d.is_removable_or_usb() {
        s.push_str("  (removable/USB: never chosen by a rule)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{Bus, DiskPartition};
    use crate::usage::{DevNum, InUse};

    fn disk(name: &str, size: u64, bus: Bus, serial: &str) -> Disk {
        Disk {
            node: PathBuf::from(format!("/dev/{name}")),
            name: name.into(),
            devnum: DevNum { major: 8, minor: 0 },
            size,
            logical_sector_size: 512,
            physical_sector_size: 512,
            model: Some("Model".into()),
            vendor: None,
            serial: Some(serial.into()),
            wwn: Some(format!("wwn-{serial}")),
            bus,
            removable: false,
            rotational: false,
            read_only: false,
            by_id: vec![PathBuf::from(format!("/dev/disk/by-id/ata-Model_{serial}"))],
            by_path: vec![PathBuf::from(format!("/dev/disk/by-path/pci-{name}"))],
            partitions: Vec::new(),
            in_use: InUse::default(),
            source: "udev".into(),
            missing: Vec::new(),
        }
    }

    fn part(node: &str, index: u32, label: &str) -> DiskPartition {
        DiskPartition {
            node: Some(node.into()),
            index,
            start: 1 << 20,
            size: 1 << 30,
            fs_type: Some("ext4".into()),
            fs_label: Some(label.into()),
            fs_uuid: None,
            part_name: None,
            mountpoints: Vec::new(),
            swap: false,
            holders: Vec::new(),
        }
    }

    fn machine() -> Vec<Disk> {
        let mut usb = disk("sdc", 4000 << 30, Bus::Usb, "USB-SER-5");
        usb.partitions.push(part("/dev/sdc1", 1, "IMPRINT"));
        let mut sata = disk("sda", 500 << 30, Bus::Sata, "SATA-SER-3");
        sata.partitions.push(part("/dev/sda1", 1, "root"));
        vec![
            disk("nvme0n1", 1000 << 30, Bus::Nvme, "NVME-SER-4"),
            sata,
            usb,
            disk("vda", 250 << 30, Bus::Virtio, "VBLK-SER-1"),
        ]
    }

    fn sel(disks: &[Disk], s: &str) -> Result<PathBuf, SelectError> {
        select(disks, &s.parse()?).map(|x| x.node)
    }

    #[test]
    fn exact_selectors_find_one_device() {
        let d = machine();
        assert_eq!(sel(&d, "/dev/sda").unwrap(), Path::new("/dev/sda"));
        assert_eq!(sel(&d, "/dev/sda1").unwrap(), Path::new("/dev/sda1"));
        assert_eq!(
            sel(&d, "serial:nvme-ser-4").unwrap(),
            Path::new("/dev/nvme0n1")
        );
        assert_eq!(
            sel(&d, "wwn:wwn-VBLK-SER-1").unwrap(),
            Path::new("/dev/vda")
        );
        assert_eq!(
            sel(&d, "by-id:ata-Model_SATA-SER-3").unwrap(),
            Path::new("/dev/sda")
        );
        assert_eq!(sel(&d, "by-path:pci-vda").unwrap(), Path::new("/dev/vda"));
        let s = select(&d, &"label:IMPRINT".parse().unwrap()).unwrap();
        assert_eq!(s.node, Path::new("/dev/sdc1"));
        assert_eq!(s.partition, Some(1));
        assert_eq!(s.disk.name, "sdc");
    }

    #[test]
    fn rules_never_choose_removable_or_usb_disks() {
        let d = machine();
        // The USB disk is the largest, but not eligible.
        assert_eq!(sel(&d, "largest").unwrap(), Path::new("/dev/nvme0n1"));
        assert_eq!(sel(&d, "smallest").unwrap(), Path::new("/dev/vda"));
        assert_eq!(
            sel(&d, "first-nonremovable").unwrap(),
            Path::new("/dev/nvme0n1")
        );
        let mut only_usb = vec![machine().remove(2)];
        only_usb[0].removable = true;
        let err = sel(&only_usb, "largest").unwrap_err();
        assert!(matches!(err, SelectError::NoMatch { .. }));
        assert!(err.to_string().contains("never chosen by a rule"), "{err}");
    }

    #[test]
    fn no_match_and_ties_list_the_candidates() {
        let d = machine();
        let err = sel(&d, "serial:NOPE").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/dev/sda  Model  serial SATA-SER-3  536.9 GB"),
            "{msg}"
        );
        let mut twins = machine();
        twins[3].size = twins[0].size;
        let err = sel(&twins, "largest").unwrap_err();
        assert!(
            matches!(&err, SelectError::Ambiguous { matches, .. } if matches.len() == 2),
            "{err}"
        );
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for s in ["sda", "serial:", "color:red", ""] {
            assert!(
                matches!(s.parse::<Selector>(), Err(SelectError::BadSelector(_))),
                "{s}"
            );
        }
    }
}
