//! A doubly linked list of slabs, threaded through the slab descriptors (2.4's
//! `list_head`, minus the circularity).
//!
//! The head is a plain pointer to the first slab, and the first slab's `prev` is `None`:
//! nothing points back at the head. That is what lets a cache descriptor (which holds
//! three of these heads) be *moved* in memory, which the bootstrap of the cache of caches
//! does (see `caches.rs`); a circular 2.4 list would leave the slabs pointing at the
//! old place of the head.
//!
//! Invariant: every slab on a list is a live, initialised descriptor whose links only
//! this list uses, for as long as it is on the list. `push_front` is where callers
//! promise it, so the rest (`iter`, `first`, `pop_front`) is safe.

use super::descriptor::Slab;

/// A list of slabs. See the [module docs](self).
#[derive(Debug, Default)]
pub struct SlabList {
    head: Option<Slab>,
    len: usize,
}

impl SlabList {
    /// An empty list.
    pub const fn new() -> Self {
        Self { head: None, len: 0 }
    }

    /// The first slab.
    pub fn first(&self) -> Option<Slab> {
        self.head
    }

    /// Slabs on the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds `slab` at the front.
    ///
    /// # Safety
    ///
    /// `slab` is a live descriptor that is on no list, stays live until it is removed
    /// from this one, and whose owning cache's lock the caller holds (as for every call
    /// on a list, which lives inside the locked cache state).
    pub unsafe fn push_front(&mut self, slab: Slab) {
        // SAFETY: `slab` and the current head are live and ours (the caller's contract,
        // and this list's invariant); no `SlabMut` is in use during list operations.
        unsafe {
            slab.set_links(self.head, None);
            if let Some(old) = self.head {
                let (next, _) = old.links();
                old.set_links(next, Some(slab));
            }
        }
        self.head = Some(slab);
        self.len += 1;
    }

    /// Unlinks `slab`.
    ///
    /// # Safety
    ///
    /// `slab` is on this list.
    pub unsafe fn remove(&mut self, slab: Slab) {
        // SAFETY: `slab` is on this list (caller), so it and its neighbours are live.
        unsafe {
            let (next, prev) = slab.links();
            match prev {
                Some(p) => {
                    let (_, pp) = p.links();
                    p.set_links(next, pp);
                }
                None => {
                    debug_assert_eq!(self.head, Some(slab), "slab is not on this list");
                    self.head = next;
                }
            }
            if let Some(n) = next {
                let (nn, _) = n.links();
                n.set_links(nn, prev);
            }
            slab.set_links(None, None);
        }
        self.len -= 1;
    }

    /// Unlinks and returns the first slab.
    pub fn pop_front(&mut self) -> Option<Slab> {
        let first = self.head?;
        // SAFETY: `first` is on this list.
        unsafe { self.remove(first) };
        Some(first)
    }

    /// Moves `slab` from this list to the front of `to`.
    ///
    /// # Safety
    ///
    /// `slab` is on this list.
    pub unsafe fn move_to(&mut self, slab: Slab, to: &mut SlabList) {
        // SAFETY: on this list (caller), so live; after `remove` it is on no list.
        unsafe {
            self.remove(slab);
            to.push_front(slab);
        }
    }

    /// The slabs, first to last.
    pub fn iter(&self) -> impl Iterator<Item = Slab> + '_ {
        let mut next = self.head;
        core::iter::from_fn(move || {
            let slab = next?;
            // SAFETY: `slab` is on this list (the list invariant), borrowed for the
            // iteration, so it is live and nobody changes its links meanwhile.
            next = unsafe { slab.links() }.0;
            Some(slab)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slab::descriptor::desc_size;
    use core::ptr::NonNull;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn push_remove_and_move_keep_both_directions_consistent() {
        let per = desc_size(1) / 8;
        let mut storage = vec![0u64; 4 * per];
        let base = storage.as_mut_ptr();
        let slabs: Vec<Slab> = (0..4)
            .map(|i| {
                // SAFETY: slot i of `storage` is `desc_size(1)` aligned bytes, used only by
                // this slab, and `storage` outlives the lists below.
                let at = NonNull::new(unsafe { base.add(i * per) }.cast::<u8>()).unwrap();
                // SAFETY: as above.
                unsafe { Slab::init(at, at, at, 1) }
            })
            .collect();
        let (mut a, mut b) = (SlabList::new(), SlabList::new());
        for &s in &slabs {
            // SAFETY: each slab is live and on no list.
            unsafe { a.push_front(s) };
        }
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [slabs[3], slabs[2], slabs[1], slabs[0]]
        );
        // SAFETY: slabs[1] and slabs[3] are on `a`.
        unsafe {
            a.move_to(slabs[1], &mut b);
            a.remove(slabs[3]);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), [slabs[2], slabs[0]]);
        assert_eq!((a.len(), b.len(), b.first()), (2, 1, Some(slabs[1])));
        // The back links agree with the forward ones.
        // SAFETY: all live, no `SlabMut` in use.
        unsafe {
            assert_eq!(slabs[0].links(), (None, Some(slabs[2])));
            assert_eq!(slabs[2].links(), (Some(slabs[0]), None));
            assert_eq!(slabs[3].links(), (None, None));
        }
        assert_eq!(a.pop_front(), Some(slabs[2]));
        assert_eq!(a.pop_front(), Some(slabs[0]));
        assert!(a.pop_front().is_none() && a.len() == 0);
    }
}
