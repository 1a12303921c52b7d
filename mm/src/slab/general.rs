//! The general caches (Linux 2.4's `cache_sizes` and `kmem_cache_sizes_init`): thirteen
//! caches of power-of-two sizes, `size-32` to `size-131072`, each with a DMA twin
//! (`size-32(DMA)` ...) whose slabs come from the DMA zone.
//!
//! They belong to the slab layer, not to kmalloc above it, because the slab layer and
//! the per-CPU layer need them before any kmalloc exists: off-slab caches keep their slab
//! descriptors in the small ones, and the per-CPU arrays are objects of them (2.4's own
//! knot: `cpucache_t` is kmalloc'ed). kmalloc only picks a row of this table for a size.
//!
//! The caches are created at start-up in ascending order, because the large ones keep
//! their slab descriptors in the small ones. Their objects are aligned to their size up
//! to a page (a 256-byte object is 256-byte aligned, any object of 4 KiB or more is
//! page-aligned), which is what lets `GlobalAlloc` serve any alignment up to a page.

use super::cache::{CacheFront, SlabCache};
use super::caches::SlabCaches;
use super::{SlabBackend, SlabError, SlabFlags};
use crate::platform::{InterruptControl, PAGE_SIZE};
use core::ptr::NonNull;

/// The smallest size class.
pub const KMALLOC_MIN: usize = 32;
/// The largest size class; kmalloc serves larger requests with whole ranges.
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

/// The class of a `size`-byte request (the index of the smallest class that holds it),
/// if a class holds it.
#[inline]
pub fn size_class(size: usize) -> Option<usize> {
    if size > KMALLOC_MAX {
        return None;
    }
    let bits = (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize;
    Some(bits.saturating_sub(KMALLOC_MIN.trailing_zeros() as usize))
}

/// One row of the size table (2.4's `cache_sizes_t`).
pub(super) struct SizeClass<I: InterruptControl, F: CacheFront> {
    pub normal: Option<NonNull<SlabCache<I, F>>>,
    pub dma: Option<NonNull<SlabCache<I, F>>>,
}

impl<I: InterruptControl, F: CacheFront> SizeClass<I, F> {
    pub const EMPTY: Self = Self {
        normal: None,
        dma: None,
    };
}

impl<B: SlabBackend, I: InterruptControl, F: CacheFront> SlabCaches<B, I, F> {
    /// Creates the general caches, smallest first (2.4's `kmem_cache_sizes_init`).
    pub(super) fn create_general_caches(&mut self) -> Result<(), SlabError> {
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

    /// The general cache of class `class` (see [`size_class`]), from the DMA zone with
    /// `dma`; `None` during the bootstrap, before it exists.
    #[inline]
    pub fn general_cache(&self, class: usize, dma: bool) -> Option<&SlabCache<I, F>> {
        let row = self.sizes.get(class)?;
        let cache = if dma { row.dma } else { row.normal };
        // SAFETY: general caches live as long as the slab layer.
        cache.map(|ptr| unsafe { &*ptr.as_ptr() })
    }

    /// The smallest normal-zone general cache with objects of at least `bytes` bytes.
    pub fn general_cache_for(&self, bytes: usize) -> Option<&SlabCache<I, F>> {
        self.general_cache(size_class(bytes)?, false)
    }

    /// The general caches that may hold off-slab descriptors: the on-slab, normal-zone
    /// ones (so that growing one never needs a descriptor from elsewhere).
    fn desc_caches(&self) -> impl Iterator<Item = (NonNull<SlabCache<I, F>>, &SlabCache<I, F>)> {
        self.sizes
            .iter()
            .filter_map(|class| class.normal)
            .filter_map(|ptr| {
                // SAFETY: general caches live as long as the slab layer.
                let cache = unsafe { ptr.as_ref() };
                (!cache.geo.off_slab).then_some((ptr, cache))
            })
    }

    /// The largest descriptor a descriptor cache can hold (0 before the general caches).
    pub(super) fn offslab_desc_max(&self) -> usize {
        self.desc_caches()
            .map(|(_, c)| c.geo.usable)
            .max()
            .unwrap_or(0)
    }

    /// The smallest descriptor cache for `bytes`-byte descriptors.
    pub(super) fn desc_cache_for(&self, bytes: usize) -> Option<NonNull<SlabCache<I, F>>> {
        self.desc_caches()
            .find(|(_, c)| c.geo.usable >= bytes)
            .map(|(ptr, _)| ptr)
    }
}
