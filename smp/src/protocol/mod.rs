//! The cross-CPU call and TLB shootdown protocol, without the hardware: mailboxes,
//! pending bits, shootdown generations and acknowledgements, over a small [`Seam`].
//!
//! This module owns the protocol's shared state ([`CrossCpu`]) and every rule about
//! how it is read and written; `ipi.rs` and `tlb.rs` are the kernel's glue (one static
//! `CrossCpu`, a seam made of the local APIC, `cli`, CR3 and the TSC). The same code
//! builds hosted and under `--cfg loom` (with loom's atomics), where `loom-tests/`
//! drives it with a seam whose "IPI" sets a flag that the target polls while its model
//! interrupts are on, and whose waits block, so that a protocol in which every CPU waits
//! for another is reported by loom as a deadlock rather than spinning forever.
//!
//! What the seam hides ([`Seam`]): which CPU runs, sending an IPI, flushing the local
//! TLB, the local interrupt flag, whether a per-CPU critical section is open, and what a
//! fruitless turn of a wait loop does. Everything else (what is published when, which
//! waits serve what) is here, once.
//!
//! The rules themselves (which waits may answer shootdowns, which may serve calls, and
//! who may call what with interrupts off) are written at the top of `ipi.rs`.

mod calls;
mod cpuset;
mod shootdown;

pub use calls::CallRequest;
pub use cpuset::CpuSet;

use cpuset::AtomicCpuSet;

// The protocol's atomics are loom's under `--cfg loom`, so that loom explores every
// interleaving (and every memory ordering) of exactly this code.
#[cfg(not(loom))]
use core::sync::atomic::{AtomicPtr, AtomicU64};
#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU64};

use core::sync::atomic::Ordering;
use crossbeam_utils::CachePadded;

/// The two inter-processor interrupts of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// "Run the calls in your mailbox" ([`CrossCpu::serve_mailbox`]).
    Call,
    /// "Flush your TLB" ([`CrossCpu::answer_shootdown`]).
    Shootdown,
}

/// What a CPU waits for, as published for the stall reporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// Not waiting.
    None = 0,
    /// For its slot in a target's mailbox to be taken (its previous call there is
    /// still unserved).
    Slot = 1,
    /// For the targets of its call to have run it.
    Completion = 2,
    /// For the targets of its shootdown to acknowledge it.
    Shootdown = 3,
}

impl WaitKind {
    fn from_bits(bits: u64) -> Self {
        match bits {
            1 => Self::Slot,
            2 => Self::Completion,
            3 => Self::Shootdown,
            _ => Self::None,
        }
    }

    /// A word for the stall report.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "nothing",
            Self::Slot => "a mailbox slot",
            Self::Completion => "its call to complete",
            Self::Shootdown => "shootdown acknowledgements",
        }
    }
}

/// One published wait: what, and for which CPUs (as the wait began).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub kind: WaitKind,
    pub cpus: CpuSet,
}

/// Defects the model seams may put back on purpose, to show that the loom models catch
/// them. The kernel's seam seeds none (the default), so the checks compile away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeededBugs {
    /// Deadlock 1 of issue 11: the completion wait of a call serves the mailbox but
    /// does not answer shootdowns.
    pub completion_wait_ignores_shootdowns: bool,
}

/// Everything hardware-shaped the protocol needs. One value per CPU context: the
/// kernel's is a zero-sized type, a model's knows which thread stands for which CPU.
///
/// # Safety
///
/// 1. `current_cpu` is below the `N` of every [`CrossCpu<N>`] it is used with, and no
///    two contexts run the protocol with the same index at the same time.
/// 2. `without_interrupts(f)` runs `f` with no interrupt handler of this CPU running
///    until it returns (the kernel: `cli` ... restore).
/// 3. `send_ipi(cpu, Ipi::Call)` makes `cpu` eventually run
///    [`CrossCpu::serve_mailbox`] once its interrupts are on (and likewise
///    [`CrossCpu::answer_shootdown`] for `Ipi::Shootdown`), and every store made before
///    the send is visible to that handler.
pub unsafe trait Seam {
    /// Defects to seed (models only; see [`SeededBugs`]).
    const SEEDED: SeededBugs = SeededBugs {
        completion_wait_ignores_shootdowns: false,
    };

    /// The calling CPU's index.
    fn current_cpu(&self) -> usize;

    /// Sends `ipi` to `cpu` (never the caller).
    fn send_ipi(&self, cpu: usize, ipi: Ipi);

    /// Drops this CPU's non-global TLB entries.
    fn flush_tlb(&self);

    /// Runs `f` with local interrupts off, restoring the previous state after.
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R;

    /// Runs a call's function as an interrupt handler runs: interrupts off, and counted
    /// as handler context, so that the function may make calls itself (rule 3 in
    /// `ipi.rs`) but a critical section it opens may not.
    fn run_call(&self, function: &(dyn Fn() + Sync));

    /// True where this CPU may run incoming calls: outside every per-CPU critical
    /// section (interrupts on, or an interrupt handler that interrupted code with
    /// interrupts on and has itself opened no critical section). Checked by debug
    /// assertions; the default says yes.
    fn may_serve_calls(&self) -> bool {
        true
    }

    /// Called between filling a mailbox slot and announcing it (with interrupts off).
    /// The kernel's provoking stress widens the window here (deadlock 2's window, now
    /// closed to interrupts); nothing else does anything.
    fn between_fill_and_announce(&self) {}

    /// One fruitless turn of a wait loop: `turns` fruitless turns so far in this wait.
    /// The kernel relaxes the core (and reports a stall after a time-out); a model
    /// takes its pending "interrupts" if its interrupts are on, then blocks until
    /// another CPU changes something.
    fn pause(&self, wait: Wait, turns: u64);

    /// Called after every store another CPU may be waiting for (a model wakes its
    /// blocked waiters; the kernel's waiters spin, so it does nothing).
    fn changed(&self) {}
}

/// A CPU's mailbox: one slot per sending CPU, and the set of the full ones.
struct Mailbox<const N: usize> {
    /// CPU `s` is in it: slot `s` holds an announced request from CPU `s`.
    pending: AtomicCpuSet<N>,
    slots: [AtomicPtr<CallRequest<N>>; N],
}

/// The protocol's shared state for `N` CPUs (at most [`CpuSet::CAPACITY`]).
///
/// Its size grows as N²: every mailbox has a slot per sender, 8 bytes each, so the
/// kernel's board for 255 CPUs is about 0.55 MiB of `.bss`, whatever the number of CPUs
/// present. (A board sized at boot by the CPUs present would take that back; it is not
/// worth a `static` that is not `const` yet.)
pub struct CrossCpu<const N: usize> {
    mailboxes: [CachePadded<Mailbox<N>>; N],
    /// Shootdowns started so far.
    generation: CachePadded<AtomicU64>,
    /// `seen[cpu]`: the newest generation `cpu` has flushed its TLB for. Only ever
    /// raised (`fetch_max`).
    seen: [CachePadded<AtomicU64>; N],
    /// What each CPU waits for (a [`WaitKind`]) and for which CPUs: published for the
    /// stall reporter, never read by the protocol itself.
    wait_kind: [CachePadded<AtomicU64>; N],
    wait_cpus: [CachePadded<AtomicCpuSet<N>>; N],
    /// Calls each CPU served, flushes it made on request and shootdowns it started.
    pub(crate) served: [AtomicU64; N],
    pub(crate) flushes: [AtomicU64; N],
    pub(crate) shootdowns: [AtomicU64; N],
}

impl<const N: usize> CrossCpu<N> {
    const FITS: () = assert!(
        N >= 1 && N <= CpuSet::CAPACITY,
        "more CPUs than a CpuSet holds"
    );

    /// An empty board: no request, no shootdown, nobody waiting.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        let () = Self::FITS;
        Self {
            mailboxes: [const {
                CachePadded::new(Mailbox {
                    pending: AtomicCpuSet::new(),
                    slots: [const { AtomicPtr::new(core::ptr::null_mut()) }; N],
                })
            }; N],
            generation: CachePadded::new(AtomicU64::new(0)),
            seen: [const { CachePadded::new(AtomicU64::new(0)) }; N],
            wait_kind: [const { CachePadded::new(AtomicU64::new(0)) }; N],
            wait_cpus: [const { CachePadded::new(AtomicCpuSet::new()) }; N],
            served: [const { AtomicU64::new(0) }; N],
            flushes: [const { AtomicU64::new(0) }; N],
            shootdowns: [const { AtomicU64::new(0) }; N],
        }
    }

    /// An empty board (loom's atomics cannot be made in `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        let () = Self::FITS;
        let atomics = || core::array::from_fn(|_| AtomicU64::new(0));
        let padded = || core::array::from_fn(|_| CachePadded::new(AtomicU64::new(0)));
        Self {
            mailboxes: core::array::from_fn(|_| {
                CachePadded::new(Mailbox {
                    pending: AtomicCpuSet::new(),
                    slots: core::array::from_fn(|_| AtomicPtr::new(core::ptr::null_mut())),
                })
            }),
            generation: CachePadded::new(AtomicU64::new(0)),
            seen: padded(),
            wait_kind: padded(),
            wait_cpus: core::array::from_fn(|_| CachePadded::new(AtomicCpuSet::new())),
            served: atomics(),
            flushes: atomics(),
            shootdowns: atomics(),
        }
    }

    /// What `cpu` is waiting for now (a snapshot, for the stall reporter).
    pub fn waiting(&self, cpu: usize) -> Wait {
        Wait {
            kind: WaitKind::from_bits(self.wait_kind[cpu].load(Ordering::Relaxed)),
            cpus: self.wait_cpus[cpu].load(Ordering::Relaxed),
        }
    }

    /// The newest generation `cpu` has flushed for, and the newest started.
    pub fn generations(&self, cpu: usize) -> (u64, u64) {
        (
            self.seen[cpu].load(Ordering::Relaxed),
            self.generation.load(Ordering::Relaxed),
        )
    }

    /// Calls `cpu` served, flushes it answered and shootdowns it started.
    pub fn counters(&self, cpu: usize) -> (u64, u64, u64) {
        (
            self.served[cpu].load(Ordering::Relaxed),
            self.flushes[cpu].load(Ordering::Relaxed),
            self.shootdowns[cpu].load(Ordering::Relaxed),
        )
    }

    /// Publishes that `me` starts waiting for `wait`. Only the stall reporter reads
    /// it, so the loom build leaves it out (every atomic access is a branch point for
    /// loom, and these decide nothing).
    fn begin_wait(&self, me: usize, wait: Wait) {
        if cfg!(not(loom)) {
            self.wait_cpus[me].store(wait.cpus, Ordering::Relaxed);
            self.wait_kind[me].store(wait.kind as u64, Ordering::Relaxed);
        }
    }

    /// Publishes that `me` waits no more.
    fn end_wait(&self, me: usize) {
        if cfg!(not(loom)) {
            self.wait_kind[me].store(WaitKind::None as u64, Ordering::Relaxed);
        }
    }

    /// Counts an event in one of the statistics (left out under loom, as above).
    fn count(counter: &AtomicU64) {
        if cfg!(not(loom)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<const N: usize> Default for CrossCpu<N> {
    fn default() -> Self {
        Self::new()
    }
}
