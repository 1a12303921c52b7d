//! Tests of the whole heap: helpers shared by the unit tests of each module, the
//! model-based property tests (`model.rs`), a long random workload (`workload.rs`), and
//! the fault-injection sweeps (`faults.rs`).

mod faults;
mod model;
pub(crate) mod workload;

use crate::hosted::HostedPlatform;
use crate::{Heap, HeapStats, PAGE_SIZE, RangeKind, Zone};
use std::vec::Vec;

/// A heap booted on a hosted machine.
pub(crate) type HostedHeap<'a> = Heap<'a, &'a HostedPlatform>;

/// The segments of the window as (offset in pages from the window start, pages, kind).
pub(crate) fn segments(heap: &HostedHeap<'_>) -> Vec<(usize, usize, Option<RangeKind>)> {
    let start = heap.platform().window_start();
    let mut v = Vec::new();
    heap.for_each_segment(|s, p, k| v.push(((s - start) / PAGE_SIZE, p, k)));
    v
}

/// Everything observable about a heap's state, to compare before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub stats: HeapStats,
    pub segments: Vec<(usize, usize, Option<RangeKind>)>,
    pub free_blocks: Vec<(u64, usize, Zone)>,
    pub mapped_pages: usize,
}

pub(crate) fn snapshot(heap: &HostedHeap<'_>) -> Snapshot {
    let mut free_blocks = Vec::new();
    heap.for_each_free_block(|a, o, z| free_blocks.push((a.0, o, z)));
    free_blocks.sort_unstable();
    Snapshot {
        stats: heap.stats(),
        segments: segments(heap),
        free_blocks,
        mapped_pages: heap.platform().mapped_pages(),
    }
}

/// The largest free segment, in pages.
pub(crate) fn largest_free(heap: &HostedHeap<'_>) -> usize {
    let mut largest = 0;
    heap.for_each_segment(|_, p, k| {
        if k.is_none() {
            largest = largest.max(p);
        }
    });
    largest
}
