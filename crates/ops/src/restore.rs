//! Restore job in two steps so every front end can show what will be destroyed and
//! ask before anything is written: [`plan_restore`] checks everything and writes
//! nothing; [`run_restore`] writes.

use crate::error::OpsError;
use disks::interlock::{check_write_target, CheckOptions, Protected, TargetFacts};
use imaging::{Event, Extent, Image, RestoreOptions, RestoreReport, Sink, Store, FIRST_MIB};
use std::path::{Path, PathBuf};

/// What to restore where.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub store: PathBuf,
    pub name: String,
    /// Block device, existing regular file, or a file to create at the image's size.
    pub target: PathBuf,
    /// Overwrite a target that carries partitions or data (never overrides other rules).
    pub force: bool,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

/// A checked restore, ready to run.
#[derive(Debug)]
pub struct RestorePlan {
    pub store: Store,
    pub image: Image,
    pub target: PathBuf,
    /// What the checks learnt about an existing target; None for a file to create.
    pub facts: Option<TargetFacts>,
    pub threads: usize,
}

impl RestorePlan {
    /// Lines that say what will be written and what will be destroyed, for the
    /// confirmation prompt.
    pub fn describe(&self) -> Vec<String> {
        let m = &self.image.manifest;
        let mut v = vec![format!(
            "Image:  {} ({}, captured {} from {})",
            m.name,
            disks::usage::human_size(m.source.size),
            m.created,
            m.source.path
        )];
        match &self.facts {
            None => v.push(format!(
                "Target: new file {} of {}",
                self.target.display(),
                disks::usage::human_size(m.source.size)
            )),
            Some(f) => {
                v.push(format!("Target: {}", f.desc));
                if f.carries_data.is_empty() {
                    v.push("        holds no partition table or data that Imprint can see".into());
                } else {
                    v.push(format!(
                        "        EVERYTHING ON IT WILL BE DESTROYED: {}",
                        f.carries_data.join(", ")
                    ));
                }
            }
        }
        v
    }

    /// The target's serial number when known (for typed confirmations).
    pub fn target_serial(&self) -> Option<&str> {
        self.facts.as_ref().and_then(|f| f.desc.serial.as_deref())
    }
}

/// Every check that must pass before the first write: the store and image are valid,
/// the target is not busy, not the store's or boot medium's disk, has the image's
/// sector size, and is large enough. Writes nothing.
pub fn plan_restore(req: &RestoreRequest) -> Result<RestorePlan, OpsError> {
    let store = Store::open(&req.store)?;
    let image = store.load_image(&req.name)?;
    let m = &image.manifest;
    let mut protected = vec![Protected::store(&req.store)];
    if let Some(p) = std::env::var_os(crate::BOOT_MEDIUM_ENV) {
        protected.push(Protected::boot_medium(Path::new(&p)));
    }
    let facts = if req.target.exists() || req.target.is_symlink() {
        let f = check_write_target(
            &req.target,
            &protected,
            &CheckOptions {
                force: req.force,
                image_logical_sector_size: Some(m.source.logical_sector_size),
                min_size: Some(m.source.size),
                root: None,
            },
        )?;
        if f.size < m.source.size {
            return Err(OpsError::Refused(format!(
                "refusing to write {}: it has {} bytes but the image needs {} (rule: the target must \
                 hold the image); use a larger target",
                f.desc, f.size, m.source.size
            )));
        }
        Some(f)
    } else {
        check_new_file(&req.target, &protected)?;
        None
    };
    Ok(RestorePlan {
        store,
        image,
        target: req.target.clone(),
        facts,
        threads: req.threads,
    })
}

/// A target file that does not exist yet: its directory must exist and must not be
/// inside a protected path (the store).
fn check_new_file(target: &Path, protected: &[Protected]) -> Result<(), OpsError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let canon = std::fs::canonicalize(parent).map_err(|_| {
        OpsError::Usage(format!(
            "{} does not exist, and neither does its directory {}: name an existing disk, or a file in an existing directory",
            target.display(),
            parent.display()
        ))
    })?;
    if target.to_string_lossy().starts_with("/dev/") {
        return Err(OpsError::Usage(format!(
            "{} does not exist: no such disk (list disks with `imprint disks`)",
            target.display()
        )));
    }
    for p in protected {
        if let Ok(pc) = std::fs::canonicalize(&p.path) {
            if canon.starts_with(&pc) {
                return Err(OpsError::Refused(format!(
                    "refusing to write {}: it is inside {} (rule: a target file must not be inside \
                     the store); write it elsewhere",
                    target.display(),
                    p.what
                )));
            }
        }
    }
    Ok(())
}

/// Runs a checked restore. On failure the engine has zeroed the table areas.
pub fn run_restore(plan: &RestorePlan, sink: &mut dyn Sink) -> Result<RestoreReport, OpsError> {
    let m = &plan.image.manifest;
    let created = plan.facts.is_none();
    if created {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&plan.target)
            .map_err(|source| OpsError::Io {
                what: "creating",
                path: plan.target.clone(),
                source,
            })?;
        f.set_len(m.source.size).map_err(|source| OpsError::Io {
            what: "sizing",
            path: plan.target.clone(),
            source,
        })?;
    }
    let target = disks::blockdev::open_target(&plan.target)?;
    let size = target.size()?;
    let disk = m.source.size;
    // The backup GPT lives in the last 33 sectors; deferring the last MiB covers it for
    // any sector size and costs nothing when the disk has none.
    let tail = Extent::new(disk.saturating_sub(FIRST_MIB.len), FIRST_MIB.len.min(disk));
    let opts = RestoreOptions {
        deferred: vec![FIRST_MIB, tail],
        window: None,
        target_is_zeroed: created,
        threads: plan.threads,
    };
    let report = imaging::restore(&plan.store, &plan.image, target.file(), size, &opts, sink)?;
    if target.is_block_device() {
        if let Err(e) = target.reread_partition_table() {
            sink.event(Event::Warning(format!(
                "the kernel did not re-read the new partition table ({e}); reboot or run `partprobe {}` before using the disk",
                plan.target.display()
            )));
        }
        settle_udev();
    }
    Ok(report)
}

/// Waits for udev to create the new partitions' device nodes, when udev runs.
fn settle_udev() {
    if Path::new("/run/udev/control").exists() {
        let _ = std::process::Command::new("udevadm")
            .args(["settle", "--timeout=30"])
            .status();
    }
}
