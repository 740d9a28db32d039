//! Growing a filesystem after its partition grew, with the filesystem's own tool.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// What happened to a grown partition's filesystem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GrowOutcome {
    pub partition: u32,
    pub filesystem: Option<String>,
    /// True when the filesystem now fills its partition.
    pub grown: bool,
    /// What was done, or why nothing could be.
    pub message: String,
}

impl GrowOutcome {
    pub fn not_grown(partition: u32, why: &str) -> Self {
        GrowOutcome {
            partition,
            filesystem: None,
            grown: false,
            message: format!("partition {partition} was grown but its filesystem was not: {why}"),
        }
    }
}

/// Grows the filesystem of the partition at `start` (now `size` bytes) on `target` (a
/// disk or disk image file) through a loop device over exactly that range, so the same
/// code serves block devices and files. ext2/3/4: `e2fsck -f -y` then `resize2fs`;
/// NTFS: `ntfsresize`. Other filesystems keep their size, and the outcome says so.
pub fn grow_filesystem(
    target: &Path,
    start: u64,
    size: u64,
    fs: Option<&str>,
    partition: u32,
) -> GrowOutcome {
    let tool: &[&[&str]] = match fs {
        Some("ext2" | "ext3" | "ext4") => &[&["e2fsck", "-f", "-y"], &["resize2fs"]],
        Some("ntfs") => &[&["ntfsresize", "--force", "--force", "--no-progress-bar"]],
        Some(other) => {
            let mut o = GrowOutcome::not_grown(
                partition,
                &format!(
                    "Imprint has no tool to grow {other}; grow it with that system's own tools"
                ),
            );
            o.filesystem = Some(other.into());
            return o;
        }
        None => return GrowOutcome::not_grown(partition, "its filesystem is not recognized"),
    };
    let fail = |why: String| {
        let mut o = GrowOutcome::not_grown(partition, &why);
        o.filesystem = fs.map(str::to_string);
        o
    };
    let lo = match Command::new("losetup")
        .args([
            "-f",
            "--show",
            "-o",
            &start.to_string(),
            "--sizelimit",
            &size.to_string(),
        ])
        .arg(target)
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => {
            return fail(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return fail(format!("losetup could not run: {e}")),
    };
    let mut result = Ok(());
    for step in tool {
        let out = Command::new(step[0]).args(&step[1..]).arg(&lo).output();
        let ok = match &out {
            // e2fsck: 0 clean, 1 errors corrected (both fine before a resize).
            Ok(o) if step[0] == "e2fsck" => matches!(o.status.code(), Some(0 | 1)),
            Ok(o) => o.status.success(),
            Err(_) => false,
        };
        if !ok {
            let detail = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            result = Err(format!("{} failed: {detail}", step[0]));
            break;
        }
    }
    let _ = Command::new("losetup").args(["-d", &lo]).status();
    match result {
        Ok(()) => GrowOutcome {
            partition,
            filesystem: fs.map(str::to_string),
            grown: true,
            message: format!(
                "partition {partition} and its {} filesystem now fill the disk{}",
                fs.unwrap_or("?"),
                // ntfsresize(8) sets the dirty flag on purpose: Windows runs chkdsk at
                // its next boot, and ntfs-3g tools want --force until then.
                if fs == Some("ntfs") {
                    "; ntfsresize scheduled a consistency check (chkdsk) for the next Windows boot, as it always does"
                } else {
                    ""
                }
            ),
        },
        Err(why) => fail(why),
    }
}
