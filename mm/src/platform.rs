//! The platform seam: everything hardware-shaped that the allocator needs.
//!
//! `mm` knows nothing about x86. The kernel implements [`Platform`] with real page
//! tables; the hosted build (`hosted.rs`) implements it over an arena of host memory
//! so that the very same allocator code runs in unit tests, under Miri and in
//! benchmarks. Later layers add the per-CPU part of the seam (which CPU am I, the
//! interrupt guard, run-on-every-CPU).

/// Size of a page frame and of the unit of the range allocator.
pub const PAGE_SIZE: usize = 4096;

/// A physical address. Kept distinct from virtual addresses (`usize`) on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

/// Why a page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A page-table frame was needed and none was left.
    OutOfMemory,
    /// The virtual page is already mapped.
    AlreadyMapped,
}

/// The machine as the allocator sees it.
///
/// # Safety
///
/// Implementors guarantee that after `map_page(virt, phys, ..)` returns `Ok`, the 4 KiB
/// page at `virt` is readable and writable kernel memory backed by frame `phys` until
/// `unmap_page(virt)`, that nothing else uses that virtual page meanwhile, and that
/// `translate` reports exactly the mappings made through this trait.
pub unsafe trait Platform: Sync {
    /// Maps one 4 KiB page. `alloc_table_frame` supplies zeroed-on-use frames for any
    /// page-table level that does not exist yet (the kernel never frees those).
    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError>;

    /// Unmaps one page and returns the frame it was mapped to, or `None` if it was not
    /// mapped.
    fn unmap_page(&self, virt: usize) -> Option<PhysAddr>;

    /// The frame behind a mapped virtual page, if any.
    fn translate(&self, virt: usize) -> Option<PhysAddr>;

    /// A pointer through which `mm` reads and writes the kernel virtual address `virt`
    /// (the range cache keeps its descriptors in pages it mapped itself).
    ///
    /// Kernel virtual addresses are plain integers, so the default, an integer-to-pointer
    /// cast with exposed provenance, is right for the kernel. A hosted platform whose
    /// "kernel memory" is an allocation of its own overrides it to derive the pointer from
    /// that allocation (`ptr.with_addr(virt)`), which keeps Miri's provenance checks exact.
    /// The pointer's address is `virt`. Calling this is safe; using the pointer is only
    /// sound on a page mapped through this trait and owned by the caller.
    fn pointer_to(&self, virt: usize) -> *mut u8 {
        core::ptr::with_exposed_provenance_mut(virt)
    }
}

// SAFETY: every method forwards to `T`, so a reference upholds exactly the guarantees
// of the platform it points to.
unsafe impl<T: Platform + ?Sized> Platform for &T {
    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError> {
        (**self).map_page(virt, phys, alloc_table_frame)
    }

    fn unmap_page(&self, virt: usize) -> Option<PhysAddr> {
        (**self).unmap_page(virt)
    }

    fn translate(&self, virt: usize) -> Option<PhysAddr> {
        (**self).translate(virt)
    }

    fn pointer_to(&self, virt: usize) -> *mut u8 {
        (**self).pointer_to(virt)
    }
}
