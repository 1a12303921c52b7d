//! A long random workload: no fragmentation blow-up.
//!
//! Ranges of 1..=64 pages (1..=8 under Miri) are allocated and deleted at random around a steady state of
//! `live` live ranges, in a window four times larger than the expected live pages. With
//! eager coalescing and a fit that never refuses a request some free segment can hold,
//! the window must never run out, free segments must never outnumber used ones by more
//! than one, and the end state must be the start state.

use super::{largest_free, snapshot};
use crate::RangeFlags;
use crate::hosted::{HostedLayout, HostedMachine};
use std::vec::Vec;

/// xorshift64*: deterministic, good enough to pick sizes and victims.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn workload(flags: RangeFlags, seed: u64) {
    // Under Miri: fewer, smaller ranges (every mapped page costs a few BTreeMap
    // operations of the hosted double, which Miri interprets slowly).
    let (live, ops, max_pages) = if cfg!(miri) {
        (8, 300, 8)
    } else {
        (256, 100_000, 64)
    };
    let window_pages = 4 * live * (max_pages + 1) / 2;
    // Enough frames for the MAP case, with room to spare.
    let mut machine = HostedMachine::new(HostedLayout::flat(2 * window_pages as u64, window_pages));
    let heap = machine.boot().unwrap();
    let initial = snapshot(&heap);
    let mut rng = Rng::new(seed);
    let mut ranges: Vec<usize> = Vec::new();
    for i in 0..ops {
        // Allocate with probability 1/2 at the steady state, more below it, less above.
        let allocate = ranges.is_empty() || rng.below(2 * live) >= ranges.len();
        if allocate {
            let pages = 1 + rng.below(max_pages);
            match heap.new_range(pages, flags) {
                Ok(r) => ranges.push(r),
                Err(e) => panic!(
                    "op {i}: new_range({pages}) failed with {e:?}; largest free {}",
                    largest_free(&heap)
                ),
            }
        } else {
            let victim = ranges.swap_remove(rng.below(ranges.len()));
            heap.del_range(victim).unwrap();
        }
        let st = heap.stats().ranges;
        let used = st.segments - st.free_segments;
        assert!(
            st.free_segments <= used + 1,
            "op {i}: {} free segments for {used} used",
            st.free_segments
        );
        if i % (ops / 10) == 0 {
            heap.check_invariants();
        }
    }
    heap.check_invariants();
    for r in ranges {
        heap.del_range(r).unwrap();
    }
    heap.shrink();
    assert_eq!(snapshot(&heap), initial);
    assert_eq!(
        heap.platform().mapped_pages(),
        1,
        "only the bootstrap page stays mapped"
    );
}

#[test]
fn a_long_random_workload_does_not_fragment_the_window() {
    workload(RangeFlags::NONE, 0x1234_5678);
}

#[test]
fn a_long_random_workload_of_mapped_ranges_returns_every_frame() {
    workload(RangeFlags::MAP, 0x9abc_def0);
}
