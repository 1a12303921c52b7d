//! The slab descriptor (Linux 2.4's `slab_t` followed by its `kmem_bufctl_t` array).
//!
//! ```text
//!  SlabHeader (40 B)                       bufctl: u16 x num         bitmap: u64 x ceil(num/64)
//!  +------+------+------+-------+-------+------+ +----+----+---+----+ +---------------+
//!  | next | prev | base | s_mem | inuse | free | | b0 | b1 |...| bn | | 1 = allocated |
//!  +------+------+------+-------+-------+------+ +----+----+---+----+ +---------------+
//!                                           |      ^    |
//!                                           +------+    +--> next free index, or END
//! ```
//!
//! - `free` is the index of the first free object; `bufctl[i]` is the index of the free
//!   object after `i` ([`BUFCTL_END`] ends the list). Allocation pops the head, freeing
//!   pushes: both O(1), LIFO (the object freed last, still warm in the cache, goes out
//!   first). The list lives in the descriptor, not in the free objects, so a program that
//!   writes into an object after freeing it cannot corrupt the allocator's free list.
//! - The bitmap has bit `i` set while object `i` is allocated. It is what makes a double
//!   free or a free of a never-allocated slot an O(1) check that costs one bit test on
//!   the free path, debug mode or not (the bufctl list alone would need a walk).
//! - `inuse` counts allocated objects; it decides which of the cache's three lists the
//!   slab is on (full, partial, free).
//! - `next`/`prev` link the slab into that list (see `list.rs`).
//!
//! The descriptor sits at the start of the slab (after the colour offset) for small
//! objects, or in an object of a descriptor cache for large ones (see `geometry.rs`).
//! Either way it is 8-byte aligned and only touched under the owning cache's lock.

use core::mem::size_of;
use core::ptr::NonNull;

/// Ends a bufctl free list.
pub const BUFCTL_END: u16 = u16::MAX;

/// The fixed part of a slab descriptor.
#[repr(C)]
pub struct SlabHeader {
    next: Option<Slab>,
    prev: Option<Slab>,
    /// The first byte of the slab's pages.
    base: NonNull<u8>,
    /// Slot 0 (2.4's `s_mem`); `s_mem - base` is the colour, plus the descriptor on-slab.
    s_mem: NonNull<u8>,
    /// Allocated objects. (`inuse` and `free` are 32-bit although they fit 16: a 16-bit
    /// store to one followed by a wider load of both stalls store forwarding, which
    /// measurably slowed the hot path.)
    inuse: u32,
    /// First free object, or [`BUFCTL_END`].
    free: u32,
}

const HEADER_SIZE: usize = size_of::<SlabHeader>();
const _: () = assert!(HEADER_SIZE == 40 && HEADER_SIZE.is_multiple_of(8));

fn bufctl_bytes(num: usize) -> usize {
    (2 * num).next_multiple_of(8)
}

/// Bytes of the descriptor of a slab of `num` objects.
pub const fn desc_size(num: usize) -> usize {
    HEADER_SIZE + (2 * num).next_multiple_of(8) + 8 * num.div_ceil(64)
}

/// A slab, by its descriptor's address. Plain pointer: all the methods that follow it
/// are `unsafe` and require the owning cache's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Slab(NonNull<SlabHeader>);

/// Exclusive access to one slab's descriptor, for one operation under the cache lock.
pub struct SlabMut<'a> {
    head: &'a mut SlabHeader,
    bufctl: &'a mut [u16],
    bitmap: &'a mut [u64],
}

impl Slab {
    /// Writes a fresh descriptor for a slab of `num` objects at `at`: nothing allocated,
    /// the free list running 0, 1, .., num - 1.
    ///
    /// # Safety
    ///
    /// `at` is 8-byte aligned and valid for writes of [`desc_size`]`(num)` bytes that no
    /// one else uses until the slab is destroyed; `1 <= num < BUFCTL_END`.
    pub unsafe fn init(at: NonNull<u8>, base: NonNull<u8>, s_mem: NonNull<u8>, num: usize) -> Self {
        debug_assert!(
            num >= 1 && num < usize::from(BUFCTL_END) && at.addr().get().is_multiple_of(8)
        );
        let slab = Self(at.cast());
        // SAFETY: the caller gives us `desc_size(num)` writable, aligned bytes at `at`.
        unsafe {
            slab.0.write(SlabHeader {
                next: None,
                prev: None,
                base,
                s_mem,
                inuse: 0,
                free: 0,
            });
            let bufctl = at.add(HEADER_SIZE).cast::<u16>();
            for i in 0..num {
                let next = if i + 1 == num {
                    BUFCTL_END
                } else {
                    (i + 1) as u16
                };
                bufctl.add(i).write(next);
            }
            let bitmap = at.add(HEADER_SIZE + bufctl_bytes(num)).cast::<u64>();
            bitmap.write_bytes(0, num.div_ceil(64));
        }
        slab
    }

    /// The descriptor's address (what the owner table records).
    pub fn as_ptr(self) -> *mut u8 {
        self.0.as_ptr().cast()
    }

    /// The slab whose descriptor is at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`as_ptr`](Self::as_ptr) of a slab that still exists.
    pub unsafe fn from_ptr(ptr: NonNull<u8>) -> Self {
        Self(ptr.cast())
    }

    /// Exclusive access to the descriptor of a slab of `num` objects.
    ///
    /// # Safety
    ///
    /// The slab was made by [`init`](Self::init) with this `num` and not destroyed; the
    /// caller holds its cache's lock, and no other reference to this descriptor (another
    /// `SlabMut`, or a list operation on this slab) is used while this one lives.
    pub unsafe fn get_mut<'a>(self, num: usize) -> SlabMut<'a> {
        let at = self.0.cast::<u8>();
        // SAFETY: the descriptor was initialised for `num` objects, so the three parts
        // lie at these offsets, are initialised, aligned (8-byte base, 40-byte header,
        // bufctl padded to 8), and disjoint; the caller guarantees exclusivity.
        unsafe {
            SlabMut {
                head: &mut *self.0.as_ptr(),
                bufctl: core::slice::from_raw_parts_mut(
                    at.add(HEADER_SIZE).cast::<u16>().as_ptr(),
                    num,
                ),
                bitmap: core::slice::from_raw_parts_mut(
                    at.add(HEADER_SIZE + bufctl_bytes(num))
                        .cast::<u64>()
                        .as_ptr(),
                    num.div_ceil(64),
                ),
            }
        }
    }

    /// The list links.
    ///
    /// # Safety
    ///
    /// As for [`get_mut`](Self::get_mut) (any `num`): a live slab, the cache lock held,
    /// no `SlabMut` of this slab in use.
    pub unsafe fn links(self) -> (Option<Slab>, Option<Slab>) {
        // SAFETY: the header is initialised and exclusively ours (caller's contract);
        // reading through the raw pointer creates no lasting reference.
        unsafe { ((*self.0.as_ptr()).next, (*self.0.as_ptr()).prev) }
    }

    /// Sets the list links.
    ///
    /// # Safety
    ///
    /// As for [`links`](Self::links).
    pub unsafe fn set_links(self, next: Option<Slab>, prev: Option<Slab>) {
        // SAFETY: as in `links`, for writing.
        unsafe {
            (*self.0.as_ptr()).next = next;
            (*self.0.as_ptr()).prev = prev;
        }
    }
}

impl SlabMut<'_> {
    /// Allocated objects.
    pub fn inuse(&self) -> usize {
        self.head.inuse as usize
    }

    /// The first byte of the slab's pages.
    pub fn base(&self) -> NonNull<u8> {
        self.head.base
    }

    /// Slot 0.
    pub fn s_mem(&self) -> NonNull<u8> {
        self.head.s_mem
    }

    /// Takes the first free object: its index, or `None` if the slab is full.
    pub fn pop(&mut self) -> Option<usize> {
        let i = self.head.free;
        if i == u32::from(BUFCTL_END) {
            return None;
        }
        let i = i as usize;
        self.head.free = u32::from(self.bufctl[i]);
        self.bitmap[i / 64] |= 1 << (i % 64);
        self.head.inuse += 1;
        Some(i)
    }

    /// True while object `i` is allocated.
    pub fn is_allocated(&self, i: usize) -> bool {
        self.bitmap[i / 64] & (1 << (i % 64)) != 0
    }

    /// Gives back, in order, the objects at the front of `objects` that start an
    /// allocated object of this slab, and stops at the first that does not (another
    /// slab's, or a bad free for the caller to judge); returns how many it gave back.
    /// `index` maps an address to the index of the object of this slab that starts
    /// there, if one does. The flush of a per-CPU array: the free-list head and the
    /// count stay in registers for the whole run, and each object costs its index, the
    /// bitmap test and clear, and the push.
    ///
    /// # Safety
    ///
    /// `index` returns only indices below the slab's object count (`num` of `get_mut`).
    #[inline(always)]
    pub unsafe fn release_run(
        &mut self,
        objects: &[*mut u8],
        index: impl Fn(usize) -> Option<usize>,
    ) -> usize {
        let mut free = self.head.free;
        let mut released = 0;
        for object in objects {
            let Some(i) = index(object.addr()) else {
                break;
            };
            debug_assert!(i < self.bufctl.len());
            // SAFETY: `i < num` (caller): `bitmap` has `num / 64` words rounded up.
            let word = unsafe { self.bitmap.get_unchecked_mut(i / 64) };
            let cleared = *word & !(1u64 << (i % 64));
            if cleared == *word {
                break;
            }
            *word = cleared;
            // SAFETY: `i < num`: `bufctl` has `num` entries.
            unsafe { *self.bufctl.get_unchecked_mut(i) = free as u16 };
            free = i as u32;
            released += 1;
        }
        self.head.free = free;
        self.head.inuse -= released as u32;
        released
    }

    /// Takes free objects into the front of `out` until it is full or the slab is;
    /// returns how many. `object` maps an index to its object's address. The refill of
    /// a per-CPU array: the free-list head and the count stay in registers for the
    /// whole run.
    #[inline(always)]
    pub fn take_run(
        &mut self,
        out: &mut [core::mem::MaybeUninit<*mut u8>],
        object: impl Fn(usize) -> *mut u8,
    ) -> usize {
        let mut free = self.head.free;
        let mut taken = 0;
        for slot in out.iter_mut() {
            if free == u32::from(BUFCTL_END) {
                break;
            }
            let i = free as usize;
            debug_assert!(i < self.bufctl.len());
            // SAFETY: the free list holds indices below `num` only (`init` makes it so,
            // and `push` and `release_run` add only indices below `num`): inside `bufctl`
            // (`num` entries) and `bitmap` (`num / 64` words rounded up).
            unsafe {
                free = u32::from(*self.bufctl.get_unchecked(i));
                *self.bitmap.get_unchecked_mut(i / 64) |= 1 << (i % 64);
            }
            slot.write(object(i));
            taken += 1;
        }
        self.head.free = free;
        self.head.inuse += taken as u32;
        taken
    }

    /// Gives object `i` back; it must be allocated (checked by the caller with
    /// [`is_allocated`](Self::is_allocated): this is the path that double frees would
    /// corrupt).
    pub fn push(&mut self, i: usize) {
        debug_assert!(self.is_allocated(i), "push of free object {i}");
        self.bufctl[i] = self.head.free as u16;
        self.head.free = i as u32;
        self.bitmap[i / 64] &= !(1 << (i % 64));
        self.head.inuse -= 1;
    }

    /// Checks the descriptor's own invariants (free list vs bitmap vs `inuse`); panics on
    /// the first one broken. O(num): tests and self-tests only.
    pub fn check(&self) {
        let num = self.bufctl.len();
        let mut on_list = 0;
        let mut next = self.head.free;
        while next != u32::from(BUFCTL_END) {
            let i = next as usize;
            assert!(i < num, "bufctl index {i} out of range");
            assert!(
                !self.is_allocated(i),
                "object {i} is on the free list but allocated"
            );
            on_list += 1;
            assert!(on_list <= num, "the free list loops");
            next = u32::from(self.bufctl[i]);
        }
        let allocated: usize = (0..num).filter(|&i| self.is_allocated(i)).count();
        assert_eq!(allocated, self.inuse(), "bitmap vs inuse");
        assert_eq!(
            on_list + allocated,
            num,
            "an object is neither free nor allocated"
        );
        let spare_bits = self.bitmap.len() * 64 - num;
        if spare_bits > 0 {
            let last = self.bitmap[self.bitmap.len() - 1];
            assert_eq!(
                last >> (64 - spare_bits),
                0,
                "bits set past the last object"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn with_slab(num: usize, f: impl FnOnce(Slab)) {
        let mut storage = vec![0u64; desc_size(num) / 8];
        let at = NonNull::new(storage.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `storage` is 8-byte aligned, `desc_size(num)` bytes, and only used by
        // the slab until the end of this function.
        let slab = unsafe { Slab::init(at, at, at, num) };
        f(slab);
    }

    #[test]
    fn descriptor_sizes() {
        assert_eq!(desc_size(1), 40 + 8 + 8);
        assert_eq!(desc_size(4), 40 + 8 + 8);
        assert_eq!(desc_size(64), 40 + 128 + 8);
        assert_eq!(desc_size(65), 40 + 136 + 16);
    }

    #[test]
    fn pop_is_lifo_and_the_bitmap_follows() {
        with_slab(70, |slab| {
            // SAFETY: the slab is live and only used here.
            let mut s = unsafe { slab.get_mut(70) };
            let got: Vec<_> = (0..70).map(|_| s.pop().unwrap()).collect();
            assert_eq!(got, (0..70).collect::<Vec<_>>());
            assert_eq!((s.pop(), s.inuse()), (None, 70));
            s.check();
            s.push(69);
            s.push(3);
            assert!(!s.is_allocated(3) && s.is_allocated(4));
            s.check();
            assert_eq!((s.pop(), s.pop(), s.pop()), (Some(3), Some(69), None));
            for i in 0..70 {
                s.push(i);
            }
            assert_eq!(s.inuse(), 0);
            s.check();
        });
    }

    #[test]
    #[should_panic(expected = "on the free list but allocated")]
    fn check_catches_a_corrupted_free_list() {
        with_slab(8, |slab| {
            // SAFETY: as above.
            let mut s = unsafe { slab.get_mut(8) };
            let i = s.pop().unwrap();
            // Corrupt: put the allocated object back on the list without clearing its bit.
            s.bufctl[i] = s.head.free as u16;
            s.head.free = i as u32;
            s.check();
        });
    }
}
