//! Statistics of the two layers together, and the Linux 2.4 `/proc/slabinfo` format.
//!
//! ```text
//! slabinfo - version: 1.1
//! kmem_cache            29     36    384    3    3    1 :    0   0
//! size-32              118    118     32    1    1    1 :  120  60
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

use super::array::CpuCounters;
use super::{CacheDescriptor, CpuCaches};
use crate::platform::CpuLocal;
use crate::slab::{SlabBackend, SlabStats, Walk};
use crate::sync::atomic::Ordering;
use core::fmt;

/// One cache's per-CPU figures, summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Entries of arrays made from now on (0: no per-CPU arrays).
    pub limit: usize,
    /// Objects per refill or flush.
    pub batchcount: usize,
    /// CPUs with an array now.
    pub arrays: usize,
    /// Objects sitting in arrays now (counted as active by the slabs).
    pub cached: usize,
    /// The hit and miss counters, arrays freed since included.
    pub counters: CpuCounters,
}

/// A snapshot of one cache: its slabs and its arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// The slab layer's figures.
    pub slab: SlabStats,
    /// The per-CPU layer's.
    pub cpu: CpuStats,
}

impl CacheStats {
    /// The cache's name.
    pub fn name(&self) -> &'static str {
        self.slab.name
    }

    /// Writes this cache's slabinfo line (with the statistics columns if asked).
    pub fn write_slabinfo_line(&self, w: &mut impl fmt::Write, statistics: bool) -> fmt::Result {
        let s = &self.slab;
        write!(
            w,
            "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} {:>4}",
            s.name,
            s.active_objs,
            s.total_objs,
            s.slot_size,
            s.active_slabs,
            s.total_slabs,
            s.pages_per_slab
        )?;
        write!(w, " : {:>4} {:>3}", self.cpu.limit, self.cpu.batchcount)?;
        if statistics {
            let c = &self.cpu.counters;
            write!(
                w,
                " : {:>6} {:>7} {:>5} {:>4} {:>4} : {:>7} {:>5} {:>7} {:>5} {:>4} {:>6}",
                s.high,
                s.allocs,
                s.grown,
                s.reaped,
                s.errors,
                c.alloc_hit,
                c.alloc_miss,
                c.free_hit,
                c.free_miss,
                self.cpu.cached,
                s.lock_acquisitions
            )?;
        }
        writeln!(w)
    }
}

impl<B: SlabBackend, I: CpuLocal> CpuCaches<B, I> {
    /// The statistics of `cache`.
    pub fn stats(&self, cache: &CacheDescriptor<I>) -> CacheStats {
        CacheStats {
            slab: self.slab.stats(cache),
            cpu: self.cpu_stats(cache),
        }
    }

    /// The statistics of every cache, oldest first.
    pub fn for_each_stats(&self, mut f: impl FnMut(&CacheStats)) {
        self.slab
            .for_each_cache(Walk::OldestFirst, |cache| f(&self.stats(cache)));
    }

    /// The statistics of the cache called `name` (the first, if several are).
    pub fn stats_of(&self, name: &str) -> Option<CacheStats> {
        let mut found = None;
        self.for_each_stats(|s| {
            if found.is_none() && s.slab.name == name {
                found = Some(*s);
            }
        });
        found
    }

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

    /// The per-CPU figures of `cache`.
    fn cpu_stats(&self, cache: &CacheDescriptor<I>) -> CpuStats {
        // Keeps `tune` and the switch from freeing an array while it is read below.
        let _tuning =
            (!crate::seeded::on("stats_without_tuning_lock")).then(|| cache.front.tuning.lock());
        let on = self.per_cpu_enabled();
        let mut stats = CpuStats {
            limit: if on {
                cache.front.limit.load(Ordering::Relaxed)
            } else {
                0
            },
            batchcount: if on {
                cache.front.batchcount.load(Ordering::Relaxed)
            } else {
                0
            },
            counters: *cache.front.retired.lock(),
            ..CpuStats::default()
        };
        for cpu in 0..I::CPUS {
            if let Some(array) = cache.front.array(cpu) {
                stats.arrays += 1;
                stats.cached += array.avail();
                stats.counters.add(&array.counters());
            }
        }
        stats
    }
}
