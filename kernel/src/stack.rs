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
