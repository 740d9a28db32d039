//! The engine's errors: one variant per thing that can fail, each carrying where.

use std::path::PathBuf;

/// A chunk id written as hex, for messages.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything capture, restore, verify and the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on the store or a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading the source disk failed.
    #[error("reading the source at byte {offset}: {source}")]
    ReadSource {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// Reading the target disk failed (verify --against, delta restore).
    #[error("reading the disk at byte {offset}: {source}")]
    ReadTarget {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// Writing the target disk failed.
    #[error("writing the target at byte {offset}: {source}")]
    WriteTarget {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// The directory is not an Imprint store.
    #[error("{} is not an Imprint store ({reason}); give the directory that holds imprint-store.json", path.display())]
    NotAStore { path: PathBuf, reason: String },
    /// The store was written by a newer or unknown store format.
    #[error("store {} has format version {found}; this imprint reads version {supported}: upgrade imprint", path.display())]
    StoreVersion {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    /// The store's own description file is damaged.
    #[error("store description {} is damaged: {reason}", path.display())]
    StoreConfig { path: PathBuf, reason: String },
    /// The store is read-only (an HTTP store, or opened for reading).
    #[error("store {store} is read-only")]
    ReadOnlyStore { store: String },
    /// Another capture holds the store's writer lock.
    #[error("store {} is busy: another capture is writing to it (lock {})", store.display(), store.join("lock").display())]
    StoreBusy { store: PathBuf },
    /// An image name that cannot be used.
    #[error("invalid image name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    /// No committed image of that name.
    #[error("no image named {name:?} in store {store} (list them with `imprint images {store}`)")]
    ImageNotFound { name: String, store: String },
    /// The name is taken.
    #[error("an image named {existing:?} already exists in store {store}; choose another name")]
    ImageExists { existing: String, store: String },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest of image {name:?} is malformed: {reason}")]
    ManifestMalformed { name: String, reason: String },
    /// The manifest has a format version this build does not read.
    #[error("image {name:?} has format version {found}; this imprint reads version {supported}: upgrade imprint")]
    FormatVersion {
        name: String,
        found: u64,
        supported: u32,
    },
    /// The chunk map is damaged or inconsistent with the manifest.
    #[error("chunk map of image {name:?} is damaged: {reason}")]
    MapCorrupt { name: String, reason: String },
    /// The manifest and map do not hash to the recorded root hash.
    #[error("image {name:?} fails its root hash (expected {expected}, got {actual}): its manifest or chunk map was altered or damaged")]
    RootHashMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    /// An image refers to a chunk the store does not hold.
    #[error("chunk {} for disk offset {offset} is missing from the store", hex(id))]
    ChunkMissing { id: [u8; 32], offset: u64 },
    /// A stored chunk could not be read back intact.
    #[error(
        "chunk {} for disk offset {offset} is damaged in {pack} at byte {pack_offset}: {reason}",
        hex(id)
    )]
    ChunkCorrupt {
        id: [u8; 32],
        offset: u64,
        pack: String,
        pack_offset: u64,
        reason: String,
    },
    /// A stored chunk decompressed to bytes whose hash is not its id.
    #[error(
        "chunk for disk offset {offset} does not match its hash (expected {}, got {})",
        hex(expected),
        hex(actual)
    )]
    ChunkDigestMismatch {
        offset: u64,
        expected: [u8; 32],
        actual: [u8; 32],
    },
    /// The target cannot hold the image.
    #[error("target is too small: the image needs {need} bytes, the target has {have}")]
    TargetTooSmall { need: u64, have: u64 },
    /// A disk differs from the image it was compared with.
    #[error("{count} chunk(s) differ from the image; first at disk offset {first_offset}")]
    DiskMismatch { count: u64, first_offset: u64 },
    /// A disk's partition table is not the image's.
    #[error("the disk does not hold this image: {reason}")]
    TableMismatch { reason: String },
    /// The image failed verification.
    #[error("{count} damaged chunk(s) in image {name:?}; first: {first}")]
    ImageDamaged {
        name: String,
        count: u64,
        first: Box<Error>,
    },
    /// The caller's sink asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// A restore failed part way; the target was (or could not be) made unbootable.
    #[error("{}", restore_aborted_message(cause, *at_offset, *wiped))]
    RestoreAborted {
        at_offset: Option<u64>,
        cause: Box<Error>,
        wiped: bool,
    },
}

fn restore_aborted_message(cause: &Error, at: Option<u64>, wiped: bool) -> String {
    let at = at
        .map(|o| format!(" at disk offset {o}"))
        .unwrap_or_default();
    let state = if wiped {
        "the target's first MiB was zeroed, so this half-restored disk cannot boot; fix the cause and run the restore again"
    } else {
        "WARNING: the target's first MiB could not be zeroed; the half-restored disk may look bootable: do not use it"
    };
    format!("restore stopped{at}: {cause}; {state}")
}

impl Error {
    /// True when the failure means data does not match its hash (image or disk):
    /// front ends map these to the "verification mismatch" exit code.
    pub fn is_mismatch(&self) -> bool {
        match self {
            Error::ChunkCorrupt { .. }
            | Error::ChunkDigestMismatch { .. }
            | Error::ChunkMissing { .. }
            | Error::RootHashMismatch { .. }
            | Error::MapCorrupt { .. }
            | Error::DiskMismatch { .. }
            | Error::TableMismatch { .. }
            | Error::ImageDamaged { .. } => true,
            Error::RestoreAborted { cause, .. } => cause.is_mismatch(),
            _ => false,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
