//! Segregated free lists: vmem's instant fit.
//!
//! Free segments are filed by size class: class k holds the free segments of
//! 2^k..2^(k+1)-1 pages. A bitmap has bit k set iff list k is non-empty. To allocate n
//! pages, every segment of class `ceil(log2 n)` and above is large enough, so the first
//! segment of the lowest non-empty such class fits, found with one mask and one
//! `trailing_zeros`: O(1), whatever the number of free segments (Bonwick & Adams, "Magazines
//! and Vmem", 2001, section 4.4). The price is that a 2^k+1-page request never takes a
//! 2^k+1-page segment while a larger class has one; when no larger class has any, we fall
//! back to a first-fit scan of class `floor(log2 n)`, as vmem's `vmem_xalloc` does, so that
//! a request fails only when no free segment is large enough.
//!
//! Lists are LIFO (`push_front`): a segment freed recently is reused first, which keeps
//! the working set of the window small.
//!
//! Invariant: a segment is in list `class_of(pages)` iff it is free; the bitmap mirrors
//! the lists' emptiness. Concurrency: under the range lock, like every range structure.

use super::segment::{FreeAdapter, SegRef, Segment};
use crate::platform::PAGE_SIZE;
use intrusive_collections::LinkedList;

/// Number of size classes: one per bit of a page count.
pub(crate) const CLASSES: usize = usize::BITS as usize;

/// The class a free segment of `pages` pages is filed in: `floor(log2 pages)`.
pub(crate) fn class_of(pages: usize) -> usize {
    pages.ilog2() as usize
}

/// The lowest class all of whose segments have at least `pages` pages.
fn instant_class(pages: usize) -> usize {
    class_of(pages) + usize::from(!pages.is_power_of_two())
}

pub(crate) struct FreeLists {
    lists: [LinkedList<FreeAdapter>; CLASSES],
    nonempty: usize,
}

impl FreeLists {
    pub fn new() -> Self {
        Self {
            lists: core::array::from_fn(|_| LinkedList::new(FreeAdapter::new())),
            nonempty: 0,
        }
    }

    /// Files a free segment (not in any free list) in its class.
    pub fn insert(&mut self, segment: SegRef) {
        let class = class_of(segment.pages());
        self.lists[class].push_front(segment);
        self.nonempty |= 1 << class;
    }

    /// Takes `segment` out of its list.
    ///
    /// # Safety
    ///
    /// `segment` is linked in these lists, and its page count has not changed since it
    /// was inserted (the count selects the list).
    pub unsafe fn remove(&mut self, segment: &Segment) {
        let class = class_of(segment.pages());
        // SAFETY: by this function's contract `segment` is linked in `lists[class]`.
        let mut cursor = unsafe { self.lists[class].cursor_mut_from_ptr(segment) };
        cursor.remove();
        if self.lists[class].is_empty() {
            self.nonempty &= !(1 << class);
        }
    }

    /// Puts `new` (unlinked, same page count) in the list position of `old`.
    ///
    /// # Safety
    ///
    /// As for [`remove`](Self::remove), for `old`.
    pub unsafe fn replace(&mut self, old: &Segment, new: SegRef) {
        debug_assert_eq!(old.pages(), new.pages());
        let class = class_of(old.pages());
        // SAFETY: by this function's contract `old` is linked in `lists[class]`.
        let mut cursor = unsafe { self.lists[class].cursor_mut_from_ptr(old) };
        let replaced = cursor.replace_with(new);
        debug_assert!(replaced.is_ok());
    }

    /// A free segment of at least `pages` pages (`pages > 0`), if there is one: instant
    /// fit, then first fit in the class below (see the module docs).
    pub fn find(&self, pages: usize) -> Option<SegRef> {
        let class = instant_class(pages);
        if class < CLASSES {
            let candidates = self.nonempty & (usize::MAX << class);
            if candidates != 0 {
                let list = &self.lists[candidates.trailing_zeros() as usize];
                return list.front().clone_pointer();
            }
        }
        let mut cursor = self.lists[class_of(pages)].front();
        while let Some(segment) = cursor.get() {
            if segment.pages() >= pages {
                return cursor.clone_pointer();
            }
            cursor.move_next();
        }
        None
    }

    /// A free segment holding `pages` pages (`pages > 0`) from an address that is a
    /// multiple of `align` bytes (a power of two, at least a page), and the offset in
    /// pages of that address in the segment. Instant fit for `pages` plus the most
    /// padding an alignment can need (any segment that large holds an aligned run); when
    /// no class has one, a first-fit scan of the classes that could still hold the run
    /// at a lucky address, so that a request fails only when no free segment can hold it.
    pub fn find_aligned(&self, pages: usize, align: usize) -> Option<(SegRef, usize)> {
        let offset_in = |segment: &Segment| {
            let aligned = segment.start().checked_next_multiple_of(align)?;
            let offset = (aligned - segment.start()) / PAGE_SIZE;
            (offset.checked_add(pages)? <= segment.pages()).then_some(offset)
        };
        let padded = pages.checked_add(align / PAGE_SIZE - 1);
        // A segment of `padded` pages always holds the run; `offset_in` only finds where.
        let instant = padded.and_then(|padded| self.find(padded));
        if let Some(found) = instant.and_then(|segment| Some((offset_in(&segment)?, segment))) {
            return Some((found.1, found.0));
        }
        let highest = padded.map_or(CLASSES - 1, class_of);
        for list in &self.lists[class_of(pages)..=highest] {
            let mut cursor = list.front();
            while let Some(segment) = cursor.get() {
                if let Some(offset) = offset_in(segment) {
                    return Some((cursor.clone_pointer()?, offset));
                }
                cursor.move_next();
            }
        }
        None
    }

    /// Checks the lists against the tree's view: every listed segment is free and in
    /// the right class, the bitmap is exact. Returns the number of listed segments.
    pub fn check(&self) -> usize {
        let mut count = 0;
        for (class, list) in self.lists.iter().enumerate() {
            assert_eq!(
                self.nonempty & (1 << class) != 0,
                !list.is_empty(),
                "bitmap bit {class}"
            );
            for segment in list.iter() {
                assert!(
                    segment.is_free(),
                    "used segment {:#x} in a free list",
                    segment.start()
                );
                assert_eq!(
                    class_of(segment.pages()),
                    class,
                    "segment {:#x} misfiled",
                    segment.start()
                );
                count += 1;
            }
        }
        count
    }

    /// Forgets every segment without touching them (for `Drop`: the segments' memory
    /// may already be gone).
    pub fn forget_all(&mut self) {
        for list in &mut self.lists {
            list.fast_clear();
        }
        self.nonempty = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::segment::SegmentKind;
    use super::*;
    use intrusive_collections::UnsafeRef;

    #[test]
    fn find_is_instant_fit_then_first_fit_in_the_class_below() {
        let three = Segment::new(0x1000, 3, SegmentKind::Free);
        let eight = Segment::new(0x9000, 8, SegmentKind::Free);
        let mut lists = FreeLists::new();
        // SAFETY: the segments outlive every use the lists make of them (`forget_all`).
        unsafe {
            lists.insert(UnsafeRef::from_raw(core::ptr::from_ref(&three)));
            lists.insert(UnsafeRef::from_raw(core::ptr::from_ref(&eight)));
        }
        let start = |s: Option<SegRef>| s.map(|s| s.start());
        assert_eq!(start(lists.find(3)), Some(0x9000)); // class 2+ -> the 8
        assert_eq!(start(lists.find(2)), Some(0x1000)); // class 1 -> the 3
        assert_eq!(start(lists.find(9)), None);
        assert_eq!(lists.check(), 2);
        // SAFETY: `eight` is in the lists, filed with its current size.
        unsafe { lists.remove(&eight) };
        assert_eq!(start(lists.find(3)), Some(0x1000)); // fallback scan of class 1
        assert_eq!(start(lists.find(4)), None);
        assert_eq!(lists.check(), 1);
        lists.forget_all();
    }

    #[test]
    fn classes_are_powers_of_two() {
        assert_eq!([1, 2, 3, 4, 7, 8, 9].map(class_of), [0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(
            [1, 2, 3, 4, 7, 8, 9].map(instant_class),
            [0, 1, 2, 2, 3, 3, 4]
        );
        assert_eq!(instant_class(usize::MAX), CLASSES);
    }
}
