//! The two workloads, each a loop of 64-byte `GlobalAlloc::alloc`/`dealloc` calls, and
//! the one function whose instructions callgrind counts.
//!
//! - `pairs`: allocate one object, free it, again: every operation should hit the
//!   allocator's fastest path (a per-CPU array, a thread cache, a free list head).
//! - `rounds`: allocate 1024 objects, then free them in reverse order, again: more live
//!   objects than a per-CPU array holds (120 for 64 B), so a slab allocator refills and
//!   flushes; the figure is per alloc+free pair.
//!
//! [`measured`] is `#[inline(never)]`: `scripts/bench hitpath` runs the binary under
//! `valgrind --tool=callgrind --toggle-collect=*::measured`, so only what runs inside it
//! (the loop and everything it calls) is counted: not the set-up, not the warm-up, not the
//! allocator's start. The script runs it for `N` and for `2N` iterations and takes the
//! difference, which cancels what is counted once per call (the prologue, the first
//! iteration's leftovers) and leaves exactly `N` iterations of steady state.
//!
//! Why a toggle on a function rather than client requests (`CALLGRIND_START_
//! INSTRUMENTATION` through the `crabgrind` crate): the binary then needs nothing of
//! valgrind's to build (crabgrind compiles against valgrind's headers, which every
//! `cargo build --workspace` would then need), and the counted region is a function
//! boundary the compiler cannot move code across.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

/// Objects per round of the `rounds` workload.
pub const ROUND: usize = 1024;

/// The object every workload allocates: 64 bytes, word-aligned.
pub const OBJECT: Layout = match Layout::from_size_align(64, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("64 B, 8-aligned is a valid layout"),
};

/// Which loop to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Pairs,
    Rounds,
}

impl Workload {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pairs" => Some(Self::Pairs),
            "rounds" => Some(Self::Rounds),
            _ => None,
        }
    }
}

/// `iters` alloc+free pairs of `workload` (for `rounds`, rounded down to whole rounds).
/// `slots` holds a round's pointers; it is allocated before, by the caller, so that the
/// loop allocates nothing but what it measures.
fn run<A: GlobalAlloc>(alloc: &A, workload: Workload, iters: u64, slots: &mut [*mut u8]) {
    match workload {
        Workload::Pairs => {
            for _ in 0..iters {
                // SAFETY: `OBJECT` has a non-zero size.
                let object = unsafe { alloc.alloc(OBJECT) };
                assert!(!object.is_null(), "out of memory");
                // SAFETY: allocated just above with this layout, freed once, unused after.
                unsafe { alloc.dealloc(black_box(object), OBJECT) };
            }
        }
        Workload::Rounds => {
            for _ in 0..iters / slots.len() as u64 {
                for slot in slots.iter_mut() {
                    // SAFETY: `OBJECT` has a non-zero size.
                    let object = unsafe { alloc.alloc(OBJECT) };
                    assert!(!object.is_null(), "out of memory");
                    *slot = object;
                }
                black_box(&mut *slots);
                for &object in slots.iter().rev() {
                    // SAFETY: allocated in this round with this layout, freed once.
                    unsafe { alloc.dealloc(object, OBJECT) };
                }
            }
        }
    }
}

/// The counted region: see the module docs. Not inlined, so that callgrind sees it.
#[inline(never)]
pub fn measured<A: GlobalAlloc>(alloc: &A, workload: Workload, iters: u64, slots: &mut [*mut u8]) {
    run(alloc, workload, iters, slots);
}

/// Warms `alloc` up (slabs grown, arrays and thread caches filled, free lists in their
/// steady state), then runs the counted loop.
pub fn bench<A: GlobalAlloc>(alloc: &A, workload: Workload, iters: u64, warm_up: u64) {
    let mut slots = vec![std::ptr::null_mut(); ROUND];
    run(alloc, workload, warm_up, &mut slots);
    measured(alloc, workload, iters, &mut slots);
}
