//! The front end: [`Kmalloc`], which owns the per-CPU layer (and so everything below),
//! and adds what a kernel calls: `kmalloc`, `kfree`, `ksize`, blocks larger than any
//! cache, and `GlobalAlloc` (`global.rs`).
//!
//! # Size classes (Linux 2.4's `cache_sizes`)
//!
//! `kmalloc(n)` takes an object of the smallest general cache that holds `n` bytes
//! ([`size_class`]), from its DMA twin with [`Gfp::DMA`], through the calling CPU's array
//! of that cache. The general caches themselves (thirteen powers of two, `size-32` to
//! `size-131072`, each with a DMA twin) belong to the slab layer, which needs them first
//! (`slab/general.rs`). Class objects are aligned to their size up to a page, which is
//! what lets `GlobalAlloc` serve any alignment up to a page from the caches.
//!
//! # Beyond 128 KiB (`large.rs`)
//!
//! Larger requests (and alignments above a page) go straight to the range allocator: a
//! run of whole pages, mapped, from the DMA zone with `Gfp::DMA`. The slab layer's owner
//! table marks the run's first page (`SlabCaches::mark_large`) so that `kfree` finds it
//! from the address alone, and `kfree` claims that mark by compare-and-swap
//! (`SlabCaches::claim_large`), so a racing double `kfree` frees once.
//! So kmalloc serves any size the window and the frames can hold, and returns
//! [`SlabError::OutOfMemory`] (null through `GlobalAlloc`) when they cannot.
//!
//! DMA caveat: the range allocator backs each page with its own frame, so a DMA object
//! larger than a page is *not* physically contiguous. Devices that need contiguous
//! buffers beyond a page must use `Heap::alloc_frames`.

mod global;
mod large;

#[cfg(test)]
mod kmalloc_tests;

pub use global::KernelAllocator;

use crate::percpu::{CacheDescriptor, CpuCaches};
use crate::platform::{CpuLocal, PAGE_SIZE};
use crate::slab::{Owner, SlabBackend, SlabError, SlabOptions, size_class};
use core::ptr::NonNull;

pub use crate::slab::{KMALLOC_CLASSES, KMALLOC_MAX, KMALLOC_MIN};

/// Where kmalloc's memory comes from (the part of Linux's GFP flags that matters here:
/// this allocator never sleeps, so `GFP_KERNEL` and `GFP_ATOMIC` are the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gfp(u8);

impl Gfp {
    /// Any memory.
    pub const KERNEL: Self = Self(0);
    /// Same as `KERNEL`: the allocator never sleeps.
    pub const ATOMIC: Self = Self(0);
    /// Memory from the DMA zone (frames below 16 MiB).
    pub const DMA: Self = Self(1);

    /// True when every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The allocator as a kernel calls it: kmalloc over the per-CPU caches over the slab
/// caches over the ranges and pages. See the [crate docs](crate).
pub struct Kmalloc<B: SlabBackend, I: CpuLocal> {
    caches: CpuCaches<B, I>,
}

impl<B: SlabBackend, I: CpuLocal> Kmalloc<B, I> {
    /// Starts the slab layer over `backend` (the cache of caches, the general caches),
    /// the per-CPU layer in front of it, and kmalloc on top.
    pub fn new(backend: B, options: SlabOptions) -> Result<Self, SlabError> {
        Ok(Self {
            caches: CpuCaches::new(backend, options)?,
        })
    }

    /// The caches (layer 1, which owns layer 2): dedicated caches, tuning, statistics.
    pub fn caches(&self) -> &CpuCaches<B, I> {
        &self.caches
    }

    /// `size` bytes (2.4's `kmalloc`), aligned to their size class (up to a page), or to
    /// a page beyond 128 KiB. `size` 0 gets the smallest object, as in 2.4.
    #[inline]
    pub fn kmalloc(&self, size: usize, flags: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.kmalloc_aligned(size, 0, flags)
    }

    /// `size` bytes aligned to `align` (a power of two, or 0 for the default): from the
    /// size class of `max(size, align)` when that is a class and `align` is at most a
    /// page, else a range with that alignment.
    #[inline]
    pub fn kmalloc_aligned(
        &self,
        size: usize,
        align: usize,
        flags: Gfp,
    ) -> Result<NonNull<u8>, SlabError> {
        if align != 0 && !align.is_power_of_two() {
            return Err(SlabError::InvalidAlign { align });
        }
        let dma = flags.contains(Gfp::DMA);
        match self.class_cache(size, align, dma) {
            Some(cache) => self.caches.alloc(cache),
            None => self.alloc_large(size, align, dma),
        }
    }

    /// The general cache that serves `size` bytes aligned to `align` (a power of two, or
    /// 0), if a size class does: that of `max(size, align)` when `align` is at most a
    /// page.
    #[inline]
    fn class_cache(&self, size: usize, align: usize, dma: bool) -> Option<&CacheDescriptor<I>> {
        if align > PAGE_SIZE {
            return None;
        }
        self.caches
            .slab()
            .general_cache(size_class(size.max(align))?, dma)
    }

    /// `GlobalAlloc::alloc` after a miss, or for a block larger than every class.
    #[cold]
    #[inline(never)]
    fn alloc_cold(&self, layout: core::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let result = match self.class_cache(size, align, false) {
            // The hit was tried already.
            Some(cache) => self.caches.alloc_slow(cache),
            None => self.alloc_large(size, align, false),
        };
        result.map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    /// Frees what `kmalloc` returned (2.4's `kfree`): the cache is found from the
    /// address (owner table), then the object is checked and freed as by
    /// [`Cache::free`](crate::percpu::Cache::free). Null is ignored. Pointers that kmalloc
    /// did not hand out (objects of other caches included) are reported and change
    /// nothing. A double free of a large
    /// allocation is reported as `InvalidFree` (its pages are gone, so nothing marks them).
    ///
    /// # Safety
    ///
    /// Nobody uses the memory after this call.
    #[inline]
    pub unsafe fn kfree(&self, ptr: *mut u8) -> Result<(), SlabError> {
        let addr = ptr.addr();
        // The live mark first: it finds the cache, and is every check of the free. (Null
        // starts no object: `kfree_other` ignores it.)
        match self.caches.slab().take_live_object(addr) {
            Ok(Some(cache)) if cache.general => self.caches.free_taken(cache, addr),
            taken => self.kfree_other(addr, taken.is_ok()),
        }
    }

    /// `kfree` of a pointer that starts no live object of a general cache: null
    /// (ignored), a large block, or a bad free to report (another cache's object, whose
    /// mark `kfree` took when `taken`; a double free; a pointer to no object).
    #[cold]
    #[inline(never)]
    fn kfree_other(&self, addr: usize, taken: bool) -> Result<(), SlabError> {
        if addr == 0 {
            return Ok(());
        }
        if taken {
            self.caches.slab().put_back_live(addr);
        }
        match self.caches.slab().free_general(addr) {
            Ok(()) => Ok(()),
            Err(Some(error)) => Err(error),
            Err(None) => self.free_large(addr),
        }
    }

    /// The usable size of an allocated object or large allocation at `ptr` (2.4's
    /// `ksize`): at least what was asked for. `None` if `ptr` is not one.
    pub fn ksize(&self, ptr: *const u8) -> Option<usize> {
        let addr = ptr.addr();
        let slab = self.caches.slab();
        match slab.owner(addr) {
            Owner::Nothing => None,
            Owner::Large { start } => {
                let pages = addr
                    .is_multiple_of(PAGE_SIZE)
                    .then(|| slab.backend().pages_at(start))??;
                Some(start + pages * PAGE_SIZE - addr)
            }
            // Live, not only allocated: an object parked in a per-CPU array is
            // allocated as far as its slab knows, and free.
            Owner::Cache(_) => slab
                .object_info(addr)
                .filter(|info| info.object == addr && slab.is_live(addr))
                .map(|info| info.size),
        }
    }
}
