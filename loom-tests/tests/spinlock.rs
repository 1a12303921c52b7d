//! loom models of `mm::sync::SpinLock`, the lock of every cache, of the range allocator
//! and of the page allocator, built from `mm`'s own source with loom's atomics
//! (`--cfg loom`, see `mm/src/sync.rs`).
//!
//! What is checked, in every interleaving loom can reach (and every memory ordering the
//! C++ model allows it to pick): the critical sections exclude each other and are
//! ordered by the lock (the protected data is a `loom::cell::UnsafeCell`, whose
//! unsynchronised concurrent use loom reports as a data race); `try_lock` never enters
//! a held lock; the acquisition counter, updated with a plain load and store by the
//! holder, loses no update. The last model removes the lock and must fail, which shows
//! that the checks are not vacuous.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use mm::sync::{NoInterrupts, SpinLock};

/// A counter that only the lock makes safe to share.
struct Guarded {
    lock: SpinLock<(), NoInterrupts>,
    counter: UnsafeCell<u64>,
}

// SAFETY: `counter` is only touched with `lock` held (in the models that test the lock;
// the last model breaks this on purpose and expects loom to catch it).
unsafe impl Sync for Guarded {}

impl Guarded {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            lock: SpinLock::new(()),
            counter: UnsafeCell::new(0),
        })
    }

    /// Adds one to the counter: a read and a write that only exclusion keeps whole.
    fn bump(&self) {
        self.counter.with_mut(|counter| {
            // SAFETY: the caller holds the lock (or the model expects a race report).
            unsafe { *counter += 1 }
        });
    }

    fn total(&self) -> u64 {
        // SAFETY: every thread has been joined.
        self.counter.with(|counter| unsafe { *counter })
    }
}

#[test]
fn two_cpus_taking_the_lock_exclude_each_other() {
    loom::model(|| {
        let shared = Guarded::new();
        let other = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let _guard = shared.lock.lock();
                shared.bump();
            })
        };
        {
            let _guard = shared.lock.lock();
            shared.bump();
        }
        other.join().unwrap();
        assert_eq!(shared.total(), 2);
        assert_eq!(shared.lock.acquisitions(), 2, "no acquisition was lost");
        assert!(!shared.lock.is_locked());
    });
}

#[test]
fn two_cpus_taking_the_lock_twice_lose_no_update() {
    let mut builder = loom::model::Builder::new();
    // Each spin on a held lock is a branch; bounding preemptions keeps the model to
    // seconds while still interleaving every pair of critical sections.
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let shared = Guarded::new();
        let other = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for _ in 0..2 {
                    let _guard = shared.lock.lock();
                    shared.bump();
                }
            })
        };
        for _ in 0..2 {
            let _guard = shared.lock.lock();
            shared.bump();
        }
        other.join().unwrap();
        assert_eq!(shared.total(), 4);
        assert_eq!(shared.lock.acquisitions(), 4);
    });
}

#[test]
fn try_lock_never_enters_a_held_lock() {
    loom::model(|| {
        let shared = Guarded::new();
        let other = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let _guard = shared.lock.lock();
                shared.bump();
            })
        };
        // What `reclaim` does with the chain lock: enter only if free.
        let entered = match shared.lock.try_lock() {
            Some(_guard) => {
                shared.bump();
                true
            }
            None => false,
        };
        other.join().unwrap();
        assert_eq!(shared.total(), 1 + u64::from(entered));
        assert_eq!(shared.lock.acquisitions(), 1 + u64::from(entered));
    });
}

#[test]
// loom's own report of two unordered writes to a cell, not any panic (a model that ran
// out of branches, or a failed assertion, would not do).
#[should_panic(expected = "Causality violation: Concurrent write accesses to `UnsafeCell`.")]
fn without_the_lock_loom_reports_the_race() {
    loom::model(|| {
        let shared = Guarded::new();
        let other = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.bump())
        };
        shared.bump();
        other.join().unwrap();
    });
}
