//! Multiprocessor support for the kernel: finding the CPUs in the ACPI MADT,
//! driving the local APIC (x2APIC or xAPIC), starting the application processors
//! through a real-mode trampoline, per-CPU data behind GS, and IPIs.
//!
//! Not written yet (the smp issue): until then the kernel runs on the bootstrap
//! processor alone, and the other CPUs QEMU creates stay in wait-for-SIPI.
#![no_std]
