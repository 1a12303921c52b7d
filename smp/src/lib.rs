//! Multiprocessor support: find the CPUs, start them, let them talk.
//!
//! * [`madt`]: the CPUs the firmware lists in the ACPI MADT (via the `acpi` crate).
//! * [`lapic`]: each CPU's local APIC (`x2apic` crate), in x2APIC mode when the CPU
//!   has it and in xAPIC (MMIO) mode otherwise.
//! * [`timer`]: the TSC and the APIC timer, calibrated against the PIT.
//! * [`trampoline`]: the real-mode -> long-mode code an application processor (AP)
//!   starts in, and the INIT-SIPI-SIPI sequence that starts it.
//! * [`percpu`]: each CPU's own data, reached through the GS base register.
//! * [`ipi`]: `on_each_cpu` / `on_cpu`, Linux 2.4's `smp_call_function`.
//! * [`tlb`]: TLB shootdowns, so that an unmapped heap page is forgotten everywhere.
//! * [`irq_lock`]: a spinlock whose guard keeps local interrupts off.
//!
//! The kernel wires these together (`kernel/src/smp_boot.rs`): it owns the page
//! tables, the IDT, the stacks and the GDTs, and hands this crate what it needs.
#![cfg_attr(not(test), no_std)]

pub mod ipi;
pub mod irq_lock;
pub mod lapic;
pub mod madt;
pub mod percpu;
pub mod timer;
pub mod tlb;
pub mod trampoline;

/// The most CPUs the kernel supports (a `u64` bitmask of CPUs fits in one word).
pub const MAX_CPUS: usize = 64;

/// Interrupt vectors used by this crate.
pub mod vectors {
    /// The local APIC timer.
    pub const TIMER: u8 = 0x20;
    /// "Run the queued function calls" (see `ipi`).
    pub const CALL_FUNCTION: u8 = 0xf0;
    /// "Flush your TLB" (see `tlb`).
    pub const TLB_SHOOTDOWN: u8 = 0xf1;
    /// Local APIC internal errors.
    pub const APIC_ERROR: u8 = 0xfe;
    /// Spurious interrupts: no EOI.
    pub const SPURIOUS: u8 = 0xff;
}
