//! Model-based property test of the slab layer and kmalloc.
//!
//! Random sequences of create / alloc / free / batch / shrink / reap / destroy / kmalloc
//! / kfree, with deliberate double frees and foreign frees, run against a hosted heap and
//! a model too simple to be wrong: the live objects of each cache and of kmalloc, in
//! `BTreeMap`s. After every step:
//! - no object is handed out twice or overlaps another; each is aligned, inside its
//!   slab, and reported allocated by `object_info`; its bytes are exactly what the test
//!   last wrote (so the allocator never scribbles on a live object);
//! - constructed objects come out constructed, and constructions minus destructions
//!   equal the objects of the slabs that exist;
//! - the only allocation error is `OutOfMemory`, and bad frees return the expected
//!   error and change nothing;
//! - every invariant of every cache holds (`check_invariants`).
//!
//! At the end everything is freed, every cache destroyed, the allocator dropped, and the
//! heap must be exactly as it was before the slab layer started: no page leaked.

use super::slab_tests::{MAGIC, TestSlab, ctor, ctor_dtor, dtor, record, reports};
use super::*;
use crate::hosted::{HostedLayout, HostedMachine};
use crate::kmalloc::{Gfp, Kmalloc};
use crate::page::PhysRegion;
use crate::percpu::Cache;
use crate::platform::Platform;
use crate::sync::NoInterrupts;
use crate::tests::{HostedHeap, snapshot};
use core::ptr::NonNull;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

const SIZES: [usize; 14] = [
    1, 8, 24, 32, 64, 100, 200, 500, 512, 1000, 2048, 3000, 4096, 9000,
];
const ALIGNS: [usize; 5] = [0, 8, 64, 256, 4096];
const FLAGS: [SlabFlags; 7] = [
    SlabFlags::NONE,
    SlabFlags::HWCACHE_ALIGN,
    SlabFlags::DMA,
    SlabFlags::RED_ZONE,
    SlabFlags::POISON,
    SlabFlags::DEBUG,
    SlabFlags::NO_REAP,
];
const NAMES: [&str; 8] = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"];
const KSIZES: [usize; 8] = [1, 40, 64, 700, 4096, 20_000, 131_072, 140_000];

#[derive(Clone, Debug)]
enum Op {
    Create {
        size: usize,
        align: usize,
        flags: usize,
        ctor: bool,
    },
    Alloc {
        cache: usize,
    },
    Free {
        pick: usize,
    },
    AllocBatch {
        cache: usize,
        n: usize,
    },
    FreeBatch {
        cache: usize,
        n: usize,
    },
    DoubleFree {
        pick: usize,
    },
    ForeignFree {
        cache: usize,
        pick: usize,
    },
    Shrink {
        cache: usize,
    },
    Reap,
    Destroy {
        cache: usize,
    },
    Kmalloc {
        size: usize,
        dma: bool,
    },
    Kfree {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let any = proptest::arbitrary::any::<usize>;
    prop_oneof![
        2 => (0..SIZES.len(), 0..ALIGNS.len(), 0..FLAGS.len(), proptest::arbitrary::any::<bool>())
            .prop_map(|(size, align, flags, ctor)| Op::Create { size, align, flags, ctor }),
        12 => any().prop_map(|cache| Op::Alloc { cache }),
        8 => any().prop_map(|pick| Op::Free { pick }),
        2 => (any(), 1..40usize).prop_map(|(cache, n)| Op::AllocBatch { cache, n }),
        2 => (any(), 1..40usize).prop_map(|(cache, n)| Op::FreeBatch { cache, n }),
        1 => any().prop_map(|pick| Op::DoubleFree { pick }),
        1 => (any(), any()).prop_map(|(cache, pick)| Op::ForeignFree { cache, pick }),
        1 => any().prop_map(|cache| Op::Shrink { cache }),
        1 => Just(Op::Reap),
        1 => any().prop_map(|cache| Op::Destroy { cache }),
        4 => (0..KSIZES.len(), prop::bool::weighted(0.2)).prop_map(|(size, dma)| Op::Kmalloc { size: KSIZES[size], dma }),
        4 => any().prop_map(|pick| Op::Kfree { pick }),
    ]
}

/// A small machine with a DMA zone: memory runs out now and then.
fn layout() -> HostedLayout {
    const M: u64 = 1 << 20;
    let (dma, normal, window) = if cfg!(miri) {
        (128 << 10, 1 << 20, 512)
    } else {
        (256 << 10, M, 1024)
    };
    HostedLayout {
        regions: std::vec![PhysRegion::new(16 * M - dma, 16 * M + normal)],
        reserved: Vec::new(),
        window_pages: window,
        page_tables: false,
    }
}

struct ModelCache<'s, 'h, 'm> {
    handle: Cache<'s, &'h HostedHeap<'m>, NoInterrupts>,
    name: &'static str,
    size: usize,
    align: usize,
    ctor: bool,
    /// Live objects: address -> the byte the test filled them with.
    live: BTreeMap<usize, u8>,
}

/// The bytes of a live object that the test owns (a constructed object's first word is
/// its constructor's mark).
fn user_bytes(size: usize, ctor: bool) -> core::ops::Range<usize> {
    if ctor { 8..size.max(8) } else { 0..size }
}

struct Model<'s, 'h, 'm> {
    slab: &'s TestSlab<'h, 'm>,
    caches: Vec<Option<ModelCache<'s, 'h, 'm>>>,
    /// kmalloc'd blocks: address -> (size, fill byte).
    kmalloc: BTreeMap<usize, (usize, u8)>,
    /// Objects freed and not handed out since, with their cache.
    freed: Vec<(usize, usize)>,
    next_name: usize,
    fill: u8,
}

impl Model<'_, '_, '_> {
    fn pointer(&self, addr: usize) -> NonNull<u8> {
        NonNull::new(
            self.slab
                .caches()
                .slab()
                .backend()
                .platform()
                .pointer_to(addr),
        )
        .unwrap()
    }

    fn fill(&mut self, addr: usize, bytes: core::ops::Range<usize>) -> u8 {
        self.fill = self.fill.wrapping_add(1).max(1);
        let p = self.pointer(addr);
        // SAFETY: a live block of at least `bytes.end` bytes, owned by the test.
        unsafe { p.add(bytes.start).write_bytes(self.fill, bytes.len()) };
        self.fill
    }

    fn verify(&self, addr: usize, bytes: core::ops::Range<usize>, fill: u8) {
        let p = self.pointer(addr);
        // SAFETY: as in `fill`.
        let got = unsafe { core::slice::from_raw_parts(p.add(bytes.start).as_ptr(), bytes.len()) };
        // Under Miri, reading 100 KiB byte by byte takes many seconds: check both ends and
        // a sample of the middle.
        let sampled =
            |&(i, _): &(usize, &u8)| !cfg!(miri) || i % 509 == 0 || i < 64 || i + 64 >= got.len();
        assert!(
            got.iter()
                .enumerate()
                .filter(sampled)
                .all(|(_, &b)| b == fill),
            "block {addr:#x} was overwritten"
        );
    }

    fn cache_index(&self, pick: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.caches.len())
            .filter(|&i| self.caches[i].is_some())
            .collect();
        (!open.is_empty()).then(|| open[pick % open.len()])
    }

    /// Checks a fresh object and takes it into the model.
    fn took(&mut self, c: usize, addr: usize) {
        let cache = self.caches[c].as_ref().unwrap();
        let (size, align, ctor, name) = (cache.size, cache.align, cache.ctor, cache.name);
        assert_eq!(addr % align.max(8), 0, "misaligned object");
        let info = self
            .slab
            .caches()
            .object_info(addr)
            .expect("object outside any slab");
        assert_eq!(
            (info.cache, info.object, info.allocated),
            (name, addr, true)
        );
        assert!(
            info.size >= size
                && info.object + info.size <= info.slab + info.slab_pages * crate::PAGE_SIZE
        );
        assert!(!self.is_live(addr), "object {addr:#x} handed out twice");
        if ctor {
            // SAFETY: a live constructed object, at least 8 bytes.
            let mark = unsafe { self.pointer(addr).cast::<u64>().read() };
            assert_eq!(mark, MAGIC, "not constructed");
        }
        self.freed.retain(|&(a, _)| a != addr);
        let fill = self.fill(addr, user_bytes(size, ctor));
        self.caches[c].as_mut().unwrap().live.insert(addr, fill);
    }

    fn is_live(&self, addr: usize) -> bool {
        self.kmalloc.contains_key(&addr)
            || self
                .caches
                .iter()
                .flatten()
                .any(|c| c.live.contains_key(&addr))
    }

    /// Takes a live object out of the model (checking its bytes) for freeing.
    fn give(&mut self, c: usize, pick: usize) -> Option<usize> {
        let cache = self.caches[c].as_mut()?;
        let n = cache.live.len();
        let (&addr, &fill) = cache.live.iter().nth(pick % n.max(1))?;
        cache.live.remove(&addr);
        let bytes = user_bytes(cache.size, cache.ctor);
        self.verify(addr, bytes, fill);
        self.freed.push((addr, c));
        Some(addr)
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Create {
                size,
                align,
                flags,
                ctor: with_ctor,
            } => {
                if self.next_name == NAMES.len() {
                    return;
                }
                let (size, align, flags) = (SIZES[size], ALIGNS[align], FLAGS[flags]);
                let with_ctor = with_ctor && size >= 8;
                let name = NAMES[self.next_name];
                let (c, d) = if with_ctor {
                    (Some(ctor as Constructor), Some(dtor as Destructor))
                } else {
                    (None, None)
                };
                let handle = match self
                    .slab
                    .caches()
                    .create_cache(name, size, align, flags, c, d)
                {
                    Ok(handle) => handle,
                    Err(e) => return assert_eq!(e, SlabError::OutOfMemory),
                };
                self.next_name += 1;
                let align = handle.align();
                self.caches.push(Some(ModelCache {
                    handle,
                    name,
                    size,
                    align,
                    ctor: with_ctor,
                    live: BTreeMap::new(),
                }));
            }
            Op::Alloc { cache } => {
                let Some(c) = self.cache_index(cache) else {
                    return;
                };
                match self.caches[c].as_ref().unwrap().handle.alloc() {
                    Ok(p) => self.took(c, p.addr().get()),
                    Err(e) => assert_eq!(e, SlabError::OutOfMemory),
                }
            }
            Op::AllocBatch { cache, n } => {
                let Some(c) = self.cache_index(cache) else {
                    return;
                };
                let mut out = std::vec![core::ptr::null_mut(); n];
                match self.caches[c]
                    .as_ref()
                    .unwrap()
                    .handle
                    .alloc_batch(&mut out)
                {
                    Ok(k) => {
                        assert!(k >= 1 && k <= n);
                        assert!(out[k..].iter().all(|p| p.is_null()));
                        for p in &out[..k] {
                            self.took(c, p.addr());
                        }
                    }
                    Err(e) => assert_eq!(e, SlabError::OutOfMemory),
                }
            }
            Op::Free { pick } => {
                let Some(c) = self.cache_index(pick) else {
                    return;
                };
                let Some(addr) = self.give(c, pick / 7) else {
                    return;
                };
                let p = self.pointer(addr);
                // SAFETY: a live object of the cache, given up by the model.
                unsafe { self.caches[c].as_ref().unwrap().handle.free(p) }.unwrap();
            }
            Op::FreeBatch { cache, n } => {
                let Some(c) = self.cache_index(cache) else {
                    return;
                };
                let addrs: Vec<usize> = (0..n).filter_map(|i| self.give(c, i * 31)).collect();
                let objs: Vec<*mut u8> = addrs
                    .into_iter()
                    .map(|a| self.pointer(a).as_ptr())
                    .collect();
                // SAFETY: live objects of the cache, given up by the model.
                unsafe { self.caches[c].as_ref().unwrap().handle.free_batch(&objs) }.unwrap();
            }
            Op::DoubleFree { pick } => {
                if self.freed.is_empty() {
                    return;
                }
                let (addr, c) = self.freed[pick % self.freed.len()];
                let Some(cache) = self.caches[c].as_ref() else {
                    return;
                };
                // Only while the object's slab still exists: otherwise the page may now
                // hold someone else's live object (no allocator can tell).
                let still = self
                    .slab
                    .caches()
                    .object_info(addr)
                    .is_some_and(|i| i.cache == cache.name && i.object == addr);
                if !still {
                    return;
                }
                let before = cache.handle.stats();
                // SAFETY: a free object: the double free must be detected.
                let result = unsafe { cache.handle.free(self.pointer(addr)) };
                assert_eq!(
                    result,
                    Err(SlabError::DoubleFree {
                        cache: cache.name,
                        addr
                    })
                );
                let after = cache.handle.stats();
                assert_eq!(
                    (after.slab.active_objs, after.slab.frees, after.slab.errors),
                    (
                        before.slab.active_objs,
                        before.slab.frees,
                        before.slab.errors + 1
                    )
                );
            }
            Op::ForeignFree { cache, pick } => {
                let Some(c) = self.cache_index(cache) else {
                    return;
                };
                let others: Vec<(usize, &'static str)> = self
                    .caches
                    .iter()
                    .flatten()
                    .filter(|o| o.name != self.caches[c].as_ref().unwrap().name)
                    .flat_map(|o| o.live.keys().map(move |&a| (a, o.name)))
                    .collect();
                let target = self.caches[c].as_ref().unwrap();
                let (addr, expected) = match others.get(pick % others.len().max(1)) {
                    Some(&(addr, owner)) => (
                        addr,
                        SlabError::WrongCache {
                            expected: target.name,
                            actual: owner,
                            addr,
                        },
                    ),
                    None => {
                        let addr = self
                            .slab
                            .caches()
                            .slab()
                            .backend()
                            .platform()
                            .window_start()
                            + 8;
                        (addr, SlabError::InvalidFree { cache: None, addr })
                    }
                };
                let before = target.handle.stats();
                // SAFETY: not an object of this cache: must be detected.
                let result = unsafe { target.handle.free(self.pointer(addr)) };
                assert_eq!(result, Err(expected));
                assert_eq!(
                    target.handle.stats().slab.active_objs,
                    before.slab.active_objs
                );
            }
            Op::Shrink { cache } => {
                let Some(c) = self.cache_index(cache) else {
                    return;
                };
                let handle = &self.caches[c].as_ref().unwrap().handle;
                let free_slabs = handle.stats().slab.free_slabs;
                let pages = handle.shrink();
                assert_eq!(pages, free_slabs * handle.stats().slab.pages_per_slab);
                assert_eq!(handle.stats().slab.free_slabs, 0);
            }
            Op::Reap => {
                self.slab.caches().reap();
            }
            Op::Destroy { cache } => {
                let Some(c) = self.cache_index(cache) else {
                    return;
                };
                let entry = self.caches[c].take().unwrap();
                let live = entry.live.len();
                match entry.handle.destroy() {
                    Ok(()) => {
                        assert_eq!(live, 0, "destroyed a cache with live objects");
                        self.freed.retain(|&(_, fc)| fc != c);
                    }
                    Err((handle, error)) => {
                        assert_eq!(
                            error,
                            SlabError::Busy {
                                cache: entry.name,
                                active: live
                            }
                        );
                        self.caches[c] = Some(ModelCache { handle, ..entry });
                    }
                }
            }
            Op::Kmalloc { size, dma } => {
                let flags = if dma { Gfp::DMA } else { Gfp::KERNEL };
                match self.slab.kmalloc(size, flags) {
                    Ok(p) => {
                        let addr = p.addr().get();
                        assert!(!self.is_live(addr), "kmalloc block handed out twice");
                        assert!(self.slab.ksize(p.as_ptr()).unwrap() >= size);
                        assert_eq!(
                            addr % size.next_power_of_two().clamp(32, crate::PAGE_SIZE),
                            0
                        );
                        self.freed.retain(|&(a, _)| a != addr);
                        let fill = self.fill(addr, 0..size);
                        self.kmalloc.insert(addr, (size, fill));
                    }
                    Err(e) => assert_eq!(e, SlabError::OutOfMemory),
                }
            }
            Op::Kfree { pick } => {
                let n = self.kmalloc.len();
                let Some((&addr, &(size, fill))) = self.kmalloc.iter().nth(pick % n.max(1)) else {
                    return;
                };
                self.verify(addr, 0..size, fill);
                self.kmalloc.remove(&addr);
                // SAFETY: a live kmalloc block, given up by the model.
                unsafe { self.slab.kfree(self.pointer(addr).as_ptr()) }.unwrap();
            }
        }
    }

    /// No two live blocks overlap (all caches and kmalloc together).
    fn check_overlaps(&self) {
        let mut blocks: Vec<(usize, usize)> = self
            .kmalloc
            .iter()
            .map(|(&a, &(s, _))| (a, s.max(1)))
            .collect();
        for cache in self.caches.iter().flatten() {
            blocks.extend(cache.live.keys().map(|&a| (a, cache.size)));
        }
        blocks.sort_unstable();
        for w in blocks.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "blocks {:#x} and {:#x} overlap",
                w[0].0,
                w[1].0
            );
        }
    }

    /// Constructions minus destructions = objects in the slabs of constructor caches.
    fn check_ctor_balance(&self, base: (usize, usize)) {
        let (c, d) = ctor_dtor();
        let constructed: usize = self
            .caches
            .iter()
            .flatten()
            .filter(|m| m.ctor)
            .map(|m| m.handle.stats().slab.total_objs)
            .sum();
        assert_eq!(
            (c - base.0) - (d - base.1),
            constructed,
            "constructors and destructors unbalanced"
        );
    }
}

fn run(ops: &[Op]) {
    let mut machine = HostedMachine::new(layout());
    let heap = machine.boot().unwrap();
    heap.shrink();
    let initial = snapshot(&heap);
    let base = ctor_dtor();
    {
        let slab: TestSlab<'_, '_> = Kmalloc::new(
            &heap,
            SlabOptions {
                debug: false,
                reporter: Some(record),
                ..SlabOptions::default()
            },
        )
        .unwrap();
        let mut model = Model {
            slab: &slab,
            caches: Vec::new(),
            kmalloc: BTreeMap::new(),
            freed: Vec::new(),
            next_name: 0,
            fill: 0,
        };
        let every = if cfg!(miri) { 8 } else { 1 };
        for (i, op) in ops.iter().enumerate() {
            model.step(op);
            if i % every == 0 {
                model.check_overlaps();
                model.check_ctor_balance(base);
                slab.caches().check_invariants();
            }
        }
        slab.caches().check_invariants();
        // Free everything, destroy every cache.
        let kmalloc: Vec<usize> = model.kmalloc.keys().copied().collect();
        for addr in kmalloc {
            model.step(&Op::Kfree {
                pick: model.kmalloc.keys().position(|&a| a == addr).unwrap(),
            });
        }
        for c in 0..model.caches.len() {
            while model.caches[c].as_ref().is_some_and(|m| !m.live.is_empty()) {
                model.step(&Op::Free { pick: 0 }.clone_for(c, &model));
            }
            if let Some(entry) = model.caches[c].take() {
                assert!(
                    entry.handle.destroy().is_ok(),
                    "destroy of an empty cache failed"
                );
            }
        }
        model.check_ctor_balance(base);
        slab.caches().check_invariants();
        // Errors are only those the test provoked.
        for e in reports() {
            assert!(
                matches!(
                    e,
                    SlabError::DoubleFree { .. }
                        | SlabError::WrongCache { .. }
                        | SlabError::InvalidFree { .. }
                ),
                "{e}"
            );
        }
    }
    let (c, d) = ctor_dtor();
    assert_eq!(
        c - base.0,
        d - base.1,
        "constructed objects left undestroyed"
    );
    heap.shrink();
    assert_eq!(
        snapshot(&heap),
        initial,
        "the heap is not back to its state before the slab layer"
    );
}

impl Op {
    /// A `Free` that picks cache `c` (the model maps `pick` to a cache, then an object).
    fn clone_for(&self, c: usize, model: &Model<'_, '_, '_>) -> Op {
        // `cache_index(pick)` takes the `pick % open`-th open cache.
        let open: Vec<usize> = (0..model.caches.len())
            .filter(|&i| model.caches[i].is_some())
            .collect();
        let rank = open.iter().position(|&i| i == c).unwrap();
        Op::Free { pick: rank }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_slab_layer_agrees_with_the_model_and_leaks_nothing(
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 32 } else { 300 })
    ) {
        run(&ops);
    }
}

#[test]
fn a_fixed_workload_with_every_kind_of_cache_leaks_nothing() {
    let mut ops = Vec::new();
    for (i, &size) in SIZES
        .iter()
        .enumerate()
        .take(if cfg!(miri) { 4 } else { 8 })
    {
        let _ = size;
        ops.push(Op::Create {
            size: i,
            align: i % ALIGNS.len(),
            flags: i % FLAGS.len(),
            ctor: i % 2 == 0,
        });
    }
    let rounds = if cfg!(miri) { 10 } else { 200 };
    for i in 0..rounds {
        ops.push(Op::Alloc { cache: i });
        ops.push(Op::Kmalloc {
            size: KSIZES[i % KSIZES.len()],
            dma: i % 5 == 0,
        });
        if i % 3 == 0 {
            ops.push(Op::Free { pick: i * 13 });
            ops.push(Op::Kfree { pick: i });
        }
        if i % 17 == 0 {
            ops.push(Op::DoubleFree { pick: i });
            ops.push(Op::ForeignFree { cache: i, pick: i });
            ops.push(Op::Reap);
        }
    }
    run(&ops);
}
