//! TLB shootdown: making every CPU forget translations that one CPU removed.
//!
//! `invlpg` and CR3 reloads flush only the TLB of the CPU that runs them. When the
//! allocator unmaps pages of its heap window, other CPUs may still hold translations
//! for them; before those addresses are handed out (and mapped to other frames) again,
//! and before the frames go back to the page allocator, every CPU must drop them, or a
//! CPU could reach the old frames through a stale entry.
//!
//! The protocol (generations, acknowledgements) is `protocol/shootdown.rs`, shared
//! with the loom models; this is the kernel's entry to it. A full flush instead of
//! per-page `invlpg`: heap pages are unmapped in batches (a slab or a range at a time),
//! shootdowns are rare next to allocations, and a counter is all the state the protocol
//! then needs. Why every spin answers: rule 1 in `ipi.rs`.

use crate::ipi::{BOARD, Hardware, online_cpus};
use crate::percpu;

/// Makes every online CPU flush the translations the caller removed from the shared
/// page tables (and already flushed from its own TLB), and waits until all have.
///
/// Callable with interrupts off and locks held: it waits only for CPUs that either
/// take the IPI or answer in their own waits.
pub fn shootdown() {
    if percpu::cpu_count() <= 1 {
        return; // Before the APs start, or a machine with one CPU.
    }
    BOARD.shootdown(&Hardware, online_cpus());
}

/// Flushes this CPU's TLB if a shootdown is pending for it (the TLB_SHOOTDOWN handler,
/// and every spin-wait). Cheap when none is: one shared load and one local load.
#[inline]
pub fn answer() {
    if percpu::cpu_count() == 0 {
        return; // GS may not point at a per-CPU area yet; nothing can be pending.
    }
    BOARD.answer_shootdown(&Hardware);
}

/// Shootdowns CPU `cpu` started and flushes it made on request, for the boot log.
pub fn counters(cpu: usize) -> (u64, u64) {
    let (_, flushes, shootdowns) = BOARD.counters(cpu);
    (shootdowns, flushes)
}
