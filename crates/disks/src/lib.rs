//! Disks: discovery, the disk/partition model, partition tables, block-device
//! I/O and ioctls, and the interlocks that refuse a target that must not be written.
//!
//! Knows nothing about images.
