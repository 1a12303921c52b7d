//! What the PVH loader tells the kernel: the memory map, the command line, the RSDP.
//!
//! QEMU places an `hvm_start_info` structure (Xen's `arch-x86/hvm/start_info.h`) in
//! low memory and passes its physical address in `ebx`. The structure, its memory
//! map and the command line sit in RAM that the memory map reports as usable, so
//! [`BootInfo::read`] copies everything the kernel needs into its own storage before
//! any of that memory is handed to an allocator.

use core::fmt;

/// `hvm_start_info.magic`: "xEn3" with the high bit of the last byte set.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Memory-map entries the kernel keeps; QEMU produces fewer than ten.
const MAX_REGIONS: usize = 32;
/// Bytes of command line the kernel keeps.
const MAX_CMDLINE: usize = 512;

#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// The type of a memory-map entry (the E820 numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Ram,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Unusable,
    Other(u32),
}

impl From<u32> for RegionKind {
    fn from(kind: u32) -> Self {
        match kind {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            other => Self::Other(other),
        }
    }
}

/// One entry of the physical memory map: `[start, start + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub size: u64,
    pub kind: RegionKind,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#014x} - {:#014x}) {:>10} KiB  {:?}",
            self.start,
            self.end(),
            self.size / 1024,
            self.kind
        )
    }
}

/// Why the start info could not be used.
#[derive(Debug)]
pub enum BootInfoError {
    NullPointer,
    BadMagic(#[allow(dead_code, reason = "printed by the panic message")] u32),
}

/// The kernel's own copy of what the loader handed over.
pub struct BootInfo {
    regions: [Region; MAX_REGIONS],
    region_count: usize,
    /// Entries beyond `MAX_REGIONS` that had to be dropped (reported at boot).
    pub regions_dropped: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The loader's command line was longer than the kernel's buffer: the rest is lost.
    pub cmdline_cut: bool,
    /// Bytes of the command line that were not UTF-8 (or a character cut by the end of
    /// the buffer), replaced by `?` so that the rest of the line still counts.
    pub cmdline_replaced: usize,
    /// Physical address of the ACPI RSDP, when the loader knows it.
    pub rsdp: Option<u64>,
}

impl BootInfo {
    /// Copies the start info, its memory map (sorted by address) and the command line.
    ///
    /// # Safety
    ///
    /// `start_info` must be the physical address QEMU passed in `ebx`, and physical
    /// memory must still be identity-mapped (true during early boot), so that the
    /// structures it points to can be read at their physical addresses.
    pub unsafe fn read(start_info: u64) -> Result<Self, BootInfoError> {
        if start_info == 0 {
            return Err(BootInfoError::NullPointer);
        }
        // SAFETY: the caller guarantees the address is the loader's start info,
        // readable through the identity map; the structure has no invalid bit
        // patterns, and is read by value (unaligned reads cost nothing here).
        let info = unsafe { core::ptr::read_unaligned(start_info as *const HvmStartInfo) };
        if info.magic != START_INFO_MAGIC {
            return Err(BootInfoError::BadMagic(info.magic));
        }
        let mut boot = BootInfo {
            regions: [Region {
                start: 0,
                size: 0,
                kind: RegionKind::Reserved,
            }; MAX_REGIONS],
            region_count: 0,
            regions_dropped: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            cmdline_cut: false,
            cmdline_replaced: 0,
            rsdp: (info.rsdp_paddr != 0).then_some(info.rsdp_paddr),
        };
        // Version 0 of the structure has no memory map; QEMU always sends version 1.
        if info.version >= 1 && info.memmap_paddr != 0 {
            let entries = info.memmap_paddr as *const HvmMemmapEntry;
            for i in 0..info.memmap_entries as usize {
                // SAFETY: the loader says `memmap_entries` entries start at
                // `memmap_paddr`; the identity map makes them readable.
                let entry = unsafe { core::ptr::read_unaligned(entries.add(i)) };
                if entry.size == 0 {
                    continue;
                }
                let region = Region {
                    start: entry.addr,
                    size: entry.size,
                    kind: entry.kind.into(),
                };
                if boot.region_count == MAX_REGIONS {
                    boot.regions_dropped += 1;
                } else {
                    boot.regions[boot.region_count] = region;
                    boot.region_count += 1;
                }
            }
            boot.regions[..boot.region_count].sort_unstable_by_key(|region| region.start);
        }
        if info.cmdline_paddr != 0 {
            let cmdline = info.cmdline_paddr as *const u8;
            while boot.cmdline_len < MAX_CMDLINE - 1 {
                // SAFETY: a NUL-terminated string at `cmdline_paddr`, identity-mapped;
                // reading stops at the terminator or at the kernel's buffer size.
                let byte = unsafe { cmdline.add(boot.cmdline_len).read() };
                if byte == 0 {
                    break;
                }
                boot.cmdline[boot.cmdline_len] = byte;
                boot.cmdline_len += 1;
            }
            // SAFETY: as above; `cmdline_len` bytes were read without meeting the NUL.
            boot.cmdline_cut = boot.cmdline_len == MAX_CMDLINE - 1
                && unsafe { cmdline.add(boot.cmdline_len).read() } != 0;
            boot.cmdline_replaced = replace_non_utf8(&mut boot.cmdline[..boot.cmdline_len]);
        }
        Ok(boot)
    }

    /// Every entry of the memory map, sorted by start address.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.region_count]
    }

    /// The RAM entries only.
    pub fn ram(&self) -> impl Iterator<Item = &Region> + '_ {
        self.regions()
            .iter()
            .filter(|region| region.kind == RegionKind::Ram)
    }

    /// The kernel command line (`-append` in QEMU), "" when there is none; bytes that
    /// were not UTF-8 read as `?` ([`cmdline_replaced`](Self::cmdline_replaced)).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len])
            .expect("the command line was made valid UTF-8 when it was copied")
    }
}

/// Replaces every byte of `line` that is not part of a valid UTF-8 character by `?`
/// (a character cut by the end of the line included) and returns how many there were.
/// Everything valid stays as it was, so one bad byte costs one word, not the line.
fn replace_non_utf8(line: &mut [u8]) -> usize {
    let mut replaced = 0;
    let mut at = 0;
    while let Err(error) = core::str::from_utf8(&line[at..]) {
        let bad_start = at + error.valid_up_to();
        let bad_len = error.error_len().unwrap_or(line.len() - bad_start);
        line[bad_start..bad_start + bad_len].fill(b'?');
        replaced += bad_len;
        at = bad_start + bad_len;
    }
    replaced
}
