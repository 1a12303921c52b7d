//! Changing the arrays from outside their CPUs: draining them (before `shrink`,
//! `destroy`, `reap`), tuning `limit` and `batchcount` (2.4's write of "name limit
//! batchcount" to `/proc/slabinfo`), and the global switch.
//!
//! Each runs a function on every CPU, as that CPU with its interrupts off
//! ([`CpuLocal::on_each_cpu`]: an IPI in the kernel), that empties (and, for tuning and
//! switching off, frees) that CPU's array; a CPU makes a new one, with the new
//! parameters, when it next needs it. They hold the cache's `tuning` lock, which leaves
//! interrupts on (a CPU waiting for it must still answer the IPIs) and which statistics
//! take to read remote arrays without one being freed under them.

use super::{CacheDescriptor, CpuCaches, MAX_LIMIT};
use crate::platform::CpuLocal;
use crate::slab::{SlabBackend, SlabError, Walk};
use crate::sync::atomic::Ordering;
use core::ptr::NonNull;

impl<B: SlabBackend, I: CpuLocal> CpuCaches<B, I> {
    /// Empties this CPU's array of `cache` into the slabs; with `free_array`, frees the
    /// array too. Runs on (or as) `cpu`, interrupts off.
    pub(super) fn drain_here(&self, cache: &CacheDescriptor<I>, cpu: usize, free_array: bool) {
        let Some(array) = cache.front.array(cpu) else {
            return;
        };
        let avail = array.avail();
        if avail > 0 {
            // SAFETY: run as the owning CPU with interrupts off; `avail` entries written.
            let _ = self.slab.free_batch(cache, unsafe { array.slice(avail) });
            array.header().entries_check.write("emptied by a drain");
            array.set_avail(0);
        }
        if free_array {
            cache.front.clear(cpu);
            cache.front.retired.lock().add(&array.counters());
            let limit = array.header().limit as usize;
            let home = self
                .array_cache_for(limit)
                .expect("an array was made from this general cache");
            // Freeing the array writes its memory (for loom: no one may still read it).
            array.header().init.write("freed");
            let freed = self.slab.free(home, array.0.addr().get());
            debug_assert_eq!(freed, Ok(()), "per-CPU array of {}", cache.name);
        }
    }

    /// Empties every CPU's array of `cache` on that CPU (2.4's `drain_cpu_caches`), and
    /// frees the arrays with `free_arrays`. Called with interrupts on.
    pub fn drain(&self, cache: &CacheDescriptor<I>, free_arrays: bool) {
        if I::CPUS == 0 {
            return;
        }
        let _tuning = cache.front.tuning.lock();
        if crate::seeded::on("remote_drain") {
            // The seeded defect: not as each CPU, whose owner may be using its array.
            for cpu in 0..I::CPUS {
                self.drain_here(cache, cpu, free_arrays);
            }
            return;
        }
        I::on_each_cpu(&|cpu| self.drain_here(cache, cpu, free_arrays));
    }

    /// Sets `limit` and `batchcount` of the cache called `name` (2.4's write of
    /// "name limit batchcount" to `/proc/slabinfo`); `limit` 0 turns its arrays off.
    /// Every CPU's old array is drained and freed; new ones are made with the new values
    /// when next needed. `batchcount` must be between 1 and `limit`.
    pub fn tune_cpucache(
        &self,
        name: &str,
        limit: usize,
        batchcount: usize,
    ) -> Result<(), SlabError> {
        if limit > MAX_LIMIT || (limit > 0 && !(1..=limit).contains(&batchcount)) {
            return Err(SlabError::InvalidTuning { limit, batchcount });
        }
        let mut found = false;
        self.slab.for_each_cache(Walk::OldestFirst, |cache| {
            if cache.name != name || found {
                return;
            }
            found = true;
            let debug = cache.geo.red_zone() || cache.geo.poison();
            let limit = if debug { 0 } else { limit };
            cache.front.limit.store(limit, Ordering::Relaxed);
            cache.front.batchcount.store(batchcount, Ordering::Relaxed);
            self.drain(cache, true);
        });
        if found {
            Ok(())
        } else {
            Err(SlabError::NoSuchCache)
        }
    }

    /// The `(limit, batchcount)` of the cache called `name`: what its arrays are made
    /// with when the per-CPU layer is on (0 for a cache without arrays).
    pub fn cpucache_tuning(&self, name: &str) -> Result<(usize, usize), SlabError> {
        let mut tuning = Err(SlabError::NoSuchCache);
        self.slab.for_each_cache(Walk::OldestFirst, |cache| {
            if cache.name == name && tuning.is_err() {
                tuning = Ok((
                    cache.front.limit.load(Ordering::Relaxed),
                    cache.front.batchcount.load(Ordering::Relaxed),
                ));
            }
        });
        tuning
    }

    /// Turns the per-CPU layer on or off for every cache (for comparisons). Turning it
    /// off drains and frees every array; turning it on lets CPUs make arrays again.
    pub fn set_per_cpu(&self, on: bool) {
        self.per_cpu.store(on, Ordering::Relaxed);
        if !on {
            self.slab
                .for_each_cache(Walk::OldestFirst, |cache| self.drain(cache, true));
        }
    }

    /// True when caches may have per-CPU arrays.
    pub fn per_cpu_enabled(&self) -> bool {
        I::CPUS > 0 && self.per_cpu.load(Ordering::Relaxed)
    }

    /// Empties every CPU's array of every cache into the slabs (the arrays stay).
    pub fn drain_all(&self) {
        self.slab
            .for_each_cache(Walk::OldestFirst, |cache| self.drain(cache, false));
    }

    /// Empties every CPU's array of `cache`, then gives back its free slabs (2.4's
    /// `kmem_cache_shrink`); returns the pages. Called with interrupts on.
    pub fn shrink(&self, cache: &CacheDescriptor<I>) -> usize {
        self.drain(cache, false);
        self.slab.shrink(cache)
    }

    /// Destroys a cache (2.4's `kmem_cache_destroy`) after draining and freeing its
    /// arrays; see [`crate::slab::SlabCaches::destroy`].
    ///
    /// # Safety
    ///
    /// As for [`crate::slab::SlabCaches::destroy`]: `cache` is live, and no one else
    /// destroys or uses it meanwhile.
    pub unsafe fn destroy(&self, cache: NonNull<CacheDescriptor<I>>) -> Result<(), SlabError> {
        // SAFETY: live (caller).
        self.drain(unsafe { cache.as_ref() }, true);
        // SAFETY: the caller's contract.
        unsafe { self.slab.destroy(cache) }
    }

    /// Gives back the free slabs of every cache not flagged `NO_REAP`, each drained
    /// first (2.4's `kmem_cache_reap`); see [`crate::slab::SlabCaches::reap`]. Returns
    /// the pages released. Called with interrupts on.
    pub fn reap(&self) -> usize {
        self.slab.reap(|cache| self.drain(cache, false))
    }

    /// What an allocation does when memory ran out: in process context (interrupts on),
    /// it first empties every CPU's array of every cache into the slabs, because objects
    /// parked there are free to their users but hold their slabs; then it gives back
    /// every free slab (`SlabCaches::reclaim`). From an interrupt handler, or with
    /// interrupts off, it only reclaims: draining needs IPIs. It gives up on any lock
    /// that is busy rather than wait (the caller may hold it: an allocation inside a
    /// statistics walk). Returns the pages released.
    pub fn reclaim_memory(&self) -> usize {
        if I::CPUS > 0 && I::can_take_ipis() {
            self.slab.try_for_each_cache(Walk::NewestFirst, |cache| {
                if let Some(_tuning) = cache.front.tuning.try_lock() {
                    I::on_each_cpu(&|cpu| self.drain_here(cache, cpu, false));
                }
            });
        }
        self.slab.reclaim()
    }
}
