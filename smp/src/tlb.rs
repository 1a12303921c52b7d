//! TLB shootdown: making every CPU forget translations that one CPU removed.
//!
//! `invlpg` and CR3 reloads flush only the TLB of the CPU that runs them. When the
//! allocator unmaps pages of its heap window, other CPUs may still hold
//! translations for them; before those addresses are handed out (and mapped to other
//! frames) again, every CPU must drop them, or a CPU could reach the old frames
//! through the new range.
//!
//! Protocol. A global generation counts shootdowns; each CPU records the last
//! generation it has flushed for. [`shootdown`] bumps the generation, sends the
//! TLB_SHOOTDOWN IPI to every other online CPU and waits until each has recorded a
//! generation at least as new. [`answer`] (the IPI handler, and every spin-wait
//! with interrupts off) flushes the whole non-global TLB by reloading CR3 when the
//! CPU is behind, then records the generation it saw.
//!
//! Why answering inside spin-waits: the CPU that shoots down may hold a lock (the
//! allocator calls it with its range lock held) that another CPU waits for with
//! interrupts off; that CPU cannot take the IPI, so its wait loop answers instead.
//! Answering takes no lock and runs no other code, so it is safe anywhere.
//!
//! A full flush instead of per-page `invlpg`: heap pages are unmapped in batches
//! (a slab or a range at a time), shootdowns are rare next to allocations, and a
//! counter is all the state the protocol then needs.

use core::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use x86_64::registers::control::Cr3;

use crate::percpu::{self, current_cpu};
use crate::{MAX_CPUS, vectors};

/// Shootdowns started so far.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// `SEEN[cpu]`: the newest generation CPU `cpu` has flushed its TLB for.
static SEEN: [CachePadded<AtomicU64>; MAX_CPUS] =
    [const { CachePadded::new(AtomicU64::new(0)) }; MAX_CPUS];

/// Shootdowns this CPU started, and flushes it made on request, for the boot log.
pub static SHOOTDOWNS_SENT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub static FLUSHES_ANSWERED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Makes every online CPU flush the translations the caller removed from the shared
/// page tables (and already flushed from its own TLB), and waits until all have.
///
/// Callable with interrupts off and locks held: it waits only for CPUs that either
/// take the IPI or call [`answer`] in their own waits.
pub fn shootdown() {
    let count = percpu::cpu_count();
    if count <= 1 {
        return; // Before the APs start, or a machine with one CPU.
    }
    let me = current_cpu();
    // Catch up first: the caller flushed only its own pages, not those of a
    // shootdown another CPU started meanwhile.
    answer();
    // SeqCst orders the page-table writes before the bump for every CPU that sees it.
    let previous = GENERATION.fetch_add(1, Ordering::SeqCst);
    let generation = previous + 1;
    if SEEN[me].load(Ordering::Relaxed) == previous {
        // No one bumped between our catch-up and our bump: this CPU is current.
        SEEN[me].store(generation, Ordering::Relaxed);
    }
    SHOOTDOWNS_SENT[me].fetch_add(1, Ordering::Relaxed);
    let mut targets = 0u64;
    for cpu in (0..count).filter(|&cpu| cpu != me) {
        let area = percpu::cpu(cpu);
        if area.online.load(Ordering::Acquire) {
            targets |= 1 << cpu;
            let apic_id = area.apic_id();
            percpu::with_local_apic(|lapic| lapic.send_ipi(apic_id, vectors::TLB_SHOOTDOWN));
        }
    }
    // The caller's own entry (if it was behind after all) is caught up below too.
    targets |= 1 << me;
    while targets != 0 {
        let cpu = targets.trailing_zeros() as usize;
        if SEEN[cpu].load(Ordering::Acquire) >= generation {
            targets &= targets - 1;
        } else {
            // Another CPU may be shooting down at the same time and waiting for us.
            answer();
            core::hint::spin_loop();
        }
    }
}

/// Flushes this CPU's TLB if a shootdown is pending for it. Cheap when none is: one
/// shared load and one local load.
#[inline]
pub fn answer() {
    if percpu::cpu_count() == 0 {
        return; // GS may not point at a per-CPU area yet; nothing can be pending.
    }
    let me = current_cpu();
    let generation = GENERATION.load(Ordering::Acquire);
    if SEEN[me].load(Ordering::Relaxed) < generation {
        let (frame, flags) = Cr3::read();
        // SAFETY: writing back the live PML4 and flags changes no mapping; it only
        // drops this CPU's non-global TLB entries (heap pages are never global).
        unsafe { Cr3::write(frame, flags) };
        FLUSHES_ANSWERED[me].fetch_add(1, Ordering::Relaxed);
        SEEN[me].store(generation, Ordering::Release);
    }
}
