//! Tests of the per-CPU layer on host threads standing for CPUs ([`HostCpus`]): the hit
//! and miss paths, draining, tuning, the switch, the checks on free, and a multi-thread
//! stress with cross-CPU frees and a concurrent shrink/reap/tune loop. The allocator
//! under test is the very code the kernel runs; only the platform differs.

use crate::hosted::{HostedLayout, HostedMachine};
use crate::hosted_cpus::{HOST_CPUS, HostCpus};
use crate::kmalloc::Gfp;
use crate::kmalloc::Kmalloc;
use crate::slab::{SlabError, SlabFlags, SlabOptions};
use crate::tests::HostedHeap;
use core::cell::RefCell;
use core::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec;

type PerCpuSlab<'h, 'm> = Kmalloc<&'h HostedHeap<'m>, HostCpus>;

std::thread_local! {
    static REPORTS: RefCell<Vec<SlabError>> = const { RefCell::new(Vec::new()) };
}

fn record(error: &SlabError) {
    REPORTS.with(|r| r.borrow_mut().push(*error));
}

fn reports() -> Vec<SlabError> {
    REPORTS.with(|r| r.take())
}

fn start<'h, 'm>(heap: &'h HostedHeap<'m>) -> PerCpuSlab<'h, 'm> {
    Kmalloc::new(
        heap,
        SlabOptions {
            reporter: Some(record),
            ..SlabOptions::default()
        },
    )
    .unwrap()
}

fn machine() -> HostedMachine {
    HostedMachine::new(HostedLayout::pc())
}

#[test]
fn the_hit_path_serves_from_the_array_and_a_drain_gives_everything_back() {
    HostCpus::bind(0);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("hits", 48, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let first = cache.alloc().unwrap();
    let s = cache.stats();
    assert_eq!((s.cpu.limit, s.cpu.batchcount), (120, 60));
    assert_eq!(s.cpu.arrays, 1);
    // The miss refilled a whole batch: one object out, the rest cached, all active.
    assert_eq!(s.cpu.counters.alloc_miss, 1);
    assert_eq!(s.cpu.cached, 59);
    assert_eq!(s.slab.active_objs, 60);
    let locks = s.slab.lock_acquisitions;
    for _ in 0..1000 {
        // SAFETY: allocated above, not used after.
        unsafe { cache.free(first) }.unwrap();
        let again = cache.alloc().unwrap();
        assert_eq!(
            again, first,
            "the array is a stack: the last freed comes first"
        );
    }
    let s = cache.stats();
    assert_eq!(s.cpu.counters.alloc_hit, 1000);
    assert_eq!(s.cpu.counters.free_hit, 1000);
    // The cache's lock was taken only by the statistics themselves.
    assert!(s.slab.lock_acquisitions - locks <= 2, "{s:?}");
    // SAFETY: as above.
    unsafe { cache.free(first) }.unwrap();
    assert_eq!(cache.shrink(), 1, "shrink drains the arrays first");
    let s = cache.stats();
    assert_eq!(
        (s.slab.active_objs, s.cpu.cached, s.slab.total_slabs),
        (0, 0, 0)
    );
    cache.destroy().map_err(|(_, e)| e).unwrap();
    assert!(reports().is_empty());
}

#[test]
fn misses_move_a_batch_under_one_lock_acquisition() {
    HostCpus::bind(1);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("batches", 200, 0, SlabFlags::NONE, None, None)
        .unwrap();
    slab.caches().tune_cpucache("batches", 16, 8).unwrap();
    let before = cache.stats().slab.lock_acquisitions;
    let objs: Vec<_> = (0..800).map(|_| cache.alloc().unwrap()).collect();
    for &o in &objs {
        // SAFETY: allocated above, not used after.
        unsafe { cache.free(o) }.unwrap();
    }
    let s = cache.stats();
    let c = s.cpu.counters;
    assert_eq!(c.alloc_hit + c.alloc_miss, 800);
    assert_eq!(c.free_hit + c.free_miss, 800);
    assert!((99..=101).contains(&c.free_miss), "{c:?}");
    // A refill brings 8 (fewer when it empties the last slab): one in 8 allocations
    // misses. A full array of 16 flushes 8.
    let slabs = s.slab.total_slabs as u64;
    assert!((100..=100 + slabs).contains(&c.alloc_miss), "{c:?}");
    // Refills, flushes and the slabs grown (two acquisitions each), nothing per object.
    let locks = s.slab.lock_acquisitions - before;
    assert!(
        locks <= c.alloc_miss + c.free_miss + 3 * slabs + 4,
        "{locks}"
    );
    assert!(s.cpu.cached <= 16);
    slab.caches().drain_all();
    assert_eq!(cache.stats().slab.active_objs, 0);
}

#[test]
fn bad_frees_through_the_array_are_caught_and_change_nothing() {
    HostCpus::bind(2);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let a = slab
        .caches()
        .create_cache("cache-a", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let b = slab
        .caches()
        .create_cache("cache-b", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let x = a.alloc().unwrap();
    let y = b.alloc().unwrap();
    // SAFETY: the objects are not used after their frees; the bad frees among them are
    // detected, which is what is tested.
    unsafe {
        a.free(x).unwrap();
        let double = a.free(x);
        assert!(
            matches!(double, Err(SlabError::DoubleFree { .. })),
            "{double:?}"
        );
        let wrong = a.free(y);
        assert!(
            matches!(wrong, Err(SlabError::WrongCache { .. })),
            "{wrong:?}"
        );
        let inside = a.free(y.add(8));
        assert!(
            matches!(inside, Err(SlabError::WrongCache { .. })),
            "{inside:?}"
        );
        let x_inside = a.free(a.alloc().unwrap().add(8));
        assert!(
            matches!(x_inside, Err(SlabError::InvalidFree { .. })),
            "{x_inside:?}"
        );
        let mut local = 0u64;
        let foreign = a.free(NonNull::from(&mut local).cast());
        assert!(
            matches!(foreign, Err(SlabError::InvalidFree { cache: None, .. })),
            "{foreign:?}"
        );
        assert_eq!(reports().len(), 5);
        // `x` was handed out once more above and is still allocated: free it for good.
        a.free(x).unwrap();
        b.free(y).unwrap();
    }
    slab.caches().drain_all();
    assert_eq!(a.stats().slab.active_objs, 0);
    assert_eq!(b.stats().slab.active_objs, 0);
    assert!(reports().is_empty());
}

#[test]
fn tuning_replaces_the_arrays_and_limit_zero_turns_them_off() {
    HostCpus::bind(3);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("tuned", 100, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let o = cache.alloc().unwrap();
    assert_eq!(
        slab.caches().tune_cpucache("tuned", 10, 11),
        Err(SlabError::InvalidTuning {
            limit: 10,
            batchcount: 11
        })
    );
    assert_eq!(
        slab.caches().tune_cpucache("nope", 10, 5),
        Err(SlabError::NoSuchCache)
    );
    let default = slab.caches().cpucache_tuning("tuned").unwrap();
    assert_eq!(
        default,
        (120, 60),
        "2.4's defaults for objects up to 256 bytes"
    );
    slab.caches().tune_cpucache("tuned", 10, 5).unwrap();
    assert_eq!(slab.caches().cpucache_tuning("tuned"), Ok((10, 5)));
    assert_eq!(
        slab.caches().cpucache_tuning("nope"),
        Err(SlabError::NoSuchCache)
    );
    let s = cache.stats();
    assert_eq!((s.cpu.limit, s.cpu.batchcount, s.cpu.arrays), (10, 5, 0));
    assert_eq!(
        s.slab.active_objs, 1,
        "the old array was drained; only `o` is out"
    );
    // SAFETY: allocated above, not used after.
    unsafe { cache.free(o) }.unwrap();
    assert_eq!(cache.stats().cpu.cached, 1);
    slab.caches().tune_cpucache("tuned", 0, 0).unwrap();
    let o = cache.alloc().unwrap();
    let s = cache.stats();
    assert_eq!((s.cpu.arrays, s.cpu.cached, s.slab.active_objs), (0, 0, 1));
    // SAFETY: as above.
    unsafe { cache.free(o) }.unwrap();
    assert_eq!(cache.stats().slab.active_objs, 0);
}

#[test]
fn the_global_switch_frees_every_array_and_kmalloc_still_works() {
    HostCpus::bind(4);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let p = slab.kmalloc(100, Gfp::KERNEL).unwrap();
    assert!(slab.caches().stats_of("size-128").unwrap().cpu.arrays >= 1);
    slab.caches().set_per_cpu(false);
    assert!(!slab.caches().per_cpu_enabled());
    slab.caches()
        .for_each_stats(|s| assert_eq!((s.cpu.arrays, s.cpu.cached), (0, 0), "{}", s.slab.name));
    // SAFETY: from kmalloc above, not used after.
    unsafe { slab.kfree(p.as_ptr()) }.unwrap();
    let q = slab.kmalloc(100, Gfp::KERNEL).unwrap();
    assert_eq!(slab.caches().stats_of("size-128").unwrap().cpu.arrays, 0);
    slab.caches().set_per_cpu(true);
    // SAFETY: as above.
    unsafe { slab.kfree(q.as_ptr()) }.unwrap();
    assert_eq!(slab.caches().stats_of("size-128").unwrap().cpu.cached, 1);
}

#[test]
fn debug_caches_bypass_the_arrays_and_catch_every_double_free() {
    HostCpus::bind(5);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("debugged", 64, 0, SlabFlags::DEBUG, None, None)
        .unwrap();
    let x = cache.alloc().unwrap();
    let y = cache.alloc().unwrap();
    // SAFETY: not used after; the second free of `x` is the bug under test.
    unsafe {
        cache.free(x).unwrap();
        cache.free(y).unwrap();
        assert!(matches!(cache.free(x), Err(SlabError::DoubleFree { .. })));
    }
    assert_eq!(cache.stats().cpu.limit, 0);
    assert_eq!(reports().len(), 1);
}

#[test]
fn an_allocation_that_runs_out_reclaims_free_slabs_of_other_caches() {
    // A machine of 96 frames: fill it with one cache, free everything (the slabs stay,
    // free), then ask another cache for memory.
    let mut m = HostedMachine::new(HostedLayout::flat(96, 4096));
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    slab.caches().set_per_cpu(false);
    let hog = slab
        .caches()
        .create_cache("hog", 2048, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let mut objs = Vec::new();
    while let Ok(o) = hog.alloc() {
        objs.push(o);
    }
    assert!(objs.len() > 40);
    for o in objs {
        // SAFETY: allocated above, not used after.
        unsafe { hog.free(o) }.unwrap();
    }
    let free_slabs = hog.stats().slab.free_slabs;
    assert!(free_slabs > 0);
    let big = slab.kmalloc(64 << 10, Gfp::KERNEL);
    assert!(big.is_ok(), "reclaim should have made room: {big:?}");
    assert!(hog.stats().slab.free_slabs < free_slabs);
    // SAFETY: from kmalloc above.
    unsafe { slab.kfree(big.unwrap().as_ptr()) }.unwrap();
}

/// An object of the stress: its first word names the CPU that allocated it and a serial
/// number; the rest of it is a pattern derived from them, checked before the free.
fn fill(object: NonNull<u8>, size: usize, tag: u64) {
    let words = size / 8;
    // SAFETY: the object has `size` bytes, 8-byte aligned, and is ours.
    unsafe {
        for i in 0..words {
            object.cast::<u64>().add(i).write(tag.rotate_left(i as u32));
        }
    }
}

fn check(object: NonNull<u8>, size: usize) {
    // SAFETY: as in `fill`: the object is ours until we free it.
    unsafe {
        let tag = object.cast::<u64>().read();
        for i in 0..size / 8 {
            let word = object.cast::<u64>().add(i).read();
            assert_eq!(word, tag.rotate_left(i as u32), "object {object:p} damaged");
        }
    }
}

/// Threads standing for CPUs allocate from kmalloc and a cache of their own, free some
/// at once, keep some, hand some to the next CPU through a shared queue; one more thread
/// shrinks, reaps, tunes and switches the layer meanwhile. Afterwards nothing may be
/// lost: every cache back to its active count, every frame back in the page allocator.
#[test]
fn threads_as_cpus_allocate_and_free_across_cpus_and_lose_nothing() {
    let cpus = 4.min(HOST_CPUS);
    let rounds = if cfg!(miri) { 60 } else { 20_000 };
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let heap_before = heap.stats();
    let frames_before = heap_before.pages.free_frames;
    // Pages of the caches that never give back a slab (`NO_REAP`: the cache of caches,
    // which may grow to describe `stress`, 2 KiB a descriptor with 255 CPU slots).
    let unreaped_pages = || {
        let mut pages = 0;
        slab.caches().for_each_stats(|s| {
            if s.slab.flags.contains(SlabFlags::NO_REAP) {
                pages += s.slab.total_slabs * s.slab.pages_per_slab;
            }
        });
        pages
    };
    let unreaped_before = unreaped_pages();
    let live_map_before = slab.caches().slab().live_map_pages();
    let mine = slab
        .caches()
        .create_cache("stress", 72, 8, SlabFlags::NONE, None, None)
        .unwrap();
    /// Objects handed to one thread: (the sender's thread, the object).
    type Inbox = Mutex<Vec<(usize, NonNull<u8>)>>;
    let queues: Vec<Inbox> = (0..cpus).map(|_| Mutex::new(Vec::new())).collect();
    let finished = AtomicUsize::new(0);
    struct Shared<T>(T);
    // SAFETY: the queues hold objects handed from one thread to another; an object is
    // used by one thread at a time (whoever popped it).
    unsafe impl<T> Sync for Shared<T> {}
    // SAFETY: as above.
    unsafe impl<T> Send for Shared<T> {}
    let queues = Shared(queues);
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            let (slab, mine, queues, finished) = (&slab, &mine, &queues, &finished);
            s.spawn(move || {
                HostCpus::bind(8 + cpu);
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (cpu as u64 + 1);
                let mut kept: Vec<(usize, NonNull<u8>)> = Vec::new();
                for serial in 0..rounds {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let size = [16, 72, 100, 500, 2000, 5000][(rng % 6) as usize];
                    let object = if size == 72 {
                        mine.alloc().unwrap()
                    } else {
                        slab.kmalloc(size, Gfp::KERNEL).unwrap()
                    };
                    fill(object, size, ((cpu as u64) << 48) | serial as u64);
                    match (rng >> 8) % 4 {
                        0 => queues.0[(cpu + 1) % cpus]
                            .lock()
                            .unwrap()
                            .push((size, object)),
                        1 => kept.push((size, object)),
                        _ => free(slab, mine, size, object),
                    }
                    if kept.len() > 64 || (rng >> 16).is_multiple_of(8) {
                        let mut from_queue = queues.0[cpu].lock().unwrap();
                        kept.append(&mut from_queue);
                        drop(from_queue);
                        while let Some((size, object)) = kept.pop() {
                            free(slab, mine, size, object);
                        }
                    }
                }
                for (size, object) in kept {
                    free(slab, mine, size, object);
                }
                finished.fetch_add(1, Ordering::Release);
            });
        }
        s.spawn(|| {
            HostCpus::bind(8 + cpus);
            let mut turn = 0usize;
            while finished.load(Ordering::Acquire) < cpus || turn < 4 {
                match turn % 4 {
                    0 => {
                        mine.shrink();
                    }
                    1 => {
                        slab.caches().reap();
                    }
                    2 => slab
                        .caches()
                        .tune_cpucache("size-128", 8 + turn % 32, 4)
                        .unwrap(),
                    _ => slab.caches().set_per_cpu(turn % 8 != 3),
                }
                turn += 1;
                std::thread::yield_now();
            }
            slab.caches().set_per_cpu(true);
        });
    });
    // Whatever is left in the queues goes back.
    for queue in &queues.0 {
        for (size, object) in queue.lock().unwrap().drain(..) {
            free(&slab, &mine, size, object);
        }
    }
    slab.caches().set_per_cpu(false);
    assert_eq!(mine.stats().slab.active_objs, 0, "objects of `stress` lost");
    assert!(reports().is_empty(), "{:?}", reports());
    mine.destroy().map_err(|(_, e)| e).unwrap();
    // Off-slab descriptors (in `size-64` and co.) go with their slabs.
    slab.caches().slab().reclaim();
    // The range cache grew to describe the many ranges of the stress.
    heap.shrink();
    slab.caches().for_each_stats(|s| {
        if s.slab.name.starts_with("size-") {
            assert_eq!(s.slab.active_objs, 0, "{} lost objects", s.slab.name);
        }
    });
    // Every frame is back, except those of range-cache slabs that the range allocator
    // keeps for the descriptors of the (now differently fragmented) window: one page
    // each; those of unreaped slabs; and the live map's pages for the regions the slabs
    // reached.
    let after = heap.stats();
    let kept = after.ranges.cache_slabs - heap_before.ranges.cache_slabs
        + (unreaped_pages() - unreaped_before)
        + (slab.caches().slab().live_map_pages() - live_map_before);
    assert_eq!(after.pages.free_frames + kept, frames_before);
    slab.caches().check_invariants();
}

fn free(
    slab: &PerCpuSlab<'_, '_>,
    mine: &crate::percpu::Cache<'_, &HostedHeap<'_>, HostCpus>,
    size: usize,
    object: NonNull<u8>,
) {
    check(object, size);
    // SAFETY: allocated by the stress, owned by the caller, not used after.
    unsafe {
        if size == 72 {
            mine.free(object).unwrap();
        } else {
            slab.kfree(object.as_ptr()).unwrap();
        }
    }
}

/// Regression (issue 14): with the arrays on, a pointer inside an object of an off-slab
/// cache at a multiple of the cache's alignment used to be taken for an object start
/// (`kfree(kmalloc(8192) + 4096)`), and the next allocation overlapped a live object.
/// The owner table's first-object word makes the check exact.
#[test]
fn an_interior_pointer_of_an_off_slab_object_is_refused_with_the_arrays_on() {
    HostCpus::bind(0);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    for size in [8192, 16 << 10, 128 << 10] {
        let object = slab.kmalloc(size, Gfp::KERNEL).unwrap();
        let inside = object.as_ptr().wrapping_add(4096);
        // SAFETY: a bad free on purpose: it must be refused and change nothing.
        let error = unsafe { slab.kfree(inside) }.unwrap_err();
        assert!(
            matches!(error, SlabError::InvalidFree { cache: Some(_), addr } if addr == inside.addr()),
            "{size}: {error:?}"
        );
        assert_eq!(reports(), [error]);
        // Nothing changed: the next allocation of the class is not inside the object.
        let next = slab.kmalloc(size, Gfp::KERNEL).unwrap();
        let range = object.addr().get()..object.addr().get() + size;
        assert!(!range.contains(&next.addr().get()), "{size}: overlap");
        // SAFETY: both allocated above, freed once.
        unsafe {
            slab.kfree(next.as_ptr()).unwrap();
            slab.kfree(object.as_ptr()).unwrap();
        }
    }
    for size in [512, 2048] {
        let cache = slab
            .caches()
            .create_cache("interior", size, 8, SlabFlags::NONE, None, None)
            .unwrap();
        assert!(cache.stats().slab.off_slab, "{size}");
        let object = cache.alloc().unwrap();
        // SAFETY: inside the object, 8-byte aligned: a bad free on purpose.
        let inside = unsafe { object.add(8) };
        // SAFETY: a bad free on purpose.
        let error = unsafe { cache.free(inside) }.unwrap_err();
        assert_eq!(
            error,
            SlabError::InvalidFree {
                cache: Some("interior"),
                addr: inside.addr().get()
            }
        );
        assert_eq!(reports(), [error]);
        // Objects in the array count as active to the slabs: one is the user's.
        let s = cache.stats();
        assert_eq!(s.slab.active_objs - s.cpu.cached, 1);
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) }.unwrap();
        assert!(cache.destroy().is_ok());
    }
    slab.caches().check_invariants();
}

/// Objects parked in the arrays of other CPUs are free to their users but hold their
/// slabs. When memory runs out in process context, the allocation drains every CPU's
/// arrays and reclaims before failing (issue 14): a CPU that exhausts memory gets as many
/// objects as when nothing was parked, and the arrays are empty afterwards.
#[test]
fn running_out_of_memory_drains_the_arrays_of_other_cpus_first() {
    // Objects this CPU (slot 0) gets until memory runs out, after `park` other CPUs each
    // left a full array of 4 KiB objects behind; the objects parked; the live map's
    // pages then (one per 256 KiB region that held a slab: more when the slabs spread).
    fn objects_until_out_of_memory(park: usize) -> (usize, usize, usize) {
        HostCpus::bind(0);
        let frames = if cfg!(miri) { 128 } else { 512 };
        let mut m = HostedMachine::new(HostedLayout::flat(frames, 4 * frames as usize));
        let heap = m.boot().unwrap();
        let slab = start(&heap);
        std::thread::scope(|s| {
            for cpu in 1..=park {
                let slab = &slab;
                s.spawn(move || {
                    HostCpus::bind(cpu);
                    let objects: Vec<_> = (0..24)
                        .map(|_| slab.kmalloc(4096, Gfp::KERNEL).unwrap())
                        .collect();
                    for o in objects {
                        // SAFETY: allocated above, freed once; it stays in this CPU's array.
                        unsafe { slab.kfree(o.as_ptr()) }.unwrap();
                    }
                });
            }
        });
        let parked = slab.caches().stats_of("size-4096").unwrap().cpu.cached;
        let mut mine = Vec::new();
        while let Ok(object) = slab.kmalloc(4096, Gfp::KERNEL) {
            mine.push(object);
        }
        assert_eq!(reports(), []);
        let count = mine.len();
        let live_map = slab.caches().slab().live_map_pages();
        for o in mine {
            // SAFETY: allocated above, freed once.
            unsafe { slab.kfree(o.as_ptr()) }.unwrap();
        }
        slab.caches().check_invariants();
        (count, parked, live_map)
    }
    let (alone, _, live_map_alone) = objects_until_out_of_memory(0);
    let (with_parked, parked, live_map_parked) = objects_until_out_of_memory(3);
    assert!(parked >= 3 * 12, "the other CPUs parked {parked} objects");
    // The parked objects came back: at most a couple of pages differ (the other CPUs'
    // array objects themselves, in the general caches), and the live map's pages for
    // the regions the slabs spread to.
    let spread = live_map_parked.saturating_sub(live_map_alone);
    assert!(
        with_parked + 4 + spread >= alone,
        "{with_parked} objects with {parked} parked elsewhere ({spread} more live-map \
         pages), {alone} with none"
    );
}

/// Issue 14: with the arrays on and debug checks off, a double free with any number of
/// frees between, on the same CPU or another, is caught (the live map, `slab/live.rs`),
/// for kmalloc and for dedicated caches, on-slab and off-slab; nothing changes, and no
/// object is handed out twice. The same with the arrays off.
#[test]
fn every_double_free_is_caught_whatever_the_frees_between_and_the_cpus() {
    HostCpus::bind(0);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    for per_cpu in [true, false] {
        slab.caches().set_per_cpu(per_cpu);
        for size in [64, 512, 2048, 8192] {
            let cache = slab
                .caches()
                .create_cache("twice", size, 0, SlabFlags::NONE, None, None)
                .unwrap();
            let objects: [_; 4] = core::array::from_fn(|_| cache.alloc().unwrap());
            // SAFETY: the objects are not used after their frees; the second frees
            // are the bugs under test.
            let free = |object| unsafe { cache.free(object) };
            let [a, b, c, d] = objects;
            free(a).unwrap();
            free(b).unwrap();
            free(c).unwrap();
            // Three frees between, then the same CPU; then another CPU.
            let again = free(a).unwrap_err();
            assert_eq!(
                again,
                SlabError::DoubleFree {
                    cache: "twice",
                    addr: a.addr().get()
                }
            );
            HostCpus::bind(1);
            let elsewhere = free(b).unwrap_err();
            assert!(
                matches!(elsewhere, SlabError::DoubleFree { .. }),
                "{elsewhere:?}"
            );
            HostCpus::bind(0);
            assert_eq!(reports(), [again, elsewhere], "{size}, per-CPU {per_cpu}");
            // Nothing changed: three objects come back, all different, none `d`.
            let next: [_; 3] = core::array::from_fn(|_| cache.alloc().unwrap());
            let mut all = [next[0], next[1], next[2], d].map(|p| p.addr().get());
            all.sort_unstable();
            assert!(
                all.windows(2).all(|w| w[0] != w[1]),
                "{size}: handed out twice"
            );
            for object in next.into_iter().chain([d]) {
                free(object).unwrap();
            }
            assert!(reports().is_empty());
            slab.caches().check_invariants();
            assert!(cache.destroy().is_ok());
        }
        for size in [32, 64, 1024, 8192, 128 << 10] {
            let objects: [_; 3] =
                core::array::from_fn(|_| slab.kmalloc(size, Gfp::KERNEL).unwrap());
            // SAFETY: allocated above; the second free of `objects[0]` is the bug tested.
            unsafe {
                for object in objects {
                    slab.kfree(object.as_ptr()).unwrap();
                }
                let again = slab.kfree(objects[0].as_ptr()).unwrap_err();
                assert!(
                    matches!(again, SlabError::DoubleFree { .. }),
                    "{size}: {again:?}"
                );
            }
            assert_eq!(reports().len(), 1);
            // The freed objects are not live: `ksize` knows no usable size for them.
            assert_eq!(slab.ksize(objects[1].as_ptr()), None, "{size}");
        }
    }
    slab.caches().check_invariants();
}

/// A cache with a constructor: nothing is written into its free objects (they keep their
/// constructed state), yet a double free through the array is caught.
#[test]
fn a_constructor_cache_keeps_its_free_objects_intact_and_catches_double_frees() {
    HostCpus::bind(0);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    const PATTERN: u64 = 0xc0ff_ee00_c0ff_ee00;
    /// Fills the object with `PATTERN`.
    unsafe fn construct(object: NonNull<u8>) {
        for i in 0..16 {
            // SAFETY: the object has 128 bytes, 8-byte aligned, and is the slab's.
            unsafe { object.cast::<u64>().add(i).write(PATTERN) };
        }
    }
    let cache = slab
        .caches()
        .create_cache("built", 128, 0, SlabFlags::NONE, Some(construct), None)
        .unwrap();
    let objects: [_; 8] = core::array::from_fn(|_| cache.alloc().unwrap());
    // SAFETY: allocated above, in their constructed state; the double free is the bug.
    unsafe {
        for object in objects {
            cache.free(object).unwrap();
        }
        assert!(matches!(
            cache.free(objects[3]),
            Err(SlabError::DoubleFree { .. })
        ));
    }
    assert_eq!(reports().len(), 1);
    for object in objects {
        // SAFETY: the object is in this CPU's array, untouched; a read only.
        let words = unsafe { core::slice::from_raw_parts(object.cast::<u64>().as_ptr(), 16) };
        assert!(
            words.iter().all(|&w| w == PATTERN),
            "a free object was written"
        );
    }
}

/// `Cache::free_batch` takes each object's live mark as `free` does: a duplicate in the
/// batch, or an object freed before, is refused and reported; the others are freed.
#[test]
fn a_batch_free_refuses_duplicates_and_frees_the_rest() {
    HostCpus::bind(0);
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("batch", 96, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let mut objects = [core::ptr::null_mut(); 6];
    assert_eq!(cache.alloc_batch(&mut objects), Ok(6));
    let batch = [objects[0], objects[1], objects[0], objects[2], objects[3]];
    // SAFETY: allocated above; the duplicate is the bug tested.
    let result = unsafe { cache.free_batch(&batch) };
    assert!(
        matches!(result, Err(SlabError::DoubleFree { .. })),
        "{result:?}"
    );
    assert_eq!(reports().len(), 1);
    // SAFETY: `objects[4..]` are still allocated; `objects[0]` is not.
    unsafe {
        assert!(
            cache
                .free_batch(&[objects[4], objects[5], objects[0]])
                .is_err()
        );
    }
    assert_eq!(reports().len(), 1);
    assert_eq!(cache.stats().slab.active_objs - cache.stats().cpu.cached, 0);
    slab.caches().drain_all();
    assert_eq!(cache.stats().slab.active_objs, 0);
    slab.caches().check_invariants();
}
