//! What the screens show, as plain data: disks, stores and their images. The rows are
//! filled by a [`DiskSource`] and [`scan_store`] outside `update`, so tests build them
//! by hand and the state machine never touches a device.

use disks::usage::human_size;
use std::path::{Path, PathBuf};

/// Where the boot image mounts the `IMPRINT` partition (initramfs/ and the init crate).
pub const BOOT_STORE: &str = "/run/imprint/store";

/// The file that makes a directory a store (docs/FORMAT.md).
pub const STORE_MARKER: &str = "imprint-store.json";

/// One partition line under a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    /// Kernel name (`sda1`) or `#N` when the kernel made no node.
    pub name: String,
    pub size: u64,
    pub fs: Option<String>,
    pub label: Option<String>,
    /// "mounted /x", "swap", "held by md127".
    pub in_use: Vec<String>,
}

impl PartRow {
    /// What a person recognises the partition by: `sda1 ext4 "root" 20.0 GB`.
    pub fn describe(&self) -> String {
        let mut s = self.name.clone();
        if let Some(fs) = &self.fs {
            s.push(' ');
            s.push_str(fs);
        }
        if let Some(l) = &self.label {
            s.push_str(&format!(" \"{l}\""));
        }
        s.push(' ');
        s.push_str(&human_size(self.size));
        s
    }
}

/// One whole disk (or, in tests, a disk image file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRow {
    pub node: PathBuf,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// "sata", "nvme", "usb", ... or "?".
    pub bus: String,
    pub removable: bool,
    pub partitions: Vec<PartRow>,
    /// Mounts, swaps and holders of the disk or any partition.
    pub in_use: Vec<String>,
}

impl DiskRow {
    /// `/dev/sda  ProtoSATA  serial SATA-SER-3  500.1 GB`, the line confirmations use.
    pub fn title(&self) -> String {
        format!(
            "{}  {}  serial {}  {}",
            self.node.display(),
            self.model.as_deref().unwrap_or("(no model)"),
            self.serial.as_deref().unwrap_or("(none)"),
            human_size(self.size)
        )
    }
}

/// Lists the machine's disks. The TUI polls it (every 2 s) so hotplugged disks appear.
pub trait DiskSource: Send {
    fn disks(&self) -> Vec<DiskRow>;
}

/// The machine's disks from [`disks::discover`] (udev when it runs, else sysfs),
/// without loop, ram, zram and optical devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscoveredDisks;

impl DiskSource for DiscoveredDisks {
    fn disks(&self) -> Vec<DiskRow> {
        disks::discover(&disks::DiscoverOptions::default())
            .map(|v| v.iter().map(disk_row).collect())
            .unwrap_or_default()
    }
}

/// A discovered disk as the screens show it.
pub fn disk_row(d: &disks::Disk) -> DiskRow {
    let uses = |node: Option<&Path>| -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        let u = &d.in_use;
        let mut v: Vec<String> = u
            .mounts
            .iter()
            .filter(|m| m.device == node)
            .map(|m| format!("mounted {}", m.mountpoint.display()))
            .collect();
        if u.swaps.iter().any(|s| s == node) {
            v.push("swap".into());
        }
        v.extend(
            u.holders
                .iter()
                .filter(|h| h.device == node)
                .map(|h| format!("held by {}", h.holder)),
        );
        v
    };
    DiskRow {
        node: d.node.clone(),
        size: d.size,
        model: d.model.clone(),
        serial: d.serial.clone(),
        bus: d.bus.to_string(),
        removable: d.removable,
        partitions: d
            .partitions
            .iter()
            .map(|p| PartRow {
                name: p
                    .node
                    .as_ref()
                    .and_then(|n| n.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("#{}", p.index)),
                size: p.size,
                fs: p.fs_type.clone(),
                label: p.fs_label.clone().or_else(|| p.part_name.clone()),
                in_use: uses(p.node.as_deref()),
            })
            .collect(),
        in_use: uses(Some(&d.node)),
    }
}

/// A fixed list, for tests and for disk image files.
#[derive(Debug, Clone, Default)]
pub struct FixedDisks(pub Vec<DiskRow>);

impl DiskSource for FixedDisks {
    fn disks(&self) -> Vec<DiskRow> {
        self.0.clone()
    }
}

/// One image of a store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageRow {
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub description: String,
    pub source_path: String,
    /// The source disk's serial, when it had one.
    pub source_serial: Option<String>,
    pub source_size: u64,
    pub logical_sector_size: u32,
    /// Bytes inside the captured extents.
    pub used_bytes: u64,
    /// Compressed bytes of the chunks it refers to.
    pub stored_bytes: u64,
    /// "gpt", "mbr" or "none".
    pub table: String,
    /// The source disk's partitions.
    pub partitions: Vec<ImagePart>,
    /// Why the image cannot be used (damaged manifest or map).
    pub error: Option<String>,
}

/// One partition recorded in an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImagePart {
    /// 1-based, as `ops::RestoreRequest::partition` and `imprint info` count.
    pub number: u32,
    /// `#2 ext4 "root" 167.8 MB`.
    pub line: String,
}

/// What a store path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreState {
    /// A store with its images.
    Ready(Vec<ImageRow>),
    /// An empty or missing-but-creatable directory: the first capture creates the store.
    Empty,
    /// Nothing there (the IMPRINT partition is not mounted).
    Missing,
    /// Unusable, with the reason.
    Broken(String),
}

/// One store (a directory holding `imprint-store.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRow {
    /// The directory jobs open (a mounted share or partition), or an HTTP URL.
    pub path: PathBuf,
    /// What a person knows it by when not `path`: `smb://fs1/images`, `sdc1 ext4
    /// "DATA"`.
    pub label: Option<String>,
    /// Why no capture can go here (an HTTP store is read-only).
    pub read_only: Option<String>,
    pub state: StoreState,
    /// Bytes free for an unprivileged writer on the store's filesystem.
    pub free_bytes: Option<u64>,
}

impl StoreRow {
    pub fn images(&self) -> &[ImageRow] {
        match &self.state {
            StoreState::Ready(v) => v,
            _ => &[],
        }
    }

    /// True when a capture can write here.
    pub fn writable(&self) -> bool {
        self.read_only.is_none() && matches!(self.state, StoreState::Ready(_) | StoreState::Empty)
    }

    /// The store's name on screen: its label, else its path.
    pub fn name(&self) -> String {
        match &self.label {
            Some(l) => l.clone(),
            None => self.path.display().to_string(),
        }
    }

    /// `NAME: STATUS`, the store's line in lists.
    pub fn line(&self) -> String {
        format!("{}: {}", self.name(), self.status())
    }

    /// "3 images, 120.5 GB free", "no store yet", ...
    pub fn status(&self) -> String {
        let free = self
            .free_bytes
            .map(|f| format!(", {} free", human_size(f)))
            .unwrap_or_default();
        match &self.state {
            StoreState::Ready(v) if v.len() == 1 => format!("1 image{free}"),
            StoreState::Ready(v) => format!("{} images{free}", v.len()),
            StoreState::Empty => format!("empty: a capture creates the store{free}"),
            StoreState::Missing => "not present (not mounted)".into(),
            StoreState::Broken(e) => format!("unusable: {e}"),
        }
    }
}

/// Reads a store directory: its images with their partition lines, and free space.
pub fn scan_store(path: &Path) -> StoreRow {
    let url = path.to_string_lossy();
    let http = imaging::backend::is_http(&url);
    let free_bytes = if http { None } else { free_space(path) };
    let state = if http || path.join(STORE_MARKER).exists() {
        match imaging::Store::open_location(&url) {
            Err(e) => StoreState::Broken(e.to_string()),
            Ok(store) => match store.image_names() {
                Err(e) => StoreState::Broken(e.to_string()),
                Ok(names) => StoreState::Ready(
                    names
                        .into_iter()
                        .map(|n| match store.load_image(&n) {
                            Ok(img) => image_row(&img.manifest),
                            Err(e) => ImageRow {
                                name: n,
                                error: Some(e.to_string()),
                                ..Default::default()
                            },
                        })
                        .collect(),
                ),
            },
        }
    } else if !path.exists() {
        StoreState::Missing
    } else if std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none()) {
        StoreState::Empty
    } else {
        StoreState::Broken(format!(
            "not an Imprint store (no {STORE_MARKER}, and the directory holds other files)"
        ))
    };
    StoreRow {
        path: path.to_owned(),
        label: None,
        read_only: None,
        state,
        free_bytes,
    }
}

/// The image's row, partitions read from the manifest's `disks::table` JSON (FORMAT.md §5.2).
pub fn image_row(m: &imaging::Manifest) -> ImageRow {
    let table = m
        .partition_table
        .as_ref()
        .and_then(|t| t.get("kind"))
        .and_then(|k| k.as_str())
        .unwrap_or("none")
        .to_ascii_lowercase();
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let partitions = m
        .partitions
        .iter()
        .map(|p| {
            let idx = p.get("index").and_then(|x| x.as_u64()).unwrap_or(0);
            let size = p.get("size").and_then(|x| x.as_u64()).unwrap_or(0);
            let kind = s(p, "filesystem")
                .or_else(|| s(p, "fs"))
                .or_else(|| s(p, "type_name"))
                .unwrap_or_else(|| "?".into());
            let label = s(p, "label")
                .or_else(|| s(p, "name"))
                .map(|l| format!(" \"{l}\""))
                .unwrap_or_default();
            ImagePart {
                number: u32::try_from(idx).unwrap_or(0),
                line: format!("#{idx} {kind}{label} {}", human_size(size)),
            }
        })
        .collect();
    ImageRow {
        name: m.name.clone(),
        created: m.created.clone(),
        description: m.description.clone(),
        source_path: m.source.path.clone(),
        source_serial: m.source.serial.clone(),
        source_size: m.source.size,
        logical_sector_size: m.source.logical_sector_size,
        used_bytes: m.stats.captured_bytes,
        stored_bytes: m.stats.stored_bytes,
        table,
        partitions,
        error: None,
    }
}

/// Free bytes on the filesystem holding `path` (or its nearest existing ancestor).
pub fn free_space(path: &Path) -> Option<u64> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let st = rustix::fs::statvfs(&p).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
