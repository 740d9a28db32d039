//! The image engine: the store and its on-disk format, chunking, zstd, blake3,
//! and the capture/restore/verify pipelines over positional I/O traits.
//!
//! Never touches device paths, ioctls or terminals, and never prints: progress and
//! warnings go through [`Sink`]. docs/FORMAT.md is the specification of every byte.
#![forbid(unsafe_code)]
