//! The image engine: the store and its on-disk format, chunking, zstd, blake3,
//! and the capture/restore/verify pipelines over positional I/O traits.
//!
//! Never touches device paths, ioctls or terminals, and never prints: progress and
//! warnings go through [`Sink`]. docs/FORMAT.md is the specification of every byte.
#![forbid(unsafe_code)]

pub mod backend;
pub mod capture;
pub mod error;
pub mod extent;
pub mod format;
pub mod io;
mod pipeline;
pub mod restore;
pub mod sink;
pub mod store;
pub mod verify;

pub use capture::{capture, CaptureOptions, CaptureReport};
pub use error::{Error, Result};
pub use extent::Extent;
pub use format::{ChunkId, Manifest, SourceDisk, DEFAULT_CHUNK_SIZE, FORMAT_VERSION};
pub use io::{MemDisk, ReadAt, WriteAt};
pub use pipeline::{chunks_of, default_threads, read_masked};
pub use restore::{
    has_resume_marker, restore, ReadWriteAt, RestoreOptions, RestoreReport, FIRST_MIB,
};
pub use sink::{Event, NullSink, Progress, Sink, VecSink};
pub use store::{Image, Store, StoreWriter};
pub use verify::{verify_against, verify_against_excluding, verify_image, VerifyReport};
