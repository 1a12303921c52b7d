//! The ring of `prodcons`: single producer, single consumer, of object pointers. The
//! producer writes only `head`, the consumer only `tail`, each on a cache line of its
//! own; a slot is published by the release store of `head` and handed back by the
//! release store of `tail`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Slots of a ring (a power of two). Many, because under TCG on a busy host (and on an
/// oversubscribed host) the consumer's vCPU thread may not run for a whole host time
/// slice: with 256 slots the producer spent most of such a slice waiting for room, and
/// the figure measured the host's scheduler.
pub const RING: usize = 4096;

/// A single-producer single-consumer ring of objects.
pub struct Ring {
    slots: [AtomicPtr<u8>; RING],
    /// Written by the producer only: objects pushed so far.
    head: CachePadded<AtomicUsize>,
    /// Written by the consumer only: objects taken so far.
    tail: CachePadded<AtomicUsize>,
}

impl Ring {
    pub fn new() -> Self {
        Self {
            slots: [const { AtomicPtr::new(core::ptr::null_mut()) }; RING],
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    #[inline]
    pub fn has_room(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        head - self.tail.load(Ordering::Acquire) < RING
    }

    /// Producer side; the caller checked [`Self::has_room`].
    #[inline]
    pub fn push(&self, object: NonNull<u8>) {
        let head = self.head.load(Ordering::Relaxed);
        self.slots[head % RING].store(object.as_ptr(), Ordering::Relaxed);
        self.head.store(head + 1, Ordering::Release);
    }

    /// Consumer side.
    #[inline]
    pub fn pop(&self) -> Option<NonNull<u8>> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        let object = self.slots[tail % RING].load(Ordering::Relaxed);
        self.tail.store(tail + 1, Ordering::Release);
        NonNull::new(object)
    }
}

#[cfg(test)]
mod tests {
    use super::{RING, Ring};
    use core::ptr::NonNull;

    #[test]
    fn a_full_ring_has_no_room_and_pops_in_order() {
        let ring = Box::new(Ring::new());
        let object = |i: usize| {
            NonNull::new(core::ptr::without_provenance_mut(8 * (i + 1))).expect("not null")
        };
        for i in 0..RING {
            assert!(ring.has_room());
            ring.push(object(i));
        }
        assert!(!ring.has_room());
        for i in 0..RING {
            assert_eq!(ring.pop(), Some(object(i)));
        }
        assert_eq!(ring.pop(), None);
        assert!(ring.has_room());
    }
}
