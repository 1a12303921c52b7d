//! Tests of kmalloc, kfree, ksize and the `GlobalAlloc` front end (`crate::kmalloc`).

use super::*;
use crate::hosted::{HostedLayout, HostedMachine};
use crate::kmalloc::{Gfp, KMALLOC_MAX, KernelAllocator, size_class};
use crate::page::DMA_LIMIT;
use crate::platform::{PAGE_SIZE, Platform};
use crate::slab::slab_tests::{TestSlab, record, reports};
use crate::slab::*;
use crate::sync::NoInterrupts;
use crate::tests::{HostedHeap, snapshot};
use core::alloc::{GlobalAlloc, Layout};
use std::vec::Vec;

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

#[test]
fn size_classes_are_powers_of_two_from_32_bytes_to_128_kib() {
    assert_eq!(size_class(0), Some(0));
    assert_eq!(size_class(1), Some(0));
    assert_eq!(size_class(32), Some(0));
    assert_eq!(size_class(33), Some(1));
    assert_eq!(size_class(4096), Some(7));
    assert_eq!(size_class(4097), Some(8));
    assert_eq!(size_class(KMALLOC_MAX), Some(12));
    assert_eq!(size_class(KMALLOC_MAX + 1), None);
}

#[test]
fn kmalloc_takes_the_smallest_class_and_aligns_to_it() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let sizes: &[usize] = if cfg!(miri) {
        &[0, 1, 33, 100, 4096, 5000]
    } else {
        &[
            0,
            1,
            31,
            32,
            33,
            100,
            1000,
            2049,
            4096,
            5000,
            70_000,
            KMALLOC_MAX,
        ]
    };
    let mut live = Vec::new();
    for &size in sizes {
        let p = slab.kmalloc(size, Gfp::KERNEL).unwrap();
        let class = 32usize << size_class(size).unwrap();
        assert_eq!(
            slab.ksize(p.as_ptr()),
            Some(class),
            "ksize of kmalloc({size})"
        );
        assert_eq!(
            p.addr().get() % class.min(PAGE_SIZE),
            0,
            "kmalloc({size}) misaligned"
        );
        let info = slab.caches().object_info(p.addr().get()).unwrap();
        assert_eq!(info.cache, std::format!("size-{class}"));
        // SAFETY: `class` usable bytes, ours.
        unsafe { p.write_bytes(0x5a, class) };
        live.push(p);
    }
    for p in live {
        // SAFETY: from kmalloc, not used after.
        unsafe { slab.kfree(p.as_ptr()) }.unwrap();
    }
    slab.caches().check_invariants();
}

#[test]
fn gfp_dma_takes_the_dma_twin() {
    // 1 MiB on each side of the 16 MiB line: room for a large DMA block, even under Miri.
    let layout = HostedLayout {
        regions: std::vec![crate::PhysRegion::new(
            DMA_LIMIT - (1 << 20),
            DMA_LIMIT + (1 << 20)
        )],
        reserved: Vec::new(),
        window_pages: 512,
        page_tables: false,
    };
    let mut m = HostedMachine::new(layout);
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let p = slab.kmalloc(100, Gfp::DMA).unwrap();
    assert_eq!(
        slab.caches().object_info(p.addr().get()).unwrap().cache,
        "size-128(DMA)"
    );
    assert!(heap.platform().translate(p.addr().get()).unwrap().0 < DMA_LIMIT);
    let big = slab.kmalloc(KMALLOC_MAX + 1, Gfp::DMA).unwrap();
    let pages = (KMALLOC_MAX + 1).div_ceil(PAGE_SIZE);
    for i in 0..pages {
        assert!(
            heap.platform()
                .translate(big.addr().get() + i * PAGE_SIZE)
                .unwrap()
                .0
                < DMA_LIMIT
        );
    }
    // SAFETY: from kmalloc, not used after.
    unsafe {
        slab.kfree(p.as_ptr()).unwrap();
        slab.kfree(big.as_ptr()).unwrap();
    }
}

#[test]
fn large_requests_get_whole_ranges_and_give_them_back() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    heap.shrink();
    let before = snapshot(&heap);
    let size = 200 << 10;
    let p = slab.kmalloc(size, Gfp::KERNEL).unwrap();
    assert_eq!(p.addr().get() % PAGE_SIZE, 0);
    assert_eq!(
        slab.ksize(p.as_ptr()),
        Some(size.next_multiple_of(PAGE_SIZE))
    );
    // SAFETY: `size` bytes, ours.
    unsafe { p.write_bytes(1, size) };
    // Aligned beyond a page: a larger range, the pointer inside it.
    let q = slab
        .kmalloc_aligned(100, 8 * PAGE_SIZE, Gfp::KERNEL)
        .unwrap();
    assert_eq!(q.addr().get() % (8 * PAGE_SIZE), 0);
    assert!(slab.ksize(q.as_ptr()).unwrap() >= 100);
    // Not the start: rejected.
    // SAFETY: the interior pointer must be detected; `p` and `q` are freed once.
    unsafe {
        let inner = p.as_ptr().add(PAGE_SIZE);
        assert_eq!(
            slab.kfree(inner),
            Err(SlabError::InvalidFree {
                cache: None,
                addr: inner.addr()
            })
        );
        let off = p.as_ptr().add(8);
        assert_eq!(
            slab.kfree(off),
            Err(SlabError::InvalidFree {
                cache: None,
                addr: off.addr()
            })
        );
        assert_eq!(slab.ksize(off), None);
        slab.kfree(p.as_ptr()).unwrap();
        slab.kfree(q.as_ptr()).unwrap();
        // A second kfree: the pages are gone, the owner table forgot them.
        assert_eq!(
            slab.kfree(p.as_ptr()),
            Err(SlabError::InvalidFree {
                cache: None,
                addr: p.addr().get()
            })
        );
    }
    assert_eq!(reports().len(), 3);
    heap.shrink();
    assert_eq!(snapshot(&heap), before);
}

/// An alignment beyond a page takes an aligned range: the block maps the pages its size
/// needs, not `align / PAGE_SIZE - 1` more to slide the start.
#[test]
fn an_aligned_large_block_maps_exactly_the_pages_it_needs() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let mib = 1 << 20;
    for (size, align) in [(100, 8 * PAGE_SIZE), (200 << 10, mib), (PAGE_SIZE + 1, mib)] {
        heap.shrink();
        let before = snapshot(&heap);
        let p = slab.kmalloc_aligned(size, align, Gfp::KERNEL).unwrap();
        assert_eq!(p.addr().get() % align, 0, "{size} bytes at {align:#x}");
        let pages = size.div_ceil(PAGE_SIZE);
        let stats = heap.stats();
        assert_eq!(
            stats.ranges.allocated_pages,
            before.stats.ranges.allocated_pages + pages
        );
        let new_slabs = stats.ranges.cache_slabs - before.stats.ranges.cache_slabs;
        assert_eq!(
            heap.platform().mapped_pages(),
            before.mapped_pages + pages + new_slabs,
            "{size} bytes at {align:#x}: exactly ceil(size / 4096) pages mapped"
        );
        assert_eq!(slab.ksize(p.as_ptr()), Some(pages * PAGE_SIZE));
        // SAFETY: `size` bytes, ours, freed once.
        unsafe {
            p.write_bytes(7, size);
            slab.kfree(p.as_ptr()).unwrap();
        }
        heap.shrink();
        assert_eq!(snapshot(&heap), before);
    }
}

#[test]
fn kfree_checks_like_cache_free() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let p = slab.kmalloc(64, Gfp::KERNEL).unwrap();
    // SAFETY: freed once; the second free and the interior pointer must be detected.
    unsafe {
        assert_eq!(slab.kfree(core::ptr::null_mut()), Ok(()));
        let inner = p.as_ptr().add(1);
        assert_eq!(
            slab.kfree(inner),
            Err(SlabError::InvalidFree {
                cache: Some("size-64"),
                addr: inner.addr()
            })
        );
        slab.kfree(p.as_ptr()).unwrap();
        assert_eq!(
            slab.kfree(p.as_ptr()),
            Err(SlabError::DoubleFree {
                cache: "size-64",
                addr: p.addr().get()
            })
        );
    }
    assert_eq!(slab.ksize(p.as_ptr()), None, "ksize of a free object");
    assert_eq!(slab.caches().stats_of("size-64").unwrap().slab.errors, 2);
}

#[test]
fn kfree_refuses_objects_of_other_caches() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let cache = slab
        .caches()
        .create_cache("mine", 64, 0, SlabFlags::NONE, None, None)
        .unwrap();
    let o = cache.alloc().unwrap();
    let descriptor = slab.caches().slab().cache_cache_ptr().as_ptr().cast::<u8>();
    // SAFETY: neither pointer is a kmalloc block: both frees must be refused.
    unsafe {
        let error = slab.kfree(o.as_ptr());
        assert_eq!(
            error,
            Err(SlabError::WrongCache {
                expected: "kmalloc",
                actual: "mine",
                addr: o.addr().get()
            })
        );
        let error = slab.kfree(descriptor);
        assert_eq!(
            error,
            Err(SlabError::WrongCache {
                expected: "kmalloc",
                actual: "kmem_cache",
                addr: descriptor.addr()
            })
        );
        cache.free(o).unwrap();
    }
    assert_eq!(cache.stats().slab.errors, 1);
    // Nobody else can make a cache that kfree accepts.
    let general = SlabFlags::from_bits(1 << 31);
    let refused = slab
        .caches()
        .create_cache("fake", 64, 0, general, None, None)
        .err();
    assert_eq!(refused, Some(SlabError::InvalidFlags { flags: general }));
    slab.caches().check_invariants();
}

#[test]
fn kmalloc_fails_cleanly_when_nothing_fits() {
    let mut m = HostedMachine::new(HostedLayout::flat(64, 256));
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    assert_eq!(
        slab.kmalloc(300 * PAGE_SIZE, Gfp::KERNEL),
        Err(SlabError::OutOfMemory)
    );
    assert_eq!(
        slab.kmalloc(usize::MAX, Gfp::KERNEL),
        Err(SlabError::OutOfMemory)
    );
    assert_eq!(
        slab.kmalloc_aligned(8, 3, Gfp::KERNEL),
        Err(SlabError::InvalidAlign { align: 3 })
    );
    // No DMA zone on this machine.
    assert_eq!(slab.kmalloc(64, Gfp::DMA), Err(SlabError::OutOfMemory));
    // SAFETY: the layouts are valid; null is checked.
    unsafe {
        let layout = Layout::from_size_align(1 << 40, 8).unwrap();
        assert!(GlobalAlloc::alloc(&slab, layout).is_null());
    }
}

#[test]
fn global_alloc_honours_every_alignment_and_realloc_keeps_the_bytes() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let slab = start(&heap);
    let aligns: &[usize] = &[1, 8, 64, 512, 4096, 16384];
    let sizes: &[usize] = &[1, 24, 100, 3000, 9000];
    let mut live = Vec::new();
    for &align in aligns {
        for &size in sizes {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a valid, non-zero layout.
            let p = unsafe { slab.alloc(layout) };
            assert!(!p.is_null() && p.addr() % align == 0, "{layout:?} -> {p:?}");
            // SAFETY: `size` bytes, ours.
            unsafe { p.write_bytes(size as u8, size) };
            live.push((p, layout));
        }
    }
    for (p, layout) in live {
        // SAFETY: allocated above with `layout`, intact.
        unsafe {
            assert!(
                core::slice::from_raw_parts(p, layout.size())
                    .iter()
                    .all(|&b| b == layout.size() as u8)
            );
            slab.dealloc(p, layout);
        }
    }
    // realloc: in place while it fits the object, else moved with its bytes.
    let layout = Layout::from_size_align(40, 8).unwrap();
    // SAFETY: valid layouts; each block is used only while live.
    unsafe {
        let p = slab.alloc(layout);
        for i in 0..40 {
            p.add(i).write(i as u8);
        }
        assert_eq!(
            slab.realloc(p, layout, 64),
            p,
            "64 bytes fit a size-64 object"
        );
        let q = slab.realloc(p, Layout::from_size_align(64, 8).unwrap(), 1000);
        assert_ne!(q, p);
        assert!((0..40).all(|i| *q.add(i) == i as u8));
        assert_eq!(slab.ksize(q), Some(1024));
        slab.dealloc(q, Layout::from_size_align(1000, 8).unwrap());
    }
    slab.caches().check_invariants();
    assert!(reports().is_empty());
}

#[test]
fn the_kernel_allocator_is_null_until_started() {
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let global: KernelAllocator<&HostedHeap<'_>, NoInterrupts> = KernelAllocator::new();
    let layout = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a valid layout; null is checked.
    assert!(unsafe { global.alloc(layout) }.is_null());
    assert!(global.get().is_none());
    let slab = global.init(&heap, SlabOptions::default()).unwrap();
    // SAFETY: a valid layout; the block is freed once.
    unsafe {
        let p = global.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(
            slab.caches().object_info(p.addr()).unwrap().cache,
            "size-64"
        );
        global.dealloc(p, layout);
    }
    assert!(core::ptr::eq(global.get().unwrap(), slab));
}
