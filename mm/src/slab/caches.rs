//! [`SlabCaches`]: layer 2 as one object. It owns the operations' [`Core`] (backend and
//! owner table), the cache of caches, the cache chain and the general caches; it
//! bootstraps, creates, destroys, shrinks and reaps caches, and allocates and frees
//! objects straight from the slabs.
//!
//! It knows nothing of the layer above except that every cache descriptor carries a
//! [`CacheFront`] for it (the per-CPU arrays, 2.4's `cpudata[]` in `kmem_cache_t`),
//! which it creates with the cache and otherwise leaves alone. The slab layer alone is
//! `SlabCaches<B, I, ()>`.

use super::cache::{CacheFront, SlabCache};
use super::chain::{Chain, Walk};
use super::general::SizeClass;
use super::geometry::Geometry;
use super::list::SlabList;
use super::ops::{Core, ObjectInfo, Owner, Refused, SlabOptions};
use super::stats::SlabStats;
use super::{Constructor, Destructor, KMALLOC_CLASSES, SlabBackend, SlabError, SlabFlags};
use crate::platform::{InterruptControl, PAGE_SIZE};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{InterruptsOn, SpinLock};
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// The slab layer: see the [module docs](super).
///
/// `B` is what it gets pages from (`&Heap`), `I` what its cache locks disable
/// ([`NoInterrupts`](crate::platform::NoInterrupts) hosted, the kernel's `cli`/`popf` type in the kernel), `F` what the
/// layer above keeps in every cache descriptor.
pub struct SlabCaches<B: SlabBackend, I: InterruptControl, F: CacheFront> {
    core: Core<B>,
    /// `kmem_cache`, whose first object is its own descriptor.
    cache_cache: NonNull<SlabCache<I, F>>,
    /// Held across `on_each_cpu` by the layer above (drains): see `chain.rs`.
    pub(super) chain: SpinLock<Chain<I, F>, InterruptsOn<I>>,
    /// The general caches.
    pub(super) sizes: [SizeClass<I, F>; KMALLOC_CLASSES],
    debug: AtomicBool,
}

// SAFETY: the slab layer's pointers are to cache descriptors (`Sync`, alive as long as
// it is, or until destroyed through the chain lock); everything mutable is behind a
// lock or atomic. So it may be shared and moved between CPUs, and kept in a static.
unsafe impl<B: SlabBackend + Send, I: InterruptControl, F: CacheFront> Send
    for SlabCaches<B, I, F>
{
}
// SAFETY: see `Send`.
unsafe impl<B: SlabBackend, I: InterruptControl, F: CacheFront> Sync for SlabCaches<B, I, F> {}

impl<B: SlabBackend, I: InterruptControl, F: CacheFront> SlabCaches<B, I, F> {
    /// Starts the slab layer over `backend`: the owner table, the cache of caches (the
    /// bootstrap in the [module docs](super)), and the general caches. No slab is made
    /// for them yet except the first slab of `kmem_cache`.
    pub fn new(backend: B, options: SlabOptions) -> Result<Self, SlabError> {
        let core = Core::new(backend, options.reporter)?;
        let cache_cache = Self::bootstrap(&core)?;
        let mut this = Self {
            core,
            cache_cache,
            chain: SpinLock::new(Chain::EMPTY),
            sizes: [const { SizeClass::EMPTY }; KMALLOC_CLASSES],
            debug: AtomicBool::new(options.debug),
        };
        this.chain.get_mut().push_back(cache_cache);
        this.create_general_caches()?;
        Ok(this)
    }

    /// The bootstrap of `kmem_cache`, SOS's `create_cache_of_caches`: see the
    /// [module docs](super).
    fn bootstrap(core: &Core<B>) -> Result<NonNull<SlabCache<I, F>>, SlabError> {
        // Not debugged: cache descriptors may be read by a racing bad free after they
        // were freed (see `Core::owner`), so a free descriptor keeps its last contents.
        let flags = SlabFlags::HWCACHE_ALIGN | SlabFlags::NO_REAP;
        let size = core::mem::size_of::<SlabCache<I, F>>();
        let align = core::mem::align_of::<SlabCache<I, F>>();
        let geo = Geometry::compute(size, align, flags, false, 0)?;
        // 1. The descriptor of the cache of caches, in a temporary.
        let temp = SlabCache::<I, F>::new("kmem_cache", geo, None, None, None, false);
        // 2. Its first slab; the owner table names the temporary for now.
        core.grow(&temp)?;
        // 3. The real descriptor's home: the first object of that slab.
        let home = match core.alloc(&temp) {
            Ok(home) => home.cast::<SlabCache<I, F>>(),
            Err(error) => {
                core.shrink(&temp);
                return Err(error);
            }
        };
        // 4. Move the descriptor home...
        // SAFETY: `home` is an object of `kmem_cache`: `size_of::<SlabCache<I, F>>()` bytes
        // aligned for it, allocated to us.
        unsafe { home.write(temp) };
        // SAFETY: just written.
        let real = unsafe { home.as_ref() };
        real.front.placed();
        // ... and tie the knot: the slab's pages now name the real descriptor.
        let st = real.state.lock();
        for list in [&st.full, &st.partial, &st.free] {
            for slab in list.iter() {
                // SAFETY: a slab of `real`, whose lock we hold.
                let view = unsafe { slab.get_mut(geo.num) };
                let base = view.base().addr().get();
                core.owners
                    .set(base, geo.pages(), real.as_owner(), slab.as_ptr());
            }
        }
        drop(st);
        Ok(home)
    }

    /// The cache of caches.
    fn cache_cache(&self) -> &SlabCache<I, F> {
        // SAFETY: `kmem_cache` lives as long as the slab layer.
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
    /// first allocation, except the cache's descriptor (from `kmem_cache`). The cache
    /// lives until [`destroy`](Self::destroy).
    pub fn create(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Constructor>,
        dtor: Option<Destructor>,
    ) -> Result<NonNull<SlabCache<I, F>>, SlabError> {
        if flags.contains(SlabFlags::GENERAL) {
            return Err(SlabError::InvalidFlags { flags });
        }
        self.create_raw(name, size, align, flags, ctor, dtor)
    }

    /// [`create`](Self::create), general caches included.
    pub(super) fn create_raw(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Constructor>,
        dtor: Option<Destructor>,
    ) -> Result<NonNull<SlabCache<I, F>>, SlabError> {
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
        let home = self
            .core
            .alloc(self.cache_cache())?
            .cast::<SlabCache<I, F>>();
        // SAFETY: an object of `kmem_cache`, sized and aligned for a descriptor, ours.
        unsafe { home.write(SlabCache::new(name, geo, ctor, dtor, desc_cache, general)) };
        // SAFETY: just written; nobody else has it yet.
        unsafe { home.as_ref() }.front.placed();
        self.chain.lock().push_back(home);
        Ok(home)
    }

    /// Destroys a cache with no object allocated: unmakes its slabs (running the
    /// destructors) and frees its descriptor. A cache with live objects is left as it
    /// was (2.4's `kmem_cache_destroy`).
    ///
    /// The layer above must have taken back whatever it keeps of the cache's objects
    /// (the per-CPU arrays: free to their users, allocated to the slabs).
    ///
    /// # Safety
    ///
    /// `ptr` is a live cache of this slab layer, created by [`create`](Self::create),
    /// that no one else destroys or uses meanwhile.
    pub unsafe fn destroy(&self, ptr: NonNull<SlabCache<I, F>>) -> Result<(), SlabError> {
        // SAFETY: a live cache (caller).
        let cache = unsafe { ptr.as_ref() };
        self.chain.lock().remove(ptr);
        let mut all = SlabList::new();
        {
            let mut guard = cache.state.lock();
            let st = &mut *guard;
            let live = st.counters.active - st.counters.quarantined;
            if live > 0 || st.growing > 0 {
                drop(guard);
                self.chain.lock().push_back(ptr);
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
    ///
    /// `prepare` runs on each eligible cache before it is looked at: the per-CPU layer
    /// drains its arrays there, so that the objects they hold count as free.
    pub fn reap(&self, mut prepare: impl FnMut(&SlabCache<I, F>)) -> usize {
        let mut pages = 0;
        self.for_each_cache(Walk::NewestFirst, |cache| {
            if cache.geo.flags.contains(SlabFlags::NO_REAP) {
                return;
            }
            prepare(cache);
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
    /// can run anywhere, an interrupt handler included: it prepares nothing (the per-CPU
    /// layer would need IPIs to drain its arrays), ignores the "grew recently" hint, and gives up at once if the
    /// chain lock is busy. Returns the pages released.
    pub fn reclaim(&self) -> usize {
        let Some(chain) = self.chain.try_lock() else {
            return 0;
        };
        let mut pages = 0;
        chain.walk(Walk::NewestFirst, |ptr| {
            // SAFETY: caches on the chain are live while we hold the chain lock.
            let cache = unsafe { ptr.as_ref() };
            if !cache.geo.flags.contains(SlabFlags::NO_REAP) {
                pages += self.core.shrink(cache);
            }
        });
        drop(chain);
        pages
    }

    /// Adds a slab to `cache` (2.4's `kmem_cache_grow`), or `OutOfMemory`.
    pub fn grow(&self, cache: &SlabCache<I, F>) -> Result<(), SlabError> {
        self.core.grow(cache)
    }

    /// Grows `cache`; when memory is out, reclaims free slabs and tries once more.
    pub fn grow_or_reclaim(&self, cache: &SlabCache<I, F>) -> Result<(), SlabError> {
        match self.core.grow(cache) {
            Err(SlabError::OutOfMemory) if self.reclaim() > 0 => self.core.grow(cache),
            result => result,
        }
    }

    /// One object of `cache`, straight from its slabs (2.4's `kmem_cache_alloc` without
    /// the per-CPU array): growing the cache, and reclaiming once when memory is out.
    pub fn alloc(&self, cache: &SlabCache<I, F>) -> Result<NonNull<u8>, SlabError> {
        match self.core.alloc(cache) {
            Err(SlabError::OutOfMemory) if self.reclaim() > 0 => self.core.alloc(cache),
            result => result,
        }
    }

    /// Up to `out.len()` objects of `cache`, taking its lock once (and once more after
    /// each slab it has to grow). Returns how many were stored at the front of `out`:
    /// fewer only when memory ran out after at least one, `Err` when none could be had.
    pub fn alloc_batch(
        &self,
        cache: &SlabCache<I, F>,
        out: &mut [*mut u8],
    ) -> Result<usize, SlabError> {
        self.core.alloc_batch(cache, out)
    }

    /// Moves up to `out.len()` objects of `cache` into the front of `out` under one
    /// acquisition of its lock, without growing it (a per-CPU refill, which grows with
    /// interrupts on when this returns 0). Returns how many.
    pub fn take_batch(&self, cache: &SlabCache<I, F>, out: &mut [MaybeUninit<*mut u8>]) -> usize {
        let (n, quarantined) = cache.take_batch(&mut cache.state.lock(), out);
        if let Some(error) = quarantined {
            self.core.report(&error);
        }
        n
    }

    /// Frees `addr` into `cache` (2.4's `kmem_cache_free` without the array), with every
    /// check: the page's owner, the object start, the allocation bitmap, the red zones.
    /// The live map is the caller's business: a user's free takes the mark first
    /// ([`take_live`](Self::take_live)); the allocator's own objects have none.
    pub fn free(&self, cache: &SlabCache<I, F>, addr: usize) -> Result<(), SlabError> {
        self.core.free(cache, addr)
    }

    /// Frees every object of `objects` into `cache` under one acquisition of its lock
    /// (a per-CPU flush), each checked as by [`free`](Self::free). Every valid object is
    /// freed; the first error is returned.
    pub fn free_batch(
        &self,
        cache: &SlabCache<I, F>,
        objects: &[*mut u8],
    ) -> Result<(), SlabError> {
        self.core.free_batch(cache, objects)
    }

    /// Frees `addr` into the general cache that owns its page (`kfree` of a slab
    /// object); `Err(None)` when the page is the first page of a large kmalloc.
    pub fn free_general(&self, addr: usize) -> Result<(), Option<SlabError>> {
        self.core.free_any::<I, F>(addr)
    }

    /// The owner of the page of `addr`, read without a lock (see `owner.rs`).
    #[inline]
    pub fn owner(&self, addr: usize) -> Owner<'_, I, F> {
        self.core.owner(addr)
    }

    /// Marks `addr`, inside the run of pages from `start` that the layer above got from
    /// the backend, as a large block (see `owner.rs`), so that [`owner`](Self::owner)
    /// reports it and [`claim_large`](Self::claim_large) can take it back. False when
    /// `addr` is outside the window.
    pub fn mark_large(&self, addr: usize, start: usize) -> bool {
        self.core
            .owners
            .mark_large(addr, self.core.backend.pointer_to(start))
    }

    /// Takes the mark of the large block at `addr` back, and returns the start of its
    /// run: exactly one of two racing claims of one block wins. `None` when `addr` is
    /// not a marked large block.
    pub fn claim_large(&self, addr: usize) -> Option<usize> {
        self.core.owners.claim_large(addr)
    }

    /// Records that the object at `addr` is now in a user's hands (the live map, see
    /// `live.rs`): every path that hands an object of this layer to a user calls it.
    ///
    /// # Safety
    ///
    /// `addr` is an object this layer handed out (to an array or to the caller), not
    /// in a user's hands yet.
    #[inline]
    pub unsafe fn mark_live(&self, addr: usize) {
        // SAFETY: an object of a slab, so of a region the live map covers (slabs are
        // covered when grown), and not marked (caller).
        unsafe { self.core.owners.live.mark(addr) };
    }

    /// Takes the live mark of `addr` for a free that does not know the cache (`kfree`):
    /// `Ok(Some(cache))`, the cache whose object started at `addr` and was in a user's
    /// hands, now the caller's to free (or, if the cache is not one it may free into, to
    /// [`put_back_live`](Self::put_back_live)); `Ok(None)`: the mark was taken but the
    /// page names no cache (not possible; put it back); `Err(())`, with nothing changed,
    /// when no live object starts at `addr`.
    #[inline]
    #[allow(clippy::result_unit_err)]
    pub fn take_live_object(&self, addr: usize) -> Result<Option<&SlabCache<I, F>>, ()> {
        self.core.take_live_object(addr)
    }

    /// Puts back the mark [`take_live_object`](Self::take_live_object) took.
    pub fn put_back_live(&self, addr: usize) {
        self.core.put_back_live(addr);
    }

    /// Takes the live mark of `addr` for a user's free into `cache`: `Ok` when `addr`
    /// started an object of `cache` in a user's hands, which is now the caller's to
    /// free (to an array or to the slabs); otherwise nothing changed, and
    /// [`refuse_free`](Self::refuse_free) names the error (a double free, a pointer that
    /// starts no live object, another cache's object). No lock.
    #[inline]
    pub fn take_live(&self, cache: &SlabCache<I, F>, addr: usize) -> Result<(), Refused> {
        self.core.take_live(cache, addr)
    }

    /// The error of a free that [`take_live`](Self::take_live) refused, judged under the
    /// cache lock, counted and reported; nothing changes. Always `Err`.
    #[inline]
    pub fn refuse_free(
        &self,
        cache: &SlabCache<I, F>,
        addr: usize,
        refused: Refused,
    ) -> Result<(), SlabError> {
        self.core.refuse_free(cache, addr, refused)
    }

    /// Pages the live map holds (one per 256 KiB region of the window that ever held a
    /// slab; kept until this layer is dropped).
    pub fn live_map_pages(&self) -> usize {
        self.core.owners.live.pages()
    }

    /// True while an object starting at `addr` is in a user's hands (a snapshot).
    pub fn is_live(&self, addr: usize) -> bool {
        self.core.owners.live.is_live(addr)
    }

    /// Passes `error` to the reporter.
    pub fn report(&self, error: &SlabError) {
        self.core.report(error);
    }

    /// Counts an error that the layer above detected in `cache`'s statistics, and
    /// reports it.
    pub fn count_error(&self, cache: &SlabCache<I, F>, error: &SlabError) {
        cache.state.lock().counters.errors += 1;
        self.core.report(error);
    }

    /// Gives back every free slab of `cache` (2.4's `kmem_cache_shrink`, without the
    /// drain of the arrays above); returns the pages released.
    pub fn shrink(&self, cache: &SlabCache<I, F>) -> usize {
        self.core.shrink(cache)
    }

    /// The statistics of `cache`.
    pub fn stats(&self, cache: &SlabCache<I, F>) -> SlabStats {
        SlabStats::of(cache, &cache.state.lock())
    }

    /// Where `addr` lies, if inside an object of some slab (a debugging aid, 2.4's
    /// `kmem_ptr_validate`): the cache, the object, its slab.
    pub fn object_info(&self, addr: usize) -> Option<ObjectInfo> {
        self.core.object_info::<I, F>(addr)
    }

    /// Checks every invariant of every cache, and that `kmem_cache` holds exactly the
    /// descriptors of the caches on the chain; panics on the first one broken. Expensive:
    /// tests and kernel self-tests only.
    pub fn check_invariants(&self) {
        let mut caches = 0;
        self.for_each_cache(Walk::OldestFirst, |cache| {
            caches += 1;
            let st = cache.state.lock();
            // Includes: every page of every slab names (this cache, that slab).
            cache.check(&st, &self.core.owners);
        });
        // Conversely, every entry that names a cache names one on the chain, and one of
        // its slabs that covers the page: no stale entry survives a slab or a cache.
        self.core.owners.for_each_named(|addr, owner, slab| {
            let mut found = false;
            self.for_each_cache(Walk::OldestFirst, |cache| {
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

    /// The descriptor of `kmem_cache` (tests of the bootstrap).
    #[cfg(test)]
    pub(crate) fn cache_cache_ptr(&self) -> NonNull<SlabCache<I, F>> {
        self.cache_cache
    }

    /// The owner-table entry of the page of `addr` (tests of the owner table).
    #[cfg(test)]
    pub(crate) fn owner_entry(&self, addr: usize) -> Option<&super::owner::PageEntry> {
        self.core.owners.entry(addr)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.core.backend
    }
}

impl<B: SlabBackend, I: InterruptControl, F: CacheFront> Drop for SlabCaches<B, I, F> {
    /// Gives everything back when no object is left (hosted tests; the kernel never drops
    /// its allocator): every cache's slabs and descriptor, newest first (so that off-slab
    /// descriptors go back before their caches), then the slabs of `kmem_cache`, then
    /// (in `Core`) the owner table. Caches that still have objects are left alone, and so
    /// is everything they need.
    fn drop(&mut self) {
        let cache_cache = self.cache_cache;
        for pass in 0..2 {
            // By hand rather than with `Chain::walk`: `destroy` takes the chain lock.
            let mut next = self.chain.get_mut().last();
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
                    // SAFETY: as above; each cache is destroyed once.
                    let _ = unsafe { self.destroy(ptr) };
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
