//! [`HostCpus`]: CPUs made of host threads, for tests and benchmarks of the per-CPU layer.
//!
//! The kernel's per-CPU caches are safe because a CPU touches its own cache only with
//! its interrupts off, and another CPU's cache only by asking that CPU (an IPI). Here a
//! "CPU" is a slot with a lock, its *guard*:
//!
//! - "interrupts off on this CPU" = hold the guard of the slot the thread is bound to.
//!   The guard nests like `pushf; cli` (a depth count per thread); only the outermost
//!   `disable` takes it. A thread bound to a slot no other thread uses never waits for
//!   it, as a CPU never waits to disable its own interrupts.
//! - "which CPU am I" = the slot the thread is bound to ([`HostCpus::bind`]), or, inside
//!   `on_each_cpu`, the slot it is acting as. Unbound threads are spread round-robin; two
//!   threads on one slot are still correct (they take turns holding its guard), only
//!   slower.
//! - "run f on every CPU" = take each slot's guard in turn and run `f` as that slot:
//!   exactly what an IPI guarantees (the target is not inside its own critical section
//!   while the handler runs).
//!
//! The slots are process-wide statics, like the CPUs of a machine: every allocator in the
//! process shares them, which is harmless (they only serialise).

use crate::platform::CpuLocal;
use crate::sync::InterruptControl;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::cell::Cell;
use crossbeam_utils::{Backoff, CachePadded};

/// CPU slots of the host platform.
pub const HOST_CPUS: usize = 16;

/// One guard per slot: held = that CPU has its interrupts off.
static GUARDS: [CachePadded<AtomicBool>; HOST_CPUS] =
    [const { CachePadded::new(AtomicBool::new(false)) }; HOST_CPUS];

/// The next slot for a thread that did not choose one.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// What a thread stands for and holds: how many `disable`s it has not restored yet, and
/// its slot: the one it stands for ([`UNBOUND`] before the first use), or inside
/// `on_each_cpu` the one it acts as. With a depth above 0 it holds that slot's guard.
/// One word, read and written whole: every operation of the per-CPU layer reads it two
/// or three times.
#[derive(Clone, Copy)]
struct Held {
    depth: u32,
    slot: u32,
}

/// The slot of a thread that has not used the per-CPU layer yet.
const UNBOUND: u32 = u32::MAX;

std::thread_local! {
    /// See [`Held`].
    static HELD: Cell<Held> = const { Cell::new(Held { depth: 0, slot: UNBOUND }) };
}

/// CPUs made of host threads: see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCpus;

impl HostCpus {
    /// Makes the calling thread stand for CPU `cpu` from now on.
    ///
    /// # Panics
    ///
    /// If `cpu >= HOST_CPUS`, or if the thread has its "interrupts" off (it would leave
    /// one slot's guard held and then claim another's).
    pub fn bind(cpu: usize) {
        assert!(cpu < HOST_CPUS, "no host CPU {cpu}");
        assert_eq!(HELD.get().depth, 0, "HostCpus::bind with interrupts off");
        HELD.set(Held {
            depth: 0,
            slot: cpu as u32,
        });
    }

    /// The slot of `held` (chosen round-robin on first use).
    #[inline]
    fn slot_of(held: Held) -> usize {
        if held.slot == UNBOUND {
            Self::choose_slot()
        } else {
            held.slot as usize
        }
    }

    #[cold]
    fn choose_slot() -> usize {
        let cpu = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % HOST_CPUS;
        HELD.set(Held {
            depth: 0,
            slot: cpu as u32,
        });
        cpu
    }

    #[inline]
    fn take_guard(cpu: usize) {
        if GUARDS[cpu]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            Self::wait_for_guard(cpu);
        }
    }

    #[cold]
    fn wait_for_guard(cpu: usize) {
        let backoff = Backoff::new();
        // Strong, not weak: a spurious failure (Miri simulates them, x86 has none) would
        // send an uncontended `disable` into the back-off.
        while GUARDS[cpu]
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Two cores and many threads: yield rather than spin on a descheduled holder.
            backoff.snooze();
        }
    }

    #[inline]
    fn release_guard(cpu: usize) {
        GUARDS[cpu].store(false, Ordering::Release);
    }
}

// SAFETY: the handlers of the trait's contract do not exist on a host; what "interrupts
// off" must give the per-CPU layer is exclusion per slot, and the outermost `disable`
// takes the slot's guard (a lock), which `restore` of the same nesting level releases.
unsafe impl InterruptControl for HostCpus {
    type State = ();

    #[inline]
    fn disable() {
        let held = HELD.get();
        if held.depth == 0 {
            let slot = Self::slot_of(held);
            Self::take_guard(slot);
            HELD.set(Held {
                depth: 1,
                slot: slot as u32,
            });
        } else {
            HELD.set(Held {
                depth: held.depth + 1,
                ..held
            });
        }
    }

    #[inline]
    unsafe fn restore(_state: ()) {
        let held = HELD.get();
        HELD.set(Held {
            depth: held.depth - 1,
            ..held
        });
        if held.depth == 1 {
            Self::release_guard(held.slot as usize);
        }
    }

    fn relax() {
        std::thread::yield_now();
    }

    fn can_take_ipis() -> bool {
        HELD.get().depth == 0
    }
}

// SAFETY: (1) the slot a thread stands for changes only with its depth at 0 (`bind`
// asserts it, `on_each_cpu` sets the slot it acts as with a depth of exactly one), and
// a thread with depth > 0 holds that slot's guard, which excludes every other thread.
// (2) `on_each_cpu` visits every slot, holding its guard, acting as it.
unsafe impl CpuLocal for HostCpus {
    const CPUS: usize = HOST_CPUS;

    #[inline]
    fn current_cpu() -> usize {
        Self::slot_of(HELD.get())
    }

    fn on_each_cpu(f: &(dyn Fn(usize) + Sync)) {
        assert_eq!(
            HELD.get().depth,
            0,
            "on_each_cpu with interrupts off: it would wait for this CPU's own guard"
        );
        let own = HELD.get();
        for cpu in 0..HOST_CPUS {
            Self::take_guard(cpu);
            HELD.set(Held {
                depth: 1,
                slot: cpu as u32,
            });
            f(cpu);
            HELD.set(own);
            Self::release_guard(cpu);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_guard_nests_and_excludes_the_threads_of_its_slot() {
        // Two threads on one slot: their "interrupts off" sections must not overlap.
        let inside = Arc::new(AtomicU64::new(0));
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let inside = Arc::clone(&inside);
                std::thread::spawn(move || {
                    HostCpus::bind(HOST_CPUS - 1);
                    for _ in 0..rounds {
                        HostCpus::disable();
                        HostCpus::disable();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        // SAFETY: the inner `disable` is the latest unrestored one.
                        unsafe { HostCpus::restore(()) };
                        assert_eq!(HostCpus::current_cpu(), HOST_CPUS - 1);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        // SAFETY: the outer one.
                        unsafe { HostCpus::restore(()) };
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn on_each_cpu_runs_once_as_every_cpu_with_its_guard_held() {
        let seen = std::sync::Mutex::new(Vec::new());
        HostCpus::on_each_cpu(&|cpu| {
            assert_eq!(HostCpus::current_cpu(), cpu);
            assert!(GUARDS[cpu].load(Ordering::Relaxed));
            seen.lock().unwrap().push(cpu);
        });
        assert_eq!(*seen.lock().unwrap(), (0..HOST_CPUS).collect::<Vec<_>>());
    }
}
