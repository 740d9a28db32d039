//! Used-block maps of filesystems, read from a partition's bytes alone.
//!
//! Owns filesystem detection by magic and the allocated extents of each known
//! filesystem, taken from that filesystem's own metadata. Never writes anything,
//! never mounts, never shells out.
#![forbid(unsafe_code)]
