//! The range allocator's invariants, checked all at once (tests and kernel self-tests).
//!
//! Tiling: the segments of the tree cover the window exactly, in order, none empty.
//! Coalescing: no two free segments are adjacent. Free lists: a segment is listed iff it
//! is free, in the class of its size, and the bitmap mirrors the lists. Counters: pages
//! per kind and segment counts match a recount. Descriptors: every segment is a live
//! object of the range cache, one internal page per cache slab, and the cache's own
//! counts agree. Ownership: every page of a mapped segment is mapped to a frame whose
//! owner is that very segment (or a slab the slab layer carved from it), which is what
//! makes the O(1) lookup sound.

use super::{Backing, PagesByKind, RangeAllocator};
use crate::page::PageOwner;
use crate::platform::{PAGE_SIZE, Platform};

impl RangeAllocator {
    /// Checks every invariant (tiling, coalescing, free lists, counters, descriptors in
    /// the cache, mapped pages owned by their segment); panics on the first one broken.
    /// O(segments x slabs + mapped pages): for tests and kernel self-tests.
    pub(crate) fn check_invariants<P: Platform>(&self, backing: &Backing<'_, '_, P>) {
        let mut expected_start = self.window_start;
        let mut previous_free = false;
        let mut tally = PagesByKind::default();
        let (mut segments, mut free_segments) = (0, 0);
        for segment in self.tree.iter() {
            let start = segment.start();
            assert_eq!(start, expected_start, "segments must tile the window");
            assert!(segment.pages() > 0, "empty segment at {start:#x}");
            assert!(
                !(previous_free && segment.is_free()),
                "adjacent free segments at {start:#x}"
            );
            assert_eq!(
                segment.in_free_list(),
                segment.is_free(),
                "free-list membership at {start:#x}"
            );
            assert!(
                self.cache.owns(segment),
                "descriptor of {start:#x} is not in the range cache"
            );
            if segment.kind().is_mapped() {
                let me = PageOwner::Range(core::ptr::from_ref(segment).addr());
                for page in 0..segment.pages() {
                    let virt = start + page * PAGE_SIZE;
                    // The slab layer may have claimed the page of a range it got from
                    // us (`Heap::set_slab_owner`); any other owner is a bug.
                    let owner = backing.owner_of(virt);
                    assert!(
                        owner == Some(me) || matches!(owner, Some(PageOwner::Slab(_))),
                        "owner of the frame at {virt:#x}: {owner:?}"
                    );
                }
            }
            *tally.of(segment.kind()) += segment.pages();
            segments += 1;
            free_segments += usize::from(segment.is_free());
            previous_free = segment.is_free();
            expected_start = segment.end();
        }
        assert_eq!(
            expected_start,
            self.window_start + self.window_pages * PAGE_SIZE,
            "window end"
        );
        assert_eq!(self.free.check(), free_segments, "free lists vs tree");
        assert_eq!(
            (segments, free_segments),
            (self.segments, self.free_segments),
            "segment counters"
        );
        let p = &self.pages_by_kind;
        assert_eq!(
            (tally.free, tally.allocated, tally.reserved, tally.internal),
            (p.free, p.allocated, p.reserved, p.internal),
            "page counters"
        );
        assert_eq!(
            tally.internal,
            self.cache.slab_count(),
            "one internal page per cache slab"
        );
        assert_eq!(self.cache.check(), segments, "live descriptors vs segments");
    }
}
