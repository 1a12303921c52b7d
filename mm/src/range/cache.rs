//! The range cache: a minimal slab allocator for range descriptors ([`Segment`]s), SOS's
//! `kmem_range_cache`.
//!
//! Each slab is one page of the window, obtained from the range allocator itself (a
//! mapped range of kind `Internal`) except the first, the bootstrap slab, which is placed
//! by hand (see `crate::bootstrap`). Layout of a slab (ON_SLAB, the header at the end of
//! the page as in SOS):
//!
//! ```text
//!  base                                                     base + 4032   base + 4096
//!  | slot 0 | slot 1 | ...                       | slot 62 | SlabHeader |
//!    64 B each: a live Segment, or a FreeObject linking to the next free slot
//! ```
//!
//! Free objects of a slab form a singly linked list threaded through the free objects
//! themselves (`FreeObject::next`), headed in the slab's header. The cache keeps every slab
//! in `slabs` (oldest first, the bootstrap slab at the front) and the slabs that have a
//! free object in `avail`; allocation takes from the first slab of `avail`, in O(1).
//! An object's slab is found by masking its address down to the page: O(1).
//!
//! Growing is the range allocator's job (it must allocate a range, so it happens outside
//! the operation that needs descriptors; the low-water argument is in [`super`]).
//! Shrinking (`RangeAllocator::shrink`) is the one place that gives slabs back: it marks
//! slabs for eviction here, moves their live descriptors out, and then takes the empty
//! slabs back with [`RangeCache::take_evicted`].
//!
//! Invariants:
//! - `free` counts the free objects of slabs that are not being evicted; `avail` holds
//!   exactly those of them with a free object.
//! - A slab's `in_use` plus the length of its free list is [`OBJECTS_PER_SLAB`].
//! - An object is freed only once nothing links to it any more (the range allocator
//!   unlinks a segment from the tree and the free lists before freeing it), and a slab
//!   page is unmapped only after `take_evicted` has unlinked it, when no object of it is
//!   in use. That is why the `UnsafeRef`s in the range allocator's collections are valid.
//!
//! This module is self-contained so that the next issue's general slab layer can replace
//! it; what the range allocator needs is `alloc`, `free`, `add_slab` and the eviction
//! calls.
//!
//! Concurrency: under the range lock, with the rest of the range allocator.

use super::segment::Segment;
use crate::platform::PAGE_SIZE;
use core::cell::Cell;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use intrusive_collections::{LinkedList, LinkedListLink, UnsafeRef, intrusive_adapter};

/// Bytes per object slot.
pub(crate) const SLOT_SIZE: usize = 64;
/// Bytes per slab: one page.
pub(crate) const SLAB_SIZE: usize = PAGE_SIZE;
/// Range descriptors per slab of the range cache: 63.
pub const OBJECTS_PER_SLAB: usize = (SLAB_SIZE - size_of::<SlabHeader>()) / SLOT_SIZE;
const HEADER_OFFSET: usize = OBJECTS_PER_SLAB * SLOT_SIZE;

const _: () = {
    assert!(size_of::<Segment>() <= SLOT_SIZE && SLOT_SIZE.is_multiple_of(align_of::<Segment>()));
    assert!(
        size_of::<FreeObject>() <= SLOT_SIZE && SLOT_SIZE.is_multiple_of(align_of::<FreeObject>())
    );
    assert!(HEADER_OFFSET + size_of::<SlabHeader>() <= SLAB_SIZE);
    assert!(HEADER_OFFSET.is_multiple_of(align_of::<SlabHeader>()));
    assert!(OBJECTS_PER_SLAB == 63);
};

/// What a free slot holds.
struct FreeObject {
    next: Cell<Option<NonNull<FreeObject>>>,
}

/// The slab descriptor, at the end of its page.
struct SlabHeader {
    all_link: LinkedListLink,
    avail_link: LinkedListLink,
    free_head: Cell<Option<NonNull<FreeObject>>>,
    in_use: Cell<usize>,
    /// The bootstrap slab: never evicted.
    pinned: bool,
    evicting: Cell<bool>,
}

intrusive_adapter!(SlabsAdapter = UnsafeRef<SlabHeader>: SlabHeader { all_link => LinkedListLink });
intrusive_adapter!(AvailAdapter = UnsafeRef<SlabHeader>: SlabHeader { avail_link => LinkedListLink });

/// The header of the slab holding `object` (computed with wrapping arithmetic, so this
/// is safe to call; dereferencing the result is sound only for an object of a slab).
fn header_of<T>(object: *mut T) -> *mut SlabHeader {
    let offset = object.addr() % SLAB_SIZE;
    object
        .cast::<u8>()
        .wrapping_byte_sub(offset)
        .wrapping_byte_add(HEADER_OFFSET)
        .cast()
}

/// The cache of range descriptors. See the [module docs](self).
pub(crate) struct RangeCache {
    slabs: LinkedList<SlabsAdapter>,
    avail: LinkedList<AvailAdapter>,
    free: usize,
    capacity: usize,
    in_use: usize,
}

impl RangeCache {
    pub const fn new() -> Self {
        Self {
            slabs: LinkedList::new(SlabsAdapter::NEW),
            avail: LinkedList::new(AvailAdapter::NEW),
            free: 0,
            capacity: 0,
            in_use: 0,
        }
    }

    /// Free objects available for allocation.
    pub fn free_objects(&self) -> usize {
        self.free
    }

    /// Number of slabs.
    pub fn slab_count(&self) -> usize {
        self.capacity / OBJECTS_PER_SLAB
    }

    /// Turns the page at `page` into a slab of free objects.
    ///
    /// # Safety
    ///
    /// `page` is valid for reads and writes of [`SLAB_SIZE`] bytes, aligned to
    /// `SLAB_SIZE`, used by nothing else, and stays so until the slab is given back by
    /// [`take_evicted`](Self::take_evicted) (forever if `pinned`).
    pub unsafe fn add_slab(&mut self, page: NonNull<u8>, pinned: bool) {
        debug_assert_eq!(page.addr().get() % SLAB_SIZE, 0);
        let mut next = None;
        for i in (0..OBJECTS_PER_SLAB).rev() {
            // SAFETY: slot i lies inside the page (i * 64 + 64 <= 4032), which the caller
            // gave us for our exclusive use; it is suitably aligned (const assertions).
            let slot = unsafe { page.byte_add(i * SLOT_SIZE).cast::<FreeObject>() };
            // SAFETY: as above, `slot` is valid for writes and unused.
            unsafe {
                slot.write(FreeObject {
                    next: Cell::new(next),
                })
            };
            next = Some(slot);
        }
        let header = header_of(page.as_ptr());
        // SAFETY: the header slot is inside the page, aligned, and unused.
        unsafe {
            header.write(SlabHeader {
                all_link: LinkedListLink::new(),
                avail_link: LinkedListLink::new(),
                free_head: Cell::new(next),
                in_use: Cell::new(0),
                pinned,
                evicting: Cell::new(false),
            })
        };
        // SAFETY: the header stays valid until `take_evicted` unlinks it from both lists
        // (the caller's contract), so the lists never hold a dangling reference.
        let header = unsafe { UnsafeRef::from_raw(header) };
        self.slabs.push_back(header.clone());
        self.avail.push_front(header);
        self.free += OBJECTS_PER_SLAB;
        self.capacity += OBJECTS_PER_SLAB;
    }

    /// An uninitialized slot for a `Segment`, or `None` when no slab has a free object.
    pub fn alloc(&mut self) -> Option<NonNull<Segment>> {
        let mut cursor = self.avail.front_mut();
        let slab = cursor.get()?;
        let object = slab.free_head.get()?;
        // SAFETY: `object` is on the slab's free list, so it holds a `FreeObject` that
        // `add_slab` or `free` wrote, in a page that stays mapped while the slab exists.
        let next = unsafe { object.as_ref() }.next.get();
        slab.free_head.set(next);
        slab.in_use.set(slab.in_use.get() + 1);
        if next.is_none() {
            cursor.remove();
        }
        self.free -= 1;
        self.in_use += 1;
        Some(object.cast())
    }

    /// Gives `object` back to its slab.
    ///
    /// # Safety
    ///
    /// `object` came from [`alloc`](Self::alloc) of this cache, has not been freed since,
    /// and nothing refers to it any more (it is linked in no collection).
    pub unsafe fn free(&mut self, object: NonNull<Segment>) {
        // SAFETY: `object` is a live object of one of our slabs (the caller's contract),
        // whose header is valid while the slab is in the cache.
        let slab = unsafe { &*header_of(object.as_ptr()) };
        let object = object.cast::<FreeObject>();
        // SAFETY: nothing refers to the object any more, so its slot may be overwritten.
        unsafe {
            object.write(FreeObject {
                next: Cell::new(slab.free_head.get()),
            })
        };
        slab.free_head.set(Some(object));
        slab.in_use.set(slab.in_use.get() - 1);
        self.in_use -= 1;
        if !slab.evicting.get() {
            self.free += 1;
            if !slab.avail_link.is_linked() {
                // SAFETY: the slab is in the cache (it holds a live object), so its
                // header is valid until `take_evicted`, which unlinks it first.
                self.avail.push_front(unsafe { UnsafeRef::from_raw(slab) });
            }
        }
    }

    /// Marks slabs for eviction, newest first, as long as the free objects of the slabs
    /// that stay can take every live object of the marked ones and still leave
    /// `keep_free` free. Marked slabs stop serving allocations. Returns how many were
    /// marked; the pinned slab never is.
    pub fn mark_for_eviction(&mut self, keep_free: usize) -> usize {
        let Self {
            slabs, avail, free, ..
        } = self;
        let mut to_move = 0;
        let mut marked = 0;
        let mut cursor = slabs.back();
        while let Some(slab) = cursor.get() {
            let live = slab.in_use.get();
            let spare = OBJECTS_PER_SLAB - live;
            if !slab.pinned && !slab.evicting.get() && *free >= spare + to_move + live + keep_free {
                slab.evicting.set(true);
                if slab.avail_link.is_linked() {
                    // SAFETY: the link is in use, and `avail` is the only list that uses
                    // `avail_link`, so the slab is in `avail`.
                    unsafe { avail.cursor_mut_from_ptr(slab) }.remove();
                }
                *free -= spare;
                to_move += live;
                marked += 1;
            }
            cursor.move_prev();
        }
        marked
    }

    /// True when `object`'s slab is marked for eviction.
    ///
    /// # Safety
    ///
    /// `object` is a live object of this cache.
    pub unsafe fn is_evicting(&self, object: NonNull<Segment>) -> bool {
        // SAFETY: the header of a live object's slab is valid (caller's contract).
        unsafe { &*header_of(object.as_ptr()) }.evicting.get()
    }

    /// Unlinks one slab marked for eviction that has no live object, and returns its
    /// address: from now on the cache never touches that page, which the caller unmaps.
    pub fn take_evicted(&mut self) -> Option<usize> {
        let mut cursor = self.slabs.front_mut();
        while let Some(slab) = cursor.get() {
            if slab.evicting.get() && slab.in_use.get() == 0 {
                let header = cursor.remove()?;
                self.capacity -= OBJECTS_PER_SLAB;
                return Some(UnsafeRef::into_raw(header).addr() & !(SLAB_SIZE - 1));
            }
            cursor.move_next();
        }
        None
    }

    /// Puts back into service every slab still marked (one whose objects could not all
    /// be moved out). Returns how many there were.
    pub fn cancel_eviction(&mut self) -> usize {
        let mut cancelled = 0;
        for slab in self.slabs.iter() {
            if slab.evicting.replace(false) {
                let spare = OBJECTS_PER_SLAB - slab.in_use.get();
                self.free += spare;
                if spare > 0 {
                    // SAFETY: the slab is in `slabs`, so its header is valid until
                    // `take_evicted` unlinks it from both lists.
                    self.avail.push_back(unsafe { UnsafeRef::from_raw(slab) });
                }
                cancelled += 1;
            }
        }
        cancelled
    }

    /// True when `object` is a slot of one of the slabs. O(slabs).
    pub fn owns(&self, object: *const Segment) -> bool {
        let addr = object.addr();
        self.slabs.iter().any(|slab| {
            let base = core::ptr::from_ref(slab).addr() - HEADER_OFFSET;
            (base..base + HEADER_OFFSET).contains(&addr) && (addr - base).is_multiple_of(SLOT_SIZE)
        })
    }

    /// Checks the slabs' counters and free lists; returns the number of live objects.
    pub fn check(&self) -> usize {
        let (mut live, mut free, mut capacity) = (0, 0, 0);
        for slab in self.slabs.iter() {
            let base = core::ptr::from_ref(slab).addr() - HEADER_OFFSET;
            let mut listed = 0;
            let mut next = slab.free_head.get();
            while let Some(object) = next {
                let addr = object.addr().get();
                assert!(
                    (base..base + HEADER_OFFSET).contains(&addr)
                        && (addr - base).is_multiple_of(SLOT_SIZE)
                );
                listed += 1;
                assert!(
                    listed <= OBJECTS_PER_SLAB,
                    "free list of slab {base:#x} loops"
                );
                // SAFETY: objects on a slab's free list hold a `FreeObject`.
                next = unsafe { object.as_ref() }.next.get();
            }
            assert_eq!(
                listed + slab.in_use.get(),
                OBJECTS_PER_SLAB,
                "slab {base:#x} counts"
            );
            assert!(
                !slab.evicting.get(),
                "slab {base:#x} left marked for eviction"
            );
            assert_eq!(
                slab.avail_link.is_linked(),
                listed > 0,
                "slab {base:#x} availability"
            );
            live += slab.in_use.get();
            free += listed;
            capacity += OBJECTS_PER_SLAB;
        }
        assert_eq!(
            (live, free, capacity),
            (self.in_use, self.free, self.capacity)
        );
        assert_eq!(
            self.avail.iter().count(),
            self.slabs
                .iter()
                .filter(|s| s.avail_link.is_linked())
                .count()
        );
        live
    }

    /// Forgets every slab without touching them (for `Drop`).
    pub fn forget_all(&mut self) {
        self.slabs.fast_clear();
        self.avail.fast_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{Layout, alloc, dealloc};
    use std::vec::Vec;

    /// Two slab pages from the host allocator.
    struct Pages {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    impl Pages {
        fn new(n: usize) -> Self {
            let layout = Layout::from_size_align(n * SLAB_SIZE, SLAB_SIZE).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = NonNull::new(unsafe { alloc(layout) }).unwrap();
            Self { ptr, layout }
        }

        fn page(&self, i: usize) -> NonNull<u8> {
            // SAFETY: i < n, so the offset stays inside the allocation.
            unsafe { self.ptr.byte_add(i * SLAB_SIZE) }
        }
    }

    impl Drop for Pages {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }

    #[test]
    fn objects_come_from_the_slab_and_go_back() {
        let pages = Pages::new(2);
        let mut cache = RangeCache::new();
        // SAFETY: the page is ours, aligned and outlives the cache's use of it.
        unsafe { cache.add_slab(pages.page(0), true) };
        assert_eq!((cache.free_objects(), cache.slab_count()), (63, 1));
        let objects: Vec<_> = (0..63).map(|_| cache.alloc().unwrap()).collect();
        assert!(cache.alloc().is_none());
        assert!(objects.iter().all(|o| cache.owns(o.as_ptr())));
        assert_eq!(objects[1].addr().get() - objects[0].addr().get(), SLOT_SIZE);
        assert_eq!(cache.check(), 63);
        for o in objects {
            // SAFETY: allocated above, never linked anywhere.
            unsafe { cache.free(o) };
        }
        assert_eq!((cache.free_objects(), cache.check()), (63, 0));
        cache.forget_all();
    }

    #[test]
    fn eviction_keeps_the_pinned_slab_and_the_reserve() {
        let pages = Pages::new(3);
        let mut cache = RangeCache::new();
        // SAFETY: as above, for each page.
        unsafe {
            cache.add_slab(pages.page(0), true);
            cache.add_slab(pages.page(1), false);
            cache.add_slab(pages.page(2), false);
        }
        let a = cache.alloc().unwrap(); // from the newest slab (front of `avail`)
        assert_eq!(header_of(a.as_ptr()), header_of(pages.page(2).as_ptr()));
        // Keeping 63 free: only one of the two unpinned slabs can go.
        assert_eq!(cache.mark_for_eviction(63), 1);
        // SAFETY: `a` is live.
        assert!(unsafe { cache.is_evicting(a) });
        // The newest slab holds `a`, so nothing can be taken yet.
        assert_eq!(cache.take_evicted(), None);
        // SAFETY: allocated above, never linked anywhere.
        unsafe { cache.free(a) };
        assert_eq!(cache.take_evicted(), Some(pages.page(2).addr().get()));
        assert_eq!(cache.cancel_eviction(), 0);
        assert_eq!((cache.slab_count(), cache.free_objects()), (2, 126));
        cache.check();
        cache.forget_all();
    }
}
