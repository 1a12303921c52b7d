//! A spinlock for data that interrupt handlers also touch.
//!
//! If a CPU holds a plain spinlock and an interrupt handler on the same CPU tries
//! to take it, the handler spins forever: the holder cannot run until the handler
//! returns. [`IrqSpinlock::lock`] therefore disables interrupts on the local CPU
//! *before* taking the lock and the guard restores the previous interrupt state
//! *after* releasing it, so guards nest (an inner guard finds interrupts already
//! off and leaves them off). Guards are not `Send`: the interrupt state they
//! restore belongs to the CPU that took them.

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use x86_64::instructions::interrupts;

/// A spinlock (from `spin`) taken with local interrupts disabled.
pub struct IrqSpinlock<T> {
    inner: spin::Mutex<T>,
}

impl<T> IrqSpinlock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
        }
    }

    /// Disables local interrupts, then spins until the lock is free.
    ///
    /// While it spins it answers TLB shootdowns (rule 1 in `ipi.rs`): the CPU holding
    /// this lock, or any other, may be waiting for this CPU's acknowledgement.
    pub fn lock(&self) -> IrqSpinlockGuard<'_, T> {
        let interrupts_were_enabled = interrupts::are_enabled();
        interrupts::disable();
        crate::percpu::enter_critical();
        let guard = loop {
            if let Some(guard) = self.inner.try_lock() {
                break guard;
            }
            while self.inner.is_locked() {
                crate::tlb::answer();
                core::hint::spin_loop();
            }
        };
        IrqSpinlockGuard {
            guard: core::mem::ManuallyDrop::new(guard),
            interrupts_were_enabled,
            _not_send: PhantomData,
        }
    }
}

/// Proof that the lock is held with local interrupts off.
#[must_use = "the lock is released when the guard is dropped"]
pub struct IrqSpinlockGuard<'a, T> {
    guard: core::mem::ManuallyDrop<spin::MutexGuard<'a, T>>,
    interrupts_were_enabled: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for IrqSpinlockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqSpinlockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for IrqSpinlockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the inner guard is dropped exactly once, here, and not used after.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.guard) };
        crate::percpu::leave_critical();
        if self.interrupts_were_enabled {
            interrupts::enable();
        }
    }
}
