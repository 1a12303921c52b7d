//! Layer 4: the physical page allocator.
//!
//! It owns one [`PageDescriptor`] per RAM frame (stored per region, see `region.rs`) and
//! hands out blocks of 2^order contiguous frames from a binary buddy system per zone (see
//! `buddy.rs`). Its users are the range allocator above it (one frame per mapped page, plus
//! page-table frames for the platform) and, through [`crate::Heap`], the kernel.
//!
//! Files: `types.rs` (errors, counters), `descriptor.rs`, `region.rs` (RAM regions and
//! zones), `buddy.rs`, `check.rs` (the invariants), and this file: the operations.
//!
//! # Zones
//!
//! Frames below 16 MiB form the [`Zone::Dma`] zone. A `Zone::Dma` request is served from
//! it only. A `Zone::Normal` request is served from the normal zone, and falls back to the
//! DMA zone only when the normal zone has no block of the requested order: Linux's
//! zonelist order (`ZONE_NORMAL` then `ZONE_DMA`), without its watermarks. The DMA zone
//! is small and precious, so it is the last resort, not an equal partner.
//!
//! # Reference counting (the SOS semantics)
//!
//! Every allocated block carries a reference count, on its first frame:
//! - [`alloc_frames`](PageAllocator::alloc_frames) returns a block with one reference:
//!   the allocator's caller's.
//! - Whoever else keeps the frame takes its own reference with
//!   [`get_page`](PageAllocator::get_page); a mapping is such an owner.
//! - [`put_page`](PageAllocator::put_page) drops a reference; the block returns to the
//!   free lists when the last one goes. [`free_frames`](PageAllocator::free_frames) is
//!   `put_page` with a check of the order (Linux's `__free_pages`).
//!
//! So mapping a fresh page is: allocate (1 reference), map, `get_page` for the mapping
//! (2), `put_page` for the allocation (1). **Why reference a new page, map it, then drop
//! the reference** (the question SOS readers ask about `sos_kmem_cache_setup_prepare`):
//! after that sequence the page is *not* free: its one remaining reference is the
//! mapping's, so the page table is now its only owner, and unmapping it (which drops the
//! mapping's reference) is what frees it. Nothing has to remember to free the page
//! separately, and an error between allocating and mapping frees it by dropping the one
//! reference. The range allocator does exactly this in `range/backing.rs`.
//!
//! # Owners
//!
//! An allocated frame may record a [`PageOwner`]: the range that maps it or the slab it
//! belongs to, so that an address is traced to its range or slab in O(1). Owners are set
//! only from inside `mm`, and a frame that has one cannot lose its last reference through
//! the public `put_page`/`free_frames`: it must be released by the layer that owns it.
//!
//! # Errors
//!
//! Running out of frames is an `Err`, never a panic. Freeing a frame that is not
//! allocated, outside RAM, misaligned, or with the wrong order is detected and reported
//! as a [`FrameError`], and leaves every descriptor untouched.
//!
//! # Concurrency
//!
//! `PageAllocator` is plain data: every operation takes `&mut self`. [`crate::Heap`]
//! keeps it behind its own lock, the innermost one of `mm` (see the crate docs for the
//! lock order).

mod buddy;
mod check;
mod descriptor;
mod region;
mod types;

pub use descriptor::{PageDescriptor, PageOwner, PageState};
pub use region::{DMA_LIMIT, MAX_SPANS, PhysRegion, Zone};
pub use types::{FrameError, FrameInfo, PageInitError, PageStats};

use crate::platform::{PAGE_SIZE, PhysAddr};
use buddy::FreeArea;
use core::mem::MaybeUninit;
use descriptor::DescIndex;
use region::{Span, Spans};

/// Largest block order: blocks of up to 2^10 frames (4 MiB), as in Linux.
pub const MAX_ORDER: usize = 10;

/// Number of block orders (`0..=MAX_ORDER`).
pub const ORDERS: usize = MAX_ORDER + 1;

const PAGE: u64 = PAGE_SIZE as u64;

/// The physical page allocator. See the [module docs](self).
pub struct PageAllocator<'m> {
    descs: &'m mut [PageDescriptor],
    spans: Spans,
    areas: [FreeArea; 2],
    reserved: usize,
    /// Fault injection: after this many more successful `alloc_frames`, one fails.
    fail_after: Option<usize>,
}

impl core::fmt::Debug for PageAllocator<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageAllocator")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'m> PageAllocator<'m> {
    /// How many descriptors [`new`](Self::new) needs for `regions`: one per whole frame.
    /// The kernel carves `descriptors_needed(regions) * size_of::<PageDescriptor>()` bytes
    /// out of RAM (and passes that range as reserved); hosted code uses a `Vec`.
    pub fn descriptors_needed(regions: &[PhysRegion]) -> usize {
        Spans::frames_in(regions) as usize
    }

    /// Builds the allocator over `regions` (sorted, not overlapping; unaligned ends are
    /// rounded inwards). Frames inside any of `reserved` (which may be unsorted and may
    /// stick out of RAM) are marked [`PageState::Reserved`] and never handed out: the
    /// kernel image, boot page tables, firmware data, and `storage` itself. Every other
    /// frame starts free. `storage` may be longer than needed; the rest is unused.
    pub fn new(
        regions: &[PhysRegion],
        reserved: &[PhysRegion],
        storage: &'m mut [MaybeUninit<PageDescriptor>],
    ) -> Result<Self, PageInitError> {
        let spans = Spans::build(regions)?;
        let needed = spans.frames();
        if storage.len() < needed {
            return Err(PageInitError::StorageTooSmall {
                needed,
                given: storage.len(),
            });
        }
        let storage = &mut storage[..needed];
        for slot in storage.iter_mut() {
            slot.write(PageDescriptor::new(PageState::Free));
        }
        // SAFETY: every element of `storage` was initialized by the loop above, and
        // `MaybeUninit<T>` has the same layout as `T`, so the slice may be viewed as
        // initialized; it keeps the exclusive borrow's lifetime `'m`.
        let descs = unsafe { &mut *(core::ptr::from_mut(storage) as *mut [PageDescriptor]) };

        let mut this = Self {
            descs,
            spans,
            areas: [FreeArea::new(), FreeArea::new()],
            reserved: 0,
            fail_after: None,
        };
        for i in 0..this.spans.as_slice().len() {
            let span = this.spans.as_slice()[i];
            this.reserve_in(&span, reserved);
            // Seed the buddy lists with each run of non-reserved frames.
            let is_free = |descs: &[PageDescriptor], pfn: u64| {
                descs[span.index_of(pfn) as usize].state() == PageState::Free
            };
            let mut pfn = span.start_pfn;
            while pfn < span.end_pfn() {
                let run_start = pfn;
                while pfn < span.end_pfn() && is_free(this.descs, pfn) {
                    pfn += 1;
                }
                let area = &mut this.areas[span.zone.index()];
                buddy::seed(area, this.descs, &span, run_start, pfn);
                while pfn < span.end_pfn() && !is_free(this.descs, pfn) {
                    pfn += 1;
                }
            }
        }
        Ok(this)
    }

    /// Marks the frames of `span` that fall inside `reserved` as reserved.
    fn reserve_in(&mut self, span: &Span, reserved: &[PhysRegion]) {
        for r in reserved {
            // Round outwards: a partly reserved frame is reserved.
            let first = (r.start.0 / PAGE).max(span.start_pfn);
            let last = r.end.0.div_ceil(PAGE).min(span.end_pfn());
            for pfn in first..last.max(first) {
                let d = &mut self.descs[span.index_of(pfn) as usize];
                if d.state() != PageState::Reserved {
                    *d = PageDescriptor::new(PageState::Reserved);
                    self.reserved += 1;
                }
            }
        }
    }

    /// Allocates 2^`order` contiguous, naturally aligned frames from `zone` (see the
    /// module docs for the fallback of `Normal` to `Dma`). The block has one reference.
    pub fn alloc_frames(&mut self, order: usize, zone: Zone) -> Result<PhysAddr, FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::InvalidOrder { order });
        }
        if let Some(left) = self.fail_after {
            self.fail_after = left.checked_sub(1);
            if left == 0 {
                return Err(FrameError::OutOfMemory);
            }
        }
        let zones: &[Zone] = match zone {
            Zone::Dma => &[Zone::Dma],
            Zone::Normal => &[Zone::Normal, Zone::Dma],
        };
        for &z in zones {
            if let Some(head) = buddy::alloc(&mut self.areas[z.index()], self.descs, order) {
                return Ok(self.addr_of(head));
            }
        }
        Err(FrameError::OutOfMemory)
    }

    /// Fault injection (tests, the kernel's `fault=N`): the `successes + 1`-th next
    /// [`alloc_frames`](Self::alloc_frames) fails with `OutOfMemory`, as if memory had
    /// run out, and the ones after succeed again. `None` disarms it.
    pub fn fail_frames_after(&mut self, successes: Option<usize>) {
        self.fail_after = successes;
    }

    /// True while an injected failure is armed and has not happened yet.
    pub fn frame_fault_pending(&self) -> bool {
        self.fail_after.is_some()
    }

    /// Allocates one frame (order 0).
    pub fn alloc_frame(&mut self, zone: Zone) -> Result<PhysAddr, FrameError> {
        self.alloc_frames(0, zone)
    }

    /// Drops the reference that `alloc_frames(order, ..)` returned, checking that `addr`
    /// starts an allocated block of exactly `order`. The block is freed (and merged with
    /// its buddies) if that was its last reference.
    pub fn free_frames(&mut self, addr: PhysAddr, order: usize) -> Result<(), FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::InvalidOrder { order });
        }
        let (_, index) = self.block_head(addr)?;
        let expected = self.descs[index as usize].block_order().unwrap_or(0);
        if expected != order {
            return Err(FrameError::WrongOrder {
                addr,
                expected,
                given: order,
            });
        }
        self.put_page(addr).map(|_| ())
    }

    /// Takes one more reference to the allocated block starting at `addr`; returns the
    /// new count.
    pub fn get_page(&mut self, addr: PhysAddr) -> Result<u32, FrameError> {
        let (_, index) = self.block_head(addr)?;
        let d = &mut self.descs[index as usize];
        let count = d
            .refcount()
            .checked_add(1)
            .ok_or(FrameError::TooManyReferences { addr })?;
        d.set_refcount(count);
        Ok(count)
    }

    /// Drops one reference to the block starting at `addr`; frees the block when it was
    /// the last one and returns whether it did. Refuses ([`FrameError::Owned`]) to drop the
    /// last reference of a frame that has an owner: the owning layer releases it.
    pub fn put_page(&mut self, addr: PhysAddr) -> Result<bool, FrameError> {
        let (span, index) = self.block_head(addr)?;
        let d = &self.descs[index as usize];
        if d.refcount() == 1 && d.owner() != PageOwner::None {
            return Err(FrameError::Owned {
                addr,
                owner: d.owner(),
            });
        }
        Ok(self.put_unchecked(&span, index))
    }

    /// Drops the reference of a mapping that `mm` made (see `range/backing.rs`): clears
    /// the frame's owner, which lived inside the mapped range and goes away with it, then
    /// drops the reference like `put_page`. Crate-only, like owners.
    pub(crate) fn put_mapped(&mut self, addr: PhysAddr) -> Result<bool, FrameError> {
        let (span, index) = self.block_head(addr)?;
        self.descs[index as usize].set_owner(PageOwner::None);
        Ok(self.put_unchecked(&span, index))
    }

    /// Drops a reference to the allocated block `index` of `span`; frees it at zero.
    fn put_unchecked(&mut self, span: &Span, index: DescIndex) -> bool {
        let d = &mut self.descs[index as usize];
        // Heads of allocated blocks have at least one reference (checked by
        // `check_invariants`), so this cannot underflow.
        let count = d.refcount() - 1;
        d.set_refcount(count);
        if count > 0 {
            return false;
        }
        let order = d.block_order().unwrap_or(0);
        buddy::free(
            &mut self.areas[span.zone.index()],
            self.descs,
            span,
            index,
            order,
        );
        true
    }

    /// Records who owns the allocated frame at `addr` (any frame of a block). Crate-only:
    /// see [`PageOwner`] for why.
    pub(crate) fn set_owner(&mut self, addr: PhysAddr, owner: PageOwner) -> Result<(), FrameError> {
        let index = self.allocated_frame(addr)?;
        self.descs[index as usize].set_owner(owner);
        Ok(())
    }

    /// The owner of the allocated frame at `addr`.
    pub fn owner(&self, addr: PhysAddr) -> Result<PageOwner, FrameError> {
        let index = self.allocated_frame(addr)?;
        Ok(self.descs[index as usize].owner())
    }

    /// A snapshot of the descriptor of the frame containing `addr` (need not be aligned).
    pub fn frame_info(&self, addr: PhysAddr) -> Result<FrameInfo, FrameError> {
        let (span, index) = self.locate(PhysAddr(addr.0 & !(PAGE - 1)))?;
        let d = &self.descs[index as usize];
        Ok(FrameInfo {
            state: d.state(),
            refcount: d.refcount(),
            block_order: d.block_order(),
            owner: d.owner(),
            zone: span.zone,
        })
    }

    /// The counters.
    pub fn stats(&self) -> PageStats {
        let [dma, normal] = &self.areas;
        PageStats {
            total_frames: self.descs.len(),
            reserved_frames: self.reserved,
            free_frames: dma.frames() + normal.frames(),
            free_dma_frames: dma.frames(),
            free_blocks: [
                core::array::from_fn(|o| dma.blocks(o)),
                core::array::from_fn(|o| normal.blocks(o)),
            ],
        }
    }

    /// True when `zone` (without fallback) has a free block of `order` or larger.
    pub fn can_allocate(&self, order: usize, zone: Zone) -> bool {
        order <= MAX_ORDER && self.areas[zone.index()].can_satisfy(order)
    }

    /// Calls `f(first frame, order, zone)` for every free block, list by list.
    pub fn for_each_free_block(&self, mut f: impl FnMut(PhysAddr, usize, Zone)) {
        for zone in Zone::ALL {
            for order in 0..ORDERS {
                for head in self.areas[zone.index()].list(self.descs, order) {
                    f(self.addr_of(head), order, zone);
                }
            }
        }
    }

    /// The span and descriptor index of the page-aligned frame `addr`.
    fn locate(&self, addr: PhysAddr) -> Result<(Span, DescIndex), FrameError> {
        if !addr.0.is_multiple_of(PAGE) {
            return Err(FrameError::Misaligned { addr });
        }
        let pfn = addr.0 / PAGE;
        let span = *self
            .spans
            .by_pfn(pfn)
            .ok_or(FrameError::OutsideRam { addr })?;
        Ok((span, span.index_of(pfn)))
    }

    /// The descriptor of an allocated frame (head or tail).
    fn allocated_frame(&self, addr: PhysAddr) -> Result<DescIndex, FrameError> {
        let (_, index) = self.locate(addr)?;
        match self.descs[index as usize].state() {
            PageState::Allocated => Ok(index),
            PageState::Reserved => Err(FrameError::Reserved { addr }),
            PageState::Free => Err(FrameError::NotAllocated { addr }),
        }
    }

    /// The descriptor of the first frame of an allocated block.
    fn block_head(&self, addr: PhysAddr) -> Result<(Span, DescIndex), FrameError> {
        let (span, index) = self.locate(addr)?;
        let index = self.allocated_frame(addr).map(|_| index)?;
        if self.descs[index as usize].block_order().is_none() {
            return Err(FrameError::NotAllocated { addr });
        }
        Ok((span, index))
    }

    fn addr_of(&self, index: DescIndex) -> PhysAddr {
        PhysAddr(self.spans.by_index(index).pfn_of(index) * PAGE)
    }
}

#[cfg(test)]
mod page_tests;
