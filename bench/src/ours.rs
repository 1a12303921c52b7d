//! The project's allocator as the benchmark drives it: mm's hosted machine, its slab
//! layer and kmalloc, through mm's `GlobalAlloc` implementation.
//!
//! This is the only file of the crate that names `mm`'s types: when they are renamed,
//! this is the one place to follow them. Everything else sees an
//! `impl GlobalAlloc + Sync`.
//!
//! The machine is leaked on purpose: the allocator lives as long as the process (as the
//! kernel's does), which gives the `'static` borrows the layers need without a
//! self-referential struct.

use mm::hosted::{HostedLayout, HostedMachine};
use mm::hosted_cpus::HostCpus;
use mm::kmalloc::Kmalloc;
use mm::slab::SlabOptions;
use std::alloc::GlobalAlloc;

/// 64 MiB of fake RAM and as big a window: far more than either workload holds.
const FRAMES: u64 = 16 * 1024;

/// Makes the calling thread stand for mm's host CPU `cpu` (for the other allocators it
/// changes nothing).
pub fn bind(cpu: usize) {
    HostCpus::bind(cpu);
}

/// mm's slab allocator over a fresh hosted heap, debug checks off, with its per-CPU
/// caches on or off. The calling thread stands for host CPU 0.
pub fn allocator(per_cpu: bool) -> &'static (impl GlobalAlloc + Sync) {
    bind(0);
    let machine = Box::leak(Box::new(HostedMachine::new(HostedLayout::flat(
        FRAMES,
        FRAMES as usize,
    ))));
    let heap = Box::leak(Box::new(machine.boot().expect("hosted heap boots")));
    let options = SlabOptions {
        debug: false,
        reporter: None,
        no_per_cpu: !per_cpu,
    };
    let slab: Kmalloc<_, HostCpus> = Kmalloc::new(&*heap, options).expect("slab layer starts");
    Box::leak(Box::new(slab))
}
