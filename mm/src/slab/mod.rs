//! Layer 2: slab caches (SOS's `kmem_slab`, Linux 2.4's `kmem_cache_t`).
//!
//! A *cache* hands out objects of one size. It gets memory in *slabs* of 2^order pages
//! from the range allocator (layer 3), cuts each slab into equal slots, and keeps the
//! slabs on three lists (full, partial, free). Objects can be *constructed* once, when
//! their slab is made, and stay constructed while free, so that a hot object type (a
//! lock-bearing descriptor, say) pays its initialisation once per slab, not once per
//! allocation. `kmalloc` uses a family of general caches of power-of-two sizes
//! (`general.rs`), which belong here because this layer needs them first.
//!
//! # Where things are
//!
//! | file          | what                                                               |
//! |---------------|--------------------------------------------------------------------|
//! | `caches.rs`   | [`SlabCaches`]: the bootstrap, create, destroy, shrink, reap, alloc and free from the slabs |
//! | `chain.rs`    | the cache chain and its one walk                                   |
//! | `general.rs`  | the general caches (2.4's `cache_sizes`) and [`size_class`]        |
//! | `cache.rs`    | the cache descriptor; taking and giving back objects under its lock |
//! | `ops.rs`      | alloc, free, batches, grow, shrink: the operations on one cache     |
//! | `geometry.rs` | slot size, pages per slab, objects per slab, on/off-slab, colours   |
//! | `descriptor.rs` | the slab descriptor: header, `bufctl` free list, allocation bitmap |
//! | `list.rs`     | the slab lists                                                     |
//! | `owner.rs`    | page -> (cache, slab) in O(1), for `kfree` and for checking frees   |
//! | `debug.rs`    | red zones and poisoning                                            |
//! | `stats.rs`    | [`SlabStats`]                                                      |
//! | `flags.rs`, `error.rs`, `backend.rs` | [`SlabFlags`], [`SlabError`], [`SlabBackend`] (what layer 3 gives) |
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
//! # Locks
//!
//! Each cache has a [`SpinLock`](crate::sync::SpinLock) that disables interrupts (as
//! the kernel's [`InterruptControl`](crate::platform::InterruptControl) means it),
//! because interrupt handlers allocate: a handler that found its own CPU holding the lock
//! it wants would spin forever. Never two cache locks at once; the chain lock
//! (`chain.rs`) comes before any of them. The whole order is the table at the top of the
//! crate ([`crate`]).
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
//! # The layer in front
//!
//! Every cache descriptor carries a [`CacheFront`] for the layer above (the per-CPU
//! arrays), made with the cache and never looked into here. [`SlabCaches::take_batch`]
//! and [`SlabCaches::free_batch`] move up to N objects under one acquisition of the
//! cache lock: the refill and flush of those arrays (`batchcount`). Objects sitting in
//! arrays are free to their users but allocated to the slabs, so the layer above drains
//! them before `shrink`, `destroy` and `reap` (whose `prepare` hook is for that).

mod backend;
mod cache;
mod caches;
mod chain;
mod debug;
mod descriptor;
mod error;
mod flags;
mod general;
mod geometry;
mod list;
mod live;
mod ops;
mod owner;
mod stats;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
pub(crate) mod slab_tests;

pub use backend::SlabBackend;
pub use cache::{CacheFront, SlabCache};
pub use caches::SlabCaches;
pub use chain::Walk;
pub use debug::{POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE};
pub use error::{RedZoneSide, SlabError};
pub use flags::{Constructor, Destructor, SlabFlags};
pub use general::{KMALLOC_CLASSES, KMALLOC_MAX, KMALLOC_MIN, size_class};
pub use geometry::{L1_CACHE_BYTES, MAX_OBJECT_SIZE, MAX_SLAB_ORDER, OFF_SLAB_LIMIT};
pub use ops::{ObjectInfo, Owner, Refused, SlabOptions};
pub use stats::SlabStats;
