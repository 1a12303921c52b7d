//! Time: the TSC and the local APIC timer, calibrated against the PIT.
//!
//! Neither the TSC nor the APIC timer tells its own frequency everywhere (QEMU's
//! TCG reports none in CPUID), so both are measured once, on the BSP, against
//! channel 2 of the 8254 PIT, whose input clock is fixed at 1.193182 MHz. Channel
//! 2 is the one whose output can be read back (port 0x61 bit 5) without an
//! interrupt. The start-up delays of the AP boot (10 ms after INIT, 200 us after
//! SIPI) and every time-out then use the calibrated TSC, not a spin count.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::lapic::LocalApic;

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 10;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// What calibration measured.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub tsc_hz: u64,
    /// APIC timer counts per second at divide-by-16.
    pub apic_timer_hz: u64,
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second (0 before [`calibrate`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds between two TSC readings.
pub fn tsc_to_ns(ticks: u64) -> u64 {
    (ticks as u128 * 1_000_000_000 / tsc_hz().max(1) as u128) as u64
}

/// Spins for at least `micros` microseconds (calibrated TSC).
pub fn delay_us(micros: u64) {
    let start = rdtsc();
    let ticks = tsc_hz() / 1_000_000 * micros;
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// A deadline `micros` from now, for [`expired`].
pub fn deadline_after_us(micros: u64) -> u64 {
    rdtsc() + tsc_hz() / 1_000_000 * micros
}

/// Whether the TSC has passed `deadline`.
pub fn expired(deadline: u64) -> bool {
    rdtsc() >= deadline
}

/// Measures the TSC and the APIC timer over 10 ms of PIT channel 2.
///
/// Must run with interrupts off, on one CPU, before any other CPU uses the PIT.
pub fn calibrate(lapic: &mut LocalApic) -> Calibration {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
    // SAFETY: ports 0x61, 0x42 and 0x43 are the PC speaker gate and PIT channel 2
    // on every PC; the speaker stays off (bit 1 clear) and nothing else uses
    // channel 2.
    let (tsc_ticks, apic_ticks) = unsafe {
        // Gate channel 2 off, speaker off; mode 0 (count down once), lo/hi byte.
        let speaker = gate.read() & !0x03;
        gate.write(speaker);
        command.write(0b1011_0000);
        channel2.write(count as u8);
        channel2.write((count >> 8) as u8);
        lapic.start_timer(u32::MAX, false);
        lapic.mask_timer();
        let apic_start = lapic.timer_count();
        let tsc_start = rdtsc();
        // Gate on: the count starts; OUT2 (bit 5) rises when it reaches zero.
        gate.write(speaker | 0x01);
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        let tsc_end = rdtsc();
        let apic_end = lapic.timer_count();
        gate.write(speaker);
        (tsc_end - tsc_start, apic_start.wrapping_sub(apic_end))
    };
    lapic.start_timer(0, false);
    let calibration = Calibration {
        tsc_hz: tsc_ticks * 1000 / CALIBRATION_MS,
        apic_timer_hz: apic_ticks as u64 * 1000 / CALIBRATION_MS,
    };
    TSC_HZ.store(calibration.tsc_hz, Ordering::Relaxed);
    calibration
}
