//! The kernel's view of memory: the address-space layout, the frames used during
//! boot, and the page tables.
//!
//! Virtual address-space layout (x86_64, 4-level paging):
//!
//! ```text
//! 0x0000_0000_0000_0000  unmapped: null-pointer accesses fault
//! 0x0000_0000_0010_0000  the kernel image (identity-mapped, 4 KiB pages with
//!                        per-section permissions, guard pages under the stacks)
//! 0xffff_8000_0000_0000  the direct map: each RAM (and low firmware) physical
//!                        address P is visible at PHYS_OFFSET + P (2 MiB pages, NX)
//! 0xffff_c000_0000_0000  device registers: page P at MMIO_OFFSET + P (4 KiB, uncached)
//! ```

pub mod boot_frames;
pub mod paging;

/// Size of a page and of a page frame.
pub const PAGE_SIZE: usize = 4096;

/// Where the direct map of physical memory starts.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;

/// Where device register pages are mapped, uncached, at this offset + their
/// physical address.
pub const MMIO_OFFSET: u64 = 0xffff_c000_0000_0000;

unsafe extern "C" {
    // Symbols of kernel/linker.ld; only their addresses mean anything.
    static __text_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// The page-aligned sections of the kernel image, as physical (= virtual) addresses.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage {
    pub text: (u64, u64),
    pub rodata: (u64, u64),
    pub data: (u64, u64),
    pub end: u64,
}

impl KernelImage {
    pub fn get() -> Self {
        let text = &raw const __text_start as u64;
        let rodata = &raw const __rodata_start as u64;
        let data = &raw const __data_start as u64;
        let end = &raw const __kernel_end as u64;
        Self {
            text: (text, rodata),
            rodata: (rodata, data),
            data: (data, end),
            end,
        }
    }
}
