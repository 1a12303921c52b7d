//! Layer 3: the range allocator, kernel virtual address space in pages (SOS's `kmem_vmm`,
//! after Bonwick's vmem).
//!
//! It owns a window of kernel virtual address space and tiles it with boundary tags
//! (`segment.rs`): one descriptor per free or used run of pages, all of them in a
//! red-black tree ordered by address (O(log n) lookup of the range containing an address;
//! neighbours for coalescing in amortized O(1)), the free ones also in power-of-two
//! size-class lists with a bitmap (`freelist.rs`: instant fit, O(1) except the split).
//! Freeing coalesces with both neighbours at once (`boundary.rs`), so free segments are
//! never adjacent and never outnumber used ones by more than one, and a request fails
//! only when no free segment can hold it; the tests run long random workloads to check
//! both.
//!
//! A range may be backed (`RangeFlags::MAP`): each page gets a frame of its own from the
//! page allocator, mapped through the platform (`backing.rs`, which also holds the SOS
//! reference protocol). Deleting the range unmaps it and frees the frames.
//!
//! Files: `types.rs` (flags, errors, counters), `segment.rs` (the boundary tag),
//! `freelist.rs` (instant fit), `boundary.rs` (split and coalesce), `cache.rs` (the
//! range cache), `backing.rs` (frames and mappings), `shrink.rs` (giving slabs back),
//! `check.rs` (the invariants), and this file: the operations and the reserve rules.
//!
//! # Where the descriptors come from: the range cache and its reserve
//!
//! Descriptors are objects of the range cache (`cache.rs`), whose slabs are pages of this
//! very window, allocated and mapped by this allocator. Growing the cache therefore needs
//! a descriptor itself (its new slab is a range). SOS keeps a minimum of free objects in
//! that cache for this reason; so do we, and here is the argument that it suffices.
//!
//! Descriptors taken from the cache by one operation, at most:
//!
//! | operation   | takes | because                                                   |
//! |-------------|-------|-----------------------------------------------------------|
//! | `new_range` | 1     | carving the range off a larger free segment splits it     |
//! | aligned     | 2     | the padding before an aligned start stays free: in 3      |
//! | `reserve`   | 2     | carving from the middle of a free segment splits it in 3  |
//! | `del_range` | 0     | coalescing only ever gives descriptors back (up to 2)     |
//! | grow cache  | 1     | the slab's one-page range is carved like `new_range`      |
//!
//! Rule 1: before `new_range` or `reserve` touches anything, if fewer than
//! [`LOW_WATER`] = 2 + 1 descriptors are free, the cache grows by one slab (63
//! descriptors). That happens *outside* the critical part of the operation: no segment
//! is half split when the allocator re-enters itself to allocate the slab's range.
//! Rule 2: an operation other than growing never takes the last free descriptor (it
//! checks `free >= needed + 1` first, and fails with `OutOfMemory` otherwise, changing
//! nothing). So the one descriptor a growth needs is always there, and growth can only
//! fail for lack of frames or of address space, never of descriptors: the knot cannot
//! tighten. When growth does fail, operations go on while the reserve lasts, and fail
//! cleanly when it does not.
//!
//! The cache gives slabs back only in `RangeAllocator::shrink` (`shrink.rs`), which
//! moves live descriptors out of the newest slabs first, so that the window and the page
//! allocator return exactly to their state before a burst of allocations.
//!
//! # Concurrency
//!
//! `RangeAllocator` is plain data used through `&mut self`; [`crate::Heap`] keeps it
//! behind the range lock, which is taken before the page lock (range -> page).

mod backing;
mod boundary;
mod cache;
mod check;
mod freelist;
mod segment;
mod shrink;
mod types;

#[cfg(test)]
mod range_tests;

pub(crate) use backing::Backing;
pub use cache::OBJECTS_PER_SLAB;
pub use types::{RangeError, RangeFlags, RangeInfo, RangeKind, RangeStats};

use crate::page::{PageOwner, Zone};
use crate::platform::{PAGE_SIZE, Platform};
use boundary::seg_addr;
use cache::RangeCache;
use core::ptr::NonNull;
use freelist::FreeLists;
use intrusive_collections::Bound;
use intrusive_collections::RBTree;
use segment::{SegRef, Segment, SegmentKind, TreeAdapter};

/// Descriptors one operation other than growing may take, at most (`reserve`).
const MAX_TAKEN_BY_OP: usize = 2;
/// Descriptors one growth of the range cache may take.
const TAKEN_BY_GROWTH: usize = 1;
/// The range cache grows before an operation when fewer descriptors than this are free.
pub const LOW_WATER: usize = MAX_TAKEN_BY_OP + TAKEN_BY_GROWTH;

/// The range allocator. See the [module docs](self).
pub(crate) struct RangeAllocator {
    window_start: usize,
    window_pages: usize,
    tree: RBTree<TreeAdapter>,
    free: FreeLists,
    cache: RangeCache,
    pages_by_kind: PagesByKind,
    segments: usize,
    free_segments: usize,
}

#[derive(Default)]
struct PagesByKind {
    free: usize,
    allocated: usize,
    reserved: usize,
    internal: usize,
}

impl PagesByKind {
    fn of(&mut self, kind: SegmentKind) -> &mut usize {
        match kind {
            SegmentKind::Free => &mut self.free,
            SegmentKind::Allocated(_) => &mut self.allocated,
            SegmentKind::Reserved => &mut self.reserved,
            SegmentKind::Internal => &mut self.internal,
        }
    }
}

// SAFETY: the allocator's raw pointers (the `UnsafeRef`s in its collections and the
// range cache's slab pointers) point into slab pages that only this allocator uses, and
// are only followed through `&self`/`&mut self`. Moving the allocator to another thread
// moves the only way to reach them. It is not `Sync` (the segments are `Cell`s); `Heap`
// shares it behind a lock.
unsafe impl Send for RangeAllocator {}

impl Drop for RangeAllocator {
    fn drop(&mut self) {
        // The segments live in window pages that may be gone by now (a hosted platform
        // frees its arena): forget them without touching them.
        self.tree.fast_clear();
        self.free.forget_all();
        self.cache.forget_all();
    }
}

impl RangeAllocator {
    /// An allocator for the window whose first slab of descriptors is the page at
    /// `first_slab`, mapped at `window_start` as the first `bootstrap_pages` pages of the
    /// window. Only `crate::bootstrap` calls this; see there for the whole knot.
    ///
    /// # Safety
    ///
    /// `first_slab` points to the page at `window_start`, which is mapped and writable,
    /// used by nothing else, and stays mapped for the life of the allocator; the window
    /// (`window_pages >= 2` pages from the page-aligned `window_start`) is kernel address
    /// space that nothing else uses.
    pub(crate) unsafe fn with_first_slab(
        window_start: usize,
        window_pages: usize,
        first_slab: NonNull<u8>,
    ) -> Self {
        debug_assert!(window_pages >= 2 && first_slab.addr().get() == window_start);
        let mut this = Self {
            window_start,
            window_pages,
            tree: RBTree::new(TreeAdapter::NEW),
            free: FreeLists::new(),
            cache: RangeCache::new(),
            pages_by_kind: PagesByKind::default(),
            segments: 0,
            free_segments: 0,
        };
        // SAFETY: the caller hands us the page for good (pinned: it is never evicted).
        unsafe { this.cache.add_slab(first_slab, true) };
        // Describe the window with descriptors from that slab: the slab's own page as a
        // used (internal) range, the rest as one free segment.
        let slab = this.new_segment(window_start, 1, SegmentKind::Internal);
        let rest = this.new_segment(
            window_start + PAGE_SIZE,
            window_pages - 1,
            SegmentKind::Free,
        );
        this.tree.insert(slab);
        this.tree.insert(rest.clone());
        this.free.insert(rest);
        this.pages_by_kind.internal = 1;
        this.pages_by_kind.free = window_pages - 1;
        this.segments = 2;
        this.free_segments = 1;
        this
    }

    /// The address that `Range` page owners use for the segment at `start`.
    pub(crate) fn descriptor_of(&self, start: usize) -> Option<usize> {
        let segment = self.tree.find(&start).get()?;
        Some(core::ptr::from_ref(segment).addr())
    }

    /// Allocates a range of `pages` pages; see [`crate::Heap::new_range`].
    pub(crate) fn new_range<P: Platform>(
        &mut self,
        pages: usize,
        flags: RangeFlags,
        backing: &Backing<'_, '_, P>,
    ) -> Result<usize, RangeError> {
        self.new_range_aligned(pages, PAGE_SIZE, flags, backing)
    }

    /// Allocates a range of `pages` pages starting at a multiple of `align` bytes; see
    /// [`crate::Heap::new_range_aligned`].
    pub(crate) fn new_range_aligned<P: Platform>(
        &mut self,
        pages: usize,
        align: usize,
        flags: RangeFlags,
        backing: &Backing<'_, '_, P>,
    ) -> Result<usize, RangeError> {
        if pages == 0 {
            return Err(RangeError::InvalidSize);
        }
        if !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(RangeError::InvalidAlignment { align });
        }
        if !flags.contains(RangeFlags::MAP) && flags != RangeFlags::NONE {
            return Err(RangeError::InvalidFlags);
        }
        if pages > self.window_pages {
            return Err(RangeError::OutOfVirtualSpace);
        }
        self.refill(backing);
        let (free, offset) = self
            .free
            .find_aligned(pages, align)
            .ok_or(RangeError::OutOfVirtualSpace)?;
        // The padding before the aligned start and the rest after it stay free: up to two
        // splits, as for `reserve` (`MAX_TAKEN_BY_OP`).
        let splits = usize::from(offset > 0) + usize::from(free.pages() > offset + pages);
        self.check_descriptors(splits)?;
        let used = self.carve(free, offset, pages, SegmentKind::Allocated(flags));
        let start = used.start();
        if flags.contains(RangeFlags::MAP) {
            let zone = if flags.contains(RangeFlags::DMA) {
                Zone::Dma
            } else {
                Zone::Normal
            };
            let owner = PageOwner::Range(seg_addr(&used));
            if let Err(error) = backing.map_fresh(start, pages, zone, owner) {
                self.release(used);
                return Err(error);
            }
            if flags.contains(RangeFlags::ZERO) {
                // SAFETY: the pages were just mapped for this range, which nobody else
                // knows about yet.
                unsafe { backing.zero(start, pages) };
            }
        }
        Ok(start)
    }

    /// Deletes the range starting at `addr`; see [`crate::Heap::del_range`].
    pub(crate) fn del_range<P: Platform>(
        &mut self,
        addr: usize,
        backing: &Backing<'_, '_, P>,
    ) -> Result<(), RangeError> {
        let Some(segment) = self.tree.find(&addr).clone_pointer() else {
            return Err(match self.containing(addr) {
                None => RangeError::OutsideWindow { addr },
                Some(s) if s.is_free() => RangeError::NotAllocated { addr },
                Some(_) => RangeError::NotARangeStart { addr },
            });
        };
        match segment.kind() {
            SegmentKind::Free => return Err(RangeError::NotAllocated { addr }),
            SegmentKind::Internal => return Err(RangeError::Pinned { addr }),
            SegmentKind::Allocated(flags) if flags.contains(RangeFlags::MAP) => {
                // Other CPUs may still hold translations of these pages: neither the
                // frames nor the addresses may be reused before those are gone, or a
                // CPU could reach a frame through a stale entry after it was handed out
                // again. `unmap_release` shoots them down before it releases the frames,
                // and the addresses are released below, after it.
                backing.unmap_release(segment.start(), segment.pages());
            }
            SegmentKind::Allocated(_) | SegmentKind::Reserved => {}
        }
        self.release(segment);
        Ok(())
    }

    /// Registers `pages` pages from `addr` as used; see [`crate::Heap::reserve`].
    pub(crate) fn reserve<P: Platform>(
        &mut self,
        addr: usize,
        pages: usize,
        backing: &Backing<'_, '_, P>,
    ) -> Result<(), RangeError> {
        if pages == 0 {
            return Err(RangeError::InvalidSize);
        }
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(RangeError::Misaligned { addr });
        }
        let window_end = self.window_start + self.window_pages * PAGE_SIZE;
        let fits =
            addr >= self.window_start && pages <= (window_end - addr.min(window_end)) / PAGE_SIZE;
        if !fits {
            return Err(RangeError::OutsideWindow { addr });
        }
        let end = addr + pages * PAGE_SIZE;
        self.refill(backing);
        let segment = self
            .containing(addr)
            .ok_or(RangeError::OutsideWindow { addr })?;
        if !segment.is_free() {
            return Err(RangeError::Occupied {
                addr: segment.start(),
            });
        }
        if segment.end() < end {
            // Free segments are never adjacent, so the next one is used.
            return Err(RangeError::Occupied {
                addr: segment.end(),
            });
        }
        let splits = usize::from(addr > segment.start()) + usize::from(segment.end() > end);
        self.check_descriptors(splits)?;
        let offset = (addr - segment.start()) / PAGE_SIZE;
        self.carve(segment, offset, pages, SegmentKind::Reserved);
        Ok(())
    }

    /// The used range containing `addr`, found in the tree.
    pub(crate) fn range_containing(&self, addr: usize) -> Option<RangeInfo> {
        self.containing(addr)?.info()
    }

    /// The used range containing `addr`, found through the descriptor recorded as the
    /// owner of the frame mapped there (the O(1) path; `None` if `addr` is not in it).
    ///
    /// # Safety
    ///
    /// `descriptor` was read from a [`PageOwner::Range`] of a frame of the page
    /// allocator that this allocator backs its ranges with, after `self` was borrowed
    /// (so under the same range lock as this call).
    pub(crate) unsafe fn range_of_owner<P: Platform>(
        &self,
        descriptor: usize,
        addr: usize,
        backing: &Backing<'_, '_, P>,
    ) -> Option<RangeInfo> {
        let segment = backing.pointer_to(descriptor).cast::<Segment>();
        // SAFETY: `Range` owners are set only by `backing.rs`, on the frames of a mapped
        // segment, to that segment's address; they are cleared (`put_mapped`) before the
        // segment stops describing those frames, and rewritten (`retarget`) before a
        // segment moves (`shrink.rs`); all of it under the range lock, which the caller
        // holds. So `segment` is a live segment of this allocator.
        let segment = unsafe { &*segment };
        if segment.contains(addr) {
            segment.info()
        } else {
            None
        }
    }

    /// Counters.
    pub(crate) fn stats(&self) -> RangeStats {
        RangeStats {
            window_start: self.window_start,
            window_pages: self.window_pages,
            free_pages: self.pages_by_kind.free,
            allocated_pages: self.pages_by_kind.allocated,
            reserved_pages: self.pages_by_kind.reserved,
            internal_pages: self.pages_by_kind.internal,
            segments: self.segments,
            free_segments: self.free_segments,
            cache_slabs: self.cache.slab_count(),
            cache_free: self.cache.free_objects(),
        }
    }

    /// Calls `f(start, pages, kind)` for every segment in address order (`kind` is `None`
    /// for free space).
    pub(crate) fn for_each_segment(&self, mut f: impl FnMut(usize, usize, Option<RangeKind>)) {
        for segment in self.tree.iter() {
            f(segment.start(), segment.pages(), segment.kind().public());
        }
    }

    /// The segment containing `addr`, if `addr` is inside the window.
    fn containing(&self, addr: usize) -> Option<SegRef> {
        let candidate = self
            .tree
            .upper_bound(Bound::Included(&addr))
            .clone_pointer()?;
        candidate.contains(addr).then_some(candidate)
    }

    /// Rule 1 of the module docs: grow the range cache before an operation when its
    /// reserve is low. A failure is not reported here: `check_descriptors` decides.
    fn refill<P: Platform>(&mut self, backing: &Backing<'_, '_, P>) {
        if self.cache.free_objects() < LOW_WATER {
            let _ = self.grow(backing);
        }
    }

    /// Rule 2: an operation may take `needed` descriptors only if one stays for growing.
    fn check_descriptors(&self, needed: usize) -> Result<(), RangeError> {
        if self.cache.free_objects() >= needed + TAKEN_BY_GROWTH {
            Ok(())
        } else {
            Err(RangeError::OutOfMemory)
        }
    }

    /// Adds one slab to the range cache: a one-page internal range, mapped.
    fn grow<P: Platform>(&mut self, backing: &Backing<'_, '_, P>) -> Result<(), RangeError> {
        let free = self.free.find(1).ok_or(RangeError::OutOfVirtualSpace)?;
        if self.cache.free_objects() < usize::from(free.pages() > 1) {
            return Err(RangeError::OutOfMemory);
        }
        let slab = self.carve(free, 0, 1, SegmentKind::Internal);
        let owner = PageOwner::Range(seg_addr(&slab));
        if let Err(error) = backing.map_fresh(slab.start(), 1, Zone::Normal, owner) {
            self.release(slab);
            return Err(error);
        }
        let page = NonNull::new(backing.pointer_to(slab.start())).ok_or(RangeError::OutOfMemory)?;
        // SAFETY: the page was just mapped for the internal range `slab`, which only the
        // cache uses; `shrink` unmaps it only after `take_evicted` gave it back.
        unsafe { self.cache.add_slab(page, false) };
        Ok(())
    }
}
