//! The kernel's allocator: `mm`'s slab layer and kmalloc over the heap, as the
//! `#[global_allocator]` (so `alloc::{Box, Vec, BTreeMap}` work), taking its locks with
//! local interrupts off.

use core::fmt;

use mm::CpuLocal;
use mm::kmalloc::KernelAllocator;
use mm::slab::{SlabAllocator, SlabError, SlabOptions};
use mm::sync::InterruptControl;

use crate::cmdline::CpuCacheTuning;
use crate::heap::{HEAP, KernelPlatform};
use crate::serial::emergency_print;

/// `pushf; cli` ... restore: what every slab lock disables in the kernel.
#[derive(Debug)]
pub struct Cli;

// SAFETY: `cli` masks every maskable interrupt on this CPU, so no interrupt handler
// (the only code that could re-enter `mm` on this CPU) runs until `restore`.
unsafe impl InterruptControl for Cli {
    type State = bool;

    fn disable() -> bool {
        let enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        // A critical section is open: no cross-CPU call may be made or served on this
        // CPU until it closes (rules 2 and 3 in `smp/src/ipi.rs`; counted in debug builds).
        smp::percpu::enter_critical();
        enabled
    }

    unsafe fn restore(enabled: bool) {
        smp::percpu::leave_critical();
        if enabled {
            x86_64::instructions::interrupts::enable();
        }
    }

    /// Before the APs start no CPU can wait for this one, so the boot code may take the
    /// chain and tuning locks with interrupts still off (the APIC is not up yet).
    fn can_take_ipis() -> bool {
        x86_64::instructions::interrupts::are_enabled() || smp::percpu::cpu_count() <= 1
    }

    /// A CPU spinning on an allocator lock with interrupts off cannot take the TLB
    /// shootdown IPI, and the lock holder may be waiting for exactly that answer (rule 1
    /// in `smp/src/ipi.rs`). It never serves calls here (rule 2).
    fn relax() {
        smp::tlb::answer();
        core::hint::spin_loop();
    }
}

// SAFETY: `current_cpu` is the dense index from the GS base (set on the BSP before
// the heap starts, on each AP before it runs anything else), below `MAX_CPUS`, and
// stays put while interrupts are off (nothing migrates between CPUs here: each CPU
// runs its own code). `on_each_cpu` runs `f` on every online CPU, as that CPU,
// with its interrupts off, and waits for all: every CPU that can hold a per-CPU
// array is online (an AP allocates nothing before it reports online).
unsafe impl CpuLocal for Cli {
    const CPUS: usize = smp::MAX_CPUS;

    fn current_cpu() -> usize {
        smp::percpu::current_cpu()
    }

    fn on_each_cpu(f: &(dyn Fn(usize) + Sync)) {
        smp::ipi::on_each_cpu(&|| f(smp::percpu::current_cpu()));
    }
}

/// What the slab layer allocates its pages from.
pub type Backend = &'static mm::Heap<'static, KernelPlatform>;

/// The slab allocator, empty until [`init`].
#[global_allocator]
pub static ALLOCATOR: KernelAllocator<Backend, Cli> = KernelAllocator::new();

/// The slab layer (after [`init`]).
pub fn slab() -> &'static SlabAllocator<Backend, Cli> {
    ALLOCATOR
        .get()
        .expect("the slab allocator is initialised at boot")
}

/// Prints every error the slab layer detects (bad frees, damaged red zones, writes
/// after free): the cache, the address and what was wrong.
fn report(error: &SlabError) {
    emergency_print(format_args!("slab: {}\n", Report(error)));
}

/// The one-line report of a slab error.
pub struct Report<'a>(pub &'a SlabError);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            SlabError::DoubleFree { cache, addr } => {
                write!(f, "double free of {addr:#x} in cache {cache}")
            }
            SlabError::InvalidFree {
                cache: Some(cache),
                addr,
            } => {
                write!(
                    f,
                    "free of {addr:#x}, which is not an object start in cache {cache}"
                )
            }
            SlabError::InvalidFree { cache: None, addr } => {
                write!(f, "free of {addr:#x}, which the allocator never handed out")
            }
            SlabError::WrongCache {
                expected,
                actual,
                addr,
            } => write!(
                f,
                "free of {addr:#x} into cache {expected}, but it belongs to cache {actual}"
            ),
            SlabError::RedZone {
                cache,
                addr,
                side,
                found,
            } => write!(
                f,
                "red zone {side:?} object {addr:#x} in cache {cache} overwritten (found {found:#x})"
            ),
            SlabError::UseAfterFree {
                cache,
                addr,
                offset,
                ..
            } => write!(
                f,
                "write after free: object {addr:#x} in cache {cache}, byte {offset} changed"
            ),
            other => write!(f, "{other:?}"),
        }
    }
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
    match slab().tune_cpucache(cache, limit, batchcount) {
        Ok(()) => log::info!("cpucache: {cache} limit {limit} batchcount {batchcount}"),
        Err(error) => log::warn!("cpucache: cannot tune {cache}: {error:?}"),
    }
}
