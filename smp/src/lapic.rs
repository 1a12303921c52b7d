//! One CPU's local APIC, in x2APIC mode when the CPU has it, xAPIC otherwise.
//!
//! The `x2apic` crate drives both modes: x2APIC through MSRs, xAPIC through the
//! 4 KiB register page at the physical address in `IA32_APIC_BASE` (normally
//! 0xFEE0_0000), which the kernel maps uncached and passes in. Two differences of
//! the xAPIC mode are handled here rather than by every caller: its ID register
//! and its IPI destination field keep the 8-bit APIC ID in bits 31-24.
//!
//! A [`LocalApic`] only ever touches the APIC of the CPU it runs on, so it is
//! neither `Send` nor `Sync` and lives in that CPU's per-CPU area.

use x2apic::lapic::{LocalApicBuilder, TimerDivide, TimerMode};

use crate::vectors;

/// Which register interface the local APIC runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    X2Apic,
    XApic,
}

/// The calling CPU's local APIC.
#[derive(Debug)]
pub struct LocalApic {
    inner: x2apic::lapic::LocalApic,
    mode: ApicMode,
}

/// Whether this CPU supports x2APIC mode (CPUID.1:ECX bit 21).
pub fn cpu_has_x2apic() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0
}

/// The physical address of the xAPIC register page, from `IA32_APIC_BASE`.
pub fn xapic_phys_base() -> u64 {
    // SAFETY: reading IA32_APIC_BASE has no side effects; every x86_64 CPU has it.
    unsafe { x2apic::lapic::xapic_base() }
}

impl LocalApic {
    /// Enables the calling CPU's local APIC with the timer masked, the spurious and
    /// error vectors of [`vectors`], and LINT0/LINT1 masked.
    ///
    /// # Safety
    ///
    /// `xapic_virt_base` must map the xAPIC register page uncached (it is only used
    /// when the CPU lacks x2APIC), and interrupts for [`vectors`] must have handlers.
    pub unsafe fn enable(xapic_virt_base: u64) -> Self {
        let mode = if cpu_has_x2apic() {
            ApicMode::X2Apic
        } else {
            ApicMode::XApic
        };
        let mut inner = LocalApicBuilder::new()
            .timer_vector(vectors::TIMER as usize)
            .error_vector(vectors::APIC_ERROR as usize)
            .spurious_vector(vectors::SPURIOUS as usize)
            .timer_mode(TimerMode::OneShot)
            .timer_divide(TimerDivide::Div16)
            .timer_initial(0)
            .set_xapic_base(xapic_virt_base)
            .build()
            .expect("all vectors and the xAPIC base are given");
        // SAFETY: the caller guarantees the register page and the handlers; the
        // crate's `enable` unmasks the timer, which is harmless with a zero count,
        // and it is masked again right after.
        unsafe {
            inner.enable();
            inner.disable_timer();
        }
        Self { inner, mode }
    }

    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// This CPU's APIC ID.
    pub fn id(&self) -> u32 {
        // SAFETY: reading the ID register has no side effects.
        let raw = unsafe { self.inner.id() };
        match self.mode {
            ApicMode::X2Apic => raw,
            ApicMode::XApic => raw >> 24,
        }
    }

    fn destination(&self, apic_id: u32) -> u32 {
        match self.mode {
            ApicMode::X2Apic => apic_id,
            ApicMode::XApic => {
                // The field has 8 bits (0xff: broadcast): a larger ID would lose its high
                // bits and reach another CPU. The kernel refuses such CPUs at boot.
                debug_assert!(apic_id < 0xff, "APIC ID {apic_id} needs x2APIC");
                apic_id << 24
            }
        }
    }

    /// Signals the end of the interrupt being handled.
    pub fn end_of_interrupt(&mut self) {
        // SAFETY: writing EOI retires the highest-priority in-service interrupt;
        // callers are interrupt handlers of APIC-delivered vectors.
        unsafe { self.inner.end_of_interrupt() };
    }

    /// Sends a fixed interrupt `vector` to the CPU with `apic_id`.
    pub fn send_ipi(&mut self, apic_id: u32, vector: u8) {
        let destination = self.destination(apic_id);
        // SAFETY: a fixed IPI only raises `vector` on the target, which has a
        // handler for every vector the kernel sends.
        unsafe { self.inner.send_ipi(vector, destination) };
        self.wait_for_delivery();
    }

    /// Sends INIT to the CPU with `apic_id` (it resets to wait-for-SIPI).
    ///
    /// # Safety
    ///
    /// The target must not be a running CPU of this kernel.
    pub unsafe fn send_init(&mut self, apic_id: u32) {
        let destination = self.destination(apic_id);
        // SAFETY: the caller guarantees the target is not in use.
        unsafe { self.inner.send_init_ipi(destination) };
        self.wait_for_delivery();
    }

    /// Sends a start-up IPI: the target starts in real mode at `page << 12`.
    ///
    /// # Safety
    ///
    /// The target must be in wait-for-SIPI and valid start-up code must be at the
    /// page.
    pub unsafe fn send_startup(&mut self, apic_id: u32, page: u8) {
        let destination = self.destination(apic_id);
        // SAFETY: the caller guarantees the code at `page` and the target's state.
        unsafe { self.inner.send_sipi(page, destination) };
        self.wait_for_delivery();
    }

    /// xAPIC mode only: waits until the ICR's delivery-status bit clears, so that
    /// the next write does not overwrite an IPI still being sent. (x2APIC has no
    /// such bit; the write to the ICR MSR is the send.)
    fn wait_for_delivery(&self) {
        if self.mode == ApicMode::XApic {
            // SAFETY: reading the ICR has no side effects.
            while unsafe { self.inner.get_ipi_delivery_status() } {
                core::hint::spin_loop();
            }
        }
    }

    /// Starts the timer counting down from `initial` (divide-by-16), once or
    /// periodically. Count 0 stops it.
    pub fn start_timer(&mut self, initial: u32, periodic: bool) {
        let mode = if periodic {
            TimerMode::Periodic
        } else {
            TimerMode::OneShot
        };
        // SAFETY: the timer only raises vectors::TIMER, which has a handler (the
        // caller of `enable` promised); reprogramming it has no other effect.
        unsafe {
            self.inner.disable_timer();
            self.inner.set_timer_divide(TimerDivide::Div16);
            self.inner.set_timer_mode(mode);
            self.inner.set_timer_initial(initial);
            self.inner.enable_timer();
        }
    }

    /// Masks the timer interrupt; the count goes on but raises nothing.
    pub fn mask_timer(&mut self) {
        // SAFETY: masking the LVT timer entry has no other effect.
        unsafe { self.inner.disable_timer() };
    }

    /// The timer's current count.
    pub fn timer_count(&self) -> u32 {
        // SAFETY: reading the current-count register has no side effects.
        unsafe { self.inner.timer_current() }
    }
}
