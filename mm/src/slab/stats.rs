//! Per-cache statistics and the Linux 2.4 `/proc/slabinfo` format.
//!
//! ```text
//! slabinfo - version: 1.1
//! kmem_cache            29     36    384    3    3    1
//! size-32              118    118     32    1    1    1
//! ```
//!
//! Columns (2.4's `s_show`): name, active objects, total objects, object size (bytes per
//! slot, red zones and padding included), active slabs (with at least one object
//! allocated), total slabs, pages per slab; then, after ` : `, the SMP columns `limit`
//! and `batchcount` of the per-CPU arrays (0 0: none). Objects in per-CPU arrays count as
//! active, as in 2.4. The `(statistics)` variant adds, after ` : `, 2.4's `STATS`
//! columns: the high-water mark of active objects, allocations, slabs grown, slabs
//! reaped (by shrink, reap or destroy), errors detected; then, after ` : `, the SMP
//! ones summed over the CPUs: `allochit allocmiss freehit freemiss`, and two of ours:
//! objects sitting in per-CPU arrays now, and acquisitions of the cache's lock.

use super::allocator::SlabAllocator;
use super::cache::{CacheState, SlabCache};
use super::{SlabBackend, SlabFlags};
use crate::percpu::CpuStats;
use crate::platform::CpuLocal;
use core::fmt;

/// A snapshot of one cache's state and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
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
    /// The per-CPU layer's figures.
    pub cpu: CpuStats,
}

impl CacheStats {
    /// The statistics of `cache`, whose locked state is `st`.
    pub(crate) fn of<I: CpuLocal>(cache: &SlabCache<I>, st: &CacheState) -> Self {
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
            cpu: CpuStats::default(),
        }
    }

    /// Writes this cache's slabinfo line (with the statistics columns if asked).
    pub fn write_slabinfo_line(&self, w: &mut impl fmt::Write, statistics: bool) -> fmt::Result {
        write!(
            w,
            "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} {:>4}",
            self.name,
            self.active_objs,
            self.total_objs,
            self.slot_size,
            self.active_slabs,
            self.total_slabs,
            self.pages_per_slab
        )?;
        write!(w, " : {:>4} {:>3}", self.cpu.limit, self.cpu.batchcount)?;
        if statistics {
            let c = &self.cpu.counters;
            write!(
                w,
                " : {:>6} {:>7} {:>5} {:>4} {:>4} : {:>7} {:>5} {:>7} {:>5} {:>4} {:>6}",
                self.high,
                self.allocs,
                self.grown,
                self.reaped,
                self.errors,
                c.alloc_hit,
                c.alloc_miss,
                c.free_hit,
                c.free_miss,
                self.cpu.cached,
                self.cpu.lock_acquisitions
            )?;
        }
        writeln!(w)
    }
}

impl<B: SlabBackend, I: CpuLocal> SlabAllocator<B, I> {
    /// Writes `/proc/slabinfo` as Linux 2.4 did (version 1.1): a header line, then one
    /// line per cache, oldest first. Runs under the chain lock, so `w` must not create or
    /// destroy caches (it may allocate).
    pub fn slabinfo(&self, w: &mut impl fmt::Write) -> fmt::Result {
        self.write_slabinfo(w, false)
    }

    /// [`slabinfo`](Self::slabinfo) with 2.4's statistics columns (header
    /// `slabinfo - version: 1.1 (statistics)`).
    pub fn slabinfo_statistics(&self, w: &mut impl fmt::Write) -> fmt::Result {
        self.write_slabinfo(w, true)
    }

    fn write_slabinfo(&self, w: &mut impl fmt::Write, statistics: bool) -> fmt::Result {
        let suffix = if statistics { " (statistics)" } else { "" };
        writeln!(w, "slabinfo - version: 1.1{suffix}")?;
        let mut result = Ok(());
        self.for_each_stats(|stats| {
            if result.is_ok() {
                result = stats.write_slabinfo_line(w, statistics);
            }
        });
        result
    }
}
