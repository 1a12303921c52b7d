//! The scaling benchmark's workloads and latency histogram, written once for its two
//! halves: the kernel's `bench=scaling` (`kernel/src/bench_scaling.rs`) and the hosted
//! `scaling` binary (`bench/src/scaling/`).
//!
//! This crate owns what the two halves must do alike, so that their figures compare:
//!
//! - the workloads ([`Workload`]), on every CPU (or thread) at once from a common start
//!   (a barrier; the last CPU to arrive sets the deadline):
//!   - `pairs`: alloc and free of 64 B, again;
//!   - `rounds`: 1024 allocations of 64 B, then the 1024 frees in reverse;
//!   - `prodcons`: CPU i allocates 64 B objects and hands them to CPU i+1 (mod n)
//!     through a single-producer single-consumer ring; each CPU frees what its ring
//!     brings (cross-CPU frees; with one CPU it hands them to itself);
//!   - `random`: a table of 256 slots per CPU; each step picks a slot, frees its object
//!     or allocates one of 16 B..4 KiB (a power-of-two class picked uniformly, then a
//!     size uniformly within it), so lifetimes are random;
//! - one cell's shared state and each CPU's loop ([`Cell`]), what a CPU measured
//!   ([`CpuResult`]) and their sum ([`Figures`]), and the figures of the line a cell
//!   prints ([`Line`]): an operation is one allocation or one free;
//! - the latency histogram ([`Histogram`]): p99 and max.
//!
//! The caller supplies the rest: the allocator under test ([`Allocator`]), the clock
//! ([`Clock`]: the TSC in both halves) and the CPUs. It calls [`Cell::run`] on every
//! CPU at once (the kernel through its cross-CPU jobs with interrupts on; the host on
//! pinned threads) and hands what they return to [`Cell::finish`]. What only one half
//! has stays there: the kernel's interrupts-off figure, per-CPU statics and boot-time
//! orchestration; the host's threads, peers, report and plots.
//!
//! `no_std` with `alloc`: a cell's rings, slot tables and histograms come from the
//! global allocator, before the common start, never from the allocator under test.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod cell;
mod histogram;
mod ring;

use core::alloc::Layout;
use core::ptr::NonNull;

pub use cell::{Cell, CpuResult, Figures, Line};
pub use histogram::Histogram;

/// Object size of `pairs`, `rounds` and `prodcons`.
pub const SMALL: usize = 64;
/// Objects per round of `rounds`.
pub const ROUND: usize = 1024;
/// Live-object slots per CPU in `random`.
pub const RANDOM_SLOTS: usize = 256;
/// Operations between two looks at the clock.
pub const BATCH: usize = 64;

/// One allocator as the workloads drive it.
pub trait Allocator: Sync {
    /// An object of `size` bytes (8-aligned); an allocator that cannot give one panics
    /// or aborts (the benchmark never runs it out of memory).
    fn alloc(&self, size: usize) -> NonNull<u8>;

    /// # Safety
    ///
    /// `object` came from this allocator's `alloc` with this `size`, and is not used
    /// again.
    unsafe fn free(&self, object: NonNull<u8>, size: usize);
}

/// The caller's clock, and how a CPU waits for the others at the common start.
pub trait Clock {
    /// Now, in the units of a cell's duration and of the figures (TSC cycles in both
    /// halves).
    fn now() -> u64;

    /// One turn of the wait for the common start.
    fn relax() {
        core::hint::spin_loop();
    }
}

/// The layout the benchmark allocates `size` bytes with (8-aligned), for allocators
/// that take a [`Layout`]. Inline: the kernel's talc peer computes it under its lock.
#[inline]
pub fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("bench sizes make valid layouts")
}

/// The workloads (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Pairs,
    Rounds,
    ProdCons,
    Random,
}

/// The workloads, in the order of the output.
pub const WORKLOADS: [Workload; 4] = [
    Workload::Pairs,
    Workload::Rounds,
    Workload::ProdCons,
    Workload::Random,
];

impl Workload {
    /// The name in a cell's line (`workload=NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pairs => "pairs",
            Self::Rounds => "rounds",
            Self::ProdCons => "prodcons",
            Self::Random => "random",
        }
    }
}
