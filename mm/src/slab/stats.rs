//! [`SlabStats`]: a snapshot of one cache's slabs and counters, what 2.4's
//! `/proc/slabinfo` shows of the slab layer (the per-CPU layer adds its own columns and
//! writes the table: `percpu/slabinfo.rs`).

use super::SlabFlags;
use super::cache::{CacheFront, CacheState, SlabCache};
use crate::platform::InterruptControl;

/// A snapshot of one cache's state and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabStats {
    /// The cache's name.
    pub name: &'static str,
    /// The object size asked for at creation.
    pub object_size: usize,
    /// Bytes per object slot (what slabinfo shows as the object size).
    pub slot_size: usize,
    /// Bytes of an object its user may use.
    pub usable_size: usize,
    /// The objects' alignment.
    pub align: usize,
    /// The flags in effect.
    pub flags: SlabFlags,
    /// Objects allocated now (quarantined ones included).
    pub active_objs: usize,
    /// Objects in all slabs.
    pub total_objs: usize,
    /// Slabs with at least one object allocated.
    pub active_slabs: usize,
    /// All slabs.
    pub total_slabs: usize,
    /// Slabs with no object allocated.
    pub free_slabs: usize,
    /// Pages per slab.
    pub pages_per_slab: usize,
    /// Objects per slab.
    pub objs_per_slab: usize,
    /// True when slab descriptors live off the slab.
    pub off_slab: bool,
    /// Number of colours.
    pub colours: usize,
    /// The most objects ever allocated at once.
    pub high: usize,
    /// Objects handed out.
    pub allocs: u64,
    /// Objects given back.
    pub frees: u64,
    /// Slabs made.
    pub grown: u64,
    /// Slabs given back.
    pub reaped: u64,
    /// Errors detected.
    pub errors: u64,
    /// Objects set aside because their debug patterns were damaged.
    pub quarantined: usize,
    /// Times the cache's spinlock was taken, for any reason.
    pub lock_acquisitions: u64,
}

impl SlabStats {
    /// The statistics of `cache`, whose locked state is `st`.
    pub(super) fn of<I: InterruptControl, F: CacheFront>(
        cache: &SlabCache<I, F>,
        st: &CacheState,
    ) -> Self {
        let geo = &cache.geo;
        let c = &st.counters;
        let active_slabs = st.full.len() + st.partial.len();
        let total_slabs = active_slabs + st.free.len();
        Self {
            name: cache.name,
            object_size: geo.size,
            slot_size: geo.slot,
            usable_size: geo.usable,
            align: geo.align,
            flags: geo.flags,
            active_objs: c.active,
            total_objs: total_slabs * geo.num,
            active_slabs,
            total_slabs,
            free_slabs: st.free.len(),
            pages_per_slab: geo.pages(),
            objs_per_slab: geo.num,
            off_slab: geo.off_slab,
            colours: geo.colour,
            high: c.high,
            allocs: c.allocs,
            frees: c.frees,
            grown: c.grown,
            reaped: c.reaped,
            errors: c.errors,
            quarantined: c.quarantined,
            lock_acquisitions: cache.state.acquisitions(),
        }
    }
}
