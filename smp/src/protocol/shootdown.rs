//! TLB shootdowns: a generation counter, each CPU's newest flushed generation, and the
//! wait for acknowledgements.
//!
//! [`CrossCpu::shootdown`] bumps the generation, sends the shootdown IPI to every
//! target and waits until each has flushed for a generation at least as new.
//! [`CrossCpu::answer_shootdown`] (the IPI handler, and every spin-wait) flushes the
//! whole non-global TLB when the CPU is behind, then raises its generation with
//! `fetch_max`: an answer interrupted by another answer (the IPI landing between the
//! load of the generation and the update) must not move it backwards.

use core::sync::atomic::Ordering;

use super::{CpuSet, CrossCpu, Ipi, Seam, Wait, WaitKind};

impl<const N: usize> CrossCpu<N> {
    /// Makes every CPU of `targets` flush the translations the caller removed from the
    /// shared page tables (and already flushed from its own TLB), and waits until all
    /// have. Callable anywhere, interrupts off and locks held included: its wait only
    /// answers other shootdowns (rule 1 in `ipi.rs`), and every CPU answers in every
    /// wait or takes the IPI.
    pub fn shootdown<S: Seam>(&self, seam: &S, targets: CpuSet) {
        let me = seam.current_cpu();
        let targets = targets.without(me);
        // Catch up first: the caller flushed only its own pages, not those of a
        // shootdown another CPU started meanwhile.
        self.answer_shootdown(seam);
        // SeqCst orders the page-table writes before the bump for every CPU that sees it.
        let previous = self.generation.fetch_add(1, Ordering::SeqCst);
        let generation = previous + 1;
        // No one bumped between our catch-up and our bump: this CPU is current. (If
        // someone did, the wait below includes us and answers for us.)
        let _ = self.seen[me].compare_exchange(
            previous,
            generation,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        Self::count(&self.shootdowns[me]);
        seam.changed();
        for cpu in targets.iter() {
            seam.send_ipi(cpu, Ipi::Shootdown);
        }
        let mut waiting = targets;
        waiting.insert(me);
        let wait = Wait {
            kind: WaitKind::Shootdown,
            cpus: targets,
        };
        self.begin_wait(me, wait);
        let mut turns = 0;
        loop {
            for cpu in waiting.iter() {
                if self.seen[cpu].load(Ordering::Acquire) >= generation {
                    waiting.remove(cpu);
                }
            }
            if waiting.is_empty() {
                break;
            }
            // Another CPU may be shooting down at the same time and waiting for us.
            // Never serve calls here: the caller may hold locks with interrupts off.
            if !self.answer_shootdown(seam) {
                seam.pause(wait, turns);
                turns += 1;
            }
        }
        self.end_wait(me);
    }

    /// Flushes this CPU's TLB if a shootdown is pending for it; returns whether it
    /// did. Safe in any context and any wait: it takes no lock and runs no other code.
    /// Cheap when nothing is pending: one shared load and one local load.
    #[inline]
    pub fn answer_shootdown<S: Seam>(&self, seam: &S) -> bool {
        let me = seam.current_cpu();
        let generation = self.generation.load(Ordering::Acquire);
        if self.seen[me].load(Ordering::Relaxed) >= generation {
            return false;
        }
        seam.flush_tlb();
        self.seen[me].fetch_max(generation, Ordering::AcqRel);
        Self::count(&self.flushes[me]);
        seam.changed();
        true
    }
}
