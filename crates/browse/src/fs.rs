//! A read-only FUSE directory with one file per view of an image: `disk.img` (the whole
//! disk) and `pN.img` (partition N). The kernel loop driver turns such a file into a
//! block device that any filesystem driver can mount (ARCHITECTURE.md "Browsing images").

use crate::reader::View;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request,
};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The files never change while mounted, so the kernel may cache attributes and pages.
const TTL: Duration = Duration::from_secs(3600);

/// One file of the directory.
#[derive(Debug, Clone)]
pub struct ImageFile {
    pub name: String,
    pub view: View,
}

/// The filesystem served over FUSE.
#[derive(Debug)]
pub struct ImageFs {
    files: Vec<ImageFile>,
    /// The image's creation time: every file's mtime.
    time: SystemTime,
    uid: u32,
    gid: u32,
    /// The last read error (a damaged chunk), for the serving process to report.
    pub last_error: std::sync::Arc<Mutex<Option<String>>>,
    /// Bytes answered to reads so far: the progress of a sequential reader (`qemu-img`).
    pub served: std::sync::Arc<AtomicU64>,
}

impl ImageFs {
    pub fn new(files: Vec<ImageFile>, time: SystemTime) -> Self {
        ImageFs {
            files,
            time,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            last_error: Default::default(),
            served: Default::default(),
        }
    }

    fn file(&self, ino: INodeNo) -> Option<&ImageFile> {
        let i = u64::from(ino).checked_sub(2)?;
        self.files.get(usize::try_from(i).ok()?)
    }

    fn attr(&self, ino: u64, kind: FileType, size: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.time,
            mtime: self.time,
            ctime: self.time,
            crtime: self.time,
            kind,
            perm: if kind == FileType::Directory {
                0o555
            } else {
                0o444
            },
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn attr_of(&self, ino: INodeNo) -> Option<FileAttr> {
        if ino == INodeNo::ROOT {
            return Some(self.attr(1, FileType::Directory, 0));
        }
        let f = self.file(ino)?;
        Some(self.attr(u64::from(ino), FileType::RegularFile, f.view.size))
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger readahead means fewer round trips for sequential reads (dd, qemu-img);
        // the kernel clamps it to what it supports.
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        match self.files.iter().position(|f| OsStr::new(&f.name) == name) {
            Some(i) => {
                let ino = INodeNo(i as u64 + 2);
                let attr = self.attr_of(ino).expect("a listed file has attributes");
                reply.entry(&TTL, &attr, Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.file(ino).is_none() {
            return reply.error(Errno::ENOENT);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.file(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut buf = vec![0u8; size as usize];
        match f.view.read_at(&mut buf, offset) {
            Ok(n) => {
                self.served.fetch_add(n as u64, Ordering::Relaxed);
                reply.data(&buf[..n])
            }
            Err(e) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("reading {} at {offset}: {e}", f.name));
                reply.error(Errno::EIO)
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        for (i, f) in self.files.iter().enumerate() {
            entries.push((i as u64 + 2, FileType::RegularFile, f.name.as_str()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
