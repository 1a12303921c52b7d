//! The boot-time self-test of layers 3 and 4: exhaust memory, give it all back, and
//! check that nothing was lost.
//!
//! 1. Frames: allocate blocks of every order, from the largest down, in the normal
//!    and the DMA zone, until the page allocator says out of memory; free them all.
//! 2. Ranges: allocate mapped ranges of 64 pages, then smaller, writing to every
//!    page, until the range allocator says out of memory (no frames left to back
//!    them) -- or, by default, until 256 pages are mapped; `mmtest=exhaust` on the
//!    command line asks for the whole of RAM. (Mapping is page-table work, which is
//!    slow under nested KVM: exhausting 8 GiB page by page takes minutes there.)
//!    Delete them all.
//!
//! After each phase the free-frame counts, the buddy free lists (so: fully
//! coalesced) and the range allocator's segments must be exactly as before. The
//! allocations are recorded in their own memory, so the test needs no memory of its
//! own: each range's first word points to the previous range, and the frame blocks are
//! listed in ledgers, blocks of the test's own whose first page holds up to
//! [`LEDGER_ENTRIES`] others. Ledgers rather than a word in every block: QEMU backs guest
//! RAM with transparent huge pages, so a write into each 4 MiB block would make the host
//! back half the guest's RAM (8 GiB of host memory for a 16 GiB guest); with ledgers the
//! test touches one page per 500 blocks.

use mm::{FrameError, PAGE_SIZE, PhysAddr, RangeError, RangeFlags, Zone};

use core::mem::size_of;
use core::sync::atomic::Ordering;

use crate::heap::TABLE_FRAMES;
use crate::memory::PHYS_OFFSET;
use crate::println;

/// Pages mapped by the range phase unless `exhaust` is asked for.
const DEFAULT_RANGE_PAGES: usize = 256;

/// Runs both phases; panics if anything is off.
pub fn run(exhaust: bool) {
    let range_limit = if exhaust {
        usize::MAX
    } else {
        DEFAULT_RANGE_PAGES
    };
    let heap = crate::heap::HEAP.get().expect("the heap is initialised");
    let before = heap.stats();
    println!(
        "mm self-test: {} free frames ({} DMA) before",
        before.pages.free_frames, before.pages.free_dma_frames
    );

    let (ledgers, frames) = exhaust_frames();
    assert_eq!(
        frames, before.pages.free_frames,
        "every free frame could be allocated"
    );
    assert_eq!(heap.stats().pages.free_frames, 0);
    free_frames(ledgers);
    heap.check_invariants();
    assert_eq!(
        heap.stats().pages,
        before.pages,
        "frames: all free again and coalesced"
    );
    println!(
        "mm self-test: frames: {frames} allocated in {} blocks until out of memory, all freed, \
         counts restored",
        ledgers.blocks
    );

    // The first pass builds the page tables of the window it touches; the kernel
    // keeps page tables for good, so those frames are accounted for separately and
    // a second pass must then give back exactly everything it took.
    let tables_before = TABLE_FRAMES.load(Ordering::Relaxed);
    let mut pass_start = before;
    for pass in 1..=2 {
        let (ranges, pages) = map_ranges(range_limit);
        delete_ranges(ranges);
        heap.shrink();
        heap.check_invariants();
        let after = heap.stats();
        let tables = TABLE_FRAMES.load(Ordering::Relaxed) - tables_before;
        assert_eq!(
            after.pages.free_frames + tables,
            before.pages.free_frames,
            "ranges: every frame back, except the page tables built"
        );
        assert_eq!(
            after.ranges.free_pages, before.ranges.free_pages,
            "the window is free again"
        );
        assert_eq!(
            after.ranges.segments, before.ranges.segments,
            "and coalesced back"
        );
        if pass == 2 {
            assert_eq!(
                after.pages, pass_start.pages,
                "a second pass gives back exactly all"
            );
        }
        println!(
            "mm self-test: ranges, pass {pass}: {pages} pages mapped in {} ranges {}, all \
             deleted; {} free frames after ({} kept as page tables)",
            ranges.1,
            if exhaust {
                "until out of memory"
            } else {
                "(mmtest=exhaust maps all RAM)"
            },
            after.pages.free_frames,
            tables
        );
        pass_start = after;
    }
}

/// A chain of allocations, threaded through their first word: (head, count).
type Chain = (Option<u64>, usize);

/// Entries in a ledger's first page, after its three header words (the previous
/// ledger, the ledger's own order, the number of entries).
const LEDGER_ENTRIES: usize = PAGE_SIZE / size_of::<u64>() - 3;

/// The frame blocks taken by [`exhaust_frames`]: the newest ledger and the number of
/// blocks, ledgers included.
#[derive(Clone, Copy)]
struct Ledgers {
    newest: Option<u64>,
    blocks: usize,
}

impl Ledgers {
    /// The words of the ledger at `block`, through the direct map.
    fn words(block: u64) -> *mut u64 {
        (PHYS_OFFSET + block) as *mut u64
    }

    /// Records a block just allocated: in the newest ledger while it has room, else
    /// the block becomes the newest ledger.
    fn record(&mut self, block: u64, order: usize) {
        let words = Self::words(block);
        if let Some(ledger) = self.newest {
            let ledger = Self::words(ledger);
            // SAFETY: `ledger` is a block of ours (allocated, not freed) whose first page
            // holds the header and `LEDGER_ENTRIES` entries; we write inside that page.
            unsafe {
                let count = ledger.add(2).read() as usize;
                if count < LEDGER_ENTRIES {
                    // Blocks are page-aligned, so the order fits in the low bits.
                    ledger.add(3 + count).write(block | order as u64);
                    ledger.add(2).write(count as u64 + 1);
                    self.blocks += 1;
                    return;
                }
            }
        }
        // SAFETY: the block was just allocated to us; its first page, reached through
        // the direct map, is ours to use.
        unsafe {
            words.write(self.newest.unwrap_or(u64::MAX));
            words.add(1).write(order as u64);
            words.add(2).write(0);
        }
        self.newest = Some(block);
        self.blocks += 1;
    }
}

fn exhaust_frames() -> (Ledgers, usize) {
    let heap = crate::heap::HEAP.get().expect("heap");
    let mut ledgers = Ledgers {
        newest: None,
        blocks: 0,
    };
    let mut frames = 0;
    for zone in [Zone::Normal, Zone::Dma] {
        for order in (0..=mm::page::MAX_ORDER).rev() {
            loop {
                match heap.alloc_frames(order, zone) {
                    Ok(PhysAddr(block)) => {
                        ledgers.record(block, order);
                        frames += 1 << order;
                    }
                    Err(FrameError::OutOfMemory) => break,
                    Err(error) => {
                        panic!("allocating frames failed with {error:?}, not out of memory")
                    }
                }
            }
        }
    }
    (ledgers, frames)
}

fn free_frames(ledgers: Ledgers) {
    let heap = crate::heap::HEAP.get().expect("heap");
    let mut next = ledgers.newest;
    while let Some(ledger) = next {
        let words = Ledgers::words(ledger);
        // SAFETY: `ledger` is one of ours (see `Ledgers::record`), still allocated, and
        // its header and first `count` entries were written.
        let (previous, order, count) =
            unsafe { (words.read(), words.add(1).read(), words.add(2).read()) };
        for index in 0..count as usize {
            // SAFETY: as above, an entry below `count`.
            let entry = unsafe { words.add(3 + index).read() };
            let block = entry & !(PAGE_SIZE as u64 - 1);
            let block_order = (entry & (PAGE_SIZE as u64 - 1)) as usize;
            heap.free_frames(PhysAddr(block), block_order)
                .expect("freeing our own block");
        }
        heap.free_frames(PhysAddr(ledger), order as usize)
            .expect("freeing our own ledger");
        next = (previous != u64::MAX).then_some(previous);
    }
}

/// Maps ranges until out of memory or until `limit` pages are mapped.
fn map_ranges(limit: usize) -> (Chain, usize) {
    let heap = crate::heap::HEAP.get().expect("heap");
    let mut chain: Chain = (None, 0);
    let mut pages_total = 0;
    let mut pages = 64;
    while pages > 0 && pages_total < limit {
        match heap.new_range(pages, RangeFlags::MAP) {
            Ok(start) => {
                for page in 0..pages {
                    let word = (start + page * PAGE_SIZE) as *mut u64;
                    // SAFETY: the range was just mapped for us, page by page.
                    unsafe { word.write_volatile(start as u64 ^ page as u64) };
                }
                // SAFETY: the first word of our own mapped range (overwriting the
                // pattern of page 0 after checking nothing else changed).
                unsafe { (start as *mut u64).write(chain.0.unwrap_or(u64::MAX)) };
                chain = (Some(start as u64), chain.1 + 1);
                pages_total += pages;
            }
            Err(RangeError::OutOfMemory) => pages /= 2,
            Err(error) => panic!("new_range failed with {error:?}, not out of memory"),
        }
    }
    (chain, pages_total)
}

fn delete_ranges(chain: Chain) {
    let heap = crate::heap::HEAP.get().expect("heap");
    let mut next = chain.0;
    while let Some(start) = next {
        // SAFETY: `start` is one of our ranges, still mapped.
        let previous = unsafe { (start as *const u64).read() };
        let info = heap
            .range_containing(start as usize)
            .expect("our range is known");
        for page in 1..info.pages {
            let word = (start as usize + page * PAGE_SIZE) as *const u64;
            // SAFETY: a page of our own mapped range.
            let value = unsafe { word.read_volatile() };
            assert_eq!(
                value,
                start ^ page as u64,
                "range memory kept what we wrote"
            );
        }
        heap.del_range(start as usize)
            .expect("deleting our own range");
        next = (previous != u64::MAX).then_some(previous);
    }
}
