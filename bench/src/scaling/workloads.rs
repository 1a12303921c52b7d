//! The scaling workloads on host threads: the `scaling-workloads` crate's (`workloads/`,
//! the same code as the kernel's `bench=scaling` runs), driven through `GlobalAlloc`,
//! every thread at once.
//!
//! This file owns what is hosted: the clock (the TSC, and its rate measured against
//! the monotonic clock), the adapter from `GlobalAlloc` to the workloads' [`Allocator`],
//! and the threads. Thread `t` is pinned to host core `t mod cores` (`core_affinity`)
//! and stands for mm's CPU slot `t` (`HostCpus::bind` through [`crate::ours::bind`];
//! harmless for the other allocators). The figures and the line printed per cell are
//! the kernel's (TSC cycles, an operation being one alloc or one free), with
//! `side=hosted`; there is no interrupts-off figure on the host.

use std::alloc::GlobalAlloc;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use scaling_workloads::{Allocator, Cell, Clock, Figures, Workload, layout};

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and exists on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second, measured against the monotonic clock over 50 ms.
pub fn tsc_hz() -> u64 {
    let (start, tsc) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(50));
    let ticks = rdtsc() - tsc;
    (ticks as f64 / start.elapsed().as_secs_f64()) as u64
}

/// The workloads' clock: the TSC; a thread waiting for the common start yields, so
/// that oversubscribed runs reach it.
struct Tsc;

impl Clock for Tsc {
    #[inline(always)]
    fn now() -> u64 {
        rdtsc()
    }

    fn relax() {
        std::hint::spin_loop();
        std::thread::yield_now();
    }
}

/// A `GlobalAlloc` as the workloads drive it (8-aligned layouts; out of memory is
/// `handle_alloc_error`).
struct Global<'a, A: ?Sized>(&'a A);

impl<A: GlobalAlloc + Sync + ?Sized> Allocator for Global<'_, A> {
    #[inline(always)]
    fn alloc(&self, size: usize) -> NonNull<u8> {
        // SAFETY: the layout's size is not zero.
        let object = unsafe { self.0.alloc(layout(size)) };
        NonNull::new(object).unwrap_or_else(|| std::alloc::handle_alloc_error(layout(size)))
    }

    #[inline(always)]
    unsafe fn free(&self, object: NonNull<u8>, size: usize) {
        // SAFETY: from `alloc` with this size, not used again (the caller's contract).
        unsafe { self.0.dealloc(object.as_ptr(), layout(size)) };
    }
}

/// Runs `workload` on `threads` threads over `allocator` for `duration` TSC cycles.
pub fn measure<A: GlobalAlloc + Sync + ?Sized>(
    allocator: &A,
    workload: Workload,
    threads: usize,
    duration: u64,
    timed_ops: bool,
) -> Figures {
    let allocator = Global(allocator);
    let cell = Cell::<_, Tsc>::new(&allocator, workload, threads, duration, timed_ops);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (cell, cores, results) = (&cell, &cores, &results);
            scope.spawn(move || {
                if !cores.is_empty() {
                    core_affinity::set_for_current(cores[thread % cores.len()]);
                }
                crate::ours::bind(thread);
                let result = cell.run(thread);
                results.lock().expect("results lock").push(result);
            });
        }
    });
    cell.finish(results.into_inner().expect("results lock"))
}
