//! The kernel side of `mm`: its platform (page tables, TLB shootdowns), the hand-over
//! of RAM to the page allocator, and the kernel heap window.
//!
//! What the page allocator gets: every RAM frame of the PVH memory map, except
//!
//! * page 0 (real-mode IVT and BIOS data area: the EBDA pointer the ACPI scan reads),
//! * the AP trampoline page,
//! * the kernel image and the page-table frames built at boot,
//! * the page descriptors themselves (carved out of RAM right here).
//!
//! The kernel heap window, where the range allocator hands out virtual ranges, starts
//! one page below the kernel image and spans twice the RAM (at least 256 MiB) of the
//! lower half. As in SOS the
//! kernel image sits *inside* the window and is registered as a used range right
//! after the bootstrap; the page just below it hosts the first slab of the range
//! cache (see `mm::bootstrap`). Everything below the window, address 0 included,
//! stays unmapped.
//!
//! TLB: `unmap_page` flushes the entry on the calling CPU only; `mm` then calls
//! `flush_remote_tlbs` once per range (or slab of its range cache), before the
//! address can be handed out again, and that is a shootdown IPI to every other
//! online CPU (`smp::tlb`).

use core::mem::{MaybeUninit, size_of};
use core::sync::atomic::{AtomicUsize, Ordering};

use mm::{
    Heap, MapError, PAGE_SIZE, PageAllocator, PageDescriptor, PhysAddr, PhysRegion, Platform,
};
use spin::Once;
use x86_64::structures::paging::mapper::{MapToError, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, Page, PageTableFlags as Flags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr as X86PhysAddr, VirtAddr};

use crate::memory::paging::{KERNEL_PAGE_TABLE, PagingSummary};
use crate::memory::{KernelImage, PHYS_OFFSET};
use crate::pvh::BootInfo;

/// The kernel heap window is twice the RAM, and at least this big: room to map
/// every frame, with space to spare against fragmentation. (The slab layer keeps a
/// 16-byte owner entry per page of the window, so its size is not free: 2x RAM costs
/// 1/128 of RAM.)
const MIN_WINDOW_BYTES: usize = 256 << 20;

/// The least free RAM the kernel starts with: the slab layer's owner table for the
/// smallest window (1.5 MiB), the first slabs of the caches, the per-CPU arrays and the
/// self-tests. Measured: at `-smp 64` with the stress, 3.2 MiB free suffice and 2.2 MiB
/// do not (the slab self-test runs out); this leaves a margin.
const MIN_FREE_BYTES: usize = 4 << 20;

/// Stops the boot with a message that says what is wrong with the machine, rather than
/// a panic further on (out of memory in a self-test, an assertion far from the cause).
fn refuse(reason: core::fmt::Arguments<'_>) -> ! {
    crate::println!("kernel: FAILED: {reason}");
    crate::qemu::exit(crate::qemu::ExitCode::Failure)
}

/// The kernel's memory allocator (layers 3 and 4).
pub static HEAP: Once<Heap<'static, KernelPlatform>> = Once::new();

/// `mm`'s view of this machine: the kernel page tables.
#[derive(Debug)]
pub struct KernelPlatform {
    no_execute: bool,
}

/// Frames taken for page-table levels of the heap window. The kernel never frees
/// page tables, so these stay allocated when every range is gone.
pub static TABLE_FRAMES: AtomicUsize = AtomicUsize::new(0);

/// Hands the frames `mm` supplies for new page-table levels to the `x86_64` mapper.
struct TableFrames<'a>(&'a mut dyn FnMut() -> Option<PhysAddr>);

// SAFETY: the frames come from mm's page allocator, allocated for this purpose and
// never handed out again; they are zeroed before the mapper links them in (below).
unsafe impl FrameAllocator<Size4KiB> for TableFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let PhysAddr(phys) = (self.0)()?;
        TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a frame just allocated to us, direct-mapped, used by no one else.
        unsafe { core::ptr::write_bytes((PHYS_OFFSET + phys) as *mut u8, 0, PAGE_SIZE) };
        Some(PhysFrame::containing_address(X86PhysAddr::new(phys)))
    }
}

// SAFETY: `map_page` installs a present, writable, no-execute 4 KiB mapping of exactly
// the frame given, under the page-table lock; `unmap_page` removes it and flushes the
// TLB entry; `translate` walks the same live tables; the window's addresses are used
// by nothing but `mm` (the kernel image inside it is reserved, never mapped by mm).
unsafe impl Platform for KernelPlatform {
    type Interrupts = crate::cpu::Cli;

    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError> {
        let mut table = KERNEL_PAGE_TABLE.lock();
        let table = table
            .as_mut()
            .expect("paging is initialised before the heap");
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt as u64));
        let frame = PhysFrame::containing_address(X86PhysAddr::new(phys.0));
        let mut flags = Flags::PRESENT | Flags::WRITABLE;
        if self.no_execute {
            flags |= Flags::NO_EXECUTE;
        }
        // SAFETY: the frame belongs to mm, which maps it here only; the page is in
        // the heap window, which no other mapping uses.
        match unsafe { table.map_to(page, frame, flags, &mut TableFrames(alloc_table_frame)) } {
            // The page was not mapped before, so no CPU can have a stale entry for it.
            Ok(flush) => flush.ignore(),
            Err(MapToError::FrameAllocationFailed) => return Err(MapError::OutOfMemory),
            Err(MapToError::PageAlreadyMapped(_) | MapToError::ParentEntryHugePage) => {
                return Err(MapError::AlreadyMapped);
            }
        }
        Ok(())
    }

    fn unmap_page(&self, virt: usize) -> Option<PhysAddr> {
        let mut table = KERNEL_PAGE_TABLE.lock();
        let table = table
            .as_mut()
            .expect("paging is initialised before the heap");
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt as u64));
        match table.unmap(page) {
            Ok((frame, flush)) => {
                flush.flush();
                Some(PhysAddr(frame.start_address().as_u64()))
            }
            Err(UnmapError::PageNotMapped | UnmapError::ParentEntryHugePage) => None,
            Err(UnmapError::InvalidFrameAddress(_)) => None,
        }
    }

    fn translate(&self, virt: usize) -> Option<PhysAddr> {
        crate::memory::paging::translate(virt as u64).map(|(phys, _)| PhysAddr(phys))
    }

    fn flush_remote_tlbs(&self) {
        smp::tlb::shootdown();
    }
}

/// Hands RAM to the page allocator and bootstraps the range allocator.
///
/// # Safety
///
/// Once, on the BSP, after paging is up, before anything else allocates frames.
pub unsafe fn init(boot: &BootInfo, paging: &PagingSummary) {
    let image = KernelImage::get();
    let mut regions = [PhysRegion::new(0, 0); 32];
    let mut count = 0;
    for region in boot.ram() {
        regions[count] = PhysRegion::new(region.start, region.end());
        count += 1;
    }
    let regions = &regions[..count];

    // The descriptor array goes right after the boot page-table frames, in the RAM
    // region that holds the kernel (it is the largest one below 4 GiB on QEMU).
    let bytes = PageAllocator::descriptors_needed(regions) * size_of::<PageDescriptor>();
    let storage_start = paging.table_frames.1.next_multiple_of(PAGE_SIZE as u64);
    let storage_end = (storage_start + bytes as u64).next_multiple_of(PAGE_SIZE as u64);
    let room = boot
        .ram()
        .find(|region| region.start <= storage_start && storage_start < region.end())
        .map_or(0, |region| region.end() - storage_start);
    if storage_end - storage_start > room {
        let ram_bytes: u64 = boot.ram().map(|region| region.size).sum();
        // Each frame of RAM costs a descriptor of the room: the most RAM it can describe.
        let most = room / size_of::<PageDescriptor>() as u64 * PAGE_SIZE as u64;
        refuse(format_args!(
            "too much RAM: {} MiB needs {} MiB of page descriptors ({} bytes per 4 KiB \
             frame), which must fit in the {} MiB of RAM after the kernel below 4 GiB: \
             this machine takes at most {} GiB",
            ram_bytes >> 20,
            bytes >> 20,
            size_of::<PageDescriptor>(),
            room >> 20,
            most >> 30
        ));
    }
    // SAFETY: [storage_start, storage_end) is RAM (checked above) after everything
    // the kernel uses, direct-mapped, and reserved from the page allocator below, so
    // this is the only reference to it, for the life of the kernel.
    let storage = unsafe {
        core::slice::from_raw_parts_mut(
            (PHYS_OFFSET + storage_start) as *mut MaybeUninit<PageDescriptor>,
            bytes / size_of::<PageDescriptor>(),
        )
    };
    let trampoline = smp::trampoline::TRAMPOLINE_PHYS;
    let reserved = [
        PhysRegion::new(0, PAGE_SIZE as u64),
        PhysRegion::new(trampoline, trampoline + PAGE_SIZE as u64),
        PhysRegion::new(image.text.0, image.data.1),
        PhysRegion::new(paging.table_frames.0, paging.table_frames.1),
        PhysRegion::new(storage_start, storage_end),
    ];
    let pages = match PageAllocator::new(regions, &reserved, storage) {
        Ok(pages) => pages,
        Err(error) => panic!("cannot set up the page allocator: {error:?}"),
    };

    let window_start = image.text.0 as usize - PAGE_SIZE;
    let ram_bytes: u64 = boot.ram().map(|region| region.size).sum();
    let window_pages = (2 * ram_bytes as usize).max(MIN_WINDOW_BYTES) / PAGE_SIZE;
    let platform = KernelPlatform {
        no_execute: paging.no_execute,
    };
    // SAFETY: the window [kernel start - 1 page, + 2x RAM) holds nothing but the kernel
    // image, which is reserved right below before any allocation; its first page is
    // free. The free frames are RAM nothing uses (everything in use is reserved).
    let heap = match unsafe { Heap::new(platform, pages, window_start, window_pages) } {
        Ok(heap) => heap,
        Err(error) => panic!("cannot bootstrap the range allocator: {error:?}"),
    };
    let image_pages = (image.data.1 - image.text.0) as usize / PAGE_SIZE;
    if let Err(error) = heap.reserve(image.text.0 as usize, image_pages) {
        panic!("cannot register the kernel image as a used range: {error:?}");
    }
    let heap = HEAP.call_once(|| heap);
    let stats = heap.stats();
    let free_bytes = stats.pages.free_frames * PAGE_SIZE;
    if free_bytes < MIN_FREE_BYTES {
        let ram_bytes: u64 = boot.ram().map(|region| region.size).sum();
        let short = (MIN_FREE_BYTES - free_bytes) as u64;
        refuse(format_args!(
            "not enough RAM: {} KiB, of which {} KiB are free after the kernel image, its \
             page tables and the page descriptors; the heap needs at least {} KiB free: \
             give the machine at least {} MiB",
            ram_bytes >> 10,
            free_bytes >> 10,
            MIN_FREE_BYTES >> 10,
            (ram_bytes + short).div_ceil(1 << 20) + 1
        ));
    }
    log::info!(
        "mm: {} free frames ({} MiB), {} in the DMA zone, {} reserved; descriptors {} KiB at {:#x}",
        stats.pages.free_frames,
        stats.pages.free_frames * PAGE_SIZE / (1 << 20),
        stats.pages.free_dma_frames,
        stats.pages.reserved_frames,
        bytes / 1024,
        storage_start
    );
    log::info!(
        "mm: heap window [{:#x}, {:#x}), kernel image registered as a used range",
        window_start,
        window_start + window_pages * PAGE_SIZE
    );
}
