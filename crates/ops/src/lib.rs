//! Jobs shared by every front end (CLI, TUI, unattended boot): resolving sources and
//! targets, the safety checks that run before the first write, and running capture,
//! restore and verify with cleanup on failure. Draws no UI and never prints: front
//! ends pass an [`imaging::Sink`].
#![forbid(unsafe_code)]

mod capture;
mod devices;
mod error;
mod grow;
mod layout;
pub mod locations;
pub mod net;
mod restore;
mod stores;
mod verify;

pub use capture::{capture, preview_capture, CapturePreview, CaptureRequest};
pub use devices::{list_disks, resolve_device};
pub use error::{exit, OpsError};
pub use grow::GrowOutcome;
pub use layout::{Captured, PartitionRecord};
pub use restore::{
    plan_restore, required_size, run_restore, PartitionPlan, RestoreOutcome, RestorePlan,
    RestoreRequest, Unused,
};
pub use stores::{image_info, list_images, ImageSummary, StoreSummary};
pub use verify::{verify, VerifyRequest};

/// Environment variable naming a path on the medium Imprint booted from; the boot
/// environment's init sets it so no job can ever write to that disk.
pub const BOOT_MEDIUM_ENV: &str = "IMPRINT_BOOT_MEDIUM";
