//! The operations on one cache: allocate, free (through the cache or from the address
//! alone), grow, shrink, and unmake a slab (Linux 2.4's `kmem_cache_alloc`,
//! `kmem_cache_free`, `kfree`, `kmem_cache_grow`, `kmem_cache_shrink`).
//!
//! They live in [`Core`], which needs only the backend and the owner table, not the
//! allocator object: that is what lets the cache of caches be grown before the allocator
//! exists (the bootstrap, in `caches.rs`).
//!
//! Concurrency: see the lock order in the [module docs](super). These methods take a
//! cache lock for short sections and never hold it across a call to the backend, a
//! constructor, a destructor, the reporter, or another cache's lock.

use super::cache::{CacheFront, FreeFault, SlabCache, Taken};
use super::descriptor::Slab;
use super::owner::{LARGE, OwnerTable};
use super::{SlabBackend, SlabError, SlabFlags};
use crate::platform::InterruptControl;
use crate::sync::atomic::Ordering;
use core::ptr::NonNull;

/// How the slab layer starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlabOptions {
    /// The global debug switch: every cache created while it is on (the general caches
    /// included, when given here) gets red zones and poisoning. See also
    /// [`SlabCaches::set_debug`](super::SlabCaches::set_debug).
    pub debug: bool,
    /// Called with every error detected (bad frees, damaged red zones or poison), with no
    /// cache lock held (the chain lock may be: errors found while `reap` unmakes slabs),
    /// and possibly with interrupts off (a free through a per-CPU array, a drain run by
    /// IPI): it must be callable there, as the kernel's print to the serial console is.
    /// It must not create or destroy caches.
    pub reporter: Option<fn(&SlabError)>,
    /// Start with the per-CPU layer off. Read by that layer (`crate::percpu`), which
    /// passes these options down; the slab layer itself has no use for it.
    pub no_per_cpu: bool,
}

/// Where an object lies: see [`SlabCaches::object_info`](super::SlabCaches::object_info).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The cache that owns it.
    pub cache: &'static str,
    /// The object's first byte.
    pub object: usize,
    /// Its usable size.
    pub size: usize,
    /// Its index in the slab.
    pub index: usize,
    /// The slab's first byte.
    pub slab: usize,
    /// The slab's size in pages.
    pub slab_pages: usize,
    /// True while it is allocated.
    pub allocated: bool,
}

/// A free whose live mark could not be taken: the token for
/// [`SlabCaches::refuse_free`](super::SlabCaches::refuse_free), which names the error.
#[derive(Debug)]
#[must_use]
pub struct Refused {
    /// The mark was taken, but the object is another cache's: it goes back.
    other_cache: bool,
}

/// The operations on one cache, and what they need. See the [module docs](self).
pub(super) struct Core<B: SlabBackend> {
    pub backend: B,
    pub owners: OwnerTable,
    reporter: Option<fn(&SlabError)>,
}

/// What the owner table says about an address, read without a lock.
pub enum Owner<'a, I: InterruptControl, F: CacheFront> {
    /// Not a slab page nor a large kmalloc.
    Nothing,
    /// The first page of a large kmalloc.
    Large {
        /// The start of its run of pages.
        start: usize,
    },
    /// A page of a slab of this cache (to be confirmed under its lock).
    Cache(&'a SlabCache<I, F>),
}

impl<B: SlabBackend> Core<B> {
    pub fn new(backend: B, reporter: Option<fn(&SlabError)>) -> Result<Self, SlabError> {
        Ok(Self {
            owners: OwnerTable::new(&backend)?,
            backend,
            reporter,
        })
    }

    /// Passes `error` to the reporter.
    pub fn report(&self, error: &SlabError) {
        if let Some(reporter) = self.reporter {
            reporter(error);
        }
    }

    /// One object of `cache` (2.4's `kmem_cache_alloc`).
    pub fn alloc<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
    ) -> Result<NonNull<u8>, SlabError> {
        loop {
            let taken = cache.take(&mut cache.state.lock());
            match taken {
                Taken::Object(object) => return Ok(object),
                Taken::Quarantined(error) => self.report(&error),
                Taken::Empty => self.grow(cache)?,
            }
        }
    }

    /// Up to `out.len()` objects of `cache`, taking its lock once (and once more after
    /// each slab it has to grow). Returns how many were stored at the front of `out`:
    /// fewer only when memory ran out after at least one, `Err` when none could be had.
    pub fn alloc_batch<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        out: &mut [*mut u8],
    ) -> Result<usize, SlabError> {
        let mut n = 0;
        while n < out.len() {
            let mut quarantined = None;
            let mut empty = false;
            {
                let mut st = cache.state.lock();
                while n < out.len() {
                    match cache.take(&mut st) {
                        Taken::Object(object) => {
                            out[n] = object.as_ptr();
                            n += 1;
                        }
                        Taken::Empty => {
                            empty = true;
                            break;
                        }
                        Taken::Quarantined(error) => {
                            quarantined = Some(error);
                            break;
                        }
                    }
                }
            }
            if let Some(error) = quarantined {
                self.report(&error);
            } else if empty && let Err(error) = self.grow(cache) {
                return if n == 0 { Err(error) } else { Ok(n) };
            }
        }
        Ok(n)
    }

    /// Frees `addr` into `cache` (2.4's `kmem_cache_free`), with every check of
    /// `SlabCache::give_back`.
    pub fn free<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        addr: usize,
    ) -> Result<(), SlabError> {
        let result = cache.give_back(&mut cache.state.lock(), &self.owners, addr);
        result.map_err(|fault| self.fail(cache, fault, addr))
    }

    /// Frees the objects of `objs` into `cache` under one acquisition of its lock
    /// (re-taken only after an error, to report it unlocked). Every valid object is
    /// freed; the first error is returned.
    pub fn free_batch<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        objs: &[*mut u8],
    ) -> Result<(), SlabError> {
        let mut first_error = None;
        let mut rest = objs;
        while !rest.is_empty() {
            let result = cache.give_back_batch(&mut cache.state.lock(), &self.owners, rest);
            match result {
                Ok(()) => break,
                Err((position, fault)) => {
                    let addr = rest[position].addr();
                    first_error.get_or_insert(self.fail(cache, fault, addr));
                    rest = &rest[position + 1..];
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Turns a fault of `give_back` into the error, reports it, and returns it.
    fn fail<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        fault: FreeFault,
        addr: usize,
    ) -> SlabError {
        let error = match fault {
            FreeFault::Error(error) => error,
            FreeFault::OtherOwner(owner) => {
                let actual = if owner == LARGE {
                    "kmalloc (large)"
                } else {
                    // SAFETY: an owner-table entry names a live cache descriptor of this
                    // allocator (same `I`): a cache's entries are cleared before its
                    // descriptor is freed, and a concurrent destroy of the cache owning
                    // the page is outside the contract (module docs). `name` is
                    // immutable after creation.
                    unsafe { owner.cast::<SlabCache<I, F>>().as_ref() }.map_or("?", |c| c.name)
                };
                cache.state.lock().counters.errors += 1;
                SlabError::WrongCache {
                    expected: cache.name,
                    actual,
                    addr,
                }
            }
        };
        self.report(&error);
        error
    }

    /// The owner of the page of `addr`, read without a lock (see `owner.rs`).
    pub fn owner<I: InterruptControl, F: CacheFront>(&self, addr: usize) -> Owner<'_, I, F> {
        let Some(entry) = self.owners.entry(addr) else {
            return Owner::Nothing;
        };
        let cache = entry.cache.load(Ordering::Acquire);
        if cache.is_null() {
            Owner::Nothing
        } else if cache == LARGE {
            Owner::Large {
                start: entry.slab.load(Ordering::Relaxed).addr(),
            }
        } else {
            // SAFETY: as in `fail`: a cache named by the owner table is alive unless it is
            // being destroyed while someone frees into it, which the contract excludes.
            // Callers confirm the entry under the cache's lock before trusting the slab.
            Owner::Cache(unsafe { &*cache.cast::<SlabCache<I, F>>() })
        }
    }

    /// Takes the live mark of `addr` for a user's free into `cache` (see `live.rs`):
    /// `Ok` when `addr` started an object of `cache` in a user's hands (it is the
    /// caller's to free now); otherwise nothing changed, and
    /// [`refuse_free`](Self::refuse_free) says why.
    #[inline]
    pub fn take_live<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        addr: usize,
    ) -> Result<(), Refused> {
        // The object pins its page while it is out: one read of the entry is exact.
        let entry = self.owners.take_live(addr);
        if entry.is_some_and(|e| e.cache.load(Ordering::Acquire) == cache.as_owner()) {
            return Ok(());
        }
        Err(Refused {
            other_cache: entry.is_some(),
        })
    }

    /// Takes the live mark of `addr` for a free that does not know the cache (`kfree`):
    /// `Ok(Some(cache))`, the cache whose object started at `addr` and was in a user's
    /// hands (it is the caller's to free now, or its mark to put back); `Ok(None)` when
    /// the mark was taken but the page names no cache (not possible for a marked
    /// object: the caller puts the mark back); `Err(())`, with nothing changed, when no
    /// live object starts at `addr`. No call: `kfree`'s hit path keeps no register for
    /// the other cases.
    #[inline]
    #[allow(clippy::result_unit_err)]
    pub fn take_live_object<I: InterruptControl, F: CacheFront>(
        &self,
        addr: usize,
    ) -> Result<Option<&SlabCache<I, F>>, ()> {
        // The object pins its page while it is out: one read of the entry is exact.
        let cache = self
            .owners
            .take_live(addr)
            .ok_or(())?
            .cache
            .load(Ordering::Acquire);
        if cache.addr() <= LARGE.addr() {
            return Ok(None);
        }
        // SAFETY: as in `owner`: a cache named by the owner table is alive unless it is
        // being destroyed while someone frees into it, which the contract excludes.
        Ok(Some(unsafe { &*cache.cast::<SlabCache<I, F>>() }))
    }

    /// Puts back the live mark that a free took from `addr` before finding that it may
    /// not free the object (another cache's).
    pub fn put_back_live(&self, addr: usize) {
        self.owners.live.put_back(addr);
    }

    /// The error of a free of `addr` into `cache` that [`take_live`](Self::take_live)
    /// refused: the mark of another cache's object goes back, then the free is judged
    /// under the cache lock, counted and reported. Always `Err`, as a `Result` that a
    /// free returns as is: out of line and in tail position, so that the free's hit
    /// path keeps neither a register nor stack for it.
    #[cold]
    #[inline(never)]
    pub fn refuse_free<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        addr: usize,
        refused: Refused,
    ) -> Result<(), SlabError> {
        if refused.other_cache {
            self.owners.live.put_back(addr);
        }
        let fault = cache.judge_free(&mut cache.state.lock(), &self.owners, addr);
        Err(self.fail(cache, fault, addr))
    }

    /// Frees `addr` into the general cache that owns its page (`kfree` of a slab
    /// object, a user's free: its live mark is taken first). An object of any other
    /// cache is a `WrongCache` error (2.4's `kfree` did not check; freeing, say, a cache
    /// descriptor that way would be a disaster). `Err(None)` when the page is the first
    /// page of a large kmalloc.
    pub fn free_any<I: InterruptControl, F: CacheFront>(
        &self,
        addr: usize,
    ) -> Result<(), Option<SlabError>> {
        loop {
            let cache = match self.owner::<I, F>(addr) {
                Owner::Nothing => {
                    let error = SlabError::InvalidFree { cache: None, addr };
                    self.report(&error);
                    return Err(Some(error));
                }
                Owner::Large { .. } => return Err(None),
                Owner::Cache(cache) => cache,
            };
            if cache.general {
                if let Err(refused) = self.take_live(cache, addr) {
                    return self.refuse_free(cache, addr, refused).map_err(Some);
                }
                // The object pins its page now: the cache cannot change under the free.
                return self.free(cache, addr).map_err(Some);
            }
            let mut st = cache.state.lock();
            if self
                .owners
                .entry(addr)
                .is_some_and(|e| e.cache.load(Ordering::Relaxed) == cache.as_owner())
            {
                st.counters.errors += 1;
                drop(st);
                let error = SlabError::WrongCache {
                    expected: "kmalloc",
                    actual: cache.name,
                    addr,
                };
                self.report(&error);
                return Err(Some(error));
            }
            // The page changed hands between the read and the lock: look again.
        }
    }

    /// Where `addr` lies, if in an object of a slab.
    pub fn object_info<I: InterruptControl, F: CacheFront>(
        &self,
        addr: usize,
    ) -> Option<ObjectInfo> {
        loop {
            let Owner::Cache(cache) = self.owner::<I, F>(addr) else {
                return None;
            };
            let st = cache.state.lock();
            let entry = self.owners.entry(addr)?;
            if entry.cache.load(Ordering::Relaxed) != cache.as_owner() {
                continue;
            }
            let slab = NonNull::new(entry.slab.load(Ordering::Relaxed))?;
            let geo = &cache.geo;
            // SAFETY: the entry names this cache, whose lock we hold: the slab is a live
            // slab of it (owner-table protocol).
            let s = unsafe { Slab::from_ptr(slab).get_mut(geo.num) };
            let first = s.s_mem().addr().get() + geo.lead;
            let offset = addr.checked_sub(first)?;
            let index = offset / geo.slot;
            if index >= geo.num || offset % geo.slot >= geo.usable {
                return None;
            }
            let info = ObjectInfo {
                cache: cache.name,
                object: first + index * geo.slot,
                size: geo.usable,
                index,
                slab: s.base().addr().get(),
                slab_pages: geo.pages(),
                allocated: s.is_allocated(index),
            };
            drop(st);
            return Some(info);
        }
    }

    /// Adds a slab to `cache` (2.4's `kmem_cache_grow`). The cache lock is taken only to
    /// pick the colour and to link the new slab; the pages, the descriptor and the
    /// constructors are dealt with unlocked.
    pub fn grow<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
    ) -> Result<(), SlabError> {
        let geo = &cache.geo;
        let colour = {
            let mut st = cache.state.lock();
            let colour = st.colour_next;
            st.colour_next = if colour + 1 >= geo.colour {
                0
            } else {
                colour + 1
            };
            st.growing += 1;
            colour * geo.colour_off
        };
        let made = self.make_slab(cache, colour);
        let mut st = cache.state.lock();
        st.growing -= 1;
        let (slab, start) = made?;
        self.owners
            .set(start, geo.pages(), cache.as_owner(), slab.as_ptr());
        // SAFETY: a live slab of this cache, on no list; we hold the lock.
        unsafe { st.free.push_front(slab) };
        st.counters.grown += 1;
        st.grown_recently = true;
        Ok(())
    }

    /// Pages, descriptor and objects of a new slab, coloured by `colour` bytes; nothing
    /// links to it yet.
    fn make_slab<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        colour: usize,
    ) -> Result<(Slab, usize), SlabError> {
        let geo = &cache.geo;
        let dma = geo.flags.contains(SlabFlags::DMA);
        let start = self.backend.alloc_pages(geo.pages(), dma, false)?;
        let Some(base) = NonNull::new(self.backend.pointer_to(start)) else {
            self.backend.free_pages(start);
            return Err(SlabError::OutOfMemory);
        };
        // The live map must cover the slab before any object of it can be handed out.
        if let Err(error) = self
            .owners
            .live
            .cover(&self.backend, start, geo.slab_bytes())
        {
            self.backend.free_pages(start);
            return Err(error);
        }
        // SAFETY: `colour + desc_area` is at most `left_over + desc_area`, inside the slab
        // (the geometry accounts for every byte of it).
        let coloured = unsafe { base.add(colour) };
        let (at, s_mem) = match cache.desc_cache {
            Some(desc_cache) => {
                // SAFETY: descriptor caches are general caches, never destroyed.
                match self.alloc(unsafe { desc_cache.as_ref() }) {
                    Ok(at) => (at, coloured),
                    Err(error) => {
                        self.backend.free_pages(start);
                        return Err(error);
                    }
                }
            }
            // SAFETY: as above.
            None => (coloured, unsafe { coloured.add(geo.desc_area) }),
        };
        // SAFETY: `at` is `desc_size` bytes, 8-byte aligned, ours: the start of the new
        // slab's pages (on-slab, `desc_area >= desc_size`), or an object of a descriptor
        // cache whose objects are at least `desc_size` bytes (chosen so at creation).
        let slab = unsafe { Slab::init(at, base, s_mem, geo.num) };
        // SAFETY: the slab is new and unreachable by anyone else.
        if let Some(error) = unsafe { cache.init_objects(s_mem) } {
            self.report(&error);
        }
        Ok((slab, start))
    }

    /// Gives back every free slab of `cache` (2.4's `kmem_cache_shrink`); returns the
    /// pages released.
    pub fn shrink<I: InterruptControl, F: CacheFront>(&self, cache: &SlabCache<I, F>) -> usize {
        let mut list = {
            let mut st = cache.state.lock();
            let list = core::mem::take(&mut st.free);
            cache.forget_owners(&list, &self.owners);
            st.counters.reaped += list.len() as u64;
            list
        };
        let pages = list.len() * cache.geo.pages();
        while let Some(slab) = list.pop_front() {
            // SAFETY: the slab was a free slab of `cache`, unlinked from its lists and
            // from the owner table under its lock: ours alone.
            unsafe { self.unmake_slab(cache, slab) };
        }
        pages
    }

    /// Destructors, then the descriptor and pages of an unlinked slab go back.
    ///
    /// # Safety
    ///
    /// `slab` is a slab of `cache` that is on no list and has no owner-table entries.
    pub unsafe fn unmake_slab<I: InterruptControl, F: CacheFront>(
        &self,
        cache: &SlabCache<I, F>,
        slab: Slab,
    ) {
        let mut errors = 0;
        // SAFETY: ours alone (caller).
        unsafe {
            cache.unmake_objects(slab, |error| {
                errors += 1;
                self.report(&error);
            });
        }
        if errors > 0 {
            cache.state.lock().counters.errors += errors;
        }
        // SAFETY: ours alone (caller).
        let base = unsafe { slab.get_mut(cache.geo.num) }.base();
        if let Some(desc_cache) = cache.desc_cache {
            // SAFETY: descriptor caches are general caches, never destroyed.
            let freed = self.free(unsafe { desc_cache.as_ref() }, slab.as_ptr().addr());
            debug_assert_eq!(freed, Ok(()), "off-slab descriptor of {}", cache.name);
        }
        self.backend.free_pages(base.addr().get());
    }
}

impl<B: SlabBackend> Drop for Core<B> {
    fn drop(&mut self) {
        self.owners.live.release(&self.backend);
        self.backend.free_pages(self.owners.table_start());
    }
}
