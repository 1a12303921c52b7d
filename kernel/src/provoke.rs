//! The provoking mode of the stress (`stress_provoke=on`): makes the windows of the
//! cross-CPU deadlocks of issue 11 likely, within the rules of `smp/src/ipi.rs`.
//!
//! On top of the normal stress load, on every CPU:
//!
//! * after each round of 64 operations, `on_each_cpu` (interrupts on), and one round in
//!   four `on_cpu` to a random CPU: many CPUs call at once, and cross;
//! * every few timer ticks (staggered over the CPUs), `on_each_cpu` from the timer handler (interrupts off, outside
//!   every critical section: rule 3), interrupting the load wherever it has interrupts
//!   on, its own calls included (deadlock 2's window);
//! * all but [`DMA_LEFT`] frames of the DMA zone are held back, and odd CPUs map and
//!   delete ranges of 1-32 pages there, keeping up to [`LIVE_RANGES`] alive (so the zone
//!   runs out and mapping fails now and then): each deletion shoots down every other CPU's TLB with the range lock held
//!   and interrupts off, while the others wait in calls (deadlock 1's window);
//! * CPUs `2 mod 3` read every cache's statistics (the chain and tuning locks, with
//!   interrupts on: rule 4) while the control CPU retunes and drains (deadlock 3's).
//!
//! `stress_provoke=on` runs all of it; `d1` only the timer-handler calls and the range
//! deletions (deadlock 1), `d2` the calls from the load and from handlers with the
//! window between filling a mailbox slot and announcing it widened to
//! [`POST_WINDOW_US`] (deadlock 2), `d3` only the statistics walks (deadlock 3). The
//! window is widened in `on` too.
//!
//! A stall is reported by the protocol's own stall reporter (`ipi.rs`), which prints the
//! wait graph and fails the run. What this module checks: that every call made ran on
//! every online CPU (the count of function runs is exactly calls x CPUs), and that the
//! ranges touched hold what was written.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mm::{PhysAddr, RangeFlags, Zone};
use smp::{MAX_CPUS, ipi, percpu};

use crate::heap::HEAP;
use crate::memory::PHYS_OFFSET;

/// Mapped ranges each range-deleting CPU keeps alive.
pub const LIVE_RANGES: usize = 4;

/// Parts of the provoking load (a bitmask).
pub const LOAD_CALLS_PART: u32 = 1;
pub const TIMER_CALLS_PART: u32 = 2;
pub const RANGES_PART: u32 = 4;
pub const STATS_PART: u32 = 8;
pub const WINDOW_PART: u32 = 16;

/// The window between filling a mailbox slot and announcing it, with [`WINDOW_PART`].
pub const POST_WINDOW_US: u64 = 20;

/// The parts named by a `stress_provoke=` value.
pub fn parts(value: &str) -> Option<u32> {
    match value {
        "on" => Some(LOAD_CALLS_PART | TIMER_CALLS_PART | RANGES_PART | STATS_PART | WINDOW_PART),
        "d1" => Some(TIMER_CALLS_PART | RANGES_PART),
        "d2" => Some(LOAD_CALLS_PART | TIMER_CALLS_PART | WINDOW_PART),
        "d3" => Some(STATS_PART),
        _ => None,
    }
}

/// The parts running now (0 while the provoking load does not run).
static ON: AtomicU32 = AtomicU32::new(0);

/// Timer handlers between their look at `ON` and the end of their call.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

fn running(part: u32) -> bool {
    ON.load(Ordering::SeqCst) & part != 0
}

/// Per CPU: calls made from the load, from the timer handler, and function runs.
static LOAD_CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TIMER_CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static SINGLE_CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static RUNS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU: ranges deleted, mappings that found the DMA zone out, statistics walks.
static RANGES_DELETED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static RANGES_FAILED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static STATS_READS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn count_run() {
    RUNS[percpu::current_cpu()].fetch_add(1, Ordering::Relaxed);
}

/// DMA frames left free while the provoking load runs: the range-deleting CPUs keep
/// more than this mapped between them (on 4 CPUs and more), so mapping fails now and
/// then and deletions run in a zone that is nearly out.
const DMA_LEFT: usize = 160;

/// The DMA frames held back meanwhile, chained through their first word (physical
/// addresses; `u64::MAX` ends the chain).
static BALLAST: AtomicU64 = AtomicU64::new(u64::MAX);

/// Starts the provoking `parts` (before the CPUs start the stress); with
/// [`RANGES_PART`], takes all but [`DMA_LEFT`] frames of the DMA zone.
pub fn start(parts: u32) {
    if parts & WINDOW_PART != 0 {
        ipi::POST_WINDOW_US.store(POST_WINDOW_US, Ordering::Relaxed);
    }
    if parts & RANGES_PART != 0 {
        hold_dma_ballast();
    }
    ON.store(parts, Ordering::Release);
}

fn hold_dma_ballast() {
    let heap = HEAP.get().expect("the heap is up");
    let mut head = u64::MAX;
    let mut held = 0usize;
    while let Ok(PhysAddr(frame)) = heap.alloc_frames(0, Zone::Dma) {
        // SAFETY: the frame was just allocated to us; its first word, reached through
        // the direct map, is ours to use.
        unsafe { ((PHYS_OFFSET + frame) as *mut u64).write(head) };
        head = frame;
        held += 1;
    }
    for _ in 0..DMA_LEFT.min(held) {
        head = free_frame(head);
    }
    BALLAST.store(head, Ordering::Relaxed);
}

/// Gives back the frame at the head of a ballast chain; returns the next one.
fn free_frame(frame: u64) -> u64 {
    // SAFETY: a frame of the chain, ours until freed just below.
    let next = unsafe { ((PHYS_OFFSET + frame) as *const u64).read() };
    let heap = HEAP.get().expect("the heap is up");
    if let Err(error) = heap.free_frames(PhysAddr(frame), 0) {
        panic!("provoke: freeing ballast frame {frame:#x}: {error:?}");
    }
    next
}

/// Stops it, waits for the timer calls in flight, and gives the DMA frames back.
pub fn stop() {
    ON.store(0, Ordering::SeqCst);
    // A timer call that started before is still running on some CPU: wait for it (this
    // CPU has interrupts on, and serves it).
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        core::hint::spin_loop();
    }
    ipi::POST_WINDOW_US.store(0, Ordering::Relaxed);
    let mut head = BALLAST.swap(u64::MAX, Ordering::Relaxed);
    while head != u64::MAX {
        head = free_frame(head);
    }
}

/// The timer-handler part: a call to every CPU from interrupt context.
pub fn timer_tick() {
    // Counted in flight before the check, so that `stop` can wait for every call that
    // saw the load running (the report counts the functions they ran).
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    timer_call();
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
}

fn timer_call() {
    if !running(TIMER_CALLS_PART) {
        return;
    }
    // Every few ticks per CPU, staggered, so that calls from handlers cross each other
    // and the load's without drowning the load (under TCG each call is slow).
    let cpu = percpu::current_cpu();
    let period = (percpu::cpu_count() as u64 / 2).max(4);
    let tick = percpu::cpu(cpu).timer_ticks.load(Ordering::Relaxed);
    if tick % period != cpu as u64 % period {
        return;
    }
    TIMER_CALLS[cpu].fetch_add(1, Ordering::Relaxed);
    ipi::on_each_cpu(&count_run);
}

/// One CPU's provoking state during the run: its live ranges.
pub struct Load {
    cpu: usize,
    ranges: [Option<(usize, usize)>; LIVE_RANGES],
    round: u64,
}

impl Load {
    pub fn new(cpu: usize) -> Self {
        Self {
            cpu,
            ranges: [None; LIVE_RANGES],
            round: 0,
        }
    }

    /// What this CPU does after a round of the normal load; `random` picks sizes and
    /// targets.
    pub fn step(&mut self, random: u64) {
        let cpu = self.cpu;
        self.round += 1;
        if running(LOAD_CALLS_PART) {
            LOAD_CALLS[cpu].fetch_add(1, Ordering::Relaxed);
            ipi::on_each_cpu(&count_run);
            let cpus = percpu::cpu_count();
            if self.round.is_multiple_of(4) && cpus > 1 {
                let target = (random >> 8) as usize % cpus;
                if percpu::cpu(target).online.load(Ordering::Acquire) {
                    SINGLE_CALLS[cpu].fetch_add(1, Ordering::Relaxed);
                    ipi::on_cpu(target, &count_run);
                }
            }
        }
        if running(RANGES_PART) && cpu % 2 == 1 {
            self.churn_range(random);
        }
        if running(STATS_PART) && cpu % 3 == 2 {
            let mut caches = 0u64;
            crate::allocator::slab()
                .caches()
                .for_each_stats(|_| caches += 1);
            debug_assert!(caches > 0);
            STATS_READS[cpu].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deletes one live range (checking its contents) and maps a new one in its place.
    fn churn_range(&mut self, random: u64) {
        let heap = HEAP.get().expect("the heap is up");
        let slot = &mut self.ranges[(random as usize >> 16) % LIVE_RANGES];
        if let Some((addr, pages)) = slot.take() {
            check_range(addr, pages, self.cpu);
            if let Err(error) = heap.del_range(addr) {
                panic!("provoke: del_range({addr:#x}): {error:?}");
            }
            RANGES_DELETED[self.cpu].fetch_add(1, Ordering::Relaxed);
        }
        let pages = 1 + (random as usize >> 24) % 32;
        match heap.new_range(pages, RangeFlags::MAP.union(RangeFlags::DMA)) {
            Ok(addr) => {
                fill_range(addr, pages, self.cpu);
                *slot = Some((addr, pages));
            }
            Err(_) => {
                RANGES_FAILED[self.cpu].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Deletes every live range.
    pub fn finish(&mut self) {
        let heap = HEAP.get().expect("the heap is up");
        for (addr, pages) in self.ranges.iter_mut().filter_map(Option::take) {
            check_range(addr, pages, self.cpu);
            if let Err(error) = heap.del_range(addr) {
                panic!("provoke: del_range({addr:#x}): {error:?}");
            }
            RANGES_DELETED[self.cpu].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The word written at the start of every page of a range: its address and owner.
fn page_word(page: usize, cpu: usize) -> u64 {
    (page as u64) ^ ((cpu as u64) << 56)
}

fn fill_range(addr: usize, pages: usize, cpu: usize) {
    for page in (addr..addr + pages * mm::PAGE_SIZE).step_by(mm::PAGE_SIZE) {
        // SAFETY: the range was just mapped for us (`MAP`); nothing else uses it.
        unsafe { (page as *mut u64).write_volatile(page_word(page, cpu)) };
    }
}

fn check_range(addr: usize, pages: usize, cpu: usize) {
    for page in (addr..addr + pages * mm::PAGE_SIZE).step_by(mm::PAGE_SIZE) {
        // SAFETY: a live mapped range of ours, written by `fill_range`.
        let word = unsafe { (page as *const u64).read_volatile() };
        assert_eq!(
            word,
            page_word(page, cpu),
            "provoke: page {page:#x} of CPU {cpu}'s range changed (a stale TLB entry \
             elsewhere, or a frame handed out twice?)"
        );
    }
}

/// Prints what the provoking load did and checks that every call ran everywhere.
pub fn report(cpus: usize) {
    let sum = |counters: &[AtomicU64; MAX_CPUS]| -> u64 {
        counters[..cpus]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    };
    let (load, timer, single) = (sum(&LOAD_CALLS), sum(&TIMER_CALLS), sum(&SINGLE_CALLS));
    let runs = sum(&RUNS);
    let online = ipi_online(cpus);
    let mut shootdowns = 0;
    for cpu in 0..cpus {
        shootdowns += smp::tlb::counters(cpu).0;
    }
    println!(
        "stress: provoke: {load} calls from the load, {timer} from timer handlers, {single} \
         to one CPU, {runs} function runs; {} ranges deleted ({} mappings out of DMA memory), \
         {shootdowns} shootdowns in all; {} statistics walks during retuning; no stall",
        sum(&RANGES_DELETED),
        sum(&RANGES_FAILED),
        sum(&STATS_READS)
    );
    assert_eq!(
        runs,
        (load + timer) * online + single,
        "provoke: every call ran once on every online CPU"
    );
}

fn ipi_online(cpus: usize) -> u64 {
    (0..cpus)
        .filter(|&cpu| percpu::cpu(cpu).online.load(Ordering::Acquire))
        .count() as u64
}
