//! Blocks larger than the largest general cache (128 KiB), or aligned beyond a page:
//! whole runs of pages from the range allocator, through the slab layer's backend, whose
//! first page the owner table marks so that `kfree` and `ksize` recognise them.

use super::Kmalloc;
use crate::platform::{CpuLocal, PAGE_SIZE};
use crate::slab::{SlabBackend, SlabError};
use core::ptr::NonNull;

impl<B: SlabBackend, I: CpuLocal> Kmalloc<B, I> {
    /// A run of pages holding `size` bytes at an `align`-aligned address. An alignment
    /// beyond a page takes an aligned range from the range allocator, which leaves the
    /// padding free, so the block maps exactly the pages `size` needs.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_large(
        &self,
        size: usize,
        align: usize,
        dma: bool,
    ) -> Result<NonNull<u8>, SlabError> {
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        let slab = self.caches.slab();
        let backend = slab.backend();
        let alloc = || {
            if align > PAGE_SIZE {
                backend.alloc_pages_aligned(pages, align, dma)
            } else {
                backend.alloc_pages(pages, dma, false)
            }
        };
        let start = match alloc() {
            Err(SlabError::OutOfMemory) if self.caches.reclaim_memory() > 0 => alloc()?,
            result => result?,
        };
        if !slab.mark_large(start, start) {
            backend.free_pages(start);
            return Err(SlabError::OutOfMemory);
        }
        NonNull::new(backend.pointer_to(start)).ok_or(SlabError::OutOfMemory)
    }

    /// Frees a large allocation whose first page is at `addr`.
    #[cold]
    pub(super) fn free_large(&self, addr: usize) -> Result<(), SlabError> {
        let slab = self.caches.slab();
        let Some(start) = slab.claim_large(addr) else {
            let error = SlabError::InvalidFree { cache: None, addr };
            slab.report(&error);
            return Err(error);
        };
        slab.backend().free_pages(start);
        Ok(())
    }
}
