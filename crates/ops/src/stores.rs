//! Listing a store's images and describing one.

use crate::error::OpsError;
use imaging::{Manifest, Store};
use serde::Serialize;
use std::path::Path;

/// One line of `imprint images`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub name: String,
    pub created: Option<String>,
    pub description: Option<String>,
    pub source_path: Option<String>,
    pub source_size: Option<u64>,
    /// Bytes inside the captured extents.
    pub used_bytes: Option<u64>,
    /// Compressed bytes of the chunks the image refers to.
    pub stored_bytes: Option<u64>,
    /// Why the image cannot be used, when it cannot.
    pub error: Option<String>,
}

/// A store and its images.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    pub path: String,
    pub chunk_size: u32,
    pub chunks: usize,
    /// Bytes of all sealed packs.
    pub pack_bytes: u64,
    pub images: Vec<ImageSummary>,
}

/// Lists the committed images; a damaged one is listed with its error.
pub fn list_images(store: &Path) -> Result<StoreSummary, OpsError> {
    let s = Store::open_location(&store.to_string_lossy())?;
    let mut images = Vec::new();
    for name in s.image_names()? {
        images.push(match s.load_image(&name) {
            Ok(img) => {
                let m = img.manifest;
                ImageSummary {
                    name,
                    created: Some(m.created),
                    description: Some(m.description),
                    source_path: Some(m.source.path),
                    source_size: Some(m.source.size),
                    used_bytes: Some(m.stats.captured_bytes),
                    stored_bytes: Some(m.stats.stored_bytes),
                    error: None,
                }
            }
            Err(e) => ImageSummary {
                name,
                created: None,
                description: None,
                source_path: None,
                source_size: None,
                used_bytes: None,
                stored_bytes: None,
                error: Some(e.to_string()),
            },
        });
    }
    Ok(StoreSummary {
        path: store.display().to_string(),
        chunk_size: s.chunk_size(),
        chunks: s.chunk_count(),
        pack_bytes: s.pack_bytes(),
        images,
    })
}

/// The manifest of one image, checked.
pub fn image_info(store: &Path, name: &str) -> Result<Manifest, OpsError> {
    let s = Store::open_location(&store.to_string_lossy())?;
    Ok(s.load_image(name)?.manifest)
}
