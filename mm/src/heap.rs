//! The object the kernel keeps: the page allocator and the range allocator, each behind
//! its own lock, and the platform they work through.
//!
//! Lock order: the range lock, then the page lock. Range operations hold the range lock
//! throughout and take the page lock for each batch of frames (`range/backing.rs`); frame
//! operations take the page lock alone. Nothing takes the range lock while holding the
//! page lock. The platform is called with the page lock held (to map) and must not call
//! back into the heap. Both locks disable what the platform says
//! ([`Platform::Interrupts`]: local interrupts in the kernel), because an interrupt
//! handler may allocate, and a handler that found its own CPU holding one of them would
//! spin forever.
//!
//! `Heap` is `Sync` (both halves are behind locks and `Platform: Sync`), so the kernel
//! keeps it in a static, e.g. a `spin::Once<Heap<'static, KernelPlatform>>`.

use crate::bootstrap::{self, BootError};
use crate::page::{FrameError, FrameInfo, PageAllocator, PageOwner, PageStats, Zone};
use crate::platform::{PhysAddr, Platform};
use crate::range::{
    Backing, RangeAllocator, RangeError, RangeFlags, RangeInfo, RangeKind, RangeStats,
};
use crate::sync::SpinLock;

/// Both allocators' counters, read under both locks (a consistent snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// The page allocator's.
    pub pages: PageStats,
    /// The range allocator's.
    pub ranges: RangeStats,
}

/// The kernel memory allocator, layers 3 and 4. See the [crate docs](crate).
pub struct Heap<'m, P: Platform> {
    /// Taken first.
    ranges: SpinLock<RangeAllocator, P::Interrupts>,
    /// Taken second (or alone).
    pages: SpinLock<PageAllocator<'m>, P::Interrupts>,
    /// Declared last so that it is dropped last: the range allocator's descriptors live
    /// in memory that a hosted platform owns.
    platform: P,
}

impl<'m, P: Platform> Heap<'m, P> {
    /// Bootstraps the range allocator over the window of `window_pages` pages at
    /// `window_start` (see [`crate::bootstrap`]: its first page becomes the first slab of
    /// the range cache), with frames from `pages`.
    ///
    /// # Safety
    ///
    /// 1. The window (page-aligned, `window_pages * PAGE_SIZE` bytes) is kernel virtual
    ///    address space that nothing else uses or will use except through this heap;
    ///    parts the kernel already uses must be registered with [`reserve`](Self::reserve)
    ///    before any allocation, and must not include the first page.
    /// 2. The free frames of `pages` are really free RAM: the kernel image, the
    ///    descriptor storage, boot page tables and firmware data were passed as reserved.
    pub unsafe fn new(
        platform: P,
        pages: PageAllocator<'m>,
        window_start: usize,
        window_pages: usize,
    ) -> Result<Self, BootError> {
        let pages = SpinLock::new(pages);
        let backing = Backing {
            platform: &platform,
            pages: &pages,
        };
        // SAFETY: the window is ours (contract point 1).
        let ranges = unsafe { bootstrap::bootstrap(&backing, window_start, window_pages)? };
        Ok(Self {
            ranges: SpinLock::new(ranges),
            pages,
            platform,
        })
    }

    fn backing(&self) -> Backing<'_, 'm, P> {
        Backing {
            platform: &self.platform,
            pages: &self.pages,
        }
    }

    /// Allocates `pages` pages of the window and returns the first address. With
    /// [`RangeFlags::MAP`], each page is backed by a fresh frame (from the DMA zone with
    /// `DMA`, zeroed with `ZERO`); if any frame or page table is missing, everything is
    /// undone and the result is `OutOfMemory`. Instant fit: O(1) plus one split, plus
    /// O(pages) for `MAP`.
    pub fn new_range(&self, pages: usize, flags: RangeFlags) -> Result<usize, RangeError> {
        self.ranges.lock().new_range(pages, flags, &self.backing())
    }

    /// As [`new_range`](Self::new_range), at an address that is a multiple of `align`
    /// bytes (a power of two, at least [`PAGE_SIZE`](crate::PAGE_SIZE), else
    /// `InvalidAlignment`). The
    /// range is carved out of a free segment at the first aligned address that fits;
    /// the space before and after it stays free, so the range maps exactly `pages`
    /// pages. Instant fit for `pages` plus the padding, then (rarely) a scan of the
    /// free segments that could still hold it; it fails only when none can.
    pub fn new_range_aligned(
        &self,
        pages: usize,
        align: usize,
        flags: RangeFlags,
    ) -> Result<usize, RangeError> {
        self.ranges
            .lock()
            .new_range_aligned(pages, align, flags, &self.backing())
    }

    /// Deletes the range that starts at `addr`: a `MAP` range is unmapped and its frames
    /// released (freed, unless someone pinned one with `get_page`); a reserved range just
    /// becomes free address space again (its mappings, if any, are the caller's).
    /// The space is coalesced with free neighbours. O(log n) plus O(pages) for `MAP`.
    ///
    /// A second delete of the same address is reported as `NotAllocated` as long as the
    /// space has not been handed out again; after that it would delete the new range, as
    /// with any allocator without generation tags.
    pub fn del_range(&self, addr: usize) -> Result<(), RangeError> {
        self.ranges.lock().del_range(addr, &self.backing())
    }

    /// Registers `pages` pages from the page-aligned `addr`, which must be free, as a
    /// used range that the heap will not hand out nor back (the kernel image, the
    /// bootstrap pages of the next layer, ...).
    pub fn reserve(&self, addr: usize, pages: usize) -> Result<(), RangeError> {
        self.ranges.lock().reserve(addr, pages, &self.backing())
    }

    /// The used range containing `addr`. For a mapped page this is the SOS path, O(1)
    /// after the page-table walk: `addr -> translate -> frame -> owner -> descriptor`;
    /// otherwise a tree lookup, O(log n).
    pub fn range_containing(&self, addr: usize) -> Option<RangeInfo> {
        let ranges = self.ranges.lock();
        let backing = self.backing();
        let stats = ranges.stats();
        let window_end = stats.window_start + stats.window_pages * crate::platform::PAGE_SIZE;
        if !(stats.window_start..window_end).contains(&addr) {
            return None;
        }
        if let Some(PageOwner::Range(descriptor)) = backing.owner_of(addr) {
            // SAFETY: `descriptor` was read from a `Range` owner of our page allocator
            // after we took the range lock, which `ranges` still holds.
            if let Some(info) = unsafe { ranges.range_of_owner(descriptor, addr, &backing) } {
                return Some(info);
            }
        }
        ranges.range_containing(addr)
    }

    /// Calls `f(start, pages, kind)` for every segment of the window in address order
    /// (`kind` is `None` for free space), under the range lock: `f` must not call the heap.
    pub fn for_each_segment(&self, f: impl FnMut(usize, usize, Option<RangeKind>)) {
        self.ranges.lock().for_each_segment(f);
    }

    /// Gives the range cache's spare slabs back (see `range/shrink.rs`); returns how many.
    pub fn shrink(&self) -> usize {
        self.ranges.lock().shrink(&self.backing())
    }

    /// Allocates 2^`order` contiguous frames; see [`PageAllocator::alloc_frames`].
    pub fn alloc_frames(&self, order: usize, zone: Zone) -> Result<PhysAddr, FrameError> {
        self.pages.lock().alloc_frames(order, zone)
    }

    /// Drops the reference `alloc_frames` returned; see [`PageAllocator::free_frames`].
    pub fn free_frames(&self, addr: PhysAddr, order: usize) -> Result<(), FrameError> {
        self.pages.lock().free_frames(addr, order)
    }

    /// Takes a reference to an allocated block; see [`PageAllocator::get_page`].
    pub fn get_page(&self, addr: PhysAddr) -> Result<u32, FrameError> {
        self.pages.lock().get_page(addr)
    }

    /// Drops a reference; see [`PageAllocator::put_page`].
    pub fn put_page(&self, addr: PhysAddr) -> Result<bool, FrameError> {
        self.pages.lock().put_page(addr)
    }

    /// Fault injection: see [`PageAllocator::fail_frames_after`].
    pub fn fail_frames_after(&self, successes: Option<usize>) {
        self.pages.lock().fail_frames_after(successes);
    }

    /// True while an injected frame failure has not happened yet.
    pub fn frame_fault_pending(&self) -> bool {
        self.pages.lock().frame_fault_pending()
    }

    /// A snapshot of a frame's descriptor.
    pub fn frame_info(&self, addr: PhysAddr) -> Result<FrameInfo, FrameError> {
        self.pages.lock().frame_info(addr)
    }

    /// Calls `f(first frame, order, zone)` for every free block of frames, under the page
    /// lock: `f` must not call the heap.
    pub fn for_each_free_block(&self, f: impl FnMut(PhysAddr, usize, Zone)) {
        self.pages.lock().for_each_free_block(f);
    }

    /// The owner of the frame mapped at the kernel address `virt`, in O(1) after the
    /// page-table walk (`None` if nothing is mapped there or the frame is not ours).
    pub fn owner_of(&self, virt: usize) -> Option<PageOwner> {
        self.backing().owner_of(virt)
    }

    /// Both allocators' counters.
    pub fn stats(&self) -> HeapStats {
        let ranges = self.ranges.lock();
        let pages = self.pages.lock();
        HeapStats {
            pages: pages.stats(),
            ranges: ranges.stats(),
        }
    }

    /// Checks every invariant of both allocators; panics on the first one broken.
    /// Expensive (it walks every descriptor): tests and kernel self-tests only.
    pub fn check_invariants(&self) {
        let ranges = self.ranges.lock();
        ranges.check_invariants(&self.backing());
        self.pages.lock().check_invariants();
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }
}

#[cfg(test)]
mod tests {
    use crate::hosted::{HostedLayout, HostedMachine, HostedPlatform};
    use crate::tests::snapshot;
    use crate::tests::workload::Rng;
    use crate::{Heap, RangeFlags};
    use std::vec::Vec;

    #[test]
    fn heap_can_live_in_a_static() {
        fn assert_sync<T: Sync + Send>() {}
        assert_sync::<Heap<'static, HostedPlatform>>();
        assert_sync::<Heap<'static, &'static HostedPlatform>>();
    }

    /// Threads standing for CPUs share one heap; under Miri this also runs the data-race
    /// detector over the locking.
    #[test]
    fn threads_share_a_heap() {
        let (threads, ops) = if cfg!(miri) { (2, 12) } else { (4, 2000) };
        let mut m = HostedMachine::new(HostedLayout::pc());
        let heap = m.boot().unwrap();
        let initial = snapshot(&heap);
        std::thread::scope(|s| {
            for t in 0..threads {
                let heap = &heap;
                s.spawn(move || {
                    let mut rng = Rng::new(t as u64 + 1);
                    let mut mine = Vec::new();
                    for _ in 0..ops {
                        if mine.len() < 8 && rng.below(2) == 0 {
                            let flags = if rng.below(2) == 0 {
                                RangeFlags::MAP
                            } else {
                                RangeFlags::NONE
                            };
                            let r = heap.new_range(1 + rng.below(4), flags).unwrap();
                            assert_eq!(heap.range_containing(r).map(|i| i.start), Some(r));
                            mine.push(r);
                        } else if let Some(r) = mine.pop() {
                            heap.del_range(r).unwrap();
                        }
                    }
                    for r in mine {
                        heap.del_range(r).unwrap();
                    }
                });
            }
        });
        heap.shrink();
        heap.check_invariants();
        assert_eq!(snapshot(&heap), initial);
    }
}
