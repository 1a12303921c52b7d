//! `GlobalAlloc` for [`Kmalloc`], and [`KernelAllocator`], the `#[global_allocator]`
//! static that is empty until the kernel starts its heap.

use super::Kmalloc;
use crate::platform::CpuLocal;
use crate::slab::{SlabBackend, SlabError, SlabOptions};
use core::alloc::{GlobalAlloc, Layout};

// SAFETY: `alloc` returns null or memory of at least `layout.size()` bytes aligned to
// `layout.align()` (a class of `max(size, align)` objects aligned to their size up to a
// page, or a range aligned as asked), which nothing else uses until `dealloc`; `dealloc`
// frees exactly that object; `realloc` keeps the block only when it is large enough.
unsafe impl<B: SlabBackend, I: CpuLocal> GlobalAlloc for Kmalloc<B, I> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The hit returns straight from the array; everything else goes through
        // `kmalloc_aligned` out of line. (A `Layout`'s alignment is a power of two.)
        if let Some(cache) = self.class_cache(layout.size(), layout.align(), false)
            && let Some(object) = self.caches().alloc_hit(cache)
        {
            return object.as_ptr();
        }
        self.alloc_cold(layout)
    }

    #[inline]
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
/// kernel starts the heap, then forwards to a [`Kmalloc`]. Before `init`, every
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
    slab: spin::Once<Kmalloc<B, I>>,
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
    pub fn init(&self, backend: B, options: SlabOptions) -> Result<&Kmalloc<B, I>, SlabError> {
        self.slab.try_call_once(|| Kmalloc::new(backend, options))
    }

    /// The slab layer, once started.
    #[inline]
    pub fn get(&self) -> Option<&Kmalloc<B, I>> {
        self.slab.get()
    }
}

impl<B: SlabBackend, I: CpuLocal> Default for KernelAllocator<B, I> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to the `Kmalloc`'s implementation once there is one; before,
// `alloc` fails and no block exists to be freed or reallocated.
unsafe impl<B: SlabBackend + Send, I: CpuLocal> GlobalAlloc for KernelAllocator<B, I> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.get() {
            // SAFETY: the caller's contract is passed on.
            Some(slab) => unsafe { slab.alloc(layout) },
            None => core::ptr::null_mut(),
        }
    }

    #[inline]
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
