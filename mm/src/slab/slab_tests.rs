//! Unit tests of the slab layer on a hosted heap: every operation and every error path.
//! The model-based property test is in `model.rs`, kmalloc's tests in `kmalloc_tests.rs`.

use super::descriptor::Slab;
use super::*;
use crate::hosted::{HostedLayout, HostedMachine};
use crate::kmalloc::Kmalloc;
use crate::page::DMA_LIMIT;
use crate::percpu::Cache;
use crate::platform::{PAGE_SIZE, Platform};
use crate::sync::NoInterrupts;
use crate::sync::atomic::Ordering;
use crate::tests::{HostedHeap, snapshot};
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use std::vec::Vec;

/// The slab layer over a hosted heap.
pub(crate) type TestSlab<'h, 'm> = Kmalloc<&'h HostedHeap<'m>, NoInterrupts>;

std::thread_local! {
    static REPORTS: RefCell<Vec<SlabError>> = const { RefCell::new(Vec::new()) };
    static CTORS: Cell<usize> = const { Cell::new(0) };
    static DTORS: Cell<usize> = const { Cell::new(0) };
}

/// A reporter that records every report of this thread.
pub(crate) fn record(error: &SlabError) {
    REPORTS.with(|r| r.borrow_mut().push(*error));
}

/// The reports recorded on this thread since the last call.
pub(crate) fn reports() -> Vec<SlabError> {
    REPORTS.with(|r| r.take())
}

/// What the test constructor writes at the start of every object.
pub(crate) const MAGIC: u64 = 0x5EED_CAFE_F00D_0001;

/// Counts constructions (this thread) and marks the object.
///
/// # Safety
///
/// As for every `Constructor`; objects are at least 8 bytes, 8-byte aligned.
pub(crate) unsafe fn ctor(object: NonNull<u8>) {
    // SAFETY: the slab layer gives us the object's bytes, at least 8, aligned.
    unsafe { object.cast::<u64>().write(MAGIC) };
    CTORS.with(|c| c.set(c.get() + 1));
}

/// Checks the mark and counts destructions (this thread).
///
/// # Safety
///
/// As for `ctor`.
pub(crate) unsafe fn dtor(object: NonNull<u8>) {
    // SAFETY: as in `ctor`; the object is in its constructed state.
    let mark = unsafe { object.cast::<u64>().read() };
    assert_eq!(
        mark, MAGIC,
        "destructor of an object not in its constructed state"
    );
    DTORS.with(|c| c.set(c.get() + 1));
}

/// (constructions, destructions) on this thread so far.
pub(crate) fn ctor_dtor() -> (usize, usize) {
    (CTORS.with(Cell::get), DTORS.with(Cell::get))
}

fn machine() -> HostedMachine {
    HostedMachine::new(HostedLayout::pc())
}

fn start<'h, 'm>(heap: &'h HostedHeap<'m>) -> TestSlab<'h, 'm> {
    Kmalloc::new(
        heap,
        SlabOptions {
            debug: false,
            reporter: Some(record),
            ..SlabOptions::default()
        },
    )
    .unwrap()
}

/// `n` objects from `cache`.
fn alloc_n<B: SlabBackend, I: crate::platform::CpuLocal>(
    cache: &Cache<'_, B, I>,
    n: usize,
) -> Vec<NonNull<u8>> {
    (0..n).map(|_| cache.alloc().unwrap()).collect()
}

/// Frees every object of `objs` into `cache`.
fn free_all<B: SlabBackend, I: crate::platform::CpuLocal>(
    cache: &Cache<'_, B, I>,
    objs: &[NonNull<u8>],
) {
    for &o in objs {
        // SAFETY: allocated from `cache` by the test and not used afterwards.
        unsafe { cache.free(o) }.unwrap();
    }
}

#[test]
fn the_cache_of_caches_holds_its_own_descriptor() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let home = slab.caches().slab().cache_cache_ptr().addr().get();
    let info = slab.caches().object_info(home).unwrap();
    assert_eq!(
        (info.cache, info.index, info.allocated),
        ("kmem_cache", 0, true)
    );
    assert_eq!(info.object, home);
    // The owner table names the real descriptor, not the temporary it was built in.
    let entry = slab.caches().slab().owner_entry(home).unwrap();
    assert_eq!(
        entry.cache.load(Ordering::Relaxed),
        slab.caches().slab().cache_cache_ptr().as_ptr().cast()
    );
    // kmem_cache first, then the general caches smallest first, each with its DMA twin.
    let mut names = Vec::new();
    slab.caches().for_each_stats(|s| names.push(s.slab.name));
    assert_eq!(names.len(), 27);
    assert_eq!(
        &names[..4],
        ["kmem_cache", "size-32", "size-32(DMA)", "size-64"]
    );
    assert_eq!(names[26], "size-131072(DMA)");
    let cc = slab.caches().stats_of("kmem_cache").unwrap();
    assert_eq!(
        cc.slab.active_objs, 27,
        "one descriptor per cache, its own included"
    );
    assert!(cc.slab.flags.contains(SlabFlags::NO_REAP) && cc.slab.align == L1_CACHE_BYTES);
    slab.caches().check_invariants();
}

#[test]
fn objects_are_aligned_distinct_and_inside_their_slab() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("test-100", 100, 32, SlabFlags::NONE, None, None)
        .unwrap();
    assert_eq!((cache.object_size(), cache.align()), (128, 32));
    let num = cache.stats().slab.objs_per_slab;
    let objs = alloc_n(&cache, 3 * num + 1);
    let mut sorted: Vec<_> = objs.iter().map(|o| o.addr().get()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), objs.len(), "an object was handed out twice");
    for (a, b) in sorted.iter().zip(&sorted[1..]) {
        assert!(b - a >= 128, "objects overlap");
    }
    for &o in &objs {
        let info = slab.caches().object_info(o.addr().get()).unwrap();
        assert_eq!(
            (info.cache, info.object, info.allocated),
            ("test-100", o.addr().get(), true)
        );
        assert_eq!(o.addr().get() % 32, 0);
        assert!(
            info.slab <= info.object
                && info.object + 128 <= info.slab + info.slab_pages * PAGE_SIZE
        );
        // The memory is real: write all of it.
        // SAFETY: an object of 128 usable bytes, ours.
        unsafe { o.write_bytes(0xee, 128) };
    }
    let stats = cache.stats();
    assert_eq!(
        (
            stats.slab.active_objs,
            stats.slab.total_slabs,
            stats.slab.allocs
        ),
        (3 * num + 1, 4, 3 * num as u64 + 1)
    );
    slab.caches().check_invariants();
    free_all(&cache, &objs);
    assert!(cache.destroy().is_ok());
}

#[test]
fn freeing_then_allocating_reuses_the_warm_object() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("lifo", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let objs = alloc_n(&cache, 5);
    // SAFETY: allocated above, not used after.
    unsafe { cache.free(objs[2]) }.unwrap();
    assert_eq!(cache.alloc().unwrap(), objs[2]);
    free_all(&cache, &objs);
}

#[test]
fn allocation_prefers_partial_slabs_and_slabs_move_between_lists() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("lists", 256, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let num = cache.stats().slab.objs_per_slab;
    let a = alloc_n(&cache, num);
    let b = alloc_n(&cache, num);
    let slab_of = |o: NonNull<u8>| slab.caches().object_info(o.addr().get()).unwrap().slab;
    assert!(a.iter().all(|&o| slab_of(o) == slab_of(a[0])));
    assert!(b.iter().all(|&o| slab_of(o) == slab_of(b[0])) && slab_of(a[0]) != slab_of(b[0]));
    let s = cache.stats();
    assert_eq!(
        (s.slab.active_slabs, s.slab.total_slabs, s.slab.free_slabs),
        (2, 2, 0)
    );
    // b's slab becomes free, a's partial.
    free_all(&cache, &b);
    free_all(&cache, &a[..1]);
    let s = cache.stats();
    assert_eq!(
        (s.slab.active_slabs, s.slab.total_slabs, s.slab.free_slabs),
        (1, 2, 1)
    );
    // The next object comes from the partial slab, not the free one.
    let c = cache.alloc().unwrap();
    assert_eq!(slab_of(c), slab_of(a[0]));
    slab.caches().check_invariants();
    // Shrink gives back the free slab only, and its pages are forgotten.
    let freed_slab = slab_of(b[0]);
    assert_eq!(cache.shrink(), 1);
    let s = cache.stats();
    assert_eq!((s.slab.total_slabs, s.slab.reaped), (1, 1));
    assert!(slab.caches().object_info(freed_slab).is_none());
    let entry = slab.caches().slab().owner_entry(freed_slab).unwrap();
    assert!(
        entry.cache.load(Ordering::Relaxed).is_null()
            && entry.slab.load(Ordering::Relaxed).is_null()
    );
    slab.caches().check_invariants();
    free_all(&cache, &[c]);
    free_all(&cache, &a[1..]);
    assert!(cache.destroy().is_ok());
}

#[test]
fn small_objects_are_on_slab_and_large_ones_off_slab() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let small = slab
        .caches()
        .create_cache("small", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let large = slab
        .caches()
        .create_cache("large", 1024, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let (s, l) = (small.stats(), large.stats());
    assert!(!s.slab.off_slab && l.slab.off_slab);
    // Off the slab, 1 KiB objects fill the page exactly: 4 per page.
    assert_eq!(
        (l.slab.objs_per_slab, l.slab.pages_per_slab, l.slab.colours),
        (4, 1, 0)
    );
    let o = small.alloc().unwrap();
    let info = slab.caches().object_info(o.addr().get()).unwrap();
    // On-slab: the descriptor is at the start of the slab, the objects after it.
    let entry = slab.caches().slab().owner_entry(o.addr().get()).unwrap();
    assert_eq!(entry.slab.load(Ordering::Relaxed).addr(), info.slab);
    assert!(info.object >= info.slab + super::descriptor::desc_size(s.slab.objs_per_slab));
    let p = large.alloc().unwrap();
    let info = slab.caches().object_info(p.addr().get()).unwrap();
    assert_eq!(
        info.object, info.slab,
        "off-slab: the first object starts the slab"
    );
    // The descriptor is an object of a small general cache.
    let desc = slab
        .caches()
        .slab()
        .owner_entry(p.addr().get())
        .unwrap()
        .slab
        .load(Ordering::Relaxed);
    let desc_info = slab.caches().object_info(desc.addr()).unwrap();
    assert_eq!(
        (desc_info.cache, desc_info.object, desc_info.allocated),
        ("size-64", desc.addr(), true)
    );
    free_all(&small, &[o]);
    free_all(&large, &[p]);
    assert!(small.destroy().is_ok() && large.destroy().is_ok());
    // The descriptor went back to size-64 with the slab.
    let desc_info = slab.caches().object_info(desc.addr());
    assert!(desc_info.is_none_or(|i| !i.allocated));
}

#[test]
fn successive_slabs_are_coloured() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    // 200-byte objects: 19 per page, 168 bytes left over: two colours, 64 bytes apart.
    let cache = slab
        .caches()
        .create_cache("colour", 200, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let s = cache.stats();
    assert_eq!((s.slab.objs_per_slab, s.slab.colours), (19, 2));
    let objs = alloc_n(&cache, 4 * 19);
    let offsets: Vec<usize> = (0..4)
        .map(|k| {
            let info = slab
                .caches()
                .object_info(objs[k * 19].addr().get())
                .unwrap();
            info.object - info.slab
        })
        .collect();
    let desc_area = 128;
    assert_eq!(
        offsets,
        [desc_area, desc_area + 64, desc_area, desc_area + 64]
    );
    free_all(&cache, &objs);
    assert!(cache.destroy().is_ok());
}

#[test]
fn constructors_run_when_slabs_are_made_and_destructors_when_unmade() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let (c0, d0) = ctor_dtor();
    let cache = slab
        .caches()
        .create_cache("ctor", 48, 0, SlabFlags::NONE, Some(ctor), Some(dtor))
        .unwrap();
    let num = cache.stats().slab.objs_per_slab;
    assert_eq!(ctor_dtor(), (c0, d0), "no slab yet");
    let objs = alloc_n(&cache, num + 1);
    assert_eq!(
        ctor_dtor(),
        (c0 + 2 * num, d0),
        "two slabs made, every object constructed"
    );
    for &o in &objs {
        // SAFETY: an object of the cache, ours.
        assert_eq!(unsafe { o.cast::<u64>().read() }, MAGIC);
    }
    // Freeing does not destroy; reallocating does not construct again.
    free_all(&cache, &objs);
    let again = alloc_n(&cache, num + 1);
    assert_eq!(ctor_dtor(), (c0 + 2 * num, d0));
    free_all(&cache, &again);
    assert_eq!(cache.shrink(), 2);
    assert_eq!(ctor_dtor(), (c0 + 2 * num, d0 + 2 * num));
    assert!(cache.destroy().is_ok());
}

#[test]
fn destroy_refuses_a_busy_cache_then_gives_everything_back() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    // kmem_cache never gives back a slab (`NO_REAP`), and a descriptor is over 2 KiB
    // (255 per-CPU array slots): make room in it for one first, so that what is checked
    // below is only what `busy` takes and gives back.
    let warm_up = slab
        .caches()
        .create_cache("warm-up", 64, 0, SlabFlags::NONE, None, None);
    assert!(warm_up.unwrap().destroy().is_ok());
    heap.shrink();
    let before = snapshot(&heap);
    let (c0, d0) = ctor_dtor();
    let cache = slab
        .caches()
        .create_cache("busy", 3000, 0, SlabFlags::NONE, Some(ctor), Some(dtor))
        .unwrap();
    let objs = alloc_n(&cache, 7);
    let Err((cache, error)) = cache.destroy() else {
        panic!("destroyed a cache with live objects");
    };
    assert_eq!(
        error,
        SlabError::Busy {
            cache: "busy",
            active: 7
        }
    );
    // Still usable.
    let more = cache.alloc().unwrap();
    free_all(&cache, &objs);
    free_all(&cache, &[more]);
    assert!(cache.destroy().is_ok());
    let (c, d) = ctor_dtor();
    assert_eq!(c - c0, d - d0, "every constructed object was destroyed");
    assert!(slab.caches().stats_of("busy").is_none());
    slab.caches().check_invariants();
    // The cache's descriptor went back to kmem_cache, its slabs to the heap.
    slab.caches().slab().for_each_cache(Walk::OldestFirst, |c| {
        if c.name == "kmem_cache" {
            assert_eq!(c.state.lock().counters.active, 27);
        }
    });
    // The off-slab descriptors went back to a general cache: reap its free slab (the
    // second reap, as the first only clears its "grown recently" mark).
    slab.caches().reap();
    slab.caches().reap();
    heap.shrink();
    let after = snapshot(&heap);
    assert_eq!(
        after.stats.pages.free_frames,
        before.stats.pages.free_frames
    );
    assert_eq!(after.segments, before.segments);
}

#[test]
fn dropping_the_allocator_returns_every_page() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    heap.shrink();
    let before = snapshot(&heap);
    {
        let slab = start(&heap);
        let cache = slab
            .caches()
            .create_cache("drop", 700, 0, SlabFlags::NONE, None, None)
            .unwrap();
        let objs = alloc_n(&cache, 40);
        let k = slab.kmalloc(5000, crate::kmalloc::Gfp::KERNEL).unwrap();
        free_all(&cache, &objs);
        // SAFETY: from kmalloc above, not used after.
        unsafe { slab.kfree(k.as_ptr()) }.unwrap();
    }
    heap.shrink();
    assert_eq!(snapshot(&heap), before, "the slab layer leaked pages");
}

#[test]
fn double_free_and_foreign_pointers_are_detected_and_change_nothing() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let a = slab
        .caches()
        .create_cache("a", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let b = slab
        .caches()
        .create_cache("b", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let objs = alloc_n(&a, 3);
    let other = b.alloc().unwrap();
    let addr = |p: NonNull<u8>| p.addr().get();
    // SAFETY: for every `free` below, the pointer is either an object the test frees once,
    // or not an allocated object of the cache, which the allocator must detect.
    unsafe {
        a.free(objs[0]).unwrap();
        let stats = a.stats();
        let double = a.free(objs[0]);
        assert_eq!(
            double,
            Err(SlabError::DoubleFree {
                cache: "a",
                addr: addr(objs[0])
            })
        );
        let inside = objs[1].byte_add(8);
        assert_eq!(
            a.free(inside),
            Err(SlabError::InvalidFree {
                cache: Some("a"),
                addr: addr(inside)
            })
        );
        let wrong = a.free(other);
        assert_eq!(
            wrong,
            Err(SlabError::WrongCache {
                expected: "a",
                actual: "b",
                addr: addr(other)
            })
        );
        // A mapped range that is not a slab, and an address outside the window.
        let range = heap.new_range(1, crate::RangeFlags::MAP).unwrap();
        let range_ptr = NonNull::new(heap.platform().pointer_to(range)).unwrap();
        assert_eq!(
            a.free(range_ptr),
            Err(SlabError::InvalidFree {
                cache: None,
                addr: range
            })
        );
        let local = 0u64;
        let stack = NonNull::from(&local).cast::<u8>();
        assert_eq!(
            a.free(stack),
            Err(SlabError::InvalidFree {
                cache: None,
                addr: addr(stack)
            })
        );
        heap.del_range(range).unwrap();
        // Nothing changed but the error count (of the errors that concern `a`); the free
        // lists are intact.
        let now = a.stats();
        assert_eq!(
            (now.slab.active_objs, now.slab.frees, now.slab.errors),
            (
                stats.slab.active_objs,
                stats.slab.frees,
                stats.slab.errors + 3
            )
        );
        slab.caches().check_invariants();
        let reported = reports();
        assert_eq!(reported.len(), 5);
        assert!(matches!(reported[0], SlabError::DoubleFree { .. }));
        // The double-freed object is handed out once, not twice.
        let x = a.alloc().unwrap();
        let y = a.alloc().unwrap();
        assert_eq!(x, objs[0]);
        assert_ne!(y, objs[0]);
        a.free(x).unwrap();
        a.free(y).unwrap();
        a.free(objs[1]).unwrap();
        a.free(objs[2]).unwrap();
        b.free(other).unwrap();
    }
    assert!(a.destroy().is_ok() && b.destroy().is_ok());
}

#[test]
fn freeing_a_large_kmalloc_into_a_cache_is_a_wrong_cache_error() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("c", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let big = slab
        .kmalloc(200 << 10, crate::kmalloc::Gfp::KERNEL)
        .unwrap();
    // SAFETY: `big` is not an object of `cache`, which must be detected.
    let error = unsafe { cache.free(big) };
    assert_eq!(
        error,
        Err(SlabError::WrongCache {
            expected: "c",
            actual: "kmalloc (large)",
            addr: big.addr().get()
        })
    );
    // SAFETY: from kmalloc, not used after.
    unsafe { slab.kfree(big.as_ptr()) }.unwrap();
}

fn debug_slab<'h, 'm>(heap: &'h HostedHeap<'m>) -> TestSlab<'h, 'm> {
    Kmalloc::new(
        heap,
        SlabOptions {
            debug: true,
            reporter: Some(record),
            ..SlabOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn the_global_debug_switch_applies_to_caches_created_while_on() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    assert!(
        !slab
            .caches()
            .stats_of("size-64")
            .unwrap()
            .slab
            .flags
            .contains(SlabFlags::RED_ZONE)
    );
    let plain = slab
        .caches()
        .create_cache("plain", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    slab.caches().slab().set_debug(true);
    let debugged = slab
        .caches()
        .create_cache("debugged", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let constructed = slab
        .caches()
        .create_cache("constructed", 64, 0, SlabFlags::NONE, Some(ctor), None)
        .unwrap();
    slab.caches().slab().set_debug(false);
    assert_eq!(plain.stats().slab.flags, SlabFlags::NONE);
    assert_eq!(debugged.stats().slab.flags, SlabFlags::DEBUG);
    // Free constructed objects must keep their state: no poison.
    assert_eq!(constructed.stats().slab.flags, SlabFlags::RED_ZONE);
    let explicit = slab
        .caches()
        .create_cache("explicit", 64, 0, SlabFlags::POISON, None, None)
        .unwrap();
    assert_eq!(explicit.stats().slab.flags, SlabFlags::POISON);
    let dbg = debug_slab(&heap);
    assert!(
        dbg.caches()
            .stats_of("size-64")
            .unwrap()
            .slab
            .flags
            .contains(SlabFlags::DEBUG)
    );
    assert!(
        !dbg.caches()
            .stats_of("kmem_cache")
            .unwrap()
            .slab
            .flags
            .contains(SlabFlags::RED_ZONE)
    );
}

#[test]
fn red_zones_catch_overruns_and_underruns_on_free() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("rz", 20, 0, SlabFlags::RED_ZONE, None, None)
        .unwrap();
    assert_eq!(cache.object_size(), 24);
    let [a, b, c] = [0; 3].map(|_| cache.alloc().unwrap());
    // SAFETY: the test writes one byte past / before its own objects, on purpose: the
    // bytes are red-zone words inside the objects' slots, which the allocator checks.
    unsafe {
        a.add(24).write(0);
        b.sub(1).write(0);
        let over = cache.free(a);
        assert!(
            matches!(
                over,
                Err(SlabError::RedZone {
                    cache: "rz",
                    side: RedZoneSide::After,
                    ..
                })
            ),
            "{over:?}"
        );
        let under = cache.free(b);
        assert!(
            matches!(
                under,
                Err(SlabError::RedZone {
                    side: RedZoneSide::Before,
                    ..
                })
            ),
            "{under:?}"
        );
        // A correct object frees fine.
        cache.free(c).unwrap();
    }
    let s = cache.stats();
    assert_eq!(
        (s.slab.quarantined, s.slab.active_objs, s.slab.errors),
        (2, 2, 2)
    );
    assert_eq!(reports().len(), 2);
    slab.caches().check_invariants();
    // Quarantined objects are never handed out again, and do not keep the cache alive.
    let d = cache.alloc().unwrap();
    assert!(d != a && d != b);
    free_all(&cache, &[d]);
    assert!(cache.destroy().is_ok());
}

#[test]
fn poison_catches_a_write_after_free_at_the_next_allocation() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("uaf", 64, 0, SlabFlags::DEBUG, None, None)
        .unwrap();
    let a = cache.alloc().unwrap();
    let keep = cache.alloc().unwrap();
    // SAFETY: freed once; the write after free is the bug under test, into memory that
    // stays mapped (the slab keeps `keep`).
    unsafe {
        cache.free(a).unwrap();
        a.add(10).write(0x42);
    }
    // LIFO would hand `a` out again: it is quarantined instead, and reported.
    let b = cache.alloc().unwrap();
    assert_ne!(b, a);
    let reported = reports();
    assert_eq!(
        reported,
        [SlabError::UseAfterFree {
            cache: "uaf",
            addr: a.addr().get(),
            offset: 10,
            found: 0x42
        }]
    );
    assert_eq!(cache.stats().slab.quarantined, 1);
    // The poison is intact on a fresh object: the user sees the pattern.
    let fresh = cache.alloc().unwrap();
    // SAFETY: 64 usable bytes of a live object.
    let bytes = unsafe { core::slice::from_raw_parts(fresh.as_ptr(), 63) };
    assert!(bytes.iter().all(|&x| x == POISON_FREE));
    free_all(&cache, &[b, keep, fresh]);
    assert!(cache.destroy().is_ok());
}

#[test]
fn poison_catches_a_write_after_free_when_the_slab_is_unmade() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("late", 128, 0, SlabFlags::POISON, None, None)
        .unwrap();
    let a = cache.alloc().unwrap();
    // SAFETY: the slab stays until `shrink`; the write after free is the bug under test.
    unsafe {
        cache.free(a).unwrap();
        a.add(127).write(0);
    }
    assert_eq!(cache.shrink(), 1);
    assert_eq!(
        reports(),
        [SlabError::UseAfterFree {
            cache: "late",
            addr: a.addr().get(),
            offset: 127,
            found: 0
        }]
    );
    assert_eq!(cache.stats().slab.errors, 1);
}

#[test]
fn a_constructor_that_writes_past_its_object_is_reported() {
    unsafe fn sloppy(object: NonNull<u8>) {
        // SAFETY: writes 8 bytes past a 16-byte object: into its red zone, on purpose.
        unsafe { object.add(16).cast::<u64>().write(0) };
    }
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("sloppy", 16, 0, SlabFlags::RED_ZONE, Some(sloppy), None)
        .unwrap();
    let a = cache.alloc().unwrap();
    let reported = reports();
    assert!(matches!(
        reported[0],
        SlabError::RedZone {
            cache: "sloppy",
            side: RedZoneSide::After,
            found: 0,
            ..
        }
    ));
    // The red zone was repaired, so the object itself is usable.
    free_all(&cache, &[a]);
}

#[test]
fn reap_skips_no_reap_and_recently_grown_caches() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let normal = slab
        .caches()
        .create_cache("normal", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let pinned = slab
        .caches()
        .create_cache("pinned", 64, 0, SlabFlags::NO_REAP, None, None)
        .unwrap();
    let a = normal.alloc().unwrap();
    let b = pinned.alloc().unwrap();
    free_all(&normal, &[a]);
    free_all(&pinned, &[b]);
    // Both just grew: the first reap only clears that mark.
    let first = slab.caches().reap();
    assert_eq!(normal.stats().slab.free_slabs, 1);
    let second = slab.caches().reap();
    assert!(second >= 1, "reap gave nothing back");
    assert_eq!(normal.stats().slab.total_slabs, 0);
    assert_eq!(
        pinned.stats().slab.total_slabs,
        1,
        "NO_REAP cache was reaped"
    );
    assert!(
        slab.caches()
            .stats_of("kmem_cache")
            .unwrap()
            .slab
            .total_slabs
            >= 1
    );
    // shrink ignores NO_REAP.
    assert_eq!(pinned.shrink(), 1);
    let _ = first;
    slab.caches().check_invariants();
}

#[test]
fn out_of_memory_is_an_error_and_everything_comes_back() {
    // 96 frames: the slab layer's own pages and a few slabs.
    let mut m = HostedMachine::new(HostedLayout::flat(96, 512));
    let heap = m.boot().unwrap();
    heap.shrink();
    let before = snapshot(&heap);
    {
        let slab = start(&heap);
        let cache = slab
            .caches()
            .create_cache("oom", 2048, 0, SlabFlags::NONE, None, None)
            .unwrap();
        let mut objs = Vec::new();
        let error = loop {
            match cache.alloc() {
                Ok(o) => objs.push(o),
                Err(e) => break e,
            }
        };
        assert_eq!(error, SlabError::OutOfMemory);
        assert!(objs.len() >= 20, "only {} objects", objs.len());
        let mut batch = [core::ptr::null_mut(); 4];
        assert_eq!(cache.alloc_batch(&mut batch), Err(SlabError::OutOfMemory));
        assert_eq!(
            slab.kmalloc(64 << 10, crate::kmalloc::Gfp::KERNEL),
            Err(SlabError::OutOfMemory)
        );
        slab.caches().check_invariants();
        free_all(&cache, &objs);
        // After freeing, memory is there again.
        free_all(&cache, &[cache.alloc().unwrap()]);
        assert!(cache.destroy().is_ok());
    }
    heap.shrink();
    assert_eq!(snapshot(&heap), before);
}

#[test]
fn batches_take_the_lock_once_per_slab_and_check_every_object() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("batch", 512, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let num = cache.stats().slab.objs_per_slab;
    let mut out = [core::ptr::null_mut(); 20];
    assert_eq!(cache.alloc_batch(&mut out), Ok(20));
    assert_eq!(cache.stats().slab.total_slabs, 20usize.div_ceil(num));
    let mut sorted = out.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 20);
    assert_eq!(cache.alloc_batch(&mut []), Ok(0));
    // One bad pointer in the batch: the others are freed, the first error returned.
    let mut bad = out.to_vec();
    bad.insert(5, out[3]);
    // SAFETY: every object is freed once; the duplicate must be detected.
    let result = unsafe { cache.free_batch(&bad) };
    assert_eq!(
        result,
        Err(SlabError::DoubleFree {
            cache: "batch",
            addr: out[3].addr()
        })
    );
    assert_eq!(cache.stats().slab.active_objs, 0);
    slab.caches().check_invariants();
    // Interleaved slabs, an interior pointer, another cache's object and a pointer of no
    // slab in one batch: each is reported once, every real object is freed.
    assert_eq!(cache.alloc_batch(&mut out), Ok(20));
    let other = slab
        .caches()
        .create_cache("other", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let theirs = other.alloc().unwrap();
    let mut local = 0u64;
    let mut mixed: Vec<*mut u8> = out.iter().rev().step_by(2).copied().collect();
    mixed.push(out[7].wrapping_add(8));
    mixed.extend(out.iter().step_by(2));
    mixed.push(theirs.as_ptr());
    mixed.push((&raw mut local).cast());
    let errors_before = cache.stats().slab.errors;
    // SAFETY: every object of `out` is freed once; the rest must be refused.
    let result = unsafe { cache.free_batch(&mixed) };
    assert_eq!(
        result,
        Err(SlabError::InvalidFree {
            cache: Some("batch"),
            addr: out[7].addr() + 8
        })
    );
    assert_eq!(cache.stats().slab.active_objs, 0);
    // Counted in this cache: the interior pointer and the other cache's object (a
    // pointer of no slab names no cache to count it in).
    assert_eq!(cache.stats().slab.errors, errors_before + 2);
    assert_eq!(other.stats().slab.active_objs, 1);
    slab.caches().check_invariants();
    // SAFETY: allocated from `other`, freed once.
    unsafe { other.free(theirs) }.unwrap();
    assert!(other.destroy().is_ok());
    assert!(cache.destroy().is_ok());
}

/// The slab layer's own flush (`SlabCaches::free_batch`, below the live map that
/// refuses bad frees first for users): a double free inside a run of one slab, an
/// interior pointer of the slab in hand, and another cache's object each stop the run
/// there, are reported, and every valid object around them is freed.
#[test]
fn a_slab_flush_refuses_what_the_slab_does_not_hold_and_frees_the_rest() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let caches = slab.caches();
    let cache = caches
        .create_cache("flush", 512, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let other = caches
        .create_cache("flush-other", 512, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let (layer, desc) = (caches.slab(), cache.descriptor());
    let mut out = [core::ptr::null_mut(); 24];
    assert_eq!(layer.alloc_batch(desc, &mut out), Ok(24));
    let mut theirs = [core::ptr::null_mut(); 1];
    assert_eq!(layer.alloc_batch(other.descriptor(), &mut theirs), Ok(1));
    let num = cache.stats().slab.objs_per_slab;
    assert!(num < 24, "the objects span several slabs");
    let cases: [(Vec<*mut u8>, SlabError); 3] = [
        (
            vec![out[0], out[1], out[0], out[2]],
            SlabError::DoubleFree {
                cache: "flush",
                addr: out[0].addr(),
            },
        ),
        (
            vec![out[3], out[4].wrapping_add(8), out[5]],
            SlabError::InvalidFree {
                cache: Some("flush"),
                addr: out[4].addr() + 8,
            },
        ),
        (
            vec![out[6], theirs[0], out[7]],
            SlabError::WrongCache {
                expected: "flush",
                actual: "flush-other",
                addr: theirs[0].addr(),
            },
        ),
    ];
    let mut freed = 0;
    for (batch, error) in cases {
        let errors_before = cache.stats().slab.errors;
        assert_eq!(layer.free_batch(desc, &batch), Err(error));
        assert_eq!(cache.stats().slab.errors, errors_before + 1);
        // Everything but the refused pointer is freed, before and after it.
        freed += batch.len() - 1;
        assert_eq!(cache.stats().slab.active_objs, 24 - freed);
        caches.check_invariants();
    }
    // The rest (and the object whose interior was refused), from the last slab to the
    // first: runs of several slabs in one batch.
    let rest: Vec<*mut u8> = out[8..].iter().rev().chain([&out[4]]).copied().collect();
    assert_eq!(layer.free_batch(desc, &rest), Ok(()));
    assert_eq!(cache.stats().slab.active_objs, 0);
    assert_eq!(layer.free_batch(other.descriptor(), &theirs), Ok(()));
    caches.check_invariants();
    assert!(other.destroy().is_ok());
    assert!(cache.destroy().is_ok());
}

#[test]
fn dma_caches_take_frames_below_16_mib() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("dma", 1000, 0, SlabFlags::DMA, None, None)
        .unwrap();
    let objs = alloc_n(&cache, 10);
    for &o in &objs {
        let frame = heap.platform().translate(o.addr().get()).unwrap();
        assert!(frame.0 < DMA_LIMIT, "DMA object in frame {frame:?}");
    }
    free_all(&cache, &objs);
}

#[test]
fn slabinfo_has_the_2_4_format() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("info", 100, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let objs = alloc_n(&cache, 3);
    let mut text = std::string::String::new();
    slab.caches().slabinfo(&mut text).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "slabinfo - version: 1.1");
    assert_eq!(lines.len(), 1 + 28);
    let s = cache.stats();
    let expected = std::format!(
        "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} {:>4} : {:>4} {:>3}",
        "info",
        3,
        s.slab.total_objs,
        104,
        1,
        1,
        1,
        0, // no per-CPU arrays without a per-CPU guard (`NoInterrupts`)
        0,
    );
    assert_eq!(expected.len(), 17 + 7 + 7 + 7 + 5 + 5 + 5 + 3 + 4 + 4);
    assert_eq!(*lines.last().unwrap(), expected);
    assert!(lines[1].starts_with("kmem_cache "));
    let mut text = std::string::String::new();
    slab.caches().slabinfo_statistics(&mut text).unwrap();
    assert!(text.starts_with("slabinfo - version: 1.1 (statistics)\n"));
    let last = text.lines().last().unwrap();
    assert!(
        last.contains(" :      3       3     1    0    0 :       0     0       0     0    0 "),
        "{last:?}"
    );
    free_all(&cache, &objs);
}

#[test]
fn the_slab_descriptor_is_found_from_any_object_in_o1() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("multi", 6000, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let s = cache.stats();
    assert!(s.slab.pages_per_slab > 1);
    let objs = alloc_n(&cache, s.slab.objs_per_slab);
    // Every page of the slab names the same descriptor.
    let info = slab.caches().object_info(objs[0].addr().get()).unwrap();
    let descs: Vec<_> = (0..info.slab_pages)
        .map(|p| {
            slab.caches()
                .slab()
                .owner_entry(info.slab + p * PAGE_SIZE)
                .unwrap()
                .slab
                .load(Ordering::Relaxed)
        })
        .collect();
    assert!(descs.iter().all(|&d| d == descs[0] && !d.is_null()));
    let guard = cache.descriptor().state.lock();
    // SAFETY: a live slab descriptor of `cache`, read under its lock.
    let view =
        unsafe { Slab::from_ptr(NonNull::new(descs[0]).unwrap()).get_mut(s.slab.objs_per_slab) };
    assert_eq!(view.inuse(), s.slab.objs_per_slab);
    drop(guard);
    free_all(&cache, &objs);
}

#[test]
fn threads_share_a_cache_without_losing_or_duplicating_objects() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("shared", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let (threads, rounds, live) = if cfg!(miri) {
        (3, 20, 4)
    } else {
        (4, 5_000, 32)
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cache, slab) = (&cache, &slab);
            s.spawn(move || {
                // Objects of the cache, and kmalloc'd ones (`true`).
                let mut mine: Vec<(NonNull<u8>, bool)> = Vec::new();
                let release = |(o, kmalloced): (NonNull<u8>, bool)| {
                    // SAFETY: ours, not used after.
                    let freed = unsafe {
                        if kmalloced {
                            slab.kfree(o.as_ptr())
                        } else {
                            cache.free(o)
                        }
                    };
                    freed.unwrap();
                };
                for r in 0..rounds {
                    if mine.len() < live && (r % 3 != 0 || mine.is_empty()) {
                        let kmalloced = r % 2 == 1;
                        let o = if kmalloced {
                            slab.kmalloc(64, crate::kmalloc::Gfp::KERNEL).unwrap()
                        } else {
                            cache.alloc().unwrap()
                        };
                        // SAFETY: 64 bytes of a fresh object, ours.
                        unsafe { o.write_bytes(t as u8, 64) };
                        mine.push((o, kmalloced));
                    } else {
                        let (o, kmalloced) = mine.swap_remove(r % mine.len());
                        // SAFETY: ours, written above.
                        let bytes = unsafe { core::slice::from_raw_parts(o.as_ptr(), 64) };
                        assert!(
                            bytes.iter().all(|&b| b == t as u8),
                            "object shared between threads"
                        );
                        release((o, kmalloced));
                    }
                }
                mine.into_iter().for_each(release);
            });
        }
    });
    slab.caches().check_invariants();
    assert_eq!(cache.stats().slab.active_objs, 0);
    assert!(reports().is_empty());
}

/// Regression: a flush batch whose first object is a double free into a slab on the
/// `free` list took that slab "in hand" as if it were on `partial`, and moved it from
/// `partial` to `free` when the double free was found: the lists were corrupted (a
/// debug assertion in `list.rs`, a loop in release builds).
#[test]
fn a_double_free_into_a_free_slab_in_a_batch_leaves_the_lists_intact() {
    let mut m = machine();
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("refree", 128, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let p = cache.alloc().unwrap();
    let q = cache.alloc().unwrap();
    // SAFETY: allocated above, freed once: its slab keeps `q`.
    unsafe { cache.free(p) }.unwrap();
    // SAFETY: allocated above, freed once: the slab is now on `free`.
    unsafe { cache.free(q) }.unwrap();
    assert_eq!(cache.stats().slab.free_slabs, 1);
    // SAFETY: both already free: the batch must be refused object by object.
    let result = unsafe { cache.free_batch(&[q.as_ptr(), p.as_ptr()]) };
    assert_eq!(
        result,
        Err(SlabError::DoubleFree {
            cache: "refree",
            addr: q.addr().get()
        })
    );
    assert_eq!(reports().len(), 2, "both double frees are reported");
    slab.caches().check_invariants();
    let s = cache.stats().slab;
    assert_eq!((s.active_objs, s.free_slabs, s.total_slabs), (0, 1, 1));
    let again = cache.alloc().unwrap();
    // SAFETY: allocated just now, freed once.
    unsafe { cache.free(again) }.unwrap();
    assert!(cache.destroy().is_ok());
}
