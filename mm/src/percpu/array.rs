//! The per-CPU arrays themselves: the array cache (2.4's `cpucache_t`, a header and
//! `limit` entries in one object of a general cache) and a cache's table of them
//! ([`CacheArrays`], 2.4's `cpudata[]`), which the slab layer keeps in every cache
//! descriptor for us.
//!
//! An array is touched only by its CPU with interrupts off (or as it, see the
//! [module docs](super)). Its counters are atomics written with a plain load and store
//! (one writer), so that statistics can read them from anywhere; its `entries` are plain
//! memory.
//!
//! Under loom: the header's plain fields (written once, by `ptr::write`, when the array
//! is made) and the entries are raw memory that loom cannot see, so the header carries
//! two [`RaceCheck`]s that stand for them: `init` is read by every use of the header,
//! `entries_check` is read or written by every access to the entries. Both are
//! zero-sized and free in the kernel. Loom then reports an array used by another thread
//! without a happens-before edge from its making (a publication too weak), and two
//! threads touching one array's entries at once (a drain not run as the owning CPU).

use crate::platform::CpuLocal;
use crate::platform::PAGE_SIZE;
use crate::slab::CacheFront;
use crate::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sync::cell::RaceCheck;
use crate::sync::{InterruptsOn, NoInterrupts, SpinLock};
use core::ptr::NonNull;

/// CPU slots an array table has (the kernel's `smp::MAX_CPUS`, QEMU TCG's 255 vCPUs).
///
/// The table is inline in every cache descriptor, 8 bytes a slot: 2040 bytes per cache
/// however few CPUs are present (about 60 caches in the kernel: some 120 KiB). That is
/// kept on purpose: the hit path finds this CPU's array with one load at a fixed offset
/// from the descriptor it already holds, where a table sized at cache creation for the
/// CPUs present would cost a second, dependent load on every allocation and free. What
/// an absent CPU would really cost, its arrays (a cache line plus `limit` entries per
/// cache), it never has: arrays are made by each CPU on its first use of a cache.
#[cfg(not(loom))]
pub const MAX_CPUS: usize = 255;
/// CPU slots an array table has: under loom, the CPUs a model has, so that every cache
/// does not make 255 of loom's atomics in every explored execution.
#[cfg(loom)]
pub const MAX_CPUS: usize = crate::loom_cpus::LOOM_CPUS;

/// The largest `limit`: an array of that many entries is 8064 bytes (`size-8192`).
pub const MAX_LIMIT: usize = 1000;

/// Bytes before `entries`: the header below, one cache line (larger under loom, whose
/// atomics are bigger).
pub(super) const HEADER: usize = core::mem::size_of::<ArrayCache>();

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
    pub(super) fn add(&mut self, other: &Self) {
        self.alloc_hit += other.alloc_hit;
        self.alloc_miss += other.alloc_miss;
        self.free_hit += other.free_hit;
        self.free_miss += other.free_miss;
    }
}

/// One CPU's array for one cache (2.4's `cpucache_t`), followed in memory by `limit`
/// entries. Lives in an object of a general cache, aligned to a cache line at least.
/// (Under loom, `repr(C)` alone: no padding may follow `before_entries`, and loom's
/// atomics make the header longer than a line anyway.)
#[cfg_attr(not(loom), repr(C, align(64)))]
#[cfg_attr(loom, repr(C))]
pub(super) struct ArrayCache {
    /// Stands for the plain fields below (`limit`, `batchcount`, `before_entries`),
    /// written when the array is made, for loom (see the module docs). Zero-sized in the
    /// kernel.
    pub(super) init: RaceCheck,
    /// Stands for the entries, for loom. Zero-sized in the kernel.
    pub(super) entries_check: RaceCheck,
    /// Objects in `entries[0..avail]`, the most recently freed last.
    pub(super) avail: AtomicU32,
    /// Capacity of `entries`.
    pub(super) limit: u32,
    /// Objects moved per refill or flush.
    pub(super) batchcount: u32,
    pub(super) alloc_hit: AtomicU64,
    pub(super) alloc_miss: AtomicU64,
    pub(super) free_hit: AtomicU64,
    pub(super) free_miss: AtomicU64,
    /// Unused: puts `before_entries` in the header's last word.
    pub(super) _spare: u64,
    /// Always null, and right before `entries[0]`: the allocation hit reads
    /// `entries[avail - 1]`, and for an empty array that reads this word, which no
    /// object equals. One test (null or not) covers both "empty" and the pop.
    pub(super) before_entries: *mut u8,
}

#[cfg(not(loom))]
const _: () = assert!(HEADER == 64);
const _: () = assert!(core::mem::offset_of!(ArrayCache, before_entries) == HEADER - 8);

// SAFETY: the header's plain fields are written once, when it is made, and only read
// after (`before_entries` is always null); its counters are atomics. (The entries that
// follow an array's header are its CPU's alone: see the module docs.)
unsafe impl Send for ArrayCache {}
// SAFETY: as above.
unsafe impl Sync for ArrayCache {}

impl ArrayCache {
    /// The header of an array of `limit` entries, `batchcount` per refill or flush,
    /// empty.
    pub(super) fn new(limit: usize, batchcount: usize) -> Self {
        Self {
            init: RaceCheck::new("a per-CPU array's header"),
            entries_check: RaceCheck::new("a per-CPU array's entries"),
            avail: AtomicU32::new(0),
            limit: limit as u32,
            batchcount: batchcount as u32,
            alloc_hit: AtomicU64::new(0),
            alloc_miss: AtomicU64::new(0),
            free_hit: AtomicU64::new(0),
            free_miss: AtomicU64::new(0),
            _spare: 0,
            before_entries: core::ptr::null_mut(),
        }
    }
}

/// Adds one to a counter that only the owning CPU writes: no atomic add needed.
#[inline]
pub(super) fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A pointer to an array, used only by its owning CPU (or as it).
#[derive(Clone, Copy)]
pub(super) struct Array(pub(super) NonNull<ArrayCache>);

impl Array {
    #[inline]
    pub(super) fn header(&self) -> &ArrayCache {
        // SAFETY: a live array (its owner holds it); the header is all atomics or
        // immutable after creation.
        let header = unsafe { self.0.as_ref() };
        // Every use of the header reads what `make_array` wrote.
        header.init.read();
        header
    }

    #[inline]
    pub(super) fn entries(&self) -> *mut *mut u8 {
        // SAFETY: the entries follow the header inside the same object (`bytes_for`).
        unsafe { self.0.cast::<u8>().add(HEADER).cast::<*mut u8>().as_ptr() }
    }

    #[inline]
    pub(super) fn avail(&self) -> usize {
        self.header().avail.load(Ordering::Relaxed) as usize
    }

    #[inline]
    pub(super) fn set_avail(&self, n: usize) {
        self.header().avail.store(n as u32, Ordering::Relaxed);
    }

    pub(super) fn counters(&self) -> CpuCounters {
        let h = self.header();
        CpuCounters {
            alloc_hit: h.alloc_hit.load(Ordering::Relaxed),
            alloc_miss: h.alloc_miss.load(Ordering::Relaxed),
            free_hit: h.free_hit.load(Ordering::Relaxed),
            free_miss: h.free_miss.load(Ordering::Relaxed),
        }
    }

    /// The object freed last (`entries[avail - 1]`), or null for an empty array (the
    /// header's `before_entries`): the allocation hit's pop and empty test in one.
    #[inline]
    pub(super) fn last(&self, avail: usize) -> *mut u8 {
        self.header().entries_check.read();
        // SAFETY: `avail <= limit`; `entries - 1` is the header's `before_entries`, and
        // `entries[avail - 1]` was written when `avail > 0`; both in the array's object.
        unsafe { *self.entries().wrapping_sub(1).add(avail) }
    }

    /// The first `n` entries.
    ///
    /// # Safety
    ///
    /// The caller is the owning CPU and `n <= avail`.
    pub(super) unsafe fn slice(&self, n: usize) -> &[*mut u8] {
        self.header().entries_check.read();
        // SAFETY: entries below `avail` were written (caller), in the array's object.
        unsafe { core::slice::from_raw_parts(self.entries(), n) }
    }

    /// Bytes of an array with `limit` entries.
    pub(super) fn bytes_for(limit: usize) -> usize {
        HEADER + limit * core::mem::size_of::<*mut u8>()
    }
}

/// A cache's per-CPU part (2.4's `cpudata[]` and the `limit`/`batchcount` it is made
/// with): what the slab layer keeps for us in every cache descriptor.
pub struct CacheArrays<I: CpuLocal> {
    /// Entries of arrays made from now on; 0: this cache uses no arrays.
    pub(super) limit: AtomicUsize,
    /// Objects per refill or flush of arrays made from now on.
    pub(super) batchcount: AtomicUsize,
    /// Each CPU's array, or `no_array`. Written only by (or as) that CPU, interrupts
    /// off.
    pub(super) arrays: [AtomicPtr<ArrayCache>; MAX_CPUS],
    /// Where the slot of a CPU without an array points: an array with no entries, so
    /// that the hits need no test for a missing array (its pop finds the null word,
    /// its push finds `avail == limit == 0`: both miss, and the miss makes the array).
    /// Never written after the cache is made.
    no_array: ArrayCache,
    /// Held by whoever drains, frees or reads the arrays from outside (see the module
    /// docs); does not disable interrupts, and is held across `on_each_cpu`.
    pub(super) tuning: SpinLock<(), InterruptsOn<I>>,
    /// The counters of arrays already freed.
    pub(super) retired: SpinLock<CpuCounters, NoInterrupts>,
}

impl<I: CpuLocal> CacheFront for CacheArrays<I> {
    /// The per-CPU part of a new cache with slots of `slot` bytes: 2.4's
    /// `enable_cpucache` defaults (scaled for 8-byte pointers), none for debug caches.
    fn new(slot: usize, debug: bool) -> Self {
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
            // Pointed at `no_array` by `placed`, before the cache is used.
            #[cfg(not(loom))]
            arrays: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS],
            // Loom's atomics cannot be made in `const`.
            #[cfg(loom)]
            arrays: core::array::from_fn(|_| AtomicPtr::new(core::ptr::null_mut())),
            no_array: ArrayCache::new(0, 0),
            tuning: SpinLock::new(()),
            retired: SpinLock::new(CpuCounters::default()),
        }
    }

    fn placed(&self) {
        for slot in &self.arrays {
            slot.store(self.no_array(), Ordering::Relaxed);
        }
    }
}

impl<I: CpuLocal> CacheArrays<I> {
    /// CPU `cpu`'s array, if it has one.
    #[inline]
    pub(super) fn array(&self, cpu: usize) -> Option<Array> {
        let array = self.array_or_none(cpu);
        (array.0.as_ptr() != self.no_array()).then_some(array)
    }

    /// CPU `cpu`'s array, or the array with no entries (`no_array`) if it has none:
    /// what the hits use, where both miss alike.
    #[inline]
    pub(super) fn array_or_none(&self, cpu: usize) -> Array {
        debug_assert!(cpu < MAX_CPUS);
        // SAFETY: `cpu` comes from `CpuLocal::current_cpu` (or `on_each_cpu`), below
        // `CPUS`, which `CpuCaches` checks at compile time to be at most `MAX_CPUS`.
        let slot = unsafe { self.arrays.get_unchecked(cpu) };
        let array = slot.load(Ordering::Acquire);
        debug_assert!(!array.is_null(), "a cache used before it was placed");
        // SAFETY: `placed` pointed every slot at `no_array`, before the cache was used;
        // since, only arrays (and `no_array` again) are stored.
        Array(unsafe { NonNull::new_unchecked(array) })
    }

    /// Forgets CPU `cpu`'s array (it is being freed).
    pub(super) fn clear(&self, cpu: usize) {
        self.arrays[cpu].store(self.no_array(), Ordering::Release);
    }

    /// The array with no entries.
    fn no_array(&self) -> *mut ArrayCache {
        core::ptr::from_ref(&self.no_array).cast_mut()
    }
}
