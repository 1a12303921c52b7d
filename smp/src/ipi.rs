//! Running a function on other CPUs: `on_each_cpu` and `on_cpu`, the
//! `smp_call_function` of Linux 2.4, which the allocator uses to drain every CPU's
//! object cache on that CPU. The protocol itself (mailboxes, pending bits, the waits) is
//! `protocol/`; this module is the kernel's side of it: the one [`CrossCpu`] board, and
//! the [`Seam`] made of the local APIC, `cli` and the per-CPU area.
//!
//! # The rules
//!
//! Two things a waiting CPU can do for others, with different safety:
//!
//! 1. **Answering a TLB shootdown is safe in any spin**: it reloads CR3 and records a
//!    generation; it takes no lock and runs no other code. So *every* spin-wait answers
//!    shootdowns: lock spins (`mm`'s `SpinLock` through the kernel's `Cli::relax`), the waits of a
//!    call (slot and completion) and the wait of a shootdown. A CPU that shoots down
//!    while holding a lock with interrupts off (`del_range` under the range lock) is
//!    then never stuck on a CPU that spins with interrupts off.
//! 2. **Serving incoming calls is safe only outside every per-CPU critical section.**
//!    A call runs arbitrary code (a drain of this CPU's per-CPU array); a CPU spinning
//!    on a cache lock in the middle of a refill or flush of that very array must not run
//!    it. So only waits outside every critical section serve calls: the waits of a call,
//!    whose caller must therefore be outside every critical section, and nothing else
//!    (a shootdown's wait and lock spins never serve).
//! 3. **Who may call.** [`on_each_cpu`] and [`on_cpu`] are called either with interrupts
//!    on, or from an interrupt handler that has opened no critical section (it
//!    interrupted code with interrupts on, so that code was outside every critical
//!    section too). Never from code that turned interrupts off itself, never with a
//!    spinlock held that disables interrupts. Debug builds assert it
//!    ([`percpu::may_serve_calls`] counts critical sections and interrupt nesting).
//! 4. **Locks held across a call** (`mm`'s chain and `tuning` locks) are taken only with
//!    interrupts on (their `lock()` asserts it): a CPU that spins on one with interrupts
//!    off could neither take the call IPI nor serve its mailbox, and the holder would wait
//!    for it forever (deadlock 3). Interrupt handlers never take them.
//! 5. **Posting is one step**: a slot is filled, marked pending and the IPI sent with
//!    interrupts off, so that no handler on the sender can run between the fill and the
//!    announcement.
//!
//! Why it cannot deadlock then: a CPU waiting in a call serves and answers, so it never
//! blocks a CPU that waits for it; a CPU waiting in a shootdown or on a lock answers, and
//! what it waits for (acknowledgements, a lock holder) never depends on a call it would
//! have to serve: lock holders that wait in calls hold only rule-4 locks, whose waiters
//! have interrupts on and take the call IPI.
//!
//! # The three deadlocks these rules remove (issue 11)
//!
//! 1. The completion wait served the mailbox but did not answer shootdowns: CPU X in a
//!    call with interrupts off waited for A, which held the range lock and waited in a
//!    shootdown for X. Now the completion wait answers (rule 1), and X may not have
//!    interrupts off outside a handler anyway (rule 3).
//! 2. A sender filled its slot on T, an interrupt came before the pending bit, and the
//!    handler's own call to T found the slot full and waited forever. Now rule 5.
//! 3. A holder of the chain lock waited in `on_each_cpu` for a CPU spinning on that
//!    lock with interrupts off. Now rule 4.
//!
//! A stall reporter watches every wait of the protocol: a CPU that has waited longer
//! than [`stall_timeout_us`] prints, for every CPU, what it waits for and for whom (the
//! wait graph), then calls the kernel's stall hook, which fails the run.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::percpu::{self, current_cpu};
use crate::protocol::{CpuSet, CrossCpu, Ipi, Seam, Wait, WaitKind};
use crate::{MAX_CPUS, timer, vectors};

/// The protocol's state for the whole machine.
pub(crate) static BOARD: CrossCpu<MAX_CPUS> = CrossCpu::new();

/// How long any cross-CPU wait may last before it is reported as a stall, on a machine
/// of up to [`CPUS_PER_STALL_TIMEOUT`] CPUs. Generous: under TCG, 16 virtual CPUs on 2
/// host cores take turns of many milliseconds.
pub const STALL_TIMEOUT_US: u64 = 4_000_000;

/// Beyond this many CPUs the stall time-out grows with them ([`stall_timeout_us`]): a
/// call to every other CPU completes only once each has been scheduled and has taken
/// the interrupt, and with 255 virtual CPUs on 2 host cores (TCG) one round of turns
/// took more than 4 s.
pub const CPUS_PER_STALL_TIMEOUT: usize = 16;

/// The stall time-out of this machine: [`STALL_TIMEOUT_US`] per started group of
/// [`CPUS_PER_STALL_TIMEOUT`] CPUs (4 s up to 16 CPUs, 64 s at 255).
pub fn stall_timeout_us() -> u64 {
    STALL_TIMEOUT_US * percpu::cpu_count().div_ceil(CPUS_PER_STALL_TIMEOUT).max(1) as u64
}

/// `WAIT_DEADLINE[cpu]`: when the current wait of `cpu` becomes a stall (TSC).
static WAIT_DEADLINE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Microseconds spent between filling a mailbox slot and announcing it (0: none). The
/// provoking stress sets it to make the window of deadlock 2 wide: with rule 5 no
/// interrupt can fall into it, however wide.
pub static POST_WINDOW_US: AtomicU64 = AtomicU64::new(0);

/// What the kernel does after a stall report: print nothing more and fail the run.
static STALL_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Sets the function called (on the stalled CPU) after the wait graph is printed.
pub fn set_stall_hook(hook: fn(&WaitGraph) -> !) {
    STALL_HOOK.store(hook as usize, Ordering::Release);
}

/// The kernel's seam: this CPU, its local APIC, `cli`, CR3.
#[derive(Clone, Copy)]
pub(crate) struct Hardware;

// SAFETY: (1) `current_cpu` is the dense index from GS, below `MAX_CPUS`, one per CPU;
// (2) `without_interrupts` is `cli` ... restore; (3) the IPI goes to the target's APIC ID
// with the vector whose handler (`kernel/src/smp_boot.rs`) serves the mailbox or
// answers, and the APIC write is ordered after earlier stores (x86 TSO; the xAPIC ICR
// is an uncached MMIO write, the x2APIC one a serialising-enough `wrmsr` that the
// `x2apic` crate issues after an `mfence`).
unsafe impl Seam for Hardware {
    #[inline]
    fn current_cpu(&self) -> usize {
        current_cpu()
    }

    fn send_ipi(&self, cpu: usize, ipi: Ipi) {
        let apic_id = percpu::cpu(cpu).apic_id();
        let vector = match ipi {
            Ipi::Call => vectors::CALL_FUNCTION,
            Ipi::Shootdown => vectors::TLB_SHOOTDOWN,
        };
        percpu::with_local_apic(|lapic| lapic.send_ipi(apic_id, vector));
    }

    fn flush_tlb(&self) {
        let (frame, flags) = x86_64::registers::control::Cr3::read();
        // SAFETY: writing back the live PML4 and flags changes no mapping; it only
        // drops this CPU's non-global TLB entries (heap pages are never global).
        unsafe { x86_64::registers::control::Cr3::write(frame, flags) };
    }

    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        x86_64::instructions::interrupts::without_interrupts(f)
    }

    fn run_call(&self, function: &(dyn Fn() + Sync)) {
        x86_64::instructions::interrupts::without_interrupts(|| {
            percpu::enter_interrupt();
            function();
            percpu::leave_interrupt();
        });
    }

    /// Alone (before the APs start, or on one CPU) no call can come in and nobody waits
    /// for this CPU: the boot code may drain with interrupts still off.
    fn may_serve_calls(&self) -> bool {
        percpu::cpu_count() <= 1 || percpu::may_serve_calls()
    }

    fn between_fill_and_announce(&self) {
        let micros = POST_WINDOW_US.load(Ordering::Relaxed);
        if micros > 0 {
            timer::delay_us(micros);
        }
    }

    fn pause(&self, _wait: Wait, turns: u64) {
        core::hint::spin_loop();
        let me = current_cpu();
        if turns == 0 {
            WAIT_DEADLINE[me].store(
                timer::deadline_after_us(stall_timeout_us()),
                Ordering::Relaxed,
            );
        } else if turns.is_multiple_of(1024)
            && timer::expired(WAIT_DEADLINE[me].load(Ordering::Relaxed))
        {
            report_stall(me);
        }
    }
}

/// Prints the wait graph and calls the stall hook (or panics without one).
fn report_stall(me: usize) -> ! {
    let graph = WaitGraph { reporter: me };
    match STALL_HOOK.load(Ordering::Acquire) {
        0 => panic!("{graph}"),
        hook => {
            // SAFETY: only `set_stall_hook` stores non-zero values, and it stores a
            // `fn(&WaitGraph) -> !`.
            let hook: fn(&WaitGraph) -> ! = unsafe { core::mem::transmute(hook) };
            hook(&graph)
        }
    }
}

/// Who waits for whom, as every CPU published it: the stall report.
pub struct WaitGraph {
    /// The CPU whose wait timed out.
    pub reporter: usize,
}

impl fmt::Display for WaitGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "STALL: cpu {} waited more than {} ms; the wait graph:",
            self.reporter,
            stall_timeout_us() / 1000
        )?;
        for cpu in 0..percpu::cpu_count() {
            let area = percpu::cpu(cpu);
            if !area.online.load(Ordering::Relaxed) {
                continue;
            }
            let wait = BOARD.waiting(cpu);
            let (seen, generation) = BOARD.generations(cpu);
            write!(f, "  cpu {cpu}: ")?;
            if wait.kind == WaitKind::None {
                write!(
                    f,
                    "not in a cross-CPU wait (running, or spinning on a lock)"
                )?;
            } else {
                write!(f, "waits for {} from cpus", wait.kind.name())?;
                for cpu in wait.cpus.iter() {
                    write!(f, " {cpu}")?;
                }
            }
            writeln!(
                f,
                "; TLB generation {seen} of {generation}; {} in critical sections, {} in \
                 interrupt handlers",
                area.critical_depth(),
                area.interrupt_depth()
            )?;
        }
        write!(f, "STALL: end of the wait graph")
    }
}

/// The online CPUs, as one set read once (so that the CPUs a call counts are exactly
/// the CPUs it sends to).
pub(crate) fn online_cpus() -> CpuSet {
    (0..percpu::cpu_count())
        .filter(|&cpu| percpu::cpu(cpu).online.load(Ordering::Acquire))
        .collect()
}

/// Runs `function` on every online CPU, the caller included, and returns when all
/// have run it. Rule 3: interrupts on, or an interrupt handler with no critical
/// section open.
pub fn on_each_cpu(function: &(dyn Fn() + Sync)) {
    BOARD.call(&Hardware, online_cpus(), function, true);
}

/// Runs `function` on the online CPU `target` (in its interrupt context, or directly
/// when it is the caller) and returns when it has run. Rule 3, as [`on_each_cpu`].
pub fn on_cpu(target: usize, function: &(dyn Fn() + Sync)) {
    assert!(
        target < percpu::cpu_count() && percpu::cpu(target).online.load(Ordering::Acquire),
        "on_cpu: CPU {target} is not online (it would never run the call)"
    );
    if target == current_cpu() {
        debug_assert!(percpu::may_serve_calls(), "on_cpu: see rule 3 in ipi.rs");
        Hardware.run_call(function);
    } else {
        BOARD.call(&Hardware, CpuSet::single(target), function, false);
    }
}

/// Sends every other online CPU the CALL_FUNCTION IPI with nothing in its mailbox:
/// wakes them from `hlt` without waiting for them.
pub fn kick_others() {
    for cpu in online_cpus().without(current_cpu()).iter() {
        Hardware.send_ipi(cpu, Ipi::Call);
    }
}

/// Runs every request in the calling CPU's mailbox: the CALL_FUNCTION handler.
pub fn serve_mailbox() {
    BOARD.serve_mailbox(&Hardware);
}

/// Calls CPU `cpu` has served, for the boot log.
pub fn calls_served(cpu: usize) -> u64 {
    BOARD.counters(cpu).0
}
