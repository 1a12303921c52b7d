//! The scaling workloads on host threads: the same four as the kernel's `bench=scaling`
//! (`kernel/src/bench_scaling.rs`), driven through `GlobalAlloc`, every thread at once.
//!
//! Thread `t` is pinned to host core `t mod cores` (`core_affinity`) and stands for mm's
//! CPU slot `t` (`HostCpus::bind` through [`crate::ours::bind`]; harmless for the other
//! allocators). A barrier gives a common start; the last thread to arrive sets the
//! deadline. The figures and the line printed per cell are the kernel's (TSC cycles,
//! an operation being one alloc or one free), with `side=hosted`; there is no
//! interrupts-off figure on the host.
//!
//! - `pairs`: alloc and free of 64 B, again;
//! - `rounds`: 1024 allocations of 64 B, then the 1024 frees in reverse;
//! - `prodcons`: thread t allocates 64 B objects and hands them to thread t+1 (mod n)
//!   through a single-producer single-consumer ring, which frees them;
//! - `random`: 256 slots per thread; each step frees the object of a random slot or
//!   allocates one of 16 B..4 KiB there.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::histogram::Histogram;

const SMALL: usize = 64;
const ROUND: usize = 1024;
/// Ring slots: enough that a hand-over survives a time slice in which the consumer
/// does not run (oversubscribed runs), as in the kernel.
const RING: usize = 4096;
const RANDOM_SLOTS: usize = 256;
const BATCH: usize = 64;

pub const WORKLOADS: [&str; 4] = ["pairs", "rounds", "prodcons", "random"];

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and exists on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second, measured against the monotonic clock over 50 ms.
pub fn tsc_hz() -> u64 {
    let (start, tsc) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(50));
    let ticks = rdtsc() - tsc;
    (ticks as f64 / start.elapsed().as_secs_f64()) as u64
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("bench sizes make valid layouts")
}

struct Ring {
    slots: Vec<AtomicPtr<u8>>,
    /// Written by the producer only (a line of its own).
    head: CachePadded<AtomicUsize>,
    /// Written by the consumer only.
    tail: CachePadded<AtomicUsize>,
}

impl Ring {
    fn new() -> Self {
        Self {
            slots: (0..RING)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    fn has_room(&self) -> bool {
        self.head.load(Ordering::Relaxed) - self.tail.load(Ordering::Acquire) < RING
    }

    fn push(&self, object: *mut u8) {
        let head = self.head.load(Ordering::Relaxed);
        self.slots[head % RING].store(object, Ordering::Relaxed);
        self.head.store(head + 1, Ordering::Release);
    }

    fn pop(&self) -> Option<*mut u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        let object = self.slots[tail % RING].load(Ordering::Relaxed);
        self.tail.store(tail + 1, Ordering::Release);
        Some(object)
    }
}

/// xorshift64*, with the kernel's size mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn size(&mut self) -> usize {
        let random = self.next();
        let class = 4 + (random % 8) as u32;
        let size = (1usize << class) + ((random >> 8) as usize & ((1 << class) - 1));
        size.min(4096)
    }
}

/// What one thread measured.
struct ThreadResult {
    operations: u64,
    cycles: u64,
    alloc: Option<Histogram>,
    free: Option<Histogram>,
}

/// What a cell measured, over all threads.
pub struct Figures {
    pub operations: u64,
    /// Sum over threads of TSC cycles from the start to their last operation.
    pub cycles: u64,
    /// The longest thread's cycles.
    pub elapsed: u64,
    pub alloc: Option<Histogram>,
    pub free: Option<Histogram>,
}

struct Cell<'a, A: ?Sized> {
    allocator: &'a A,
    workload: &'a str,
    threads: usize,
    duration: u64,
    arrived: AtomicUsize,
    go: AtomicBool,
    start: AtomicU64,
    deadline: AtomicU64,
    rings: Vec<Ring>,
}

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

impl<A: GlobalAlloc + Sync + ?Sized> Cell<'_, A> {
    fn wait_for_all(&self) -> (u64, u64) {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            let start = rdtsc();
            self.start.store(start, Ordering::Relaxed);
            self.deadline
                .store(start + self.duration, Ordering::Relaxed);
            self.go.store(true, Ordering::Release);
        }
        while !self.go.load(Ordering::Acquire) {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        (
            self.start.load(Ordering::Relaxed),
            self.deadline.load(Ordering::Relaxed),
        )
    }

    fn run(&self, thread: usize, timed_ops: bool) -> ThreadResult {
        let new = || timed_ops.then(Histogram::new);
        let (mut alloc_hist, mut free_hist) = (new(), new());
        let a = self.allocator;
        let mut slots: Vec<(usize, usize)> = vec![(0, 0); ROUND.max(RANDOM_SLOTS)];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread as u64 + 1).wrapping_mul(0x1234_5679));
        let (start, deadline) = self.wait_for_all();
        let mut operations = 0u64;
        let mut alloc = |size: usize| {
            // SAFETY: the layout's size is not zero.
            let object = timed(&mut alloc_hist, || unsafe { a.alloc(layout(size)) });
            NonNull::new(object)
                .unwrap_or_else(|| std::alloc::handle_alloc_error(layout(size)))
                .as_ptr()
        };
        let mut free = |object: *mut u8, size: usize| {
            // SAFETY: each workload frees each object it allocated once, with its size.
            timed(&mut free_hist, || unsafe {
                a.dealloc(object, layout(size))
            });
        };
        let end = loop {
            match self.workload {
                "pairs" => {
                    for _ in 0..BATCH {
                        let object = alloc(SMALL);
                        free(black_box(object), SMALL);
                    }
                    operations += 2 * BATCH as u64;
                }
                "rounds" => {
                    for slot in slots[..ROUND].iter_mut() {
                        slot.0 = alloc(SMALL) as usize;
                    }
                    black_box(&mut slots);
                    for slot in slots[..ROUND].iter().rev() {
                        free(slot.0 as *mut u8, SMALL);
                    }
                    operations += 2 * ROUND as u64;
                }
                "prodcons" => {
                    let to = &self.rings[(thread + 1) % self.threads];
                    for _ in 0..BATCH / 2 {
                        if !to.has_room() {
                            break;
                        }
                        to.push(alloc(SMALL));
                        operations += 1;
                    }
                    while let Some(object) = self.rings[thread].pop() {
                        free(object, SMALL);
                        operations += 1;
                    }
                }
                "random" => {
                    for _ in 0..BATCH {
                        let slot = &mut slots[rng.next() as usize % RANDOM_SLOTS];
                        if slot.0 == 0 {
                            let size = rng.size();
                            *slot = (alloc(size) as usize, size);
                        } else {
                            let (object, size) = std::mem::take(slot);
                            free(object as *mut u8, size);
                        }
                    }
                    operations += BATCH as u64;
                }
                other => unreachable!("unknown workload {other}"),
            }
            let now = rdtsc();
            if now >= deadline {
                break now;
            }
        };
        if self.workload == "random" {
            for (object, size) in slots.into_iter().filter(|&(object, _)| object != 0) {
                // SAFETY: a live object of this allocator, of this size, freed once.
                unsafe { a.dealloc(object as *mut u8, layout(size)) };
            }
        }
        ThreadResult {
            operations,
            cycles: end - start,
            alloc: alloc_hist,
            free: free_hist,
        }
    }
}

/// Runs `workload` on `threads` threads over `allocator` for `duration` TSC cycles.
pub fn measure<A: GlobalAlloc + Sync + ?Sized>(
    allocator: &A,
    workload: &str,
    threads: usize,
    duration: u64,
    timed_ops: bool,
) -> Figures {
    let cell = Cell {
        allocator,
        workload,
        threads,
        duration,
        arrived: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        start: AtomicU64::new(0),
        deadline: AtomicU64::new(0),
        rings: (0..threads).map(|_| Ring::new()).collect(),
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (cell, cores, results) = (&cell, &cores, &results);
            scope.spawn(move || {
                if !cores.is_empty() {
                    core_affinity::set_for_current(cores[thread % cores.len()]);
                }
                crate::ours::bind(thread);
                let result = cell.run(thread, timed_ops);
                results.lock().expect("results lock").push(result);
            });
        }
    });
    for ring in &cell.rings {
        while let Some(object) = ring.pop() {
            // SAFETY: a 64 B object of this allocator, handed over and not freed.
            unsafe { allocator.dealloc(object, layout(SMALL)) };
        }
    }
    let mut figures = Figures {
        operations: 0,
        cycles: 0,
        elapsed: 0,
        alloc: timed_ops.then(Histogram::new),
        free: timed_ops.then(Histogram::new),
    };
    for result in results.into_inner().expect("results lock") {
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
