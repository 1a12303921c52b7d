//! loom models of the per-CPU layer over the real allocator (`Kmalloc` over `CpuCaches`
//! over `SlabCaches` over the hosted heap), two CPUs being two loom threads
//! (`mm::loom_cpus`). `size-32` and `size-64` are tuned to `limit` 2, `batchcount` 1, so
//! that three operations in a row refill or flush. Every model ends with
//! `World::check_end`: no object handed out twice (checked at every allocation), none
//! left handed out, none lost (the caches' active counts back to zero once the arrays are
//! drained), the per-CPU counters add up where the model knows the count, and
//! `check_invariants` of the slab layer passes. loom itself reports any unordered access
//! to an array's header or entries (`mm::sync::cell::RaceCheck`).
//!
//! Preemption bounds: each model sets its own (see `common::run`), because a CPU's
//! operation passes dozens of atomics (its guard, the array pointer, `avail`, counters,
//! the owner table, the cache lock): unbounded, two CPUs doing a few operations each have
//! far too many interleavings. Bound 2 lets the scheduler interrupt each CPU inside any
//! operation, which is what the protocol's races need (one CPU stopped inside its
//! critical section while the other does all it can).
#![cfg(loom)]

mod common;

use common::{World, run};
use loom::sync::Arc;
use loom::thread;
use mm::loom_cpus::LoomCpus;

/// Runs `f` on a new loom thread standing for CPU `cpu`.
fn on_cpu<T: Send + 'static>(
    cpu: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        LoomCpus::bind(cpu);
        f()
    })
}

/// Three allocations then three frees: with `limit` 2 and `batchcount` 1, refills on
/// the way up and a flush on the way down.
fn three_up_three_down(w: &World, size: usize) {
    let objects: Vec<usize> = (0..3).map(|_| w.kmalloc(size)).collect();
    for object in objects.into_iter().rev() {
        w.kfree(object);
    }
}

/// Model 1: two CPUs allocating and freeing through their own arrays, each refilling
/// from and flushing to the same slabs under the cache lock.
#[test]
fn model1_two_cpus_refill_and_flush() {
    run("1 two CPUs, refills and flushes", Some(2), || {
        let w = World::new(2, 1);
        w.warm(0, 32, 1);
        w.warm(1, 32, 1);
        let other = {
            let w = Arc::clone(&w);
            on_cpu(1, move || three_up_three_down(&w, 32))
        };
        LoomCpus::bind(0);
        three_up_three_down(&w, 32);
        other.join().unwrap();
        // Warm-up: one each; then three each.
        w.check_end(&[32], 8);
    });
}

/// Model 2: CPU 0 allocates an object, CPU 1 frees it (into its own full array, which
/// flushes a batch under the cache lock) while CPU 0 goes on allocating (refilling under
/// the same lock) and freeing.
#[test]
fn model2_cross_cpu_free() {
    run("2 cross-CPU free", Some(2), || {
        let w = World::new(2, 1);
        w.warm(1, 32, 2);
        LoomCpus::bind(0);
        let handed = w.kmalloc(32);
        let other = {
            let w = Arc::clone(&w);
            on_cpu(1, move || w.kfree(handed))
        };
        let a = w.kmalloc(32);
        let b = w.kmalloc(32);
        w.kfree(a);
        w.kfree(b);
        other.join().unwrap();
        w.check_end(&[32], 5);
    });
}

/// Model 3a: `shrink` (which drains every CPU's array as that CPU, then gives back the
/// free slabs) racing with hits and misses on CPU 1.
#[test]
fn model3_shrink_races_with_hits_and_misses() {
    run("3a shrink vs hits and misses", Some(2), || {
        let w = World::new(2, 1);
        w.warm(1, 32, 2);
        let cpu1 = {
            let w = Arc::clone(&w);
            on_cpu(1, move || three_up_three_down(&w, 32))
        };
        // The main thread is no CPU: like the kernel's caller, it calls with interrupts
        // on and no lock held, and `on_each_cpu` acts as each CPU in turn.
        w.alloc.caches().shrink(w.cache(32));
        cpu1.join().unwrap();
        w.check_end(&[32], 5);
    });
}

/// Model 3b: `reap` (a drain of every reapable cache, then their free slabs) racing
/// with CPU 1's hits and misses.
#[test]
fn model3_reap_races_with_hits_and_misses() {
    run("3b reap vs hits and misses", Some(1), || {
        let w = World::new(2, 1);
        w.warm(1, 32, 2);
        let cpu1 = {
            let w = Arc::clone(&w);
            on_cpu(1, move || three_up_three_down(&w, 32))
        };
        w.alloc.caches().reap();
        cpu1.join().unwrap();
        w.check_end(&[32], 5);
    });
}

/// Model 6: `kfree` racing with `shrink` of the same cache, on the slab path (arrays
/// off for the cache, so the free reads the owner table without a lock, takes the cache
/// lock and re-checks the entry, `slab/ops.rs`), while the shrink unlinks and gives back
/// the slab that the free empties.
#[test]
fn model6_kfree_races_with_shrink_of_its_cache() {
    run("6 kfree vs shrink", Some(2), || {
        let w = World::new(0, 0);
        LoomCpus::bind(1);
        let object = w.kmalloc(32);
        let cpu1 = {
            let w = Arc::clone(&w);
            on_cpu(1, move || w.kfree(object))
        };
        let released = w.alloc.caches().shrink(w.cache(32));
        cpu1.join().unwrap();
        let s = w.stats(32);
        // The slab went back exactly when the free came first.
        assert_eq!(
            released + s.slab.total_slabs * s.slab.pages_per_slab,
            s.slab.pages_per_slab,
            "the cache's one slab is either kept or released, not lost: {s:?}"
        );
        w.check_end(&[32], 0);
    });
}
