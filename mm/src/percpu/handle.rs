//! [`Cache`]: the handle a user of one cache holds (in the kernel, in a static).

use super::{CacheDescriptor, CacheStats, CpuCaches};
use crate::platform::CpuLocal;
use crate::slab::{SlabBackend, SlabError};
use core::ptr::NonNull;

/// A handle to one cache: what a user of the cache keeps (in the kernel, in a static).
/// Dropping the handle keeps the cache; [`destroy`](Self::destroy) consumes it.
pub struct Cache<'a, B: SlabBackend, I: CpuLocal> {
    pub(super) caches: &'a CpuCaches<B, I>,
    pub(super) cache: NonNull<CacheDescriptor<I>>,
}

// SAFETY: the handle is a shared reference to the allocator and a pointer to a `Sync`
// cache descriptor that lives until `destroy` consumes the handle.
unsafe impl<B: SlabBackend, I: CpuLocal> Send for Cache<'_, B, I> {}
// SAFETY: see `Send`.
unsafe impl<B: SlabBackend, I: CpuLocal> Sync for Cache<'_, B, I> {}

impl<B: SlabBackend, I: CpuLocal> Cache<'_, B, I> {
    /// The cache descriptor (layer 2, with its arrays).
    pub fn descriptor(&self) -> &CacheDescriptor<I> {
        // SAFETY: the cache lives until `destroy`, which consumes the handle.
        unsafe { self.cache.as_ref() }
    }

    /// The cache's name.
    pub fn name(&self) -> &'static str {
        self.descriptor().name
    }

    /// The bytes of an object its user may use (at least the size asked for).
    pub fn object_size(&self) -> usize {
        self.descriptor().geo.usable
    }

    /// The objects' alignment.
    pub fn align(&self) -> usize {
        self.descriptor().geo.align
    }

    /// An object (2.4's `kmem_cache_alloc`): from a partial slab if there is one, else a
    /// free slab, else a new slab. With a constructor, the object is in its constructed
    /// state (or the state its last user left it in: objects are freed constructed).
    pub fn alloc(&self) -> Result<NonNull<u8>, SlabError> {
        self.caches.alloc(self.descriptor())
    }

    /// Gives `object` back (2.4's `kmem_cache_free`).
    ///
    /// A pointer that is not an allocated object of this cache (never allocated, already
    /// free, of another cache, not the start of an object) is detected, reported and
    /// returned as an error, and changes nothing: that is not undefined behaviour.
    ///
    /// # Safety
    ///
    /// Nobody uses the object after this call: it may be handed out again at once. With
    /// a constructor, the object must be back in its constructed state.
    pub unsafe fn free(&self, object: NonNull<u8>) -> Result<(), SlabError> {
        self.caches.free(self.descriptor(), object.addr().get())
    }

    /// Fills `out` from the front with up to `out.len()` objects, taking the cache lock
    /// once (plus once per slab grown), as a per-CPU refill does (which does not grow).
    /// Returns how many; fewer than asked only when memory ran out after at least one.
    pub fn alloc_batch(&self, out: &mut [*mut u8]) -> Result<usize, SlabError> {
        let slab = self.caches.slab();
        let n = slab.alloc_batch(self.descriptor(), out)?;
        for object in &out[..n] {
            // SAFETY: objects just taken from the slabs: in no user's hands.
            unsafe { slab.mark_live(object.addr()) };
        }
        Ok(n)
    }

    /// Gives back every object of `objects` under one acquisition of the cache lock: the
    /// flush of a per-CPU array. Each object is checked as by [`free`](Self::free); all
    /// valid ones are freed, and the first error is returned.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free), for every object.
    pub unsafe fn free_batch(&self, objects: &[*mut u8]) -> Result<(), SlabError> {
        let (slab, cache) = (self.caches.slab(), self.descriptor());
        // Each object's live mark is taken first (as by `free`); the runs of objects
        // between refused ones go to the slabs, each under one lock acquisition.
        let mut first_error = None;
        let mut run = 0;
        for (position, object) in objects.iter().enumerate() {
            if let Err(refused) = slab.take_live(cache, object.addr()) {
                let freed = slab.free_batch(cache, &objects[run..position]);
                let error = slab.refuse_free(cache, object.addr(), refused);
                first_error = first_error.or(freed.err()).or(error.err());
                run = position + 1;
            }
        }
        let freed = slab.free_batch(cache, &objects[run..]);
        first_error.or(freed.err()).map_or(Ok(()), Err)
    }

    /// Empties every CPU's array of this cache, then gives back its free slabs (2.4's
    /// `kmem_cache_shrink`); returns the pages. Called with interrupts on.
    pub fn shrink(&self) -> usize {
        self.caches.shrink(self.descriptor())
    }

    /// Destroys the cache (2.4's `kmem_cache_destroy`): every object must have been
    /// freed. Otherwise the cache stays as it was and the handle comes back with
    /// [`SlabError::Busy`].
    pub fn destroy(self) -> Result<(), (Self, SlabError)> {
        // SAFETY: the cache is live until this, which consumes its only handle.
        match unsafe { self.caches.destroy(self.cache) } {
            Ok(()) => Ok(()),
            Err(error) => Err((self, error)),
        }
    }

    /// The cache's statistics.
    pub fn stats(&self) -> CacheStats {
        self.caches.stats(self.descriptor())
    }
}
