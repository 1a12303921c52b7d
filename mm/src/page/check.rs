//! The page allocator's invariants, checked all at once (tests and kernel self-tests).
//!
//! Free lists: every listed block is aligned to its order, inside one span of its zone,
//! and headed by a free descriptor of that order. Descriptors: walking each span block by
//! block, every frame agrees with its block (state, tail marker, no references on
//! tails), free blocks have no references and no owner and are fully coalesced (their
//! buddy is not a free block of the same order), allocated blocks have a reference.
//! Counters: free frames and blocks per zone and order, reserved frames, match a recount.

use super::descriptor::TAIL;
use super::{MAX_ORDER, ORDERS, PageAllocator, PageOwner, PageState, Zone};

impl PageAllocator<'_> {
    /// Checks every invariant of the descriptors and free lists; panics on the first one
    /// broken. O(frames): a debugging aid for tests and kernel self-tests.
    pub fn check_invariants(&self) {
        let mut listed = [[0usize; ORDERS]; 2];
        for zone in Zone::ALL {
            for (order, count) in listed[zone.index()].iter_mut().enumerate() {
                for head in self.areas[zone.index()].list(self.descs, order) {
                    let span = self.spans.by_index(head);
                    let pfn = span.pfn_of(head);
                    assert_eq!(span.zone, zone, "block {pfn:#x} listed in the wrong zone");
                    assert_eq!(pfn % (1 << order), 0, "free block {pfn:#x} misaligned");
                    assert!(
                        pfn + (1 << order) <= span.end_pfn(),
                        "free block {pfn:#x} leaves its span"
                    );
                    assert!(
                        self.descs[head as usize].is_free_head(order),
                        "bad free head {pfn:#x}"
                    );
                    *count += 1;
                }
            }
        }
        let mut free = [0usize; 2];
        let mut reserved = 0;
        for span in self.spans.as_slice() {
            let mut pfn = span.start_pfn;
            while pfn < span.end_pfn() {
                let d = &self.descs[span.index_of(pfn) as usize];
                let Some(order) = d.block_order() else {
                    assert_eq!(
                        d.state(),
                        PageState::Reserved,
                        "frame {pfn:#x}: tail outside a block"
                    );
                    reserved += 1;
                    pfn += 1;
                    continue;
                };
                let len = 1u64 << order;
                assert!(
                    pfn + len <= span.end_pfn(),
                    "block {pfn:#x} leaves its span"
                );
                for tail in pfn + 1..pfn + len {
                    let t = &self.descs[span.index_of(tail) as usize];
                    assert_eq!(
                        t.state(),
                        d.state(),
                        "frame {tail:#x} disagrees with its block"
                    );
                    assert_eq!(t.order_raw(), TAIL, "frame {tail:#x} should be a tail");
                    assert_eq!(t.refcount(), 0, "tail {tail:#x} has references");
                }
                match d.state() {
                    PageState::Free => {
                        assert_eq!(d.refcount(), 0, "free block {pfn:#x} has references");
                        assert_eq!(
                            d.owner(),
                            PageOwner::None,
                            "free block {pfn:#x} has an owner"
                        );
                        // Fully coalesced: the buddy is not a free block of the same order.
                        let buddy = pfn ^ len;
                        if order < MAX_ORDER
                            && buddy >= span.start_pfn
                            && buddy + len <= span.end_pfn()
                        {
                            let b = &self.descs[span.index_of(buddy) as usize];
                            assert!(
                                !b.is_free_head(order),
                                "free buddies {pfn:#x}/{buddy:#x} not merged"
                            );
                        }
                        free[span.zone.index()] += len as usize;
                    }
                    PageState::Allocated => {
                        assert!(d.refcount() >= 1, "allocated {pfn:#x} unreferenced")
                    }
                    PageState::Reserved => unreachable!("reserved frames are tails"),
                }
                pfn += len;
            }
        }
        for zone in Zone::ALL {
            let area = &self.areas[zone.index()];
            assert_eq!(
                area.frames(),
                free[zone.index()],
                "free frame count of {zone:?}"
            );
            for (order, &n) in listed[zone.index()].iter().enumerate() {
                assert_eq!(
                    area.blocks(order),
                    n,
                    "block count of {zone:?} order {order}"
                );
            }
        }
        assert_eq!(reserved, self.reserved, "reserved frame count");
    }
}
