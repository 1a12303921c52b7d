//! [`LoomCpus`]: CPUs made of loom threads, for the models of `loom-tests/` (built only
//! under `--cfg loom`). The same shape as `hosted_cpus::HostCpus`, with loom's atomics,
//! statics and thread-locals, so that loom sees (and interleaves at) every step of
//! "interrupts off" and of `on_each_cpu`:
//!
//! - "interrupts off on CPU c" = hold c's guard, a flag the loom thread standing for c
//!   takes with an acquire compare-and-swap and releases with a release store. It nests
//!   (a depth per thread); only the outermost `disable` takes it. A thread waiting for a
//!   guard yields to loom (`loom::thread::yield_now`), so a model cannot spin forever.
//! - "which CPU am I" = the CPU the thread was bound to ([`LoomCpus::bind`]; a thread
//!   must bind before its first `disable`), or, inside `on_each_cpu`, the CPU it acts as.
//! - "run f on every CPU" = take each CPU's guard in turn and run `f` as that CPU, the
//!   rule the kernel's IPIs follow: the caller has interrupts on (asserted) and holds no
//!   lock that `f` takes; the target is outside its own critical section while `f` runs.
//!
//! The guards are a `loom::lazy_static!`: every explored execution starts with all CPUs'
//! interrupts on. [`LOOM_CPUS`] is small on purpose (loom allows at most 4 threads
//! besides the model's main thread, and each CPU multiplies the interleavings).

use crate::platform::CpuLocal;
use crate::sync::InterruptControl;
use crate::sync::atomic::{AtomicBool, Ordering};
use core::cell::Cell;

/// CPUs of the loom platform.
pub const LOOM_CPUS: usize = 2;

loom::lazy_static! {
    /// One guard per CPU: held = that CPU has its interrupts off.
    static ref GUARDS: [AtomicBool; LOOM_CPUS] =
        core::array::from_fn(|_| AtomicBool::new(false));
}

loom::thread_local! {
    /// The CPU this thread stands for, once bound.
    static BOUND: Cell<Option<usize>> = Cell::new(None);
    /// `disable`s not yet restored, and the CPU whose guard is held (when not 0).
    static HELD: Cell<(u32, usize)> = Cell::new((0, 0));
}

/// CPUs made of loom threads: see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoomCpus;

impl LoomCpus {
    /// Makes the calling (loom) thread stand for CPU `cpu`.
    ///
    /// # Panics
    ///
    /// If `cpu >= LOOM_CPUS`, or with interrupts off.
    pub fn bind(cpu: usize) {
        assert!(cpu < LOOM_CPUS, "no loom CPU {cpu}");
        assert_eq!(
            HELD.with(Cell::get).0,
            0,
            "LoomCpus::bind with interrupts off"
        );
        BOUND.with(|b| b.set(Some(cpu)));
    }

    fn bound() -> usize {
        BOUND
            .with(Cell::get)
            .expect("a loom thread must call LoomCpus::bind before using the allocator")
    }

    /// True while CPU `cpu` has its interrupts off (for the models' assertions).
    pub fn interrupts_off(cpu: usize) -> bool {
        GUARDS[cpu].load(Ordering::Relaxed)
    }

    fn take_guard(cpu: usize) {
        while GUARDS[cpu]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // loom runs one thread at a time: let the holder run.
            loom::thread::yield_now();
        }
    }

    fn release_guard(cpu: usize) {
        GUARDS[cpu].store(false, Ordering::Release);
    }
}

// SAFETY: no interrupt handlers exist in a model; what "interrupts off" must give the
// per-CPU layer is exclusion per CPU, and the outermost `disable` takes the CPU's guard
// (a lock), which the `restore` of the same nesting level releases.
unsafe impl InterruptControl for LoomCpus {
    type State = ();

    fn disable() {
        let (depth, cpu) = HELD.with(Cell::get);
        if depth == 0 {
            let cpu = Self::bound();
            Self::take_guard(cpu);
            HELD.with(|h| h.set((1, cpu)));
        } else {
            HELD.with(|h| h.set((depth + 1, cpu)));
        }
    }

    unsafe fn restore(_state: ()) {
        let (depth, cpu) = HELD.with(Cell::get);
        HELD.with(|h| h.set((depth - 1, cpu)));
        if depth == 1 {
            Self::release_guard(cpu);
        }
    }

    fn relax() {
        loom::thread::yield_now();
    }
}

// SAFETY: (1) a thread's CPU changes only with its depth at 0 (`bind` asserts it;
// `on_each_cpu` acts as a CPU with a depth of exactly one), and a thread with depth > 0
// holds that CPU's guard, which excludes every other thread. (2) `on_each_cpu` visits
// every CPU, holding its guard, acting as it.
unsafe impl CpuLocal for LoomCpus {
    const CPUS: usize = LOOM_CPUS;

    fn current_cpu() -> usize {
        let (depth, cpu) = HELD.with(Cell::get);
        if depth > 0 { cpu } else { Self::bound() }
    }

    fn on_each_cpu(f: &(dyn Fn(usize) + Sync)) {
        assert_eq!(
            HELD.with(Cell::get).0,
            0,
            "on_each_cpu with interrupts off: it would wait for this CPU's own guard"
        );
        for cpu in 0..LOOM_CPUS {
            Self::take_guard(cpu);
            HELD.with(|h| h.set((1, cpu)));
            f(cpu);
            HELD.with(|h| h.set((0, 0)));
            Self::release_guard(cpu);
        }
    }
}
