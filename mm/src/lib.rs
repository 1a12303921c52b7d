//! `mm`: the kernel memory allocator, as plain Rust over a small platform trait.
//!
//! # The four layers, one type each
//!
//! ```text
//!  kmalloc(size) / cache.alloc()                          kfree(ptr) / cache.free(ptr)
//!   front end  kmalloc/   Kmalloc<B, I>     size -> class; blocks beyond 128 KiB;
//!                                           GlobalAlloc, KernelAllocator
//!   [1]        percpu/    CpuCaches<B, I>   one array of object pointers per CPU and
//!                                           cache; no lock on a hit; drain, tune
//!   [2]        slab/      SlabCaches<B,I,F> caches of objects in slabs of 2^order
//!                                           pages; the cache of caches; the general
//!                                           caches (size-32 .. size-131072)
//!   [3]        range/     Heap<P>           kernel virtual address ranges, vmem-style,
//!              heap.rs                      backed by frames; its descriptors live in
//!              bootstrap.rs                 a slab cache of their own
//!   [4]        page/      PageAllocator     page descriptors, buddy system, DMA zone
//!   ---------- platform.rs                  the seam: map / unmap / translate
//!                                           (Platform), interrupts off
//!                                           (InterruptControl), which CPU and run on
//!                                           every CPU (CpuLocal)
//!              sync.rs                      the spinlock, generic over InterruptControl
//! ```
//!
//! Each type owns the one below it (`Kmalloc` holds a `CpuCaches`, which holds a
//! `SlabCaches`, which takes its pages from a `&Heap`, which holds the
//! `PageAllocator`), and a module uses only its own layer, the layers below, `platform`
//! and `sync` (`tests/layering.rs` checks the source). Following `kmalloc(64)`:
//! [`Kmalloc::kmalloc`](kmalloc::Kmalloc::kmalloc) picks the class with
//! [`slab::size_class`] and its cache with
//! [`SlabCaches::general_cache`](slab::SlabCaches::general_cache);
//! [`CpuCaches::alloc`](percpu::CpuCaches::alloc) pops this CPU's array, or refills it
//! with [`SlabCaches::take_batch`](slab::SlabCaches::take_batch), or grows the cache
//! ([`SlabCaches::grow_or_reclaim`](slab::SlabCaches::grow_or_reclaim)), which asks
//! [`Heap::new_range`] for mapped pages, which takes frames from
//! [`PageAllocator::alloc_frames`].
//!
//! Two knots tie a layer to itself, and are cut by hand at start-up: the range
//! allocator's descriptors live in a slab cache whose slabs are ranges ([`bootstrap`]),
//! and the slab caches' descriptors are objects of the cache of caches (`slab/mod.rs`).
//! 2.4's third knot, the per-CPU arrays being objects of the general caches, is why the
//! general caches belong to layer 2: layer 1 asks for them by size.
//!
//! - [`page`] (layer 4) describes every RAM frame with a [`page::PageDescriptor`]
//!   (state, reference count, owner) and hands out 2^order-frame blocks from a buddy
//!   system per zone, the DMA zone (below 16 MiB) being the last resort of normal
//!   requests. It also answers the SOS reader's question: *why reference a new page, map
//!   it, then unreference it?* (because the mapping then owns the page).
//! - [`range`] (layer 3) hands out runs of pages of a window of kernel virtual address
//!   space, optionally backed by frames (`RangeFlags::MAP`): boundary tags in a
//!   red-black tree, instant-fit free lists, eager coalescing; the descriptors come from
//!   the range cache, a minimal slab allocator whose slabs are ranges of the same window.
//!   [`Heap`] keeps it and the page allocator behind their locks.
//! - [`slab`] (layer 2) is the Linux 2.4 / SOS slab allocator (cache of caches,
//!   on/off-slab descriptors, colouring, ctor/dtor, reap, debug checks, the general
//!   caches of kmalloc's size classes).
//! - [`percpu`] (layer 1) puts an array cache per CPU in front of every slab cache
//!   (2.4's `cpucache_t`, `limit`/`batchcount`): a hit touches only the calling CPU's
//!   array with its interrupts off; a miss moves `batchcount` objects under one lock.
//!   Draining goes through [`CpuLocal::on_each_cpu`] (IPIs in the kernel; taking each
//!   CPU's guard in turn on a host, see `hosted_cpus`). It also writes slabinfo.
//! - [`kmalloc`] is the front end: size classes to caches, large blocks, `GlobalAlloc`.
//! - `hosted` and `hosted_cpus` (feature `std`, and tests) run all of it as an
//!   ordinary process, threads standing for CPUs; `loom_cpus` (`--cfg loom`) does the
//!   same with loom's threads, for the models of `loom-tests/`. Every atomic of the crate
//!   comes from `sync::atomic` (loom's under `--cfg loom`).
//!
//! # Lock order
//!
//! The one table of the crate: each lock may be taken while holding those above it,
//! never the other way round.
//!
//! | lock          | layer | protects                                       | interrupts |
//! |---------------|-------|------------------------------------------------|------------|
//! | chain lock    | 2     | the list of caches (create, destroy, reap, walks) | on      |
//! | tuning lock   | 1     | one cache's arrays seen from outside (drain, tune, stats) | on |
//! | (per-CPU)     | 1     | a CPU's arrays: interrupts off, no lock        | off        |
//! | cache lock    | 2     | one cache's slabs, counters, owner-table entries; at most one at a time | off |
//! | retired lock  | 1     | one cache's counters of freed arrays; taken under its tuning lock only | as the caller |
//! | range lock    | 3     | the window's segments, the range cache         | off        |
//! | page lock     | 4     | page descriptors, buddy free lists             | off        |
//!
//! **Never two cache locks at once**: an off-slab cache allocates its slab descriptor
//! from another cache while growing, i.e. without its own lock, and shrinking frees
//! those descriptors after unlocking. A cache grows without holding its lock (as 2.4's
//! `kmem_cache_grow`). Nothing takes the range lock while holding the page lock; the
//! platform is called with the page lock held and must not call back into `mm`.
//!
//! Interrupts: the cache, range and page locks disable them (`platform::InterruptControl`,
//! `Platform::Interrupts`), so an interrupt handler may allocate and free: it can only
//! run where its CPU holds none of them. The chain and tuning locks do not: they are
//! held across `on_each_cpu`, whose IPIs must reach the CPU that waits, and no
//! allocation or free waits for them (an allocation that runs out of memory only tries
//! them: `CpuCaches::reclaim_memory`). A CPU that
//! spins on a lock with interrupts off calls `InterruptControl::relax`, where the
//! kernel answers TLB shootdowns: the holder may be waiting for that answer (a range
//! deleted under the range lock is shot down from every TLB before its addresses are
//! reused, `Platform::flush_remote_tlbs`).

//! # Booting it (what the kernel does)
//!
//! 1. From the firmware memory map, build the sorted list of RAM regions
//!    ([`page::PhysRegion`], holes allowed).
//! 2. Compute `n = PageAllocator::descriptors_needed(&regions)`, carve
//!    `n * size_of::<PageDescriptor>()` bytes (8-byte aligned) out of free RAM, and view
//!    them through the direct map as a `&'static mut [MaybeUninit<PageDescriptor>]`.
//! 3. `PageAllocator::new(&regions, &reserved, storage)`, where `reserved` lists every
//!    frame already in use: the kernel image, that descriptor storage, the boot page
//!    tables and stacks, firmware data that must survive (ACPI tables, the AP trampoline).
//! 4. Choose a window of kernel virtual address space for the heap, page-aligned and
//!    unused (for example a PML4 slot of its own), and call
//!    `unsafe { Heap::new(platform, page_allocator, window_start, window_pages) }`. Its
//!    first page becomes the bootstrap slab.
//! 5. If some of the window is already in use (the kernel image, when it is linked
//!    inside the window), `heap.reserve(addr, pages)` it before the first allocation.
//! 6. Keep the heap in a `static HEAP: spin::Once<Heap<'static, KernelPlatform>>`.
//!
//! ```ignore
//! let n = PageAllocator::descriptors_needed(&regions);
//! let storage = carve_descriptor_storage(n); // &'static mut [MaybeUninit<PageDescriptor>]
//! let pages = PageAllocator::new(&regions, &reserved, storage)?;
//! // Heap::new's contract: the window is ours alone, `reserved` covers every frame in use.
//! let heap = unsafe { Heap::new(KernelPlatform, pages, HEAP_WINDOW, HEAP_PAGES)? };
//! HEAP.call_once(|| heap);
//! let buf = HEAP.get().unwrap().new_range(4, RangeFlags::MAP | RangeFlags::ZERO)?;
//! ```
//!
//! # Testing
//!
//! The hosted platform tracks every page. Unit tests sit beside the code (files named
//! `*_tests.rs`); the model-based property tests and a long random workload of the
//! ranges are in `src/tests/`; all of it runs under Miri (`cargo +nightly miri test -p mm
//! --target x86_64-unknown-linux-gnu`). `percpu/percpu_tests.rs` runs the per-CPU layer
//! on host threads standing for CPUs (`hosted_cpus`). `tests/layering.rs` checks that no
//! module uses a layer above its own. The benchmarks are `benches/range.rs`,
//! `benches/slab.rs` and `benches/percpu.rs`. Under `--cfg loom` the crate takes its
//! atomics from loom (`sync::atomic`), shows loom the per-CPU arrays' plain memory
//! (`sync::cell::RaceCheck`) and runs its CPUs as loom threads (`loom_cpus`):
//! `loom-tests/` model-checks the cache locking over this very code, and `seeded`
//! holds the defects those models must catch (`--cfg loom_bugs` only).

#![cfg_attr(not(any(test, feature = "std", loom)), no_std)]

pub mod bootstrap;
pub mod heap;
#[cfg(any(test, feature = "std"))]
pub mod hosted;
// Under loom, `loom_cpus` stands for the CPUs instead: `HostCpus` keeps its guards in
// statics of `core`'s atomics, which loom cannot see.
#[cfg(all(any(test, feature = "std"), not(loom)))]
pub mod hosted_cpus;
pub mod kmalloc;
#[cfg(loom)]
pub mod loom_cpus;
pub mod page;
pub mod percpu;
pub mod platform;
pub mod range;
pub mod seeded;
pub mod slab;
pub mod sync;

#[cfg(test)]
mod tests;

pub use bootstrap::BootError;
pub use heap::{Heap, HeapStats};
pub use page::{
    FrameError, FrameInfo, PageAllocator, PageDescriptor, PageOwner, PageState, PageStats,
    PhysRegion, Zone,
};
pub use platform::{CpuLocal, InterruptControl, MapError, PAGE_SIZE, PhysAddr, Platform};
pub use range::{RangeError, RangeFlags, RangeInfo, RangeKind, RangeStats};
