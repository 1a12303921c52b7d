//! The SMP stress of the allocator at boot: every CPU allocates and frees at once,
//! and at the end nothing may be lost.
//!
//! The load, on every CPU for `stress=MS` milliseconds:
//!
//! * each CPU keeps a table of live objects; each step picks a slot at random and
//!   either frees the object there or allocates a new one (so lifetimes are random),
//!   from kmalloc (random sizes, mostly small, as in a kernel) or from one of three
//!   dedicated caches;
//! * one step in eight, instead of freeing an object itself, a CPU hands it to a
//!   random other CPU through that CPU's queue; every CPU frees what its queue
//!   brings (the cross-CPU frees that a per-CPU cache must not let pile up);
//! * the timer interrupt allocates and frees too, on every CPU, interrupting the
//!   load wherever it is (between, never inside, the allocator's critical sections,
//!   which keep interrupts off);
//! * one CPU (the last) also shrinks the dedicated caches, reaps, drains every
//!   CPU's arrays and retunes `limit`/`batchcount` while the others allocate.
//!
//! Every object carries a pattern that names its owner (CPU and serial number) and
//! is checked before it is freed: an object handed out twice, or written by anyone
//! else, shows up as a damaged pattern and a panic that names it.
//!
//! The checks at the end: with every object freed and the per-CPU layer drained,
//! every dedicated cache holds 0 active objects (and can be destroyed), every other
//! cache is back to its count before the run, and the page allocator has the free
//! frames it had (less the page-table frames and range-cache slabs the run added).
//! The log gives the share of allocations the per-CPU arrays served and the global
//! lock acquisitions per 1000 operations.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::cpu::IrqLock;
use crossbeam_utils::CachePadded;
use mm::kmalloc::Gfp;
use mm::percpu::Cache;
use mm::slab::{SlabError, SlabFlags};
use smp::{MAX_CPUS, percpu, timer};

use crate::allocator::{Backend, slab};
use crate::cmdline::CpuCacheTuning;
use crate::cpu::Cli;
use crate::heap::{HEAP, TABLE_FRAMES};

/// The dedicated caches: name and object size.
pub const STRESS_CACHES: [(&str, usize); 3] = [
    ("stress-48", 48),
    ("stress-200", 200),
    ("stress-1000", 1000),
];

/// The caches the control CPU retunes (each is restored at its next step).
const TUNED_BY_CONTROL: usize = 5;
const CONTROL_TUNED: [&str; TUNED_BY_CONTROL] = [
    "stress-48",
    "stress-200",
    "size-64",
    "size-256",
    "size-1024",
];
/// Time between two control steps, and after a step that detuned a cache.
const CONTROL_PERIOD_US: u64 = 10_000;
const DETUNED_US: u64 = 1_000;

/// Live objects each CPU keeps.
const LIVE_SLOTS: usize = 192;
/// Objects a CPU's queue holds; a sender frees the object itself when it is full.
const QUEUE_SLOTS: usize = 64;
/// Objects the timer interrupt keeps alive per CPU (replaced one per tick).
const TIMER_SLOTS: usize = 4;

/// What the run is asked to do.
pub struct StressOptions<'a> {
    pub millis: u64,
    pub per_cpu: bool,
    pub tunings: &'a [Option<CpuCacheTuning<'a>>],
    /// The parts of the provoking mode (`provoke.rs`) to run, 0 for none.
    pub provoke: u32,
}

/// One allocated object and the pattern it must still hold.
#[derive(Clone, Copy, Debug)]
struct Object {
    addr: NonNull<u8>,
    /// Bytes filled (the size asked for).
    size: usize,
    /// `None`: kmalloc; `Some(i)`: dedicated cache `i`.
    cache: Option<usize>,
    /// Owner CPU in the top 16 bits, the owner's serial number below.
    tag: u64,
}

// SAFETY: an `Object` is owned by exactly one CPU at a time (its table, a queue or
// its timer slot); handing it over moves it.
unsafe impl Send for Object {}

impl Object {
    fn owner(&self) -> usize {
        (self.tag >> 48) as usize
    }

    /// Writes the tag at the start and a tag-derived byte everywhere else.
    fn fill(&self) {
        let bytes = self.addr.as_ptr();
        // SAFETY: the object is ours and at least `size` (>= 8) bytes long, 8-aligned.
        unsafe {
            bytes.cast::<u64>().write(self.tag);
            core::ptr::write_bytes(bytes.add(8), pattern_byte(self.tag), self.size - 8);
        }
    }

    /// Panics, naming the object and its owner, if the pattern changed.
    fn check(&self, checker: usize) {
        let bytes = self.addr.as_ptr();
        // SAFETY: the object is ours (we hold its record) and `size` bytes long.
        let (tag, rest) = unsafe {
            (
                bytes.cast::<u64>().read(),
                core::slice::from_raw_parts(bytes.add(8), self.size - 8),
            )
        };
        assert!(
            tag == self.tag,
            "stress: object {:p} ({} bytes) of CPU {} checked on CPU {checker}: \
             its tag is {tag:#x}, not {:#x} (handed out twice?)",
            bytes,
            self.size,
            self.owner(),
            self.tag
        );
        if let Some(offset) = rest.iter().position(|&b| b != pattern_byte(self.tag)) {
            panic!(
                "stress: object {:p} ({} bytes) of CPU {} checked on CPU {checker}: \
                 byte {} changed",
                bytes,
                self.size,
                self.owner(),
                offset + 8
            );
        }
    }
}

fn pattern_byte(tag: u64) -> u8 {
    (tag ^ (tag >> 48) ^ 0xa5) as u8
}

/// xorshift64*: cheap, and good enough to pick sizes and slots.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Kernel-like kmalloc sizes: 70% up to 256 bytes, 25% up to 2 KiB, 5% up to 16 KiB.
    fn kmalloc_size(&mut self) -> usize {
        match self.below(100) {
            0..70 => 8 + self.below(249),
            70..95 => 257 + self.below(1792),
            _ => 2049 + self.below(14336),
        }
    }
}

/// A CPU's inbox: objects other CPUs handed to it.
struct Queue {
    objects: [Option<Object>; QUEUE_SLOTS],
    len: usize,
}

/// What one CPU did.
#[derive(Default)]
struct CpuCounts {
    allocations: AtomicU64,
    frees: AtomicU64,
    /// Frees of objects another CPU allocated.
    remote_frees: AtomicU64,
    handed_over: AtomicU64,
    timer_operations: AtomicU64,
    out_of_memory: AtomicU64,
    control_steps: AtomicU64,
}

/// Everything the CPUs share during the run.
struct Shared<'a> {
    caches: [Cache<'a, Backend, Cli>; 3],
    /// What the control CPU detunes and restores: name, limit, batchcount.
    tunings: [(&'static str, usize, usize); TUNED_BY_CONTROL],

    queues: Vec<IrqLock<Queue>>,
    counts: Vec<CachePadded<CpuCounts>>,
    deadline: u64,
    cpus: usize,
    /// The CPU that also shrinks, reaps, drains and retunes.
    control_cpu: usize,
    per_cpu: bool,
    provoke: u32,
}

/// Timer-interrupt load, per CPU: on while that CPU runs the load.
static TIMER_LOAD: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The objects the timer interrupt keeps alive, per CPU: touched only by that CPU,
/// in its timer interrupt or with interrupts off.
static TIMER_OBJECTS: [IrqLock<[Option<Object>; TIMER_SLOTS]>; MAX_CPUS] =
    [const { IrqLock::new([None; TIMER_SLOTS]) }; MAX_CPUS];
/// Timer-interrupt allocations and frees, per CPU.
static TIMER_OPERATIONS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TIMER_SERIAL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The timer-interrupt part of the load (called by every CPU's timer handler):
/// replaces one of this CPU's timer objects, checking the old one.
pub fn timer_tick() {
    let cpu = percpu::current_cpu();
    if !TIMER_LOAD[cpu].load(Ordering::Relaxed) {
        return;
    }
    let serial = TIMER_SERIAL[cpu].fetch_add(1, Ordering::Relaxed);
    let mut slots = TIMER_OBJECTS[cpu].lock();
    let slot = &mut slots[serial as usize % TIMER_SLOTS];
    if let Some(old) = slot.take() {
        old.check(cpu);
        free(None, old);
    }
    let mut rng = Rng::new(serial ^ ((cpu as u64) << 32));
    let size = 8 + rng.below(504);
    // Tags of timer objects have bit 47 set, so they never equal a load object's.
    let tag = ((cpu as u64) << 48) | (1 << 47) | serial;
    if let Ok(addr) = slab().kmalloc(size, Gfp::ATOMIC) {
        let object = Object {
            addr,
            size,
            cache: None,
            tag,
        };
        object.fill();
        *slot = Some(object);
    }
    TIMER_OPERATIONS[cpu].fetch_add(2, Ordering::Relaxed);
}

/// Stops the timer load on this CPU and frees its objects (interrupts off meanwhile,
/// so no tick can race with the cleanup).
fn stop_timer_load(cpu: usize) {
    let mut slots = TIMER_OBJECTS[cpu].lock();
    TIMER_LOAD[cpu].store(false, Ordering::Relaxed);
    for object in slots.iter_mut().filter_map(Option::take) {
        object.check(cpu);
        free(None, object);
    }
}

fn free(caches: Option<&[Cache<'_, Backend, Cli>; 3]>, object: Object) {
    let result = match object.cache {
        // SAFETY: an object of that cache, checked, freed once; nothing keeps it.
        Some(i) => unsafe {
            caches.expect("cache objects come with their caches")[i].free(object.addr)
        },
        // SAFETY: a kmalloc object, checked, freed once; nothing keeps it.
        None => unsafe { slab().kfree(object.addr.as_ptr()) },
    };
    if let Err(error) = result {
        panic!("stress: freeing {:p}: {error}", object.addr);
    }
}

impl Shared<'_> {
    /// One CPU's part of the run.
    fn run(&self, cpu: usize) {
        let counts = &self.counts[cpu];
        let mut rng = Rng::new(cpu as u64 + 1);
        let mut live: [Option<Object>; LIVE_SLOTS] = [None; LIVE_SLOTS];
        let mut serial = 0u64;
        TIMER_LOAD[cpu].store(true, Ordering::Relaxed);
        let mut next_control = timer::deadline_after_us(CONTROL_PERIOD_US);
        let mut detuned = None;
        let mut provoking = (self.provoke != 0).then(|| crate::provoke::Load::new(cpu));
        // At least one round, even after the deadline: with many vCPUs on few host cores
        // (255 on 2), a CPU may first run after a short run is over, and every CPU is
        // to allocate, free and hand over at least once.
        loop {
            for _ in 0..64 {
                self.take_inbox(cpu);
                let slot = &mut live[rng.below(LIVE_SLOTS)];
                match slot.take() {
                    Some(object) => {
                        object.check(cpu);
                        if self.cpus > 1 && rng.below(8) == 0 {
                            let to = (cpu + 1 + rng.below(self.cpus - 1)) % self.cpus;
                            self.hand_over(to, object, cpu);
                        } else {
                            free(Some(&self.caches), object);
                            counts.frees.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        serial += 1;
                        match self.allocate(&mut rng, ((cpu as u64) << 48) | serial) {
                            Ok(object) => {
                                *slot = Some(object);
                                counts.allocations.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(SlabError::OutOfMemory) => {
                                counts.out_of_memory.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => panic!("stress: allocation failed: {error:?}"),
                        }
                    }
                }
            }
            if let Some(load) = &mut provoking {
                load.step(rng.next());
            }
            if cpu == self.control_cpu && timer::expired(next_control) {
                let pause = self.control_step(&mut rng, &mut detuned);
                next_control = timer::deadline_after_us(pause);
                counts.control_steps.fetch_add(1, Ordering::Relaxed);
            }
            if timer::expired(self.deadline) {
                break;
            }
        }
        if let Some(i) = detuned {
            let (name, limit, batchcount) = self.tunings[i];
            self.tune(name, limit, batchcount);
        }
        if let Some(load) = &mut provoking {
            load.finish();
        }
        for object in live.iter_mut().filter_map(Option::take) {
            object.check(cpu);
            free(Some(&self.caches), object);
            counts.frees.fetch_add(1, Ordering::Relaxed);
        }
        x86_64::instructions::interrupts::without_interrupts(|| stop_timer_load(cpu));
        counts.timer_operations.store(
            TIMER_OPERATIONS[cpu].load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    fn allocate(&self, rng: &mut Rng, tag: u64) -> Result<Object, SlabError> {
        let (addr, size, cache) = if rng.below(100) < 60 {
            let size = rng.kmalloc_size();
            (slab().kmalloc(size, Gfp::KERNEL)?, size, None)
        } else {
            let i = rng.below(self.caches.len());
            let cache = &self.caches[i];
            (cache.alloc()?, cache.object_size(), Some(i))
        };
        let object = Object {
            addr,
            size,
            cache,
            tag,
        };
        object.fill();
        Ok(object)
    }

    fn hand_over(&self, to: usize, object: Object, cpu: usize) {
        let counts = &self.counts[cpu];
        let mut queue = self.queues[to].lock();
        if queue.len < QUEUE_SLOTS {
            let len = queue.len;
            queue.objects[len] = Some(object);
            queue.len += 1;
            counts.handed_over.fetch_add(1, Ordering::Relaxed);
        } else {
            drop(queue);
            free(Some(&self.caches), object);
            counts.frees.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frees what other CPUs handed to `cpu`.
    fn take_inbox(&self, cpu: usize) {
        let mut taken = [None; QUEUE_SLOTS];
        let count = {
            let mut queue = self.queues[cpu].lock();
            let len = queue.len;
            taken[..len].copy_from_slice(&queue.objects[..len]);
            queue.len = 0;
            len
        };
        for object in taken[..count].iter().flatten() {
            object.check(cpu);
            free(Some(&self.caches), *object);
        }
        let counts = &self.counts[cpu];
        counts.frees.fetch_add(count as u64, Ordering::Relaxed);
        counts
            .remote_frees
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// What the control CPU does between rounds of its load: shrink a stress cache,
    /// reap, drain every array, or retune a cache's arrays (to a random `limit`, 0
    /// included, restored at the next step). Returns the time until the next step.
    fn control_step(&self, rng: &mut Rng, detuned: &mut Option<usize>) -> u64 {
        let slab = slab();
        if let Some(i) = detuned.take() {
            let (name, limit, batchcount) = self.tunings[i];
            self.tune(name, limit, batchcount);
            return CONTROL_PERIOD_US;
        }
        match rng.below(4) {
            0 => {
                self.caches[rng.below(3)].shrink();
            }
            1 => {
                slab.caches().reap();
            }
            2 => slab.caches().drain_all(),
            _ => {
                let i = rng.below(TUNED_BY_CONTROL);
                let limit = [0, 1, 8, 60, 120][rng.below(5)];
                self.tune(self.tunings[i].0, limit, (limit / 2).max(1));
                *detuned = Some(i);
                return DETUNED_US;
            }
        }
        CONTROL_PERIOD_US
    }

    fn tune(&self, name: &str, limit: usize, batchcount: usize) {
        if let Err(error) = slab().caches().tune_cpucache(name, limit, batchcount) {
            panic!("stress: tune_cpucache({name}, {limit}, {batchcount}): {error:?}");
        }
    }
}

/// Totals over every cache: per-CPU counters and lock acquisitions.
#[derive(Default, Clone, Copy)]
struct CacheTotals {
    alloc_hit: u64,
    alloc_miss: u64,
    free_hit: u64,
    free_miss: u64,
    locks: u64,
}

fn cache_totals() -> CacheTotals {
    let mut totals = CacheTotals::default();
    slab().caches().for_each_stats(|stats| {
        let c = &stats.cpu.counters;
        totals.alloc_hit += c.alloc_hit;
        totals.alloc_miss += c.alloc_miss;
        totals.free_hit += c.free_hit;
        totals.free_miss += c.free_miss;
        totals.locks += stats.slab.lock_acquisitions;
    });
    totals
}

/// Active objects per cache, by name.
struct ActiveCounts {
    entries: [(&'static str, usize); 96],
    len: usize,
}

impl ActiveCounts {
    fn now() -> Self {
        let mut counts = Self {
            entries: [("", 0); 96],
            len: 0,
        };
        slab().caches().for_each_stats(|stats| {
            if counts.len < counts.entries.len() {
                counts.entries[counts.len] = (stats.slab.name, stats.slab.active_objs);
                counts.len += 1;
            }
        });
        counts
    }

    fn get(&self, name: &str) -> Option<usize> {
        self.entries[..self.len]
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, active)| active)
    }
}

/// The page allocator's free frames, with the frames the run may keep on purpose:
/// page tables (never freed), the range cache's slabs (kept as its reserve) and the
/// slabs of the caches that are never reaped (`NO_REAP`: the cache of caches, which
/// grows when the stress creates its caches, and keeps the slab after they are gone).
///
/// Reaps first (twice: a reap skips, once, a cache that grew since the last), so that
/// no free slab holds frames, nor an off-slab descriptor in a general cache.
fn frame_snapshot() -> (usize, usize, usize) {
    let heap = HEAP.get().expect("the heap is up");
    slab().caches().reap();
    slab().caches().reap();
    heap.shrink();
    let stats = heap.stats();
    let mut unreaped_pages = 0;
    slab().caches().for_each_stats(|stats| {
        if stats.slab.flags.contains(SlabFlags::NO_REAP) {
            unreaped_pages += stats.slab.total_slabs * stats.slab.pages_per_slab;
        }
    });
    // The live map's pages (one per 256 KiB region that ever held a slab) stay while
    // the allocator lives, like the range allocator's own pages and unreaped slabs.
    (
        stats.pages.free_frames,
        TABLE_FRAMES.load(Ordering::Relaxed),
        stats.ranges.internal_pages + unreaped_pages + slab().caches().slab().live_map_pages(),
    )
}

/// Runs the stress on every online CPU and checks that nothing was lost.
pub fn run(options: &StressOptions<'_>) {
    let slab = slab();
    let cpus = percpu::cpu_count();
    let millis = options.millis;

    // Baseline, with no object parked in any per-CPU array.
    slab.caches().set_per_cpu(false);
    let frames_before = frame_snapshot();
    let before = ActiveCounts::now();
    let caches = STRESS_CACHES.map(|(name, size)| {
        slab.caches()
            .create_cache(name, size, 0, SlabFlags::HWCACHE_ALIGN, None, None)
            .unwrap_or_else(|error| panic!("stress: cannot create {name}: {error:?}"))
    });
    for tuning in options.tunings.iter().flatten() {
        if STRESS_CACHES.iter().any(|(name, _)| *name == tuning.cache) {
            crate::allocator::tune(tuning);
        }
    }
    // What the control CPU restores after each detuning: the tuning in force now.
    let tunings = CONTROL_TUNED.map(|name| {
        let (limit, batchcount) = slab
            .caches()
            .cpucache_tuning(name)
            .expect("the control CPU tunes existing caches");
        (name, limit, batchcount)
    });
    let mut shared = Shared {
        caches,
        tunings,
        queues: (0..cpus)
            .map(|_| {
                IrqLock::new(Queue {
                    objects: [None; QUEUE_SLOTS],
                    len: 0,
                })
            })
            .collect(),
        counts: (0..cpus).map(|_| CachePadded::default()).collect(),
        deadline: 0,
        cpus,
        // The last online CPU (an AP that missed its start-up time-out never runs).
        control_cpu: (0..cpus)
            .rev()
            .find(|&cpu| percpu::cpu(cpu).online.load(Ordering::Acquire))
            .expect("the BSP is online"),
        per_cpu: options.per_cpu,
        provoke: options.provoke,
    };
    slab.caches().set_per_cpu(options.per_cpu);
    let totals_before = cache_totals();
    println!(
        "stress: {cpus} CPUs for {millis} ms, per-CPU caches {}: kmalloc and {} caches, \
         objects handed between CPUs, timer-interrupt allocations, shrink/reap/drain/tune on CPU {}",
        if options.per_cpu { "on" } else { "off" },
        STRESS_CACHES.len(),
        shared.control_cpu
    );
    shared.deadline = timer::deadline_after_us(millis * 1000);
    let started = timer::rdtsc();
    if options.provoke != 0 {
        crate::provoke::start(options.provoke);
    }
    crate::smp_boot::run_on_every_cpu(&|cpu| shared.run(cpu));
    if options.provoke != 0 {
        crate::provoke::stop();
    }
    let elapsed_us = timer::tsc_to_ns(timer::rdtsc() - started) / 1000;
    let totals = cache_totals();

    // What is left in the queues was handed over after its receiver stopped looking.
    for cpu in 0..cpus {
        shared.take_inbox(cpu);
    }
    report(&shared, &totals_before, &totals, elapsed_us);
    if options.provoke != 0 {
        crate::provoke::report(cpus);
    }
    check_nothing_lost(shared, &before, frames_before);
}

fn report(shared: &Shared<'_>, before: &CacheTotals, after: &CacheTotals, elapsed_us: u64) {
    let mut operations = 0;
    for (cpu, counts) in shared.counts.iter().enumerate() {
        let allocations = counts.allocations.load(Ordering::Relaxed);
        let frees = counts.frees.load(Ordering::Relaxed);
        let timer = counts.timer_operations.load(Ordering::Relaxed);
        operations += allocations + frees + timer;
        println!(
            "stress: cpu {cpu}: {allocations} allocations, {frees} frees ({} of objects from \
             other CPUs, {} handed over), {timer} in the timer interrupt, {} out of memory{}",
            counts.remote_frees.load(Ordering::Relaxed),
            counts.handed_over.load(Ordering::Relaxed),
            counts.out_of_memory.load(Ordering::Relaxed),
            match counts.control_steps.load(Ordering::Relaxed) {
                0 => alloc::string::String::new(),
                steps => alloc::format!(", {steps} shrink/reap/drain/tune steps"),
            }
        );
    }
    let hits = after.alloc_hit - before.alloc_hit;
    let misses = after.alloc_miss - before.alloc_miss;
    let free_hits = after.free_hit - before.free_hit;
    let free_misses = after.free_miss - before.free_miss;
    let locks = after.locks - before.locks;
    let per_mille = |part: u64, whole: u64| (part * 1000).checked_div(whole).unwrap_or(0);
    let hit_rate = per_mille(hits, hits + misses);
    let locks_per_1000 = (locks * 10_000).checked_div(operations).unwrap_or(0);
    println!(
        "stress: {operations} operations in {} ms on {} CPUs ({} per ms); per-CPU arrays {}: \
         allocation hit rate {}.{}% ({hits} hits, {misses} refills), free hit rate {}.{}% \
         ({free_hits} hits, {free_misses} flushes); {locks} cache-lock acquisitions = {}.{} per \
         1000 operations",
        elapsed_us / 1000,
        shared.cpus,
        (operations * 1000).checked_div(elapsed_us).unwrap_or(0),
        if shared.per_cpu { "on" } else { "off" },
        hit_rate / 10,
        hit_rate % 10,
        per_mille(free_hits, free_hits + free_misses) / 10,
        per_mille(free_hits, free_hits + free_misses) % 10,
        locks_per_1000 / 10,
        locks_per_1000 % 10
    );
}

/// Frees the run's structures, drains every array and checks every count.
fn check_nothing_lost(
    shared: Shared<'_>,
    before: &ActiveCounts,
    (free_before, tables_before, internal_before): (usize, usize, usize),
) {
    let slab = slab();
    let Shared {
        caches,
        queues,
        counts,
        per_cpu,
        ..
    } = shared;
    drop((queues, counts));
    slab.caches().set_per_cpu(false);
    let mut stress_active = 0;
    for cache in caches {
        let stats = cache.stats();
        assert_eq!(
            stats.slab.active_objs, 0,
            "stress: {} objects of {} still allocated after every object was freed",
            stats.slab.active_objs, stats.slab.name
        );
        stress_active += stats.slab.active_objs;
        if let Err((_, error)) = cache.destroy() {
            panic!("stress: cannot destroy {}: {error:?}", stats.slab.name);
        }
    }
    let (free_after, tables_after, internal_after) = frame_snapshot();
    let after = ActiveCounts::now();
    let mut changed = 0;
    for &(name, active) in &after.entries[..after.len] {
        let was = before.get(name).unwrap_or(0);
        if active != was {
            println!("stress: cache {name} has {active} active objects, {was} before the run");
            changed += 1;
        }
    }
    assert_eq!(
        changed, 0,
        "stress: {changed} caches lost or gained objects"
    );
    let tables = tables_after - tables_before;
    let internal = internal_after as isize - internal_before as isize;
    assert_eq!(
        free_after as isize + tables as isize + internal,
        free_before as isize,
        "stress: free frames {free_after} after the run, {free_before} before \
         ({tables} new page-table frames, {internal} range-cache, unreaped slab and \
         live-map pages)"
    );
    slab.caches().set_per_cpu(per_cpu);
    println!(
        "stress: nothing lost: {stress_active} active objects in the stress caches, every \
         other cache back to its count before the run, {free_after} free frames \
         (+ {tables} page-table frames, {internal:+} range-cache, unreaped slab and \
         live-map pages) = \
         {free_before} before"
    );
}
