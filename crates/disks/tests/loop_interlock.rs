//! Interlocks against real loop devices, partitions and mounts (needs root,
//! `losetup`, `sfdisk`, `partx`, `mkfs.ext4`). The host kernel parses no
//! partition tables (shared/notes/host-kernel.md), so partitions are added
//! with `partx -a`. Every test tears down what it made in a Drop guard,
//! by device name, even when it fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use disks::interlock::{check_write_target, CheckOptions, Protected, Refusal};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_stdin(cmd: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loop tests need root and the tools; elsewhere they say so and pass.
fn can_run() -> bool {
    // We are root when /proc/self belongs to uid 0.
    let root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let tools = ["losetup", "sfdisk", "partx", "mkfs.ext4"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !(root && tools && Path::new("/dev/loop-control").exists()) {
        eprintln!("skipping: needs root, loop devices and losetup/sfdisk/partx/mkfs.ext4");
        return false;
    }
    true
}

/// A loop device over a sparse temp file, optionally partitioned, with
/// mounts. Drop unmounts, removes the partitions and detaches, by name.
struct LoopDisk {
    dir: tempfile::TempDir,
    node: String,
    partitioned: bool,
    mounts: Vec<PathBuf>,
}

impl LoopDisk {
    /// `layout`: an sfdisk script, or `None` for a bare device.
    fn new(size_mib: u64, layout: Option<&str>) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        fs::File::create(&img)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        if let Some(script) = layout {
            run_stdin("sfdisk", &["--quiet", img.to_str().unwrap()], script);
        }
        let node = run("losetup", &["-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_owned();
        assert!(node.starts_with("/dev/loop"), "losetup printed {node:?}");
        let mut disk = LoopDisk {
            dir,
            node,
            partitioned: false,
            mounts: Vec::new(),
        };
        if layout.is_some() {
            run("partx", &["-a", &disk.node]);
            disk.partitioned = true;
        }
        disk
    }

    fn image(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.node)
    }

    /// mkfs.ext4 on `dev` and mount it on a new directory in the temp dir.
    fn mount_ext4(&mut self, dev: &str) -> PathBuf {
        run("mkfs.ext4", &["-q", "-F", dev]);
        let mp = self.dir.path().join(format!("mnt{}", self.mounts.len()));
        fs::create_dir(&mp).unwrap();
        run("mount", &[dev, mp.to_str().unwrap()]);
        self.mounts.push(mp.clone());
        mp
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        for mp in self.mounts.iter().rev() {
            let ok = Command::new("umount")
                .arg(mp)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(mp).status();
            }
        }
        if self.partitioned {
            let _ = Command::new("partx").args(["-d", &self.node]).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.node]).status();
    }
}

const TWO_PARTS: &str = "label: dos\n,16M,L\n,,L\n";

#[test]
fn whole_disk_with_a_mounted_partition_is_refused_naming_the_partition() {
    if !can_run() {
        return;
    }
    let mut d = LoopDisk::new(64, Some(TWO_PARTS));
    let p1 = d.part(1);
    let mp = d.mount_ext4(&p1);
    let err = check_write_target(Path::new(&d.node), &[], &CheckOptions::default()).unwrap_err();
    match &err {
        Refusal::Mounted {
            partition,
            mountpoint,
            ..
        } => {
            assert_eq!(partition, Path::new(&p1));
            assert_eq!(mountpoint, &mp);
        }
        other => panic!("expected Mounted, got {other}"),
    }
    assert!(err.to_string().contains(&p1), "{err}");
    // force never overrides a mount.
    let forced = CheckOptions {
        force: true,
        ..Default::default()
    };
    assert!(matches!(
        check_write_target(Path::new(&d.node), &[], &forced),
        Err(Refusal::Mounted { .. })
    ));
    // The kernel's own O_EXCL guard agrees.
    assert!(matches!(
        disks::open_target(Path::new(&d.node)),
        Err(disks::blockdev::Error::Busy { .. })
    ));
}

#[test]
fn disk_holding_the_store_is_refused_even_with_force() {
    if !can_run() {
        return;
    }
    let mut d = LoopDisk::new(64, None);
    let node = d.node.clone();
    let mp = d.mount_ext4(&node);
    let store = mp.join("store");
    fs::create_dir(&store).unwrap();
    let holder = disks::disk_holding(&store)
        .unwrap()
        .expect("store is on a disk");
    assert_eq!(holder.node, Path::new(&d.node));

    let opts = CheckOptions {
        force: true,
        ..Default::default()
    };
    let err =
        check_write_target(Path::new(&d.node), &[Protected::store(&store)], &opts).unwrap_err();
    match &err {
        Refusal::HoldsProtected { device, what } => {
            assert_eq!(device.node, Path::new(&d.node));
            assert!(what.contains("image store"), "{what}");
        }
        other => panic!("expected HoldsProtected, got {other}"),
    }
    assert!(!disks::refusal_is_overridable(&err));

    // A target file inside that store is refused too.
    let inside = store.join("restore.img");
    fs::write(&inside, b"").unwrap();
    assert!(matches!(
        check_write_target(&inside, &[Protected::store(&store)], &opts),
        Err(Refusal::InsideProtected { .. })
    ));

    // And the loop's backing file, while mounted, is held by the loop device.
    assert!(matches!(
        check_write_target(&d.image(), &[], &opts),
        Err(Refusal::Held { .. })
    ));
}

#[test]
fn partition_next_to_the_store_partition_is_accepted() {
    if !can_run() {
        return;
    }
    let mut d = LoopDisk::new(64, Some(TWO_PARTS));
    let p1 = d.part(1);
    let mp = d.mount_ext4(&p1);
    let store = mp.join("store");
    fs::create_dir(&store).unwrap();
    let protected = [Protected::store(&store)];
    let facts =
        check_write_target(Path::new(&d.part(2)), &protected, &CheckOptions::default()).unwrap();
    assert!(facts.is_block_device);
    // p1 starts at 1 MiB (sfdisk alignment) and is 16 MiB long.
    assert_eq!(facts.size, 47 << 20);
    assert!(matches!(
        check_write_target(Path::new(&p1), &protected, &CheckOptions::default()),
        Err(Refusal::HoldsProtected { .. })
    ));
}

#[test]
fn unused_partitioned_disk_needs_force_and_then_reports_its_facts() {
    if !can_run() {
        return;
    }
    let d = LoopDisk::new(64, Some(TWO_PARTS));
    let err = check_write_target(Path::new(&d.node), &[], &CheckOptions::default()).unwrap_err();
    match &err {
        Refusal::CarriesData { partitions, .. } => {
            assert_eq!(partitions.len(), 2, "{partitions:?}");
            assert!(partitions[0].contains(&d.part(1)));
        }
        other => panic!("expected CarriesData, got {other}"),
    }
    assert!(disks::refusal_is_overridable(&err));
    let too_small = CheckOptions {
        force: true,
        min_size: Some(65 << 20),
        ..Default::default()
    };
    assert!(matches!(
        check_write_target(Path::new(&d.node), &[], &too_small),
        Err(Refusal::TooSmall { have, .. }) if have == 64 << 20
    ));
    let sector = CheckOptions {
        force: true,
        image_logical_sector_size: Some(4096),
        ..Default::default()
    };
    assert!(matches!(
        check_write_target(Path::new(&d.node), &[], &sector),
        Err(Refusal::SectorSize {
            target: 512,
            image: 4096,
            ..
        })
    ));
    let facts = check_write_target(
        Path::new(&d.node),
        &[],
        &CheckOptions {
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(facts.size, 64 << 20);
    assert_eq!(facts.logical_sector_size, 512);
    assert_eq!(facts.carries_data.len(), 2);

    // Unused: the exclusive open succeeds and the ioctls answer.
    let t = disks::open_target(Path::new(&d.node)).unwrap();
    assert!(t.is_block_device());
    assert_eq!(t.size().unwrap(), 64 << 20);
    assert_eq!(t.logical_sector_size().unwrap(), 512);
    assert!(t.physical_sector_size().unwrap() >= 512);
}

#[test]
fn blank_loop_device_is_accepted_without_force() {
    if !can_run() {
        return;
    }
    let d = LoopDisk::new(8, None);
    let facts = check_write_target(Path::new(&d.node), &[], &CheckOptions::default()).unwrap();
    assert!(facts.carries_data.is_empty());
    let t = disks::open_target(Path::new(&d.node)).unwrap();
    // Loop devices support discard by punching holes in the backing file.
    t.discard(0..1 << 20).unwrap();
}

#[test]
fn discovery_finds_a_loop_disk_partition_by_its_fs_label() {
    if !can_run() {
        return;
    }
    let d = LoopDisk::new(64, Some(TWO_PARTS));
    run("mkfs.ext4", &["-q", "-F", "-L", "IMPRINT", &d.part(1)]);
    let props = disks::discover::NoProperties;
    let opts = disks::DiscoverOptions {
        include_virtual: true,
        properties: Some(&props),
        ..Default::default()
    };
    let all = disks::discover(&opts).unwrap();
    let disk = all
        .iter()
        .find(|x| x.node == Path::new(&d.node))
        .expect("loop disk listed with include_virtual");
    assert_eq!(disk.size, 64 << 20);
    assert_eq!(disk.partitions.len(), 2);
    assert_eq!(disk.partitions[0].fs_type.as_deref(), Some("ext4"));
    // Another test may have made an IMPRINT loop disk too: select among ours.
    let ours = vec![disk.clone()];
    let s = disks::select(&ours, &"label:IMPRINT".parse().unwrap()).unwrap();
    assert_eq!(s.node, Path::new(&d.part(1)));
    assert!(disks::render_table(&ours).contains("\"IMPRINT\""));
    // Without include_virtual, loop devices are not listed.
    let fixed = disks::discover(&disks::DiscoverOptions {
        properties: Some(&props),
        ..Default::default()
    })
    .unwrap();
    assert!(fixed.iter().all(|x| !x.name.starts_with("loop")));
}

#[test]
fn partition_table_reread_on_a_loop_device_without_partition_scanning() {
    if !can_run() {
        return;
    }
    // `losetup` without -P: the kernel keeps no partitions of the device and
    // refuses BLKRRPART with EINVAL. There is nothing to re-read, so no error
    // (a restore would otherwise warn "reboot or run partprobe").
    let bare = LoopDisk::new(16, None);
    disks::open_target(Path::new(&bare.node))
        .unwrap()
        .reread_partition_table()
        .unwrap();
    // Partitions added by hand (partx -a) are not re-read either: they are stale
    // after a restore, and that is still reported.
    let parted = LoopDisk::new(64, Some(TWO_PARTS));
    let err = disks::open_target(Path::new(&parted.node))
        .unwrap()
        .reread_partition_table()
        .unwrap_err();
    assert!(
        matches!(err, disks::blockdev::Error::RereadPartitionTable { .. }),
        "{err}"
    );
}
