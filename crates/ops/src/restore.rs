//! Restore job in two steps so every front end can show what will be destroyed and
//! ask before anything is written: [`plan_restore`] checks everything and writes
//! nothing; [`run_restore`] writes.
//!
//! Whole disk: onto the same size, a larger disk (the backup GPT moves to the new end;
//! `grow_last` extends the last partition and its filesystem) or a smaller one (when
//! every partition ends before its last usable sector). One partition: into the
//! target disk's partition of the same number, or into a partition device.

use crate::error::OpsError;
use crate::grow::{grow_filesystem, GrowOutcome};
use crate::layout::{read_counted_table, recorded_partitions, recorded_table, PartitionRecord};
use disks::interlock::{check_write_target, CheckOptions, Protected, TargetFacts};
use disks::table::{read_table, relocate_gpt, PartitionTable, Relocated, TableKind};
use disks::usage::{human_size, DevNum, SysRoot};
use imaging::{Event, Extent, Image, RestoreOptions, RestoreReport, Sink, Store, FIRST_MIB};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    /// Extend the last partition (and its filesystem) to the end of a larger target.
    pub grow_last: bool,
    /// Restore only this partition (1-based, as in `imprint info`).
    pub partition: Option<u32>,
    /// Write every chunk, even those the target already holds (no delta).
    pub full: bool,
    /// What to do with blocks the image does not use.
    pub unused: Unused,
    /// Worker threads (0: twice the cores).
    pub threads: usize,
}

/// What happens to the target's blocks that the image does not use (free space).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unused {
    /// Leave whatever they hold (like partclone): fastest.
    #[default]
    Leave,
    /// Write zeros over them.
    Zero,
    /// Tell the device they are free (BLKDISCARD; holes in a file).
    Discard,
}

/// Where one partition goes.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    /// The partition in the image.
    pub source: PartitionRecord,
    /// Byte offset on the target where it starts.
    pub dest_offset: u64,
    /// Size of the target partition.
    pub dest_size: u64,
}

/// A checked restore, ready to run.
#[derive(Debug)]
pub struct RestorePlan {
    pub store: Store,
    pub image: Image,
    pub target: PathBuf,
    /// What the checks learnt about an existing target; None for a file to create.
    pub facts: Option<TargetFacts>,
    /// Bytes of the target that will be used (may be less than the image's disk).
    pub target_size: u64,
    pub grow_last: bool,
    /// Set for a one-partition restore.
    pub partition: Option<PartitionPlan>,
    pub full: bool,
    pub unused: Unused,
    pub threads: usize,
}

/// What a restore did, beyond the engine's counts.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub report: RestoreReport,
    /// How the partition table was fitted to a target of another size.
    pub relocated: Option<Relocated>,
    /// What happened to the last partition's filesystem with `grow_last`.
    pub grown: Option<GrowOutcome>,
    /// True when chunks the target already held were skipped.
    pub delta: bool,
    /// Why delta was on or off.
    pub delta_reason: &'static str,
    /// Bytes of unused space zeroed or discarded.
    pub unused_bytes: u64,
}

impl std::ops::Deref for RestoreOutcome {
    type Target = RestoreReport;
    fn deref(&self) -> &RestoreReport {
        &self.report
    }
}

impl RestorePlan {
    /// Lines that say what will be written and what will be destroyed, for the
    /// confirmation prompt.
    pub fn describe(&self) -> Vec<String> {
        let m = &self.image.manifest;
        let mut v = vec![format!(
            "Image:  {} ({}, captured {} from {})",
            m.name,
            human_size(m.source.size),
            m.created,
            m.source.path
        )];
        if let Some(pp) = &self.partition {
            v.push(format!(
                "Part:   partition {} ({}) of the image, {}",
                pp.source.part.index,
                pp.source
                    .filesystem
                    .as_deref()
                    .unwrap_or("unknown filesystem"),
                human_size(pp.source.part.size)
            ));
        }
        match &self.facts {
            None => v.push(format!(
                "Target: new file {} of {}",
                self.target.display(),
                human_size(m.source.size)
            )),
            Some(f) => {
                v.push(format!("Target: {}", f.desc));
                if let Some(pp) = &self.partition {
                    v.push(format!(
                        "        THE PARTITION AT BYTE {} ({}) WILL BE OVERWRITTEN; nothing else is touched",
                        pp.dest_offset,
                        human_size(pp.dest_size)
                    ));
                } else if f.carries_data.is_empty() {
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

/// Bytes a whole-disk target must have: the end of the last partition plus the backup
/// GPT, or the whole image disk when it has no partition table.
pub fn required_size(image: &Image) -> u64 {
    let m = &image.manifest;
    let Some(t) = recorded_table(m) else {
        return m.source.size;
    };
    if t.kind == TableKind::None {
        return m.source.size;
    }
    let ss = u64::from(t.sector_size);
    let last_end = t
        .partitions
        .iter()
        .map(|p| p.end())
        // Not the extended container's end: it often spans free space to the end of
        // the disk, and fit_table cuts it at a smaller target's end. Its first sector
        // (the first EBR, perhaps an empty one) and every EBR must fit.
        .chain(t.extended.map(|(s, _)| s + ss))
        .chain(t.ebrs.iter().map(|e| e + ss))
        .max()
        .unwrap_or(ss);
    let backup = t
        .gpt
        .as_ref()
        .map(|g| (g.entries_sectors(t.sector_size) + 1) * ss)
        .unwrap_or(0);
    (last_end + backup).min(m.source.size)
}

/// Every check that must pass before the first write: the store and image are valid,
/// the target is not busy, not the store's or boot medium's disk, has the image's
/// sector size, and is large enough. Writes nothing.
pub fn plan_restore(req: &RestoreRequest) -> Result<RestorePlan, OpsError> {
    let store = Store::open_location(&req.store.to_string_lossy())?;
    let image = store.load_image(&req.name)?;
    let m = &image.manifest;
    let mut protected = Vec::new();
    // An HTTP store lives on no local disk.
    if !store.is_remote() {
        protected.push(Protected::store(&req.store));
    }
    if let Some(p) = std::env::var_os(crate::BOOT_MEDIUM_ENV) {
        protected.push(Protected::boot_medium(Path::new(&p)));
    }
    if let Some(n) = req.partition {
        return plan_partition(req, store, image, n, &protected);
    }
    let need = required_size(&image);
    let exists = req.target.exists() || req.target.is_symlink();
    let facts = if exists {
        // The refusal is built once per job and read by a person (see disks::interlock).
        #[allow(clippy::result_large_err)]
        let check = |force| {
            check_write_target(
                &req.target,
                &protected,
                &CheckOptions {
                    force,
                    image_logical_sector_size: Some(m.source.logical_sector_size),
                    min_size: Some(need),
                    root: None,
                },
            )
        };
        let f = match check(req.force) {
            // The data it carries is our own interrupted restore of this very image:
            // finishing it is what the user asked for, so no --force is needed.
            Err(disks::interlock::Refusal::CarriesData { .. })
                if holds_interrupted_restore(&req.target, &image) =>
            {
                check(true)?
            }
            r => r?,
        };
        if f.size < need {
            return Err(too_small(&f.desc.to_string(), need, f.size, &image));
        }
        Some(f)
    } else {
        check_new_file(&req.target, &protected)?;
        None
    };
    let target_size = facts.as_ref().map_or(m.source.size, |f| f.size);
    Ok(RestorePlan {
        store,
        target: req.target.clone(),
        facts,
        target_size,
        grow_last: req.grow_last,
        partition: None,
        full: req.full,
        unused: req.unused,
        threads: req.threads,
        image,
    })
}

/// True when `target` carries the resume marker of `image` (FORMAT.md §8).
/// The marker sits where `run_restore` puts it: the last MiB of the restored range.
fn holds_interrupted_restore(target: &Path, image: &Image) -> bool {
    let Ok(dev) = disks::blockdev::open_source(target) else {
        return false;
    };
    let Ok(size) = dev.size() else {
        return false;
    };
    let disk = image.manifest.source.size.min(size);
    disk >= 2 * FIRST_MIB.len && imaging::has_resume_marker(dev.file(), image, disk - FIRST_MIB.len)
}

fn too_small(what: &str, need: u64, have: u64, image: &Image) -> OpsError {
    let m = &image.manifest;
    OpsError::Refused(format!(
        "refusing to write {what}: it has {have} bytes ({}) but the image's partitions need {need} \
         bytes ({}; the source disk was {}) (rule: every partition must end before the target's \
         last usable sector); use a larger target",
        human_size(have),
        human_size(need),
        human_size(m.source.size)
    ))
}

/// A one-partition restore: the target is a whole disk (or disk image file) with a
/// partition of that number, or a partition device (or a file standing for one).
fn plan_partition(
    req: &RestoreRequest,
    store: Store,
    image: Image,
    n: u32,
    protected: &[Protected],
) -> Result<RestorePlan, OpsError> {
    let parts = recorded_partitions(&image.manifest);
    let Some(src) = parts.iter().find(|p| p.part.index == n).cloned() else {
        let have: Vec<String> = parts.iter().map(|p| p.part.index.to_string()).collect();
        return Err(OpsError::Usage(format!(
            "image {:?} has no partition {n}; it has: {}",
            image.manifest.name,
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        )));
    };
    if !(req.target.exists() || req.target.is_symlink()) {
        return Err(OpsError::Usage(format!(
            "{} does not exist; a partition restore needs an existing disk or partition",
            req.target.display()
        )));
    }
    // Overwriting the chosen partition is the request itself; the confirmation names it.
    let facts = check_write_target(
        &req.target,
        protected,
        &CheckOptions {
            force: true,
            image_logical_sector_size: None,
            min_size: None,
            root: None,
        },
    )?;
    let (dest_offset, dest_size) = if is_partition_device(&req.target) {
        (0, facts.size)
    } else {
        let f = std::fs::File::open(&req.target).map_err(|source| OpsError::Io {
            what: "opening",
            path: req.target.clone(),
            source,
        })?;
        // Counted as the capture counts it: a partition found at the wrong sector size
        // would be written at the wrong bytes.
        match read_counted_table(&f, facts.size, facts.logical_sector_size) {
            Ok(t) if t.kind != TableKind::None => {
                let Some(p) = t.partitions.iter().find(|p| p.index == n) else {
                    return Err(OpsError::Refused(format!(
                        "refusing to write {}: it has no partition {n} (it has {}); restore the whole disk first, or name a partition device",
                        facts.desc,
                        t.partitions.iter().map(|p| p.index.to_string()).collect::<Vec<_>>().join(", ")
                    )));
                };
                (p.start, p.size)
            }
            // A file with no table stands for the partition itself.
            _ if !facts.is_block_device => (0, facts.size),
            _ => {
                return Err(OpsError::Refused(format!(
                    "refusing to write {}: it has no partition table, so it has no partition {n}",
                    facts.desc
                )))
            }
        }
    };
    if dest_size < src.part.size {
        return Err(OpsError::Refused(format!(
            "refusing to write partition {n} of {}: it has {dest_size} bytes ({}) but the image's partition {n} has {} ({}) (rule: the target partition must be at least as large); use a larger partition",
            facts.desc,
            human_size(dest_size),
            src.part.size,
            human_size(src.part.size)
        )));
    }
    Ok(RestorePlan {
        store,
        target: req.target.clone(),
        target_size: facts.size,
        facts: Some(facts),
        grow_last: false,
        full: req.full,
        unused: req.unused,
        partition: Some(PartitionPlan {
            source: src,
            dest_offset,
            dest_size,
        }),
        threads: req.threads,
        image,
    })
}

fn is_partition_device(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    meta.file_type().is_block_device()
        && SysRoot::live()
            .block_dev(DevNum::from_dev_t(meta.rdev()))
            .is_ok_and(|d| d.is_partition)
}

/// A target file that does not exist yet: its directory must exist and must not be
/// inside a protected path (the store).
fn check_new_file(target: &Path, protected: &[Protected]) -> Result<(), OpsError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if target.to_string_lossy().starts_with("/dev/") {
        return Err(OpsError::Usage(format!(
            "{} does not exist: no such disk (list disks with `imprint disks`)",
            target.display()
        )));
    }
    let canon = std::fs::canonicalize(parent).map_err(|_| {
        OpsError::Usage(format!(
            "{} does not exist, and neither does its directory {}: name an existing disk, or a file in an existing directory",
            target.display(),
            parent.display()
        ))
    })?;
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
pub fn run_restore(plan: &RestorePlan, sink: &mut dyn Sink) -> Result<RestoreOutcome, OpsError> {
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
    let opts = match &plan.partition {
        Some(pp) => {
            let p = &pp.source.part;
            RestoreOptions {
                // The partition's first MiB holds its filesystem's superblock or boot
                // sector: zeroed first, written last, so a half-restored partition
                // never mounts.
                deferred: vec![Extent::new(p.start, p.size.min(FIRST_MIB.len))],
                window: Some(Extent::new(p.start, p.size)),
                dest_offset: Some(pp.dest_offset),
                target_is_zeroed: false,
                delta: false,
                marker_at: None,
                threads: plan.threads,
            }
        }
        None => {
            let disk = m.source.size.min(size);
            // The backup GPT lives in the last sectors; deferring the last MiB covers
            // it for any sector size and costs nothing when the disk has none.
            let tail = Extent::new(disk.saturating_sub(FIRST_MIB.len), FIRST_MIB.len.min(disk));
            RestoreOptions {
                deferred: vec![FIRST_MIB, tail],
                window: Some(Extent::new(0, disk)),
                dest_offset: None,
                target_is_zeroed: created,
                delta: false,
                marker_at: (disk >= 2 * FIRST_MIB.len).then_some(tail.offset),
                threads: plan.threads,
            }
        }
    };
    let mut opts = opts;
    let (delta, delta_reason) = decide_delta(plan, &target, created, &opts);
    opts.delta = delta;
    if delta {
        sink.event(Event::Warning(format!(
            "delta restore: {delta_reason}; only chunks that differ are written (--full writes all)"
        )));
    }
    // Chunks are written, and delta compares read, past the page cache where the target
    // allows it; the syncs of coreos-installer's order cover both descriptors.
    let io = imaging::io::DirectFile::new(target.file(), target.open_direct());
    let report = imaging::restore(&plan.store, &plan.image, &io, size, &opts, sink)?;
    let mut outcome = RestoreOutcome {
        report,
        relocated: None,
        grown: None,
        delta,
        delta_reason,
        unused_bytes: 0,
    };
    if plan.unused != Unused::Leave {
        outcome.unused_bytes = clear_unused(plan, &target, &opts, sink)?;
    }
    if plan.partition.is_none() {
        if let Some(table) = recorded_table(m) {
            fit_table(plan, &table, &target, size, sink, &mut outcome)?;
        }
    }
    if target.is_block_device() {
        if let Err(e) = target.reread_partition_table() {
            sink.event(Event::Warning(format!(
                "the kernel did not re-read the new partition table ({e}); reboot or run `partprobe {}` before using the disk",
                plan.target.display()
            )));
        }
        settle_udev();
    }
    drop(target);
    if let (Some(rel), true) = (&outcome.relocated, plan.grow_last) {
        if let Some((index, _, new_size)) = rel.grown {
            outcome.grown = Some(grow_last_filesystem(plan, index, new_size, sink));
        }
    }
    Ok(outcome)
}

/// Delta is on unless `--full`, the target was just created, or it holds something
/// else: a whole-disk target must carry the image's partition layout, or the resume
/// marker of an interrupted restore of this image.
fn decide_delta(
    plan: &RestorePlan,
    target: &disks::blockdev::Target,
    created: bool,
    opts: &RestoreOptions,
) -> (bool, &'static str) {
    if plan.full {
        return (false, "--full");
    }
    if created {
        return (false, "the target is a new file");
    }
    if plan.partition.is_some() {
        return (true, "one partition: comparing before writing");
    }
    if let Some(at) = opts.marker_at {
        if imaging::has_resume_marker(target.file(), &plan.image, at) {
            return (true, "resuming an interrupted restore of this image");
        }
    }
    let m = &plan.image.manifest;
    let Some(want) = recorded_table(m) else {
        return (false, "the image has no partition table to compare");
    };
    let mut r = target.file();
    match read_table(
        &mut r,
        m.source.size.min(plan.target_size),
        want.sector_size,
    ) {
        Ok(have) if same_layout(&have, &want) => (
            true,
            "the target already carries the image's partition layout",
        ),
        _ => (
            false,
            "the target's partition layout differs from the image's",
        ),
    }
}

fn same_layout(a: &PartitionTable, b: &PartitionTable) -> bool {
    a.kind == b.kind
        && a.kind != TableKind::None
        && a.partitions.len() == b.partitions.len()
        && a.partitions.iter().zip(&b.partitions).all(|(x, y)| {
            // The target's partitions may have grown (--grow-last), never shrunk.
            x.index == y.index && x.start == y.start && x.type_id == y.type_id && x.size >= y.size
        })
}

/// Zeroes or discards the target's bytes that the image does not use, inside the
/// restored window, after the data and tables are written.
fn clear_unused(
    plan: &RestorePlan,
    target: &disks::blockdev::Target,
    opts: &RestoreOptions,
    sink: &mut dyn Sink,
) -> Result<u64, OpsError> {
    let map = &plan.image.map;
    let window = opts.window.unwrap_or(Extent::new(0, map.disk_size));
    let shift = |o: u64| o - window.offset + opts.dest_offset.unwrap_or(window.offset);
    let mut gaps = Vec::new();
    let mut pos = window.offset;
    for e in imaging::extent::clip(&map.extents, window) {
        if e.offset > pos {
            gaps.push(Extent::new(pos, e.offset - pos));
        }
        pos = e.end();
    }
    if pos < window.end() {
        gaps.push(Extent::new(pos, window.end() - pos));
    }
    sink.event(Event::Phase(match plan.unused {
        Unused::Discard => "discarding unused blocks",
        _ => "zeroing unused blocks",
    }));
    let mut total = 0;
    for g in gaps {
        let at = shift(g.offset);
        match plan.unused {
            Unused::Discard => target.discard(at..at + g.len)?,
            _ => imaging::restore::write_zeros(target.file(), Extent::new(at, g.len))?,
        }
        total += g.len;
    }
    target.sync()?;
    Ok(total)
}

/// Fits the restored table to a target of another size: GPT backup to the new end, an
/// MBR extended container cut at a smaller target's end, optionally the last partition
/// grown. On failure the table is wiped like any failed
/// restore, so the disk cannot boot half-fitted.
fn fit_table(
    plan: &RestorePlan,
    table: &PartitionTable,
    target: &disks::blockdev::Target,
    size: u64,
    sink: &mut dyn Sink,
    outcome: &mut RestoreOutcome,
) -> Result<(), OpsError> {
    let m = &plan.image.manifest;
    // GPT: the backup moves to the new end. MBR: an extended container that ran
    // past a smaller target's end is cut there.
    let resize = size != m.source.size && table.kind != TableKind::None;
    if !(resize || (plan.grow_last && table.kind != TableKind::None)) {
        if plan.grow_last {
            sink.event(Event::Warning(
                "--grow-last: the image has no partition table; nothing to grow".into(),
            ));
        }
        return Ok(());
    }
    sink.event(Event::Phase("fitting the partition table to the disk"));
    let mut dev = target.file();
    match relocate_gpt(
        &mut dev,
        m.source.size,
        size,
        table.sector_size,
        plan.grow_last,
    ) {
        Ok(rel) => {
            let _ = target.file().sync_all();
            if plan.grow_last && rel.grown.is_none() {
                sink.event(Event::Warning(
                    "--grow-last: the last partition already ends at the end of the disk".into(),
                ));
            }
            outcome.relocated = Some(rel);
            Ok(())
        }
        Err(e) => {
            let wiped = imaging::io::WriteAt::write_all_at(target.file(), &[0u8; 1 << 16], 0)
                .and_then(|_| target.file().sync_all())
                .is_ok();
            Err(OpsError::Refused(format!(
                "the data was restored but fitting the partition table to {} failed: {e}; {}",
                plan.target.display(),
                if wiped {
                    "the partition table was wiped so the disk cannot boot half-fitted"
                } else {
                    "WARNING: the partition table could not be wiped"
                }
            )))
        }
    }
}

fn grow_last_filesystem(
    plan: &RestorePlan,
    index: u32,
    new_size: u64,
    sink: &mut dyn Sink,
) -> GrowOutcome {
    let parts = recorded_partitions(&plan.image.manifest);
    let Some(rec) = parts.iter().find(|p| p.part.index == index) else {
        return GrowOutcome::not_grown(index, "the image records no partition with that number");
    };
    sink.event(Event::Phase("growing the last filesystem"));
    let out = grow_filesystem(
        &plan.target,
        rec.part.start,
        new_size,
        rec.filesystem.as_deref(),
        index,
    );
    if !out.grown {
        sink.event(Event::Warning(out.message.clone()));
    }
    out
}

/// Waits for udev to create the new partitions' device nodes, when udev runs.
fn settle_udev() {
    if Path::new("/run/udev/control").exists() {
        let _ = std::process::Command::new("udevadm")
            .args(["settle", "--timeout=30"])
            .status();
    }
}
