//! What every model of the allocator shares: a small hosted machine booted inside each
//! explored execution, the real `Kmalloc` over `LoomCpus`, a registry of the objects
//! handed out (to catch one handed out twice), the end-of-model checks, and a runner
//! that reports how many interleavings loom explored and how long it took.
//!
//! The registry is a `std::sync::Mutex`, not loom's, on purpose: it is the models'
//! bookkeeping, not part of what is checked, and it must add no interleavings. loom runs
//! one thread at a time and never switches inside it (no loom operation happens while
//! it is held), so it never blocks.
#![allow(dead_code)] // each test binary uses part of it

pub mod models;

use loom::sync::Arc;
use mm::Heap;
use mm::hosted::{HostedLayout, HostedMachine, HostedPlatform};
use mm::kmalloc::{Gfp, Kmalloc};
use mm::loom_cpus::LoomCpus;
use mm::percpu::{CacheDescriptor, CacheStats};
use mm::slab::SlabOptions;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The allocator under test: kmalloc over the per-CPU arrays over the slab caches over
/// the hosted heap, CPUs being loom threads.
pub type Alloc = Kmalloc<&'static Heap<'static, &'static HostedPlatform>, LoomCpus>;

/// Frames and window pages of the model's machine: room for the owner table, the cache
/// of caches, a slab or two of the caches a model uses, the arrays, and one block larger
/// than 128 KiB; small, because loom makes every atomic of the machine anew in every
/// execution.
const FRAMES: u64 = 96;
const WINDOW_PAGES: usize = 96;

/// A booted machine and allocator, alive for one explored execution.
pub struct World {
    pub alloc: &'static Alloc,
    live: Mutex<HashSet<usize>>,
    // Dropped by hand, in order, once every thread that borrowed them is joined.
    heap: *mut Heap<'static, &'static HostedPlatform>,
    machine: *mut HostedMachine,
    alloc_box: *mut Alloc,
}

// SAFETY: the raw pointers are only the owners of the boxes behind `alloc`, touched in
// `Drop` alone; everything shared is `Sync` (the allocator) or behind a mutex.
unsafe impl Send for World {}
// SAFETY: see `Send`.
unsafe impl Sync for World {}

impl World {
    /// Boots the machine and the allocator, with `size-32` and `size-64` tuned to
    /// `limit`/`batchcount` (so that a few operations refill and flush).
    pub fn new(limit: usize, batchcount: usize) -> Arc<Self> {
        // The cache locks disable "interrupts" too: the booting thread is a CPU.
        LoomCpus::bind(0);
        let machine = Box::into_raw(Box::new(HostedMachine::new(HostedLayout::flat(
            FRAMES,
            WINDOW_PAGES,
        ))));
        // SAFETY: `machine` lives until `Drop`, which frees it last, after everything
        // that borrows it; nothing else touches it meanwhile. The `'static` is a lie
        // kept honest by `Drop`: every thread of the model is joined before the world is
        // dropped (`run` drops it at the end of the execution, after the joins).
        let heap = Box::into_raw(Box::new(
            unsafe { &mut *machine }
                .boot()
                .expect("boot the model's machine"),
        ));
        // SAFETY: as for `machine`.
        let heap_ref: &'static Heap<'static, &'static HostedPlatform> = unsafe { &*heap };
        let alloc_box = Box::into_raw(Box::new(
            Kmalloc::new(heap_ref, SlabOptions::default()).expect("start the allocator"),
        ));
        // SAFETY: as for `machine`.
        let alloc: &'static Alloc = unsafe { &*alloc_box };
        for name in ["size-32", "size-64"] {
            alloc
                .caches()
                .tune_cpucache(name, limit, batchcount)
                .expect("tune");
        }
        Arc::new(Self {
            alloc,
            live: Mutex::new(HashSet::new()),
            heap,
            machine,
            alloc_box,
        })
    }

    /// The general cache of `size`-byte objects.
    pub fn cache(&self, size: usize) -> &'static CacheDescriptor<LoomCpus> {
        let class = mm::slab::size_class(size).expect("a size class");
        self.alloc
            .caches()
            .slab()
            .general_cache(class, false)
            .expect("general caches exist")
    }

    pub fn stats(&self, size: usize) -> CacheStats {
        self.alloc.caches().stats(self.cache(size))
    }

    /// kmalloc, recording the object as handed out.
    pub fn kmalloc(&self, size: usize) -> usize {
        let addr = self
            .alloc
            .kmalloc(size, Gfp::KERNEL)
            .expect("kmalloc in the model")
            .addr()
            .get();
        self.handed_out(addr);
        addr
    }

    /// kfree of an object this thread holds.
    pub fn kfree(&self, addr: usize) {
        self.taken_back(addr);
        // SAFETY: the model no longer uses the object.
        unsafe {
            self.alloc
                .kfree(core::ptr::with_exposed_provenance_mut(addr))
        }
        .expect("kfree in the model");
    }

    pub fn handed_out(&self, addr: usize) {
        assert!(
            self.live.lock().unwrap().insert(addr),
            "object {addr:#x} handed out twice"
        );
    }

    pub fn taken_back(&self, addr: usize) {
        assert!(
            self.live.lock().unwrap().remove(&addr),
            "object {addr:#x} freed but not handed out"
        );
    }

    /// Allocates `n` objects of `size` as CPU `cpu` (from the main thread, before the
    /// CPUs start), so that the cache has a slab and `cpu` has its array, then frees
    /// them: a warm start, which keeps slab growth (and its many interleavings) out of
    /// the models that are not about it. The main thread is CPU 0 again afterwards.
    pub fn warm(&self, cpu: usize, size: usize, n: usize) {
        LoomCpus::bind(cpu);
        let objects: Vec<usize> = (0..n).map(|_| self.kmalloc(size)).collect();
        for object in objects {
            self.kfree(object);
        }
        LoomCpus::bind(0);
    }

    /// The end of every model: nothing handed out is left, every array is emptied into
    /// the slabs, no slab object is still counted active in the caches the model used
    /// (none lost, none counted twice), the per-CPU counters add up, and every invariant
    /// of the slab layer holds.
    pub fn check_end(&self, sizes: &[usize], expected_allocs: u64) {
        assert!(
            self.live.lock().unwrap().is_empty(),
            "objects still handed out at the end"
        );
        self.alloc.caches().drain_all();
        let mut allocs = 0;
        for &size in sizes {
            let s = self.stats(size);
            assert_eq!(s.cpu.cached, 0, "{}: cached after drain_all", s.name());
            assert_eq!(
                s.slab.active_objs,
                0,
                "{}: objects lost (active after everything was freed)",
                s.name()
            );
            allocs += s.cpu.counters.alloc_hit + s.cpu.counters.alloc_miss;
        }
        if expected_allocs > 0 {
            assert_eq!(allocs, expected_allocs, "per-CPU allocation counters");
        }
        self.alloc.caches().check_invariants();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A failing execution unwinds through here, maybe from inside a CPU's critical
        // section or an `on_each_cpu`: dropping the allocator (which drains every CPU)
        // would panic again and abort the test process. Leak it; the report stands.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: made by `Box::into_raw` in `new`; every thread that borrowed them has
        // been joined (see `new`). Dropped in reverse order of borrowing.
        unsafe {
            drop(Box::from_raw(self.alloc_box));
            drop(Box::from_raw(self.heap));
            drop(Box::from_raw(self.machine));
        }
    }
}

/// Runs `f` under loom with preemption bound `preemptions` (`None`: unbounded), then
/// prints how many executions (interleavings) loom explored and the time, as
/// `scripts/test` collects them. `LOOM_MAX_PREEMPTIONS` in the environment overrides the
/// bound (to explore deeper by hand).
pub fn run<F: Fn() + Send + Sync + 'static>(name: &str, preemptions: Option<usize>, f: F) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = preemptions;
    }
    // Booting the machine alone passes thousands of atomic operations (every one a loom
    // branch point, with a single choice while one thread runs); the default of 1000
    // would stop the model there.
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 1_000_000;
    }
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executions);
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.check(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            f();
        });
    }));
    let bound = builder
        .preemption_bound
        .map_or_else(|| "none".to_string(), |b| b.to_string());
    let explored = executions.load(Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => println!(
            "loom model {name}: {explored} interleavings in {seconds:.1} s (preemption bound {bound})"
        ),
        Err(report) => {
            println!(
                "loom model {name}: failed at interleaving {explored}, after {seconds:.1} s \
                 (preemption bound {bound})"
            );
            std::panic::resume_unwind(report);
        }
    }
}
