//! Backing ranges with frames: the one place where the range allocator reaches down to
//! the page allocator and out to the platform.
//!
//! Mapping a page follows the SOS reference protocol (see [`crate::page`] for the why):
//!
//! ```text
//!   frame = alloc_frame(zone)        refcount 1: our reference, as the allocator's caller
//!   map_page(virt, frame)            on failure: put_page(frame) frees it, nothing leaks
//!   get_page(frame)                  refcount 2: the mapping's own reference
//!   put_page(frame)                  refcount 1: we drop ours; the page table owns the frame
//!   set_owner(frame, Range(segment)) virt -> translate -> frame -> owner -> range, in O(1)
//! ```
//!
//! and unmapping is `unmap_page(virt)` then `put_mapped(frame)`, which drops the
//! mapping's reference (freeing the frame unless someone pinned it with `get_page`) and
//! clears the owner. Mapping a range is all or nothing: on the first failure the pages
//! already mapped are unmapped and their frames freed.
//!
//! Page-table frames that the platform asks for while mapping come from the same page
//! allocator (normal zone first) and are never given back, as in every kernel.
//!
//! Concurrency and lock order: the caller holds the range lock; each call here takes the
//! page lock once, for the whole range (range -> page), except `unmap_release`, which
//! unmaps and shoots down before it takes the page lock to release the frames. The platform is called with the
//! page lock held, so it must not call back into `mm` except through the
//! `alloc_table_frame` closure we give it, which uses the lock we already hold.

use super::RangeError;
use crate::page::{PageAllocator, PageOwner, Zone};
use crate::platform::{MapError, PAGE_SIZE, PhysAddr, Platform};
use crate::sync::SpinLock;

/// Pages [`Backing::unmap_release`] unmaps per TLB shootdown (512 bytes of frames on
/// the stack).
pub const UNMAP_BATCH: usize = 64;

/// What the range allocator needs from the layers around it, for one operation.
pub(crate) struct Backing<'a, 'm, P: Platform> {
    pub platform: &'a P,
    pub pages: &'a SpinLock<PageAllocator<'m>, P::Interrupts>,
}

impl<P: Platform> Backing<'_, '_, P> {
    /// A pointer to the kernel virtual address `virt` (see [`Platform::pointer_to`]).
    pub fn pointer_to(&self, virt: usize) -> *mut u8 {
        self.platform.pointer_to(virt)
    }

    /// Maps `pages` pages from `start` to fresh frames from `zone`, recording `owner` (the
    /// range's descriptor) in each frame. All or nothing.
    pub fn map_fresh(
        &self,
        start: usize,
        pages: usize,
        zone: Zone,
        owner: PageOwner,
    ) -> Result<(), RangeError> {
        let mut pa = self.pages.lock();
        for i in 0..pages {
            let virt = start + i * PAGE_SIZE;
            if let Err(error) = self.map_one(&mut pa, virt, zone, owner) {
                for j in (0..i).rev() {
                    self.release_one(&mut pa, start + j * PAGE_SIZE);
                }
                return Err(error);
            }
        }
        Ok(())
    }

    fn map_one(
        &self,
        pa: &mut PageAllocator<'_>,
        virt: usize,
        zone: Zone,
        owner: PageOwner,
    ) -> Result<(), RangeError> {
        // Reference 1: ours, as the caller of the allocator.
        let frame = pa.alloc_frame(zone).map_err(|_| RangeError::OutOfMemory)?;
        let mapped = self
            .platform
            .map_page(virt, frame, &mut || pa.alloc_frame(Zone::Normal).ok());
        if let Err(error) = mapped {
            // Dropping our reference frees the frame.
            let freed = pa.put_page(frame);
            debug_assert_eq!(freed, Ok(true));
            return Err(match error {
                MapError::OutOfMemory => RangeError::OutOfMemory,
                MapError::AlreadyMapped => RangeError::AlreadyMapped { addr: virt },
            });
        }
        // Reference 2: the mapping's. Then ours goes: the page table is the only owner.
        let taken = pa.get_page(frame);
        debug_assert_eq!(taken, Ok(2));
        let dropped = pa.put_page(frame);
        debug_assert_eq!(dropped, Ok(false));
        let owned = pa.set_owner(frame, owner);
        debug_assert_eq!(owned, Ok(()));
        Ok(())
    }

    /// Unmaps `pages` pages from `start`, makes every CPU forget them (a TLB shootdown,
    /// [`Platform::flush_remote_tlbs`]) and only then drops the mappings' references.
    ///
    /// The order matters: a frame that went back to the page allocator before the
    /// shootdown completed could be handed out (`Heap::alloc_frames`) while a stale
    /// translation on another CPU still reaches it. Frames are collected in batches of
    /// [`UNMAP_BATCH`] (one shootdown per batch) so that no unbounded buffer is needed;
    /// ranges and slabs of the heap are smaller than that in practice.
    pub fn unmap_release(&self, start: usize, pages: usize) {
        let mut frames = [PhysAddr(0); UNMAP_BATCH];
        let mut done = 0;
        while done < pages {
            let batch = (pages - done).min(UNMAP_BATCH);
            let mut unmapped = 0;
            for i in 0..batch {
                let virt = start + (done + i) * PAGE_SIZE;
                match self.platform.unmap_page(virt) {
                    Some(frame) => {
                        frames[unmapped] = frame;
                        unmapped += 1;
                    }
                    // Someone unmapped a page of a mapped range behind our back: a kernel
                    // bug. Release builds carry on (the frame, if any, leaks).
                    None => debug_assert!(false, "page {virt:#x} of a mapped range was not mapped"),
                }
            }
            self.platform.flush_remote_tlbs();
            let mut pa = self.pages.lock();
            for &frame in &frames[..unmapped] {
                let released = pa.put_mapped(frame);
                debug_assert!(released.is_ok(), "frame {frame:?}: {released:?}");
            }
            drop(pa);
            done += batch;
        }
    }

    /// Unmaps one page of a range that was never handed out and releases its frame at
    /// once: no other CPU has used the address since it was mapped (the range is not
    /// published yet), so no stale translation of it exists elsewhere.
    fn release_one(&self, pa: &mut PageAllocator<'_>, virt: usize) {
        match self.platform.unmap_page(virt) {
            Some(frame) => {
                let released = pa.put_mapped(frame);
                debug_assert!(released.is_ok(), "frame of {virt:#x}: {released:?}");
            }
            None => debug_assert!(false, "page {virt:#x} of a mapped range was not mapped"),
        }
    }

    /// Rewrites the owner of the frames behind `pages` pages from `start` from `from` to
    /// `to` (a range descriptor moved, see `shrink.rs`, or was just created, see
    /// `bootstrap.rs`).
    pub fn retarget(&self, start: usize, pages: usize, from: PageOwner, to: PageOwner) {
        let mut pa = self.pages.lock();
        for i in 0..pages {
            let Some(frame) = self.platform.translate(start + i * PAGE_SIZE) else {
                continue;
            };
            if pa.owner(frame) == Ok(from) {
                let set = pa.set_owner(frame, to);
                debug_assert_eq!(set, Ok(()));
            }
        }
    }

    /// The owner recorded for the frame mapped at `virt` (any address in the page).
    pub fn owner_of(&self, virt: usize) -> Option<PageOwner> {
        let frame = self.platform.translate(virt & !(PAGE_SIZE - 1))?;
        self.pages.lock().owner(frame).ok()
    }

    /// Fills `pages` freshly mapped pages from `start` with zeros.
    ///
    /// # Safety
    ///
    /// The pages were mapped through the platform for the caller, who owns them (no one
    /// else has their addresses yet).
    pub unsafe fn zero(&self, start: usize, pages: usize) {
        // SAFETY: the pages are mapped, hence readable and writable memory (`Platform`'s
        // contract), and only the caller uses them (this function's contract).
        unsafe { self.pointer_to(start).write_bytes(0, pages * PAGE_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{PageDescriptor, PageState, PhysRegion};
    use crate::sync::NoInterrupts;
    use core::mem::MaybeUninit;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::vec::Vec;

    /// A platform that checks, at every TLB shootdown, that no frame it unmapped since the
    /// last one is free yet: the frames must go back only after the shootdown.
    struct ShootdownWitness<'a, 'm> {
        pages: &'a SpinLock<PageAllocator<'m>, NoInterrupts>,
        mapped: Mutex<BTreeMap<usize, PhysAddr>>,
        unflushed: Mutex<Vec<PhysAddr>>,
        shootdowns: Mutex<usize>,
    }

    // SAFETY: a test double that maps nothing real: `pointer_to` is never used by the
    // calls this test makes, and `translate` reports exactly the recorded mappings.
    unsafe impl Platform for ShootdownWitness<'_, '_> {
        type Interrupts = NoInterrupts;

        fn map_page(
            &self,
            virt: usize,
            phys: PhysAddr,
            _alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
        ) -> Result<(), MapError> {
            let mut mapped = self.mapped.lock().unwrap();
            match mapped.insert(virt, phys) {
                None => Ok(()),
                Some(_) => Err(MapError::AlreadyMapped),
            }
        }

        fn unmap_page(&self, virt: usize) -> Option<PhysAddr> {
            let frame = self.mapped.lock().unwrap().remove(&virt)?;
            self.unflushed.lock().unwrap().push(frame);
            Some(frame)
        }

        fn translate(&self, virt: usize) -> Option<PhysAddr> {
            self.mapped.lock().unwrap().get(&virt).copied()
        }

        fn flush_remote_tlbs(&self) {
            let pa = self.pages.lock();
            for frame in self.unflushed.lock().unwrap().drain(..) {
                let state = pa.frame_info(frame).unwrap().state;
                assert_eq!(
                    state,
                    PageState::Allocated,
                    "frame {frame:?} went back to the page allocator before the shootdown \
                     that makes other CPUs forget it"
                );
            }
            *self.shootdowns.lock().unwrap() += 1;
        }
    }

    /// Issue 11: `del_range` and the range cache's shrink released the frames of a range
    /// before the remote TLB shootdown, so another CPU could be handed a frame that a
    /// stale translation elsewhere still reached.
    #[test]
    fn frames_go_back_only_after_the_shootdown() {
        let regions = [PhysRegion::new(1 << 20, 4 << 20)];
        let mut storage = Vec::new();
        storage.resize_with(
            PageAllocator::descriptors_needed(&regions),
            MaybeUninit::<PageDescriptor>::uninit,
        );
        let pages = SpinLock::new(PageAllocator::new(&regions, &[], &mut storage).unwrap());
        let free_before = pages.lock().stats().free_frames;
        let witness = ShootdownWitness {
            pages: &pages,
            mapped: Mutex::new(BTreeMap::new()),
            unflushed: Mutex::new(Vec::new()),
            shootdowns: Mutex::new(0),
        };
        let backing = Backing {
            platform: &witness,
            pages: &pages,
        };
        let start = 0x4000_0000;
        // More than one batch, so that the batching is checked too.
        let count = UNMAP_BATCH + 3;
        backing
            .map_fresh(start, count, Zone::Dma, PageOwner::Range(0x1000))
            .unwrap();
        backing.unmap_release(start, count);
        assert_eq!(
            *witness.shootdowns.lock().unwrap(),
            2,
            "one shootdown per batch"
        );
        assert!(witness.unflushed.lock().unwrap().is_empty());
        assert_eq!(
            pages.lock().stats().free_frames,
            free_before,
            "every frame is back after the shootdowns"
        );
    }
}
