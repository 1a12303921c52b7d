//! Scaling of the slab allocator with threads, per-CPU caches on and off (hosted).
//!
//! Workload, per thread (each bound to its own host CPU slot, [`HostCpus`]):
//! rounds of 64 `kmalloc`s of sizes cycling through 32, 64, 128 and 256 bytes, then
//! the 64 `kfree`s in reverse order (a burst of short-lived objects, as a syscall or a
//! packet makes). Each thread runs the same number of operations; the figure is the
//! total throughput (million operations per second, an operation being one `kmalloc` or
//! one `kfree`) and its ratio to one thread. Peers in the same run: the same allocator
//! with the per-CPU layer switched off (every operation takes the cache's spinlock),
//! and the host's `malloc`/`free` (glibc, with its per-thread caches).
//!
//! Hosted, "interrupts off" is the CPU slot's guard (an uncontended compare-and-swap on
//! a line of its own); in the kernel it is `cli`, so the hit path there is cheaper than
//! here. The figures say how the locking scales, not what the kernel's path costs.
//!
//! Run: `scripts/bench percpu` or `cargo bench -p mm --features std --bench percpu
//! --target x86_64-unknown-linux-gnu`. Arguments: the largest thread count (default:
//! the host's CPUs, at most 16) and operations per thread (default 4 000 000).

use mm::hosted::{HostedLayout, HostedMachine};
use mm::hosted_cpus::{HOST_CPUS, HostCpus};
use mm::kmalloc::Gfp;
use mm::kmalloc::Kmalloc;
use mm::slab::SlabOptions;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const BURST: usize = 64;
const SIZES: [usize; 4] = [32, 64, 128, 256];

type Slab<'h> = Kmalloc<&'h mm::Heap<'h, &'h mm::hosted::HostedPlatform>, HostCpus>;

/// Runs `work(thread)` on `threads` threads at once (thread `t` bound to CPU `t`) and
/// returns the time from the common start to the last finish.
fn timed(threads: usize, work: &(dyn Fn(usize) + Sync)) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    HostCpus::bind(t);
                    barrier.wait();
                    work(t);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for handle in handles {
            handle.join().expect("a benchmark thread");
        }
        start.elapsed()
    })
}

fn slab_bursts(slab: &Slab<'_>, ops: usize) {
    let mut objects = [std::ptr::null_mut::<u8>(); BURST];
    for _ in 0..ops / (2 * BURST) {
        for (i, object) in objects.iter_mut().enumerate() {
            *object = black_box(slab.kmalloc(SIZES[i % 4], Gfp::KERNEL).unwrap()).as_ptr();
        }
        for &object in objects.iter().rev() {
            // SAFETY: allocated just above, freed once, not used after.
            unsafe { slab.kfree(object) }.unwrap();
        }
    }
}

fn malloc_bursts(ops: usize) {
    let mut objects = [std::ptr::null_mut::<u8>(); BURST];
    for _ in 0..ops / (2 * BURST) {
        for (i, object) in objects.iter_mut().enumerate() {
            let layout = Layout::from_size_align(SIZES[i % 4], 8).unwrap();
            // SAFETY: a valid, non-zero layout.
            *object = black_box(unsafe { System.alloc(layout) });
        }
        for (i, &object) in objects.iter().enumerate().rev() {
            let layout = Layout::from_size_align(SIZES[i % 4], 8).unwrap();
            // SAFETY: allocated above with this layout, freed once.
            unsafe { System.dealloc(object, layout) };
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_threads = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(host_cpus)
        .clamp(1, HOST_CPUS);
    let ops: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(4_000_000);

    // 256 MiB of fake RAM, a 256 MiB window.
    let mut machine = HostedMachine::new(HostedLayout::flat(64 * 1024, 64 * 1024));
    let heap = machine.boot().expect("boot");
    let slab = Slab::new(&heap, SlabOptions::default()).expect("slab");

    let mut counts = vec![1];
    while counts.last() < Some(&max_threads) {
        counts.push((counts.last().unwrap() * 2).min(max_threads));
    }
    println!(
        "kmalloc/kfree bursts of {BURST} (32..256 B), {ops} operations per thread, \
         {host_cpus} host CPUs; Mops/s total (x one thread)"
    );
    println!(
        "{:>7}  {:>22}  {:>22}  {:>22}  {:>9}",
        "threads", "per-CPU caches on", "per-CPU caches off", "glibc malloc", "on/off"
    );
    let mut first = [0.0f64; 3];
    for &threads in &counts {
        let mut rates = [0.0f64; 3];
        for (i, rate) in rates.iter_mut().enumerate() {
            let elapsed = match i {
                0 | 1 => {
                    slab.caches().set_per_cpu(i == 0);
                    // Warm up: slabs and arrays exist before the clock starts.
                    timed(threads, &|_| slab_bursts(&slab, ops / 20));
                    timed(threads, &|_| slab_bursts(&slab, ops))
                }
                _ => timed(threads, &|_| malloc_bursts(ops)),
            };
            *rate = (threads * ops) as f64 / elapsed.as_secs_f64() / 1e6;
        }
        if threads == 1 {
            first = rates;
        }
        let cell = |i: usize| format!("{:8.1} ({:4.2}x)", rates[i], rates[i] / first[i]);
        println!(
            "{threads:>7}  {:>22}  {:>22}  {:>22}  {:>8.2}x",
            cell(0),
            cell(1),
            cell(2),
            rates[0] / rates[1]
        );
    }
    slab.caches().set_per_cpu(true);
    let stats = slab.caches().stats_of("size-64").expect("size-64");
    let c = stats.cpu.counters;
    println!(
        "size-64 over the run: {} allocation hits, {} refills, {} free hits, {} flushes, \
         {} lock acquisitions",
        c.alloc_hit, c.alloc_miss, c.free_hit, c.free_miss, stats.slab.lock_acquisitions
    );
}
