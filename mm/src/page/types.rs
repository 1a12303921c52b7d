//! The page allocator's public vocabulary: errors, counters, frame snapshots.

use super::{ORDERS, PageOwner, PageState, Zone};
use crate::platform::PhysAddr;

/// Why a frame operation failed. On error nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free block of the requested order in the allowed zones.
    OutOfMemory,
    /// `order` is larger than [`MAX_ORDER`](super::MAX_ORDER).
    InvalidOrder {
        /// The order asked for.
        order: usize,
    },
    /// The address is not in any RAM region given at construction.
    OutsideRam {
        /// The address.
        addr: PhysAddr,
    },
    /// The address is not aligned to the block it should start (page, or 2^order pages).
    Misaligned {
        /// The address.
        addr: PhysAddr,
    },
    /// The frame is free, or is not the first frame of an allocated block.
    NotAllocated {
        /// The address.
        addr: PhysAddr,
    },
    /// The frame is reserved (firmware, kernel image, ...): never allocated, never freed.
    Reserved {
        /// The address.
        addr: PhysAddr,
    },
    /// The block was allocated with another order.
    WrongOrder {
        /// The block's first frame.
        addr: PhysAddr,
        /// The order it was allocated with.
        expected: usize,
        /// The order given to `free_frames`.
        given: usize,
    },
    /// Dropping this reference would free a frame that a range or a slab owns; only
    /// that layer may release it.
    Owned {
        /// The address.
        addr: PhysAddr,
        /// Its owner.
        owner: PageOwner,
    },
    /// The reference count would overflow.
    TooManyReferences {
        /// The address.
        addr: PhysAddr,
    },
}

/// Why [`PageAllocator::new`](super::PageAllocator::new) refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageInitError {
    /// Region `index` starts before the previous one ends, or ends before it starts.
    Unsorted {
        /// Index in the `regions` slice.
        index: usize,
    },
    /// More than `max` spans (regions, after cutting them at 16 MiB).
    TooManyRegions {
        /// [`MAX_SPANS`](super::MAX_SPANS).
        max: usize,
    },
    /// The descriptor storage has fewer than `needed` entries.
    StorageTooSmall {
        /// [`PageAllocator::descriptors_needed`](super::PageAllocator::descriptors_needed).
        needed: usize,
        /// The storage's length.
        given: usize,
    },
    /// More frames than 32-bit descriptor indices can number (16 TiB of RAM).
    TooManyFrames,
}

/// Counters, for `stats()` and for tests that compare before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageStats {
    /// RAM frames described.
    pub total_frames: usize,
    /// Frames reserved at construction.
    pub reserved_frames: usize,
    /// Free frames, both zones.
    pub free_frames: usize,
    /// Free frames in the DMA zone.
    pub free_dma_frames: usize,
    /// Free blocks per zone (index [`Zone`] as usize) and order.
    pub free_blocks: [[usize; ORDERS]; 2],
}

impl PageStats {
    /// Frames currently allocated.
    pub fn allocated_frames(&self) -> usize {
        self.total_frames - self.reserved_frames - self.free_frames
    }
}

/// A snapshot of one frame's descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's state.
    pub state: PageState,
    /// References to its block (on the block's first frame; 0 elsewhere).
    pub refcount: u32,
    /// The order of the block it starts, `None` inside a block.
    pub block_order: Option<usize>,
    /// Its owner.
    pub owner: PageOwner,
    /// Its zone.
    pub zone: Zone,
}
