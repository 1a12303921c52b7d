//! `bench=scaling`: allocation throughput and latency with every CPU allocating at
//! once, for mm with its per-CPU caches on and off and for a lock-based peer, in one
//! boot (`scripts/bench scaling` boots once per CPU count), then the run ends.
//!
//! The allocators, all over the RAM of this boot's heap:
//!
//! - `mm`: the kernel's allocator (`kmalloc`/`kfree`), per-CPU caches on;
//! - `mm-nopercpu`: the same with the per-CPU caches off: every operation takes its
//!   cache's lock (`CpuCaches::set_per_cpu(false)`);
//! - `talc`: the `talc` crate, the `no_std` allocator a kernel developer would
//!   otherwise pick, behind one spin lock taken with interrupts off (mm's `SpinLock`
//!   over [`Cli`], the lock mm itself uses), over a region carved from the heap
//!   (`Heap::new_range`, mapped), released at the end.
//!
//! The workloads, the cell loop, the figures of a cell's line and the latency
//! histogram are the `scaling-workloads` crate's (`workloads/`), shared with the hosted
//! half (`bench/src/scaling/`): `pairs`, `rounds`, `prodcons` (cross-CPU frees through
//! a ring) and `random`, on every CPU at once (`smp_boot::run_on_every_cpu`), from a
//! common start, for `bench_ms`. This file supplies the allocators, the clock (the TSC)
//! and the CPUs, and measures what only a kernel has: interrupts off.
//!
//! An operation is one allocation or one free. Each cell prints one line: operations
//! per second (all CPUs), TSC cycles per operation (the CPUs' cycles in the window over
//! their operations), and the latency figures of a second, timed pass (a quarter as
//! long, run first, so it also warms up): p99 and max TSC cycles of one alloc and of
//! one free (every operation timed with `rdtsc`, into a log-linear histogram with
//! 32 steps per power of two, so a p99 is within 1/32 of the true one), and the longest
//! stretch the allocator kept interrupts off. That last figure needs the guard timed:
//! the timed pass runs on twins of the allocators whose interrupt guard is
//! [`TimedCli`] (a fresh `Kmalloc` over the same heap; a second talc region), so the
//! kernel's own allocator pays nothing for it; the twins' figures include the two
//! `rdtsc`s the timed guard adds. Under TCG the TSC counts host time spent emulating:
//! compare ratios within one run, not cycles with real hardware.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mm::kmalloc::{Gfp, Kmalloc};
use mm::platform::{CpuLocal, InterruptControl};
use mm::slab::SlabOptions;
use mm::sync::SpinLock;
use mm::{PAGE_SIZE, RangeFlags};
use scaling_workloads::{Allocator, Cell, Clock, Figures, Line, WORKLOADS, Workload, layout};
use smp::timer::{rdtsc, tsc_hz};
use smp::{MAX_CPUS, percpu};

use crate::allocator::{Backend, slab};
use crate::cpu::Cli;
use crate::heap::HEAP;
use crate::println;

/// Bytes of RAM each talc instance gets: far more than the workloads keep live
/// (`random` holds at most 256 x 4 KiB per CPU).
const TALC_BYTES: usize = 16 << 20;
/// The allocators, in the order of the output.
const ALLOCATORS: [&str; 3] = ["mm", "mm-nopercpu", "talc"];

/// The clock of the workloads: this CPU's TSC.
struct Tsc;

impl Clock for Tsc {
    #[inline(always)]
    fn now() -> u64 {
        rdtsc()
    }
}

// --- the timed interrupt guard ---------------------------------------------------

/// When this CPU's outermost [`TimedCli`] guard disabled interrupts (TSC).
static OFF_SINCE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The longest stretch with interrupts off under a [`TimedCli`] guard, per CPU.
static OFF_LONGEST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// [`Cli`] that also records, per CPU, the longest stretch between disabling
/// interrupts (when they were on) and enabling them again: the allocator's longest
/// interrupts-off stretch (a refill, a flush, a drain, a lock wait). Used only by the
/// twins of the timed pass. Each CPU touches only its own slots, with interrupts off,
/// so relaxed atomics suffice.
#[derive(Debug)]
struct TimedCli;

// SAFETY: `Cli`'s guarantee (interrupts masked on this CPU from `disable` to
// `restore`) is kept: this only adds TSC bookkeeping around `Cli`'s own calls, inside
// the interrupts-off stretch.
unsafe impl InterruptControl for TimedCli {
    type State = bool;

    fn disable() -> bool {
        let enabled = Cli::disable();
        if enabled {
            OFF_SINCE[percpu::current_cpu()].store(rdtsc(), Ordering::Relaxed);
        }
        enabled
    }

    unsafe fn restore(enabled: bool) {
        if enabled {
            let cpu = percpu::current_cpu();
            let stretch = rdtsc().wrapping_sub(OFF_SINCE[cpu].load(Ordering::Relaxed));
            OFF_LONGEST[cpu].fetch_max(stretch, Ordering::Relaxed);
        }
        // SAFETY: `enabled` is what `Cli::disable` returned in our `disable`, and the
        // caller pairs `restore` with that `disable` (our own contract).
        unsafe { Cli::restore(enabled) };
    }

    fn relax() {
        Cli::relax();
    }
}

// SAFETY: every item is `Cli`'s (see its safety comment); only the guard differs, and
// it keeps interrupts off exactly as `Cli` does.
unsafe impl CpuLocal for TimedCli {
    const CPUS: usize = <Cli as CpuLocal>::CPUS;

    fn current_cpu() -> usize {
        <Cli as CpuLocal>::current_cpu()
    }

    fn on_each_cpu(f: &(dyn Fn(usize) + Sync)) {
        <Cli as CpuLocal>::on_each_cpu(f);
    }
}

// --- the allocators -------------------------------------------------------------

/// mm's kmalloc/kfree (the kernel's own instance, or a timed twin).
struct Mm<'a, I: CpuLocal>(&'a Kmalloc<Backend, I>);

impl<I: CpuLocal> Allocator for Mm<'_, I> {
    #[inline(always)]
    fn alloc(&self, size: usize) -> NonNull<u8> {
        match self.0.kmalloc(size, Gfp::KERNEL) {
            Ok(object) => object,
            Err(error) => panic!("bench scaling: kmalloc({size}) failed: {error}"),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, object: NonNull<u8>, _size: usize) {
        // SAFETY: from this instance's `kmalloc`, not used again (our contract).
        if let Err(error) = unsafe { self.0.kfree(object.as_ptr()) } {
            panic!("bench scaling: kfree({object:p}) failed: {error}");
        }
    }
}

/// talc's heap, made `Send` to live in a lock.
struct TalcHeap(talc::Talc<talc::ErrOnOom>);

// SAFETY: talc's raw pointers point into the region it was given, which no one else
// uses; it is only ever reached through the lock, by one CPU at a time.
unsafe impl Send for TalcHeap {}

/// talc behind one spin lock with interrupts off, over a region of the heap.
struct Talc<I: InterruptControl> {
    heap: SpinLock<TalcHeap, I>,
    region: usize,
}

impl<I: InterruptControl> Talc<I> {
    fn new() -> Self {
        let heap = HEAP.get().expect("the heap is up");
        let region = heap
            .new_range(TALC_BYTES / PAGE_SIZE, RangeFlags::MAP)
            .unwrap_or_else(|error| panic!("bench scaling: no region for talc: {error:?}"));
        let mut talc = talc::Talc::new(talc::ErrOnOom);
        // SAFETY: the range is mapped, `TALC_BYTES` long, and ours alone until
        // `release` deletes it, after the last object talc handed out is freed.
        let claimed =
            unsafe { talc.claim(talc::Span::from_base_size(region as *mut u8, TALC_BYTES)) };
        if claimed.is_err() {
            panic!("bench scaling: talc cannot claim its region");
        }
        Self {
            heap: SpinLock::new(TalcHeap(talc)),
            region,
        }
    }

    /// Gives the region back to the heap (every object is freed by then).
    fn release(self) {
        let heap = HEAP.get().expect("the heap is up");
        if let Err(error) = heap.del_range(self.region) {
            panic!("bench scaling: releasing talc's region: {error:?}");
        }
    }
}

impl<I: InterruptControl> Allocator for Talc<I> {
    #[inline(always)]
    fn alloc(&self, size: usize) -> NonNull<u8> {
        // SAFETY: the layout's size is not zero.
        match unsafe { self.heap.lock().0.malloc(layout(size)) } {
            Ok(object) => object,
            Err(()) => panic!("bench scaling: talc is out of memory"),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, object: NonNull<u8>, size: usize) {
        // SAFETY: allocated by this talc with this layout, freed once (our contract).
        unsafe { self.heap.lock().0.free(object, layout(size)) };
    }
}

/// How many CPUs run the cells: every CPU, or the first `bench_workers` (set by `run`).
static WORKERS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The CPUs that run the cells: the first [`WORKERS`] of those online.
fn workers() -> usize {
    percpu::cpu_count().min(WORKERS.load(Ordering::Relaxed))
}

/// Runs `workload` on the working CPUs over `allocator` for `duration` TSC cycles.
fn measure<A: Allocator>(
    allocator: &A,
    workload: Workload,
    duration: u64,
    timed_ops: bool,
) -> Figures {
    let cpus = workers();
    let cell = Cell::<A, Tsc>::new(allocator, workload, cpus, duration, timed_ops);
    let results: Vec<_> = (0..cpus).map(|_| spin::Mutex::new(None)).collect();
    crate::smp_boot::run_on_every_cpu(&|cpu| {
        if cpu < cpus {
            *results[cpu].lock() = Some(cell.run(cpu));
        }
    });
    cell.finish(
        results
            .iter()
            .map(|result| result.lock().take().expect("every CPU reports")),
    )
}

/// The longest interrupts-off stretch of any CPU since the last call (and resets it).
fn longest_off_stretch() -> u64 {
    OFF_LONGEST
        .iter()
        .map(|slot| slot.swap(0, Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

/// Measures one cell: the timed pass on `twin`, then throughput on `allocator`; prints
/// its line.
fn cell<A: Allocator, T: Allocator>(
    name: &str,
    allocator: &A,
    twin: &T,
    workload: Workload,
    millis: u64,
) {
    let cycles_per_ms = tsc_hz() / 1000;
    longest_off_stretch();
    let latency = measure(twin, workload, (millis * cycles_per_ms / 4).max(1), true);
    let off = longest_off_stretch();
    let figures = measure(allocator, workload, millis * cycles_per_ms, false);
    let line = Line {
        throughput: &figures,
        latency: &latency,
        hz: tsc_hz(),
    };
    println!(
        "scaling: cpus={} alloc={name} workload={} {line} irqoff_max={off} timed_ops={}",
        workers(),
        workload.name(),
        latency.operations,
    );
}

/// Runs every cell (see the module docs), `millis` per throughput pass, on the first
/// `workers` CPUs (every CPU with `None`).
pub fn run(millis: u64, workers: Option<usize>) {
    WORKERS.store(workers.unwrap_or(usize::MAX), Ordering::Relaxed);
    if workers.is_some_and(|n| n < percpu::cpu_count()) {
        println!(
            "scaling: {} of {} CPUs run the cells; the others wait",
            self::workers(),
            percpu::cpu_count()
        );
    }
    let slab = slab();
    if slab.caches().slab().debug() {
        log::warn!("bench scaling: slab debug checks are on: the figures include them");
    }
    let heap: Backend = HEAP.get().expect("the heap is up");
    let options = SlabOptions {
        debug: false,
        reporter: None,
        no_per_cpu: false,
    };
    let twin: &'static Kmalloc<Backend, TimedCli> = Box::leak(Box::new(
        Kmalloc::new(heap, options)
            .unwrap_or_else(|error| panic!("bench scaling: no timed twin of mm: {error:?}")),
    ));
    println!(
        "scaling: {} CPUs, {millis} ms per cell (+{} ms timed), TSC {} MHz, allocators {}, \
         workloads pairs rounds prodcons random",
        percpu::cpu_count(),
        millis / 4,
        tsc_hz() / 1_000_000,
        ALLOCATORS.join(" "),
    );
    let was_on = slab.caches().per_cpu_enabled();
    for workload in WORKLOADS {
        for per_cpu in [true, false] {
            slab.caches().set_per_cpu(per_cpu);
            twin.caches().set_per_cpu(per_cpu);
            let name = if per_cpu { "mm" } else { "mm-nopercpu" };
            cell(name, &Mm(slab), &Mm(twin), workload, millis);
        }
        slab.caches().set_per_cpu(was_on);
        let talc = Talc::<Cli>::new();
        let talc_twin = Talc::<TimedCli>::new();
        cell("talc", &talc, &talc_twin, workload, millis);
        talc.release();
        talc_twin.release();
    }
    println!("scaling: done");
}
