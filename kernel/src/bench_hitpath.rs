//! `bench=hitpath`: instructions per alloc+free pair of the kernel's allocator, counted
//! exactly, on the BSP, then the run ends (`scripts/bench hitpath` boots it).
//!
//! The count: `scripts/bench hitpath` boots QEMU with `-icount shift=0 -accel
//! tcg,thread=single`, where the TSC advances by one per instruction executed. Each loop
//! reads `rdtsc` before and after; the same loop around an allocator that does nothing
//! ([`Empty`]: the loop counter, `black_box`, the stores of a round's pointers, the two
//! `rdtsc`s) is timed the same way and subtracted, so a figure is the allocator's own
//! instructions (its calls, checks and interrupt guard included) per alloc+free pair.
//! Under any other accelerator the TSC counts time, and the figures are not
//! instruction counts.
//!
//! What is measured, 64-byte objects, after a warm-up that grows the slabs and fills
//! the per-CPU array:
//!
//! - `kmalloc`: `kmalloc(64, GFP_KERNEL)` / `kfree` (size class `size-64`);
//! - `kmem_cache`: `Cache::alloc` / `Cache::free` on a dedicated 64-byte cache;
//! - `global_alloc`: `alloc::alloc::alloc` / `dealloc` of a 64-byte, 8-aligned layout,
//!   the path of every `Box` and `Vec` (the allocator shim, `KernelAllocator`, kmalloc);
//!
//! each as `pairs` (alloc then free, again) and `rounds` (1024 allocs, then the 1024
//! frees in reverse order, again: more than a per-CPU array holds, so refills and
//! flushes), with the per-CPU caches on, then again with them off (`-nopercpu`).
//!
//! Interrupts are on, as the kernel runs (so each guard's restore re-enables them); a
//! timer interrupt that lands inside a loop would add its handler's instructions, so
//! each figure is the least of [`TRIES`] runs, and the line gives the spread between
//! them (the script boots with `timer_hz=1`, one tick per 10^9 instructions, so the
//! spread is normally 0). The debug checks (red zones, poisoning) must be off, as
//! they are by default (`slab_debug=off`).

use alloc::vec::Vec;
use core::alloc::Layout;
use core::hint::black_box;
use core::ptr::NonNull;

use mm::kmalloc::Gfp;
use mm::percpu::Cache;
use mm::slab::{SlabError, SlabFlags};
use smp::timer::rdtsc;
use x86_64::instructions::interrupts;

use crate::allocator::{Backend, slab};
use crate::cpu::Cli;
use crate::println;

/// Object size of every loop.
const SIZE: usize = 64;
/// The layout of the `global_alloc` loops.
const LAYOUT: Layout = match Layout::from_size_align(SIZE, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("64 B, 8-aligned is a valid layout"),
};
/// Objects per round.
const ROUND: usize = 1024;
/// Pairs per `pairs` loop.
const PAIRS: u64 = 20_000;
/// Rounds per `rounds` loop (pairs: `ROUNDS * ROUND`).
const ROUNDS: u64 = 10;
/// Each figure is the least of this many runs.
const TRIES: usize = 3;

/// One way to allocate and free a 64-byte object.
trait Api {
    fn alloc(&self) -> NonNull<u8>;

    /// # Safety
    ///
    /// `object` came from this `alloc` and is not used again.
    unsafe fn free(&self, object: NonNull<u8>);

    /// Objects moved between the per-CPU arrays and the slabs so far: (refills +
    /// flushes) x batchcount, from the arrays' counters (every refill here finds a full
    /// batch, and a flush always moves one).
    fn moved(&self) -> u64 {
        0
    }
}

/// [`Api::moved`] from a cache's statistics.
fn moved_of(stats: Option<mm::percpu::CacheStats>) -> u64 {
    stats.map_or(0, |stats| {
        let counters = stats.cpu.counters;
        (counters.alloc_miss + counters.free_miss) * stats.cpu.batchcount as u64
    })
}

#[cold]
#[inline(never)]
fn failed(what: &str, error: &SlabError) -> ! {
    panic!("bench hitpath: {what} failed: {error}")
}

/// kmalloc/kfree through the allocator a kernel subsystem holds (`slab()`, looked up
/// once, as a subsystem keeps its `&Kmalloc`; the `Box` path below pays the lookup).
struct Kmalloc(&'static mm::kmalloc::Kmalloc<Backend, Cli>);

impl Api for Kmalloc {
    #[inline(always)]
    fn alloc(&self) -> NonNull<u8> {
        match self.0.kmalloc(SIZE, Gfp::KERNEL) {
            Ok(object) => object,
            Err(error) => failed("kmalloc", &error),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: from `kmalloc` (this API's `alloc`), not used again (our contract).
        if let Err(error) = unsafe { self.0.kfree(object.as_ptr()) } {
            failed("kfree", &error);
        }
    }

    fn moved(&self) -> u64 {
        moved_of(self.0.caches().stats_of("size-64"))
    }
}

struct KmemCache<'a>(&'a Cache<'static, Backend, Cli>);

impl Api for KmemCache<'_> {
    #[inline(always)]
    fn alloc(&self) -> NonNull<u8> {
        match self.0.alloc() {
            Ok(object) => object,
            Err(error) => failed("kmem_cache_alloc", &error),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: an object of this cache (this API's `alloc`), not used again (our
        // contract); the cache has no constructor, so any state is its constructed one.
        if let Err(error) = unsafe { self.0.free(object) } {
            failed("kmem_cache_free", &error);
        }
    }

    fn moved(&self) -> u64 {
        moved_of(Some(self.0.stats()))
    }
}

struct GlobalAlloc;

impl Api for GlobalAlloc {
    #[inline(always)]
    fn alloc(&self) -> NonNull<u8> {
        // SAFETY: `LAYOUT` has a non-zero size.
        let object = unsafe { alloc::alloc::alloc(LAYOUT) };
        NonNull::new(object).unwrap_or_else(|| alloc::alloc::handle_alloc_error(LAYOUT))
    }

    #[inline(always)]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: allocated by the global allocator with `LAYOUT` (this API's `alloc`),
        // not used again (our contract).
        unsafe { alloc::alloc::dealloc(object.as_ptr(), LAYOUT) };
    }

    fn moved(&self) -> u64 {
        moved_of(slab().caches().stats_of("size-64"))
    }
}

/// The allocator that does nothing: its loops are the harness alone.
struct Empty;

impl Api for Empty {
    #[inline(always)]
    fn alloc(&self) -> NonNull<u8> {
        NonNull::dangling()
    }

    #[inline(always)]
    unsafe fn free(&self, _object: NonNull<u8>) {}
}

/// TSC ticks of `iters` alloc+free pairs.
#[inline(never)]
fn pairs<A: Api>(api: &A, iters: u64) -> u64 {
    let start = rdtsc();
    for _ in 0..iters {
        let object = api.alloc();
        // SAFETY: allocated just above, not used after.
        unsafe { api.free(black_box(object)) };
    }
    rdtsc() - start
}

/// TSC ticks of `rounds` rounds of `slots.len()` allocs then as many frees, in reverse.
#[inline(never)]
fn rounds<A: Api>(api: &A, rounds: u64, slots: &mut [NonNull<u8>]) -> u64 {
    let start = rdtsc();
    for _ in 0..rounds {
        for slot in slots.iter_mut() {
            *slot = api.alloc();
        }
        black_box(&mut *slots);
        for &object in slots.iter().rev() {
            // SAFETY: allocated in this round, freed once, not used after.
            unsafe { api.free(object) };
        }
    }
    rdtsc() - start
}

/// Which loop.
#[derive(Clone, Copy)]
enum Workload {
    Pairs,
    Rounds,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Pairs => "pairs",
            Self::Rounds => "rounds",
        }
    }

    fn pairs(self) -> u64 {
        match self {
            Self::Pairs => PAIRS,
            Self::Rounds => ROUNDS * ROUND as u64,
        }
    }

    /// TSC ticks of one run of this loop over `api`.
    fn run<A: Api>(self, api: &A, slots: &mut [NonNull<u8>]) -> u64 {
        match self {
            Self::Pairs => pairs(api, PAIRS),
            Self::Rounds => rounds(api, ROUNDS, slots),
        }
    }
}

/// The least ticks of [`TRIES`] runs after one warm-up run, the greatest, and the
/// objects moved between the arrays and the slabs in the `TRIES` runs.
fn least_of<A: Api>(api: &A, workload: Workload, slots: &mut [NonNull<u8>]) -> (u64, u64, u64) {
    workload.run(api, slots);
    let (mut least, mut most) = (u64::MAX, 0);
    let moved_before = api.moved();
    for _ in 0..TRIES {
        let ticks = workload.run(api, slots);
        least = least.min(ticks);
        most = most.max(ticks);
    }
    (least, most, api.moved() - moved_before)
}

/// Measures `api` on `workload` and prints its line.
fn report<A: Api>(name: &str, api: &A, workload: Workload, slots: &mut [NonNull<u8>]) {
    let (empty, ..) = least_of(&Empty, workload, slots);
    let (least, most, moved) = least_of(api, workload, slots);
    let pairs = workload.pairs();
    let per_pair = |ticks: u64| ticks as f64 / pairs as f64;
    println!(
        "hitpath: {name} {} {:.1} insns/pair (raw {:.1}, empty loop {:.1}, {pairs} pairs, \
         spread {:.1}, moved {:.3} objects/pair)",
        workload.name(),
        per_pair(least.saturating_sub(empty)),
        per_pair(least),
        per_pair(empty),
        per_pair(most - least),
        moved as f64 / (TRIES as u64 * pairs) as f64,
    );
}

/// Runs every measurement and prints one line each (see the module docs).
pub fn run() {
    let slab = slab();
    if slab.caches().slab().debug() {
        log::warn!("bench hitpath: slab debug checks are on: the figures include them");
    }
    // As the kernel runs: the guard's restore then re-enables them (`sti`).
    let interrupts_were_on = interrupts::are_enabled();
    interrupts::enable();
    println!(
        "hitpath: kernel {} build, interrupts on, {TRIES} tries each, least kept",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    let cache = slab
        .caches()
        .create_cache("hitpath-64", SIZE, 0, SlabFlags::HWCACHE_ALIGN, None, None)
        .unwrap_or_else(|error| failed("creating the hitpath-64 cache", &error));
    let mut slots = Vec::new();
    slots.resize(ROUND, NonNull::dangling());
    let was_on = slab.caches().per_cpu_enabled();
    for per_cpu in [true, false] {
        slab.caches().set_per_cpu(per_cpu);
        let suffix = if per_cpu { "" } else { "-nopercpu" };
        for workload in [Workload::Pairs, Workload::Rounds] {
            let kmalloc = alloc::format!("kmalloc{suffix}");
            report(&kmalloc, &Kmalloc(slab), workload, &mut slots);
            let kmem_cache = alloc::format!("kmem_cache{suffix}");
            report(&kmem_cache, &KmemCache(&cache), workload, &mut slots);
            let global_alloc = alloc::format!("global_alloc{suffix}");
            report(&global_alloc, &GlobalAlloc, workload, &mut slots);
        }
    }
    slab.caches().set_per_cpu(was_on);
    drop(slots);
    if let Err((_, error)) = cache.destroy() {
        failed("destroying the hitpath-64 cache", &error);
    }
    if !interrupts_were_on {
        interrupts::disable();
    }
    println!("hitpath: done");
}
