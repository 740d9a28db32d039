//! The partitions of an image as browsing needs them (FORMAT.md §5.2), and how the
//! kernel mounts each filesystem without ever writing to it.

use imaging::Manifest;
use ops::OpsError;

/// One partition of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 1-based as Linux numbers it; 0 for a filesystem on the whole disk.
    pub index: u32,
    pub start: u64,
    pub size: u64,
    pub filesystem: Option<String>,
    pub label: Option<String>,
}

impl Part {
    /// The file name of this partition under the FUSE directory.
    pub fn file_name(&self) -> String {
        if self.index == 0 {
            "disk.img".to_string()
        } else {
            format!("p{}.img", self.index)
        }
    }
}

/// The partitions recorded in a manifest, by index. Records that do not parse (a newer
/// writer's extra kinds) are skipped: they cannot be browsed but do not stop the rest.
pub fn partitions(m: &Manifest) -> Vec<Part> {
    let mut v: Vec<Part> = m
        .partitions
        .iter()
        .filter_map(|p| {
            let num = |k: &str| p.get(k).and_then(|v| v.as_u64());
            let text = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Some(Part {
                index: u32::try_from(num("index")?).ok()?,
                start: num("start")?,
                size: num("size")?,
                filesystem: text("filesystem"),
                label: text("label"),
            })
        })
        .filter(|p| {
            p.start
                .checked_add(p.size)
                .is_some_and(|e| e <= m.source.size)
        })
        .collect();
    v.sort_by_key(|p| p.index);
    v
}

/// How to mount one filesystem read-only so that nothing is ever written, not even a
/// journal replay: `(kernel fs type, options)`.
pub fn mount_type(filesystem: &str) -> Option<(&'static str, &'static str)> {
    Some(match filesystem {
        // noload: do not replay the journal of a filesystem captured dirty
        // (ext4(5): "noload ... do not load the journal on mounting").
        "ext2" | "ext3" | "ext4" => ("ext4", "ro,noload"),
        // iocharset=utf8: names as they are stored (long names are UTF-16). The
        // kernel's default charset may be a module the system lacks: Debian's 6.12 says
        // "IO charset ascii not found" in the boot environment without it.
        "fat12" | "fat16" | "fat32" | "vfat" => ("vfat", "ro,iocharset=utf8"),
        "exfat" => ("exfat", "ro"),
        // ntfs3 never replays $LogFile on a read-only mount; it refuses a dirty volume.
        "ntfs" => ("ntfs3", "ro"),
        "xfs" => ("xfs", "ro,norecovery"),
        "btrfs" => ("btrfs", "ro,rescue=nologreplay"),
        _ => return None,
    })
}

/// Picks the partition to mount: the one asked for, or the only mountable one.
pub fn choose(parts: &[Part], asked: Option<u32>, image: &str) -> Result<Part, OpsError> {
    let listing = || {
        parts
            .iter()
            .map(|p| {
                format!(
                    "{} ({})",
                    p.index,
                    p.filesystem.as_deref().unwrap_or("unknown")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(n) = asked {
        return parts.iter().find(|p| p.index == n).cloned().ok_or_else(|| {
            OpsError::Usage(format!(
                "image {image:?} has no partition {n}; its partitions are: {}",
                listing()
            ))
        });
    }
    let mountable: Vec<&Part> = parts
        .iter()
        .filter(|p| p.filesystem.as_deref().and_then(mount_type).is_some())
        .collect();
    match mountable.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(OpsError::Usage(format!(
            "image {image:?} has no partition with a filesystem Imprint can mount; its partitions are: {}",
            if parts.is_empty() { "none".to_string() } else { listing() }
        ))),
        _ => Err(OpsError::Usage(format!(
            "image {image:?} has several filesystems; choose one with --partition N: {}",
            listing()
        ))),
    }
}
