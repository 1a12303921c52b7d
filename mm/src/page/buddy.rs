//! The binary buddy system of one zone: free lists of 2^order-frame blocks.
//!
//! A block of order k starts at a frame number that is a multiple of 2^k (so physical
//! blocks are naturally aligned, which DMA engines and large pages like), and lies inside
//! one [`Span`]. Its buddy is the block whose frame number differs in bit k only; two free
//! buddies of order k merge into one block of order k+1, as long as the merged block is
//! still inside the span and k < [`MAX_ORDER`]. Freeing merges eagerly, so the free lists
//! are always fully coalesced: a free block is never next to a free buddy of its order.
//! That makes the shape of the free lists a function of the set of free frames only, which
//! the tests use ("after freeing everything, the lists are back to their initial shape").
//!
//! The lists are doubly linked through descriptor indices (`next`/`prev` in the head
//! descriptor of each free block), so unlinking a buddy during a merge is O(1). Nothing is
//! ever written into the frames themselves.
//!
//! Costs: allocation O(MAX_ORDER) list operations plus O(2^order) descriptor writes (each
//! frame's state is recorded); freeing the same.
//!
//! Concurrency: plain data under the page lock, like the rest of [`super`].

use super::descriptor::{DescIndex, NIL, PageDescriptor};
use super::region::Span;
use super::{MAX_ORDER, ORDERS};

/// The free lists of one zone.
#[derive(Debug)]
pub(super) struct FreeArea {
    heads: [DescIndex; ORDERS],
    blocks: [usize; ORDERS],
    frames: usize,
}

impl FreeArea {
    pub const fn new() -> Self {
        Self {
            heads: [NIL; ORDERS],
            blocks: [0; ORDERS],
            frames: 0,
        }
    }

    /// Free frames in this zone.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Free blocks of `order` in this zone.
    pub fn blocks(&self, order: usize) -> usize {
        self.blocks[order]
    }

    /// True when a block of `order` or larger is free.
    pub fn can_satisfy(&self, order: usize) -> bool {
        self.heads[order..].iter().any(|&h| h != NIL)
    }

    /// The heads of the free blocks of `order`, front to back.
    pub fn list<'a>(
        &self,
        descs: &'a [PageDescriptor],
        order: usize,
    ) -> impl Iterator<Item = DescIndex> + 'a {
        let mut next = self.heads[order];
        core::iter::from_fn(move || {
            let current = next;
            (current != NIL).then(|| {
                next = descs[current as usize].next;
                current
            })
        })
    }

    /// Makes `head` the first frame of a free block of `order` and links it in front.
    /// The block's other frames must already be marked free tails.
    fn push(&mut self, descs: &mut [PageDescriptor], head: DescIndex, order: usize) {
        let old = self.heads[order];
        let d = &mut descs[head as usize];
        d.make_free(Some(order));
        d.prev = NIL;
        d.next = old;
        if old != NIL {
            descs[old as usize].prev = head;
        }
        self.heads[order] = head;
        self.blocks[order] += 1;
        self.frames += 1 << order;
    }

    /// Unlinks the free block starting at `head` from the list of `order`.
    fn unlink(&mut self, descs: &mut [PageDescriptor], head: DescIndex, order: usize) {
        let (prev, next) = {
            let d = &descs[head as usize];
            debug_assert!(d.is_free_head(order));
            (d.prev, d.next)
        };
        if prev == NIL {
            self.heads[order] = next;
        } else {
            descs[prev as usize].next = next;
        }
        if next != NIL {
            descs[next as usize].prev = prev;
        }
        let d = &mut descs[head as usize];
        (d.next, d.prev) = (NIL, NIL);
        self.blocks[order] -= 1;
        self.frames -= 1 << order;
    }
}

/// Hands out a block of `order`, splitting the smallest larger block if needed, and marks
/// its frames allocated (the head with one reference). `None` if the zone has no block of
/// `order` or larger.
pub(super) fn alloc(
    area: &mut FreeArea,
    descs: &mut [PageDescriptor],
    order: usize,
) -> Option<DescIndex> {
    let mut from = (order..ORDERS).find(|&o| area.heads[o] != NIL)?;
    let head = area.heads[from];
    area.unlink(descs, head, from);
    // Split: keep the lower half, give the upper half back, until the order fits. The
    // halves stay inside the span because the whole block was.
    while from > order {
        from -= 1;
        area.push(descs, head + (1 << from), from);
    }
    let block = &mut descs[head as usize..][..1 << order];
    for (i, d) in block.iter_mut().enumerate() {
        d.make_allocated((i == 0).then_some(order));
    }
    Some(head)
}

/// Returns the block of `order` starting at `head` (in `span`) to the free lists, merging
/// it with free buddies as far as possible.
pub(super) fn free(
    area: &mut FreeArea,
    descs: &mut [PageDescriptor],
    span: &Span,
    head: DescIndex,
    order: usize,
) {
    for d in &mut descs[head as usize..][..1 << order] {
        d.make_free(None);
    }
    let mut pfn = span.pfn_of(head);
    let mut order = order;
    while order < MAX_ORDER {
        let buddy = pfn ^ (1 << order);
        if buddy < span.start_pfn || buddy + (1 << order) > span.end_pfn() {
            break;
        }
        let b = span.index_of(buddy);
        if !descs[b as usize].is_free_head(order) {
            break;
        }
        area.unlink(descs, b, order);
        descs[b as usize].set_order(None);
        pfn = pfn.min(buddy);
        order += 1;
    }
    area.push(descs, span.index_of(pfn), order);
}

/// Adds the free frames `start_pfn..end_pfn` of `span` (already marked free tails) as the
/// largest aligned blocks that fit: the fully coalesced shape for that run.
pub(super) fn seed(
    area: &mut FreeArea,
    descs: &mut [PageDescriptor],
    span: &Span,
    start_pfn: u64,
    end_pfn: u64,
) {
    let mut pfn = start_pfn;
    while pfn < end_pfn {
        let align = pfn.trailing_zeros() as usize;
        let fit = (end_pfn - pfn).ilog2() as usize;
        let order = align.min(fit).min(MAX_ORDER);
        area.push(descs, span.index_of(pfn), order);
        pfn += 1 << order;
    }
}

#[cfg(test)]
mod tests {
    use super::super::descriptor::PageState;
    use super::super::region::Zone;
    use super::*;
    use std::vec::Vec;

    fn setup(frames: u64, start_pfn: u64) -> (FreeArea, Vec<PageDescriptor>, Span) {
        let span = Span {
            start_pfn,
            frames,
            first: 0,
            zone: Zone::Normal,
        };
        let mut descs = std::vec![PageDescriptor::new(PageState::Free); frames as usize];
        let mut area = FreeArea::new();
        seed(&mut area, &mut descs, &span, start_pfn, start_pfn + frames);
        (area, descs, span)
    }

    fn shape(area: &FreeArea) -> [usize; ORDERS] {
        core::array::from_fn(|o| area.blocks(o))
    }

    #[test]
    fn seeding_uses_the_largest_aligned_blocks() {
        // Frames 3..16: 3 (order 0), 4..8 (order 2), 8..16 (order 3).
        let (area, _, _) = setup(13, 3);
        assert_eq!(&shape(&area)[..4], &[1, 0, 1, 1]);
        assert_eq!(area.frames(), 13);
    }

    #[test]
    fn blocks_never_exceed_max_order() {
        let (area, _, _) = setup(3 << MAX_ORDER, 0);
        assert_eq!(area.blocks(MAX_ORDER), 3);
        assert_eq!(area.frames(), 3 << MAX_ORDER);
    }

    #[test]
    fn alloc_splits_and_free_merges_back() {
        let (mut area, mut descs, span) = setup(16, 0);
        let before = shape(&area);
        let a = alloc(&mut area, &mut descs, 0).unwrap();
        assert_eq!(a, 0);
        // 16 = 8 + 4 + 2 + 1 + (the allocated frame).
        assert_eq!(&shape(&area)[..5], &[1, 1, 1, 1, 0]);
        assert_eq!(descs[0].refcount(), 1);
        let b = alloc(&mut area, &mut descs, 1).unwrap();
        assert_eq!(b, 2);
        assert_eq!(descs[3].block_order(), None);
        free(&mut area, &mut descs, &span, a, 0);
        free(&mut area, &mut descs, &span, b, 1);
        assert_eq!(shape(&area), before);
        assert!(descs[0].is_free_head(4));
    }

    #[test]
    fn merging_stops_at_the_span_edge() {
        // Frames 4..12: 4..8 and 8..12 are buddies only within 0..16; 0..4 is not RAM.
        let (mut area, mut descs, span) = setup(8, 4);
        assert_eq!(&shape(&area)[..4], &[0, 0, 2, 0]);
        let a = alloc(&mut area, &mut descs, 2).unwrap();
        free(&mut area, &mut descs, &span, a, 2);
        assert_eq!(&shape(&area)[..4], &[0, 0, 2, 0]);
    }

    #[test]
    fn list_walks_every_block() {
        let (area, descs, _) = setup(16 + 4, 0);
        assert_eq!(area.list(&descs, 4).collect::<Vec<_>>(), [0]);
        assert_eq!(area.list(&descs, 2).collect::<Vec<_>>(), [16]);
        assert!(area.can_satisfy(4));
        assert!(!area.can_satisfy(5));
    }
}
