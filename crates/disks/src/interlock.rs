//! The checks that run before the first byte of a restore is written
//! (coreos-installer's order, DESIGN.md "Restore" step 1): refuse a target
//! that is mounted, swap, held, or holds something we must keep (the image
//! store, the source image, the boot medium), whose sector size differs from
//! the image's, or that is too small; ask for `force` before overwriting data.
//!
//! Only [`Refusal::CarriesData`] can be overridden: the others would destroy
//! the data being restored, the running system, or a filesystem in use.

// A refusal is built once per job and read by a person; boxing its fields
// to shrink the `Err` would only make matching on it clumsier.
#![allow(clippy::result_large_err)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::blockdev;
use crate::table;
use crate::usage::{human_size, BlockDev, DevNum, DeviceDesc, SysRoot};

/// Something that must not be on the target, with what it is for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    pub path: PathBuf,
    /// What a person calls it, e.g. `the image store /mnt/x`.
    pub what: String,
}

impl Protected {
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>) -> Protected {
        Protected {
            path: path.into(),
            what: what.into(),
        }
    }

    /// The image store directory.
    pub fn store(path: &Path) -> Protected {
        Protected::new(path, format!("the image store {}", path.display()))
    }

    /// A source image file (raw image import/export).
    pub fn source_image(path: &Path) -> Protected {
        Protected::new(path, format!("the source image {}", path.display()))
    }

    /// Any path on the medium Imprint was booted from.
    pub fn boot_medium(path: &Path) -> Protected {
        Protected::new(
            path,
            format!("the boot medium (holding {})", path.display()),
        )
    }
}

/// What the target must take; all optional.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Allow overwriting a disk that carries partitions or data
    /// ([`Refusal::CarriesData`]); never overrides any other rule.
    pub force: bool,
    /// The image's logical sector size: partition tables count in sectors, so
    /// a 512-byte image on a 4Kn disk (or back) would not boot.
    pub image_logical_sector_size: Option<u32>,
    /// Bytes the target must have at least.
    pub min_size: Option<u64>,
    /// Where to read the kernel's tables; `None` is the live system.
    pub root: Option<SysRoot>,
}

/// What the checks learnt about an acceptable target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetFacts {
    pub node: PathBuf,
    pub is_block_device: bool,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// Node, model, serial, size: for the confirmation prompt.
    pub desc: DeviceDesc,
    /// What is on the target now (partitions, a table, data) when `force`
    /// let it through; empty for a blank target.
    pub carries_data: Vec<String>,
}

/// Why a target was refused: one variant per rule.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{path}: no such device or file; list disks with `imprint list-disks`")]
    NotFound { path: PathBuf },
    #[error("{path} is neither a block device nor a regular file; name a disk such as /dev/sdb")]
    NotADisk { path: PathBuf },
    #[error(
        "refusing to write {device}: {partition} is mounted on {} (rule: never write a mounted disk); \
         unmount it (umount {}) and try again",
        mountpoint.display(), mountpoint.display()
    )]
    Mounted {
        device: DeviceDesc,
        partition: PathBuf,
        mountpoint: PathBuf,
    },
    #[error(
        "refusing to write {device}: {partition} is in use as swap (rule: never write active swap); \
         run `swapoff {}` and try again",
        partition.display()
    )]
    Swap {
        device: DeviceDesc,
        partition: PathBuf,
    },
    #[error(
        "refusing to write {device}: {partition} is held by {holder} (rule: never write a device \
         that device-mapper, RAID or a loop device is built on); stop {holder} and try again",
        partition = partition.display()
    )]
    Held {
        device: DeviceDesc,
        partition: PathBuf,
        holder: String,
    },
    #[error(
        "refusing to write {device}: it holds {what} (rule: never overwrite the store, the source \
         or the boot medium); choose another disk"
    )]
    HoldsProtected { device: DeviceDesc, what: String },
    #[error(
        "refusing to write {path}: it is inside {what} (rule: a target file must not be inside the \
         store or be the source); write it elsewhere",
        path = path.display()
    )]
    InsideProtected { path: PathBuf, what: String },
    #[error(
        "refusing to write {device}: its logical sector size is {target} bytes but the image was \
         taken from a disk with {image}-byte sectors (rule: partition tables count in sectors, so \
         the result would not boot); use a disk with {image}-byte sectors, or connect this one \
         the way the source was (USB enclosures and adapters can change a disk's sector size)"
    )]
    SectorSize {
        device: DeviceDesc,
        target: u32,
        image: u32,
    },
    #[error(
        "refusing to write {device}: it has {} but the image needs {} (rule: the target must hold \
         the image); use a larger disk",
        human_size(*have), human_size(*need)
    )]
    TooSmall {
        device: DeviceDesc,
        need: u64,
        have: u64,
    },
    #[error(
        "{device} carries data: {} (rule: overwriting data needs confirmation); check this is \
         the right disk, then repeat with --force",
        partitions.join(", ")
    )]
    CarriesData {
        device: DeviceDesc,
        partitions: Vec<String>,
    },
    #[error("checking {}: {step}: {source}", path.display())]
    Io {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
}

/// True for the one refusal `--force` may override ([`Refusal::CarriesData`]).
pub fn refusal_is_overridable(refusal: &Refusal) -> bool {
    matches!(refusal, Refusal::CarriesData { .. })
}

fn io_err<'a>(path: &'a Path, step: &'static str) -> impl FnOnce(io::Error) -> Refusal + 'a {
    move |source| Refusal::Io {
        path: path.to_owned(),
        step,
        source,
    }
}

/// Runs every check on `target` (a block device — whole disk or partition —
/// or an existing regular file) before anything is written to it.
///
/// `protected` are paths that must survive: the store directory, the source
/// image, a path on the boot medium. Each must exist; a protected path that
/// cannot be resolved refuses the target (better a false refusal than a
/// wiped store).
pub fn check_write_target(
    target: &Path,
    protected: &[Protected],
    opts: &CheckOptions,
) -> Result<TargetFacts, Refusal> {
    let root = opts.root.clone().unwrap_or_else(SysRoot::live);
    let meta = std::fs::metadata(target).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Refusal::NotFound {
                path: target.to_owned(),
            }
        } else {
            io_err(target, "reading its metadata")(source)
        }
    })?;
    let ft = meta.file_type();
    if ft.is_file() {
        check_file_target(&root, target, protected, meta.len())
    } else if ft.is_block_device() {
        let dev = root
            .block_dev(DevNum::from_dev_t(meta.rdev()))
            .map_err(io_err(target, "finding the device in sysfs"))?;
        check_block_target(&root, target, &dev, protected, opts)
    } else {
        Err(Refusal::NotADisk {
            path: target.to_owned(),
        })
    }
}

fn check_file_target(
    root: &SysRoot,
    target: &Path,
    protected: &[Protected],
    len: u64,
) -> Result<TargetFacts, Refusal> {
    let canon = std::fs::canonicalize(target).map_err(io_err(target, "resolving the path"))?;
    for p in protected {
        let pc = std::fs::canonicalize(&p.path)
            .map_err(io_err(&p.path, "resolving a protected path"))?;
        if canon.starts_with(&pc) {
            return Err(Refusal::InsideProtected {
                path: target.to_owned(),
                what: p.what.clone(),
            });
        }
    }
    // A file that backs a loop device is that device's disk: writing it
    // under a mounted filesystem corrupts it just like writing the disk.
    let loops = root
        .loops_backed_by(&canon)
        .map_err(io_err(target, "listing loop devices"))?;
    if let Some(l) = loops.first() {
        return Err(Refusal::Held {
            device: DeviceDesc::bare(target),
            partition: target.to_owned(),
            holder: l.name.clone(),
        });
    }
    Ok(TargetFacts {
        node: target.to_owned(),
        is_block_device: false,
        size: len,
        logical_sector_size: 512,
        physical_sector_size: 512,
        desc: DeviceDesc {
            size: Some(len),
            ..DeviceDesc::bare(target)
        },
        carries_data: Vec::new(),
    })
}

fn check_block_target(
    root: &SysRoot,
    target: &Path,
    dev: &BlockDev,
    protected: &[Protected],
    opts: &CheckOptions,
) -> Result<TargetFacts, Refusal> {
    let mut desc = root.describe(dev);
    desc.node = target.to_owned();

    for p in protected {
        let holding = root
            .devices_holding(&p.path)
            .map_err(io_err(&p.path, "finding the disk holding a protected path"))?;
        if holding.iter().any(|d| d.devnum == dev.devnum) {
            return Err(Refusal::HoldsProtected {
                device: desc,
                what: p.what.clone(),
            });
        }
    }

    let usage = root
        .usage(dev)
        .map_err(io_err(target, "reading mounts, swaps and holders"))?;
    if let Some(m) = usage.mounts.into_iter().next() {
        return Err(Refusal::Mounted {
            device: desc,
            partition: m.device,
            mountpoint: m.mountpoint,
        });
    }
    if let Some(s) = usage.swaps.into_iter().next() {
        return Err(Refusal::Swap {
            device: desc,
            partition: s,
        });
    }
    if let Some(h) = usage.holders.into_iter().next() {
        return Err(Refusal::Held {
            device: desc,
            partition: h.device,
            holder: h.holder,
        });
    }

    let src = blockdev::open_source(target).map_err(|e| Refusal::Io {
        path: target.to_owned(),
        step: "opening the device read-only",
        source: io::Error::other(e),
    })?;
    let block_err = |step: &'static str| {
        move |e: blockdev::Error| Refusal::Io {
            path: target.to_owned(),
            step,
            source: io::Error::other(e),
        }
    };
    let size = src.size().map_err(block_err("reading the size"))?;
    let lss = src
        .logical_sector_size()
        .map_err(block_err("reading the logical sector size"))?;
    let pss = src
        .physical_sector_size()
        .map_err(block_err("reading the physical sector size"))?;
    desc.size = Some(size);

    if let Some(image) = opts.image_logical_sector_size {
        if image != lss {
            return Err(Refusal::SectorSize {
                device: desc,
                target: lss,
                image,
            });
        }
    }
    if let Some(need) = opts.min_size {
        if need > size {
            return Err(Refusal::TooSmall {
                device: desc,
                need,
                have: size,
            });
        }
    }

    let mut carries = Vec::new();
    if !dev.is_partition {
        for p in root
            .partitions(dev)
            .map_err(io_err(target, "listing partitions"))?
        {
            carries.push(format!("partition {}", p.node.display()));
        }
    }
    let mut file = src.into_file();
    if carries.is_empty() && !dev.is_partition {
        // The kernel may parse no tables at all (shared/notes/host-kernel.md):
        // read the table ourselves to name what would be lost.
        match table::read_table(&mut file, size, lss) {
            Ok(t) => carries.extend(t.partitions.iter().map(|p| {
                format!(
                    "partition {} ({}, {})",
                    p.index,
                    p.type_name,
                    human_size(p.size)
                )
            })),
            Err(e) => carries.push(format!("a partition table that does not parse ({e})")),
        }
    }
    if carries.is_empty() {
        if let Some(what) =
            first_mib_content(&mut file, lss).map_err(io_err(target, "reading the first MiB"))?
        {
            carries.push(what);
        }
    }
    if !carries.is_empty() && !opts.force {
        return Err(Refusal::CarriesData {
            device: desc,
            partitions: carries,
        });
    }
    Ok(TargetFacts {
        node: target.to_owned(),
        is_block_device: true,
        size,
        logical_sector_size: lss,
        physical_sector_size: pss,
        desc,
        carries_data: carries,
    })
}

/// What the first MiB says is on a device the kernel shows no partitions
/// for (this host kernel parses no tables at all): a GPT header at LBA 1
/// (UEFI 2.10 §5.3.2), an MBR boot signature (0x55AA at byte 510), or any
/// non-zero byte. `None` for a blank device.
fn first_mib_content(dev: &mut File, sector: u32) -> io::Result<Option<String>> {
    dev.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < buf.len() {
        match dev.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let buf = &buf[..n];
    let lba1 = sector as usize;
    if buf.len() >= lba1 + 8 && &buf[lba1..lba1 + 8] == b"EFI PART" {
        return Ok(Some("a GPT partition table".into()));
    }
    if buf.len() >= 512 && buf[510] == 0x55 && buf[511] == 0xaa {
        return Ok(Some("an MBR partition table or boot sector".into()));
    }
    if buf.iter().any(|&b| b != 0) {
        return Ok(Some("data in its first MiB".into()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts_in(root: &SysRoot) -> CheckOptions {
        CheckOptions {
            root: Some(root.clone()),
            ..Default::default()
        }
    }

    #[test]
    fn file_inside_the_store_is_refused() {
        let store = tempfile::tempdir().unwrap();
        let sub = store.path().join("images");
        std::fs::create_dir(&sub).unwrap();
        let target = sub.join("out.img");
        std::fs::write(&target, b"").unwrap();
        let err = check_write_target(
            &target,
            &[Protected::store(store.path())],
            &CheckOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::InsideProtected { .. }), "{err}");
        assert!(err.to_string().contains("the image store"), "{err}");
        assert!(!refusal_is_overridable(&err));
    }

    #[test]
    fn source_image_itself_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("src.img");
        std::fs::write(&img, b"x").unwrap();
        let err = check_write_target(
            &img,
            &[Protected::source_image(&img)],
            &CheckOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::InsideProtected { .. }));
    }

    #[test]
    fn file_outside_protected_paths_is_accepted_with_its_size() {
        let store = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let target = other.path().join("out.img");
        std::fs::write(&target, vec![0; 4096]).unwrap();
        let facts = check_write_target(
            &target,
            &[Protected::store(store.path())],
            &CheckOptions::default(),
        )
        .unwrap();
        assert!(!facts.is_block_device);
        assert_eq!(facts.size, 4096);
        assert_eq!(facts.logical_sector_size, 512);
    }

    #[test]
    fn missing_target_is_not_found_and_a_directory_is_not_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_write_target(&dir.path().join("nope"), &[], &CheckOptions::default())
            .unwrap_err();
        assert!(matches!(err, Refusal::NotFound { .. }));
        let err = check_write_target(dir.path(), &[], &CheckOptions::default()).unwrap_err();
        assert!(matches!(err, Refusal::NotADisk { .. }));
    }

    #[test]
    fn missing_protected_path_refuses_rather_than_guesses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.img");
        std::fs::write(&target, b"").unwrap();
        let err = check_write_target(
            &target,
            &[Protected::store(&dir.path().join("gone"))],
            &opts_in(&SysRoot::live()),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::Io { .. }));
    }

    #[test]
    fn only_carries_data_is_overridable() {
        let d = DeviceDesc::bare(Path::new("/dev/sdz"));
        assert!(refusal_is_overridable(&Refusal::CarriesData {
            device: d.clone(),
            partitions: vec!["partition /dev/sdz1".into()],
        }));
        for r in [
            Refusal::Mounted {
                device: d.clone(),
                partition: "/dev/sdz1".into(),
                mountpoint: "/mnt".into(),
            },
            Refusal::HoldsProtected {
                device: d.clone(),
                what: "the boot medium".into(),
            },
            Refusal::TooSmall {
                device: d.clone(),
                need: 2,
                have: 1,
            },
        ] {
            assert!(!refusal_is_overridable(&r), "{r}");
        }
    }

    #[test]
    fn messages_name_the_rule_the_disk_and_the_remedy() {
        let d = DeviceDesc {
            node: "/dev/sdb".into(),
            model: Some("ProtoSATA".into()),
            serial: Some("SATA-SER-3".into()),
            size: Some(500_107_862_016),
        };
        let m = Refusal::Mounted {
            device: d.clone(),
            partition: "/dev/sdb1".into(),
            mountpoint: "/mnt/data".into(),
        }
        .to_string();
        assert!(
            m.contains("/dev/sdb (ProtoSATA, serial SATA-SER-3, 500.1 GB)"),
            "{m}"
        );
        assert!(m.contains("/dev/sdb1 is mounted on /mnt/data"), "{m}");
        assert!(m.contains("umount /mnt/data"), "{m}");
        let s = Refusal::SectorSize {
            device: d,
            target: 4096,
            image: 512,
        }
        .to_string();
        assert!(s.contains("4096") && s.contains("512-byte sectors"), "{s}");
        assert!(s.contains("USB enclosures and adapters"), "{s}");
    }

    #[test]
    fn blank_and_written_first_mib_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, vec![0; 2 << 20]).unwrap();
        assert_eq!(
            first_mib_content(&mut File::open(&p).unwrap(), 512).unwrap(),
            None
        );
        let mut data = vec![0; 2 << 20];
        data[512..520].copy_from_slice(b"EFI PART");
        data[510] = 0x55;
        data[511] = 0xaa;
        std::fs::write(&p, &data).unwrap();
        let got = first_mib_content(&mut File::open(&p).unwrap(), 512).unwrap();
        assert_eq!(got.as_deref(), Some("a GPT partition table"));
        data[512] = 0;
        std::fs::write(&p, &data).unwrap();
        let got = first_mib_content(&mut File::open(&p).unwrap(), 512).unwrap();
        assert!(got.unwrap().contains("MBR"));
    }
}
