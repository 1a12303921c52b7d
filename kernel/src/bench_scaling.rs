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
//! The workloads, on every CPU at once (`smp_boot::run_on_every_cpu`), from a common
//! start (a barrier; the last CPU to arrive sets the deadline) for `bench_ms`:
//!
//! - `pairs`: alloc and free of 64 B, again;
//! - `rounds`: 1024 allocations of 64 B, then the 1024 frees in reverse;
//! - `prodcons`: CPU i allocates 64 B objects and hands them to CPU i+1 (mod n) through
//!   a single-producer single-consumer ring; each CPU frees what its ring brings
//!   (cross-CPU frees; with one CPU it hands them to itself);
//! - `random`: a table of 256 slots per CPU; each step picks a slot, frees its object
//!   or allocates one of 16 B..4 KiB (a power-of-two class picked uniformly, then a
//!   size uniformly within it), so lifetimes are random.
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
use core::alloc::Layout;
use core::hint::black_box;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use mm::kmalloc::{Gfp, Kmalloc};
use mm::platform::{CpuLocal, InterruptControl};
use mm::slab::SlabOptions;
use mm::sync::SpinLock;
use mm::{PAGE_SIZE, RangeFlags};
use smp::timer::{rdtsc, tsc_hz};
use smp::{MAX_CPUS, percpu};

use crate::allocator::{Backend, slab};
use crate::cpu::Cli;
use crate::heap::HEAP;
use crate::println;

/// Object size of `pairs`, `rounds` and `prodcons`.
const SMALL: usize = 64;
/// Objects per round of `rounds`.
const ROUND: usize = 1024;
/// Slots of a `prodcons` ring (a power of two). Many, because under TCG on a busy
/// host the consumer's vCPU thread may not run for a whole host time slice: with 256
/// slots the producer spent most of such a slice waiting for room, and the figure
/// measured the host's scheduler.
const RING: usize = 4096;
/// Live-object slots per CPU in `random`.
const RANDOM_SLOTS: usize = 256;
/// Bytes of RAM each talc instance gets: far more than the workloads keep live
/// (`random` holds at most 256 x 4 KiB per CPU).
const TALC_BYTES: usize = 16 << 20;
/// Operations between two looks at the clock.
const BATCH: usize = 64;

/// The allocators, in the order of the output.
const ALLOCATORS: [&str; 3] = ["mm", "mm-nopercpu", "talc"];
/// The workloads, in the order of the output.
const WORKLOADS: [Workload; 4] = [
    Workload::Pairs,
    Workload::Rounds,
    Workload::ProdCons,
    Workload::Random,
];

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

/// One allocator as the workloads drive it.
trait Allocator: Sync {
    fn alloc(&self, size: usize) -> NonNull<u8>;

    /// # Safety
    ///
    /// `object` came from this allocator's `alloc` with this `size`, and is not used
    /// again.
    unsafe fn free(&self, object: NonNull<u8>, size: usize);
}

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

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("bench sizes make valid layouts")
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

// --- latency histograms ---------------------------------------------------------

/// Buckets: exact below 64 cycles, then 32 per power of two up to 2^63.
const BUCKETS: usize = 64 + 58 * 32;

/// A log-linear histogram of TSC cycles.
struct Histogram {
    counts: Vec<u64>,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: alloc::vec![0; BUCKETS],
            max: 0,
        }
    }

    fn bucket(cycles: u64) -> usize {
        if cycles < 64 {
            return cycles as usize;
        }
        let exponent = 63 - cycles.leading_zeros() as usize; // >= 6
        let step = (cycles >> (exponent - 5)) as usize & 31;
        64 + (exponent - 6) * 32 + step
    }

    /// The least value of a bucket.
    fn floor(bucket: usize) -> u64 {
        if bucket < 64 {
            return bucket as u64;
        }
        let exponent = (bucket - 64) / 32 + 6;
        let step = ((bucket - 64) % 32) as u64;
        (32 + step) << (exponent - 5)
    }

    #[inline(always)]
    fn record(&mut self, cycles: u64) {
        self.counts[Self::bucket(cycles)] += 1;
        self.max = self.max.max(cycles);
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.max = self.max.max(other.max);
    }

    /// The least bucket floor at or above which lie at most 1% of the values.
    fn p99(&self) -> u64 {
        let total: u64 = self.counts.iter().sum();
        let wanted = total - total / 100;
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted && count > 0 {
                return Self::floor(bucket);
            }
        }
        0
    }
}

// --- the workloads --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Pairs,
    Rounds,
    ProdCons,
    Random,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Pairs => "pairs",
            Self::Rounds => "rounds",
            Self::ProdCons => "prodcons",
            Self::Random => "random",
        }
    }
}

/// A single-producer single-consumer ring of objects (64 B).
struct Ring {
    slots: [AtomicPtr<u8>; RING],
    /// Written by the producer only: objects pushed so far.
    head: CachePadded<AtomicUsize>,
    /// Written by the consumer only: objects taken so far.
    tail: CachePadded<AtomicUsize>,
}

impl Ring {
    fn new() -> Self {
        Self {
            slots: [const { AtomicPtr::new(core::ptr::null_mut()) }; RING],
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    fn has_room(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        head - self.tail.load(Ordering::Acquire) < RING
    }

    /// Producer side; the caller checked [`Self::has_room`].
    fn push(&self, object: NonNull<u8>) {
        let head = self.head.load(Ordering::Relaxed);
        self.slots[head % RING].store(object.as_ptr(), Ordering::Relaxed);
        self.head.store(head + 1, Ordering::Release);
    }

    /// Consumer side.
    fn pop(&self) -> Option<NonNull<u8>> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        let object = self.slots[tail % RING].load(Ordering::Relaxed);
        self.tail.store(tail + 1, Ordering::Release);
        NonNull::new(object)
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 16 B..4 KiB: a class [2^k, 2^(k+1)) for k in 4..12 picked uniformly, then a
    /// size in it (4 KiB itself for the last).
    fn size(&mut self) -> usize {
        let random = self.next();
        let class = 4 + (random % 8) as u32;
        let size = (1usize << class) + ((random >> 8) as usize & ((1 << class) - 1));
        size.min(4096)
    }
}

/// What one CPU measured in one cell.
struct CpuResult {
    operations: u64,
    /// TSC cycles from the common start to this CPU's last operation.
    cycles: u64,
    alloc: Option<Histogram>,
    free: Option<Histogram>,
}

/// One cell's shared state.
struct Cell<'a, A: Allocator> {
    allocator: &'a A,
    workload: Workload,
    cpus: usize,
    duration: u64,
    arrived: AtomicUsize,
    go: AtomicBool,
    start: AtomicU64,
    deadline: AtomicU64,
    rings: Vec<Ring>,
    results: Vec<spin::Mutex<Option<CpuResult>>>,
}

/// Calls `op` and records its TSC cycles in `histogram` when timed.
#[inline(always)]
fn timed<R>(histogram: &mut Option<Histogram>, op: impl FnOnce() -> R) -> R {
    match histogram {
        Some(histogram) => {
            let start = rdtsc();
            let result = op();
            histogram.record(rdtsc().wrapping_sub(start));
            result
        }
        None => op(),
    }
}

impl<A: Allocator> Cell<'_, A> {
    /// The barrier: returns the common start once every CPU is here.
    fn wait_for_all(&self) -> (u64, u64) {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.cpus {
            let start = rdtsc();
            self.start.store(start, Ordering::Relaxed);
            self.deadline
                .store(start + self.duration, Ordering::Relaxed);
            self.go.store(true, Ordering::Release);
        }
        while !self.go.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        (
            self.start.load(Ordering::Relaxed),
            self.deadline.load(Ordering::Relaxed),
        )
    }

    fn run(&self, cpu: usize, timed_ops: bool) {
        let new = || timed_ops.then(Histogram::new);
        let (mut alloc_hist, mut free_hist) = (new(), new());
        let a = self.allocator;
        let mut slots: Vec<(usize, usize)> = alloc::vec![(0, 0); ROUND.max(RANDOM_SLOTS)];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1).wrapping_mul(0x1234_5679));
        let (start, deadline) = self.wait_for_all();
        let mut operations = 0u64;
        let mut alloc = |size| timed(&mut alloc_hist, || a.alloc(size));
        let mut free = |object: NonNull<u8>, size| {
            // SAFETY: each workload frees each object it allocated once, with its size.
            timed(&mut free_hist, || unsafe { a.free(object, size) })
        };
        let end = loop {
            match self.workload {
                Workload::Pairs => {
                    for _ in 0..BATCH {
                        let object = alloc(SMALL);
                        free(black_box(object), SMALL);
                    }
                    operations += 2 * BATCH as u64;
                }
                Workload::Rounds => {
                    for slot in slots[..ROUND].iter_mut() {
                        slot.0 = alloc(SMALL).as_ptr() as usize;
                    }
                    black_box(&mut slots);
                    for slot in slots[..ROUND].iter().rev() {
                        free(NonNull::new(slot.0 as *mut u8).expect("allocated"), SMALL);
                    }
                    operations += 2 * ROUND as u64;
                }
                Workload::ProdCons => {
                    let to = &self.rings[(cpu + 1) % self.cpus];
                    for _ in 0..BATCH / 2 {
                        if !to.has_room() {
                            break;
                        }
                        to.push(alloc(SMALL));
                        operations += 1;
                    }
                    while let Some(object) = self.rings[cpu].pop() {
                        free(object, SMALL);
                        operations += 1;
                    }
                }
                Workload::Random => {
                    for _ in 0..BATCH {
                        let index = rng.next() as usize % RANDOM_SLOTS;
                        let slot = &mut slots[index];
                        if slot.0 == 0 {
                            let size = rng.size();
                            *slot = (alloc(size).as_ptr() as usize, size);
                        } else {
                            let (object, size) = core::mem::take(slot);
                            free(NonNull::new(object as *mut u8).expect("live"), size);
                        }
                    }
                    operations += BATCH as u64;
                }
            }
            let now = rdtsc();
            if now >= deadline {
                break now;
            }
        };
        // Not counted: what `random` still holds (a ring's leftovers are the BSP's).
        for (object, size) in slots.iter_mut().map(core::mem::take) {
            if let Some(object) = NonNull::new(object as *mut u8)
                && self.workload == Workload::Random
            {
                // SAFETY: a live object of this allocator, of this size, freed once.
                unsafe { a.free(object, size) };
            }
        }
        *self.results[cpu].lock() = Some(CpuResult {
            operations,
            cycles: end - start,
            alloc: alloc_hist,
            free: free_hist,
        });
    }
}

/// What a cell measured, summed over the CPUs.
struct Figures {
    operations: u64,
    cycles: u64,
    elapsed: u64,
    alloc: Option<Histogram>,
    free: Option<Histogram>,
}

/// Runs `workload` on every CPU over `allocator` for `duration` TSC cycles.
fn measure<A: Allocator>(
    allocator: &A,
    workload: Workload,
    duration: u64,
    timed_ops: bool,
) -> Figures {
    let cpus = percpu::cpu_count();
    let cell = Cell {
        allocator,
        workload,
        cpus,
        duration,
        arrived: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        start: AtomicU64::new(0),
        deadline: AtomicU64::new(0),
        rings: (0..cpus).map(|_| Ring::new()).collect(),
        results: (0..cpus).map(|_| spin::Mutex::new(None)).collect(),
    };
    crate::smp_boot::run_on_every_cpu(&|cpu| cell.run(cpu, timed_ops));
    for ring in &cell.rings {
        while let Some(object) = ring.pop() {
            // SAFETY: a 64 B object of this allocator, handed over and not freed.
            unsafe { allocator.free(object, SMALL) };
        }
    }
    let mut figures = Figures {
        operations: 0,
        cycles: 0,
        elapsed: 0,
        alloc: timed_ops.then(Histogram::new),
        free: timed_ops.then(Histogram::new),
    };
    for result in cell.results.iter().map(|r| r.lock().take()) {
        let result = result.expect("every CPU reports");
        figures.operations += result.operations;
        figures.cycles += result.cycles;
        figures.elapsed = figures.elapsed.max(result.cycles);
        for (sum, part) in [
            (&mut figures.alloc, &result.alloc),
            (&mut figures.free, &result.free),
        ] {
            if let (Some(sum), Some(part)) = (sum.as_mut(), part) {
                sum.merge(part);
            }
        }
    }
    figures
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
    let per_second = figures.operations as f64 * tsc_hz() as f64 / figures.elapsed.max(1) as f64;
    let histogram = |h: &Option<Histogram>| h.as_ref().map_or((0, 0), |h| (h.p99(), h.max));
    let (alloc_p99, alloc_max) = histogram(&latency.alloc);
    let (free_p99, free_max) = histogram(&latency.free);
    println!(
        "scaling: cpus={} alloc={name} workload={} ops={} ms={} ops_per_s={:.0} \
         cycles_per_op={:.1} alloc_p99={alloc_p99} alloc_max={alloc_max} \
         free_p99={free_p99} free_max={free_max} irqoff_max={off} timed_ops={}",
        percpu::cpu_count(),
        workload.name(),
        figures.operations,
        figures.elapsed * 1000 / tsc_hz().max(1),
        per_second,
        figures.cycles as f64 / figures.operations.max(1) as f64,
        latency.operations,
    );
}

/// Runs every cell (see the module docs), `millis` per throughput pass.
pub fn run(millis: u64) {
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
