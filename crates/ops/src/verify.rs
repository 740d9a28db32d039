//! Verify job: an image on its own, or a disk against an image.

use crate::error::OpsError;
use crate::layout::recorded_table;
use disks::table::{read_table, TableKind};
use imaging::{Event, Extent, Image, Sink, Store, VerifyReport};
use std::fs::File;
use std::path::PathBuf;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub store: PathBuf,
    pub name: String,
    /// Compare this disk (or file) with the image instead of checking the stored chunks.
    pub against: Option<PathBuf>,
    pub threads: usize,
}

/// Runs a verification; a mismatch is an error whose exit code is 3.
pub fn verify(req: &VerifyRequest, sink: &mut dyn Sink) -> Result<VerifyReport, OpsError> {
    let store = Store::open_location(&req.store.to_string_lossy())?;
    let image = store.load_image(&req.name)?;
    match &req.against {
        None => Ok(imaging::verify_image(&store, &image, req.threads, sink)?),
        Some(disk) => {
            let src = disks::blockdev::open_source(disk)?;
            let size = src.size()?;
            let exclude = refitted_areas(&image, src.file(), size, sink)?;
            Ok(imaging::verify_against_excluding(
                Some(&store),
                &image,
                &imaging::io::DirectFile::new(src.file(), src.open_direct()),
                size,
                &exclude,
                req.threads,
                sink,
            )?)
        }
    }
}

/// A restore onto a disk of another size rewrites parts of the table (GPT headers and
/// backup, the protective MBR's size field) and `--grow-last` grows a partition and its
/// filesystem. Those bytes legitimately differ from the image: this returns them, after
/// checking that the disk's partitions are the image's (same start, type and GUID;
/// sizes equal, or larger for a grown one). Same size: nothing is excluded.
fn refitted_areas(
    image: &Image,
    disk: &File,
    size: u64,
    sink: &mut dyn Sink,
) -> Result<Vec<Extent>, OpsError> {
    let m = &image.manifest;
    let Some(want) = recorded_table(m) else {
        return Ok(Vec::new());
    };
    if want.kind == TableKind::None {
        return Ok(Vec::new());
    }
    let ss = u64::from(want.sector_size);
    let mut r = disk;
    let have = match read_table(&mut r, size, want.sector_size) {
        Ok(t) => t,
        Err(e) if size == m.source.size => {
            // Same size: a byte compare of the table areas will say what differs.
            sink.event(Event::Warning(format!("the disk's partition table: {e}")));
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(table_differs(format!(
                "its partition table cannot be read: {e}"
            )))
        }
    };
    let same = have.kind == want.kind
        && have.partitions.len() == want.partitions.len()
        && have.partitions.iter().zip(&want.partitions).all(|(h, w)| {
            h.index == w.index
                && h.start == w.start
                && h.type_id == w.type_id
                && h.part_guid == w.part_guid
                && h.size >= w.size
        });
    if !same {
        return Err(table_differs(
            "its partitions are not the image's (start, type, GUID or size differ)".into(),
        ));
    }
    let mut exclude = Vec::new();
    if size != m.source.size {
        if let Some(g) = &want.gpt {
            // Protective MBR (its size field) and the primary header; the old backup.
            exclude.push(Extent::new(0, 2 * ss));
            let old_backup = g.backup_entries_lba * ss;
            exclude.push(Extent::new(
                old_backup,
                m.source.size.saturating_sub(old_backup),
            ));
            sink.event(Event::Warning(format!(
                "the disk is {} bytes, the image's {}: the GPT was moved to fit, so its headers are checked by parsing, not compared",
                size, m.source.size
            )));
        }
    }
    for (h, w) in have.partitions.iter().zip(&want.partitions) {
        if h.size > w.size {
            sink.event(Event::Warning(format!(
                "partition {} was grown from {} to {} bytes: its content is not compared",
                h.index, w.size, h.size
            )));
            exclude.push(Extent::new(w.start, w.size));
            match &want.gpt {
                Some(g) => exclude.push(Extent::new(
                    g.primary_entries_lba * ss,
                    g.entries_sectors(want.sector_size) * ss,
                )),
                None => exclude.push(Extent::new(0, ss)),
            }
            exclude.extend(want.ebrs.iter().map(|e| Extent::new(*e, ss)));
        }
    }
    exclude.sort();
    Ok(exclude)
}

fn table_differs(why: String) -> OpsError {
    OpsError::Engine(imaging::Error::TableMismatch { reason: why })
}
