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
