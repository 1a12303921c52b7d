//! A spinlock generic over what it disables while held.
//!
//! Every lock of the slab layer may be taken by an interrupt handler (interrupt handlers
//! allocate), so in the kernel each one is taken with local interrupts off: otherwise an
//! interrupt arriving while its CPU holds a cache lock, whose handler allocates from that
//! cache, would spin forever on a lock that its own CPU holds.
//!
//! `mm` knows no hardware, so *what* "interrupts off" means comes from outside, through
//! [`InterruptControl`]: the kernel implements it with `pushf; cli` ... `popf`, the hosted
//! build and the tests with [`NoInterrupts`], a no-op (a host thread has no interrupts).
//!
//! [`SpinLock::lock`] first disables interrupts, then spins; the guard unlocks, then
//! restores the interrupt state that was saved. Restoring the *saved* state (rather than
//! blindly enabling) is what makes nesting correct: a lock taken inside another one, or in
//! a handler that already runs with interrupts off, leaves them off on release.
//!
//! The guard is `#[must_use]` and neither `Send` nor `Sync`: it stands for "this CPU has
//! interrupts off and holds the lock", which means nothing on another CPU.
//!
//! What the kernel writes (with the `x86_64` crate):
//!
//! ```ignore
//! pub struct Cli;
//!
//! // SAFETY: `cli` masks every maskable interrupt on this CPU until `restore`.
//! unsafe impl mm::sync::InterruptControl for Cli {
//!     type State = bool; // were interrupts enabled?
//!
//!     fn disable() -> bool {
//!         let enabled = x86_64::instructions::interrupts::are_enabled();
//!         x86_64::instructions::interrupts::disable();
//!         enabled
//!     }
//!
//!     unsafe fn restore(enabled: bool) {
//!         if enabled {
//!             x86_64::instructions::interrupts::enable();
//!         }
//!     }
//! }
//! ```

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
// Under `--cfg loom` the lock's own atomics are loom's (through the shim), so that the
// models in `loom-tests/` explore every interleaving of the locking protocol.
use atomic::{AtomicBool, AtomicU64, Ordering};

pub mod atomic;
pub mod cell;

/// Re-exported: the lock is generic over the platform's interrupt control.
pub use crate::platform::{InterruptControl, NoInterrupts};

/// What a lock held across `on_each_cpu` disables: nothing, and its waiters must have
/// interrupts on (as `I` sees them: [`InterruptControl::can_take_ipis`]), which
/// [`SpinLock::lock`] asserts in debug builds.
///
/// Why: the holder waits inside `on_each_cpu` for every CPU to run a function. A CPU
/// spinning for the lock with interrupts off could neither take that IPI nor serve its
/// mailbox, and both would wait forever (deadlock 3 of issue 11). With interrupts on, the
/// spinning CPU takes the IPI. So these locks are taken only with interrupts on, never by
/// an interrupt handler, never inside another lock that disables interrupts; `try_lock`
/// (which never waits) may be used anywhere.
pub struct InterruptsOn<I>(PhantomData<fn() -> I>);

// SAFETY: disables nothing, and is only used for locks that no interrupt handler waits
// for (the rule above, asserted in `check_may_wait` for every waiting acquisition; an
// interrupt handler may only `try_lock`, as `SlabCaches::reclaim` does): such a
// lock cannot be re-entered by a handler on the CPU that holds it. No per-CPU data
// relies on it for exclusion (it is no `CpuLocal`).
unsafe impl<I: InterruptControl> InterruptControl for InterruptsOn<I> {
    type State = ();

    fn disable() {}

    unsafe fn restore(_state: ()) {}

    fn can_take_ipis() -> bool {
        I::can_take_ipis()
    }

    fn check_may_wait() {
        debug_assert!(
            I::can_take_ipis(),
            "a lock held across on_each_cpu (the slab chain or a tuning lock) taken with \
             interrupts off: its holder may wait for this CPU to take an IPI"
        );
    }
}

/// A test-and-test-and-set spinlock that disables interrupts (as `I` means it) while
/// held. See the [module docs](self).
pub struct SpinLock<T, I: InterruptControl> {
    locked: AtomicBool,
    /// Times the lock was taken (for statistics: the per-CPU layer exists to make this
    /// small). Changed only by the holder, so a load and a store, no atomic add.
    acquisitions: AtomicU64,
    value: UnsafeCell<T>,
    _interrupts: PhantomData<fn() -> I>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time (the `locked`
// flag, acquired with `Acquire` and released with `Release`), so sharing the lock
// between threads moves `T` between them, which `T: Send` allows.
unsafe impl<T: Send, I: InterruptControl> Sync for SpinLock<T, I> {}
// SAFETY: sending the lock sends the `T` inside it.
unsafe impl<T: Send, I: InterruptControl> Send for SpinLock<T, I> {}

impl<T, I: InterruptControl> SpinLock<T, I> {
    /// An unlocked lock around `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            acquisitions: AtomicU64::new(0),
            value: UnsafeCell::new(value),
            _interrupts: PhantomData,
        }
    }

    /// An unlocked lock around `value` (loom's atomics cannot be made in `const`).
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            acquisitions: AtomicU64::new(0),
            value: UnsafeCell::new(value),
            _interrupts: PhantomData,
        }
    }

    /// Disables interrupts, then spins until the lock is ours.
    pub fn lock(&self) -> SpinLockGuard<'_, T, I> {
        I::check_may_wait();
        let saved = I::disable();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Spin on a plain load (the cache line stays shared) until it looks free.
            while self.locked.load(Ordering::Relaxed) {
                I::relax();
                // loom runs one thread at a time: a spin must let the holder run.
                #[cfg(loom)]
                loom::thread::yield_now();
            }
        }
        self.count_acquisition();
        SpinLockGuard {
            lock: self,
            saved,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock if it is free, without spinning.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T, I>> {
        let saved = I::disable();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.count_acquisition();
            return Some(SpinLockGuard {
                lock: self,
                saved,
                _not_send: PhantomData,
            });
        }
        // SAFETY: `saved` is what the `disable` just above returned, and nothing was
        // disabled after it.
        unsafe { I::restore(saved) };
        None
    }

    /// Called by the new holder only.
    fn count_acquisition(&self) {
        let n = self.acquisitions.load(Ordering::Relaxed);
        self.acquisitions.store(n + 1, Ordering::Relaxed);
    }

    /// How many times the lock has been taken.
    pub fn acquisitions(&self) -> u64 {
        self.acquisitions.load(Ordering::Relaxed)
    }

    /// The value, through exclusive access to the lock (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// True while some CPU holds the lock (a snapshot, for assertions).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

/// Proof that this CPU holds a [`SpinLock`] with interrupts off; unlocks on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct SpinLockGuard<'a, T, I: InterruptControl> {
    lock: &'a SpinLock<T, I>,
    saved: I::State,
    /// Neither `Send` nor `Sync`: the guard belongs to the CPU that disabled interrupts.
    _not_send: PhantomData<*mut ()>,
}

impl<T, I: InterruptControl> Deref for SpinLockGuard<'_, T, I> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this CPU holds the lock, so no one else
        // accesses the value.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T, I: InterruptControl> DerefMut for SpinLockGuard<'_, T, I> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only access through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T, I: InterruptControl> Drop for SpinLockGuard<'_, T, I> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        // SAFETY: `saved` is what `disable` returned when this guard was made; guards are
        // dropped in reverse order of creation on their CPU (they cannot leave it), so
        // this is the most recent unrestored `disable`.
        unsafe { I::restore(self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;
    use std::vec::Vec;

    std::thread_local! {
        /// The simulated interrupt flag of this "CPU" (thread): true = enabled.
        static ENABLED: Cell<bool> = const { Cell::new(true) };
    }

    /// An interrupt controller whose state is a thread-local flag, to check nesting.
    struct FakeCli;

    // SAFETY: no interrupt handlers exist in the test; the flag only records what a real
    // implementation would do.
    unsafe impl InterruptControl for FakeCli {
        type State = bool;

        fn disable() -> bool {
            ENABLED.with(|e| e.replace(false))
        }

        unsafe fn restore(state: bool) {
            ENABLED.with(|e| e.set(state));
        }
    }

    fn enabled() -> bool {
        ENABLED.with(Cell::get)
    }

    #[test]
    fn interrupts_are_off_while_held_and_nesting_restores_the_saved_state() {
        let a = SpinLock::<u32, FakeCli>::new(1);
        let b = SpinLock::<u32, FakeCli>::new(2);
        assert!(enabled());
        {
            let ga = a.lock();
            assert!(!enabled() && a.is_locked());
            {
                let gb = b.lock();
                assert_eq!(*ga + *gb, 3);
            }
            // Releasing the inner lock must not turn interrupts back on.
            assert!(!enabled(), "inner unlock re-enabled interrupts");
        }
        assert!(enabled() && !a.is_locked());
    }

    #[test]
    fn try_lock_fails_while_held_and_leaves_interrupts_as_they_were() {
        let lock = SpinLock::<(), FakeCli>::new(());
        let guard = lock.lock();
        assert!(lock.try_lock().is_none());
        assert!(
            !enabled(),
            "a failed try_lock must restore the state it saved"
        );
        drop(guard);
        assert!(enabled());
        let again = lock.try_lock();
        assert!(again.is_some() && !enabled());
        drop(again);
        assert!(enabled());
    }

    #[test]
    fn the_lock_excludes_other_threads() {
        let threads = 4;
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let lock = Arc::new(SpinLock::<(u64, u64), NoInterrupts>::new((0, 0)));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        let mut g = lock.lock();
                        // A torn update would leave the two halves different.
                        g.0 += 1;
                        std::hint::black_box(&mut *g);
                        g.1 += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut lock = Arc::try_unwrap(lock).ok().unwrap();
        assert_eq!(*lock.get_mut(), (threads * rounds, threads * rounds));
    }
}
