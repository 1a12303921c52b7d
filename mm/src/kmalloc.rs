//! `kmalloc`, `kfree`, `ksize` and the `GlobalAlloc` front end.
//!
//! # Size classes (Linux 2.4's `cache_sizes`)
//!
//! Thirteen general caches, `size-32` to `size-131072`, powers of two, each with a DMA
//! twin (`size-32(DMA)` ...) whose slabs come from the DMA zone. `kmalloc(n)` takes an
//! object of the smallest class that holds `n` bytes, from the DMA twin with
//! [`Gfp::DMA`]. The classes are created at start-up in ascending order (2.4's
//! `kmem_cache_sizes_init`) because the large ones keep their slab descriptors in the
//! small ones. Class objects are aligned to their size up to a page (a 256-byte object is
//! 256-byte aligned, any object of 4 KiB or more is page-aligned), which is what lets
//! `GlobalAlloc` serve any alignment up to a page from the caches.
//!
//! # Beyond 128 KiB
//!
//! Larger requests (and alignments above a page) go straight to the range allocator: a
//! run of whole pages, mapped, from the DMA zone with `Gfp::DMA`. The owner table marks
//! the run's first page (`LARGE`) so that `kfree` finds it from the address alone, and
//! `kfree` claims that mark by compare-and-swap, so a racing double `kfree` frees once.
//! So kmalloc serves any size the window and the frames can hold, and returns
//! [`SlabError::OutOfMemory`] (null through `GlobalAlloc`) when they cannot.
//!
//! DMA caveat: the range allocator backs each page with its own frame, so a DMA object
//! larger than a page is *not* physically contiguous. Devices that need contiguous
//! buffers beyond a page must use `Heap::alloc_frames`.

use crate::platform::CpuLocal;
use crate::platform::PAGE_SIZE;
use crate::slab::{
    LARGE, Owner, SlabAllocator, SlabBackend, SlabCache, SlabError, SlabFlags, SlabOptions,
};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

/// The smallest size class.
pub const KMALLOC_MIN: usize = 32;
/// The largest size class; larger requests get whole ranges.
pub const KMALLOC_MAX: usize = 128 << 10;
/// Number of size classes: 32 B .. 128 KiB.
pub const KMALLOC_CLASSES: usize = 13;

const _: () = assert!(KMALLOC_MIN << (KMALLOC_CLASSES - 1) == KMALLOC_MAX);

const NAMES: [[&str; 2]; KMALLOC_CLASSES] = [
    ["size-32", "size-32(DMA)"],
    ["size-64", "size-64(DMA)"],
    ["size-128", "size-128(DMA)"],
    ["size-256", "size-256(DMA)"],
    ["size-512", "size-512(DMA)"],
    ["size-1024", "size-1024(DMA)"],
    ["size-2048", "size-2048(DMA)"],
    ["size-4096", "size-4096(DMA)"],
    ["size-8192", "size-8192(DMA)"],
    ["size-16384", "size-16384(DMA)"],
    ["size-32768", "size-32768(DMA)"],
    ["size-65536", "size-65536(DMA)"],
    ["size-131072", "size-131072(DMA)"],
];

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
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One row of the size table (2.4's `cache_sizes_t`).
pub(crate) struct SizeClass<I: CpuLocal> {
    pub normal: Option<NonNull<SlabCache<I>>>,
    pub dma: Option<NonNull<SlabCache<I>>>,
}

impl<I: CpuLocal> SizeClass<I> {
    pub const EMPTY: Self = Self {
        normal: None,
        dma: None,
    };
}

/// The class of a `size`-byte request, if a class holds it.
pub fn size_class(size: usize) -> Option<usize> {
    if size > KMALLOC_MAX {
        return None;
    }
    let bits = (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize;
    Some(bits.saturating_sub(KMALLOC_MIN.trailing_zeros() as usize))
}

impl<B: SlabBackend, I: CpuLocal> SlabAllocator<B, I> {
    /// Creates the general caches, smallest first (2.4's `kmem_cache_sizes_init`).
    pub(crate) fn create_general_caches(&mut self) -> Result<(), SlabError> {
        for (i, [name, dma_name]) in NAMES.into_iter().enumerate() {
            let size = KMALLOC_MIN << i;
            let align = size.min(PAGE_SIZE);
            let normal = self.create_raw(name, size, align, SlabFlags::GENERAL, None, None)?;
            self.sizes[i].normal = Some(normal);
            let dma_flags = SlabFlags::GENERAL | SlabFlags::DMA;
            let dma = self.create_raw(dma_name, size, align, dma_flags, None, None)?;
            self.sizes[i].dma = Some(dma);
        }
        Ok(())
    }

    /// `size` bytes (2.4's `kmalloc`), aligned to their size class (up to a page), or to
    /// a page beyond 128 KiB. `size` 0 gets the smallest object, as in 2.4.
    pub fn kmalloc(&self, size: usize, flags: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.kmalloc_aligned(size, 0, flags)
    }

    /// `size` bytes aligned to `align` (a power of two, or 0 for the default): from the
    /// size class of `max(size, align)` when that is a class and `align` is at most a
    /// page, else a range with that alignment.
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
        if align <= PAGE_SIZE
            && let Some(class) = size_class(size.max(align))
        {
            let row = &self.sizes[class];
            let cache = if dma { row.dma } else { row.normal };
            let cache = cache.ok_or(SlabError::OutOfMemory)?;
            // SAFETY: general caches live as long as the allocator.
            return self.cache_alloc(unsafe { cache.as_ref() });
        }
        self.alloc_large(size, align, dma)
    }

    /// A run of pages holding `size` bytes at an `align`-aligned address.
    fn alloc_large(&self, size: usize, align: usize, dma: bool) -> Result<NonNull<u8>, SlabError> {
        let align = align.max(PAGE_SIZE);
        let pages = size
            .div_ceil(PAGE_SIZE)
            .max(1)
            .checked_add(align / PAGE_SIZE - 1)
            .ok_or(SlabError::OutOfMemory)?;
        let backend = &self.core.backend;
        let start = match backend.alloc_pages(pages, dma, false) {
            Err(SlabError::OutOfMemory) if self.reclaim() > 0 => {
                backend.alloc_pages(pages, dma, false)?
            }
            result => result?,
        };
        let addr = start.next_multiple_of(align);
        let base = backend.pointer_to(start);
        let Some(entry) = self.core.owners.entry(addr) else {
            backend.free_pages(start);
            return Err(SlabError::OutOfMemory);
        };
        entry.slab.store(base, Ordering::Relaxed);
        entry.cache.store(LARGE, Ordering::Release);
        // The aligned address is inside the run (`align / PAGE_SIZE - 1` spare pages).
        NonNull::new(base.wrapping_add(addr - start)).ok_or(SlabError::OutOfMemory)
    }

    /// Frees what `kmalloc` returned (2.4's `kfree`): the cache is found from the
    /// address (owner table), then the object is checked and freed as by
    /// [`Cache::free`](crate::slab::Cache::free). Null is ignored. Pointers that kmalloc
    /// did not hand out (objects of other caches included) are reported and change
    /// nothing. A double free of a large
    /// allocation is reported as `InvalidFree` (its pages are gone, so nothing marks them).
    ///
    /// # Safety
    ///
    /// Nobody uses the memory after this call.
    pub unsafe fn kfree(&self, ptr: *mut u8) -> Result<(), SlabError> {
        if ptr.is_null() {
            return Ok(());
        }
        let addr = ptr.addr();
        if let Owner::Cache(cache) = self.core.owner::<I>(addr)
            && cache.general
        {
            return self.cache_free(cache, addr);
        }
        match self.core.free_any::<I>(addr) {
            Ok(()) => Ok(()),
            Err(Some(error)) => Err(error),
            Err(None) => self.free_large(addr),
        }
    }

    /// Frees a large allocation whose first page is at `addr`.
    fn free_large(&self, addr: usize) -> Result<(), SlabError> {
        let claimed = self
            .core
            .owners
            .entry(addr)
            .filter(|_| addr.is_multiple_of(PAGE_SIZE))
            .filter(|entry| {
                entry
                    .cache
                    .compare_exchange(
                        LARGE,
                        core::ptr::null_mut(),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            });
        let Some(entry) = claimed else {
            let error = SlabError::InvalidFree { cache: None, addr };
            self.core.report(&error);
            return Err(error);
        };
        let start = entry.slab.swap(core::ptr::null_mut(), Ordering::Relaxed);
        self.core.backend.free_pages(start.addr());
        Ok(())
    }

    /// The usable size of an allocated object or large allocation at `ptr` (2.4's
    /// `ksize`): at least what was asked for. `None` if `ptr` is not one.
    pub fn ksize(&self, ptr: *const u8) -> Option<usize> {
        let addr = ptr.addr();
        match self.core.owner::<I>(addr) {
            Owner::Nothing => None,
            Owner::Large(entry) => {
                let start = entry.slab.load(Ordering::Acquire).addr();
                let pages = addr
                    .is_multiple_of(PAGE_SIZE)
                    .then(|| self.core.backend.pages_at(start))??;
                Some(start + pages * PAGE_SIZE - addr)
            }
            Owner::Cache(_) => self
                .object_info(addr)
                .filter(|info| info.object == addr && info.allocated)
                .map(|info| info.size),
        }
    }
}

// SAFETY: `alloc` returns null or memory of at least `layout.size()` bytes aligned to
// `layout.align()` (a class of `max(size, align)` objects aligned to their size up to a
// page, or a range aligned as asked), which nothing else uses until `dealloc`; `dealloc`
// frees exactly that object; `realloc` keeps the block only when it is large enough.
unsafe impl<B: SlabBackend, I: CpuLocal> GlobalAlloc for SlabAllocator<B, I> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.kmalloc_aligned(layout.size(), layout.align(), Gfp::KERNEL)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // Errors were reported; `dealloc` cannot return them.
        // SAFETY: the caller gives the block up (`GlobalAlloc::dealloc`'s contract).
        let _ = unsafe { self.kfree(ptr) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.ksize(ptr).is_some_and(|usable| new_size <= usable) {
            return ptr;
        }
        // SAFETY: `realloc`'s contract: `new_size`, rounded up to `layout.align()`, does
        // not overflow `isize`, and the alignment is the block's.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_size` is not zero (`realloc`'s contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// The slab allocator as a `#[global_allocator]`: a static that is empty until the
/// kernel starts the heap, then forwards to a [`SlabAllocator`]. Before `init`, every
/// allocation fails (null).
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: KernelAllocator<&'static Heap<'static, KernelPlatform>, Cli> =
///     KernelAllocator::new();
///
/// // once the heap is up:
/// ALLOCATOR.init(HEAP.get().unwrap(), SlabOptions::default())?;
/// ```
pub struct KernelAllocator<B: SlabBackend, I: CpuLocal> {
    slab: spin::Once<SlabAllocator<B, I>>,
}

impl<B: SlabBackend, I: CpuLocal> KernelAllocator<B, I> {
    /// An allocator with no heap yet.
    pub const fn new() -> Self {
        Self {
            slab: spin::Once::new(),
        }
    }

    /// Starts the slab layer over `backend` (once: later calls return the first one's
    /// allocator and drop their `backend`).
    pub fn init(
        &self,
        backend: B,
        options: SlabOptions,
    ) -> Result<&SlabAllocator<B, I>, SlabError> {
        self.slab
            .try_call_once(|| SlabAllocator::new(backend, options))
    }

    /// The slab layer, once started.
    pub fn get(&self) -> Option<&SlabAllocator<B, I>> {
        self.slab.get()
    }
}

impl<B: SlabBackend, I: CpuLocal> Default for KernelAllocator<B, I> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to the `SlabAllocator`'s implementation once there is one; before,
// `alloc` fails and no block exists to be freed or reallocated.
unsafe impl<B: SlabBackend + Send, I: CpuLocal> GlobalAlloc for KernelAllocator<B, I> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.get() {
            // SAFETY: the caller's contract is passed on.
            Some(slab) => unsafe { slab.alloc(layout) },
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(slab) = self.get() {
            // SAFETY: the caller's contract is passed on.
            unsafe { slab.dealloc(ptr, layout) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match self.get() {
            // SAFETY: the caller's contract is passed on.
            Some(slab) => unsafe { slab.realloc(ptr, layout, new_size) },
            None => core::ptr::null_mut(),
        }
    }
}
