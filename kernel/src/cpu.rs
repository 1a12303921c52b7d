//! Facts about the CPU the code is running on, read with CPUID.

use core::arch::x86_64::__cpuid;

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
