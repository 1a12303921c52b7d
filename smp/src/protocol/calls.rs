//! Cross-CPU calls: posting a request into another CPU's mailbox, serving one's own
//! mailbox, and waiting for completion.
//!
//! A request lives on its sender's stack; a target's slot for that sender holds a
//! pointer to it from the post until the target takes it. The sender waits until every
//! target has cleared its bit in `remaining`, so the request outlives every use.
//! Filling a slot and announcing it (pending bit, IPI) happen with interrupts off, as
//! one step: see deadlock 2 in `ipi.rs`.

use core::sync::atomic::Ordering;

use super::{AtomicCpuSet, CpuSet, CrossCpu, Ipi, Seam, Wait, WaitKind};

/// A function call that other CPUs run, on a board of `N` CPUs.
pub struct CallRequest<const N: usize> {
    /// The function, with its lifetime erased: the sender keeps the closure alive
    /// until `remaining` is empty.
    function: *const (dyn Fn() + Sync),
    /// The targets that have not finished running the function yet.
    remaining: AtomicCpuSet<N>,
}

impl<const N: usize> CrossCpu<N> {
    /// Runs `function` on every CPU of `targets` other than the caller (in their
    /// interrupt context, or in one of their waits) and, with `run_here`, on the caller
    /// with interrupts off; returns when all have run it.
    ///
    /// The caller must be outside every per-CPU critical section (interrupts on, or an
    /// interrupt handler that opened none): its waits serve its own mailbox. Checked by
    /// a debug assertion through [`Seam::may_serve_calls`].
    pub fn call<S: Seam>(
        &self,
        seam: &S,
        targets: CpuSet,
        function: &(dyn Fn() + Sync),
        run_here: bool,
    ) {
        debug_assert!(
            seam.may_serve_calls(),
            "cross-CPU call from inside a per-CPU critical section (or with interrupts off \
             outside an interrupt handler): see the rules in ipi.rs"
        );
        let me = seam.current_cpu();
        let targets = targets.without(me);
        // SAFETY: only the lifetime is erased; `request` and the closure outlive every
        // use of the pointer, because this function returns only once every target has
        // cleared its bit, after its last use of the request.
        let function: *const (dyn Fn() + Sync) = unsafe { core::mem::transmute(function) };
        let request = CallRequest {
            function,
            remaining: AtomicCpuSet::from_set(targets),
        };
        let request_ptr = (&raw const request).cast_mut();
        // One pass over the one set: the targets counted in `remaining` are exactly the
        // CPUs sent to.
        for target in targets.iter() {
            self.post(seam, me, target, request_ptr);
        }
        if run_here {
            // SAFETY: the closure behind the pointer is borrowed for this call.
            seam.run_call(unsafe { &*function });
        }
        if targets.is_empty() {
            return;
        }
        let wait = Wait {
            kind: WaitKind::Completion,
            cpus: targets,
        };
        self.begin_wait(me, wait);
        let mut turns = 0;
        while !request.remaining.is_empty(Ordering::Acquire) {
            // A target may be waiting for us: to run our part of a call it sent first
            // (served here), or, holding a lock with interrupts off, to acknowledge its
            // shootdown (answered here: deadlock 1 when not).
            let mut progress = self.serve_mailbox(seam);
            if !S::SEEDED.completion_wait_ignores_shootdowns {
                progress |= self.answer_shootdown(seam);
            }
            if !progress {
                seam.pause(wait, turns);
                turns += 1;
            }
        }
        self.end_wait(me);
    }

    /// Puts `request` into `target`'s slot for `me` and announces it.
    fn post<S: Seam>(&self, seam: &S, me: usize, target: usize, request: *mut CallRequest<N>) {
        let mailbox = &self.mailboxes[target];
        let slot = &mailbox.slots[me];
        let mut waiting = false;
        // Fruitless turns: `pause` sees 0 on the first of each wait (the kernel starts
        // the stall clock then).
        let mut turns = 0;
        loop {
            // Fill, mark pending and send as one step with interrupts off: an
            // interrupt between the fill and the announcement whose handler calls
            // `target` too would find this slot full and never announced, and wait for
            // it forever (deadlock 2).
            let posted = seam.without_interrupts(|| {
                if slot
                    .compare_exchange(
                        core::ptr::null_mut(),
                        request,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
                {
                    return false;
                }
                seam.between_fill_and_announce();
                mailbox.pending.insert(me, Ordering::AcqRel);
                seam.send_ipi(target, Ipi::Call);
                true
            });
            if posted {
                break;
            }
            // Our previous request to `target` is still in the slot: we are an
            // interrupt handler that interrupted a call of ours to `target`. It is
            // announced, so `target` takes it; meanwhile serve and answer.
            let wait = Wait {
                kind: WaitKind::Slot,
                cpus: CpuSet::single(target),
            };
            if !waiting {
                self.begin_wait(me, wait);
                waiting = true;
            }
            if !(self.serve_mailbox(seam) | self.answer_shootdown(seam)) {
                seam.pause(wait, turns);
                turns += 1;
            }
        }
        if waiting {
            self.end_wait(me);
        }
        seam.changed();
    }

    /// Runs every request in the calling CPU's mailbox, with interrupts off; returns
    /// whether there was one. The CALL_FUNCTION interrupt handler calls this, and so do
    /// the waits of `call`. Only where [`Seam::may_serve_calls`] holds: a CPU inside a
    /// per-CPU critical section must not run a drain of the array it is changing.
    pub fn serve_mailbox<S: Seam>(&self, seam: &S) -> bool {
        debug_assert!(
            seam.may_serve_calls(),
            "serving calls inside a per-CPU critical section: see the rules in ipi.rs"
        );
        let me = seam.current_cpu();
        let mailbox = &self.mailboxes[me];
        if mailbox.pending.is_empty(Ordering::Relaxed) {
            return false;
        }
        let served = seam.without_interrupts(|| {
            let pending = mailbox.pending.take(Ordering::AcqRel);
            let mut served = false;
            for sender in pending.iter() {
                let request = mailbox.slots[sender].swap(core::ptr::null_mut(), Ordering::AcqRel);
                if request.is_null() {
                    continue;
                }
                served = true;
                // SAFETY: a non-null slot holds a request whose sender waits until we
                // are out of its `remaining`, so the request and its closure are alive
                // until the `remove` below, after which we touch neither; the
                // closure is `Sync`, so running it here while other CPUs run it too is
                // allowed.
                unsafe {
                    seam.run_call(&*(*request).function);
                    (*request).remaining.remove(me, Ordering::AcqRel);
                }
                Self::count(&self.served[me]);
            }
            served
        });
        if served {
            seam.changed();
        }
        served
    }
}
