//! [`SlabBackend`]: what the slab layer needs from layer 3, and its implementation over
//! the [`Heap`] (ranges backed by frames).

use super::SlabError;
use crate::heap::Heap;
use crate::platform::Platform;
use crate::range::{RangeError, RangeFlags};

/// What the slab layer needs from the layers below: runs of whole pages of kernel
/// memory inside one window. Implemented for `&Heap` (the range allocator with
/// `RangeFlags::MAP`); a trait so that the slab layer names one type parameter instead of
/// the heap's lifetimes and platform.
///
/// # Safety
///
/// Implementors guarantee that `alloc_pages` returns the page-aligned start of `pages`
/// pages inside `window()` (`alloc_pages_aligned`: aligned as asked), readable and writable through `pointer_to`, zeroed when
/// asked, used by nothing else until `free_pages` of that start; that `pages_at` returns
/// the page count of such a run; and that `pointer_to(addr)` has address `addr`.
pub unsafe trait SlabBackend: Sync {
    /// The window every run lies in: (first address, pages).
    fn window(&self) -> (usize, usize);

    /// Allocates and backs `pages` pages (from the DMA zone with `dma`, zeroed with
    /// `zero`); returns the first address.
    fn alloc_pages(&self, pages: usize, dma: bool, zero: bool) -> Result<usize, SlabError>;

    /// As [`alloc_pages`](Self::alloc_pages) (not zeroed), from an address that is a
    /// multiple of `align` (a power of two, at least a page): exactly `pages` pages, the
    /// padding an alignment needs stays free.
    fn alloc_pages_aligned(
        &self,
        pages: usize,
        align: usize,
        dma: bool,
    ) -> Result<usize, SlabError>;

    /// Gives back a run that `alloc_pages` or `alloc_pages_aligned` returned.
    fn free_pages(&self, start: usize);

    /// The size in pages of the run that starts at `start`.
    fn pages_at(&self, start: usize) -> Option<usize>;

    /// A pointer to the kernel address `addr`.
    fn pointer_to(&self, addr: usize) -> *mut u8;
}

// SAFETY: `new_range` with `MAP` returns page-aligned, mapped (readable, writable),
// unshared pages of the heap's window until `del_range` (the range allocator's contract);
// `Platform::pointer_to` has the given address.
unsafe impl<P: Platform> SlabBackend for &Heap<'_, P> {
    fn window(&self) -> (usize, usize) {
        let ranges = self.stats().ranges;
        (ranges.window_start, ranges.window_pages)
    }

    fn alloc_pages(&self, pages: usize, dma: bool, zero: bool) -> Result<usize, SlabError> {
        let mut flags = RangeFlags::MAP;
        if dma {
            flags = flags | RangeFlags::DMA;
        }
        if zero {
            flags = flags | RangeFlags::ZERO;
        }
        self.new_range(pages, flags).map_err(|error| {
            debug_assert!(
                matches!(
                    error,
                    RangeError::OutOfMemory | RangeError::OutOfVirtualSpace
                ),
                "new_range({pages}, {flags:?}): {error:?}"
            );
            SlabError::OutOfMemory
        })
    }

    fn alloc_pages_aligned(
        &self,
        pages: usize,
        align: usize,
        dma: bool,
    ) -> Result<usize, SlabError> {
        let flags = if dma {
            RangeFlags::MAP | RangeFlags::DMA
        } else {
            RangeFlags::MAP
        };
        self.new_range_aligned(pages, align, flags)
            .map_err(|error| {
                debug_assert!(
                    matches!(
                        error,
                        RangeError::OutOfMemory | RangeError::OutOfVirtualSpace
                    ),
                    "new_range_aligned({pages}, {align:#x}, {flags:?}): {error:?}"
                );
                SlabError::OutOfMemory
            })
    }

    fn free_pages(&self, start: usize) {
        let freed = self.del_range(start);
        debug_assert_eq!(freed, Ok(()), "del_range({start:#x})");
    }

    fn pages_at(&self, start: usize) -> Option<usize> {
        self.range_containing(start)
            .filter(|range| range.start == start)
            .map(|range| range.pages)
    }

    fn pointer_to(&self, addr: usize) -> *mut u8 {
        self.platform().pointer_to(addr)
    }
}
