//! A bump allocator of physical frames for the page tables built at boot.
//!
//! Before the real page allocator (`mm`) exists, the kernel needs a few frames for
//! its page tables. They come from the first RAM above the kernel image, inside
//! the 1 GiB that the boot code identity-mapped, so they can be written before the
//! new tables are live. The frames handed out stay in use for the life of the
//! kernel; [`BootFrameAllocator::used`] tells the page allocator which to skip.

use x86_64::PhysAddr;
use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};

use super::PAGE_SIZE;

/// The boot code identity-maps this much; boot frames must lie below it.
const IDENTITY_MAPPED: u64 = 1 << 30;

#[derive(Debug)]
pub struct BootFrameAllocator {
    start: u64,
    next: u64,
    limit: u64,
}

impl BootFrameAllocator {
    /// Hands out the frames of `[start, limit)`, clipped to the identity-mapped GiB.
    pub fn new(start: u64, limit: u64) -> Self {
        let start = start.next_multiple_of(PAGE_SIZE as u64);
        Self {
            start,
            next: start,
            limit: limit.min(IDENTITY_MAPPED),
        }
    }

    /// The physical range handed out so far.
    pub fn used(&self) -> (u64, u64) {
        (self.start, self.next)
    }
}

// SAFETY: each frame of [start, limit) is returned at most once (`next` only grows),
// the range is RAM that nothing else uses (the caller picked it above the kernel
// image), and it is zeroed through the identity map before being returned.
unsafe impl FrameAllocator<Size4KiB> for BootFrameAllocator {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if self.next + PAGE_SIZE as u64 > self.limit {
            return None;
        }
        let frame = PhysFrame::containing_address(PhysAddr::new(self.next));
        self.next += PAGE_SIZE as u64;
        // SAFETY: the frame is unused RAM below 1 GiB, identity-mapped by the boot
        // page tables that are still active while boot frames are handed out.
        unsafe { core::ptr::write_bytes(frame.start_address().as_u64() as *mut u8, 0, PAGE_SIZE) };
        Some(frame)
    }
}
