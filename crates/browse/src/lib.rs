//! Browsing images without restoring them: positional reads of an image's disk straight
//! from the store ([`ImageReader`], only the chunks a read touches, verified, with a
//! small cache), a read-only FUSE directory with one file per partition, and on top of
//! it `mount` (loop device + the kernel's filesystem, read-only, journal never
//! replayed), `extract` (copy files out) and `export` (raw or qcow2 for VMs).
//!
//! Never writes to the store and never modifies an image; never prints (results come
//! back as values, per-item events through callbacks). ARCHITECTURE.md "Browsing
//! images" says why FUSE and not NBD.
#![forbid(unsafe_code)]

pub mod export;
pub mod extract;
pub mod fs;
pub mod parts;
pub mod reader;
pub mod session;
pub(crate) mod sys;

pub use export::{export, ExportReport, Format};
pub use extract::{ExtractReport, Extracted};
pub use parts::{partitions, Part};
pub use reader::{ImageReader, View, DEFAULT_CACHE_CHUNKS};
pub use session::{
    mount, mount_private, open, umount, MountRequest, Mounted, Record, UmountOutcome,
};

use ops::OpsError;
use std::path::Path;

/// Copies `paths` (files or directories, inside partition `partition`) of image `name`
/// into `to`, through a private read-only mount that is removed afterwards, also on
/// error. `each` sees every entry copied.
pub fn extract(
    store: &Path,
    name: &str,
    partition: Option<u32>,
    paths: &[String],
    to: &Path,
    each: &mut dyn FnMut(&Extracted),
) -> Result<ExtractReport, OpsError> {
    let rels = paths
        .iter()
        .map(|p| extract::inside(p))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(to).map_err(|source| OpsError::Io {
        what: "creating",
        path: to.to_path_buf(),
        source,
    })?;
    let mut mounted = mount_private(store, name, partition)?;
    let mut report = ExtractReport::default();
    for rel in &rels {
        extract::copy_out(mounted.mountpoint(), rel, to, &mut report, each).map_err(|e| {
            match mounted.last_error() {
                Some(m) => OpsError::Failed(format!("{e} (image read error: {m})")),
                None => e,
            }
        })?;
    }
    mounted.unmount()?;
    Ok(report)
}
