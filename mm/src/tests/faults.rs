//! Fault injection: a fixed workload of every layer (create, grow, kmalloc of every
//! class, large blocks, per-CPU refills and flushes, range-cache refills, reap, destroy)
//! run again and again with the Nth frame allocation (layer 4), or the Nth page mapping
//! (the platform), failing, for every N until the workload runs without reaching the
//! fault. Each run must see only `OutOfMemory` errors, leak nothing (frames, ranges,
//! mappings, objects, array slots: the heap ends as it started), keep every invariant,
//! and the allocator must work normally afterwards.
//!
//! Not under Miri: hundreds of boots of a machine large enough for a 200 KiB block would
//! take hours there; the paths they reach run under Miri in the unit tests.

#![cfg(not(miri))]

use super::{HostedHeap, snapshot};
use crate::hosted::{HostedLayout, HostedMachine};
use crate::hosted_cpus::HostCpus;
use crate::kmalloc::{Gfp, KMALLOC_CLASSES, KMALLOC_MIN, Kmalloc};
use crate::range::{RangeError, RangeFlags};
use crate::slab::{SlabError, SlabFlags, SlabOptions};
use core::ptr::NonNull;
use std::vec::Vec;

type Allocator<'h, 'm> = Kmalloc<&'h HostedHeap<'m>, HostCpus>;

/// What the workload got, to give back.
#[derive(Default)]
struct Held {
    cache_objects: Vec<(usize, NonNull<u8>)>,
    kmalloc: Vec<NonNull<u8>>,
    ranges: Vec<usize>,
    failures: usize,
}

/// Notes an allocation failure, which must be `OutOfMemory` and nothing else.
fn out_of_memory(held: &mut Held, error: SlabError) {
    assert_eq!(error, SlabError::OutOfMemory);
    held.failures += 1;
}

/// The workload; every allocation may fail (and is then skipped), everything it got is
/// given back before it returns. Returns how many allocations failed.
fn workload(heap: &HostedHeap<'_>, slab: &Allocator<'_, '_>) -> usize {
    let mut held = Held::default();
    // Dedicated caches: one on-slab with a small per-CPU array (refills and flushes
    // inside the workload), one off-slab (its descriptors come from a general cache).
    let mut caches = Vec::new();
    for (name, size) in [("fault-small", 96), ("fault-large", 1024)] {
        match slab
            .caches()
            .create_cache(name, size, 0, SlabFlags::NONE, None, None)
        {
            Ok(cache) => caches.push(cache),
            Err(error) => out_of_memory(&mut held, error),
        }
    }
    for cache in &caches {
        if slab.caches().tune_cpucache(cache.name(), 4, 2).is_err() {
            unreachable!("valid tuning of an existing cache");
        }
    }
    for round in 0..40 {
        for (i, cache) in caches.iter().enumerate() {
            match cache.alloc() {
                Ok(object) => held.cache_objects.push((i, object)),
                Err(error) => out_of_memory(&mut held, error),
            }
        }
        if round % 3 == 2 {
            // Free some now: flushes of full arrays.
            while let Some((i, object)) = held.cache_objects.pop() {
                // SAFETY: allocated from `caches[i]` above, freed once.
                unsafe { caches[i].free(object) }.unwrap();
                if held.cache_objects.len() % 4 == 0 {
                    break;
                }
            }
        }
    }
    // kmalloc of every class, normal and DMA, and two large blocks (one page-aligned
    // beyond a class, one aligned to 64 KiB).
    for class in 0..KMALLOC_CLASSES {
        for flags in [Gfp::KERNEL, Gfp::DMA] {
            match slab.kmalloc(KMALLOC_MIN << class, flags) {
                Ok(object) => held.kmalloc.push(object),
                Err(error) => out_of_memory(&mut held, error),
            }
        }
    }
    for (size, align) in [(200 << 10, 0), (8 << 10, 64 << 10)] {
        match slab.kmalloc_aligned(size, align, Gfp::KERNEL) {
            Ok(object) => held.kmalloc.push(object),
            Err(error) => out_of_memory(&mut held, error),
        }
    }
    // Ranges enough to refill the range cache.
    for _ in 0..80 {
        match heap.new_range(1, RangeFlags::MAP) {
            Ok(range) => held.ranges.push(range),
            Err(error) => {
                assert!(
                    matches!(
                        error,
                        RangeError::OutOfMemory | RangeError::OutOfVirtualSpace
                    ),
                    "{error:?}"
                );
                held.failures += 1;
            }
        }
    }
    slab.caches().reap();
    // Everything back.
    for (i, object) in held.cache_objects.drain(..) {
        // SAFETY: allocated from `caches[i]`, freed once.
        unsafe { caches[i].free(object) }.unwrap();
    }
    for object in held.kmalloc.drain(..) {
        // SAFETY: from kmalloc, freed once.
        unsafe { slab.kfree(object.as_ptr()) }.unwrap();
    }
    for range in held.ranges.drain(..) {
        heap.del_range(range).unwrap();
    }
    for cache in caches {
        assert!(
            cache.destroy().is_ok(),
            "a cache with nothing allocated goes"
        );
    }
    held.failures
}

/// Boots, runs the workload with `arm` applied first, checks that nothing leaked, and
/// returns whether the armed fault fired.
fn run_with(arm: impl Fn(&HostedHeap<'_>), pending: impl Fn(&HostedHeap<'_>) -> bool) -> bool {
    HostCpus::bind(0);
    let mut m = HostedMachine::new(HostedLayout::pc());
    let heap = m.boot().unwrap();
    let before = snapshot(&heap);
    let fired = {
        let slab: Allocator<'_, '_> = match Kmalloc::new(&heap, SlabOptions::default()) {
            Ok(slab) => slab,
            // The fault hit the start of the slab layer itself: nothing may be left.
            Err(error) => panic!("armed only after the start: {error:?}"),
        };
        arm(&heap);
        let failures = workload(&heap, &slab);
        let fired = !pending(&heap);
        assert!(
            fired || failures == 0,
            "{failures} failures with no fault fired"
        );
        heap.fail_frames_after(None);
        heap.platform().disarm_map_fault();
        // Memory is back: the same workload runs without a failure.
        assert_eq!(workload(&heap, &slab), 0, "after the fault");
        // Switching the per-CPU layer off frees every array, and reaping (twice: a cache
        // that grew since the last reap is skipped once) frees the empty slabs and their
        // off-slab descriptors: then only the cache descriptors in `kmem_cache` are left.
        slab.caches().set_per_cpu(false);
        slab.caches().reap();
        slab.caches().reap();
        slab.caches().check_invariants();
        let mut caches = 0;
        slab.caches().for_each_stats(|s| {
            caches += 1;
            if s.slab.name != "kmem_cache" {
                assert_eq!(s.slab.active_objs, 0, "{} keeps objects", s.slab.name);
            }
        });
        let descriptors = slab
            .caches()
            .stats_of("kmem_cache")
            .unwrap()
            .slab
            .active_objs;
        assert_eq!(descriptors, caches, "a cache descriptor leaked");
        fired
    };
    heap.shrink();
    heap.check_invariants();
    assert_eq!(snapshot(&heap), before, "the heap ends as it started");
    fired
}

/// Runs the sweep over N until the fault no longer fires; returns how many fired.
fn sweep(arm: impl Fn(&HostedHeap<'_>, usize), pending: impl Fn(&HostedHeap<'_>) -> bool) -> usize {
    // Fault n fires at the (n + 1)-th allocation; the first n that does not fire is past
    // the workload's last one.
    for n in 0.. {
        if !run_with(|heap| arm(heap, n), &pending) {
            return n;
        }
    }
    unreachable!("the workload makes finitely many allocations")
}

#[test]
fn every_frame_allocation_of_the_workload_may_fail() {
    let fired = sweep(
        |heap, n| heap.fail_frames_after(Some(n)),
        |heap| heap.frame_fault_pending(),
    );
    println!("frame faults injected: {fired}, each at a different allocation");
    assert!(fired > 10, "the workload allocated only {fired} times");
}

#[test]
fn every_page_mapping_of_the_workload_may_fail() {
    let fired = sweep(
        |heap, n| heap.platform().fail_map_after(n),
        |heap| heap.platform().map_fault_pending(),
    );
    println!("mapping faults injected: {fired}, each at a different mapping");
    assert!(fired > 10, "the workload mapped only {fired} pages");
}
