//! The cache descriptor (2.4's `kmem_cache_t`) and what happens under its lock: taking
//! an object from a slab, giving one back, moving slabs between the three lists, and the
//! per-object work when a slab is made or unmade (constructors, destructors, debug
//! patterns).
//!
//! # The three lists
//!
//! ```text
//!  full    [slab: inuse = num] - [slab] - ...        never allocated from
//!  partial [slab: 0 < inuse < num] - ...            allocation takes from the first one
//!  free    [slab: inuse = 0] - ...                  used when no partial slab is left;
//!                                                   what shrink and reap give back
//! ```
//!
//! Allocation prefers partial slabs: it fills slabs that are already in use, so that
//! empty slabs stay empty and can be given back under memory pressure. (The seed's 2.4.0
//! `kmem_cache_t` has one list and a `firstnotfull` pointer into it; later 2.4 releases
//! split it into these three lists, which say the same with less pointer juggling.) A
//! slab moves between lists only when its `inuse` crosses 0 or `num`: O(1).
//!
//! # Invariants (under the cache lock; checked by `check`)
//!
//! - Every slab of the cache is on exactly one list, the one its `inuse` says.
//! - `counters.active` is the sum of the slabs' `inuse` (quarantined objects included).
//! - Every page of every slab has the owner-table entry (this cache, that slab).
//! - The immutable part (`name`, `geo`, `ctor`, `dtor`, `desc_cache`) never changes
//!   after the cache is published, so it is read without the lock.

use super::debug::{self, RED_ACTIVE, RED_INACTIVE};
use super::descriptor::{Slab, SlabMut};
use super::geometry::Geometry;
use super::list::SlabList;
use super::owner::OwnerTable;
use super::{Constructor, Destructor, SlabError};
use crate::platform::{InterruptControl, PAGE_SIZE};
use crate::sync::SpinLock;
use crate::sync::atomic::{AtomicPtr, Ordering};
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// What the layer above keeps in every cache descriptor, made with the cache: the
/// per-CPU arrays and their parameters (2.4 keeps `cpudata[]` in `kmem_cache_t` too).
/// The slab layer never looks inside; `()` when nothing sits above it.
pub trait CacheFront: Send + Sync + Sized {
    /// The front part of a new cache whose slots are `slot` bytes, with or without the
    /// debug checks (red zones, poisoning).
    fn new(slot: usize, debug: bool) -> Self;

    /// The descriptor holding this front part has reached the memory it will stay in
    /// (it is not yet in use): a front part may now point into itself.
    fn placed(&self) {}
}

impl CacheFront for () {
    fn new(_slot: usize, _debug: bool) {}
}

/// A cache descriptor. Lives in an object of the cache of caches (`kmem_cache`), which
/// is itself described by one of these, found in its own first slab (see the bootstrap
/// in `caches.rs`).
pub struct SlabCache<I: InterruptControl, F: CacheFront> {
    /// Shown by slabinfo and in error reports.
    pub name: &'static str,
    /// The shape of the slabs.
    pub geo: Geometry,
    /// Runs on every object when a slab is made.
    pub ctor: Option<Constructor>,
    /// Runs on every object when a slab is unmade.
    pub dtor: Option<Destructor>,
    /// Off-slab caches: the cache their slab descriptors come from (always an on-slab
    /// cache, so growing it never needs a descriptor from elsewhere: no recursion).
    pub desc_cache: Option<NonNull<SlabCache<I, F>>>,
    /// One of kmalloc's general caches: `kfree` accepts its objects (and only theirs).
    pub general: bool,
    /// What the layer above keeps here (the per-CPU arrays).
    pub front: F,
    /// The mutable part, behind the cache's lock.
    pub state: SpinLock<CacheState, I>,
    /// The next cache on the cache chain (changed under the chain lock only).
    pub chain_next: AtomicPtr<SlabCache<I, F>>,
    /// The previous cache on the cache chain (changed under the chain lock only).
    pub chain_prev: AtomicPtr<SlabCache<I, F>>,
}

// SAFETY: the mutable state is behind the spinlock; the rest is immutable after
// publication. `desc_cache` points to a cache descriptor that outlives this one (general
// caches are never destroyed) and is itself `Sync`. So the descriptor may be shared and
// sent between CPUs.
unsafe impl<I: InterruptControl, F: CacheFront> Sync for SlabCache<I, F> {}
// SAFETY: see `Sync`.
unsafe impl<I: InterruptControl, F: CacheFront> Send for SlabCache<I, F> {}

/// Counters kept under the cache lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Objects allocated now (quarantined ones included).
    pub active: usize,
    /// The most objects ever allocated at once.
    pub high: usize,
    /// Objects handed out.
    pub allocs: u64,
    /// Objects given back.
    pub frees: u64,
    /// Slabs made.
    pub grown: u64,
    /// Slabs given back by shrink, reap or destroy.
    pub reaped: u64,
    /// Errors detected (bad frees, red zones, poison).
    pub errors: u64,
    /// Objects set aside for good because their debug patterns were damaged.
    pub quarantined: usize,
}

/// The part of a cache that changes, behind its lock.
#[derive(Debug, Default)]
pub struct CacheState {
    /// Slabs with every object allocated.
    pub full: SlabList,
    /// Slabs with some objects allocated.
    pub partial: SlabList,
    /// Slabs with no object allocated.
    pub free: SlabList,
    /// The colour of the next slab (0 .. `geo.colour`).
    pub colour_next: usize,
    /// Grows in progress (they run without the lock); reap leaves such a cache alone.
    pub growing: usize,
    /// Grew since the last reap (2.4's `DFLGS_GROWN`): reap skips it once.
    pub grown_recently: bool,
    /// The counters.
    pub counters: Counters,
}

// SAFETY: the state's slab pointers point into slab memory (or descriptor objects) that
// belong to this cache alone and are only followed under its lock, so moving the state
// to another CPU (inside the lock) is sound.
unsafe impl Send for CacheState {}

/// One of a cache's three slab lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Full,
    Partial,
    Free,
}

impl Which {
    /// The list a slab with `inuse` of `num` objects allocated belongs on.
    fn for_inuse(inuse: usize, num: usize) -> Self {
        match inuse {
            0 => Self::Free,
            n if n == num => Self::Full,
            _ => Self::Partial,
        }
    }
}

/// What an attempt to allocate under the lock found.
pub enum Taken {
    /// An object, checked.
    Object(NonNull<u8>),
    /// No partial or free slab: the cache must grow.
    Empty,
    /// An object whose debug patterns were damaged: quarantined, reported by the caller.
    Quarantined(SlabError),
}

/// Why a free failed under the lock, before the error can be fully described.
pub enum FreeFault {
    /// The error, complete.
    Error(SlabError),
    /// The page belongs to another cache (its descriptor, or `owner::LARGE`); naming it
    /// is done after unlocking.
    OtherOwner(*mut u8),
}

impl<I: InterruptControl, F: CacheFront> SlabCache<I, F> {
    /// A cache descriptor with no slabs.
    pub fn new(
        name: &'static str,
        geo: Geometry,
        ctor: Option<Constructor>,
        dtor: Option<Destructor>,
        desc_cache: Option<NonNull<SlabCache<I, F>>>,
        general: bool,
    ) -> Self {
        let front = F::new(geo.slot, geo.red_zone() || geo.poison());
        Self {
            name,
            geo,
            ctor,
            dtor,
            desc_cache,
            general,
            front,
            state: SpinLock::new(CacheState::default()),
            chain_next: AtomicPtr::new(core::ptr::null_mut()),
            chain_prev: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// This descriptor's address, as the owner table records it.
    pub fn as_owner(&self) -> *mut u8 {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// Object `i` of a slab whose slot 0 is `s_mem`.
    fn object(&self, s_mem: NonNull<u8>, i: usize) -> NonNull<u8> {
        // SAFETY: `i < num`, and `num` slots after `s_mem` lie inside the slab (the
        // geometry accounts for every byte), so the offset stays in the slab's pages.
        unsafe { s_mem.add(i * self.geo.slot + self.geo.lead) }
    }

    /// Takes an object from the first partial slab, or else the first free one, and
    /// moves that slab to the list its new `inuse` says. Debug caches check the object's
    /// patterns first (see `debug.rs`).
    pub fn take(&self, st: &mut CacheState) -> Taken {
        let (slab, from_free) = match (st.partial.first(), st.free.first()) {
            (Some(slab), _) => (slab, false),
            (None, Some(slab)) => (slab, true),
            (None, None) => return Taken::Empty,
        };
        let num = self.geo.num;
        // SAFETY: `slab` is on one of this cache's lists and we hold the lock (`st`); the
        // view is dropped before the list operations below.
        let (obj, inuse) = unsafe {
            let mut s = slab.get_mut(num);
            let i = s.pop().expect("a partial or free slab has a free object");
            (self.object(s.s_mem(), i), s.inuse())
        };
        // SAFETY: `slab` is on `free` (when `from_free`) or on `partial`.
        unsafe {
            if from_free {
                st.free.move_to(
                    slab,
                    if inuse == num {
                        &mut st.full
                    } else {
                        &mut st.partial
                    },
                );
            } else if inuse == num {
                st.partial.move_to(slab, &mut st.full);
            }
        }
        st.counters.active += 1;
        if let Err(error) = self.check_on_alloc(obj) {
            st.counters.quarantined += 1;
            st.counters.errors += 1;
            return Taken::Quarantined(error);
        }
        st.counters.high = st.counters.high.max(st.counters.active);
        st.counters.allocs += 1;
        Taken::Object(obj)
    }

    /// Takes up to `out.len()` objects into the front of `out`, a slab at a time: the
    /// refill of a per-CPU array. Each slab is looked at once, its objects popped in a
    /// tight loop, and moved to its new list once; the counters change once per batch.
    /// Debug caches (whose objects are checked one by one) take the object path.
    /// Returns how many, and the error of an object quarantined on the way (which ends
    /// the batch).
    pub fn take_batch(
        &self,
        st: &mut CacheState,
        out: &mut [MaybeUninit<*mut u8>],
    ) -> (usize, Option<SlabError>) {
        let geo = &self.geo;
        let mut n = 0;
        if geo.red_zone() || geo.poison() {
            while n < out.len() {
                match self.take(st) {
                    Taken::Object(object) => {
                        out[n].write(object.as_ptr());
                        n += 1;
                    }
                    Taken::Empty => break,
                    Taken::Quarantined(error) => return (n, Some(error)),
                }
            }
            return (n, None);
        }
        while n < out.len() {
            let (slab, from_free) = match (st.partial.first(), st.free.first()) {
                (Some(slab), _) => (slab, false),
                (None, Some(slab)) => (slab, true),
                (None, None) => break,
            };
            // SAFETY: `slab` is on one of this cache's lists and we hold the lock (`st`);
            // the view is dropped before the list operations below.
            let inuse = unsafe {
                let mut s = slab.get_mut(geo.num);
                // `object`'s arithmetic with the constants copied out of the descriptor,
                // so that the loop keeps them in registers.
                let (first, slot) = (s.s_mem().as_ptr().wrapping_add(geo.lead), geo.slot);
                n += s.take_run(&mut out[n..], |i| first.wrapping_add(i * slot));
                s.inuse()
            };
            // SAFETY: `slab` is on `free` (when `from_free`) or on `partial`, and had a
            // free object, so it moves only to `partial` or `full`.
            unsafe {
                match (from_free, inuse == geo.num) {
                    (true, true) => st.free.move_to(slab, &mut st.full),
                    (true, false) => st.free.move_to(slab, &mut st.partial),
                    (false, true) => st.partial.move_to(slab, &mut st.full),
                    (false, false) => {}
                }
            }
        }
        let c = &mut st.counters;
        c.active += n;
        c.allocs += n as u64;
        c.high = c.high.max(c.active);
        (n, None)
    }

    /// Red zones and poison of an object just taken; on success, marks it allocated.
    fn check_on_alloc(&self, obj: NonNull<u8>) -> Result<(), SlabError> {
        let geo = &self.geo;
        let addr = obj.addr().get();
        if geo.red_zone() {
            // SAFETY: `obj` was just taken from a live slab of this cache, under its lock.
            unsafe {
                debug::check_red_zones(obj, geo, RED_INACTIVE).map_err(|(side, found)| {
                    SlabError::RedZone {
                        cache: self.name,
                        addr,
                        side,
                        found,
                    }
                })?;
            }
        }
        if geo.poison() {
            // SAFETY: as above; the object is free until we return it.
            unsafe { debug::check_poison(obj, geo) }.map_err(|(offset, found)| {
                SlabError::UseAfterFree {
                    cache: self.name,
                    addr,
                    offset,
                    found,
                }
            })?;
        }
        if geo.red_zone() {
            // SAFETY: as above.
            unsafe { debug::set_red_zones(obj, geo, RED_ACTIVE) };
        }
        Ok(())
    }

    /// Frees `addr`, which the owner table maps to this cache. Checks, in this order,
    /// that the page belongs to this cache, that `addr` starts an object, that the object
    /// is allocated (the bitmap: double free), and in debug caches the red zones. On any
    /// error nothing changes (except that an object with damaged red zones is
    /// quarantined).
    pub fn give_back(
        &self,
        st: &mut CacheState,
        owners: &OwnerTable,
        addr: usize,
    ) -> Result<(), FreeFault> {
        self.release(st, owners, addr)?;
        st.counters.active -= 1;
        st.counters.frees += 1;
        Ok(())
    }

    /// [`give_back`](Self::give_back) of every object of `objects`, in order, under the
    /// lock the caller holds: the flush of a per-CPU array. The counters change once.
    /// Stops at the first object that cannot be freed and returns its position and
    /// fault; the objects before it are freed.
    pub fn give_back_batch(
        &self,
        st: &mut CacheState,
        owners: &OwnerTable,
        objects: &[*mut u8],
    ) -> Result<(), (usize, FreeFault)> {
        let geo = &self.geo;
        if geo.red_zone() || geo.poison() {
            return self.give_back_each(st, owners, objects);
        }
        // Objects of one slab tend to come together: each owner-table lookup is followed
        // by a run of releases for as long as the objects are that slab's (see
        // `SlabMut::release_run`), and the slab moves to its new list once per run.
        let mut position = 0;
        let mut result = Ok(());
        while position < objects.len() {
            let addr = objects[position].addr();
            let slab = match owners.entry(addr) {
                Some(entry) if entry.cache.load(Ordering::Acquire) == self.as_owner() => {
                    NonNull::new(entry.slab.load(Ordering::Relaxed))
                }
                _ => None,
            };
            let Some(slab) = slab else {
                // Not this cache's: the single path names the fault.
                result = self.release(st, owners, addr).map_err(|f| (position, f));
                debug_assert!(result.is_err(), "{addr:#x} was refused, then taken");
                break;
            };
            // SAFETY: the entry names this cache and we hold its lock: a live slab of
            // this cache (owner-table protocol, see `owner.rs`).
            let slab = unsafe { Slab::from_ptr(slab) };
            let (list, released, inuse) = {
                // SAFETY: as above; the view ends before the slab's list changes.
                let mut view = unsafe { slab.get_mut(geo.num) };
                let list = Which::for_inuse(view.inuse(), geo.num);
                let first = view.s_mem().addr().get() + geo.lead;
                // SAFETY: `index_of` returns indices below `num`.
                let released =
                    unsafe { view.release_run(&objects[position..], geo.index_in(first)) };
                (list, released, view.inuse())
            };
            // SAFETY: a slab of this cache under its lock, on `list`.
            unsafe { self.relink(st, slab, list, inuse) };
            st.counters.active -= released;
            st.counters.frees += released as u64;
            if released == 0 {
                // This cache's page, but no allocated object starts at `addr`: the
                // single path counts the error and names it.
                result = self.release(st, owners, addr).map_err(|f| (position, f));
                debug_assert!(result.is_err(), "{addr:#x} was refused, then taken");
                break;
            }
            position += released;
        }
        result
    }

    /// [`give_back_batch`](Self::give_back_batch) one object at a time (debug caches).
    fn give_back_each(
        &self,
        st: &mut CacheState,
        owners: &OwnerTable,
        objects: &[*mut u8],
    ) -> Result<(), (usize, FreeFault)> {
        for (position, object) in objects.iter().enumerate() {
            self.give_back(st, owners, object.addr())
                .map_err(|fault| (position, fault))?;
        }
        Ok(())
    }

    /// Moves a slab that objects were freed into from `from` to the list its `inuse`
    /// now says. (A slab taken in hand may have had nothing freed into it: a flush that
    /// meets a double free first, in a slab that is on `free`.)
    ///
    /// # Safety
    ///
    /// `slab` is a slab of this cache, whose lock the caller holds (`st`), and it is on
    /// `from`; no view of it is in use.
    unsafe fn relink(&self, st: &mut CacheState, slab: Slab, from: Which, inuse: usize) {
        let to = Which::for_inuse(inuse, self.geo.num);
        // SAFETY: on `from` (caller); each arm borrows two different lists of `st`.
        unsafe {
            match (from, to) {
                (Which::Full, Which::Partial) => st.full.move_to(slab, &mut st.partial),
                (Which::Full, Which::Free) => st.full.move_to(slab, &mut st.free),
                (Which::Partial, Which::Full) => st.partial.move_to(slab, &mut st.full),
                (Which::Partial, Which::Free) => st.partial.move_to(slab, &mut st.free),
                (Which::Free, Which::Full) => st.free.move_to(slab, &mut st.full),
                (Which::Free, Which::Partial) => st.free.move_to(slab, &mut st.partial),
                // Already on the list its `inuse` says.
                _ => {}
            }
        }
    }

    /// The slab of this cache that `addr` lies in and the index of the object `addr`
    /// starts, under the lock the caller holds: the first checks of a free.
    #[inline(always)]
    fn locate(
        &self,
        st: &mut CacheState,
        owners: &OwnerTable,
        addr: usize,
    ) -> Result<(Slab, usize), FreeFault> {
        let invalid = |cache| FreeFault::Error(SlabError::InvalidFree { cache, addr });
        let Some(entry) = owners.entry(addr) else {
            return Err(invalid(None));
        };
        let owner = entry.cache.load(crate::sync::atomic::Ordering::Acquire);
        if owner != self.as_owner() {
            return Err(if owner.is_null() {
                invalid(None)
            } else {
                FreeFault::OtherOwner(owner)
            });
        }
        // The entry names this cache and we hold its lock: the slab word is stable and
        // names a live slab of this cache (owner-table protocol, see `owner.rs`).
        let slab = entry.slab.load(crate::sync::atomic::Ordering::Relaxed);
        let Some(slab) = NonNull::new(slab) else {
            return Err(invalid(Some(self.name)));
        };
        // SAFETY: as just said, `slab` is a live slab of this cache.
        let slab = unsafe { Slab::from_ptr(slab) };
        let geo = &self.geo;
        // SAFETY: a live slab of this cache, under its lock; the view ends here.
        let first = unsafe { slab.get_mut(geo.num) }.s_mem().addr().get() + geo.lead;
        match geo.index_of(addr.wrapping_sub(first)) {
            Some(i) => Ok((slab, i)),
            None => {
                st.counters.errors += 1;
                Err(invalid(Some(self.name)))
            }
        }
    }

    /// Why a user's free of `addr`, whose live mark was clear (see `live.rs`), is bad,
    /// under the lock the caller holds; changes nothing but the error count. An object
    /// start of this cache is a double free, whether the object sits in the slab or in
    /// a per-CPU array (or is one the allocator uses itself).
    pub fn judge_free(&self, st: &mut CacheState, owners: &OwnerTable, addr: usize) -> FreeFault {
        match self.locate(st, owners, addr) {
            Err(fault) => fault,
            Ok(_) => {
                st.counters.errors += 1;
                FreeFault::Error(SlabError::DoubleFree {
                    cache: self.name,
                    addr,
                })
            }
        }
    }

    /// The checks and the work of a free, without the `active`/`frees` counters.
    #[inline(always)]
    fn release(
        &self,
        st: &mut CacheState,
        owners: &OwnerTable,
        addr: usize,
    ) -> Result<(), FreeFault> {
        let (slab, i) = self.locate(st, owners, addr)?;
        let geo = &self.geo;
        // SAFETY: a live slab of this cache, under its lock; the view is dropped before
        // the list operations.
        let (was_full, inuse) = unsafe {
            let mut s = slab.get_mut(geo.num);
            if !s.is_allocated(i) {
                st.counters.errors += 1;
                return Err(FreeFault::Error(SlabError::DoubleFree {
                    cache: self.name,
                    addr,
                }));
            }
            if geo.red_zone() || geo.poison() {
                let obj = self.object(s.s_mem(), i);
                if let Err(error) = self.check_on_free(obj) {
                    st.counters.quarantined += 1;
                    st.counters.errors += 1;
                    return Err(FreeFault::Error(error));
                }
            }
            let was_full = s.inuse() == geo.num;
            s.push(i);
            (was_full, s.inuse())
        };
        // SAFETY: a full slab is on `full`, any other slab that had an object allocated
        // is on `partial`.
        unsafe {
            if was_full {
                let to = if inuse == 0 {
                    &mut st.free
                } else {
                    &mut st.partial
                };
                st.full.move_to(slab, to);
            } else if inuse == 0 {
                st.partial.move_to(slab, &mut st.free);
            }
        }
        Ok(())
    }

    /// Red zones of an object being freed; on success, marks and poisons it free.
    fn check_on_free(&self, obj: NonNull<u8>) -> Result<(), SlabError> {
        let geo = &self.geo;
        if geo.red_zone() {
            // SAFETY: `obj` is an allocated object of a live slab of this cache, given
            // back to us, under the lock.
            unsafe { debug::check_red_zones(obj, geo, RED_ACTIVE) }.map_err(|(side, found)| {
                SlabError::RedZone {
                    cache: self.name,
                    addr: obj.addr().get(),
                    side,
                    found,
                }
            })?;
            // SAFETY: as above.
            unsafe { debug::set_red_zones(obj, geo, RED_INACTIVE) };
        }
        if geo.poison() {
            // SAFETY: as above: the object is ours again.
            unsafe { debug::poison(obj, geo) };
        }
        Ok(())
    }

    /// Prepares every object of a new slab (2.4's `kmem_cache_init_objs`): red zones,
    /// then the constructor, then poison. Returns the first error found (a constructor
    /// that wrote outside its object), to be reported.
    ///
    /// # Safety
    ///
    /// `s_mem` is slot 0 of a new slab of this cache that no one else can reach yet.
    pub unsafe fn init_objects(&self, s_mem: NonNull<u8>) -> Option<SlabError> {
        let geo = &self.geo;
        let mut first_error = None;
        for i in 0..geo.num {
            let obj = self.object(s_mem, i);
            if geo.red_zone() {
                // SAFETY: an object of the new slab, which is ours alone (caller).
                unsafe { debug::set_red_zones(obj, geo, RED_INACTIVE) };
            }
            if let Some(ctor) = self.ctor {
                // SAFETY: `obj` is `geo.size` writable bytes aligned to `geo.align`, ours
                // alone: what a constructor is promised.
                unsafe { ctor(obj) };
                if geo.red_zone() {
                    // SAFETY: as above.
                    let zones = unsafe { debug::check_red_zones(obj, geo, RED_INACTIVE) };
                    if let Err((side, found)) = zones {
                        let error = SlabError::RedZone {
                            cache: self.name,
                            addr: obj.addr().get(),
                            side,
                            found,
                        };
                        first_error.get_or_insert(error);
                        // SAFETY: as above.
                        unsafe { debug::set_red_zones(obj, geo, RED_INACTIVE) };
                    }
                }
            }
            if geo.poison() {
                // SAFETY: as above.
                unsafe { debug::poison(obj, geo) };
            }
        }
        first_error
    }

    /// Undoes a slab's objects before its pages go (2.4's `kmem_slab_destroy`): debug
    /// caches check the patterns of free objects one last time (a write after free into
    /// an object that was never allocated again shows up here), then the destructor
    /// runs on every object. Calls `report` for each damaged object.
    ///
    /// # Safety
    ///
    /// `slab` is a slab of this cache that has been unlinked (no list, no owner entries),
    /// so it is ours alone.
    pub unsafe fn unmake_objects(&self, slab: Slab, mut report: impl FnMut(SlabError)) {
        let geo = &self.geo;
        // SAFETY: the slab is live and ours alone (caller).
        let s: SlabMut<'_> = unsafe { slab.get_mut(geo.num) };
        for i in 0..geo.num {
            let obj = self.object(s.s_mem(), i);
            let addr = obj.addr().get();
            if !s.is_allocated(i) {
                if geo.red_zone() {
                    // SAFETY: an object of a slab that is ours alone.
                    let zones = unsafe { debug::check_red_zones(obj, geo, RED_INACTIVE) };
                    if let Err((side, found)) = zones {
                        report(SlabError::RedZone {
                            cache: self.name,
                            addr,
                            side,
                            found,
                        });
                    }
                }
                if geo.poison() {
                    // SAFETY: as above.
                    if let Err((offset, found)) = unsafe { debug::check_poison(obj, geo) } {
                        report(SlabError::UseAfterFree {
                            cache: self.name,
                            addr,
                            offset,
                            found,
                        });
                    }
                }
            }
            if let Some(dtor) = self.dtor {
                // SAFETY: `obj` is an object in its constructed state (2.4 semantics:
                // objects are freed constructed), ours alone.
                unsafe { dtor(obj) };
            }
        }
    }

    /// Unlinks every slab of `list` from the owner table (under the lock, before the
    /// slabs are unmade).
    pub fn forget_owners(&self, list: &SlabList, owners: &OwnerTable) {
        for slab in list.iter() {
            // SAFETY: `slab` is on a list of this cache, under its lock (the caller
            // holds the lock or owns the detached list).
            let base = unsafe { slab.get_mut(self.geo.num) }.base();
            owners.clear(base.addr().get(), self.geo.pages());
        }
    }

    /// Checks the cache's invariants (see the module docs); panics on the first one
    /// broken. O(slabs * num): tests and self-tests only.
    pub fn check(&self, st: &CacheState, owners: &OwnerTable) {
        let geo = &self.geo;
        let mut active = 0;
        let lists = [
            (&st.full, "full"),
            (&st.partial, "partial"),
            (&st.free, "free"),
        ];
        for (list, which) in lists {
            assert_eq!(
                list.iter().count(),
                list.len(),
                "{}: {which} length",
                self.name
            );
            for slab in list.iter() {
                // SAFETY: on a list of this cache; the caller holds its lock.
                let s = unsafe { slab.get_mut(geo.num) };
                s.check();
                let expected = match s.inuse() {
                    0 => "free",
                    n if n == geo.num => "full",
                    _ => "partial",
                };
                assert_eq!(which, expected, "{}: slab on the wrong list", self.name);
                active += s.inuse();
                let base = s.base().addr().get();
                assert_eq!(base % PAGE_SIZE, 0, "{}: slab not page-aligned", self.name);
                let first = s.s_mem().addr().get() - base;
                assert_eq!(first % geo.align, 0, "{}: objects misaligned", self.name);
                let colour = first - geo.desc_area;
                assert!(
                    colour.is_multiple_of(geo.colour_off) && colour <= geo.left_over,
                    "{}: bad colour {colour}",
                    self.name
                );
                assert!(
                    first + geo.num * geo.slot <= geo.slab_bytes(),
                    "{}: objects past the slab's end",
                    self.name
                );
                for page in 0..geo.pages() {
                    let e = owners
                        .entry(base + page * PAGE_SIZE)
                        .expect("slab outside the window");
                    let order = crate::sync::atomic::Ordering::Relaxed;
                    assert_eq!(e.cache.load(order), self.as_owner(), "{}: owner", self.name);
                    assert_eq!(
                        e.slab.load(order),
                        slab.as_ptr(),
                        "{}: owner slab",
                        self.name
                    );
                }
                // The live map marks allocated objects' starts and nothing else.
                let mut marked = 0;
                for i in 0..geo.num {
                    let object = s.s_mem().addr().get() + i * geo.slot + geo.lead;
                    if owners.live.is_live(object) {
                        assert!(s.is_allocated(i), "{}: free object live", self.name);
                        marked += 1;
                    }
                }
                assert_eq!(
                    owners.live.count(base, geo.slab_bytes()),
                    marked,
                    "{}: live mark off an object start",
                    self.name
                );
            }
        }
        assert_eq!(active, st.counters.active, "{}: active count", self.name);
        assert!(st.counters.quarantined <= active);
    }
}
