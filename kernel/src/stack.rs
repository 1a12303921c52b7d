//! Kernel stacks with a guard page.
//!
//! A [`GuardedStack`] is a page-aligned block whose lowest page is left unmapped by
//! the kernel's page tables (`memory/paging.rs` asks [`GuardedStack::guard_page`]).
//! A stack overflow then runs into a not-present page and raises a page fault
//! (or, when the fault handler itself cannot push its frame, a double fault on its
//! own IST stack) instead of silently overwriting whatever lies below.

use core::cell::UnsafeCell;

use crate::memory::PAGE_SIZE;

/// A stack of `SIZE` usable bytes preceded by one guard page.
#[repr(C, align(4096))]
pub struct GuardedStack<const SIZE: usize> {
    guard: UnsafeCell<[u8; PAGE_SIZE]>,
    stack: UnsafeCell<[u8; SIZE]>,
}

// SAFETY: the bytes of a stack are only ever touched by the one CPU that runs on it
// (through `rsp`, never through Rust references); sharing the static between CPUs
// only shares its address.
unsafe impl<const SIZE: usize> Sync for GuardedStack<SIZE> {}

impl<const SIZE: usize> GuardedStack<SIZE> {
    const LAYOUT_OK: () = assert!(SIZE.is_multiple_of(PAGE_SIZE) && SIZE > 0);

    /// A zeroed stack (it lands in .bss).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        let () = Self::LAYOUT_OK;
        Self {
            guard: UnsafeCell::new([0; PAGE_SIZE]),
            stack: UnsafeCell::new([0; SIZE]),
        }
    }

    /// Address of the guard page (the lowest page of the block).
    pub fn guard_page(&self) -> u64 {
        self.guard.get() as u64
    }

    /// The initial stack pointer: one past the highest byte (stacks grow down).
    pub fn top(&self) -> u64 {
        self.stack.get() as u64 + SIZE as u64
    }
}

/// A stack of `pages` pages made at run time in the kernel heap window, above an
/// unmapped guard page: for the application processors, whose number is known only
/// once the MADT is read, so that a CPU that is absent costs no memory (255 static
/// stacks of [`GuardedStack`] would be some 22 MiB of `.bss`).
///
/// Its pages are a range of the heap window taken as address space only
/// (`RangeFlags::NONE`: the range allocator maps nothing there, checks no mapping and
/// never hands the addresses out again), and this type maps a frame of its own at each
/// page but the lowest. Never freed: an AP runs on its stacks for the life of the kernel.
#[derive(Clone, Copy, Debug)]
pub struct HeapStack {
    guard: u64,
    top: u64,
}

/// Why a [`HeapStack`] could not be made: no address space, or no frame.
#[derive(Clone, Copy, Debug)]
#[allow(
    dead_code,
    reason = "the fields are read through `Debug`, in the boot's panic"
)]
pub enum HeapStackError {
    Range(mm::RangeError),
    Frame(mm::FrameError),
    Map(mm::MapError),
}

impl HeapStack {
    /// Makes a stack of `bytes` (whole pages) above a guard page. Boot only, on the
    /// BSP: the frames and the range are never given back, even on an error.
    pub fn new(
        heap: &mm::Heap<'_, crate::heap::KernelPlatform>,
        bytes: usize,
    ) -> Result<Self, HeapStackError> {
        use mm::{Platform, RangeFlags, Zone};
        assert!(bytes.is_multiple_of(PAGE_SIZE) && bytes > 0);
        let pages = bytes / PAGE_SIZE;
        let guard = heap
            .new_range(1 + pages, RangeFlags::NONE)
            .map_err(HeapStackError::Range)?;
        let frame = || heap.alloc_frames(0, Zone::Normal);
        for page in 1..=pages {
            let phys = frame().map_err(HeapStackError::Frame)?;
            heap.platform()
                .map_page(guard + page * PAGE_SIZE, phys, &mut || frame().ok())
                .map_err(HeapStackError::Map)?;
        }
        Ok(Self {
            guard: guard as u64,
            top: (guard + (1 + pages) * PAGE_SIZE) as u64,
        })
    }

    /// Address of the guard page (unmapped).
    pub fn guard_page(&self) -> u64 {
        self.guard
    }

    /// The initial stack pointer: one past the highest byte.
    pub fn top(&self) -> u64 {
        self.top
    }
}
