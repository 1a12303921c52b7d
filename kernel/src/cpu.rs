//! The CPU the code is running on: facts read with CPUID, and [`Cli`], the kernel's
//! side of `mm`'s platform seam for interrupts and CPUs (`mm::platform`).

use core::arch::x86_64::__cpuid;

use mm::platform::{CpuLocal, InterruptControl};

/// The initial APIC ID of the calling CPU (CPUID leaf 1, EBX bits 31-24). Good
/// enough to name a CPU in a crash report before per-CPU data exists.
pub fn apic_id() -> u32 {
    __cpuid(1).ebx >> 24
}

/// Whether the CPU supports the no-execute page bit (CPUID 0x8000_0001, EDX bit 20).
pub fn has_nx() -> bool {
    max_extended_leaf() >= 0x8000_0001 && __cpuid(0x8000_0001).edx & (1 << 20) != 0
}

/// Whether the local APIC can run in x2APIC mode (CPUID leaf 1, ECX bit 21).
pub fn has_x2apic() -> bool {
    __cpuid(1).ecx & (1 << 21) != 0
}

fn max_extended_leaf() -> u32 {
    __cpuid(0x8000_0000).eax
}

/// Makes ordinary memory write-back cacheable.
///
/// Without firmware (QEMU's PVH entry runs no BIOS) the MTRRs are left disabled,
/// which makes *all* physical memory uncacheable; under KVM that is honoured and
/// every RAM access goes to memory. Enabling the MTRRs with write-back as the
/// default type fixes that; device pages stay uncached through their page-table
/// entries (PCD/PWT select an uncached PAT entry, which wins over the MTRR type).
/// Each CPU has its own MTRRs, so every CPU calls this.
pub fn enable_write_back_caching() {
    const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
    const MTRR_ENABLE: u64 = 1 << 11;
    const WRITE_BACK: u64 = 6;
    if __cpuid(1).edx & (1 << 12) == 0 {
        return; // no MTRRs: nothing to enable
    }
    let mut def_type = x86_64::registers::model_specific::Msr::new(IA32_MTRR_DEF_TYPE);
    // SAFETY: the CPU has MTRRs (CPUID checked). No variable or fixed ranges are
    // enabled here, so the whole address space becomes write-back, the type RAM
    // needs; the only device the kernel maps (the local APIC) is mapped with
    // PCD|PWT, which is uncacheable regardless of the MTRR type.
    unsafe { def_type.write(MTRR_ENABLE | WRITE_BACK) };
}

/// `pushf; cli` ... restore: what every slab lock disables in the kernel.
#[derive(Debug)]
pub struct Cli;

// SAFETY: `cli` masks every maskable interrupt on this CPU, so no interrupt handler
// (the only code that could re-enter `mm` on this CPU) runs until `restore`.
unsafe impl InterruptControl for Cli {
    type State = bool;

    fn disable() -> bool {
        let enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        // A critical section is open: no cross-CPU call may be made or served on this
        // CPU until it closes (rules 2 and 3 in `smp/src/ipi.rs`; counted in debug builds).
        smp::percpu::enter_critical();
        enabled
    }

    unsafe fn restore(enabled: bool) {
        smp::percpu::leave_critical();
        if enabled {
            x86_64::instructions::interrupts::enable();
        }
    }

    /// Before the APs start no CPU can wait for this one, so the boot code may take the
    /// chain and tuning locks with interrupts still off (the APIC is not up yet).
    fn can_take_ipis() -> bool {
        x86_64::instructions::interrupts::are_enabled() || smp::percpu::cpu_count() <= 1
    }

    /// A CPU spinning on an allocator lock with interrupts off cannot take the TLB
    /// shootdown IPI, and the lock holder may be waiting for exactly that answer (rule 1
    /// in `smp/src/ipi.rs`). It never serves calls here (rule 2).
    fn relax() {
        smp::tlb::answer();
        core::hint::spin_loop();
    }
}

// SAFETY: `current_cpu` is the dense index from the GS base (set on the BSP before
// the heap starts, on each AP before it runs anything else), below `MAX_CPUS`, and
// stays put while interrupts are off (nothing migrates between CPUs here: each CPU
// runs its own code). `on_each_cpu` runs `f` on every online CPU, as that CPU,
// with its interrupts off, and waits for all: every CPU that can hold a per-CPU
// array is online (an AP allocates nothing before it reports online).
unsafe impl CpuLocal for Cli {
    const CPUS: usize = smp::MAX_CPUS;

    fn current_cpu() -> usize {
        smp::percpu::current_cpu()
    }

    fn on_each_cpu(f: &(dyn Fn(usize) + Sync)) {
        smp::ipi::on_each_cpu(&|| f(smp::percpu::current_cpu()));
    }
}

/// A spinlock for kernel data that interrupt handlers also touch: `mm`'s lock, taken
/// with interrupts off through [`Cli`]. One kind of interrupt-safe lock in the whole
/// kernel, the allocator's: while it spins it answers TLB shootdowns (`Cli::relax`),
/// and it counts as a critical section for the cross-CPU call rules of `smp::ipi`.
pub type IrqLock<T> = mm::sync::SpinLock<T, Cli>;
