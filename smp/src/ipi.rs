//! Running a function on other CPUs: `on_each_cpu` and `on_cpu`, the
//! `smp_call_function` of Linux 2.4, which the allocator uses to drain every
//! CPU's object cache on that CPU.
//!
//! Protocol. Every CPU has a mailbox: one slot per *sending* CPU and a bitmask of
//! the slots that are full. To ask CPU `t` to run a call, CPU `s` puts a pointer
//! to a [`CallRequest`] (on its own stack) in `t`'s slot `s`, sets bit `s` of
//! `t`'s mask and sends `t` the CALL_FUNCTION IPI. The handler on `t` takes its
//! mask, runs each request and counts it done; `s` spins until every target has.
//!
//! Why it cannot deadlock when CPUs call each other at once: a sender never holds
//! a lock while it waits, and while it waits it runs the requests in its *own*
//! mailbox. So two CPUs that send to each other with interrupts off (or from an
//! interrupt handler) still serve each other. One slot per sender means no slot
//! is ever contended: a sender fills its slot on `t` only after its previous
//! request there was taken.
//!
//! Waiting senders answer TLB shootdowns as well (see `tlb`): the CPU shooting
//! down may be one of the targets, waiting for us with interrupts off.
//!
//! The function runs in interrupt context on the targets (interrupts off), and
//! on the calling CPU with interrupts off too, so it sees the same conditions
//! everywhere.

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::percpu::{self, current_cpu};
use crate::{MAX_CPUS, vectors};

/// A function call that other CPUs run.
pub struct CallRequest {
    /// The function, with its lifetime erased: the sender keeps the closure alive
    /// until `remaining` reaches zero.
    function: *const (dyn Fn() + Sync),
    /// Targets that have not finished running the function yet.
    remaining: AtomicUsize,
}

struct Mailbox {
    /// Bit `s`: slot `s` holds a request from CPU `s`.
    pending: AtomicU64,
    slots: [AtomicPtr<CallRequest>; MAX_CPUS],
}

static MAILBOXES: [CachePadded<Mailbox>; MAX_CPUS] = [const {
    CachePadded::new(Mailbox {
        pending: AtomicU64::new(0),
        slots: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS],
    })
}; MAX_CPUS];

/// Calls sent and served per CPU, for the boot log.
pub static CALLS_SERVED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Runs `function` on every online CPU, the caller included, and returns when all
/// have run it.
pub fn on_each_cpu(function: &(dyn Fn() + Sync)) {
    let me = current_cpu();
    let targets = (0..percpu::cpu_count())
        .filter(|&cpu| cpu != me && percpu::cpu(cpu).online.load(Ordering::Acquire));
    call(function, targets, true);
}

/// Runs `function` on CPU `target` (in its interrupt context, or directly when it
/// is the caller) and returns when it has run.
pub fn on_cpu(target: usize, function: &(dyn Fn() + Sync)) {
    assert!(target < percpu::cpu_count(), "no CPU {target}");
    if target == current_cpu() {
        x86_64::instructions::interrupts::without_interrupts(function);
    } else {
        call(function, core::iter::once(target), false);
    }
}

fn call(
    function: &(dyn Fn() + Sync),
    targets: impl Iterator<Item = usize> + Clone,
    run_here: bool,
) {
    let me = current_cpu();
    // SAFETY: only the lifetime is erased; `request` outlives every use of the
    // pointer because this function waits for `remaining` to reach zero.
    let function: *const (dyn Fn() + Sync) = unsafe { core::mem::transmute(function) };
    let request = CallRequest {
        function,
        remaining: AtomicUsize::new(targets.clone().count()),
    };
    let request_ptr = (&raw const request).cast_mut();
    for target in targets {
        let slot = &MAILBOXES[target].slots[me];
        // The slot is free unless our previous request to `target` is still in
        // it (possible when we send from inside a handler): serve our own mailbox
        // until it is taken.
        while slot
            .compare_exchange(
                core::ptr::null_mut(),
                request_ptr,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            serve_mailbox();
            crate::tlb::answer();
            core::hint::spin_loop();
        }
        MAILBOXES[target]
            .pending
            .fetch_or(1 << me, Ordering::AcqRel);
        let apic_id = percpu::cpu(target).apic_id();
        percpu::with_local_apic(|lapic| lapic.send_ipi(apic_id, vectors::CALL_FUNCTION));
    }
    if run_here {
        x86_64::instructions::interrupts::without_interrupts(|| {
            // SAFETY: the closure behind the pointer is borrowed for this call.
            unsafe { (*request.function)() }
        });
    }
    while request.remaining.load(Ordering::Acquire) != 0 {
        serve_mailbox();
        core::hint::spin_loop();
    }
}

/// Runs every request in the calling CPU's mailbox. The CALL_FUNCTION interrupt
/// handler calls this (and sends EOI); waiting senders call it too.
pub fn serve_mailbox() {
    let me = current_cpu();
    let mailbox = &MAILBOXES[me];
    let mut pending = mailbox.pending.swap(0, Ordering::AcqRel);
    while pending != 0 {
        let sender = pending.trailing_zeros() as usize;
        pending &= pending - 1;
        let request = mailbox.slots[sender].swap(core::ptr::null_mut(), Ordering::AcqRel);
        if request.is_null() {
            continue;
        }
        // SAFETY: a non-null slot holds a request whose sender is spinning until
        // `remaining` reaches zero, so the request and its closure are alive until
        // the `fetch_sub` below; the closure is `Sync`, so running it here while
        // other CPUs run it too is allowed.
        unsafe {
            x86_64::instructions::interrupts::without_interrupts(|| (*(*request).function)());
            (*request).remaining.fetch_sub(1, Ordering::AcqRel);
        }
        CALLS_SERVED[me].fetch_add(1, Ordering::Relaxed);
    }
}
