//! Disks appearing and disappearing, for the TUI ("hotplugged USB disks
//! appear without restart", DESIGN.md). Listens to udev's netlink monitor
//! when udevd runs — its events arrive after the rules ran, so the new
//! disk's properties are complete — else polls `/sys/block`.
//!
//! Events go over a channel from a worker thread; dropping the monitor stops
//! the thread. Existing disks produce no events: call
//! [`crate::discover::discover`] first, then apply events.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::discover::{discover_one, udev_running, DiscoverOptions, Disk};
use crate::sys;
use crate::usage::SysRoot;

/// A change in the set of whole disks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskEvent {
    Added(Box<Disk>),
    /// The node the disk had.
    Removed(PathBuf),
}

/// A running disk monitor; iterate it (blocking) or use [`Self::events`].
#[derive(Debug)]
pub struct DiskMonitor {
    rx: Receiver<DiskEvent>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    /// "udev" or "sysfs polling".
    pub kind: &'static str,
}

/// How often the stop flag is checked and, without udev, sysfs is polled.
const TICK: Duration = Duration::from_millis(250);

impl DiskMonitor {
    /// Starts the udev monitor when udevd runs, else sysfs polling.
    pub fn start(include_virtual: bool) -> std::io::Result<DiskMonitor> {
        if udev_running() {
            Self::start_udev(include_virtual)
        } else {
            Ok(Self::start_polling(
                SysRoot::live(),
                include_virtual,
                Duration::from_secs(1),
            ))
        }
    }

    /// Listens to udev events for block devices of type "disk".
    pub fn start_udev(include_virtual: bool) -> std::io::Result<DiskMonitor> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        // The socket is not Send: it is made on the worker thread, and the
        // outcome reported back before start returns.
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("disk-monitor".into())
            .spawn(move || {
                let socket = match udev::MonitorBuilder::new()
                    .and_then(|b| b.match_subsystem_devtype("block", "disk"))
                    .and_then(|b| b.listen())
                {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let opts = DiscoverOptions {
                    include_virtual,
                    ..Default::default()
                };
                while !stop2.load(Ordering::Relaxed) {
                    match sys::poll_readable(socket.as_raw_fd(), TICK.as_millis() as i32) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(_) => break,
                    }
                    for ev in socket.iter() {
                        let name = ev.sysname().to_string_lossy().into_owned();
                        let sent = match ev.event_type() {
                            udev::EventType::Add => match discover_one(&name, &opts) {
                                Ok(d)
                                    if include_virtual
                                        || d.bus != crate::discover::Bus::Virtual =>
                                {
                                    tx.send(DiskEvent::Added(Box::new(d)))
                                }
                                _ => Ok(()),
                            },
                            udev::EventType::Remove => {
                                let node = ev
                                    .devnode()
                                    .map(PathBuf::from)
                                    .unwrap_or_else(|| PathBuf::from("/dev").join(&name));
                                tx.send(DiskEvent::Removed(node))
                            }
                            _ => Ok(()),
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                }
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("disk monitor thread died")))?;
        Ok(DiskMonitor {
            rx,
            stop,
            worker: Some(worker),
            kind: "udev",
        })
    }

    /// Polls `root`'s `/sys/block` every `interval` and reports differences.
    pub fn start_polling(root: SysRoot, include_virtual: bool, interval: Duration) -> DiskMonitor {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let worker =
            std::thread::spawn(move || poll_loop(root, include_virtual, interval, &stop2, &tx));
        DiskMonitor {
            rx,
            stop,
            worker: Some(worker),
            kind: "sysfs polling",
        }
    }

    /// The event channel (for `recv_timeout`, `try_recv`, select loops).
    pub fn events(&self) -> &Receiver<DiskEvent> {
        &self.rx
    }
}

fn snapshot(opts: &DiscoverOptions<'_>) -> BTreeMap<String, PathBuf> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(opts.root.sys.join("block")) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(dev) = opts.root.block_dev_by_name(&name) {
                let virt = dev.sysfs.to_string_lossy().contains("/devices/virtual/");
                if opts.include_virtual || !virt {
                    m.insert(name, dev.node);
                }
            }
        }
    }
    m
}

fn poll_loop(
    root: SysRoot,
    include_virtual: bool,
    interval: Duration,
    stop: &AtomicBool,
    tx: &Sender<DiskEvent>,
) {
    let opts = DiscoverOptions {
        include_virtual,
        root,
        properties: Some(&crate::discover::NoProperties),
        read_tables: true,
    };
    let mut known = snapshot(&opts);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        waited += TICK;
        if waited < interval {
            continue;
        }
        waited = Duration::ZERO;
        let now = snapshot(&opts);
        for (name, node) in &known {
            if !now.contains_key(name) && tx.send(DiskEvent::Removed(node.clone())).is_err() {
                return;
            }
        }
        for name in now.keys() {
            if !known.contains_key(name) {
                if let Ok(d) = discover_one(name, &opts) {
                    if tx.send(DiskEvent::Added(Box::new(d))).is_err() {
                        return;
                    }
                }
            }
        }
        known = now;
    }
}

impl Iterator for DiskMonitor {
    type Item = DiskEvent;

    /// Blocks until the next event; `None` once the worker has stopped.
    fn next(&mut self) -> Option<DiskEvent> {
        self.rx.recv().ok()
    }
}

impl Drop for DiskMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::fake::FakeSys;

    #[test]
    fn polling_reports_a_disk_plugged_in_and_pulled_out() {
        let f = FakeSys::new();
        f.disk(
            "pci0000:00/ata1/host0/target0:0:0/0:0:0:0",
            "sda",
            "8:0",
            1000,
        );
        let mon = DiskMonitor::start_polling(f.root.clone(), false, Duration::from_millis(250));
        std::thread::sleep(Duration::from_millis(100));
        f.disk(
            "pci0000:00/0000:00:05.0/usb2/2-1/host2/target2:0:0/2:0:0:0",
            "sdc",
            "8:32",
            2000,
        );
        match mon.events().recv_timeout(Duration::from_secs(5)).unwrap() {
            DiskEvent::Added(d) => {
                assert_eq!(d.name, "sdc");
                assert_eq!(d.bus, crate::discover::Bus::Usb);
            }
            e => panic!("{e:?}"),
        }
        std::fs::remove_file(f.root.sys.join("block/sdc")).unwrap();
        assert_eq!(
            mon.events().recv_timeout(Duration::from_secs(5)).unwrap(),
            DiskEvent::Removed(f.root.dev.join("sdc"))
        );
        assert!(
            mon.events().try_recv().is_err(),
            "sda, present from the start, is not reported"
        );
    }
}
