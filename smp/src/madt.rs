//! Which CPUs exist: the processor entries of the ACPI MADT.
//!
//! The firmware describes every processor in the MADT ("APIC" table), one entry
//! each: a *Local APIC* entry (8-bit APIC ID) or, for APIC IDs of 255 and up, a
//! *Local x2APIC* entry (32-bit ID; QEMU writes those only for such IDs). Entries
//! may be disabled; a disabled entry that is not "online capable" can never be
//! started, one that is could be hot-added later: both are skipped here, and said
//! so. The `acpi` crate finds and checks the tables; this module walks the entries.

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use crate::MAX_CPUS;

/// MADT processor flags: bit 0 "enabled", bit 1 "online capable".
const FLAG_ENABLED: u32 = 1 << 0;
const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;

/// Lets the `acpi` crate read tables through the kernel's direct map of physical
/// memory: "mapping" is adding the offset.
#[derive(Clone, Copy, Debug)]
pub struct DirectMap {
    pub phys_offset: u64,
}

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = (self.phys_offset + physical_address as u64) as *mut T;
        // SAFETY: the kernel direct-maps every firmware range below 4 GiB, where
        // the ACPI tables live, so `virt` is valid for `size` bytes; it is not null
        // because the offset is in the upper half.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new(virt).expect("direct-map addresses are not null"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Why a MADT entry was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Disabled and not online capable: this processor cannot be used.
    Disabled,
    /// Disabled but online capable: it could be hot-added, which this kernel does not do.
    NotOnline,
}

/// One processor entry of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuEntry {
    pub apic_id: u32,
    pub processor_uid: u32,
    /// Whether it came from a Local x2APIC entry.
    pub x2apic_entry: bool,
}

/// The processors to start, and the entries left out.
#[derive(Debug)]
pub struct CpuList {
    usable: [Option<CpuEntry>; MAX_CPUS],
    usable_count: usize,
    skipped: [Option<(CpuEntry, SkipReason)>; MAX_CPUS],
    skipped_count: usize,
    /// Skipped entries that did not fit in `skipped`.
    pub skipped_uncounted: usize,
    /// Enabled processors beyond the first `MAX_CPUS`: counted, not listed, so that the
    /// kernel reports them once (and fails the run) rather than once each.
    pub beyond_max_cpus: usize,
}

impl CpuList {
    const fn new() -> Self {
        Self {
            usable: [None; MAX_CPUS],
            usable_count: 0,
            skipped: [None; MAX_CPUS],
            skipped_count: 0,
            skipped_uncounted: 0,
            beyond_max_cpus: 0,
        }
    }

    fn add(&mut self, entry: CpuEntry, flags: u32) {
        let reason = if flags & FLAG_ENABLED == 0 {
            Some(if flags & FLAG_ONLINE_CAPABLE != 0 {
                SkipReason::NotOnline
            } else {
                SkipReason::Disabled
            })
        } else if self.usable_count == MAX_CPUS {
            self.beyond_max_cpus += 1;
            return;
        } else {
            None
        };
        match reason {
            None => {
                self.usable[self.usable_count] = Some(entry);
                self.usable_count += 1;
            }
            Some(reason) if self.skipped_count < MAX_CPUS => {
                self.skipped[self.skipped_count] = Some((entry, reason));
                self.skipped_count += 1;
            }
            Some(_) => self.skipped_uncounted += 1,
        }
    }

    /// The usable processors, in MADT order (the BSP is not necessarily first).
    pub fn usable(&self) -> impl Iterator<Item = CpuEntry> + '_ {
        self.usable[..self.usable_count].iter().flatten().copied()
    }

    /// The entries left out, with the reason.
    pub fn skipped(&self) -> impl Iterator<Item = (CpuEntry, SkipReason)> + '_ {
        self.skipped[..self.skipped_count].iter().flatten().copied()
    }
}

/// Why the CPUs could not be listed.
#[derive(Debug)]
pub enum MadtError {
    /// No RSDP from the loader, and none found in the BIOS areas.
    Acpi(acpi::AcpiError),
}

/// Reads the MADT. `rsdp` is the loader's RSDP address, if it gave one; without it
/// the BIOS areas (EBDA, 0xE0000-0xFFFFF) are scanned.
///
/// # Safety
///
/// The direct map at `handler.phys_offset` must cover the RSDP, the BIOS areas and
/// the ACPI tables, and those must be the firmware's (not reused memory).
pub unsafe fn read_cpus(handler: DirectMap, rsdp: Option<u64>) -> Result<CpuList, MadtError> {
    // SAFETY: the caller guarantees the tables are mapped and intact.
    let tables = unsafe {
        match rsdp {
            Some(address) => AcpiTables::from_rsdp(handler, address as usize),
            None => AcpiTables::search_for_rsdp_bios(handler),
        }
    }
    .map_err(MadtError::Acpi)?;
    let madt = tables.find_table::<Madt>().map_err(MadtError::Acpi)?;
    let mut cpus = CpuList::new();
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(local) => {
                // The structs are packed: copy the fields out before using them.
                let (apic_id, uid, flags) = (local.apic_id, local.processor_id, local.flags);
                let entry = CpuEntry {
                    apic_id: apic_id.into(),
                    processor_uid: uid.into(),
                    x2apic_entry: false,
                };
                cpus.add(entry, flags);
            }
            MadtEntry::LocalX2Apic(local) => {
                let (apic_id, uid, flags) = (local.x2apic_id, local.processor_uid, local.flags);
                cpus.add(
                    CpuEntry {
                        apic_id,
                        processor_uid: uid,
                        x2apic_entry: true,
                    },
                    flags,
                );
            }
            _ => {}
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(apic_id: u32) -> CpuEntry {
        CpuEntry {
            apic_id,
            processor_uid: apic_id,
            x2apic_entry: false,
        }
    }

    #[test]
    fn enabled_entries_are_usable_and_disabled_ones_say_why() {
        let mut list = CpuList::new();
        list.add(cpu(0), FLAG_ENABLED);
        list.add(cpu(1), 0);
        list.add(cpu(2), FLAG_ONLINE_CAPABLE);
        list.add(cpu(3), FLAG_ENABLED | FLAG_ONLINE_CAPABLE);
        assert_eq!(list.usable().map(|c| c.apic_id).collect::<Vec<_>>(), [0, 3]);
        assert_eq!(
            list.skipped().collect::<Vec<_>>(),
            [
                (cpu(1), SkipReason::Disabled),
                (cpu(2), SkipReason::NotOnline)
            ]
        );
    }

    #[test]
    fn processors_beyond_max_cpus_are_counted_not_dropped_silently() {
        let mut list = CpuList::new();
        for id in 0..MAX_CPUS as u32 + 2 {
            list.add(cpu(id), FLAG_ENABLED);
        }
        list.add(cpu(400), 0);
        assert_eq!(list.usable().count(), MAX_CPUS);
        assert_eq!(list.beyond_max_cpus, 2);
        // Disabled entries are still listed with their reason, not counted as too many.
        assert_eq!(list.skipped().count(), 1);
    }
}
