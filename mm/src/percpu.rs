//! Layer 1: per-CPU object caches in front of every slab cache (Linux 2.4 with
//! `CONFIG_SMP`: `cpucache_t *cpudata[NR_CPUS]`, `limit`, `batchcount`).
//!
//! Every cache has, for each CPU, an *array cache*: a stack of up to `limit` free
//! objects that only that CPU touches. Allocation pops from it and freeing pushes to it,
//! with the CPU's interrupts off and nothing else: no lock, no atomic read-modify-write,
//! no shared cache line. Only when the stack is empty (a *miss* on allocation) or full (a
//! miss on free) does the CPU take the cache's spinlock, once, to move `batchcount`
//! objects between its stack and the slabs.
//!
//! ```text
//!  alloc                                        free(p)
//!   interrupts off                               interrupts off
//!   avail > 0 ?  p = entries[--avail]   (hit)    avail < limit ?  entries[avail++] = p  (hit)
//!   else lock; take batchcount objects           else lock; give entries[0..batchcount]
//!        from the slabs into entries; unlock          back to the slabs; shift; unlock;
//!        (none? interrupts on, grow, retry)           push p
//!   interrupts restored                          interrupts restored
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
//! An array is an object of a general cache (`size-128` .. `size-1024`), made the first
//! time its CPU uses the cache, with the cache's `limit` and `batchcount` of that moment.
//! It is taken straight from the slab layer, not through another per-CPU array, so
//! making one never recurses. Until the general caches exist (the bootstrap) no array
//! can be made and every operation goes to the slabs.
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
//! # What a free through the array checks
//!
//! Caches with debug checks (red zones or poisoning) get no arrays: every free of theirs
//! is checked in full against its slab. Otherwise a free checks, with no shared write:
//! that the page's owner-table entry names this cache (foreign pointers and frees into
//! the wrong cache), that the pointer starts an object (exactly for on-slab caches, from
//! the slab address in the entry; by alignment for off-slab ones), and that it is not
//! the object just freed (the common double free). What passes these and is still
//! wrong (an aligned pointer inside an object, a double free with other frees between)
//! is caught when the array is flushed, against the slab's allocation bitmap, unless the
//! object was handed out again first: use debug caches to hunt such bugs.

use crate::kmalloc::size_class;
use crate::platform::{CpuLocal, PAGE_SIZE};
use crate::slab::{SlabAllocator, SlabBackend, SlabCache, SlabError, Taken};
use crate::sync::{InterruptsOn, NoInterrupts, SpinLock};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// CPU slots an array table has (the kernel's `smp::MAX_CPUS`).
pub const MAX_CPUS: usize = 64;

/// The largest `limit`: an array of that many entries is 8 KiB (`size-16384`).
pub const MAX_LIMIT: usize = 1000;

/// Bytes before `entries`: the header below, one cache line.
const HEADER: usize = 64;

/// The counters of one CPU's array (2.4's `STATS` for SMP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Allocations served from the array.
    pub alloc_hit: u64,
    /// Allocations that found it empty and refilled it.
    pub alloc_miss: u64,
    /// Frees that found room in the array.
    pub free_hit: u64,
    /// Frees that found it full and flushed part of it.
    pub free_miss: u64,
}

impl CpuCounters {
    fn add(&mut self, other: &Self) {
        self.alloc_hit += other.alloc_hit;
        self.alloc_miss += other.alloc_miss;
        self.free_hit += other.free_hit;
        self.free_miss += other.free_miss;
    }
}

/// One CPU's array for one cache (2.4's `cpucache_t`), followed in memory by `limit`
/// entries. Lives in an object of a general cache, aligned to a cache line at least.
#[repr(C, align(64))]
struct ArrayCache {
    /// Objects in `entries[0..avail]`, the most recently freed last.
    avail: AtomicU32,
    /// Capacity of `entries`.
    limit: u32,
    /// Objects moved per refill or flush.
    batchcount: u32,
    alloc_hit: AtomicU64,
    alloc_miss: AtomicU64,
    free_hit: AtomicU64,
    free_miss: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<ArrayCache>() == HEADER);

/// Adds one to a counter that only the owning CPU writes: no atomic add needed.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A pointer to an array, used only by its owning CPU (or as it).
#[derive(Clone, Copy)]
struct Array(NonNull<ArrayCache>);

impl Array {
    fn header(&self) -> &ArrayCache {
        // SAFETY: a live array (its owner holds it); the header is all atomics or
        // immutable after creation.
        unsafe { self.0.as_ref() }
    }

    fn entries(&self) -> *mut *mut u8 {
        // SAFETY: the entries follow the header inside the same object (`bytes_for`).
        unsafe { self.0.cast::<u8>().add(HEADER).cast::<*mut u8>().as_ptr() }
    }

    fn avail(&self) -> usize {
        self.header().avail.load(Ordering::Relaxed) as usize
    }

    fn set_avail(&self, n: usize) {
        self.header().avail.store(n as u32, Ordering::Relaxed);
    }

    fn counters(&self) -> CpuCounters {
        let h = self.header();
        CpuCounters {
            alloc_hit: h.alloc_hit.load(Ordering::Relaxed),
            alloc_miss: h.alloc_miss.load(Ordering::Relaxed),
            free_hit: h.free_hit.load(Ordering::Relaxed),
            free_miss: h.free_miss.load(Ordering::Relaxed),
        }
    }

    /// The first `n` entries.
    ///
    /// # Safety
    ///
    /// The caller is the owning CPU and `n <= avail`.
    unsafe fn slice(&self, n: usize) -> &[*mut u8] {
        // SAFETY: entries below `avail` were written (caller), in the array's object.
        unsafe { core::slice::from_raw_parts(self.entries(), n) }
    }

    /// Bytes of an array with `limit` entries.
    fn bytes_for(limit: usize) -> usize {
        HEADER + limit * core::mem::size_of::<*mut u8>()
    }
}

/// A cache's per-CPU part (2.4's `cpudata[]` and the `limit`/`batchcount` it is made
/// with).
pub(crate) struct CpuCaches<I: CpuLocal> {
    /// Entries of arrays made from now on; 0: this cache uses no arrays.
    limit: AtomicUsize,
    /// Objects per refill or flush of arrays made from now on.
    batchcount: AtomicUsize,
    /// Each CPU's array, or null. Written only by (or as) that CPU, interrupts off.
    arrays: [AtomicPtr<ArrayCache>; MAX_CPUS],
    /// Held by whoever drains, frees or reads the arrays from outside (see the module
    /// docs); does not disable interrupts, and is held across `on_each_cpu`.
    tuning: SpinLock<(), InterruptsOn<I>>,
    /// The counters of arrays already freed.
    retired: SpinLock<CpuCounters, NoInterrupts>,
}

impl<I: CpuLocal> CpuCaches<I> {
    /// The per-CPU part of a new cache with slots of `slot` bytes: 2.4's
    /// `enable_cpucache` defaults (scaled for 8-byte pointers), none for debug caches.
    pub fn new(slot: usize, debug: bool) -> Self {
        let limit = match slot {
            _ if debug => 0,
            0..=256 => 120,
            257..=1024 => 54,
            1025..=PAGE_SIZE => 24,
            _ => 8,
        };
        Self {
            limit: AtomicUsize::new(limit),
            batchcount: AtomicUsize::new(limit.div_ceil(2)),
            arrays: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS],
            tuning: SpinLock::new(()),
            retired: SpinLock::new(CpuCounters::default()),
        }
    }

    fn array(&self, cpu: usize) -> Option<Array> {
        NonNull::new(self.arrays[cpu].load(Ordering::Acquire)).map(Array)
    }
}

/// One cache's per-CPU figures, summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Entries of arrays made from now on (0: no per-CPU arrays).
    pub limit: usize,
    /// Objects per refill or flush.
    pub batchcount: usize,
    /// CPUs with an array now.
    pub arrays: usize,
    /// Objects sitting in arrays now (counted as active by the slabs).
    pub cached: usize,
    /// The hit and miss counters, arrays freed since included.
    pub counters: CpuCounters,
    /// Times the cache's spinlock was taken, for any reason.
    pub lock_acquisitions: u64,
}

impl<B: SlabBackend, I: CpuLocal> SlabAllocator<B, I> {
    const CPUS_FIT: () = assert!(I::CPUS <= MAX_CPUS, "more CPUs than array slots");

    /// An object of `cache`: from this CPU's array when it has one, else from the slabs.
    pub(crate) fn cache_alloc(&self, cache: &SlabCache<I>) -> Result<NonNull<u8>, SlabError> {
        let () = Self::CPUS_FIT;
        if I::CPUS > 0 {
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
                        self.grow_or_reclaim(cache)?;
                    }
                }
            }
        }
        match self.core.alloc(cache) {
            Err(SlabError::OutOfMemory) if self.reclaim() > 0 => self.core.alloc(cache),
            result => result,
        }
    }

    /// With interrupts off: an object from this CPU's array, refilled if empty.
    /// `Ok(None)`: this CPU has no array for the cache (use the slabs); `Err`: the array
    /// is empty and so are the slabs.
    fn alloc_here(&self, cache: &SlabCache<I>) -> Result<Option<NonNull<u8>>, ()> {
        let cpu = I::current_cpu();
        let Some(array) = cache.cpu.array(cpu).or_else(|| self.make_array(cache, cpu)) else {
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
        avail -= 1;
        array.set_avail(avail);
        // SAFETY: our array, interrupts off; entry `avail` was written by a free or a
        // refill.
        let object = unsafe { *array.entries().add(avail) };
        Ok(NonNull::new(object))
    }

    /// Takes up to `batchcount` objects from the slabs into an empty array, under one
    /// acquisition of the cache lock (2.4's `kmem_cache_alloc_batch`). Returns how many.
    fn refill(&self, cache: &SlabCache<I>, array: Array) -> usize {
        let batch = array.header().batchcount as usize;
        let mut n = 0;
        let mut quarantined = None;
        {
            let mut st = cache.state.lock();
            while n < batch {
                match cache.take(&mut st) {
                    Taken::Object(object) => {
                        // SAFETY: our array, interrupts off; `n < batchcount <= limit`.
                        unsafe { array.entries().add(n).write(object.as_ptr()) };
                        n += 1;
                    }
                    Taken::Empty => break,
                    Taken::Quarantined(error) => {
                        quarantined = Some(error);
                        break;
                    }
                }
            }
        }
        array.set_avail(n);
        if let Some(error) = quarantined {
            self.core.report(&error);
        }
        n
    }

    /// Gives `object` back to `cache`: into this CPU's array when it has one, else to
    /// its slab.
    pub(crate) fn cache_free(&self, cache: &SlabCache<I>, addr: usize) -> Result<(), SlabError> {
        if I::CPUS > 0 {
            let saved = I::disable();
            let result = self.free_here(cache, addr);
            // SAFETY: `saved` is from the `disable` above, the latest one.
            unsafe { I::restore(saved) };
            if let Some(result) = result {
                return result;
            }
        }
        self.core.free(cache, addr)
    }

    /// With interrupts off: pushes `addr` on this CPU's array, flushing half of it first
    /// if full. `None`: no array, or a suspicious pointer that the slab path must judge.
    fn free_here(&self, cache: &SlabCache<I>, addr: usize) -> Option<Result<(), SlabError>> {
        let cpu = I::current_cpu();
        let array = cache
            .cpu
            .array(cpu)
            .or_else(|| self.make_array(cache, cpu))?;
        if !self.plausible_object(cache, addr) {
            return None;
        }
        let h = array.header();
        let mut avail = array.avail();
        // SAFETY: our array, interrupts off, `avail - 1 < avail`.
        if avail > 0 && unsafe { *array.entries().add(avail - 1) }.addr() == addr {
            let error = SlabError::DoubleFree {
                cache: cache.name,
                addr,
            };
            cache.state.lock().counters.errors += 1;
            self.core.report(&error);
            return Some(Err(error));
        }
        let mut flushed = Ok(());
        if avail < h.limit as usize {
            bump(&h.free_hit);
        } else {
            bump(&h.free_miss);
            let batch = h.batchcount as usize;
            // SAFETY: our array, interrupts off, `batch <= limit == avail`.
            flushed = self.core.free_batch(cache, unsafe { array.slice(batch) });
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
        // An error of the flush concerns an object freed earlier (it was reported); this
        // one is cached.
        let _ = flushed;
        Some(Ok(()))
    }

    /// The checks of a free through an array (module docs), reading only the owner
    /// table: its entry must name `cache`, and `addr` must start an object. With the
    /// descriptor on the slab, the objects' start follows from the entry's slab pointer
    /// (`s_mem` is the descriptor plus `desc_area`), so the check is exact; off the slab,
    /// only the objects' alignment is checked (exact for kmalloc's classes except for the
    /// colour area and tail of a slab).
    fn plausible_object(&self, cache: &SlabCache<I>, addr: usize) -> bool {
        let Some(entry) = self.core.owners.entry(addr) else {
            return false;
        };
        if entry.cache.load(Ordering::Acquire) != cache.as_owner() {
            return false;
        }
        let geo = &cache.geo;
        if geo.off_slab {
            return addr.is_multiple_of(geo.align);
        }
        // A valid object's page cannot change hands while the object is allocated, so
        // the slab word matches the cache word; for a bad pointer a stale pair only makes
        // this guess wrong, and the slab path (or the flush) judges it under the lock.
        let first = entry.slab.load(Ordering::Relaxed).addr() + geo.desc_area + geo.lead;
        addr.checked_sub(first)
            .and_then(|offset| geo.index_of(offset))
            .is_some()
    }

    /// Makes this CPU's array for `cache`, if the layer is on, the cache wants arrays
    /// and the general caches exist. Interrupts are off.
    fn make_array(&self, cache: &SlabCache<I>, cpu: usize) -> Option<Array> {
        if !self.per_cpu_enabled() {
            return None;
        }
        let limit = cache.cpu.limit.load(Ordering::Relaxed);
        let batchcount = cache.cpu.batchcount.load(Ordering::Relaxed);
        if limit == 0 {
            return None;
        }
        let home = self.array_cache_for(limit)?;
        let object = self.core.alloc(home).ok()?.cast::<ArrayCache>();
        // SAFETY: an object of a general cache of at least `bytes_for(limit)` bytes,
        // aligned to its size (at least 128), ours.
        unsafe {
            object.write(ArrayCache {
                avail: AtomicU32::new(0),
                limit: limit as u32,
                batchcount: batchcount.clamp(1, limit) as u32,
                alloc_hit: AtomicU64::new(0),
                alloc_miss: AtomicU64::new(0),
                free_hit: AtomicU64::new(0),
                free_miss: AtomicU64::new(0),
            });
        }
        cache.cpu.arrays[cpu].store(object.as_ptr(), Ordering::Release);
        Some(Array(object))
    }

    /// The general cache that holds arrays of `limit` entries (none during bootstrap).
    fn array_cache_for(&self, limit: usize) -> Option<&SlabCache<I>> {
        let class = size_class(Array::bytes_for(limit))?;
        // SAFETY: general caches live as long as the allocator.
        self.sizes[class]
            .normal
            .map(|ptr| unsafe { &*ptr.as_ptr() })
    }

    /// Empties this CPU's array of `cache` into the slabs; with `free_array`, frees the
    /// array too. Runs on (or as) `cpu`, interrupts off.
    fn drain_here(&self, cache: &SlabCache<I>, cpu: usize, free_array: bool) {
        let Some(array) = cache.cpu.array(cpu) else {
            return;
        };
        let avail = array.avail();
        if avail > 0 {
            // SAFETY: run as the owning CPU with interrupts off; `avail` entries written.
            let _ = self.core.free_batch(cache, unsafe { array.slice(avail) });
            array.set_avail(0);
        }
        if free_array {
            cache.cpu.arrays[cpu].store(core::ptr::null_mut(), Ordering::Release);
            cache.cpu.retired.lock().add(&array.counters());
            let limit = array.header().limit as usize;
            let home = self
                .array_cache_for(limit)
                .expect("an array was made from this general cache");
            let freed = self.core.free(home, array.0.addr().get());
            debug_assert_eq!(freed, Ok(()), "per-CPU array of {}", cache.name);
        }
    }

    /// Empties every CPU's array of `cache` on that CPU (2.4's `drain_cpu_caches`), and
    /// frees the arrays with `free_arrays`. Called with interrupts on.
    pub(crate) fn drain(&self, cache: &SlabCache<I>, free_arrays: bool) {
        if I::CPUS == 0 {
            return;
        }
        let _tuning = cache.cpu.tuning.lock();
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
        self.for_each_cache(|cache| {
            if cache.name != name || found {
                return;
            }
            found = true;
            let debug = cache.geo.red_zone() || cache.geo.poison();
            let limit = if debug { 0 } else { limit };
            cache.cpu.limit.store(limit, Ordering::Relaxed);
            cache.cpu.batchcount.store(batchcount, Ordering::Relaxed);
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
        self.for_each_cache(|cache| {
            if cache.name == name && tuning.is_err() {
                tuning = Ok((
                    cache.cpu.limit.load(Ordering::Relaxed),
                    cache.cpu.batchcount.load(Ordering::Relaxed),
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
            self.for_each_cache(|cache| self.drain(cache, true));
        }
    }

    /// True when caches may have per-CPU arrays.
    pub fn per_cpu_enabled(&self) -> bool {
        I::CPUS > 0 && self.per_cpu.load(Ordering::Relaxed)
    }

    /// Empties every CPU's array of every cache into the slabs (the arrays stay).
    pub fn drain_all(&self) {
        self.for_each_cache(|cache| self.drain(cache, false));
    }

    /// The per-CPU figures of `cache`.
    pub(crate) fn cpu_stats(&self, cache: &SlabCache<I>) -> CpuStats {
        let _tuning = cache.cpu.tuning.lock();
        let on = self.per_cpu_enabled();
        let mut stats = CpuStats {
            limit: if on {
                cache.cpu.limit.load(Ordering::Relaxed)
            } else {
                0
            },
            batchcount: if on {
                cache.cpu.batchcount.load(Ordering::Relaxed)
            } else {
                0
            },
            counters: *cache.cpu.retired.lock(),
            lock_acquisitions: cache.state.acquisitions(),
            ..CpuStats::default()
        };
        for cpu in 0..I::CPUS {
            if let Some(array) = cache.cpu.array(cpu) {
                stats.arrays += 1;
                stats.cached += array.avail();
                stats.counters.add(&array.counters());
            }
        }
        stats
    }
}
