//! One cell of the benchmark: one workload over one allocator on every CPU at once, for
//! a duration. [`Cell`] is the state the CPUs share (the barrier, the deadline, the
//! `prodcons` rings); [`Cell::run`] is one CPU's loop; [`Cell::finish`] frees what the
//! rings still hold and sums what the CPUs measured into [`Figures`]; [`Line`] prints
//! the figures of the cell's line.
//!
//! The contract with the caller: it calls `run` exactly once for every CPU number in
//! `0..cpus`, all at once (each waits at the barrier for the others), and passes every
//! result to `finish`. A timed cell records every operation's cycles into a histogram
//! (two clock reads around each call); an untimed one counts operations only.

use alloc::vec::Vec;
use core::fmt;
use core::hint::black_box;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::histogram::Histogram;
use crate::ring::Ring;
use crate::{Allocator, BATCH, Clock, RANDOM_SLOTS, ROUND, SMALL, Workload};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    /// CPU `cpu`'s generator: each CPU draws its own sequence, the same in every run.
    fn for_cpu(cpu: usize) -> Self {
        Self(0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1).wrapping_mul(0x1234_5679))
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 16 B..4 KiB: a class [2^k, 2^(k+1)) for k in 4..12 picked uniformly, then a
    /// size in it (4 KiB itself for the last).
    #[inline]
    fn size(&mut self) -> usize {
        let random = self.next();
        let class = 4 + (random % 8) as u32;
        let size = (1usize << class) + ((random >> 8) as usize & ((1 << class) - 1));
        size.min(4096)
    }
}

/// What one CPU measured in one cell.
pub struct CpuResult {
    operations: u64,
    /// Clock ticks from the common start to this CPU's last look at the clock.
    cycles: u64,
    alloc: Option<Histogram>,
    free: Option<Histogram>,
}

/// What a cell measured, over all CPUs.
pub struct Figures {
    /// Operations (allocations and frees) of all CPUs.
    pub operations: u64,
    /// The sum over CPUs of the ticks from the common start to their last operation.
    pub cycles: u64,
    /// The longest CPU's ticks.
    pub elapsed: u64,
    /// Every allocation's ticks (a timed cell only).
    pub alloc: Option<Histogram>,
    /// Every free's ticks (a timed cell only).
    pub free: Option<Histogram>,
}

/// One cell's shared state.
pub struct Cell<'a, A: ?Sized, C> {
    allocator: &'a A,
    workload: Workload,
    cpus: usize,
    duration: u64,
    timed_ops: bool,
    arrived: AtomicUsize,
    go: AtomicBool,
    start: AtomicU64,
    deadline: AtomicU64,
    rings: Vec<Ring>,
    clock: PhantomData<fn() -> C>,
}

/// Calls `op` and records its clock ticks in `histogram` when timed.
#[inline(always)]
fn timed<C: Clock, R>(histogram: &mut Option<Histogram>, op: impl FnOnce() -> R) -> R {
    match histogram {
        Some(histogram) => {
            let start = C::now();
            let result = op();
            histogram.record(C::now().wrapping_sub(start));
            result
        }
        None => op(),
    }
}

impl<'a, A: Allocator + ?Sized, C: Clock> Cell<'a, A, C> {
    /// A cell of `workload` over `allocator` on `cpus` CPUs for `duration` ticks of
    /// `C`, every operation timed when `timed_ops`.
    pub fn new(
        allocator: &'a A,
        workload: Workload,
        cpus: usize,
        duration: u64,
        timed_ops: bool,
    ) -> Self {
        Self {
            allocator,
            workload,
            cpus,
            duration,
            timed_ops,
            arrived: AtomicUsize::new(0),
            go: AtomicBool::new(false),
            start: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            rings: (0..cpus).map(|_| Ring::new()).collect(),
            clock: PhantomData,
        }
    }

    /// The barrier: returns the common start and the deadline once every CPU is here.
    fn wait_for_all(&self) -> (u64, u64) {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.cpus {
            let start = C::now();
            self.start.store(start, Ordering::Relaxed);
            self.deadline
                .store(start + self.duration, Ordering::Relaxed);
            self.go.store(true, Ordering::Release);
        }
        while !self.go.load(Ordering::Acquire) {
            C::relax();
        }
        (
            self.start.load(Ordering::Relaxed),
            self.deadline.load(Ordering::Relaxed),
        )
    }

    /// CPU `cpu`'s part of the cell (`cpu` < `cpus`, each once, all at once).
    pub fn run(&self, cpu: usize) -> CpuResult {
        let new = || self.timed_ops.then(Histogram::new);
        let (mut alloc_hist, mut free_hist) = (new(), new());
        let a = self.allocator;
        let mut slots: Vec<(usize, usize)> = alloc::vec![(0, 0); ROUND.max(RANDOM_SLOTS)];
        let mut rng = Rng::for_cpu(cpu);
        let (start, deadline) = self.wait_for_all();
        let mut operations = 0u64;
        let mut alloc = |size| timed::<C, _>(&mut alloc_hist, || a.alloc(size));
        let mut free = |object: NonNull<u8>, size| {
            // SAFETY: each workload frees each object it allocated once, with its size.
            timed::<C, _>(&mut free_hist, || unsafe { a.free(object, size) })
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
            let now = C::now();
            if now >= deadline {
                break now;
            }
        };
        // Not counted: what `random` still holds (a ring's leftovers go in `finish`).
        if self.workload == Workload::Random {
            for (object, size) in slots {
                if let Some(object) = NonNull::new(object as *mut u8) {
                    // SAFETY: a live object of this allocator, of this size, freed once.
                    unsafe { a.free(object, size) };
                }
            }
        }
        CpuResult {
            operations,
            cycles: end - start,
            alloc: alloc_hist,
            free: free_hist,
        }
    }

    /// Frees what the rings still hold (not counted) and sums `results`, one per CPU.
    pub fn finish(self, results: impl IntoIterator<Item = CpuResult>) -> Figures {
        for ring in &self.rings {
            while let Some(object) = ring.pop() {
                // SAFETY: a 64 B object of this allocator, handed over and not freed.
                unsafe { self.allocator.free(object, SMALL) };
            }
        }
        let mut figures = Figures {
            operations: 0,
            cycles: 0,
            elapsed: 0,
            alloc: self.timed_ops.then(Histogram::new),
            free: self.timed_ops.then(Histogram::new),
        };
        for result in results {
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
}

/// The figures of a cell's line that both halves print, `ops=` to `free_max=`: the
/// throughput pass's operations, its milliseconds, operations per second (all CPUs)
/// and ticks per operation (the CPUs' ticks over their operations), then the timed
/// pass's p99 and max of one alloc and of one free.
pub struct Line<'a> {
    /// The throughput pass.
    pub throughput: &'a Figures,
    /// The timed pass.
    pub latency: &'a Figures,
    /// Clock ticks per second.
    pub hz: u64,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            throughput: figures,
            latency,
            hz,
        } = *self;
        let histogram = |h: &Option<Histogram>| h.as_ref().map_or((0, 0), |h| (h.p99(), h.max()));
        let (alloc_p99, alloc_max) = histogram(&latency.alloc);
        let (free_p99, free_max) = histogram(&latency.free);
        write!(
            f,
            "ops={} ms={} ops_per_s={:.0} cycles_per_op={:.1} alloc_p99={alloc_p99} \
             alloc_max={alloc_max} free_p99={free_p99} free_max={free_max}",
            figures.operations,
            figures.elapsed * 1000 / hz.max(1),
            figures.operations as f64 * hz as f64 / figures.elapsed.max(1) as f64,
            figures.cycles as f64 / figures.operations.max(1) as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Cell, Line};
    use crate::{Allocator, Clock, WORKLOADS, layout};
    use core::ptr::NonNull;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Instant;

    /// The system allocator, counting live objects and bytes.
    #[derive(Default)]
    struct Counting {
        objects: AtomicI64,
        bytes: AtomicI64,
    }

    impl Allocator for Counting {
        fn alloc(&self, size: usize) -> NonNull<u8> {
            self.objects.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(size as i64, Ordering::Relaxed);
            // SAFETY: the layout's size is not zero.
            NonNull::new(unsafe { std::alloc::alloc(layout(size)) }).expect("memory")
        }

        unsafe fn free(&self, object: NonNull<u8>, size: usize) {
            self.objects.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(size as i64, Ordering::Relaxed);
            // SAFETY: from `alloc` with this size, freed once (the caller's contract).
            unsafe { std::alloc::dealloc(object.as_ptr(), layout(size)) };
        }
    }

    /// Nanoseconds since the first call.
    struct Nanos;

    impl Clock for Nanos {
        fn now() -> u64 {
            static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
        }

        fn relax() {
            std::thread::yield_now();
        }
    }

    #[test]
    fn every_workload_frees_every_object_it_allocates_with_its_size() {
        for workload in WORKLOADS {
            for cpus in [1, 3] {
                for timed_ops in [false, true] {
                    let counting = Counting::default();
                    let cell =
                        Cell::<_, Nanos>::new(&counting, workload, cpus, 2_000_000, timed_ops);
                    let results = Mutex::new(Vec::new());
                    std::thread::scope(|scope| {
                        for cpu in 0..cpus {
                            let (cell, results) = (&cell, &results);
                            scope.spawn(move || {
                                let result = cell.run(cpu);
                                results.lock().expect("results").push(result);
                            });
                        }
                    });
                    let figures = cell.finish(results.into_inner().expect("results"));
                    let name = workload.name();
                    assert!(figures.operations > 0, "{name}: no operation");
                    assert_eq!(figures.alloc.is_some(), timed_ops, "{name}");
                    assert_eq!(counting.objects.load(Ordering::Relaxed), 0, "{name}");
                    assert_eq!(counting.bytes.load(Ordering::Relaxed), 0, "{name}");
                    let line = Line {
                        throughput: &figures,
                        latency: &figures,
                        hz: 1_000_000_000,
                    }
                    .to_string();
                    assert!(line.starts_with(&format!("ops={} ms=", figures.operations)));
                    assert!(line.contains(" free_max="), "{line}");
                }
            }
        }
    }
}
