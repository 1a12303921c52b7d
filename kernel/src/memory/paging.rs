//! The kernel's page tables.
//!
//! The boot code left a crude identity map of the first GiB, every page writable
//! and executable. [`init`] replaces it with tables built by the `x86_64` crate:
//!
//! * the kernel image, identity-mapped with 4 KiB pages and the permissions of each
//!   section: text read-only + executable, rodata read-only + no-execute, data and
//!   bss read-write + no-execute; the guard page under each kernel stack is left
//!   unmapped so that an overflow faults;
//! * the direct map: all RAM, and the firmware ranges below 4 GiB, at
//!   [`PHYS_OFFSET`](super::PHYS_OFFSET) + physical address, with 2 MiB pages,
//!   read-write + no-execute. The page allocator and the page-table code reach
//!   physical frames through it.
//!
//! Besides these, only the local APIC registers (uncached) and the AP trampoline page
//! (identity, executable) are mapped: address 0 and the rest of low memory fault.
//!
//! After [`init`], [`KERNEL_PAGE_TABLE`] holds the live tables for later mappings.

use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::boot_frames::BootFrameAllocator;
use super::{KernelImage, MMIO_OFFSET, PAGE_SIZE, PHYS_OFFSET};
use crate::pvh::{BootInfo, RegionKind};

const HUGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// The live kernel page tables, reached through the direct map.
pub static KERNEL_PAGE_TABLE: Mutex<Option<OffsetPageTable<'static>>> = Mutex::new(None);

/// What [`init`] built, for the boot log and the self-checks.
#[derive(Debug)]
pub struct PagingSummary {
    pub kernel_pages: usize,
    pub guard_pages: usize,
    pub direct_map_bytes: u64,
    pub table_frames: (u64, u64),
    /// Physical address of the PML4 (what CR3 holds).
    pub pml4: u64,
    pub no_execute: bool,
}

/// Why the kernel page tables could not be built.
#[derive(Debug)]
pub enum PagingError {
    /// The boot frame allocator ran dry (no RAM above the kernel below 1 GiB).
    OutOfFrames,
    /// Two mappings claimed the same page (at this frame): a bug in the layout.
    Overlap(#[allow(dead_code, reason = "printed by the panic message")] u64),
}

impl<S: x86_64::structures::paging::PageSize> From<MapToError<S>> for PagingError {
    fn from(error: MapToError<S>) -> Self {
        match error {
            MapToError::FrameAllocationFailed => Self::OutOfFrames,
            MapToError::ParentEntryHugePage => Self::Overlap(0),
            MapToError::PageAlreadyMapped(frame) => Self::Overlap(frame.start_address().as_u64()),
        }
    }
}

/// Pages to map besides the kernel image and the direct map.
#[derive(Debug)]
pub struct ExtraPages<'a> {
    /// Pages inside the kernel image to leave unmapped (under each stack).
    pub guard_pages: &'a [u64],
    /// Device register pages (the local APIC), mapped uncached at their physical
    /// address plus `MMIO_OFFSET` (not in the direct map, whose 2 MiB write-back
    /// pages may cover them).
    pub mmio: &'a [u64],
    /// Low-memory pages identity-mapped executable (the AP trampoline: the
    /// instruction that turns paging on is fetched from it).
    pub identity_executable: &'a [u64],
}

/// Builds the kernel page tables and switches to them.
///
/// # Safety
///
/// Must run once, on the bootstrap processor, while the boot identity map of the
/// first GiB is active and nothing holds pointers into low memory other than the
/// kernel image (the PVH structures must have been copied already).
pub unsafe fn init(boot: &BootInfo, extra: &ExtraPages<'_>) -> Result<PagingSummary, PagingError> {
    let guard_pages = extra.guard_pages;
    let image = KernelImage::get();
    let no_execute = crate::cpu::has_nx();
    if no_execute {
        // SAFETY: EFER.NXE only makes bit 63 of page-table entries meaningful; the
        // boot tables never set it, so nothing changes for the live mappings.
        unsafe { Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    let nx = if no_execute {
        Flags::NO_EXECUTE
    } else {
        Flags::empty()
    };

    let ram_end = boot
        .ram()
        .find(|region| region.start <= image.end && image.end < region.end())
        .map_or(image.end, |region| region.end());
    let mut frames = BootFrameAllocator::new(image.end, ram_end);

    let pml4_frame: PhysFrame = frames.allocate_frame().ok_or(PagingError::OutOfFrames)?;
    // SAFETY: the frame was just allocated and zeroed, and is identity-mapped, so it
    // is a valid empty page table that nothing else references.
    let pml4 = unsafe { &mut *(pml4_frame.start_address().as_u64() as *mut PageTable) };
    // While building, table frames are reached through the boot identity map, i.e.
    // with a physical-memory offset of 0.
    // SAFETY: every frame the mapper will follow comes from `frames`, below 1 GiB,
    // identity-mapped by the active boot tables.
    let mut mapper = unsafe { OffsetPageTable::new(pml4, VirtAddr::new(0)) };

    let sections = [
        (image.text, Flags::PRESENT),
        (image.rodata, Flags::PRESENT | nx),
        (image.data, Flags::PRESENT | Flags::WRITABLE | nx),
    ];
    let mut kernel_pages = 0;
    for ((start, end), flags) in sections {
        for addr in (start..end).step_by(PAGE_SIZE) {
            if guard_pages.contains(&addr) {
                continue;
            }
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(addr));
            let frame = PhysFrame::containing_address(PhysAddr::new(addr));
            // SAFETY: identity-mapping the kernel's own image with the permissions
            // of its sections creates no aliasing beyond the direct map.
            unsafe { mapper.map_to(page, frame, flags, &mut frames)? }.ignore();
            kernel_pages += 1;
        }
    }

    let mut direct_map_bytes = 0;
    let mut mapped_up_to = 0u64;
    // RAM anywhere, and below 4 GiB every range the firmware reports (ACPI tables,
    // BIOS data), which the ACPI code reads; device memory far above (QEMU reports
    // a reserved window at 1 TiB - 12 GiB) stays unmapped.
    let direct_mapped = boot
        .regions()
        .iter()
        .filter(|region| region.kind == RegionKind::Ram || region.end() <= 1 << 32);
    for region in direct_mapped {
        let start = (region.start / HUGE_PAGE_SIZE * HUGE_PAGE_SIZE).max(mapped_up_to);
        let end = region.end().next_multiple_of(HUGE_PAGE_SIZE);
        for phys in (start..end).step_by(HUGE_PAGE_SIZE as usize) {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(PHYS_OFFSET + phys));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(phys));
            let flags = Flags::PRESENT | Flags::WRITABLE | nx;
            // SAFETY: the direct map only aliases physical memory at an address no
            // other mapping uses; it is how the kernel reaches frames it owns.
            unsafe { mapper.map_to(page, frame, flags, &mut frames)? }.ignore();
            direct_map_bytes += HUGE_PAGE_SIZE;
        }
        mapped_up_to = mapped_up_to.max(end);
    }

    for &phys in extra.mmio {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(MMIO_OFFSET + phys));
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        let flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | nx;
        // SAFETY: device registers outside RAM, mapped once, uncached as device
        // memory must be; nothing else maps them.
        unsafe { mapper.map_to(page, frame, flags, &mut frames)? }.ignore();
    }
    for &phys in extra.identity_executable {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(phys));
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        // SAFETY: a low-memory page that the kernel reserves for start-up code;
        // identity-mapping it aliases only its direct-map address.
        unsafe { mapper.map_to(page, frame, Flags::PRESENT | Flags::WRITABLE, &mut frames)? }
            .ignore();
    }

    // SAFETY: the new tables map the kernel image at the addresses it runs at (the
    // code executing now, its stack and its statics), so execution continues; the
    // caller promises nothing else in the identity map is still referenced.
    unsafe { Cr3::write(pml4_frame, Cr3Flags::empty()) };

    // From now on the tables are reached through the direct map.
    // SAFETY: the PML4 frame is mapped at PHYS_OFFSET + its address, as is every
    // table frame (all come from RAM covered by the direct map), and the tables are
    // only ever used through KERNEL_PAGE_TABLE's lock from here on.
    let live = unsafe {
        let pml4 = &mut *((PHYS_OFFSET + pml4_frame.start_address().as_u64()) as *mut PageTable);
        OffsetPageTable::new(pml4, VirtAddr::new(PHYS_OFFSET))
    };
    *KERNEL_PAGE_TABLE.lock() = Some(live);

    Ok(PagingSummary {
        kernel_pages,
        guard_pages: guard_pages.len(),
        pml4: pml4_frame.start_address().as_u64(),
        direct_map_bytes,
        table_frames: frames.used(),
        no_execute,
    })
}

/// The physical address and flags behind a virtual address, if it is mapped.
pub fn translate(addr: u64) -> Option<(u64, Flags)> {
    let guard = KERNEL_PAGE_TABLE.lock();
    let table = guard.as_ref()?;
    match table.translate(VirtAddr::new(addr)) {
        TranslateResult::Mapped {
            frame,
            offset,
            flags,
        } => Some((frame.start_address().as_u64() + offset, flags)),
        TranslateResult::NotMapped | TranslateResult::InvalidFrameAddress(_) => None,
    }
}
