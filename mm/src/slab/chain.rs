//! The cache chain (2.4's `cache_chain`): every cache of the slab layer, oldest first,
//! doubly linked through the descriptors, behind the chain lock.
//!
//! Concurrency: the links are changed and followed only under the chain lock, so they
//! are relaxed atomics (read by nobody else). The chain lock is taken by create,
//! destroy, reap and the walks (tuning, statistics, checks), never on the allocation or
//! free path ([`SlabCaches::reclaim`] only tries it). A cache lock may be taken under it,
//! never the other way round. It leaves interrupts on: the per-CPU layer holds it across
//! `on_each_cpu` (draining the arrays), and a CPU waiting for it must still answer that
//! IPI, so no interrupt handler may wait for it.

use super::SlabBackend;
use super::cache::{CacheFront, SlabCache};
use super::caches::SlabCaches;
use crate::platform::InterruptControl;
use crate::sync::atomic::Ordering;
use core::ptr::NonNull;

/// The ends of the chain.
pub(super) struct Chain<I: InterruptControl, F: CacheFront> {
    first: Option<NonNull<SlabCache<I, F>>>,
    last: Option<NonNull<SlabCache<I, F>>>,
}

// SAFETY: the chain points to cache descriptors, which are `Sync`; it is only walked or
// changed under the chain lock.
unsafe impl<I: InterruptControl, F: CacheFront> Send for Chain<I, F> {}

/// Which way a walk goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// In creation order.
    OldestFirst,
    /// Newest first: an off-slab cache is younger than the small general caches that
    /// hold its slab descriptors, so walking this way frees those descriptors before
    /// their caches are shrunk, and one pass gives everything back.
    NewestFirst,
}

fn ptr_of<I: InterruptControl, F: CacheFront>(
    cache: Option<NonNull<SlabCache<I, F>>>,
) -> *mut SlabCache<I, F> {
    cache.map_or(core::ptr::null_mut(), NonNull::as_ptr)
}

impl<I: InterruptControl, F: CacheFront> Chain<I, F> {
    pub const EMPTY: Self = Self {
        first: None,
        last: None,
    };

    /// The newest cache.
    pub fn last(&self) -> Option<NonNull<SlabCache<I, F>>> {
        self.last
    }

    /// Adds a live cache at the end.
    pub fn push_back(&mut self, ptr: NonNull<SlabCache<I, F>>) {
        // SAFETY: `ptr` is a live descriptor; `&mut self` is the chain lock.
        let cache = unsafe { ptr.as_ref() };
        cache
            .chain_next
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        cache.chain_prev.store(ptr_of(self.last), Ordering::Relaxed);
        match self.last {
            // SAFETY: caches on the chain are live.
            Some(last) => unsafe { last.as_ref() }
                .chain_next
                .store(ptr.as_ptr(), Ordering::Relaxed),
            None => self.first = Some(ptr),
        }
        self.last = Some(ptr);
    }

    /// Removes a cache that is on the chain.
    pub fn remove(&mut self, ptr: NonNull<SlabCache<I, F>>) {
        // SAFETY: `ptr` is on the chain, so live; so are its neighbours.
        let cache = unsafe { ptr.as_ref() };
        let next = NonNull::new(cache.chain_next.load(Ordering::Relaxed));
        let prev = NonNull::new(cache.chain_prev.load(Ordering::Relaxed));
        match prev {
            // SAFETY: as above.
            Some(p) => unsafe { p.as_ref() }
                .chain_next
                .store(ptr_of(next), Ordering::Relaxed),
            None => self.first = next,
        }
        match next {
            // SAFETY: as above.
            Some(n) => unsafe { n.as_ref() }
                .chain_prev
                .store(ptr_of(prev), Ordering::Relaxed),
            None => self.last = prev,
        }
    }

    /// Calls `f` with every cache in `order`. The next link is read before `f` runs, so
    /// `f` may take the cache off the chain.
    pub fn walk(&self, order: Walk, mut f: impl FnMut(NonNull<SlabCache<I, F>>)) {
        let mut next = match order {
            Walk::OldestFirst => self.first,
            Walk::NewestFirst => self.last,
        };
        while let Some(ptr) = next {
            // SAFETY: caches on the chain are live while the chain is borrowed (its lock).
            let cache = unsafe { ptr.as_ref() };
            let link = match order {
                Walk::OldestFirst => &cache.chain_next,
                Walk::NewestFirst => &cache.chain_prev,
            };
            next = NonNull::new(link.load(Ordering::Relaxed));
            f(ptr);
        }
    }
}

impl<B: SlabBackend, I: InterruptControl, F: CacheFront> SlabCaches<B, I, F> {
    /// Calls `f` on every cache in `order`, under the chain lock: `f` may take the
    /// cache's lock, but must not create or destroy caches.
    pub fn for_each_cache(&self, order: Walk, mut f: impl FnMut(&SlabCache<I, F>)) {
        let chain = self.chain.lock();
        // SAFETY: caches on the chain are live while we hold the chain lock.
        chain.walk(order, |ptr| f(unsafe { ptr.as_ref() }));
    }

    /// [`for_each_cache`](Self::for_each_cache) if the chain lock is free now; false,
    /// having done nothing, if it is held (perhaps by this CPU: an allocation made inside
    /// a walk). For paths that must not wait, such as running out of memory.
    pub fn try_for_each_cache(&self, order: Walk, mut f: impl FnMut(&SlabCache<I, F>)) -> bool {
        let Some(chain) = self.chain.try_lock() else {
            return false;
        };
        // SAFETY: caches on the chain are live while we hold the chain lock.
        chain.walk(order, |ptr| f(unsafe { ptr.as_ref() }));
        true
    }
}
