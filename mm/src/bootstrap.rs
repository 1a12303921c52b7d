//! The bootstrap knot of the range allocator.
//!
//! Range descriptors are objects of the range cache; the cache's slabs are ranges of the
//! window; a range exists only once a descriptor describes it. So the first slab cannot
//! be obtained the normal way. As SOS does in `sos_kmem_cache_setup_prepare`, we cut the
//! knot by hand:
//!
//! 1. Take a frame from the page allocator and map it at the very start of the window,
//!    through the platform, with the reference protocol of [`crate::page`] (allocate: 1
//!    reference; map and `get_page`: 2; `put_page`: 1, now the mapping's). The frame has
//!    no owner yet: the descriptor that will own it does not exist.
//! 2. Lay the first slab of the range cache in that page (pinned: never given back).
//! 3. Describe the window with two descriptors taken from that slab: the bootstrap page
//!    as a used range of kind `Internal`, and the rest of the window as one free segment.
//! 4. Tie the knot: record that descriptor as the owner of the frame.
//!
//! After that the allocator is complete, and the caller may `reserve` more ranges (the
//! kernel image, if it lies inside the window). Every later slab of the range cache is an
//! ordinary `Internal` range, allocated and mapped by the range allocator itself, while
//! the reserve of free descriptors guarantees it never needs a descriptor it cannot get
//! (see [`crate::range`]).
//!
//! What lives where after `bootstrap` (window of `n` pages at `W`):
//!
//! ```text
//!  kernel virtual memory (the window)
//!
//!  W                       W + 4 KiB                                      W + n*4 KiB
//!  +-----------------------+----------------------------------------------+
//!  | page 0: bootstrap slab|                 free (n - 1 pages)            |
//!  +-----------------------+----------------------------------------------+
//!  | slot 0: Segment A ----------> describes [W, W+4K), Internal  (this page!)
//!  | slot 1: Segment B ----------> describes [W+4K, W+n*4K), Free
//!  | slots 2..62: free objects, linked through themselves
//!  | SlabHeader (last 64 B): free list head, in_use = 2, pinned
//!  +-----------------------+
//!         ^    |
//!         |    | Platform mapping: W -> frame F
//!         |    v
//!  physical memory / PageAllocator
//!  +---------------------------------------------------------------+
//!  | descriptor of F: Allocated, refcount 1 (the mapping's),       |
//!  |                  owner = Range(&A) ----------------------------+---> A (slot 0 above)
//!  +---------------------------------------------------------------+
//!
//!  RangeAllocator (inside Heap, in the kernel's static)
//!    tree:       A -- B                 (red-black, by start address)
//!    free lists: class floor(log2(n-1)) -> B, bitmap bit set
//!    cache:      slabs = [page 0], avail = [page 0]
//! ```
//!
//! Who points at whom: the page-table entry for `W` points at frame F; F's descriptor
//! points at A; A lives *in* the page at `W` and describes it. That cycle is the knot.
//!
//! (The slab layer of the next issue has its own knot, the cache of caches; it can take
//! its first slab from `new_range`, since the range allocator is complete by then.)

use crate::page::{PageOwner, Zone};
use crate::platform::{PAGE_SIZE, Platform};
use crate::range::{Backing, RangeAllocator, RangeError};
use core::ptr::NonNull;

/// Pages mapped by hand at the start of the window: the first slab of the range cache.
pub const BOOTSTRAP_PAGES: usize = 1;

/// Why the range allocator could not be bootstrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// The window is not page-aligned, has fewer than two pages, starts at 0, or wraps
    /// around the address space.
    InvalidWindow,
    /// No frame for the bootstrap slab (or for a page table to map it).
    OutOfMemory,
    /// The first page of the window is already mapped.
    AlreadyMapped {
        /// The address.
        addr: usize,
    },
}

/// Builds the range allocator for the window of `window_pages` pages at `window_start`.
///
/// # Safety
///
/// The window is kernel virtual address space that nothing else uses (the contract of
/// [`crate::Heap::new`], which is the only caller).
pub(crate) unsafe fn bootstrap<P: Platform>(
    backing: &Backing<'_, '_, P>,
    window_start: usize,
    window_pages: usize,
) -> Result<RangeAllocator, BootError> {
    let valid = window_start != 0
        && window_start.is_multiple_of(PAGE_SIZE)
        && window_pages >= 2
        && window_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|bytes| window_start.checked_add(bytes))
            .is_some();
    if !valid {
        return Err(BootError::InvalidWindow);
    }
    // 1. A frame, mapped by hand at the start of the window.
    backing
        .map_fresh(window_start, BOOTSTRAP_PAGES, Zone::Normal, PageOwner::None)
        .map_err(|error| match error {
            RangeError::AlreadyMapped { addr } => BootError::AlreadyMapped { addr },
            _ => BootError::OutOfMemory,
        })?;
    let page = NonNull::new(backing.pointer_to(window_start)).ok_or(BootError::InvalidWindow)?;
    // 2. and 3. The first slab in that page, and the window described from it.
    // SAFETY: the page at `window_start` was just mapped for us and the window is ours
    // (this function's contract); the page stays mapped for good (pinned slab).
    let ranges = unsafe { RangeAllocator::with_first_slab(window_start, window_pages, page) };
    // 4. The frame's owner: the descriptor of the range that holds the descriptors.
    let descriptor = ranges
        .descriptor_of(window_start)
        .expect("with_first_slab describes the bootstrap page");
    backing.retarget(
        window_start,
        BOOTSTRAP_PAGES,
        PageOwner::None,
        PageOwner::Range(descriptor),
    );
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::{HostedLayout, HostedMachine, HostedPlatform};
    use crate::page::{PageAllocator, PageDescriptor, PageState, PhysRegion};
    use crate::range::{OBJECTS_PER_SLAB, RangeInfo, RangeKind};
    use crate::tests::segments;
    use crate::{Heap, PhysAddr};
    use core::mem::MaybeUninit;
    use std::vec::Vec;

    const P: usize = PAGE_SIZE;

    #[test]
    fn bootstrap_maps_one_page_and_describes_the_window_from_it() {
        let mut m = HostedMachine::new(HostedLayout::pc());
        let heap = m.boot().unwrap();
        let (w, n) = (
            heap.platform().window_start(),
            heap.platform().window_pages(),
        );
        assert_eq!(
            segments(&heap),
            [(0, 1, Some(RangeKind::Internal)), (1, n - 1, None)]
        );
        assert_eq!(heap.platform().mappings().len(), 1);
        // The knot: the frame behind the first page is owned by the descriptor that
        // describes that page, and that descriptor lives in that page.
        let frame = heap.platform().translate(w).unwrap();
        let info = heap.frame_info(frame).unwrap();
        let crate::PageOwner::Range(descriptor) = info.owner else {
            panic!("bootstrap frame has owner {:?}", info.owner);
        };
        assert!((w..w + P).contains(&descriptor));
        assert_eq!((info.state, info.refcount), (PageState::Allocated, 1));
        let st = heap.stats();
        assert_eq!(
            (st.ranges.cache_slabs, st.ranges.cache_free),
            (1, OBJECTS_PER_SLAB - 2)
        );
        assert_eq!(st.pages.allocated_frames(), BOOTSTRAP_PAGES);
        let internal = RangeInfo {
            start: w,
            pages: 1,
            kind: RangeKind::Internal,
        };
        assert_eq!(heap.range_containing(w + P - 1), Some(internal));
        assert_eq!(heap.del_range(w), Err(RangeError::Pinned { addr: w }));
        heap.check_invariants();
    }

    fn page_allocator<'m>(
        storage: &'m mut Vec<MaybeUninit<PageDescriptor>>,
        frames: u64,
    ) -> PageAllocator<'m> {
        let regions = [PhysRegion::new(4 << 30, (4 << 30) + frames * P as u64)];
        storage.clear();
        storage.resize_with(
            PageAllocator::descriptors_needed(&regions),
            MaybeUninit::uninit,
        );
        PageAllocator::new(&regions, &[], storage).unwrap()
    }

    #[test]
    fn invalid_windows_are_refused_before_anything_is_mapped() {
        let platform = HostedPlatform::new(8);
        let w = platform.window_start();
        let mut storage = Vec::new();
        for (start, pages) in [(w + 8, 8), (w, 1), (0, 8), (usize::MAX & !(P - 1), 8)] {
            let pages_alloc = page_allocator(&mut storage, 16);
            // SAFETY: the window is the platform's arena (or refused before use).
            let heap = unsafe { Heap::new(&platform, pages_alloc, start, pages) };
            assert_eq!(
                heap.err(),
                Some(BootError::InvalidWindow),
                "window {start:#x}+{pages}"
            );
            assert_eq!(platform.mapped_pages(), 0);
        }
    }

    #[test]
    fn an_already_mapped_first_page_is_refused() {
        let platform = HostedPlatform::new(8);
        let w = platform.window_start();
        platform
            .map_page(w, PhysAddr(0x1000), &mut || None)
            .unwrap();
        let mut storage = Vec::new();
        let pages = page_allocator(&mut storage, 16);
        // SAFETY: the window is the platform's arena.
        let heap = unsafe { Heap::new(&platform, pages, w, 8) };
        assert_eq!(heap.err(), Some(BootError::AlreadyMapped { addr: w }));
    }

    #[test]
    fn without_frames_there_is_no_heap() {
        let mut m = HostedMachine::new(HostedLayout::flat(0, 16));
        assert_eq!(m.boot().err(), Some(BootError::OutOfMemory));
    }

    #[test]
    fn rebooting_a_machine_starts_afresh() {
        let mut m = HostedMachine::new(HostedLayout::pc());
        let first = crate::tests::snapshot(&m.boot().unwrap());
        {
            let heap = m.boot().unwrap();
            heap.new_range(3, crate::RangeFlags::MAP).unwrap();
        }
        let heap = m.boot().unwrap();
        assert_eq!(crate::tests::snapshot(&heap), first);
    }
}
