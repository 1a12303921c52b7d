//! The live map: one bit per 8-byte word of the heap window, set exactly while an object
//! that starts at that word is in a user's hands. It is what lets a free through a
//! per-CPU array catch *every* double free and every pointer that does not start a live
//! object, without a lock and without reading the slab descriptor.
//!
//! # Why a side table
//!
//! A free into a per-CPU array must decide, with no lock, whether the pointer is an
//! object its caller may free. The slab's own allocation bitmap cannot say: an object
//! parked in some CPU's array is "allocated" to the slab yet free to its users, and the
//! descriptor may be changed, or freed with its slab, by another CPU at any moment.
//! Writing a mark into the free object itself would break constructor caches (a free
//! object keeps its constructed state) and would read memory that may be another CPU's
//! or gone. The live map is neither: memory of its own that, once there, stays until
//! the slab layer is dropped, so any address of the window may be looked up at any
//! time, by any CPU, in an interrupt handler too.
//!
//! # The protocol
//!
//! - Handing an object to a user (a per-CPU hit, an allocation from the slabs, a batch)
//!   sets its bit (`fetch_or`, Release).
//! - A user's free clears it (`fetch_and`, Acquire) *before anything else happens to
//!   the object*, and looks at what was there: of two frees of one object, however
//!   many frees apart and on whichever CPUs, exactly one finds the bit set. A clear bit
//!   is a bad free, judged and reported under the cache lock; nothing changes.
//! - Bits are set only at the first byte of objects (every object is word-aligned), so a
//!   set bit means "a live object starts exactly here": a pointer into the middle of an
//!   object, or to no object, finds its bit clear, on-slab or off-slab alike.
//! - A live object pins its page: its slab cannot be freed or change caches while the
//!   object is out. So once a free has taken a set bit, the owner-table entry of the
//!   page is stable, and one read of it says whether the object is the cache's it is
//!   being freed into. If not, the free puts the bit back and reports the wrong cache.
//! - Objects the allocator uses itself (per-CPU arrays, off-slab descriptors, cache
//!   descriptors) never get a bit: freeing one of them from outside is refused too.
//!
//! # Sparse, so that it costs what the slabs use
//!
//! A flat map would cost 1/64 of the window, which is twice the RAM in the kernel: 3% of
//! RAM whatever the slabs use. Instead the window is cut into *regions* of 256 KiB, each
//! described by one page of map (4096 bytes of bits = 32768 words of window), made the
//! first time a slab is grown in the region and kept until the slab layer is dropped. A
//! directory of one pointer per region (1/32768 of the window, allocated when the slab
//! layer starts) finds them. A region that never held a slab points to one shared page
//! of zeros: nothing there is live, and a free's lookup needs no test for a missing
//! page (a clear of a clear bit leaves the page as it is; no mark ever reaches it). The
//! cost is one page per 256 KiB of window that ever held a slab, 1.6% of the slab
//! memory at its highest, plus the page of zeros and one dependent load per lookup.
//!
//! Within a region's page the words are not in the window's order but spread (see
//! [`SPREAD`]), so that CPUs using objects of one slab page do not share a line of map.
//!
//! The directory pointer is published (Release) before the slab's owner-table entries
//! and before any of its objects can be handed out, so whoever marks or takes a bit of
//! an object finds its region's page.

use super::{SlabBackend, SlabError};
use crate::platform::PAGE_SIZE;
use crate::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use core::ptr::NonNull;

/// Bytes of window per bit: the smallest alignment of an object.
const GRANULE: usize = super::geometry::WORD;
/// Bytes of window per word of the map.
const BYTES_PER_WORD: usize = GRANULE * u64::BITS as usize;
/// Words of map per region: one page of them.
const WORDS_PER_REGION: usize = PAGE_SIZE / core::mem::size_of::<u64>();
/// Bytes of window per region (256 KiB).
const REGION_BYTES: usize = WORDS_PER_REGION * BYTES_PER_WORD;

/// Where a word of map goes in its region's page: word `w` of the region (the bits of
/// bytes `512 w .. 512 (w + 1)` of it) is stored at `w x SPREAD mod 512`, a
/// permutation (`SPREAD` is odd).
///
/// Why not in place: one 64-byte line of map would then hold the bits of one page of
/// slab, and two CPUs that each keep using an object of one page (a refill hands out
/// runs of a page, so that is common) pass that line back and forth on every
/// allocation and free. Measured hosted (`scaling run --threads 2 --ms 300 --alloc
/// mm`, six runs), two threads of `pairs` made 21-22 Mops/s in four runs and 155 in
/// two. Spread, the 8 words of a page lie on 8 different lines, and the words at one
/// offset of different pages of a region on different lines too (the tops of two
/// fresh refills end at the same offset of their pages): 160-164 Mops/s in six runs of
/// six. Spreading single bits instead of words (a multiply of the granule) also fixed
/// `pairs`, but made one thread's run of consecutive objects touch a line per object:
/// two threads of `rounds` fell from 93-98 to 62 Mops/s. Words keep 8 consecutive
/// 64-byte objects on one line: `rounds` makes 78. 13 is among the multipliers that
/// put no two words of a page on one line and the fewest words of two pages (at most
/// 5 of 8) on shared lines; it costs two `lea`s per mark and per take.
const SPREAD: usize = 13;
const _: () = assert!(
    SPREAD % 2 == 1,
    "an odd multiplier permutes the words mod 512"
);

/// The map. See the [module docs](self).
pub struct LiveMap {
    window_start: usize,
    regions: usize,
    /// One pointer per region: its page of bits (`WORDS_PER_REGION` atomics), or
    /// `nothing`; never null.
    directory: NonNull<AtomicPtr<AtomicU64>>,
    /// The page of zeros of every region without a page of its own.
    nothing: NonNull<AtomicU64>,
}

// SAFETY: the directory and the pages it points to are atomics that live as long as the
// value (the pages are given back by `release`); every access goes through them.
unsafe impl Send for LiveMap {}
// SAFETY: as above.
unsafe impl Sync for LiveMap {}

impl LiveMap {
    /// Bytes of directory for a window of `window_pages` pages.
    pub const fn directory_bytes(window_pages: usize) -> usize {
        (window_pages * PAGE_SIZE).div_ceil(REGION_BYTES) * core::mem::size_of::<usize>()
    }

    /// A map of the window of `window_pages` pages at `window_start`, with no region
    /// yet, whose directory is the memory at `directory`; its page of zeros comes from
    /// `backend`.
    ///
    /// # Safety
    ///
    /// `directory` is pointer-aligned, [`directory_bytes`](Self::directory_bytes) long,
    /// used by nothing else, and outlives the map.
    pub unsafe fn new<B: SlabBackend>(
        backend: &B,
        window_start: usize,
        window_pages: usize,
        directory: NonNull<u8>,
    ) -> Result<Self, SlabError> {
        let regions = Self::directory_bytes(window_pages) / core::mem::size_of::<usize>();
        let directory = directory.cast::<AtomicPtr<AtomicU64>>();
        let nothing = Self::new_page(backend)?;
        for region in 0..regions {
            // SAFETY: the directory holds `regions` entries and is ours alone (caller).
            unsafe {
                directory
                    .add(region)
                    .write(AtomicPtr::new(nothing.as_ptr()))
            };
        }
        Ok(Self {
            window_start,
            regions,
            directory,
            nothing,
        })
    }

    /// A zeroed page of `WORDS_PER_REGION` atomics from `backend`.
    fn new_page<B: SlabBackend>(backend: &B) -> Result<NonNull<AtomicU64>, SlabError> {
        let page = backend.alloc_pages(1, false, true)?;
        let Some(words) = NonNull::new(backend.pointer_to(page).cast::<AtomicU64>()) else {
            backend.free_pages(page);
            return Err(SlabError::OutOfMemory);
        };
        // Zeroed memory is a page of zero atomics for `core`'s atomics, not for loom's
        // (each is a handle to the model's record of it): make each word for real.
        #[cfg(loom)]
        for word in 0..WORDS_PER_REGION {
            // SAFETY: a fresh page of `WORDS_PER_REGION` words, ours alone.
            unsafe { words.add(word).write(AtomicU64::new(0)) };
        }
        Ok(words)
    }

    /// The directory entry of region `region` (below `regions`).
    #[inline(always)]
    fn entry(&self, region: usize) -> &AtomicPtr<AtomicU64> {
        debug_assert!(region < self.regions);
        // SAFETY: `region < regions` (callers): inside the directory, which lives as
        // long as `self`; its entries are only ever accessed as atomics.
        unsafe { self.directory.add(region).as_ref() }
    }

    /// The page of region `region` (below `regions`): its own, or the page of zeros.
    #[inline(always)]
    fn page(&self, region: usize) -> NonNull<AtomicU64> {
        // SAFETY: directory entries are never null: `nothing` or a region's page.
        unsafe { NonNull::new_unchecked(self.entry(region).load(Ordering::Acquire)) }
    }

    /// Makes sure every region that `[start, start + bytes)` touches has its page (a
    /// slab being grown, before its owner-table entries are written). The pages come
    /// from `backend`, zeroed; out of memory is an error and changes nothing that
    /// matters (regions already made stay, as they would anyway).
    pub fn cover<B: SlabBackend>(
        &self,
        backend: &B,
        start: usize,
        bytes: usize,
    ) -> Result<(), SlabError> {
        let offset = start.wrapping_sub(self.window_start);
        let first = offset / REGION_BYTES;
        let last = (offset + bytes - 1) / REGION_BYTES;
        for region in first..=last.min(self.regions - 1) {
            if self.page(region) != self.nothing {
                continue;
            }
            let words = Self::new_page(backend)?;
            // Release: whoever finds the pointer finds the zeroed words. Two slabs grown
            // at once in one region race here; the loser gives its page back.
            if self
                .entry(region)
                .compare_exchange(
                    self.nothing.as_ptr(),
                    words.as_ptr(),
                    Ordering::Release,
                    Ordering::Acquire,
                )
                .is_err()
            {
                backend.free_pages(words.addr().get());
            }
        }
        Ok(())
    }

    /// Pages of map made so far (regions that ever held a slab).
    pub fn pages(&self) -> usize {
        (0..self.regions)
            .filter(|&region| self.page(region) != self.nothing)
            .count()
    }

    /// Gives back every page of the map (the slab layer is going away).
    pub fn release<B: SlabBackend>(&self, backend: &B) {
        for region in 0..self.regions {
            let words = self
                .entry(region)
                .swap(self.nothing.as_ptr(), Ordering::Acquire);
            if words != self.nothing.as_ptr() {
                backend.free_pages(words.addr());
            }
        }
        backend.free_pages(self.nothing.addr().get());
    }

    /// The word and the bit of `addr`, if `addr` is a word-aligned address of the
    /// window's regions (on the page of zeros when its region has no page).
    #[inline(always)]
    fn locate(&self, addr: usize) -> Option<(&AtomicU64, u64)> {
        // The word index of `addr` in the window, with the bits of a misalignment
        // rotated to the top: a misaligned address, like one outside the window (the
        // subtraction wraps), lands far past the last region. One compare for all three.
        let granule = addr
            .wrapping_sub(self.window_start)
            .rotate_right(GRANULE.trailing_zeros());
        let region = granule / (REGION_BYTES / GRANULE);
        if region >= self.regions {
            return None;
        }
        Some(self.in_region(self.page(region), granule))
    }

    /// The word and the bit of the granule `granule` of the window in its region's page
    /// `words`.
    #[inline(always)]
    fn in_region(&self, words: NonNull<AtomicU64>, granule: usize) -> (&AtomicU64, u64) {
        // The word's place in its region's page: spread (see `SPREAD`).
        let word = (granule / u64::BITS as usize).wrapping_mul(SPREAD) % WORDS_PER_REGION;
        // `wrapping_shl` shifts by the low six bits: the bit within the word.
        let bit = 1u64.wrapping_shl(granule as u32);
        // SAFETY: `word < WORDS_PER_REGION`: inside the region's page (or the page of
        // zeros), which stays until `release` (which takes `&self` after every reference
        // of this kind is gone: the slab layer is being dropped), and whose words are
        // only ever accessed as atomics.
        (unsafe { words.add(word).as_ref() }, bit)
    }

    /// Records that the object at `addr` is now in a user's hands.
    ///
    /// # Safety
    ///
    /// `addr` starts an object of a slab grown since the map was made (so its region
    /// has its page), and its bit is clear: the object was not in a user's hands.
    #[inline]
    pub unsafe fn mark(&self, addr: usize) {
        let granule = (addr - self.window_start) / GRANULE;
        let words = self.page(granule / (REGION_BYTES / GRANULE));
        // A mark on the page of zeros would make every free in a slab-less region look
        // good: the caller's promise is what keeps it off.
        debug_assert!(words != self.nothing, "{addr:#x}: no live-map region");
        let (word, bit) = self.in_region(words, granule);
        // Release: a free that takes the bit also sees the owner-table entry that was
        // written before the object was handed out.
        let before = word.fetch_or(bit, Ordering::Release);
        debug_assert!(before & bit == 0, "{addr:#x} handed out while live");
    }

    /// Puts back a mark that [`take`](Self::take) just took (the object turned out to be
    /// another cache's: the free was refused).
    pub fn put_back(&self, addr: usize) {
        if let Some((word, bit)) = self.locate(addr) {
            word.fetch_or(bit, Ordering::Release);
        }
    }

    /// Takes the mark of `addr`: true when an object started at `addr` and was in a
    /// user's hands (it no longer is), false otherwise (nothing changed).
    #[inline]
    pub fn take(&self, addr: usize) -> bool {
        let Some((word, bit)) = self.locate(addr) else {
            return false;
        };
        if crate::seeded::on("live_take_check_then_clear") {
            // The seeded defect: a check, then a clear, where two racing frees can both
            // see the bit set.
            let live = word.load(Ordering::Acquire) & bit != 0;
            word.fetch_and(!bit, Ordering::Acquire);
            return live;
        }
        word.fetch_and(!bit, Ordering::Acquire) & bit != 0
    }

    /// True while the object at `addr` is in a user's hands (a snapshot).
    pub fn is_live(&self, addr: usize) -> bool {
        self.locate(addr)
            .is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
    }

    /// Counts the marks in `[start, start + bytes)`, both multiples of 512 bytes (checks
    /// only: a slab's pages).
    pub fn count(&self, start: usize, bytes: usize) -> usize {
        debug_assert!(start.is_multiple_of(BYTES_PER_WORD) && bytes.is_multiple_of(BYTES_PER_WORD));
        (start..start + bytes)
            .step_by(BYTES_PER_WORD)
            .filter_map(|addr| self.locate(addr))
            .map(|(word, _)| word.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }
}
