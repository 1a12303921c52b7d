//! Giving range-cache slabs back: compaction of the descriptors, then release.
//!
//! The range cache grows when the reserve runs low, and with slabs of 63 descriptors
//! scattered by the free order, a slab rarely empties by itself: the descriptor of the
//! one free segment that remains after a burst can sit in any slab. So shrinking moves
//! descriptors instead of waiting for luck:
//!
//! 1. Mark slabs for eviction, newest first, while the slabs that stay have room for
//!    every live descriptor of the marked ones plus [`LOW_WATER`] spare
//!    (`RangeCache::mark_for_eviction`). Marked slabs stop serving allocations.
//! 2. Walk the tree once; copy each segment whose descriptor is in a marked slab into a
//!    fresh descriptor, and swap the copy in: in the tree (same key, same position), in
//!    its free list if free, and in the owner of each frame it maps if mapped (so that
//!    `virt -> frame -> owner` keeps pointing at a live descriptor).
//! 3. Now the marked slabs are empty: unlink each from the cache, then delete its
//!    one-page internal range like any mapped range (unmap, free the frame, coalesce).
//!    Coalescing gives descriptors back, never takes any, and those it gives back are
//!    in slabs that stay.
//!
//! After `shrink`, a window whose ranges were all deleted is back to its state after
//! bootstrap: the pinned bootstrap slab alone, one free segment per free span, and every
//! frame of the cache back in the page allocator. Cost: O(segments + slabs + pages of
//! the moved mapped segments), under the range lock. Linux 2.4 frees slabs in
//! `kmem_cache_shrink`/`kmem_cache_reap` at similar moments (memory pressure, explicit
//! calls); the slab layer of the next issue will call this from its reaper.

use super::segment::{Segment, SegmentKind};
use super::{Backing, LOW_WATER, RangeAllocator};
use crate::page::PageOwner;
use crate::platform::Platform;
use intrusive_collections::UnsafeRef;

impl RangeAllocator {
    /// Releases every slab of the range cache that compaction can empty while keeping
    /// the reserve; returns how many were released.
    pub(crate) fn shrink<P: Platform>(&mut self, backing: &Backing<'_, '_, P>) -> usize {
        if self.cache.mark_for_eviction(LOW_WATER) == 0 {
            return 0;
        }
        self.move_out_of_marked_slabs(backing);
        let mut released = 0;
        while let Some(base) = self.cache.take_evicted() {
            let slab = self
                .tree
                .find(&base)
                .clone_pointer()
                .expect("every cache slab is an internal range");
            debug_assert_eq!(slab.kind(), SegmentKind::Internal);
            // As in `del_range`: the shootdown inside comes before the frames and the
            // addresses go back.
            backing.unmap_release(base, slab.pages());
            self.release(slab);
            released += 1;
        }
        // Step 2 moved every live descriptor, so no marked slab is left.
        let left = self.cache.cancel_eviction();
        debug_assert_eq!(left, 0);
        released
    }

    /// Step 2: every segment whose descriptor is in a slab marked for eviction gets a new
    /// descriptor from a slab that stays.
    fn move_out_of_marked_slabs<P: Platform>(&mut self, backing: &Backing<'_, '_, P>) {
        let Self {
            tree, free, cache, ..
        } = self;
        let mut cursor = tree.front_mut();
        // `get_ptr`, not `NonNull::from(get())`: the pointer must keep the provenance of
        // the whole slab page (it came from the cache), because `is_evicting` and `free`
        // reach the slab header through it; one derived from a `&Segment` may only touch
        // that segment's 64 bytes (Miri's Stacked Borrows catches the difference).
        while let Some(old) = cursor.get_ptr() {
            // SAFETY: every segment in the tree is a live object of the range cache.
            if !unsafe { cache.is_evicting(old) } {
                cursor.move_next();
                continue;
            }
            // SAFETY: `old` is a live segment (it is in the tree).
            let segment = unsafe { old.as_ref() };
            let (start, pages, kind) = (segment.start(), segment.pages(), segment.kind());
            let slot = cache
                .alloc()
                .expect("mark_for_eviction kept room for every live descriptor");
            // SAFETY: `slot` is an unused object slot of the cache, valid for a `Segment`.
            unsafe { slot.write(Segment::new(start, pages, kind)) };
            // SAFETY: as in `new_segment`: valid until freed, freed only once unlinked.
            let new = unsafe { UnsafeRef::from_raw(slot.as_ptr()) };
            if kind == SegmentKind::Free {
                // SAFETY: `old` is free, so it is in the free lists, filed by its (unchanged)
                // page count; `new` is unlinked and has the same count.
                unsafe { free.replace(old.as_ref(), new.clone()) };
            }
            if kind.is_mapped() {
                let (from, to) = (
                    PageOwner::Range(old.addr().get()),
                    PageOwner::Range(slot.addr().get()),
                );
                backing.retarget(start, pages, from, to);
            }
            let replaced = cursor.replace_with(new);
            debug_assert!(replaced.is_ok());
            // SAFETY: `old` is now unlinked from the tree, the free lists and every frame
            // owner, so nothing refers to it; it came from this cache.
            unsafe { cache.free(old) };
            cursor.move_next();
        }
    }
}
