//! The boundary tag: one [`Segment`] describes one run of pages of the window, free or
//! used (Bonwick's `vmem_seg_t`, SOS's `struct sos_kmem_range`).
//!
//! Every segment is linked into the address-ordered red-black tree of its allocator
//! (`tree_link`, keyed by `start`); free segments are also linked into the free list of
//! their size class (`free_link`). Both are intrusive: a segment is a 64-byte object of
//! the range cache (`cache.rs`) and lives in a slab page of the window, never on the Rust
//! heap (there is none below this layer).
//!
//! Invariants, kept by the range allocator: the segments of the tree tile the window
//! exactly, in address order; no two free segments are adjacent (coalescing is eager);
//! a segment is in a free list iff it is free; a `start` is only changed while the new
//! value keeps the tree ordered (it stays between its neighbours).
//!
//! All fields are `Cell`s because the intrusive collections hand out shared references
//! only. Concurrency: segments are touched only under the range lock.

use super::{RangeFlags, RangeInfo, RangeKind};
use crate::platform::PAGE_SIZE;
use core::cell::Cell;
use intrusive_collections::{KeyAdapter, LinkedListLink, RBTreeLink, UnsafeRef, intrusive_adapter};

/// What a segment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentKind {
    /// Free address space, in a free list.
    Free,
    /// Handed out by `new_range`.
    Allocated(RangeFlags),
    /// Registered by `reserve` (the kernel image, ...): used, but not ours to back.
    Reserved,
    /// A slab of the range cache, the bootstrap slab included: mapped, owned by `mm`.
    Internal,
}

impl SegmentKind {
    /// True when each page of the segment is mapped to a frame that `mm` allocated.
    pub fn is_mapped(self) -> bool {
        match self {
            SegmentKind::Allocated(flags) => flags.contains(RangeFlags::MAP),
            SegmentKind::Internal => true,
            SegmentKind::Free | SegmentKind::Reserved => false,
        }
    }

    /// The public view of a used segment.
    pub fn public(self) -> Option<RangeKind> {
        match self {
            SegmentKind::Free => None,
            SegmentKind::Allocated(flags) => Some(RangeKind::Allocated(flags)),
            SegmentKind::Reserved => Some(RangeKind::Reserved),
            SegmentKind::Internal => Some(RangeKind::Internal),
        }
    }
}

/// A boundary tag. 64 bytes: exactly one slot of the range cache.
pub(crate) struct Segment {
    tree_link: RBTreeLink,
    free_link: LinkedListLink,
    start: Cell<usize>,
    pages: Cell<usize>,
    kind: Cell<SegmentKind>,
}

const _: () = assert!(core::mem::size_of::<Segment>() == 64);

/// A segment reference as the intrusive collections hold it. The segment lives in a slab
/// of the range cache; see `cache.rs` for why it outlives every collection holding it.
pub(crate) type SegRef = UnsafeRef<Segment>;

intrusive_adapter!(pub(crate) TreeAdapter = SegRef: Segment { tree_link => RBTreeLink });
intrusive_adapter!(pub(crate) FreeAdapter = SegRef: Segment { free_link => LinkedListLink });

impl<'a> KeyAdapter<'a> for TreeAdapter {
    type Key = usize;
    fn get_key(&self, segment: &'a Segment) -> usize {
        segment.start()
    }
}

impl Segment {
    /// A new, unlinked segment.
    pub fn new(start: usize, pages: usize, kind: SegmentKind) -> Self {
        Self {
            tree_link: RBTreeLink::new(),
            free_link: LinkedListLink::new(),
            start: Cell::new(start),
            pages: Cell::new(pages),
            kind: Cell::new(kind),
        }
    }

    pub fn start(&self) -> usize {
        self.start.get()
    }

    pub fn pages(&self) -> usize {
        self.pages.get()
    }

    /// One past the last byte.
    pub fn end(&self) -> usize {
        self.start() + self.pages() * PAGE_SIZE
    }

    pub fn kind(&self) -> SegmentKind {
        self.kind.get()
    }

    pub fn is_free(&self) -> bool {
        self.kind() == SegmentKind::Free
    }

    pub fn contains(&self, addr: usize) -> bool {
        (self.start()..self.end()).contains(&addr)
    }

    /// Moves the segment to `start..start + pages`. The caller keeps the tree ordered.
    pub fn set_extent(&self, start: usize, pages: usize) {
        self.start.set(start);
        self.pages.set(pages);
    }

    pub fn set_kind(&self, kind: SegmentKind) {
        self.kind.set(kind);
    }

    pub fn in_free_list(&self) -> bool {
        self.free_link.is_linked()
    }

    /// The public description of a used segment.
    pub fn info(&self) -> Option<RangeInfo> {
        Some(RangeInfo {
            start: self.start(),
            pages: self.pages(),
            kind: self.kind().public()?,
        })
    }
}
