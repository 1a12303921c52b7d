//! Range allocator benchmark on the hosted platform.
//!
//! Run it (release build) with:
//!
//! ```text
//! cargo bench -p mm --features std --bench range --target x86_64-unknown-linux-gnu
//! ```
//!
//! 1,000,000 random operations per row: `new_range` of 1..=64 pages (uniform) mixed
//! with `del_range` of a uniformly chosen live range, around a steady state of `live`
//! live ranges (allocate with probability 1 - live_now / (2 * live)). Each call is timed
//! on its own with `Instant::now()`; the timer's own cost, measured first, is subtracted.
//!
//! Rows: without `MAP` (address space only), and with `MAP` (each page gets a frame of
//! its own and a mapping) on two platforms:
//! - `hosted`: `mm::hosted::HostedPlatform`, the test double, whose "page table" is a
//!   `BTreeMap` behind a `std::sync::Mutex` (it checks everything, and costs more than a
//!   page-table write);
//! - `array`: a platform defined here whose page table is an array of atomics indexed by
//!   page, one store per mapping, like a real last-level page table. The difference
//!   between the two is the test double's cost, not the allocator's.

use mm::hosted::{HostedLayout, HostedMachine};
use mm::{Heap, MapError, PAGE_SIZE, PageAllocator, PhysAddr, PhysRegion, Platform, RangeFlags};
use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const OPS: usize = 1_000_000;
const MAX_PAGES: usize = 64;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// A platform whose page table is a flat array: `table[page] = frame + 1`, 0 if unmapped.
struct ArrayPlatform {
    arena: *mut u8,
    pages: usize,
    table: Vec<AtomicU64>,
}

// SAFETY: the arena is owned and only handed out for mapped pages; the table is atomics.
unsafe impl Send for ArrayPlatform {}
// SAFETY: as above.
unsafe impl Sync for ArrayPlatform {}

impl ArrayPlatform {
    fn new(pages: usize) -> Self {
        // SAFETY: non-zero size.
        let arena = unsafe { alloc(Self::layout(pages)) };
        assert!(!arena.is_null());
        Self {
            arena,
            pages,
            table: (0..pages).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn layout(pages: usize) -> Layout {
        Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap()
    }

    fn slot(&self, virt: usize) -> &AtomicU64 {
        &self.table[(virt - self.arena.addr()) / PAGE_SIZE]
    }
}

impl Drop for ArrayPlatform {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.arena, Self::layout(self.pages)) }
    }
}

// SAFETY: mapped pages are arena pages, real memory only the allocator uses; a page is
// mapped at most once (compare-exchange), and `translate` reads the same table.
unsafe impl Platform for ArrayPlatform {
    type Interrupts = mm::sync::NoInterrupts;

    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        _: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError> {
        self.slot(virt)
            .compare_exchange(0, phys.0 + 1, Ordering::Relaxed, Ordering::Relaxed)
            .map(|_| ())
            .map_err(|_| MapError::AlreadyMapped)
    }

    fn unmap_page(&self, virt: usize) -> Option<PhysAddr> {
        let old = self.slot(virt).swap(0, Ordering::Relaxed);
        (old != 0).then(|| PhysAddr(old - 1))
    }

    fn translate(&self, virt: usize) -> Option<PhysAddr> {
        let v = self.slot(virt & !(PAGE_SIZE - 1)).load(Ordering::Relaxed);
        (v != 0).then(|| PhysAddr(v - 1))
    }

    fn pointer_to(&self, virt: usize) -> *mut u8 {
        self.arena.with_addr(virt)
    }
}

/// Nanoseconds that one `Instant::now()` pair adds to a measurement.
fn timer_overhead() -> f64 {
    let n = 1_000_000;
    let mut total = 0u128;
    for _ in 0..n {
        let t = Instant::now();
        total += black_box(t.elapsed()).as_nanos();
    }
    total as f64 / n as f64
}

struct Row {
    new_ns: f64,
    del_ns: f64,
    segments: usize,
    free_segments: usize,
    cache_slabs: usize,
}

fn run<P: Platform>(heap: &Heap<'_, P>, flags: RangeFlags, live: usize, overhead: f64) -> Row {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut ranges: Vec<usize> = Vec::with_capacity(2 * live);
    // Warm up to the steady state, untimed.
    while ranges.len() < live {
        ranges.push(heap.new_range(1 + rng.below(MAX_PAGES), flags).unwrap());
    }
    let (mut new_total, mut del_total, mut news, mut dels) = (0u128, 0u128, 0, 0);
    for _ in 0..OPS {
        if ranges.is_empty() || rng.below(2 * live) >= ranges.len() {
            let pages = 1 + rng.below(MAX_PAGES);
            let t = Instant::now();
            let r = heap.new_range(pages, flags);
            new_total += t.elapsed().as_nanos();
            ranges.push(r.expect("the window is sized for the workload"));
            news += 1;
        } else {
            let victim = ranges.swap_remove(rng.below(ranges.len()));
            let t = Instant::now();
            let r = heap.del_range(victim);
            del_total += t.elapsed().as_nanos();
            r.unwrap();
            dels += 1;
        }
    }
    let st = heap.stats().ranges;
    for r in ranges {
        heap.del_range(r).unwrap();
    }
    heap.shrink();
    heap.check_invariants();
    Row {
        new_ns: new_total as f64 / news as f64 - overhead,
        del_ns: del_total as f64 / dels as f64 - overhead,
        segments: st.segments,
        free_segments: st.free_segments,
        cache_slabs: st.cache_slabs,
    }
}

fn print(name: &str, live: usize, row: &Row) {
    println!(
        "{:<12} {:>6} {:>10.1} {:>10.1} {:>9} {:>10} {:>7}",
        name, live, row.new_ns, row.del_ns, row.segments, row.free_segments, row.cache_slabs
    );
}

fn main() {
    let overhead = timer_overhead();
    println!("range allocator, {OPS} random ops per row, 1..={MAX_PAGES} pages per range");
    println!("timer overhead {overhead:.1} ns per measurement (subtracted below)");
    println!("segments, free segs and slabs: at the steady state, end of the timed run");
    println!(
        "{:<12} {:>6} {:>10} {:>10} {:>9} {:>10} {:>7}",
        "row", "live", "new ns", "del ns", "segments", "free segs", "slabs"
    );
    for live in [100, 1_000, 10_000] {
        // The window holds twice the largest possible live size (four times the mean).
        let window_pages = 2 * live * MAX_PAGES;
        for flags in [RangeFlags::NONE, RangeFlags::MAP] {
            let map = flags.contains(RangeFlags::MAP);
            // Frames for every page with MAP; for the range cache's slabs without.
            let frames = if map {
                window_pages as u64
            } else {
                live as u64 / 16 + 64
            };
            let mut machine = HostedMachine::new(HostedLayout::flat(frames, window_pages));
            let heap = machine.boot().expect("boot");
            let name = if map { "MAP hosted" } else { "none hosted" };
            print(name, live, &run(&heap, flags, live, overhead));
        }
        let platform = ArrayPlatform::new(window_pages);
        let regions = [PhysRegion::new(
            4 << 30,
            (4 << 30) + (window_pages * PAGE_SIZE) as u64,
        )];
        let mut storage = Vec::new();
        storage.resize_with(
            PageAllocator::descriptors_needed(&regions),
            MaybeUninit::uninit,
        );
        let pages = PageAllocator::new(&regions, &[], &mut storage).unwrap();
        let start = platform.arena.addr();
        // SAFETY: the window is the platform's arena, used by nothing else; the frames
        // are fake and never dereferenced.
        let heap = unsafe { Heap::new(&platform, pages, start, window_pages) }.unwrap();
        print(
            "MAP array",
            live,
            &run(&heap, RangeFlags::MAP, live, overhead),
        );
    }
}
