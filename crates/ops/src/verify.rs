//! Verify job: an image on its own, or a disk against an image.

use crate::error::OpsError;
use imaging::{Sink, Store, VerifyReport};
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
    let store = Store::open(&req.store)?;
    let image = store.load_image(&req.name)?;
    match &req.against {
        None => Ok(imaging::verify_image(&store, &image, req.threads, sink)?),
        Some(disk) => {
            let src = disks::blockdev::open_source(disk)?;
            let size = src.size()?;
            Ok(imaging::verify_against(
                &image,
                src.file(),
                size,
                req.threads,
                sink,
            )?)
        }
    }
}
