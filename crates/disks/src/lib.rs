//! Disks: discovery, the disk/partition model, partition tables, block-device
//! I/O and ioctls, and the interlocks that refuse a target that must not be written.
//!
//! Knows nothing about images. Never prints: everything is returned to the
//! caller. All `unsafe` (ioctls) lives in the private `sys` module.
#![deny(unsafe_code)]

pub mod blockdev;
pub mod discover;
pub mod interlock;
pub mod monitor;
pub mod select;
mod sys;
pub mod table;
pub mod usage;

pub use blockdev::{open_source, open_target, Target};
pub use discover::{discover, render_table, Bus, DiscoverOptions, Disk, DiskPartition};
pub use interlock::{
    check_write_target, refusal_is_overridable, CheckOptions, Protected, Refusal, TargetFacts,
};
pub use monitor::{DiskEvent, DiskMonitor};
pub use select::{select, Selection, Selector};
pub use usage::{disk_holding, DevNum, SysRoot};
