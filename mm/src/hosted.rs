//! The host platform: `mm` running as an ordinary process, for tests, Miri and benchmarks.
//!
//! [`HostedPlatform`] owns an arena of real, page-aligned host memory that stands for the
//! kernel's heap window, so the range cache's descriptors live in real memory that Miri
//! checks. Physical frames, on the other hand, are fake addresses from a made-up RAM
//! layout: they are recorded, never dereferenced. The platform is a strict test double:
//! it keeps the map of every mapped page, refuses to map a page twice
//! (`MapError::AlreadyMapped`), answers `None` to an unmapping of an unmapped page, panics
//! on a page outside its window or a misaligned address, can simulate page-table frames
//! (one per 2 MiB of window, taken from the page allocator through `alloc_table_frame`
//! and never returned, as a kernel does), and can be told to fail the n-th next mapping,
//! to exercise every undo path.
//!
//! [`HostedMachine`] puts a fake RAM layout ([`HostedLayout`]), the descriptor storage and
//! the platform together and boots a ready [`Heap`].
//!
//! Concurrency: the platform's bookkeeping is behind a `std::sync::Mutex`, so threads may
//! share it as CPUs share the kernel's page tables.

use crate::bootstrap::BootError;
use crate::heap::Heap;
use crate::page::{PageAllocator, PageDescriptor, PhysRegion};
use crate::platform::{MapError, PAGE_SIZE, PhysAddr, Platform};
use std::alloc::{Layout, alloc, dealloc};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::vec::Vec;

/// One simulated page table maps this many bytes (2 MiB, as an x86_64 page table).
const TABLE_SPAN: usize = 512 * PAGE_SIZE;

#[derive(Default)]
struct State {
    mapped: BTreeMap<usize, PhysAddr>,
    /// With simulated page tables: the frame of the table covering each 2 MiB.
    tables: Option<BTreeMap<usize, PhysAddr>>,
    /// Successful `map_page` calls left before one fails with `OutOfMemory`.
    fail_after: Option<usize>,
}

/// A [`Platform`] over an arena of host memory. See the [module docs](self).
pub struct HostedPlatform {
    arena: NonNull<u8>,
    pages: usize,
    state: Mutex<State>,
}

// SAFETY: the arena is owned by the platform, which never reads or writes its bytes (it
// only hands out pointers to pages mapped for the caller, per `Platform`'s contract); all
// other state is behind a mutex. So it may be moved to and shared between threads.
unsafe impl Send for HostedPlatform {}
// SAFETY: see `Send` above.
unsafe impl Sync for HostedPlatform {}

impl HostedPlatform {
    /// A window of `pages` pages of host memory, nothing mapped.
    pub fn new(pages: usize) -> Self {
        let ptr = NonNull::new(
            // SAFETY: the layout has a non-zero size (at least one page).
            unsafe { alloc(Self::layout(pages)) },
        )
        .expect("hosted: no memory for the window arena");
        Self {
            arena: ptr,
            pages,
            state: Mutex::new(State::default()),
        }
    }

    /// Like [`new`](Self::new), with simulated page tables: the first mapping in each
    /// 2 MiB of the window takes one frame from `alloc_table_frame`, kept for good.
    pub fn with_page_tables(pages: usize) -> Self {
        let this = Self::new(pages);
        this.state().tables = Some(BTreeMap::new());
        this
    }

    fn layout(pages: usize) -> Layout {
        Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE)
            .expect("hosted: window too large")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first address of the window (a real host address).
    pub fn window_start(&self) -> usize {
        self.arena.addr().get()
    }

    /// The size of the window in pages.
    pub fn window_pages(&self) -> usize {
        self.pages
    }

    /// Pages mapped now.
    pub fn mapped_pages(&self) -> usize {
        self.state().mapped.len()
    }

    /// Every mapping, in address order.
    pub fn mappings(&self) -> Vec<(usize, PhysAddr)> {
        self.state().mapped.iter().map(|(&v, &p)| (v, p)).collect()
    }

    /// Frames taken for simulated page tables.
    pub fn table_frames(&self) -> usize {
        self.state().tables.as_ref().map_or(0, BTreeMap::len)
    }

    /// Makes the `successes + 1`-th next `map_page` fail with `MapError::OutOfMemory`.
    pub fn fail_map_after(&self, successes: usize) {
        self.state().fail_after = Some(successes);
    }

    /// Disarms a failure armed by [`fail_map_after`](Self::fail_map_after).
    pub fn disarm_map_fault(&self) {
        self.state().fail_after = None;
    }

    /// True while a failure armed by [`fail_map_after`](Self::fail_map_after) has not
    /// happened yet.
    pub fn map_fault_pending(&self) -> bool {
        self.state().fail_after.is_some()
    }

    /// Forgets every mapping and page table (a fresh machine for a new boot).
    fn reset(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.mapped.clear();
        if let Some(tables) = &mut state.tables {
            tables.clear();
        }
        state.fail_after = None;
    }

    fn check_page(&self, virt: usize) {
        let start = self.window_start();
        assert!(
            virt.is_multiple_of(PAGE_SIZE)
                && virt >= start
                && virt - start < self.pages * PAGE_SIZE,
            "hosted: page {virt:#x} is not in the window {start:#x}+{} pages",
            self.pages
        );
    }
}

impl Drop for HostedPlatform {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout, and freed only here.
        unsafe { dealloc(self.arena.as_ptr(), Self::layout(self.pages)) }
    }
}

// SAFETY: a mapped page is a page of the arena, real memory that this platform never
// uses itself and hands out (through `pointer_to`) for mapped pages only; `map_page`
// refuses to map a page twice and `translate` reports exactly the recorded mappings.
unsafe impl Platform for HostedPlatform {
    /// A host thread has no interrupts: the range and page locks disable nothing.
    type Interrupts = crate::sync::NoInterrupts;

    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError> {
        self.check_page(virt);
        assert!(
            phys.0.is_multiple_of(PAGE_SIZE as u64),
            "hosted: misaligned frame {:#x}",
            phys.0
        );
        let mut state = self.state();
        if let Some(left) = state.fail_after {
            state.fail_after = left.checked_sub(1);
            if left == 0 {
                return Err(MapError::OutOfMemory);
            }
        }
        if state.mapped.contains_key(&virt) {
            return Err(MapError::AlreadyMapped);
        }
        if let Some(tables) = &mut state.tables
            && let Entry::Vacant(table) = tables.entry(virt / TABLE_SPAN)
        {
            table.insert(alloc_table_frame().ok_or(MapError::OutOfMemory)?);
        }
        state.mapped.insert(virt, phys);
        Ok(())
    }

    fn unmap_page(&self, virt: usize) -> Option<PhysAddr> {
        self.check_page(virt);
        self.state().mapped.remove(&virt)
    }

    fn translate(&self, virt: usize) -> Option<PhysAddr> {
        self.state().mapped.get(&(virt & !(PAGE_SIZE - 1))).copied()
    }

    fn pointer_to(&self, virt: usize) -> *mut u8 {
        // Derived from the arena, so Miri knows which allocation it points into.
        self.arena.as_ptr().with_addr(virt)
    }
}

/// A made-up machine: RAM regions with holes, reserved frames, the size of the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedLayout {
    /// RAM, sorted.
    pub regions: Vec<PhysRegion>,
    /// Frames that are not free at boot.
    pub reserved: Vec<PhysRegion>,
    /// Pages of the heap window.
    pub window_pages: usize,
    /// Simulate page-table frames (see [`HostedPlatform::with_page_tables`]).
    pub page_tables: bool,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl HostedLayout {
    /// A PC-like machine: low memory up to 640 KiB, RAM from 1 MiB across the 16 MiB DMA
    /// limit, a hole, RAM above 4 GiB; the IVT page and 8 frames of "kernel image" at the
    /// start of the middle region reserved. Small under Miri (hundreds of frames), tens of
    /// MiB otherwise.
    pub fn pc() -> Self {
        let (low_end, mid_start, mid_end, high_size, window_pages) = if cfg!(miri) {
            (
                128 * KIB,
                16 * MIB - 128 * KIB,
                16 * MIB + 256 * KIB,
                512 * KIB,
                512,
            )
        } else {
            (640 * KIB, MIB, 24 * MIB, 16 * MIB, 16 * 1024)
        };
        Self {
            regions: std::vec![
                PhysRegion::new(0, low_end),
                PhysRegion::new(mid_start, mid_end),
                PhysRegion::new(4 * GIB, 4 * GIB + high_size),
            ],
            reserved: std::vec![
                PhysRegion::new(0, 4 * KIB),
                PhysRegion::new(mid_start, mid_start + 32 * KIB),
            ],
            window_pages,
            page_tables: false,
        }
    }

    /// One normal-zone region of `frames` frames and a window of `window_pages` pages.
    pub fn flat(frames: u64, window_pages: usize) -> Self {
        Self {
            regions: std::vec![PhysRegion::new(
                4 * GIB,
                4 * GIB + frames * PAGE_SIZE as u64
            )],
            reserved: Vec::new(),
            window_pages,
            page_tables: false,
        }
    }
}

/// A fake machine that boots a [`Heap`]: layout, descriptor storage, platform.
pub struct HostedMachine {
    layout: HostedLayout,
    platform: HostedPlatform,
    storage: Vec<MaybeUninit<PageDescriptor>>,
}

impl HostedMachine {
    /// The machine described by `layout`, not booted yet.
    pub fn new(layout: HostedLayout) -> Self {
        let platform = if layout.page_tables {
            HostedPlatform::with_page_tables(layout.window_pages)
        } else {
            HostedPlatform::new(layout.window_pages)
        };
        let mut storage = Vec::new();
        storage.resize_with(
            PageAllocator::descriptors_needed(&layout.regions),
            MaybeUninit::uninit,
        );
        Self {
            layout,
            platform,
            storage,
        }
    }

    /// The layout.
    pub fn layout(&self) -> &HostedLayout {
        &self.layout
    }

    /// Builds the page allocator over the layout and bootstraps a heap over the whole
    /// window. Each boot starts from a fresh machine (no mappings). Panics if the layout
    /// itself is invalid (a bug in the test).
    pub fn boot(&mut self) -> Result<Heap<'_, &HostedPlatform>, BootError> {
        let Self {
            layout,
            platform,
            storage,
        } = self;
        platform.reset();
        let pages = PageAllocator::new(&layout.regions, &layout.reserved, storage)
            .expect("hosted: invalid layout");
        let platform: &HostedPlatform = platform;
        // SAFETY: 1. the window is the platform's arena, which nothing but this heap uses
        // (the machine is borrowed mutably for the heap's lifetime). 2. The frames are
        // fake addresses that nothing dereferences, so any of them may be handed out.
        unsafe {
            Heap::new(
                platform,
                pages,
                platform.window_start(),
                platform.window_pages(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_double_records_every_mapping_and_refuses_doubles() {
        let p = HostedPlatform::new(4);
        let w = p.window_start();
        assert_eq!(w % PAGE_SIZE, 0);
        assert_eq!(p.map_page(w, PhysAddr(0x3000), &mut || None), Ok(()));
        assert_eq!(
            p.map_page(w, PhysAddr(0x4000), &mut || None),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(p.translate(w + 17), Some(PhysAddr(0x3000)));
        assert_eq!(p.mappings(), [(w, PhysAddr(0x3000))]);
        assert_eq!(p.unmap_page(w), Some(PhysAddr(0x3000)));
        assert_eq!(p.unmap_page(w), None);
        assert_eq!(p.translate(w), None);
    }

    #[test]
    fn mapped_pages_are_real_memory() {
        let p = HostedPlatform::new(2);
        let w = p.window_start() + PAGE_SIZE;
        p.map_page(w, PhysAddr(0), &mut || None).unwrap();
        let ptr = p.pointer_to(w);
        assert_eq!(ptr.addr(), w);
        // SAFETY: the page is mapped, and this test is its only user.
        unsafe {
            ptr.write_bytes(7, PAGE_SIZE);
            assert_eq!(*ptr.add(PAGE_SIZE - 1), 7);
        }
    }

    #[test]
    fn injected_failures_and_page_tables() {
        let p = HostedPlatform::with_page_tables(2);
        let w = p.window_start();
        p.fail_map_after(1);
        let mut tables = 0;
        let mut table = || {
            tables += 1;
            Some(PhysAddr(0x9000))
        };
        assert_eq!(p.map_page(w, PhysAddr(0), &mut table), Ok(()));
        assert_eq!(
            p.map_page(w + PAGE_SIZE, PhysAddr(0), &mut table),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(p.map_page(w + PAGE_SIZE, PhysAddr(0), &mut table), Ok(()));
        // The two pages may straddle a 2 MiB boundary (the arena is only page-aligned).
        let spans = if w / TABLE_SPAN == (w + PAGE_SIZE) / TABLE_SPAN {
            1
        } else {
            2
        };
        assert_eq!(p.table_frames(), spans);
        assert_eq!(tables, spans);
        let q = HostedPlatform::with_page_tables(1);
        let w = q.window_start();
        assert_eq!(
            q.map_page(w, PhysAddr(0), &mut || None),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(q.mapped_pages(), 0);
    }

    #[test]
    #[should_panic(expected = "is not in the window")]
    fn pages_outside_the_window_are_a_bug() {
        let p = HostedPlatform::new(1);
        let _ = p.map_page(p.window_start() + PAGE_SIZE, PhysAddr(0), &mut || None);
    }
}
