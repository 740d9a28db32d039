//! Linux swap: only the header page matters.
//!
//! Layout from the kernel's `union swap_header` (include/linux/swap.h): the magic
//! "SWAPSPACE2" ends the first page; the `info` struct follows 1024 bytes of boot
//! bits: version, last_page, nr_badpages (u32 each), uuid[16], volume_name[16].
//! Everything after the first page is swapped-out memory that is dead once the system
//! is off, and mkswap/swapon rebuild nothing from it.

use crate::extents::ExtentList;
use crate::util::{latin_label, uuid_string, Dev, Fail};
use crate::{FsInfo, FsKind};

pub(crate) struct Header {
    pub info: FsInfo,
    page: u32,
}

/// Page sizes Linux runs with; swap written on one is only usable on the same size.
const PAGE_SIZES: [u32; 4] = [4096, 8192, 16384, 65536];

pub(crate) fn probe(dev: &Dev) -> Result<Option<Header>, Fail> {
    for page in PAGE_SIZES {
        let Some(magic) = dev.peek(u64::from(page) - 10, 10)? else {
            continue;
        };
        // "SWAP-SPACE" is the version-0 header; it has no uuid or label but the same
        // one-page layout.
        if &magic[..] != b"SWAPSPACE2" && &magic[..] != b"SWAP-SPACE" {
            continue;
        }
        let h = dev.read(1024, 44, "swap header")?;
        let v2 = &magic[..] == b"SWAPSPACE2";
        // uuid and label are byte arrays, so a header written on an arch of the other
        // byte order reads the same; no integer field is needed.
        return Ok(Some(Header {
            info: FsInfo {
                kind: FsKind::Swap,
                label: if v2 { latin_label(&h[28..44]) } else { None },
                uuid: if v2 { uuid_string(&h[12..28]) } else { None },
                block_size: page,
            },
            page,
        }));
    }
    Ok(None)
}

impl Header {
    pub fn used(&self, dev: &Dev) -> Result<ExtentList, Fail> {
        let mut list = ExtentList::new(dev.size);
        list.add(0, u64::from(self.page));
        Ok(list)
    }
}
