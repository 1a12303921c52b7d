//! Boundary tags at work: carving a used range out of a free segment (splitting it) and
//! turning a used segment back into free space (coalescing it with both neighbours).
//!
//! These are the only places that take descriptors from the range cache or give them
//! back. Carving takes one descriptor per extra piece (at most two) and the caller has
//! checked they are there (module docs of [`super`], rule 2); coalescing only gives
//! descriptors back. A descriptor is given back only once it is unlinked from the tree
//! and the free lists, which is what keeps the collections' `UnsafeRef`s valid.

use super::RangeAllocator;
use super::segment::{SegRef, Segment, SegmentKind};
use crate::platform::PAGE_SIZE;
use core::ptr::NonNull;
use intrusive_collections::UnsafeRef;

impl RangeAllocator {
    /// A new descriptor from the range cache. The caller checked that one is free.
    pub(super) fn new_segment(&mut self, start: usize, pages: usize, kind: SegmentKind) -> SegRef {
        let slot = self
            .cache
            .alloc()
            .expect("descriptor availability is checked before any change (module docs, rule 2)");
        // SAFETY: `slot` is an unused object slot of the range cache, valid and aligned
        // for a `Segment` (`cache.rs` asserts the sizes).
        unsafe { slot.write(Segment::new(start, pages, kind)) };
        // SAFETY: the segment stays valid until `free_segment` gives the slot back, which
        // happens only once it is unlinked from the tree and the free lists.
        unsafe { UnsafeRef::from_raw(slot.as_ptr()) }
    }

    /// Gives an unlinked descriptor back to the range cache.
    pub(super) fn free_segment(&mut self, segment: SegRef) {
        let ptr = UnsafeRef::into_raw(segment);
        // SAFETY: `ptr` came from `new_segment` (every segment does) and the caller has
        // unlinked it from the tree and the free lists, so nothing refers to it.
        unsafe { self.cache.free(NonNull::new_unchecked(ptr)) };
    }

    /// Takes `pages` pages at `offset` pages into the free segment `free` and makes them a
    /// segment of `kind`, splitting `free` as needed. Returns the new used segment. The
    /// caller checked that enough descriptors are free (one per extra piece).
    pub(super) fn carve(
        &mut self,
        free: SegRef,
        offset: usize,
        pages: usize,
        kind: SegmentKind,
    ) -> SegRef {
        let (start, total) = (free.start(), free.pages());
        debug_assert!(free.is_free() && offset + pages <= total);
        let left = offset;
        let right = total - offset - pages;
        let used_start = start + left * PAGE_SIZE;
        let used_end = used_start + pages * PAGE_SIZE;
        // SAFETY: `free` is a free segment, hence in the free lists, with the page
        // count it was filed with.
        unsafe { self.free.remove(&free) };
        *self.pages_by_kind.of(SegmentKind::Free) -= pages;
        *self.pages_by_kind.of(kind) += pages;
        if left == 0 && right == 0 {
            free.set_kind(kind);
            self.free_segments -= 1;
            free
        } else if left == 0 {
            // [used][free'] : `free` keeps the right part.
            let used = self.new_segment(used_start, pages, kind);
            free.set_extent(used_end, right);
            // SAFETY: `free` is linked in the tree.
            let mut cursor = unsafe { self.tree.cursor_mut_from_ptr(seg_ptr(&free)) };
            cursor.insert_before(used.clone());
            self.free.insert(free);
            self.segments += 1;
            used
        } else {
            // [free'][used] or [free'][used][rest] : `free` keeps the left part.
            let used = self.new_segment(used_start, pages, kind);
            let rest = (right > 0).then(|| self.new_segment(used_end, right, SegmentKind::Free));
            free.set_extent(start, left);
            // SAFETY: `free` is linked in the tree.
            let mut cursor = unsafe { self.tree.cursor_mut_from_ptr(seg_ptr(&free)) };
            cursor.insert_after(used.clone());
            if let Some(rest) = rest {
                cursor.move_next();
                cursor.insert_after(rest.clone());
                self.free.insert(rest);
                self.free_segments += 1;
                self.segments += 1;
            }
            self.free.insert(free);
            self.segments += 1;
            used
        }
    }

    /// Turns the used segment `segment` (already unbacked) into free space, merging it
    /// with free neighbours: the boundary-tag coalescing.
    pub(super) fn release(&mut self, segment: SegRef) {
        debug_assert!(!segment.is_free());
        *self.pages_by_kind.of(segment.kind()) -= segment.pages();
        *self.pages_by_kind.of(SegmentKind::Free) += segment.pages();
        let (prev, next) = {
            // SAFETY: `segment` is linked in the tree.
            let cursor = unsafe { self.tree.cursor_from_ptr(seg_ptr(&segment)) };
            let free_neighbour = |s: &SegRef| s.is_free();
            (
                cursor.peek_prev().clone_pointer().filter(free_neighbour),
                cursor.peek_next().clone_pointer().filter(free_neighbour),
            )
        };
        let (mut start, mut pages) = (segment.start(), segment.pages());
        self.free_segments += 1;
        for neighbour in [prev, next].into_iter().flatten() {
            start = start.min(neighbour.start());
            pages += neighbour.pages();
            // SAFETY: `neighbour` is free, so it is in the free lists with the page count
            // it was filed with, and it is linked in the tree.
            unsafe {
                self.free.remove(&neighbour);
                self.tree.cursor_mut_from_ptr(seg_ptr(&neighbour)).remove();
            }
            self.free_segment(neighbour);
            self.segments -= 1;
            self.free_segments -= 1;
        }
        // The neighbours are gone, so the merged extent keeps the tree ordered.
        segment.set_extent(start, pages);
        segment.set_kind(SegmentKind::Free);
        self.free.insert(segment);
    }
}

/// The address of a segment, as recorded in page owners.
pub(super) fn seg_addr(segment: &SegRef) -> usize {
    seg_ptr(segment).addr()
}

/// A segment reference as the raw pointer the intrusive cursors take. (Its provenance is
/// the segment's 64 bytes, all the cursors touch.)
fn seg_ptr(segment: &Segment) -> *const Segment {
    core::ptr::from_ref(segment)
}
