//! Multiprocessor support: find the CPUs, start them, let them talk.
//!
//! * [`madt`]: the CPUs the firmware lists in the ACPI MADT (via the `acpi` crate).
//! * [`lapic`]: each CPU's local APIC (`x2apic` crate), in x2APIC mode when the CPU
//!   has it and in xAPIC (MMIO) mode otherwise.
//! * [`timer`]: the TSC and the APIC timer, calibrated against the PIT.
//! * [`trampoline`]: the real-mode -> long-mode code an application processor (AP)
//!   starts in, and the INIT-SIPI-SIPI sequence that starts it.
//! * [`percpu`]: each CPU's own data, reached through the GS base register.
//! * [`protocol`]: the cross-CPU call and shootdown protocol without the hardware
//!   (mailboxes, generations, the waits), over a seam; built hosted and under loom too.
//! * [`ipi`]: `on_each_cpu` / `on_cpu`, Linux 2.4's `smp_call_function`, and the rules
//!   that keep cross-CPU calls and shootdowns free of deadlock.
//! * [`tlb`]: TLB shootdowns, so that an unmapped heap page is forgotten everywhere.
//!
//! The kernel wires these together (`kernel/src/smp_boot.rs`): it owns the page
//! tables, the IDT, the stacks and the GDTs, and hands this crate what it needs.
//!
//! Under `--cfg loom` only [`protocol`] is built (with loom's atomics), for the models
//! in `loom-tests/`: the rest is hardware.
#![cfg_attr(not(test), no_std)]

#[cfg(not(loom))]
pub mod ipi;
#[cfg(not(loom))]
#[cfg(not(loom))]
pub mod lapic;
#[cfg(not(loom))]
pub mod madt;
#[cfg(not(loom))]
pub mod percpu;
pub mod protocol;
#[cfg(not(loom))]
pub mod timer;
#[cfg(not(loom))]
pub mod tlb;
#[cfg(not(loom))]
pub mod trampoline;

/// The most CPUs the kernel supports: 255, QEMU TCG's most vCPUs. Their APIC IDs are
/// then 0..=254, which xAPIC's 8-bit destination field reaches (255 is its broadcast);
/// larger IDs need x2APIC (see `smp_boot.rs`). CPU sets are [`protocol::CpuSet`]s.
pub const MAX_CPUS: usize = 255;

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
