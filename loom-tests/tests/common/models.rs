//! The models' bodies, one function per model, shared by the model tests
//! (`percpu.rs`, `kmalloc.rs`) and the seeded-defect tests (`seeded_*.rs`), which run
//! the same model over a defective `mm` and expect it to fail.
//!
//! Each is one explored execution: it boots a `World`, warms what it must (from the main
//! thread, before any other CPU runs), runs two CPUs (the main thread and one spawned
//! loom thread, or the main thread standing for no CPU where it plays the kernel's
//! caller of `shrink`/`reap`/`tune`), joins, and ends with `World::check_end`.

use super::World;
use loom::sync::Arc;
use loom::thread;
use mm::kmalloc::Gfp;
use mm::loom_cpus::LoomCpus;
use mm::slab::SlabError;

/// A block larger than the largest size class (128 KiB): a range of its own.
const LARGE: usize = (128 << 10) + 1;

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

/// CPU 1 runs `three_up_three_down` on `size-32` (after a warm-up of two objects, so
/// that its array exists and is full) while the main thread runs `outside`, the part of
/// the kernel that changes arrays from outside their CPU; then the checks, with 5
/// allocations through arrays when `counted`.
fn cpu1_busy_while(outside: impl FnOnce(&World), counted: bool) {
    let w = World::new(2, 1);
    w.warm(1, 32, 2);
    let cpu1 = {
        let w = Arc::clone(&w);
        on_cpu(1, move || three_up_three_down(&w, 32))
    };
    // The main thread is CPU 0, calling with interrupts on and no lock held (the
    // kernel's rule for `shrink`, `reap`, `tune`); `on_each_cpu` acts as each CPU in
    // turn, CPU 1 included, while CPU 1's own thread goes on.
    outside(&w);
    cpu1.join().unwrap();
    w.check_end(&[32], if counted { 5 } else { 0 });
}

/// Model 1: two CPUs allocating and freeing through their own arrays, each refilling
/// from and flushing to the same slabs under the cache lock.
pub fn model1() {
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
}

/// Model 2: CPU 0 allocates an object, CPU 1 frees it (into its own full array, which
/// flushes a batch under the cache lock) while CPU 0 goes on allocating (refilling under
/// the same lock) and freeing.
pub fn model2() {
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
}

/// Model 3a: `shrink` (which drains every CPU's array as that CPU, then gives back the
/// free slabs) racing with hits and misses on CPU 1.
pub fn model3_shrink() {
    cpu1_busy_while(
        |w| {
            w.alloc.caches().shrink(w.cache(32));
        },
        true,
    );
}

/// Model 3b: `reap` (a drain of every reapable cache, then their free slabs) racing
/// with CPU 1's hits and misses.
pub fn model3_reap() {
    cpu1_busy_while(
        |w| {
            w.alloc.caches().reap();
        },
        true,
    );
}

/// Model 4a: `tune_cpucache` (every CPU's array drained and freed as that CPU; a CPU
/// makes a new one on its next use) racing with CPU 1's hits and misses.
pub fn model4_tune() {
    cpu1_busy_while(
        |w| w.alloc.caches().tune_cpucache("size-32", 2, 1).unwrap(),
        true,
    );
}

/// Model 4b: the global switch off and on again (every array of every cache freed, the
/// operations meanwhile going to the slabs) racing with CPU 1's hits and misses.
pub fn model4_switch() {
    cpu1_busy_while(
        |w| {
            w.alloc.caches().set_per_cpu(false);
            w.alloc.caches().set_per_cpu(true);
        },
        // Allocations made while the layer is off are not counted by any array.
        false,
    );
}

/// Model 5a: `make_array`'s publication: CPU 1 uses `size-64` for the first time (makes
/// and publishes its array) while the main thread reads the cache's statistics, which
/// read every CPU's array.
pub fn model5_publish() {
    let w = World::new(2, 1);
    // CPU 0's first use grows `size-64` and the general cache that holds arrays, so
    // that CPU 1's first use only makes and publishes its array.
    w.warm(0, 64, 1);
    let cpu1 = {
        let w = Arc::clone(&w);
        on_cpu(1, move || {
            let object = w.kmalloc(64);
            w.kfree(object);
        })
    };
    let s = w.stats(64);
    assert!((1..=2).contains(&s.cpu.arrays), "{s:?}");
    cpu1.join().unwrap();
    assert_eq!(w.stats(64).cpu.arrays, 2);
    w.check_end(&[64], 2);
}

/// Model 5b: statistics on CPU 1 racing with `tune_cpucache`, which frees the arrays
/// they read (the tuning lock keeps them apart).
pub fn model5_stats_vs_tune() {
    let w = World::new(2, 1);
    w.warm(0, 32, 1);
    w.warm(1, 32, 1);
    let cpu1 = {
        let w = Arc::clone(&w);
        on_cpu(1, move || w.stats(32))
    };
    w.alloc.caches().tune_cpucache("size-32", 2, 1).unwrap();
    let seen = cpu1.join().unwrap();
    assert!(seen.cpu.arrays <= 2, "{seen:?}");
    assert_eq!(w.stats(32).cpu.arrays, 0, "tune frees every array");
    w.check_end(&[32], 2);
}

/// Model 6: `kfree` racing with `shrink` of the same cache, on the slab path (arrays
/// off for the cache, so the free reads the owner table without a lock, then takes the
/// cache lock and re-checks the page's entry under it, `SlabCache::release`), while the
/// shrink unlinks and gives back the slab that the free empties.
pub fn model6() {
    let w = World::new(0, 0);
    LoomCpus::bind(1);
    let object = w.kmalloc(32);
    LoomCpus::bind(0);
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
}

/// Model 7a: CPU 1 grows `size-64` from cold (the pages and the slab are made without
/// the cache lock, `growing` counting it) while the main thread reaps, which skips a
/// growing or recently grown cache and must never unmake the slab being made.
pub fn model7_grow_vs_reap() {
    let w = World::new(2, 1);
    let cpu1 = {
        let w = Arc::clone(&w);
        on_cpu(1, move || {
            let object = w.kmalloc(64);
            w.kfree(object);
        })
    };
    w.alloc.caches().reap();
    cpu1.join().unwrap();
    w.check_end(&[64], 1);
}

/// Executions of model 7b in which `reclaim` gave the free slab back (`[1]`), or came
/// away with nothing (`[0]`: the chain lock was busy, or `reap` had taken the slab).
pub static RECLAIM_OUTCOMES: [std::sync::atomic::AtomicUsize; 2] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 2];

/// Model 7b: `reclaim` (what an allocation that ran out of memory calls, anywhere, an
/// interrupt handler included) only tries the chain lock: racing with a `reap` on CPU 1
/// for `size-32`'s one free slab, one of them gives it back, `reclaim` never waits for
/// the chain lock, and neither deadlocks.
pub fn model7_reclaim_vs_reap() {
    // No arrays: the warm-up's objects go straight back, leaving one free slab.
    let w = World::new(0, 0);
    w.warm(0, 32, 3);
    // A first reap only clears the caches' "grown recently" hints (2.4's skip of a
    // cache that just grew), so that the racing one may take the slab.
    w.alloc.caches().reap();
    let cpu1 = {
        let w = Arc::clone(&w);
        on_cpu(1, move || w.alloc.caches().reap())
    };
    let by_reclaim = w.alloc.caches().slab().reclaim();
    let by_reap = cpu1.join().unwrap();
    let s = w.stats(32).slab;
    assert!(
        by_reclaim == 0 || by_reclaim == s.pages_per_slab,
        "{by_reclaim}"
    );
    assert_eq!(
        by_reclaim + by_reap + s.total_slabs * s.pages_per_slab,
        s.pages_per_slab,
        "the free slab is given back at most once, or kept: {s:?}"
    );
    RECLAIM_OUTCOMES[usize::from(by_reclaim > 0)]
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    w.check_end(&[32], 0);
}

/// `kfree(addr)` on CPU 1 and on the main thread (CPU 0) at once: exactly one may
/// succeed, and the other must fail with the error `refused` accepts. `what` names the
/// block in the messages (the seeded-defect tests expect them).
fn two_kfrees(w: &Arc<World>, addr: usize, what: &str, refused: fn(&SlabError) -> bool) {
    let free = move |w: &World| {
        // SAFETY: a double free on purpose: the allocator must detect it.
        unsafe { w.alloc.kfree(core::ptr::with_exposed_provenance_mut(addr)) }
    };
    let other = {
        let w = Arc::clone(w);
        on_cpu(1, move || free(&w))
    };
    let here = free(w);
    let there = other.join().unwrap();
    let wins = [here, there].iter().filter(|r| r.is_ok()).count();
    assert!(wins <= 1, "both kfrees of one {what} succeeded");
    assert_eq!(wins, 1, "neither kfree of a {what} succeeded");
    for result in [here, there] {
        assert!(result.as_ref().err().is_none_or(refused), "{result:?}");
    }
}

/// Model 8: two `kfree`s of one large block from two CPUs: the owner table's mark is
/// claimed by compare-and-swap, so exactly one frees the pages and the other is
/// reported as an invalid free.
pub fn model8() {
    let w = World::new(2, 1);
    LoomCpus::bind(0);
    let block = w.alloc.kmalloc(LARGE, Gfp::KERNEL).unwrap();
    two_kfrees(&w, block.addr().get(), "large block", |e| {
        matches!(e, SlabError::InvalidFree { .. })
    });
    w.check_end(&[], 0);
}

/// Model 9: kmalloc of two size classes from two CPUs at once, from cold: each makes its
/// array and grows its cache (two cache locks, the range lock and the page lock), with
/// no deadlock (loom reports one when every thread is blocked).
pub fn model9() {
    let w = World::new(2, 1);
    let other = {
        let w = Arc::clone(&w);
        on_cpu(1, move || {
            let object = w.kmalloc(64);
            w.kfree(object);
        })
    };
    LoomCpus::bind(0);
    let object = w.kmalloc(32);
    w.kfree(object);
    other.join().unwrap();
    w.check_end(&[32, 64], 2);
}

/// Model 10: two `kfree`s of one 32-byte object from two CPUs at once, each with its own
/// array: the live map's bit is taken by one atomic read-modify-write, so exactly one
/// free pushes the object onto its array and the other is reported as a double free,
/// whichever runs first; nothing is lost or handed out twice afterwards.
pub fn model10() {
    let w = World::new(2, 1);
    w.warm(1, 32, 1);
    LoomCpus::bind(0);
    let object = w.kmalloc(32);
    w.taken_back(object);
    two_kfrees(&w, object, "object", |e| {
        matches!(e, SlabError::DoubleFree { .. })
    });
    w.check_end(&[32], 2);
}
