//! The boot-time self-test of the slab layer and kmalloc, in the real kernel:
//!
//! * kmalloc of every size class (and its DMA twin) and of odd sizes, each object
//!   filled and checked, `ksize` at least the size asked for;
//! * `Box`, `Vec` and `BTreeMap` growth through the global allocator;
//! * a dedicated cache with a constructor and destructor: counts balance after
//!   shrink and destroy;
//! * out of memory: kmalloc of 1 TiB fails cleanly; with `mmtest=exhaust`, kmalloc of
//!   1 MiB blocks (then smaller) until it returns an error (not a panic), otherwise 4
//!   such blocks; then everything freed and the free-frame count back where it was
//!   (mapping all RAM page by page takes minutes under nested KVM, hence the switch);
//! * every detection, triggered on purpose and reported: double free, a pointer
//!   never handed out, a free into the wrong cache, and (in a debug cache) a red-zone
//!   overwrite and a write after free.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use mm::kmalloc::Gfp;
use mm::slab::{SlabError, SlabFlags};

use crate::allocator::slab;
use crate::heap::HEAP;

pub fn run(exhaust: bool) {
    kmalloc_every_size();
    log::debug!("slab self-test: kmalloc sizes done");
    collections();
    log::debug!("slab self-test: collections done");
    constructed_cache();
    log::debug!("slab self-test: constructed cache done");
    out_of_memory(exhaust);
    detections();
    println!("slab self-test: kmalloc, collections, ctor/dtor, out of memory, detections: ok");
}

fn kmalloc_every_size() {
    let slab = slab();
    let mut size = 32;
    while size <= 128 * 1024 {
        for flags in [Gfp::KERNEL, Gfp::DMA] {
            let object = slab.kmalloc(size, flags).expect("kmalloc of a size class");
            fill_and_check(object, size, size as u8);
            assert!(slab.ksize(object.as_ptr()).is_some_and(|k| k >= size));
            // SAFETY: our own object, freed once.
            unsafe { slab.kfree(object.as_ptr()) }.expect("kfree of our object");
        }
        size *= 2;
    }
    for size in [1, 33, 100, 1000, 4097, 70_000, 200_000, 1 << 20] {
        let object = slab
            .kmalloc(size, Gfp::KERNEL)
            .expect("kmalloc of an odd size");
        fill_and_check(object, size, 0x5a);
        assert!(slab.ksize(object.as_ptr()).is_some_and(|k| k >= size));
        // SAFETY: our own object, freed once.
        unsafe { slab.kfree(object.as_ptr()) }.expect("kfree of our object");
    }
}

fn fill_and_check(object: NonNull<u8>, size: usize, pattern: u8) {
    // SAFETY: kmalloc returned at least `size` writable bytes at `object`.
    let bytes = unsafe { core::slice::from_raw_parts_mut(object.as_ptr(), size) };
    bytes.fill(pattern);
    assert!(bytes.iter().all(|&byte| byte == pattern));
}

fn collections() {
    let mut numbers: Vec<u64> = Vec::new();
    for i in 0..20_000 {
        numbers.push(i * 3);
    }
    assert_eq!(numbers.iter().sum::<u64>(), 3 * (20_000 * 19_999 / 2));
    let boxed: Box<[u8; 10_000]> = Box::new([7; 10_000]);
    assert!(boxed.iter().all(|&byte| byte == 7));
    let mut map = BTreeMap::new();
    for i in 0..10_000u32 {
        map.insert(i.wrapping_mul(2_654_435_761), i);
    }
    assert_eq!(map.len(), 10_000);
    assert!(map.values().copied().map(u64::from).sum::<u64>() == 10_000 * 9_999 / 2);
}

static CONSTRUCTED: AtomicUsize = AtomicUsize::new(0);
static DESTRUCTED: AtomicUsize = AtomicUsize::new(0);

/// # Safety
///
/// Called by the slab layer on a fresh object of the test cache (48 bytes).
unsafe fn construct(object: NonNull<u8>) {
    // SAFETY: the object is 48 writable bytes that nothing else uses yet.
    unsafe { object.as_ptr().cast::<u64>().write(0xc0ffee) };
    CONSTRUCTED.fetch_add(1, Ordering::Relaxed);
}

/// # Safety
///
/// Called by the slab layer on a free object of the test cache before its slab goes.
unsafe fn destruct(object: NonNull<u8>) {
    // SAFETY: a free, constructed object of the test cache.
    let value = unsafe { object.as_ptr().cast::<u64>().read() };
    assert_eq!(
        value, 0xc0ffee,
        "objects are freed in their constructed state"
    );
    DESTRUCTED.fetch_add(1, Ordering::Relaxed);
}

fn constructed_cache() {
    let slab = slab();
    let cache = slab
        .caches()
        .create_cache(
            "selftest-ctor",
            48,
            8,
            SlabFlags::NONE,
            Some(construct),
            Some(destruct),
        )
        .expect("a cache with a constructor");
    let objects: Vec<NonNull<u8>> = (0..1000).map(|_| cache.alloc().expect("alloc")).collect();
    for &object in &objects {
        // SAFETY: a live object of this cache, constructed.
        assert_eq!(unsafe { object.as_ptr().cast::<u64>().read() }, 0xc0ffee);
    }
    for object in objects {
        // SAFETY: our object, freed once, in its constructed state.
        unsafe { cache.free(object) }.expect("free");
    }
    cache.shrink();
    if let Err((_, error)) = cache.destroy() {
        panic!("destroying an empty cache failed: {error:?}");
    }
    let (made, unmade) = (
        CONSTRUCTED.load(Ordering::Relaxed),
        DESTRUCTED.load(Ordering::Relaxed),
    );
    assert!(made >= 1000, "every object was constructed");
    assert_eq!(made, unmade, "every constructed object was destructed");
}

fn out_of_memory(exhaust: bool) {
    let limit = if exhaust { usize::MAX } else { 4 };
    let slab = slab();
    let heap = HEAP.get().expect("heap");
    let release_free_slabs = || {
        // Reap skips a cache that grew since the last reap (its free slabs are about
        // to be used), so the second pass is the one that empties every cache.
        slab.caches().reap();
        slab.caches().reap();
        heap.shrink();
    };
    release_free_slabs();
    let before = heap.stats().pages.free_frames;
    let tables_before = crate::heap::TABLE_FRAMES.load(Ordering::Relaxed);
    let live_map_before = slab.caches().slab().live_map_pages();
    let mut blocks: Vec<*mut u8> = Vec::new();
    let mut chunk = 1 << 20;
    while chunk >= 4096 && blocks.len() < limit {
        match slab.kmalloc(chunk, Gfp::KERNEL) {
            Ok(block) => {
                if blocks.try_reserve(1).is_err() {
                    // SAFETY: just allocated, freed once.
                    unsafe { slab.kfree(block.as_ptr()) }.expect("kfree");
                    break;
                }
                blocks.push(block.as_ptr());
            }
            Err(SlabError::OutOfMemory) => chunk /= 2,
            Err(error) => panic!("kmalloc failed with {error:?}, not out of memory"),
        }
    }
    let huge = slab.kmalloc(1 << 40, Gfp::KERNEL);
    assert_eq!(
        huge.err(),
        Some(SlabError::OutOfMemory),
        "1 TiB cannot be served"
    );
    let count = blocks.len();
    for block in blocks {
        // SAFETY: each block is ours, freed once.
        unsafe { slab.kfree(block) }.expect("kfree");
    }
    release_free_slabs();
    let after = heap.stats().pages.free_frames;
    // Page tables and the live map's pages (one per 256 KiB region that ever held a
    // slab) stay.
    let tables = crate::heap::TABLE_FRAMES.load(Ordering::Relaxed) - tables_before
        + (slab.caches().slab().live_map_pages() - live_map_before);
    println!(
        "slab self-test: {count} kmalloc blocks{}, all freed and reaped: \
         {before} free frames before, {after} after, {tables} of them now page tables \
         or live-map pages",
        if exhaust {
            " until out of memory"
        } else {
            " (mmtest=exhaust: until out of memory)"
        }
    );
    // `>=`, not `==`: the range cache may give back a spare slab it already held
    // before (it keeps only a low-water reserve), but nothing may be missing.
    assert!(
        after + tables >= before,
        "every frame but the new page tables came back"
    );
}

fn detections() {
    let slab = slab();
    // Without debug checks: double free and foreign pointers cost nothing to catch.
    let plain = slab
        .caches()
        .create_cache("selftest-plain", 64, 8, SlabFlags::NONE, None, None)
        .expect("cache");
    let other = slab
        .caches()
        .create_cache("selftest-other", 64, 8, SlabFlags::NONE, None, None)
        .expect("cache");
    let object = plain.alloc().expect("alloc");
    // SAFETY: our object, freed once.
    unsafe { plain.free(object) }.expect("first free");
    // SAFETY: a double free on purpose: the allocator must refuse it.
    let error = unsafe { plain.free(object) }.expect_err("a double free is detected");
    assert!(matches!(error, SlabError::DoubleFree { .. }), "{error:?}");
    println!("slab self-test: detected: {error}");

    // A double free with other frees between, through the per-CPU arrays (the live map
    // catches it, not only a compare with the last object freed), for a dedicated cache
    // and for kmalloc, on-slab (64 B) and off-slab (8 KiB).
    let [a, b, c] = [(); 3].map(|()| plain.alloc().expect("alloc"));
    // SAFETY: our objects, each freed once; the second free of `a` is on purpose.
    let error = unsafe {
        for object in [a, b, c] {
            plain.free(object).expect("free");
        }
        plain.free(a)
    }
    .expect_err("a double free with frees between is detected");
    assert!(matches!(error, SlabError::DoubleFree { .. }), "{error:?}");
    println!("slab self-test: detected: {error}");
    for size in [64, 8192] {
        let [a, b, c] = [(); 3].map(|()| slab.kmalloc(size, Gfp::KERNEL).expect("kmalloc"));
        // SAFETY: as above.
        let error = unsafe {
            for object in [a, b, c] {
                slab.kfree(object.as_ptr()).expect("kfree");
            }
            slab.kfree(a.as_ptr())
        }
        .expect_err("a double kfree with frees between is detected");
        assert!(matches!(error, SlabError::DoubleFree { .. }), "{error:?}");
        println!("slab self-test: detected: {error}");
    }
    // A pointer inside an 8 KiB object, at a 4 KiB multiple (off-slab: the alignment
    // alone would pass it).
    let big = slab.kmalloc(8192, Gfp::KERNEL).expect("kmalloc");
    // SAFETY: a pointer inside the object, on purpose; then the object itself, once.
    unsafe {
        let error = slab
            .kfree(big.as_ptr().add(4096))
            .expect_err("an interior pointer is detected");
        assert!(matches!(error, SlabError::InvalidFree { .. }), "{error:?}");
        println!("slab self-test: detected: {error}");
        slab.kfree(big.as_ptr()).expect("kfree");
    }

    let mut local = 0u64;
    let foreign = NonNull::from(&mut local).cast::<u8>();
    // SAFETY: a pointer the allocator never handed out, on purpose.
    let error = unsafe { plain.free(foreign) }.expect_err("a foreign pointer is detected");
    assert!(matches!(error, SlabError::InvalidFree { .. }), "{error:?}");
    println!("slab self-test: detected: {error}");

    let theirs = other.alloc().expect("alloc");
    // SAFETY: freeing another cache's object into this one, on purpose.
    let error = unsafe { plain.free(theirs) }.expect_err("a free into the wrong cache is detected");
    assert!(matches!(error, SlabError::WrongCache { .. }), "{error:?}");
    println!("slab self-test: detected: {error}");
    // SAFETY: now freed into its own cache, once.
    unsafe { other.free(theirs) }.expect("free into the right cache");

    // With debug checks: red zones and poison.
    let debug = slab
        .caches()
        .create_cache("selftest-debug", 64, 8, SlabFlags::DEBUG, None, None)
        .expect("cache");
    let object = debug.alloc().expect("alloc");
    // SAFETY: on purpose, one byte past the end of the 64-byte object: into its red zone.
    unsafe { object.as_ptr().add(64).write(0) };
    // SAFETY: our object, freed once.
    let error = unsafe { debug.free(object) }.expect_err("a red-zone overwrite is detected");
    assert!(matches!(error, SlabError::RedZone { .. }), "{error:?}");
    println!("slab self-test: detected: {error}");

    let object = debug.alloc().expect("alloc");
    // SAFETY: our object, freed once.
    unsafe { debug.free(object) }.expect("free");
    // SAFETY: on purpose, a write after free into a poisoned object (its memory
    // stays mapped: the slab is not freed).
    unsafe { object.as_ptr().add(8).write(1) };
    let before = debug.stats();
    let mut taken = Vec::new();
    for _ in 0..before.slab.total_objs.max(1) {
        taken.push(debug.alloc().expect("alloc"));
    }
    let after = debug.stats();
    assert!(
        after.slab.errors > before.slab.errors,
        "the write after free was detected at allocation"
    );
    for object in taken {
        // SAFETY: our objects, freed once.
        unsafe { debug.free(object) }.expect("free");
    }
    for cache in [plain, other] {
        if let Err((_, error)) = cache.destroy() {
            panic!("destroying a test cache failed: {error:?}");
        }
    }
    // The debug cache keeps its two quarantined objects, so it is not destroyed
    // (that is the point of quarantine): it stays, visible in slabinfo.
    let quarantined = debug.stats().slab.quarantined;
    assert_eq!(
        quarantined, 2,
        "the overrun object and the written-after-free one"
    );
}
