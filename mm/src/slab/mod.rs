//! Layer 2: slab caches (SOS's `kmem_slab`, Linux 2.4's `kmem_cache_t`).
//!
//! A *cache* hands out objects of one size. It gets memory in *slabs* of 2^order pages
//! from the range allocator (layer 3), cuts each slab into equal slots, and keeps the
//! slabs on three lists (full, partial, free). Objects can be *constructed* once, when
//! their slab is made, and stay constructed while free, so that a hot object type (a
//! lock-bearing descriptor, say) pays its initialisation once per slab, not once per
//! allocation. `kmalloc` (in [`crate::kmalloc`]) is a family of general caches of
//! power-of-two sizes on top.
//!
//! # Where things are
//!
//! | file          | what                                                               |
//! |---------------|--------------------------------------------------------------------|
//! | `geometry.rs` | slot size, pages per slab, objects per slab, on/off-slab, colours   |
//! | `descriptor.rs` | the slab descriptor: header, `bufctl` free list, allocation bitmap |
//! | `list.rs`     | the slab lists                                                     |
//! | `cache.rs`    | the cache descriptor; taking and giving back objects under its lock |
//! | `owner.rs`    | page -> (cache, slab) in O(1), for `kfree` and for checking frees   |
//! | `debug.rs`    | red zones and poisoning                                            |
//! | `ops.rs`      | alloc, free, batches, grow, shrink: the operations on one cache     |
//! | `allocator.rs`| [`SlabAllocator`]: the bootstrap, the chain, create, destroy, reap  |
//! | `handle.rs`   | [`Cache`], the handle a user of a cache holds                       |
//! | `stats.rs`    | [`CacheStats`] and `/proc/slabinfo`                                 |
//!
//! # One allocation, one free
//!
//! ```text
//!  alloc(cache)                                   free(cache, p)
//!   lock cache                                     e = owner_table[page of p]   (no lock)
//!   slab = first partial, else first free          lock e.cache; re-read e (unchanged?)
//!   i = slab.free; slab.free = bufctl[i]           i = (p - slab.s_mem) / slot  (exact?)
//!   bitmap[i] = 1; inuse += 1                      bitmap[i] == 1 ?  else DoubleFree
//!   relink slab if it became full                  bufctl[i] = slab.free; slab.free = i
//!   unlock                                         bitmap[i] = 0; inuse -= 1; relink
//!   (no slab? unlock, grow, retry)                 unlock
//! ```
//!
//! Growing (2.4's `kmem_cache_grow`) takes the lock only to pick the next colour and to
//! link the finished slab in; the range allocation, the off-slab descriptor, and the
//! constructors all run with no cache lock held. So a cache lock is never held while
//! waiting for the range or page lock, and constructors may allocate.
//!
//! # Lock order
//!
//! | lock         | protects                                          | may then take          |
//! |--------------|---------------------------------------------------|------------------------|
//! | chain lock   | the list of all caches                            | tuning, one cache lock, range |
//! | tuning lock  | one cache's per-CPU parameters, its drains (IPIs) | one cache lock, range  |
//! | a cache lock | its three slab lists, colour, counters; the owner-table entries of its slabs | range, page |
//! | range lock   | (layer 3)                                         | page                   |
//! | page lock    | (layer 4)                                         | -                      |
//!
//! **Never two cache locks at once.** An off-slab cache allocates its slab descriptor
//! from another cache while growing, i.e. without its own lock; shrinking frees those
//! descriptors after unlocking. Every cache lock is a [`SpinLock`] that disables
//! interrupts (as the kernel's [`InterruptControl`] means it), because interrupt handlers
//! allocate: a handler that found its own CPU holding the lock it wants would spin
//! forever. The chain and tuning locks leave interrupts on: they are held while other
//! CPUs are asked, by IPI, to drain their arrays. They are taken by `create`, `destroy`,
//! `reap`, `shrink`, tuning and `slabinfo`, never on the allocation or free path (an
//! allocation that runs out of memory only *tries* the chain lock, to reclaim).
//!
//! # The bootstrap: the cache of caches
//!
//! Cache descriptors are objects of a cache, `kmem_cache`, the *cache of caches*. Its own
//! descriptor cannot come from itself before it exists. Linux 2.4 makes it a `static`
//! (`cache_cache`, in the seed). We do as SOS's `create_cache_of_caches` does, because
//! our allocator is a value the kernel moves into a static (and tests make many of):
//!
//! 1. Compute the geometry of `kmem_cache` and build its descriptor in a temporary, on
//!    the stack.
//! 2. Grow that temporary cache once: its first slab is an ordinary range from layer 3
//!    (complete by now: the range allocator untied its own knot in
//!    [`crate::bootstrap`]), and the owner table points the slab's page at the
//!    temporary.
//! 3. Allocate one object from it: the home of the real descriptor.
//! 4. Move the temporary into that object, and tie the knot: rewrite the owner-table
//!    entries of the slab to name the real descriptor (SOS: `slab_of_caches->cache =
//!    real_cache_of_caches`). The slab lists need no fixing: they are not circular, so
//!    nothing points back at the moved descriptor (see `list.rs`).
//!
//! After that, `kmem_cache` is a cache like any other, whose first object is its own
//! descriptor. Then the general caches (`size-32` .. `size-131072` and their DMA twins,
//! 2.4's `kmem_cache_sizes_init`) are created in ascending order, so that the small,
//! on-slab ones exist before the large, off-slab ones need them for their descriptors.
//!
//! # Why ON_SLAB and OFF_SLAB (the SOS reader's question)
//!
//! Small objects keep the slab descriptor inside the slab: no extra allocation, and one
//! page does everything. Large objects keep it outside, in an object of a small general
//! cache, so that the objects fill the pages exactly (eight 512-byte objects per page
//! instead of seven). The threshold is 2.4's: a slot of `PAGE_SIZE / 8` or more. Details
//! and the exceptions in `geometry.rs`.
//!
//! # Errors and what is detected
//!
//! Out of memory is an `Err` (null for `GlobalAlloc`), never a panic. Without any debug
//! option, and at the cost of one bit test on the free path, a free is checked against
//! the owner table (is the page a slab of this cache?), the slab's geometry (does `p`
//! start an object?) and the allocation bitmap (is it allocated?): a double free, a
//! pointer the allocator never handed out, and a free into the wrong cache are reported
//! as [`SlabError`]s and change nothing. The debug options add red zones (overruns) and
//! poisoning (writes after free); see `debug.rs`. Every detected error is counted in its
//! cache's statistics and passed to the reporter (`SlabOptions::reporter`).
//!
//! Limits, shared with every allocator without generation tags: a double free of an
//! object that has meanwhile been handed out again frees the new owner's object; and a
//! free racing with the destruction of the cache that owns the page (a `destroy` while
//! someone still frees into it) is outside the contract.
//!
//! # Per-CPU caches (the layer in front)
//!
//! [`Cache::alloc`], [`Cache::free`], kmalloc and kfree go through the calling CPU's
//! array of the cache first ([`crate::percpu`]); what is described above is the miss
//! path. [`Cache::alloc_batch`] and [`Cache::free_batch`] move up to N objects under one
//! acquisition of the cache lock: the refill and flush of those arrays (`batchcount`).
//! Objects sitting in arrays are free to their users but allocated to the slabs, so
//! `shrink`, `destroy` and `reap` drain every CPU's array first.

mod allocator;
mod cache;
mod debug;
mod descriptor;
mod geometry;
mod handle;
mod list;
mod ops;
mod owner;
mod stats;

#[cfg(test)]
mod kmalloc_tests;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub use allocator::SlabAllocator;
pub use debug::{POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE};
pub use geometry::{L1_CACHE_BYTES, MAX_OBJECT_SIZE, MAX_SLAB_ORDER, OFF_SLAB_LIMIT};
pub use handle::Cache;
pub use ops::{ObjectInfo, SlabOptions};
pub use stats::CacheStats;

pub(crate) use cache::{SlabCache, Taken};
pub(crate) use ops::Owner;
pub(crate) use owner::LARGE;

use crate::heap::Heap;
use crate::platform::Platform;
use crate::range::{RangeError, RangeFlags};
#[cfg(doc)]
use crate::sync::{InterruptControl, SpinLock};
use core::fmt;
use core::ptr::NonNull;

/// Cache flags (2.4's `SLAB_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlabFlags(u32);

impl SlabFlags {
    /// None.
    pub const NONE: Self = Self(0);
    /// Align objects to cache lines (small objects: to the smallest power of two that
    /// holds them, so that two never straddle a line).
    pub const HWCACHE_ALIGN: Self = Self(1);
    /// `reap` never takes this cache's free slabs (`shrink` and `destroy` still do).
    pub const NO_REAP: Self = Self(2);
    /// Slabs come from the DMA zone (frames below 16 MiB; each page its own frame).
    pub const DMA: Self = Self(4);
    /// Red zones around every object (see `debug.rs`).
    pub const RED_ZONE: Self = Self(8);
    /// Poison free objects (ignored for caches with a constructor or destructor).
    pub const POISON: Self = Self(16);
    /// Both debug checks.
    pub const DEBUG: Self = Self(8 | 16);
    /// Every valid flag.
    pub const ALL: Self = Self(31);
    /// Internal: one of kmalloc's general caches (never valid in `create_cache`).
    pub(crate) const GENERAL: Self = Self(1 << 31);

    /// The flags from their bits (any bits: `create` rejects unknown ones).
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These flags without those of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl core::ops::BitOr for SlabFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// Initialises an object when its slab is made (2.4's `ctor`).
///
/// # Safety
///
/// Called by the slab layer only, with a pointer to the object's `size` bytes (aligned as
/// the cache says), which nothing else uses during the call.
pub type Constructor = unsafe fn(object: NonNull<u8>);

/// Undoes a constructor when the object's slab is unmade (2.4's `dtor`). The object is
/// in its constructed state, as every free object of a cache with a constructor must be.
///
/// # Safety
///
/// As for [`Constructor`].
pub type Destructor = unsafe fn(object: NonNull<u8>);

/// Which red zone of an object was damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedZoneSide {
    /// The word just before the object (an underrun, or the previous object's overrun).
    Before,
    /// The word just after the object (an overrun).
    After,
}

/// What went wrong. Allocation failures leave everything unchanged; bad frees are
/// detected and leave the caches unchanged (objects with damaged red zones are
/// quarantined, see `debug.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// No memory for a new slab (or a large kmalloc).
    OutOfMemory,
    /// An object size of 0, or above [`MAX_OBJECT_SIZE`].
    InvalidSize {
        /// The size asked for.
        size: usize,
    },
    /// An alignment that is not a power of two, or above the page size.
    InvalidAlign {
        /// The alignment asked for.
        align: usize,
    },
    /// Unknown flag bits.
    InvalidFlags {
        /// The flags given.
        flags: SlabFlags,
    },
    /// `destroy` of a cache that still has objects allocated.
    Busy {
        /// The cache.
        cache: &'static str,
        /// Objects still allocated.
        active: usize,
    },
    /// A pointer that no cache handed out: outside any slab (`cache: None`), or inside a
    /// slab of `cache` but not at the start of an object.
    InvalidFree {
        /// The cache whose slab holds `addr`, if any.
        cache: Option<&'static str>,
        /// The pointer.
        addr: usize,
    },
    /// A free of an object that is already free.
    DoubleFree {
        /// The cache.
        cache: &'static str,
        /// The object.
        addr: usize,
    },
    /// A free through one cache of an object of another.
    WrongCache {
        /// The cache it was freed into.
        expected: &'static str,
        /// The cache that owns it (`"kmalloc (large)"` for a large kmalloc).
        actual: &'static str,
        /// The object.
        addr: usize,
    },
    /// A red zone did not hold the value the object's state calls for.
    RedZone {
        /// The cache.
        cache: &'static str,
        /// The object.
        addr: usize,
        /// Which side.
        side: RedZoneSide,
        /// What the red-zone word held.
        found: u64,
    },
    /// `limit` above [`crate::percpu::MAX_LIMIT`], or `batchcount` not in `1..=limit`.
    InvalidTuning {
        /// The limit asked for.
        limit: usize,
        /// The batch count asked for.
        batchcount: usize,
    },
    /// No cache has that name.
    NoSuchCache,
    /// A free object's poison was overwritten: someone wrote to it after freeing it.
    UseAfterFree {
        /// The cache.
        cache: &'static str,
        /// The object.
        addr: usize,
        /// Offset of the first damaged byte in the object.
        offset: usize,
        /// The byte found there.
        found: u8,
    },
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfMemory => write!(f, "slab: out of memory"),
            Self::InvalidSize { size } => write!(f, "slab: invalid object size {size}"),
            Self::InvalidAlign { align } => write!(f, "slab: invalid alignment {align}"),
            Self::InvalidFlags { flags } => write!(f, "slab: invalid flags {:#x}", flags.0),
            Self::Busy { cache, active } => {
                write!(
                    f,
                    "slab: cache {cache} still has {active} objects allocated"
                )
            }
            Self::InvalidFree { cache: None, addr } => {
                write!(f, "slab: free of {addr:#x}, which no cache handed out")
            }
            Self::InvalidFree {
                cache: Some(cache),
                addr,
            } => write!(
                f,
                "slab: free of {addr:#x}, inside a slab of {cache} but not an object"
            ),
            Self::DoubleFree { cache, addr } => {
                write!(f, "slab: double free of {addr:#x} in cache {cache}")
            }
            Self::WrongCache {
                expected,
                actual,
                addr,
            } => write!(
                f,
                "slab: {addr:#x} freed into cache {expected} but belongs to {actual}"
            ),
            Self::RedZone {
                cache,
                addr,
                side,
                found,
            } => {
                let side = match side {
                    RedZoneSide::Before => "before",
                    RedZoneSide::After => "after",
                };
                write!(
                    f,
                    "slab: red zone {side} object {addr:#x} of cache {cache} overwritten \
                     (found {found:#018x})"
                )
            }
            Self::InvalidTuning { limit, batchcount } => write!(
                f,
                "slab: cannot tune to limit {limit}, batchcount {batchcount}"
            ),
            Self::NoSuchCache => write!(f, "slab: no such cache"),
            Self::UseAfterFree {
                cache,
                addr,
                offset,
                found,
            } => write!(
                f,
                "slab: object {addr:#x} of cache {cache} written after free \
                 (byte {offset} is {found:#04x})"
            ),
        }
    }
}

/// What the slab layer needs from the layers below: runs of whole pages of kernel
/// memory inside one window. Implemented for `&Heap` (the range allocator with
/// `RangeFlags::MAP`); a trait so that the slab layer names one type parameter instead of
/// the heap's lifetimes and platform.
///
/// # Safety
///
/// Implementors guarantee that `alloc_pages` returns the page-aligned start of `pages`
/// pages inside `window()`, readable and writable through `pointer_to`, zeroed when
/// asked, used by nothing else until `free_pages` of that start; that `pages_at` returns
/// the page count of such a run; and that `pointer_to(addr)` has address `addr`.
pub unsafe trait SlabBackend: Sync {
    /// The window every run lies in: (first address, pages).
    fn window(&self) -> (usize, usize);

    /// Allocates and backs `pages` pages (from the DMA zone with `dma`, zeroed with
    /// `zero`); returns the first address.
    fn alloc_pages(&self, pages: usize, dma: bool, zero: bool) -> Result<usize, SlabError>;

    /// Gives back a run that `alloc_pages` returned.
    fn free_pages(&self, start: usize);

    /// The size in pages of the run that starts at `start`.
    fn pages_at(&self, start: usize) -> Option<usize>;

    /// A pointer to the kernel address `addr`.
    fn pointer_to(&self, addr: usize) -> *mut u8;
}

// SAFETY: `new_range` with `MAP` returns page-aligned, mapped (readable, writable),
// unshared pages of the heap's window until `del_range` (the range allocator's contract);
// `Platform::pointer_to` has the given address.
unsafe impl<P: Platform> SlabBackend for &Heap<'_, P> {
    fn window(&self) -> (usize, usize) {
        let ranges = self.stats().ranges;
        (ranges.window_start, ranges.window_pages)
    }

    fn alloc_pages(&self, pages: usize, dma: bool, zero: bool) -> Result<usize, SlabError> {
        let mut flags = RangeFlags::MAP;
        if dma {
            flags = flags | RangeFlags::DMA;
        }
        if zero {
            flags = flags | RangeFlags::ZERO;
        }
        self.new_range(pages, flags).map_err(|error| {
            debug_assert!(
                matches!(
                    error,
                    RangeError::OutOfMemory | RangeError::OutOfVirtualSpace
                ),
                "new_range({pages}, {flags:?}): {error:?}"
            );
            SlabError::OutOfMemory
        })
    }

    fn free_pages(&self, start: usize) {
        let freed = self.del_range(start);
        debug_assert_eq!(freed, Ok(()), "del_range({start:#x})");
    }

    fn pages_at(&self, start: usize) -> Option<usize> {
        self.range_containing(start)
            .filter(|range| range.start == start)
            .map(|range| range.pages)
    }

    fn pointer_to(&self, addr: usize) -> *mut u8 {
        self.platform().pointer_to(addr)
    }
}
