//! The owner table: from any address of the heap window to the cache and slab that own
//! its page, in O(1) and without a lock (2.4's `GET_PAGE_CACHE` / `GET_PAGE_SLAB`, which
//! read the `struct page` found by `virt_to_page`).
//!
//! One [`PageEntry`] of two words per page of the window, in a zeroed, mapped range
//! that the slab layer allocates for itself when it starts (16 bytes per 4 KiB page of
//! window, 0.4% of the window's size), followed by the live map (`live.rs`: one bit per
//! word of the window, set while an object starting there is in a user's hands):
//!
//! | `cache`    | `slab`                 | the page is                          |
//! |------------|------------------------|--------------------------------------|
//! | null       | null                   | not a slab page, not a large kmalloc |
//! | a cache    | its slab's descriptor  | part of a slab of that cache         |
//! | [`LARGE`]  | the range's first page | the first page of a kmalloc larger than 128 K |
//!
//! **Why not the page descriptors?** The page allocator's descriptors have a
//! `PageOwner::Slab` slot for exactly this, and a kernel with a direct map would use it
//! (2.4 does). Here the heap window is not direct-mapped: reaching the descriptor of a
//! virtual address takes a page-table walk (`Platform::translate`) and the page
//! allocator's lock, a global lock on every `kfree`. This table is indexed by the
//! virtual page itself, needs no lock to read, and gives the *cache* first, whose lock
//! then protects the slab word (see below). (The `Heap` API also offers no way to set a
//! frame's owner from outside its module yet.)
//!
//! # Concurrency
//!
//! The words of the pages of a slab are written only under the lock of the cache that
//! owns (or is about to own, or just owned) the slab: when the slab is linked into the
//! cache, and when it is unlinked. So a reader that takes the `cache` word without a
//! lock, then locks that cache and finds the `cache` word unchanged, may trust the
//! `slab` word: the slab is alive and cannot go away while it holds the lock. A reader
//! that finds the word changed retries with the new value. The `LARGE` entries are
//! claimed by compare-and-swap, so two frees of one large allocation cannot both win.

use super::live::LiveMap;
use super::{SlabBackend, SlabError};
use crate::platform::PAGE_SIZE;
use crate::sync::atomic::{AtomicPtr, Ordering};
use core::ptr::NonNull;

/// The `cache` word of the first page of a large kmalloc (not a valid cache address).
pub const LARGE: *mut u8 = core::ptr::without_provenance_mut(1);

/// What the table knows about one page of the window.
#[repr(C)]
pub struct PageEntry {
    /// The owning cache (a `SlabCache`), [`LARGE`], or null.
    pub cache: AtomicPtr<u8>,
    /// The slab descriptor, the large range's start, or null.
    pub slab: AtomicPtr<u8>,
}

/// The table. See the [module docs](self).
pub struct OwnerTable {
    window_start: usize,
    window_pages: usize,
    entries: NonNull<PageEntry>,
    /// The live map (see `live.rs`), whose directory follows the entries.
    pub live: LiveMap,
    /// The range holding the table and the live map.
    table_start: usize,
}

impl OwnerTable {
    /// Allocates a zeroed table, and the live map's directory after it, covering the
    /// backend's whole window.
    pub fn new<B: SlabBackend>(backend: &B) -> Result<Self, SlabError> {
        let (window_start, window_pages) = backend.window();
        // The live map's directory follows the entries.
        let entry_bytes = window_pages * core::mem::size_of::<PageEntry>();
        let bytes = entry_bytes + LiveMap::directory_bytes(window_pages);
        let table_start = backend.alloc_pages(bytes.div_ceil(PAGE_SIZE), false, true)?;
        let table = NonNull::new(backend.pointer_to(table_start)).ok_or(SlabError::OutOfMemory)?;
        let entries: NonNull<PageEntry> = table.cast();
        // SAFETY: the range is zeroed, page-aligned (so `entry_bytes`, a multiple of 16,
        // keeps the directory's pointers aligned), holds the directory after the entries,
        // is ours alone, and is given back only after the table is dropped.
        let live = match unsafe {
            LiveMap::new(backend, window_start, window_pages, table.add(entry_bytes))
        } {
            Ok(live) => live,
            Err(error) => {
                backend.free_pages(table_start);
                return Err(error);
            }
        };
        // Zeroed memory is a table of null atomics for `core`'s atomics, not for loom's
        // (each is a handle to the model's record of it): make each entry for real.
        #[cfg(loom)]
        for page in 0..window_pages {
            // SAFETY: the table's range holds `window_pages` entries and is ours alone.
            unsafe {
                entries.add(page).write(PageEntry {
                    cache: AtomicPtr::new(core::ptr::null_mut()),
                    slab: AtomicPtr::new(core::ptr::null_mut()),
                });
            }
        }
        Ok(Self {
            window_start,
            window_pages,
            entries,
            live,
            table_start,
        })
    }

    /// The start of the table's own range, the live map's too (to give it back).
    pub fn table_start(&self) -> usize {
        self.table_start
    }

    /// The entry of the page containing `addr`, if it is in the window.
    #[inline]
    pub fn entry(&self, addr: usize) -> Option<&PageEntry> {
        // Below the window, the subtraction wraps to a page far past its end: one compare.
        let page = addr.wrapping_sub(self.window_start) / PAGE_SIZE;
        if page >= self.window_pages {
            return None;
        }
        // SAFETY: the table has `window_pages` entries, zeroed (null pointers: valid
        // atomics) when it was allocated, and lives as long as `self`; entries are only
        // ever accessed through atomics.
        Some(unsafe { self.entries.add(page).as_ref() })
    }

    /// Takes the live mark of `addr` (see `live.rs`) and, when it was set, returns the
    /// entry of its page: a free's one lookup of each table.
    #[inline]
    pub fn take_live(&self, addr: usize) -> Option<&PageEntry> {
        if !self.live.take(addr) {
            return None;
        }
        let page = (addr - self.window_start) / PAGE_SIZE;
        debug_assert!(
            page < self.window_pages,
            "{addr:#x} marked outside the window"
        );
        // SAFETY: marks are set only at objects of slabs, whose pages lie in the window,
        // so `page < window_pages`; otherwise as in `entry`.
        Some(unsafe { self.entries.add(page).as_ref() })
    }

    /// Records `cache` and `slab` for the `pages` pages from `start` (a slab being linked
    /// into `cache`, under its lock).
    pub fn set(&self, start: usize, pages: usize, cache: *mut u8, slab: *mut u8) {
        for i in 0..pages {
            if let Some(e) = self.entry(start + i * PAGE_SIZE) {
                e.slab.store(slab, Ordering::Relaxed);
                e.cache.store(cache, Ordering::Release);
            }
        }
    }

    /// Calls `f(page address, cache, slab)` for every page whose entry names a cache (a
    /// scan of the whole table: checks only).
    pub fn for_each_named(&self, mut f: impl FnMut(usize, *mut u8, *mut u8)) {
        for page in 0..self.window_pages {
            let addr = self.window_start + page * PAGE_SIZE;
            let Some(e) = self.entry(addr) else { continue };
            let cache = e.cache.load(Ordering::Relaxed);
            if !cache.is_null() && cache != LARGE {
                f(addr, cache, e.slab.load(Ordering::Relaxed));
            }
        }
    }

    /// Marks the page of `addr` as the first of a large block whose run starts at `base`
    /// (its entry: `LARGE`, then the run's start). False when `addr` is outside the
    /// window.
    pub fn mark_large(&self, addr: usize, base: *mut u8) -> bool {
        let Some(entry) = self.entry(addr) else {
            return false;
        };
        entry.slab.store(base, Ordering::Relaxed);
        entry.cache.store(LARGE, Ordering::Release);
        true
    }

    /// Claims the large block marked at the page-aligned `addr` by compare-and-swap (of
    /// two racing claims, one wins) and returns the start of its run.
    pub fn claim_large(&self, addr: usize) -> Option<usize> {
        let entry = self
            .entry(addr)
            .filter(|_| addr.is_multiple_of(PAGE_SIZE))?;
        if crate::seeded::on("large_claim_check_then_store") {
            // The seeded defect: a check, then a store, where two racing `kfree`s can
            // both see `LARGE`.
            if entry.cache.load(Ordering::Acquire) != LARGE {
                return None;
            }
            entry.cache.store(core::ptr::null_mut(), Ordering::Release);
            return Some(entry.slab.load(Ordering::Relaxed).addr());
        }
        entry
            .cache
            .compare_exchange(
                LARGE,
                core::ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(
            entry
                .slab
                .swap(core::ptr::null_mut(), Ordering::Relaxed)
                .addr(),
        )
    }

    /// Forgets the `pages` pages from `start` (a slab unlinked, under its cache's lock).
    pub fn clear(&self, start: usize, pages: usize) {
        self.set(start, pages, core::ptr::null_mut(), core::ptr::null_mut());
    }
}
