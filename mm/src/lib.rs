//! `mm`: the kernel memory allocator, as plain Rust over a small platform trait.
//!
//! # The four layers
//!
//! ```text
//!  kmalloc / kmem_cache_alloc                         kfree / kmem_cache_free
//!   [1] per-CPU object caches  percpu.rs  one array of object pointers per CPU
//!                                         and cache; no lock on a hit
//!   [2] slab caches        slab/       caches of objects in slabs of 2^order pages;
//!                          kmalloc.rs  kmalloc size classes and GlobalAlloc
//!   [3] range allocator    range/      kernel virtual address ranges, vmem-style; its
//!                                      descriptors live in a slab cache of their own
//!   [4] page allocator     page/       page descriptors, buddy system, DMA zone
//!   ---------------------- platform.rs map / unmap / translate, implemented by the
//!                                      kernel (page tables) or hosted.rs (an arena)
//! ```
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
//! - [`bootstrap`] cuts the knot that this creates (the first slab of the range cache
//!   is mapped by hand at the start of the window), with a diagram of the result.
//! - [`slab`] (layer 2) is the Linux 2.4 / SOS slab allocator (cache of caches,
//!   on/off-slab descriptors, colouring, ctor/dtor, reap, debug checks, slabinfo), and
//!   [`kmalloc`] the 2.4 size classes and `GlobalAlloc` on top; [`sync`] is the
//!   spinlock they use, generic over what it disables (interrupts, in the kernel).
//! - [`percpu`] (layer 1) puts an array cache per CPU in front of every slab cache
//!   (2.4's `cpucache_t`, `limit`/`batchcount`): a hit touches only the calling CPU's
//!   array with its interrupts off; a miss moves `batchcount` objects under one lock.
//!   Draining goes through [`CpuLocal::on_each_cpu`] (IPIs in the kernel; taking each
//!   CPU's guard in turn on a host, see `hosted_cpus`).
//! - [`Heap`] is what the kernel keeps in a static: both allocators behind their locks.
//! - `hosted` (feature `std`, and tests) runs all of it as an ordinary process.
//!
//! # Lock order
//!
//! | lock          | protects                                     | taken                    |
//! |---------------|----------------------------------------------|--------------------------|
//! | chain lock    | the list of caches (create/destroy/reap)     | first                    |
//! | tuning lock   | one cache's `limit`/`batchcount`, its drains | then                     |
//! | (per-CPU)     | a CPU's arrays: interrupts off, no lock      | -                        |
//! | cache lock    | one cache's slabs and counters               | then at most one of them |
//! | range lock    | the window's segments, the range cache       | then                     |
//! | page lock     | page descriptors, buddy free lists           | last, or alone           |
//!
//! Details in `slab/mod.rs`. A cache grows without holding its lock (as 2.4's
//! `kmem_cache_grow`). Nothing takes the range lock while holding the page lock; the
//! platform is called with the page lock held and must not call back into `mm`.
//!
//! Interrupts: the cache, range and page locks disable them (`sync::InterruptControl`,
//! `Platform::Interrupts`), so an interrupt handler may allocate and free: it can only
//! run where its CPU holds none of them. The chain and tuning locks do not: they are
//! held across `on_each_cpu`, whose IPIs must reach the CPU that waits, and no
//! allocation or free takes them (`reclaim` only tries the chain lock). A CPU that
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
//! The hosted platform tracks every page. Unit tests sit beside the code; the
//! model-based property tests and a long random workload are in `src/tests/`; all of it
//! runs under Miri (`cargo +nightly miri test -p mm --target x86_64-unknown-linux-gnu`).
//! `percpu_tests.rs` runs the per-CPU layer on host threads standing for CPUs
//! (`hosted_cpus`). The benchmarks are `benches/range.rs` and `benches/slab.rs`.

#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod bootstrap;
pub mod heap;
#[cfg(any(test, feature = "std"))]
pub mod hosted;
#[cfg(any(test, feature = "std"))]
pub mod hosted_cpus;
pub mod kmalloc;
pub mod page;
pub mod percpu;
pub mod platform;
pub mod range;
pub mod slab;
pub mod sync;

#[cfg(test)]
mod percpu_tests;
#[cfg(test)]
mod tests;

pub use bootstrap::BootError;
pub use heap::{Heap, HeapStats};
pub use page::{
    FrameError, FrameInfo, PageAllocator, PageDescriptor, PageOwner, PageState, PageStats,
    PhysRegion, Zone,
};
pub use platform::{CpuLocal, MapError, PAGE_SIZE, PhysAddr, Platform};
pub use range::{RangeError, RangeFlags, RangeInfo, RangeKind, RangeStats};
