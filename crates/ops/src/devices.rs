//! Naming disks: selectors (`serial:…`, `by-id:…`, `largest`, …) resolved to a node,
//! and the disk list for `imprint disks`.

use crate::error::OpsError;
use disks::discover::{discover, DiscoverOptions, Disk};
use disks::select::{select, Selector};
use std::path::PathBuf;

/// Turns what a person or script typed for a SOURCE/TARGET into a path: a path as is
/// (device node or file), or a selector resolved against the disks present. A selector
/// that matches nothing or several disks is an error listing the candidates.
pub fn resolve_device(spec: &str) -> Result<PathBuf, OpsError> {
    let is_rule = matches!(spec, "largest" | "smallest" | "first-nonremovable");
    if !is_rule && (spec.starts_with('/') || spec.starts_with('.') || !spec.contains(':')) {
        return Ok(PathBuf::from(spec));
    }
    let sel: Selector = spec.parse().map_err(|e| OpsError::Usage(format!("{e}")))?;
    let disks = list_disks(false)?;
    let chosen = select(&disks, &sel).map_err(|e| OpsError::Usage(e.to_string()))?;
    Ok(chosen.node)
}

/// The disks of this machine (loop, ram, optical and the like only with `all`).
pub fn list_disks(all: bool) -> Result<Vec<Disk>, OpsError> {
    discover(&DiscoverOptions {
        include_virtual: all,
        ..Default::default()
    })
    .map_err(|e| OpsError::Failed(format!("listing disks: {e}")))
}
