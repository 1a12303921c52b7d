//! The kernel's allocator: `mm`'s kmalloc front end (over the per-CPU and slab layers)
//! over the heap, as the `#[global_allocator]` (so `alloc::{Box, Vec, BTreeMap}` work),
//! taking its locks with local interrupts off ([`Cli`]).

use mm::kmalloc::{KernelAllocator, Kmalloc};
use mm::slab::{SlabError, SlabOptions};

use crate::cmdline::CpuCacheTuning;
use crate::cpu::Cli;
use crate::heap::{HEAP, KernelPlatform};
use crate::serial::emergency_print;

/// What the slab layer allocates its pages from.
pub type Backend = &'static mm::Heap<'static, KernelPlatform>;

/// The slab allocator, empty until [`init`].
#[global_allocator]
pub static ALLOCATOR: KernelAllocator<Backend, Cli> = KernelAllocator::new();

/// The slab layer (after [`init`]).
pub fn slab() -> &'static Kmalloc<Backend, Cli> {
    ALLOCATOR
        .get()
        .expect("the slab allocator is initialised at boot")
}

/// Prints every error the slab layer detects (bad frees, damaged red zones, writes
/// after free): the cache, the address and what was wrong.
fn report(error: &SlabError) {
    emergency_print(format_args!("{error}\n"));
}

/// Starts the slab layer and kmalloc over the heap, with or without the per-CPU
/// caches.
pub fn init(debug: bool, per_cpu: bool) {
    let heap = HEAP
        .get()
        .expect("the heap is initialised before the slab layer");
    let options = SlabOptions {
        debug,
        reporter: Some(report),
        no_per_cpu: !per_cpu,
    };
    if let Err(error) = ALLOCATOR.init(heap, options) {
        panic!("cannot start the slab allocator: {error:?}");
    }
    log::info!(
        "slab: cache of caches and kmalloc caches 32 B..128 KiB (+ DMA) ready, debug checks {}, \
         per-CPU caches {}",
        if debug { "on" } else { "off" },
        if per_cpu { "on" } else { "off" }
    );
}

/// Applies a `cpucache=NAME,LIMIT,BATCH` option; says what it did.
pub fn tune(tuning: &CpuCacheTuning<'_>) {
    let CpuCacheTuning {
        cache,
        limit,
        batchcount,
    } = *tuning;
    match slab().caches().tune_cpucache(cache, limit, batchcount) {
        Ok(()) => log::info!("cpucache: {cache} limit {limit} batchcount {batchcount}"),
        Err(error) => log::warn!("cpucache: cannot tune {cache}: {error:?}"),
    }
}
