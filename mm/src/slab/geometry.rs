//! The shape of a cache's slabs, computed once when the cache is created: object slot
//! size and alignment, red-zone placement, pages per slab, objects per slab, where the
//! slab descriptor goes (on or off the slab), and how many colours the leftover bytes
//! allow. Pure arithmetic (no memory is touched), so every rule is unit-tested here.
//!
//! # Slot layout
//!
//! ```text
//!  without RED_ZONE:  | object (size rounded up to align)                |
//!  with RED_ZONE:     | pad ... | RZ1 | object (size rounded to 8) | RZ2 | pad to align |
//!                     |<---- lead --->|
//! ```
//!
//! `lead` is the alignment itself (at least 8), so the object keeps its alignment and the
//! leading red-zone word sits right before it.
//!
//! # Pages per slab (Linux 2.4's `kmem_cache_estimate` loop)
//!
//! Starting from one page, the order grows while an order-`k` slab wastes more than 1/8
//! of itself (`left_over * 8 > slab bytes`), but stops at [`BREAK_ORDER`] (large slabs
//! are hard on the allocator below) and at [`MAX_GFP_ORDER`] as soon as one object fits.
//! Objects that do not fit yet (only debug slots of the largest sizes) may go up to
//! [`MAX_SLAB_ORDER`].
//!
//! # On-slab or off-slab descriptor, and why
//!
//! Every slab has a descriptor: its list links, the free-list head, the in-use count, a
//! `bufctl` array (the free list, one `u16` per object) and a bitmap of allocated
//! objects. Small objects (slot < [`OFF_SLAB_LIMIT`] = `PAGE_SIZE / 8`, the 2.4 rule)
//! keep it *on the slab*, at its start: one page does everything, no second allocation,
//! and the descriptor costs a few objects' worth of space. Large objects keep it *off
//! the slab*, in an object of a small general cache: otherwise a 1 KiB-object slab would
//! lose a whole object to a 60-byte descriptor (4 objects per page becomes 3); off the
//! slab, the objects fill the pages exactly. As in 2.4, an off-slab descriptor that
//! happens to fit in the leftover bytes goes back on the slab, and an off-slab cache
//! whose descriptor would be too large for the descriptor caches uses one order less.
//!
//! # Colouring
//!
//! The bytes a slab cannot use (`left_over`) are spent on shifting where the objects
//! start, by a multiple of `colour_off` (a cache line, or the alignment if larger):
//! successive slabs use offsets 0, 1, .., `colour - 1` times `colour_off`, so the first
//! objects of different slabs do not all compete for the same cache sets.

use super::descriptor::desc_size;
use super::{SlabError, SlabFlags};
use crate::platform::PAGE_SIZE;

/// Bytes of a cache line: the unit of colouring and of `HWCACHE_ALIGN`.
pub const L1_CACHE_BYTES: usize = 64;
/// The smallest alignment (and granule) of an object: a machine word.
pub const WORD: usize = 8;
/// Slots of this size or more get their slab descriptor off the slab (2.4's rule).
pub const OFF_SLAB_LIMIT: usize = PAGE_SIZE / 8;
/// Once an object fits, the order search stops here whatever the waste (2.4).
pub const MAX_GFP_ORDER: usize = 5;
/// Once an object fits, the order search also stops here (2.4's `slab_break_gfp_order`
/// for machines with more than 32 MiB).
pub const BREAK_ORDER: usize = 2;
/// The largest slab: 2^7 pages. Reached only by debug slots of the largest objects.
pub const MAX_SLAB_ORDER: usize = 7;
/// The largest object a cache holds (2.4's largest general cache, 128 KiB).
pub const MAX_OBJECT_SIZE: usize = PAGE_SIZE << MAX_GFP_ORDER;
/// The most objects per slab: bufctl entries are `u16`, and `u16::MAX` ends the list.
pub const MAX_OBJECTS_PER_SLAB: usize = u16::MAX as usize - 1;

/// Everything about a cache's slabs that follows from its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The object size asked for.
    pub size: usize,
    /// The objects' alignment (at least [`WORD`]).
    pub align: usize,
    /// Bytes from one object slot to the next (a multiple of `align`).
    pub slot: usize,
    /// Bytes from the start of a slot to its object (red zone; 0 without).
    pub lead: usize,
    /// Bytes of an object its user may use (`ksize`).
    pub usable: usize,
    /// A slab is 2^`order` pages.
    pub order: usize,
    /// Objects per slab.
    pub num: usize,
    /// The slab descriptor lives in an object of a descriptor cache.
    pub off_slab: bool,
    /// Bytes of the slab descriptor (header, bufctl array, bitmap).
    pub desc_size: usize,
    /// On-slab: bytes reserved for the descriptor at the start of the slab (after the
    /// colour), so that the objects after it are aligned. 0 off-slab.
    pub desc_area: usize,
    /// Bytes of a slab that neither objects nor descriptor use.
    pub left_over: usize,
    /// Number of colours (distinct start offsets); 0 or 1 mean no colouring.
    pub colour: usize,
    /// Bytes between two colours.
    pub colour_off: usize,
    /// The flags in effect (`POISON` is dropped for caches with a constructor or
    /// destructor: free objects must stay in their constructed state).
    pub flags: SlabFlags,
    /// `slot` is `odd << slot_shift`: see [`index_of`](Self::index_of).
    pub slot_shift: u32,
    /// The inverse of `odd` modulo 2^64: see [`index_of`](Self::index_of).
    pub slot_inverse: usize,
}

/// The inverse of the odd number `odd` modulo 2^64 (Newton's iteration: each step
/// doubles the correct low bits, and `odd` itself is right to 3 bits).
const fn inverse_mod_word(odd: usize) -> usize {
    let mut inverse = odd;
    let mut step = 0;
    while step < 5 {
        inverse = inverse.wrapping_mul(2usize.wrapping_sub(odd.wrapping_mul(inverse)));
        step += 1;
    }
    inverse
}

impl Geometry {
    /// The geometry of a cache of `size`-byte objects aligned to `align` (0: a word).
    /// `has_ctor_or_dtor` disables poisoning; `offslab_desc_max` is the largest slab
    /// descriptor a descriptor cache can hold (0 while none exists: on-slab only).
    pub fn compute(
        size: usize,
        align: usize,
        flags: SlabFlags,
        has_ctor_or_dtor: bool,
        offslab_desc_max: usize,
    ) -> Result<Self, SlabError> {
        if size == 0 || size > MAX_OBJECT_SIZE {
            return Err(SlabError::InvalidSize { size });
        }
        if align != 0 && (!align.is_power_of_two() || align > PAGE_SIZE) {
            return Err(SlabError::InvalidAlign { align });
        }
        if !SlabFlags::ALL.contains(flags) {
            return Err(SlabError::InvalidFlags { flags });
        }
        let mut align = align.max(WORD);
        if flags.contains(SlabFlags::HWCACHE_ALIGN) {
            // A cache line, but small objects may share one (2.4: halve while the object
            // fits in half), so that 16-byte objects are not spread one per line.
            let mut line = L1_CACHE_BYTES;
            while size <= line / 2 && line > WORD {
                line /= 2;
            }
            align = align.max(line);
        }
        let flags = if has_ctor_or_dtor {
            flags.without(SlabFlags::POISON)
        } else {
            flags
        };
        let (lead, slot, usable) = if flags.contains(SlabFlags::RED_ZONE) {
            let body = size.next_multiple_of(WORD);
            (align, (align + body + WORD).next_multiple_of(align), body)
        } else {
            let slot = size.next_multiple_of(align);
            (0, slot, slot)
        };
        let desc_align = align.max(L1_CACHE_BYTES);
        let mut off_slab = slot >= OFF_SLAB_LIMIT && offslab_desc_max > 0;
        let mut order = 0;
        let (num, mut left_over) = loop {
            let (num, left) = estimate(order, slot, off_slab, desc_align);
            if off_slab && num > 0 && desc_size(num) > offslab_desc_max {
                // Too many objects for a descriptor from the descriptor caches (2.4's
                // `offslab_limit`): the previous order, or on-slab if there is none.
                if order == 0 {
                    off_slab = false;
                    continue;
                }
                order -= 1;
                break estimate(order, slot, off_slab, desc_align);
            }
            if order >= MAX_SLAB_ORDER {
                break (num, left);
            }
            if num > 0
                && (order >= MAX_GFP_ORDER
                    || order >= BREAK_ORDER
                    || left * 8 <= PAGE_SIZE << order)
            {
                break (num, left);
            }
            order += 1;
        };
        if num == 0 {
            return Err(SlabError::InvalidSize { size });
        }
        let desc_size = desc_size(num);
        let mut desc_area = if off_slab {
            0
        } else {
            desc_size.next_multiple_of(desc_align)
        };
        if off_slab && left_over >= desc_size.next_multiple_of(desc_align) {
            // The descriptor fits in what would be wasted anyway: keep it on the slab.
            off_slab = false;
            desc_area = desc_size.next_multiple_of(desc_align);
            left_over -= desc_area;
        }
        let colour_off = desc_align;
        Ok(Self {
            size,
            align,
            slot,
            lead,
            usable,
            order,
            num,
            off_slab,
            desc_size,
            desc_area,
            left_over,
            colour: left_over / colour_off,
            colour_off,
            flags,
            slot_shift: slot.trailing_zeros(),
            slot_inverse: inverse_mod_word(slot >> slot.trailing_zeros()),
        })
    }

    /// The index of the object that starts `offset` bytes after the first object, if
    /// one does. Every free runs this, so it has no division and no branch on the slot
    /// size: with `slot = odd * 2^k` and `inv` the inverse of `odd` modulo 2^64,
    /// `(offset * inv).rotate_right(k)` is `offset / slot` when `slot` divides `offset`,
    /// and larger than `usize::MAX / slot` (so than `num`) when it does not (Granlund and
    /// Montgomery's exact-division test, Hacker's Delight 10-17). A multiply, a rotate
    /// and a compare.
    #[inline]
    pub fn index_of(&self, offset: usize) -> Option<usize> {
        self.index_in(0)(offset)
    }

    /// [`index_of`](Self::index_of) of the address `addr` in a slab whose first object
    /// is at `first`, with the constants copied out of the descriptor: a loop over
    /// many objects (a flush) keeps them in registers.
    #[inline(always)]
    pub fn index_in(&self, first: usize) -> impl Fn(usize) -> Option<usize> + Copy {
        let (inverse, shift, num) = (self.slot_inverse, self.slot_shift, self.num);
        move |addr: usize| {
            let index = addr
                .wrapping_sub(first)
                .wrapping_mul(inverse)
                .rotate_right(shift);
            (index < num).then_some(index)
        }
    }

    /// Pages per slab.
    pub fn pages(&self) -> usize {
        1 << self.order
    }

    /// Bytes per slab.
    pub fn slab_bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// True with red zones.
    pub fn red_zone(&self) -> bool {
        self.flags.contains(SlabFlags::RED_ZONE)
    }

    /// True with poisoning.
    pub fn poison(&self) -> bool {
        self.flags.contains(SlabFlags::POISON)
    }
}

/// How many `slot`-byte objects fit in a slab of 2^`order` pages, and the bytes left
/// over (2.4's `kmem_cache_estimate`). On-slab, the descriptor for that many objects,
/// rounded up to `desc_align`, must fit too.
fn estimate(order: usize, slot: usize, off_slab: bool, desc_align: usize) -> (usize, usize) {
    let bytes = PAGE_SIZE << order;
    let mut num = (bytes / slot).min(MAX_OBJECTS_PER_SLAB);
    let used = |n: usize| {
        let desc = if off_slab || n == 0 {
            0
        } else {
            desc_size(n).next_multiple_of(desc_align)
        };
        n * slot + desc
    };
    while num > 0 && used(num) > bytes {
        num -= 1;
    }
    (num, bytes - used(num))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_FLAGS: SlabFlags = SlabFlags::NONE;
    /// What the general caches offer for off-slab descriptors (size-256 and below).
    const DESC_MAX: usize = 256;

    fn geo(size: usize, align: usize, flags: SlabFlags) -> Geometry {
        Geometry::compute(size, align, flags, false, DESC_MAX).unwrap()
    }

    /// The properties every geometry must have, whatever the parameters.
    fn check(g: &Geometry) {
        assert!(g.align.is_power_of_two() && g.align >= WORD);
        assert_eq!(g.slot % g.align, 0, "{g:?}");
        assert!(g.lead + g.usable <= g.slot);
        assert!(g.usable >= g.size);
        assert!(g.num >= 1 && g.num <= MAX_OBJECTS_PER_SLAB);
        assert_eq!(
            g.num * g.slot + g.desc_area + g.left_over,
            g.slab_bytes(),
            "every byte is accounted for: {g:?}"
        );
        assert_eq!(g.desc_area % g.colour_off, 0);
        assert!(g.off_slab == (g.desc_area == 0));
        assert!(!g.off_slab || g.desc_size <= DESC_MAX);
        // The last colour still leaves room for every object and the descriptor.
        assert!(g.colour.saturating_sub(1) * g.colour_off <= g.left_over);
        assert_eq!(g.colour_off % g.align, 0);
    }

    /// The division-free object index agrees with plain division for every offset of
    /// the slab, for slot sizes odd, even, powers of two and not.
    #[test]
    fn index_of_is_exact_division() {
        let sizes: &[usize] = if cfg!(miri) {
            &[8, 24, 96, 4096]
        } else {
            &[
                8, 16, 24, 40, 56, 64, 72, 96, 100, 200, 256, 504, 700, 1000, 1024, 3000, 4096,
            ]
        };
        for &size in sizes {
            let g = geo(size, 0, NO_FLAGS);
            let step = if cfg!(miri) { 7 } else { 1 };
            for offset in (0..g.slab_bytes() + g.slot).step_by(step) {
                let expected =
                    (offset % g.slot == 0 && offset / g.slot < g.num).then_some(offset / g.slot);
                assert_eq!(
                    g.index_of(offset),
                    expected,
                    "slot {}, offset {offset}",
                    g.slot
                );
            }
            // Far offsets (a pointer below the slab wraps around) are refused too.
            for offset in [usize::MAX, usize::MAX - g.slot + 1, 1 << 63] {
                assert_eq!(
                    g.index_of(offset),
                    None,
                    "slot {}, offset {offset:#x}",
                    g.slot
                );
            }
        }
    }

    #[test]
    fn small_objects_are_on_slab_in_one_page() {
        let g = geo(32, 0, NO_FLAGS);
        check(&g);
        assert_eq!((g.slot, g.order, g.off_slab), (32, 0, false));
        // 40-byte header + 2 bytes/object of bufctl + the bitmap, rounded to a line.
        let desc = desc_size(g.num).next_multiple_of(64);
        assert_eq!(g.num * 32 + desc + g.left_over, PAGE_SIZE);
        assert!(g.num >= 115, "{g:?}");
    }

    #[test]
    fn the_off_slab_rule_is_an_eighth_of_a_page() {
        let below = geo(OFF_SLAB_LIMIT - WORD, 0, NO_FLAGS);
        let at = geo(OFF_SLAB_LIMIT, 0, NO_FLAGS);
        check(&below);
        check(&at);
        assert!(!below.off_slab);
        assert!(at.off_slab);
        // Off the slab, 512-byte objects fill the page exactly.
        assert_eq!((at.num, at.left_over, at.colour), (8, 0, 0));
        // On the slab they would lose one object to the descriptor.
        assert_eq!(estimate(0, 512, false, 64).0, 7);
    }

    #[test]
    fn without_descriptor_caches_everything_is_on_slab() {
        let g = Geometry::compute(1024, 0, NO_FLAGS, false, 0).unwrap();
        check(&g);
        assert!(!g.off_slab);
        // One page holds 3 objects and the descriptor, wasting 960 bytes (> 1/8); two
        // pages hold 7 and waste 960 of 8192 (< 1/8).
        assert_eq!((g.order, g.num), (1, 7));
    }

    #[test]
    fn an_off_slab_descriptor_that_fits_in_the_leftover_goes_back_on_slab() {
        // 1000-byte objects: 4 per page, 96 bytes left, enough for a 64-byte-aligned
        // descriptor of 4 objects (40 + 8 + 8 = 56 -> 64).
        let g = geo(1000, 0, NO_FLAGS);
        check(&g);
        assert_eq!((g.order, g.num, g.off_slab, g.desc_area), (0, 4, false, 64));
        assert_eq!(g.left_over, 4096 - 4000 - 64);
    }

    #[test]
    fn the_order_grows_until_the_waste_is_below_an_eighth() {
        // 1104-byte slots: order 0 holds 3 and wastes 784/4096 (more than 1/8), order 1
        // holds 7 and wastes 464/8192 (less).
        let g = geo(1100, 4, NO_FLAGS);
        check(&g);
        assert_eq!((g.slot, g.order, g.num), (1104, 1, 7));
        // 3000-byte objects: orders 0 and 1 waste too much; the break order stops at 2.
        let g = geo(3000, 0, NO_FLAGS);
        check(&g);
        assert_eq!((g.order, g.num), (BREAK_ORDER, 5));
    }

    #[test]
    fn large_objects_take_the_order_they_need() {
        let g = geo(MAX_OBJECT_SIZE, PAGE_SIZE, NO_FLAGS);
        check(&g);
        assert_eq!((g.order, g.num, g.left_over), (MAX_GFP_ORDER, 1, 0));
        let g = geo(40 * 1024, 0, NO_FLAGS);
        check(&g);
        assert_eq!((g.order, g.num), (4, 1));
        assert_eq!(
            Geometry::compute(MAX_OBJECT_SIZE + 1, 0, NO_FLAGS, false, DESC_MAX),
            Err(SlabError::InvalidSize {
                size: MAX_OBJECT_SIZE + 1
            })
        );
    }

    #[test]
    fn debug_slots_of_the_largest_objects_may_exceed_the_usual_orders() {
        let g = geo(MAX_OBJECT_SIZE, PAGE_SIZE, SlabFlags::RED_ZONE);
        check(&g);
        assert_eq!((g.lead, g.num), (PAGE_SIZE, 1));
        assert_eq!(g.order, MAX_GFP_ORDER + 1);
    }

    #[test]
    fn hwcache_align_packs_small_objects_into_lines() {
        assert_eq!(geo(100, 0, SlabFlags::HWCACHE_ALIGN).align, 64);
        assert_eq!(geo(20, 0, SlabFlags::HWCACHE_ALIGN).align, 32);
        assert_eq!(geo(16, 0, SlabFlags::HWCACHE_ALIGN).align, 16);
        assert_eq!(geo(8, 0, SlabFlags::HWCACHE_ALIGN).align, 8);
        assert_eq!(geo(8, 128, SlabFlags::HWCACHE_ALIGN).align, 128);
    }

    #[test]
    fn red_zones_surround_the_object_and_keep_its_alignment() {
        let g = geo(20, 0, SlabFlags::RED_ZONE);
        check(&g);
        assert_eq!((g.lead, g.usable, g.slot), (8, 24, 40));
        let g = geo(100, 64, SlabFlags::RED_ZONE);
        check(&g);
        assert_eq!((g.lead, g.usable, g.slot), (64, 104, 192));
    }

    #[test]
    fn poisoning_is_dropped_for_constructed_objects() {
        let g = Geometry::compute(64, 0, SlabFlags::DEBUG, true, DESC_MAX).unwrap();
        assert!(g.red_zone() && !g.poison());
        assert!(geo(64, 0, SlabFlags::DEBUG).poison());
    }

    #[test]
    fn colours_use_the_leftover_in_cache_lines() {
        // 200-byte objects: 19 per page and a 128-byte descriptor area leave 168 bytes,
        // two cache lines: two colours.
        let g = geo(200, 0, NO_FLAGS);
        check(&g);
        assert_eq!(
            (g.num, g.desc_area, g.left_over, g.colour),
            (19, 128, 168, 2)
        );
        // Page-aligned objects colour in whole pages: none here.
        let g = geo(4096, 4096, NO_FLAGS);
        check(&g);
        assert_eq!((g.colour_off, g.colour), (4096, 0));
    }

    #[test]
    fn index_of_accepts_object_starts_only() {
        for g in [geo(64, 0, NO_FLAGS), geo(200, 0, NO_FLAGS)] {
            assert_eq!(g.index_of(0), Some(0));
            assert_eq!(g.index_of(g.slot), Some(1));
            assert_eq!(g.index_of(g.slot * (g.num - 1)), Some(g.num - 1));
            assert_eq!(g.index_of(g.slot * g.num), None);
            assert_eq!(g.index_of(g.slot + 8), None);
            assert_eq!(g.index_of(7), None);
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let e = |size, align, flags| Geometry::compute(size, align, flags, false, DESC_MAX);
        assert_eq!(e(0, 0, NO_FLAGS), Err(SlabError::InvalidSize { size: 0 }));
        assert_eq!(e(8, 3, NO_FLAGS), Err(SlabError::InvalidAlign { align: 3 }));
        assert_eq!(
            e(8, 2 * PAGE_SIZE, NO_FLAGS),
            Err(SlabError::InvalidAlign {
                align: 2 * PAGE_SIZE
            })
        );
        let bogus = SlabFlags::from_bits(1 << 30);
        assert_eq!(
            e(8, 0, bogus),
            Err(SlabError::InvalidFlags { flags: bogus })
        );
    }

    #[test]
    fn every_size_and_alignment_gives_a_consistent_geometry() {
        let step = if cfg!(miri) { 4999 } else { 7 };
        for flags in [
            NO_FLAGS,
            SlabFlags::RED_ZONE,
            SlabFlags::HWCACHE_ALIGN | SlabFlags::RED_ZONE,
        ] {
            for align in [0, 8, 16, 64, 256, 4096] {
                for size in (1..=MAX_OBJECT_SIZE).step_by(step) {
                    check(&geo(size, align, flags));
                }
            }
        }
    }
}
