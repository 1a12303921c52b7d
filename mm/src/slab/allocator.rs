//! [`SlabAllocator`]: the slab layer as one object. It owns the operations' [`Core`]
//! (backend and owner table), the cache of caches and the cache chain; it bootstraps,
//! and creates, destroys and reaps caches.
//!
//! Concurrency: see the lock order in the [module docs](super). The chain lock is taken
//! by create, destroy, reap, tuning and the walks (statistics, checks), never on the
//! allocation or free path (except [`SlabAllocator::reclaim`], which only tries it), and
//! a cache lock may be taken under it, never the other way round. It leaves interrupts
//! on: it is held across `on_each_cpu` (draining the per-CPU arrays), and a CPU waiting
//! for it must still answer that IPI. So no interrupt handler may wait for it.

use super::cache::SlabCache;
use super::geometry::Geometry;
use super::handle::Cache;
use super::list::SlabList;
use super::ops::{Core, ObjectInfo, SlabOptions};
use super::stats::CacheStats;
use super::{Constructor, Destructor, SlabBackend, SlabError, SlabFlags};
use crate::kmalloc::{KMALLOC_CLASSES, SizeClass};
use crate::platform::CpuLocal;
use crate::platform::PAGE_SIZE;
use crate::sync::{InterruptsOn, SpinLock};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

/// The list of all caches, oldest first (2.4's `cache_chain`).
struct Chain<I: CpuLocal> {
    first: Option<NonNull<SlabCache<I>>>,
    last: Option<NonNull<SlabCache<I>>>,
}

// SAFETY: the chain points to cache descriptors, which are `Sync`; it is only walked or
// changed under the chain lock.
unsafe impl<I: CpuLocal> Send for Chain<I> {}

fn ptr_of<I: CpuLocal>(cache: Option<NonNull<SlabCache<I>>>) -> *mut SlabCache<I> {
    cache.map_or(core::ptr::null_mut(), NonNull::as_ptr)
}

/// The slab layer: see the [module docs](super).
///
/// `B` is what it gets pages from (`&Heap`), `I` what its locks disable
/// ([`crate::sync::NoInterrupts`] hosted, the kernel's `cli`/`popf` type in the kernel).
pub struct SlabAllocator<B: SlabBackend, I: CpuLocal> {
    pub(crate) core: Core<B>,
    /// `kmem_cache`, whose first object is its own descriptor.
    pub(super) cache_cache: NonNull<SlabCache<I>>,
    chain: SpinLock<Chain<I>, InterruptsOn<I>>,
    /// The general caches (kmalloc).
    pub(crate) sizes: [SizeClass<I>; KMALLOC_CLASSES],
    debug: AtomicBool,
    /// The global switch of the per-CPU layer (`percpu.rs`).
    pub(crate) per_cpu: AtomicBool,
}

// SAFETY: the allocator's pointers are to cache descriptors (`Sync`, alive as long as the
// allocator, or until destroyed through the chain lock); everything mutable is behind a
// lock or atomic. So it may be shared and moved between CPUs, and kept in a static.
unsafe impl<B: SlabBackend + Send, I: CpuLocal> Send for SlabAllocator<B, I> {}
// SAFETY: see `Send`.
unsafe impl<B: SlabBackend, I: CpuLocal> Sync for SlabAllocator<B, I> {}

impl<B: SlabBackend, I: CpuLocal> SlabAllocator<B, I> {
    /// Starts the slab layer over `backend`: the owner table, the cache of caches (the
    /// bootstrap in the [module docs](super)), and the general caches of kmalloc. No slab
    /// is made for them yet except the first slab of `kmem_cache`.
    pub fn new(backend: B, options: SlabOptions) -> Result<Self, SlabError> {
        let core = Core::new(backend, options.reporter)?;
        let cache_cache = Self::bootstrap(&core)?;
        let mut this = Self {
            core,
            cache_cache,
            chain: SpinLock::new(Chain {
                first: None,
                last: None,
            }),
            sizes: [const { SizeClass::EMPTY }; KMALLOC_CLASSES],
            debug: AtomicBool::new(options.debug),
            per_cpu: AtomicBool::new(!options.no_per_cpu),
        };
        this.link(cache_cache);
        this.create_general_caches()?;
        Ok(this)
    }

    /// The bootstrap of `kmem_cache`, SOS's `create_cache_of_caches`: see the
    /// [module docs](super).
    fn bootstrap(core: &Core<B>) -> Result<NonNull<SlabCache<I>>, SlabError> {
        // Not debugged: cache descriptors may be read by a racing bad free after they
        // were freed (see `Core::owner`), so a free descriptor keeps its last contents.
        let flags = SlabFlags::HWCACHE_ALIGN | SlabFlags::NO_REAP;
        let size = core::mem::size_of::<SlabCache<I>>();
        let align = core::mem::align_of::<SlabCache<I>>();
        let geo = Geometry::compute(size, align, flags, false, 0)?;
        // 1. The descriptor of the cache of caches, in a temporary.
        let temp = SlabCache::<I>::new("kmem_cache", geo, None, None, None, false);
        // 2. Its first slab; the owner table names the temporary for now.
        core.grow(&temp)?;
        // 3. The real descriptor's home: the first object of that slab.
        let home = match core.alloc(&temp) {
            Ok(home) => home.cast::<SlabCache<I>>(),
            Err(error) => {
                core.shrink(&temp);
                return Err(error);
            }
        };
        // 4. Move the descriptor home...
        // SAFETY: `home` is an object of `kmem_cache`: `size_of::<SlabCache<I>>()` bytes
        // aligned for it, allocated to us.
        unsafe { home.write(temp) };
        // SAFETY: just written.
        let real = unsafe { home.as_ref() };
        // ... and tie the knot: the slab's pages now name the real descriptor.
        let st = real.state.lock();
        for list in [&st.full, &st.partial, &st.free] {
            for slab in list.iter() {
                // SAFETY: a slab of `real`, whose lock we hold.
                let base = unsafe { slab.get_mut(geo.num) }.base().addr().get();
                core.owners
                    .set(base, geo.pages(), real.as_owner(), slab.as_ptr());
            }
        }
        drop(st);
        Ok(home)
    }

    /// The cache of caches.
    fn cache_cache(&self) -> &SlabCache<I> {
        // SAFETY: `kmem_cache` lives as long as the allocator.
        unsafe { self.cache_cache.as_ref() }
    }

    /// Turns the global debug switch on or off: caches created from now on get (or do
    /// not get) red zones and poisoning, whatever their flags say. Existing caches keep
    /// their layout.
    pub fn set_debug(&self, on: bool) {
        self.debug.store(on, Ordering::Relaxed);
    }

    /// The global debug switch.
    pub fn debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// Creates a cache of `size`-byte objects aligned to `align` (0: a word) (2.4's
    /// `kmem_cache_create`). `ctor` runs on every object when its slab is made, `dtor`
    /// when it is unmade: free objects stay constructed. No memory is taken until the
    /// first allocation, except the cache's descriptor (from `kmem_cache`).
    pub fn create_cache(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Constructor>,
        dtor: Option<Destructor>,
    ) -> Result<Cache<'_, B, I>, SlabError> {
        if flags.contains(SlabFlags::GENERAL) {
            return Err(SlabError::InvalidFlags { flags });
        }
        let cache = self.create_raw(name, size, align, flags, ctor, dtor)?;
        Ok(Cache { slab: self, cache })
    }

    /// `create_cache` without the handle (the general caches).
    pub(crate) fn create_raw(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Constructor>,
        dtor: Option<Destructor>,
    ) -> Result<NonNull<SlabCache<I>>, SlabError> {
        let general = flags.contains(SlabFlags::GENERAL);
        let flags = flags.without(SlabFlags::GENERAL);
        let flags = if self.debug() {
            flags | SlabFlags::DEBUG
        } else {
            flags
        };
        let geo = Geometry::compute(
            size,
            align,
            flags,
            ctor.is_some() || dtor.is_some(),
            self.offslab_desc_max(),
        )?;
        let desc_cache = if geo.off_slab {
            let desc_cache = self.desc_cache_for(geo.desc_size);
            Some(desc_cache.ok_or(SlabError::InvalidSize { size })?)
        } else {
            None
        };
        let home = self.core.alloc(self.cache_cache())?.cast::<SlabCache<I>>();
        // SAFETY: an object of `kmem_cache`, sized and aligned for a descriptor, ours.
        unsafe { home.write(SlabCache::new(name, geo, ctor, dtor, desc_cache, general)) };
        self.link(home);
        Ok(home)
    }

    /// The general caches that may hold off-slab descriptors: the on-slab, normal-zone
    /// ones (so that growing one never needs a descriptor from elsewhere).
    fn desc_caches(&self) -> impl Iterator<Item = (NonNull<SlabCache<I>>, &SlabCache<I>)> + '_ {
        self.sizes
            .iter()
            .filter_map(|class| class.normal)
            .filter_map(|ptr| {
                // SAFETY: general caches live as long as the allocator.
                let cache = unsafe { ptr.as_ref() };
                (!cache.geo.off_slab).then_some((ptr, cache))
            })
    }

    /// The largest descriptor a descriptor cache can hold (0 before the general caches).
    fn offslab_desc_max(&self) -> usize {
        self.desc_caches()
            .map(|(_, c)| c.geo.usable)
            .max()
            .unwrap_or(0)
    }

    /// The smallest descriptor cache for `bytes`-byte descriptors.
    fn desc_cache_for(&self, bytes: usize) -> Option<NonNull<SlabCache<I>>> {
        self.desc_caches()
            .find(|(_, c)| c.geo.usable >= bytes)
            .map(|(ptr, _)| ptr)
    }

    /// Adds a cache at the end of the chain.
    fn link(&self, ptr: NonNull<SlabCache<I>>) {
        let mut chain = self.chain.lock();
        // SAFETY: `ptr` is a live descriptor; the chain lock protects the links.
        let cache = unsafe { ptr.as_ref() };
        cache
            .chain_next
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        cache
            .chain_prev
            .store(ptr_of(chain.last), Ordering::Relaxed);
        match chain.last {
            // SAFETY: caches on the chain are live.
            Some(last) => unsafe { last.as_ref() }
                .chain_next
                .store(ptr.as_ptr(), Ordering::Relaxed),
            None => chain.first = Some(ptr),
        }
        chain.last = Some(ptr);
    }

    /// Removes a cache from the chain.
    fn unlink(&self, ptr: NonNull<SlabCache<I>>) {
        let mut chain = self.chain.lock();
        // SAFETY: `ptr` is on the chain, so live; so are its neighbours.
        let cache = unsafe { ptr.as_ref() };
        let next = NonNull::new(cache.chain_next.load(Ordering::Relaxed));
        let prev = NonNull::new(cache.chain_prev.load(Ordering::Relaxed));
        match prev {
            // SAFETY: as above.
            Some(p) => unsafe { p.as_ref() }
                .chain_next
                .store(ptr_of(next), Ordering::Relaxed),
            None => chain.first = next,
        }
        match next {
            // SAFETY: as above.
            Some(n) => unsafe { n.as_ref() }
                .chain_prev
                .store(ptr_of(prev), Ordering::Relaxed),
            None => chain.last = prev,
        }
    }

    /// Calls `f` on every cache, oldest first, under the chain lock (`f` may take the
    /// cache's lock, but must not create or destroy caches).
    pub(crate) fn for_each_cache(&self, mut f: impl FnMut(&SlabCache<I>)) {
        let chain = self.chain.lock();
        let mut next = chain.first;
        while let Some(ptr) = next {
            // SAFETY: caches on the chain are live while we hold the chain lock.
            let cache = unsafe { ptr.as_ref() };
            f(cache);
            next = NonNull::new(cache.chain_next.load(Ordering::Relaxed));
        }
        drop(chain);
    }

    /// [`for_each_cache`](Self::for_each_cache), newest first.
    fn for_each_cache_newest_first(&self, mut f: impl FnMut(&SlabCache<I>)) {
        let chain = self.chain.lock();
        let mut next = chain.last;
        while let Some(ptr) = next {
            // SAFETY: caches on the chain are live while we hold the chain lock.
            let cache = unsafe { ptr.as_ref() };
            f(cache);
            next = NonNull::new(cache.chain_prev.load(Ordering::Relaxed));
        }
        drop(chain);
    }

    /// Destroys a cache with no object allocated: unmakes its slabs (running the
    /// destructors) and frees its descriptor. A cache with live objects is left as it
    /// was (2.4's `kmem_cache_destroy`).
    pub(super) fn destroy_raw(&self, ptr: NonNull<SlabCache<I>>) -> Result<(), SlabError> {
        // SAFETY: `ptr` is a live cache (the caller owns its handle, or is `drop`).
        let cache = unsafe { ptr.as_ref() };
        // Objects in per-CPU arrays are free to the user but allocated to the slabs.
        self.drain(cache, true);
        self.unlink(ptr);
        let mut all = SlabList::new();
        {
            let mut guard = cache.state.lock();
            let st = &mut *guard;
            let live = st.counters.active - st.counters.quarantined;
            if live > 0 || st.growing > 0 {
                drop(guard);
                self.link(ptr);
                return Err(SlabError::Busy {
                    cache: cache.name,
                    active: live,
                });
            }
            for list in [&mut st.full, &mut st.partial, &mut st.free] {
                cache.forget_owners(list, &self.core.owners);
                while let Some(slab) = list.pop_front() {
                    // SAFETY: just unlinked from the cache: on no list.
                    unsafe { all.push_front(slab) };
                }
            }
            st.counters.reaped += all.len() as u64;
        }
        while let Some(slab) = all.pop_front() {
            // SAFETY: unlinked from the cache and the owner table under its lock.
            unsafe { self.core.unmake_slab(cache, slab) };
        }
        let freed = self.core.free(self.cache_cache(), ptr.addr().get());
        debug_assert_eq!(freed, Ok(()), "descriptor of {}", cache.name);
        Ok(())
    }

    /// Gives back the free slabs of every cache not flagged `NO_REAP` (2.4's
    /// `kmem_cache_reap`, for memory pressure). Caches that are growing right now, or
    /// grew since the last reap, are skipped (once): they are busy, and their free slabs
    /// are about to be used. Returns the pages released.
    ///
    /// 2.4 frees 80% of the free slabs of the one cache with the most free pages; here
    /// every eligible cache gives all of its free slabs, which is simpler to reason about
    /// and what a caller under pressure wants.
    pub fn reap(&self) -> usize {
        let mut pages = 0;
        // Newest first: an off-slab cache is younger than the small general caches that
        // hold its slab descriptors, so its slabs free their descriptors before those
        // caches are shrunk, and one pass gives everything back.
        self.for_each_cache_newest_first(|cache| {
            if cache.geo.flags.contains(SlabFlags::NO_REAP) {
                return;
            }
            self.drain(cache, false);
            {
                let mut st = cache.state.lock();
                if st.growing > 0 {
                    return;
                }
                if st.grown_recently {
                    st.grown_recently = false;
                    return;
                }
            }
            pages += self.core.shrink(cache);
        });
        pages
    }

    /// Gives back the free slabs of every cache not flagged `NO_REAP`, when memory ran
    /// out (an allocation calls it once before failing). Unlike [`reap`](Self::reap) it
    /// can run anywhere, an interrupt handler included: it drains no per-CPU arrays
    /// (that needs IPIs), ignores the "grew recently" hint, and gives up at once if the
    /// chain lock is busy. Returns the pages released.
    pub fn reclaim(&self) -> usize {
        let Some(chain) = self.chain.try_lock() else {
            return 0;
        };
        let mut pages = 0;
        // Newest first, as in `reap`.
        let mut next = chain.last;
        while let Some(ptr) = next {
            // SAFETY: caches on the chain are live while we hold the chain lock.
            let cache = unsafe { ptr.as_ref() };
            if !cache.geo.flags.contains(SlabFlags::NO_REAP) {
                pages += self.core.shrink(cache);
            }
            next = NonNull::new(cache.chain_prev.load(Ordering::Relaxed));
        }
        drop(chain);
        pages
    }

    /// Grows `cache`; when memory is out, reclaims free slabs and tries once more.
    pub(crate) fn grow_or_reclaim(&self, cache: &SlabCache<I>) -> Result<(), SlabError> {
        match self.core.grow(cache) {
            Err(SlabError::OutOfMemory) if self.reclaim() > 0 => self.core.grow(cache),
            result => result,
        }
    }

    /// Where `addr` lies, if inside an object of some slab (a debugging aid, 2.4's
    /// `kmem_ptr_validate`): the cache, the object, its slab.
    pub fn object_info(&self, addr: usize) -> Option<ObjectInfo> {
        self.core.object_info::<I>(addr)
    }

    /// Checks every invariant of every cache, and that `kmem_cache` holds exactly the
    /// descriptors of the caches on the chain; panics on the first one broken. Expensive:
    /// tests and kernel self-tests only.
    pub fn check_invariants(&self) {
        let mut caches = 0;
        self.for_each_cache(|cache| {
            caches += 1;
            let st = cache.state.lock();
            // Includes: every page of every slab names (this cache, that slab).
            cache.check(&st, &self.core.owners);
        });
        // Conversely, every entry that names a cache names one on the chain, and one of
        // its slabs that covers the page: no stale entry survives a slab or a cache.
        self.core.owners.for_each_named(|addr, owner, slab| {
            let mut found = false;
            self.for_each_cache(|cache| {
                if cache.as_owner() != owner {
                    return;
                }
                let st = cache.state.lock();
                let pages = cache.geo.pages();
                found = [&st.full, &st.partial, &st.free].iter().any(|list| {
                    list.iter().any(|s| {
                        // SAFETY: a slab on a list of this cache, whose lock we hold.
                        let base = unsafe { s.get_mut(cache.geo.num) }.base().addr().get();
                        s.as_ptr() == slab && (base..base + pages * PAGE_SIZE).contains(&addr)
                    })
                });
            });
            assert!(found, "stale owner-table entry for page {addr:#x}");
        });
        let st = self.cache_cache().state.lock();
        assert_eq!(
            st.counters.active, caches,
            "kmem_cache objects vs caches on the chain"
        );
    }

    /// The statistics of every cache, oldest first.
    pub fn for_each_stats(&self, mut f: impl FnMut(&CacheStats)) {
        self.for_each_cache(|cache| {
            let mut stats = CacheStats::of(cache, &cache.state.lock());
            stats.cpu = self.cpu_stats(cache);
            f(&stats);
        });
    }

    /// The statistics of the cache called `name` (the first, if several are).
    pub fn stats_of(&self, name: &str) -> Option<CacheStats> {
        let mut found = None;
        self.for_each_stats(|s| {
            if found.is_none() && s.name == name {
                found = Some(*s);
            }
        });
        found
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.core.backend
    }
}

impl<B: SlabBackend, I: CpuLocal> Drop for SlabAllocator<B, I> {
    /// Gives everything back when no object is left (hosted tests; the kernel never drops
    /// its allocator): every cache's slabs and descriptor, newest first (so that off-slab
    /// descriptors go back before their caches), then the slabs of `kmem_cache`, then
    /// (in `Core`) the owner table. Caches that still have objects are left alone, and so
    /// is everything they need.
    fn drop(&mut self) {
        let cache_cache = self.cache_cache;
        for pass in 0..2 {
            let mut next = self.chain.get_mut().last;
            while let Some(ptr) = next {
                // SAFETY: caches on the chain are live; `&mut self` excludes other users.
                next = NonNull::new(unsafe { ptr.as_ref() }.chain_prev.load(Ordering::Relaxed));
                if ptr == cache_cache {
                    continue;
                }
                if pass == 0 {
                    // SAFETY: as above.
                    self.core.shrink(unsafe { ptr.as_ref() });
                } else {
                    // A busy cache stays, with its slabs.
                    let _ = self.destroy_raw(ptr);
                }
            }
        }
        let cache = self.cache_cache();
        let mut guard = cache.state.lock();
        let st = &mut *guard;
        if st.counters.active != 1 {
            // Some cache could not go: keep `kmem_cache` (its descriptors are in use).
            return;
        }
        let home_slab = self
            .core
            .owners
            .entry(cache_cache.addr().get())
            .map(|e| e.slab.load(Ordering::Relaxed));
        let num = cache.geo.num;
        let mut home = None;
        for list in [&mut st.full, &mut st.partial, &mut st.free] {
            while let Some(slab) = list.pop_front() {
                // SAFETY: a slab of `kmem_cache`, just unlinked, under its lock.
                let base = unsafe { slab.get_mut(num) }.base().addr().get();
                self.core.owners.clear(base, cache.geo.pages());
                if Some(slab.as_ptr()) == home_slab {
                    home = Some(base);
                } else {
                    self.core.backend.free_pages(base);
                }
            }
        }
        drop(guard);
        // Last, the slab that holds `kmem_cache`'s own descriptor: nothing may touch the
        // descriptor after this.
        if let Some(base) = home {
            self.core.backend.free_pages(base);
        }
    }
}
