//! Layer 1: per-CPU object caches in front of every slab cache (Linux 2.4 with
//! `CONFIG_SMP`: `cpucache_t *cpudata[NR_CPUS]`, `limit`, `batchcount`).
//!
//! Every cache has, for each CPU, an *array cache*: a stack of up to `limit` free
//! objects that only that CPU touches. Allocation pops from it and freeing pushes to it,
//! with the CPU's interrupts off and no lock; the only shared write is the object's bit
//! in the live map (one atomic read-modify-write each way: see "What a free checks"
//! below). Only when the stack is empty (a *miss* on allocation) or full (a miss on
//! free) does the CPU take the cache's spinlock, once, to move `batchcount` objects
//! between its stack and the slabs.
//!
//! ```text
//!  alloc                                        free(p)
//!                                                take p's live mark (none? refuse)
//!   interrupts off                               interrupts off
//!   avail > 0 ?  p = entries[--avail]   (hit)    avail < limit ?  entries[avail++] = p  (hit)
//!   else lock; take batchcount objects           else lock; give entries[0..batchcount]
//!        from the slabs into entries; unlock          back to the slabs; shift; unlock;
//!        (none? interrupts on, grow, retry)           push p
//!   interrupts restored                          interrupts restored
//!   set p's live mark
//! ```
//!
//! # Why it is safe without a lock
//!
//! A CPU's array is touched only by that CPU with its interrupts off ([`CpuLocal`]'s
//! contract), or by [`CpuLocal::on_each_cpu`] running *as* that CPU with its interrupts
//! off (in the kernel, an IPI handler; hosted, a thread holding that CPU's guard). That
//! is 2.4's rule too (`smp_call_function` in `drain_cpu_caches`). The array's counters
//! are atomics written with a plain load and store (one writer), so that statistics can
//! read them from anywhere; its `entries` are plain memory.
//!
//! # Where the arrays come from
//!
//! An array is an object of the smallest general cache that holds it (`size-128` ..
//! `size-1024` with the default limits, up to `size-8192` for `MAX_LIMIT`), made the
//! first time its CPU uses the cache, with the cache's `limit` and `batchcount` of that
//! moment. It is taken straight from the slab layer, not through another per-CPU array,
//! so making one never recurses.
//!
//! # Changing the arrays from outside
//!
//! `drain` (before `shrink`, `destroy`, `reap`), `tune` and switching the layer off run a
//! function on every CPU that empties (and, for `tune` and switching off, frees) that
//! CPU's array. A CPU makes a new one, with the new parameters, when it next needs it.
//! Those operations hold the cache's `tuning` lock, which leaves interrupts on (a CPU
//! waiting for it must still answer IPIs) and which statistics take to read remote
//! arrays without one being freed under them.
//!
//! Running out of memory drains too (`reclaim_memory`, in `tuning.rs`): objects parked
//! in other CPUs' arrays are free to their users but hold their slabs, so an allocation
//! that finds no memory, in process context, empties every CPU's arrays and gives the
//! free slabs back before it fails. From an interrupt handler it cannot (no IPIs there):
//! it gives back only what the slabs hold free.
//!
//! # What a free checks, and why that is every bad free
//!
//! An array makes the slab's own bookkeeping useless for judging a free: an object
//! parked in an array is allocated as far as its slab knows, and free as far as its
//! users do. So every free, through an array or not, first takes the object's mark in
//! the slab layer's *live map* (`slab/live.rs`): one bit per word of the heap window,
//! set exactly while an object starting at that word is in a user's hands. Taking it
//! is one atomic read-modify-write, with no lock and nothing written into the object
//! (constructor caches keep their state), and it is safe in an interrupt handler.
//! Of two frees of one object, however many frees apart and on whichever CPUs, one
//! finds the mark and the other does not; a pointer into the middle of an object, or to
//! no object, finds none. Then one read of the owner table says whether the object is
//! this cache's. A free that finds no mark is judged under the cache lock (double free,
//! pointer that starts no object, another cache's object), reported, and changes
//! nothing. Caches with debug checks (red zones, poisoning) get no arrays, and their
//! frees are checked in full against the slab as well.

mod array;
mod handle;
mod slabinfo;
mod tuning;

#[cfg(test)]
mod percpu_tests;

pub use array::{CacheArrays, CpuCounters, MAX_CPUS, MAX_LIMIT};
pub use handle::Cache;
pub use slabinfo::{CacheStats, CpuStats};

use crate::platform::CpuLocal;
use crate::slab::{
    ObjectInfo, SlabBackend, SlabCache, SlabCaches, SlabError, SlabFlags, SlabOptions, Walk,
};
use crate::sync::atomic::{AtomicBool, Ordering};
use array::{Array, ArrayCache, bump};
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// A cache descriptor as the per-CPU layer sees it: a slab cache with its arrays.
pub type CacheDescriptor<I> = SlabCache<I, CacheArrays<I>>;

/// Layer 1: the per-CPU arrays in front of every cache of the slab layer, which it owns.
/// See the [module docs](self).
pub struct CpuCaches<B: SlabBackend, I: CpuLocal> {
    slab: SlabCaches<B, I, CacheArrays<I>>,
    /// The global switch of the layer.
    per_cpu: AtomicBool,
}

impl<B: SlabBackend, I: CpuLocal> CpuCaches<B, I> {
    const CPUS_FIT: () = assert!(I::CPUS <= MAX_CPUS, "more CPUs than array slots");

    /// Starts the slab layer over `backend`, and this layer in front of it (off with
    /// `options.no_per_cpu`).
    pub fn new(backend: B, options: SlabOptions) -> Result<Self, SlabError> {
        // Every use of the array tables (`CacheArrays::array`) relies on this.
        let () = Self::CPUS_FIT;
        Ok(Self {
            per_cpu: AtomicBool::new(!options.no_per_cpu),
            slab: SlabCaches::new(backend, options)?,
        })
    }

    /// The slab layer below.
    pub fn slab(&self) -> &SlabCaches<B, I, CacheArrays<I>> {
        &self.slab
    }

    /// Creates a cache (see [`SlabCaches::create`]) and returns the handle its user
    /// keeps; its arrays are made when each CPU first uses it.
    pub fn create_cache(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<crate::slab::Constructor>,
        dtor: Option<crate::slab::Destructor>,
    ) -> Result<Cache<'_, B, I>, SlabError> {
        let cache = self.slab.create(name, size, align, flags, ctor, dtor)?;
        Ok(Cache {
            caches: self,
            cache,
        })
    }

    /// An object of `cache` (2.4's `kmem_cache_alloc`): from this CPU's array when it has
    /// one, else from the slabs.
    #[inline]
    pub fn alloc(&self, cache: &CacheDescriptor<I>) -> Result<NonNull<u8>, SlabError> {
        match self.alloc_hit(cache) {
            Some(object) => Ok(object),
            None => self.alloc_slow(cache),
        }
    }

    /// The hit of [`alloc`](Self::alloc), and nothing else: an object from this CPU's
    /// array, or `None` (a miss, for [`alloc_slow`](Self::alloc_slow)). Interrupts off,
    /// one load for the array, one for `avail`, the pop (one test: empty or not), the
    /// hit counter, interrupts restored. Separate, and returning no error, so that
    /// callers (`GlobalAlloc`) can return the pointer straight from the hit.
    #[inline]
    pub fn alloc_hit(&self, cache: &CacheDescriptor<I>) -> Option<NonNull<u8>> {
        let () = Self::CPUS_FIT;
        if I::CPUS == 0 {
            return None;
        }
        let saved = I::disable();
        // No array yet: the array with no entries, whose pop misses as an empty one does.
        let array = cache.front.array_or_none(I::current_cpu());
        let avail = array.avail();
        // Entries hold objects, never null; an empty array gives the null word before
        // its entries: one test covers both.
        if let Some(object) = NonNull::new(array.last(avail)) {
            array.set_avail(avail - 1);
            bump(&array.header().alloc_hit);
            // SAFETY: `saved` is from the `disable` above, the latest one.
            unsafe { I::restore(saved) };
            // SAFETY: an object of the cache's slabs, just taken off the array: in no
            // user's hands.
            unsafe { self.slab.mark_live(object.addr().get()) };
            return Some(object);
        }
        // SAFETY: as above.
        unsafe { I::restore(saved) };
        None
    }

    /// An allocation that missed: make this CPU's array, or refill it, or grow the cache
    /// and try again, or (no array) take the object from the slabs.
    #[inline(never)]
    pub fn alloc_slow(&self, cache: &CacheDescriptor<I>) -> Result<NonNull<u8>, SlabError> {
        let object = self.alloc_unmarked(cache)?;
        // SAFETY: an object of the cache's slabs, from an array or the slabs: in no
        // user's hands.
        unsafe { self.slab.mark_live(object.addr().get()) };
        Ok(object)
    }

    /// [`alloc_slow`](Self::alloc_slow) before the object's live mark is set.
    fn alloc_unmarked(&self, cache: &CacheDescriptor<I>) -> Result<NonNull<u8>, SlabError> {
        // Out of memory once: drain every CPU's arrays (and give free slabs back), then
        // look again. The drain may put free objects back into this cache's slabs even
        // when it releases no page, so the retry does not depend on pages coming back.
        let mut drained = false;
        if self.per_cpu_enabled() {
            loop {
                let saved = I::disable();
                match self.alloc_here(cache) {
                    Ok(Some(object)) => {
                        // SAFETY: `saved` is from the `disable` above, the latest one.
                        unsafe { I::restore(saved) };
                        return Ok(object);
                    }
                    Ok(None) => {
                        // SAFETY: as above.
                        unsafe { I::restore(saved) };
                        break;
                    }
                    Err(()) => {
                        // Slabs empty: grow with interrupts as the caller had them (2.4
                        // does the same), then try again; someone may take the new slab's
                        // objects first, which only means another round.
                        // SAFETY: as above.
                        unsafe { I::restore(saved) };
                        match self.slab.grow_or_reclaim(cache) {
                            Err(SlabError::OutOfMemory) if !drained => {
                                drained = true;
                                self.reclaim_memory();
                            }
                            result => result?,
                        }
                    }
                }
            }
        }
        match self.slab.alloc(cache) {
            Err(SlabError::OutOfMemory) if !drained => {
                self.reclaim_memory();
                self.slab.alloc(cache)
            }
            result => result,
        }
    }

    /// With interrupts off: an object from this CPU's array, refilled if empty.
    /// `Ok(None)`: this CPU has no array for the cache (use the slabs); `Err`: the array
    /// is empty and so are the slabs.
    fn alloc_here(&self, cache: &CacheDescriptor<I>) -> Result<Option<NonNull<u8>>, ()> {
        let cpu = I::current_cpu();
        let Some(array) = cache
            .front
            .array(cpu)
            .or_else(|| self.array_for_first_use(cache, cpu))
        else {
            return Ok(None);
        };
        let h = array.header();
        let mut avail = array.avail();
        if avail > 0 {
            bump(&h.alloc_hit);
        } else {
            avail = self.refill(cache, array);
            if avail == 0 {
                // Counted when the retry after growing refills.
                return Err(());
            }
            bump(&h.alloc_miss);
        }
        // `avail > 0`: the entry on top, written by a free or the refill.
        let object = array.last(avail);
        array.set_avail(avail - 1);
        Ok(NonNull::new(object))
    }

    /// Takes up to `batchcount` objects from the slabs into an empty array, under one
    /// acquisition of the cache lock (2.4's `kmem_cache_alloc_batch`). Returns how many.
    fn refill(&self, cache: &CacheDescriptor<I>, array: Array) -> usize {
        let batch = array.header().batchcount as usize;
        array.header().entries_check.write("refilled");
        // SAFETY: our array, interrupts off, empty: nothing else reads or writes its
        // entries while this slice lives; `batchcount <= limit` entries are in the object.
        let entries = unsafe {
            core::slice::from_raw_parts_mut(array.entries().cast::<MaybeUninit<*mut u8>>(), batch)
        };
        let n = self.slab.take_batch(cache, entries);
        array.set_avail(n);
        n
    }

    /// Gives `addr` back to `cache` (2.4's `kmem_cache_free`): into this CPU's array
    /// when it has one, else to its slab. A bad free is reported and changes nothing
    /// (see the module docs for what the array path checks).
    ///
    /// The live mark taken is every check (see the module docs); then
    /// [`free_taken`](Self::free_taken).
    #[inline]
    pub fn free(&self, cache: &CacheDescriptor<I>, addr: usize) -> Result<(), SlabError> {
        match self.slab.take_live(cache, addr) {
            Ok(()) => self.free_taken(cache, addr),
            Err(refused) => self.slab.refuse_free(cache, addr, refused),
        }
    }

    /// [`free`](Self::free) after the live mark of `addr` was taken for `cache`
    /// ([`SlabCaches::take_live`], or `take_live_object` in `kfree`): `addr` is an
    /// object of `cache` that was in a user's hands, now the caller's to give back.
    ///
    /// The hit is written out here, the rest is in `free_slow`: interrupts off, one load
    /// for the array, one for `avail`, the push, the hit counter.
    #[inline]
    pub fn free_taken(&self, cache: &CacheDescriptor<I>, addr: usize) -> Result<(), SlabError> {
        if I::CPUS > 0 {
            let saved = I::disable();
            // No array yet: the array with no entries, where `avail == limit == 0`.
            let array = cache.front.array_or_none(I::current_cpu());
            let avail = array.avail();
            if avail < array.header().limit as usize {
                let object = core::ptr::with_exposed_provenance_mut(addr);
                array.header().entries_check.write("pushed");
                // SAFETY: our array (not the one with no entries: its limit is 0),
                // interrupts off, `avail < limit`.
                unsafe { array.entries().add(avail).write(object) };
                array.set_avail(avail + 1);
                bump(&array.header().free_hit);
                // SAFETY: `saved` is from the `disable` above, the latest one.
                unsafe { I::restore(saved) };
                return Ok(());
            }
            // SAFETY: as above.
            unsafe { I::restore(saved) };
        }
        self.free_slow(cache, addr)
    }

    /// A free that missed, of an object whose live mark the caller took: this CPU has
    /// no array yet (make it), or it is full (flush a batch), or the layer is off (the
    /// slabs).
    #[inline(never)]
    fn free_slow(&self, cache: &CacheDescriptor<I>, addr: usize) -> Result<(), SlabError> {
        if self.per_cpu_enabled() {
            let saved = I::disable();
            let pushed = self.free_here(cache, addr);
            // SAFETY: `saved` is from the `disable` above, the latest one.
            unsafe { I::restore(saved) };
            if pushed {
                return Ok(());
            }
        }
        self.slab.free(cache, addr)
    }

    /// With interrupts off: pushes `addr`, an object of `cache` whose live mark the
    /// caller took, on this CPU's array, flushing a batch first if full. False: no
    /// array (the slab path).
    fn free_here(&self, cache: &CacheDescriptor<I>, addr: usize) -> bool {
        let cpu = I::current_cpu();
        let Some(array) = cache
            .front
            .array(cpu)
            .or_else(|| self.array_for_first_use(cache, cpu))
        else {
            return false;
        };
        let h = array.header();
        let mut avail = array.avail();
        h.entries_check.write("pushed");
        if avail < h.limit as usize {
            bump(&h.free_hit);
        } else {
            bump(&h.free_miss);
            let batch = h.batchcount as usize;
            // SAFETY: our array, interrupts off, `batch <= limit == avail`. An error
            // concerns an object of the array that the slab refused; it was reported,
            // and the objects are off the array either way.
            let _ = self.slab.free_batch(cache, unsafe { array.slice(batch) });
            // SAFETY: entries `batch..avail` move down to `0..avail - batch`, inside the
            // array.
            unsafe {
                core::ptr::copy(array.entries().add(batch), array.entries(), avail - batch);
            }
            avail -= batch;
        }
        // SAFETY: our array, interrupts off, `avail < limit`.
        unsafe {
            array
                .entries()
                .add(avail)
                .write(core::ptr::with_exposed_provenance_mut(addr))
        };
        array.set_avail(avail + 1);
        true
    }

    /// When this CPU has no array for `cache`: makes one if the layer is on. The switch
    /// is read here, not on every operation, because switching off frees every array:
    /// with the layer off, every operation comes here, and pays one load before the slabs.
    #[inline]
    fn array_for_first_use(&self, cache: &CacheDescriptor<I>, cpu: usize) -> Option<Array> {
        if self.per_cpu_enabled() {
            self.make_array(cache, cpu)
        } else {
            None
        }
    }

    /// Makes this CPU's array for `cache`, if the cache wants arrays and the general
    /// caches exist. Interrupts are off. Once per CPU and cache: kept out of line.
    #[cold]
    #[inline(never)]
    fn make_array(&self, cache: &CacheDescriptor<I>, cpu: usize) -> Option<Array> {
        let limit = cache.front.limit.load(Ordering::Relaxed);
        let batchcount = cache.front.batchcount.load(Ordering::Relaxed);
        if limit == 0 {
            return None;
        }
        let home = self.array_cache_for(limit)?;
        let object = self.slab.alloc(home).ok()?.cast::<ArrayCache>();
        // SAFETY: an object of a general cache of at least `bytes_for(limit)` bytes,
        // aligned to its size up to a page (so to 128 at least: the header's 64), ours.
        unsafe { object.write(ArrayCache::new(limit, batchcount.clamp(1, limit))) };
        // Release: whoever finds the pointer (this CPU later, statistics on any CPU) sees
        // the header written above.
        let publish = if crate::seeded::on("relaxed_publish") {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        cache.front.arrays[cpu].store(object.as_ptr(), publish);
        Some(Array(object))
    }

    /// The general cache that holds arrays of `limit` entries (none during bootstrap).
    pub(super) fn array_cache_for(&self, limit: usize) -> Option<&CacheDescriptor<I>> {
        self.slab.general_cache_for(Array::bytes_for(limit))
    }

    /// Where `addr` lies, if inside an object of some slab: see
    /// [`SlabCaches::object_info`].
    pub fn object_info(&self, addr: usize) -> Option<ObjectInfo> {
        self.slab.object_info(addr)
    }

    /// Checks every invariant of the slab layer: see [`SlabCaches::check_invariants`].
    pub fn check_invariants(&self) {
        self.slab.check_invariants();
    }
}

impl<B: SlabBackend, I: CpuLocal> Drop for CpuCaches<B, I> {
    /// Drains and frees every array, so that the slab layer (dropped next) finds every
    /// cache without objects it does not know about.
    fn drop(&mut self) {
        self.slab
            .for_each_cache(Walk::OldestFirst, |cache| self.drain(cache, true));
    }
}
