//! Model-based property test of the whole heap.
//!
//! Random sequences of frame and range operations run against a hosted heap and against
//! a model that is too simple to be wrong: two `BTreeMap`s of what is live (frame blocks
//! by address, user ranges by start). After every step the heap must agree with the model
//! (no overlap, everything inside RAM or the window, the right zone, counters conserved,
//! every invariant of both allocators), every failure must be legitimate (out of space
//! only when nothing fits, out of memory only when frames are short), and after freeing
//! everything the heap must be back to its state after boot: same counters, one free
//! segment per originally free span, same buddy free lists, only the bootstrap page
//! mapped.

use super::{HostedHeap, largest_free, snapshot};
use crate::hosted::{HostedLayout, HostedMachine};
use crate::page::{DMA_LIMIT, MAX_ORDER, ORDERS};
use crate::range::LOW_WATER;
use crate::{
    FrameError, PAGE_SIZE, PageOwner, PageState, PhysAddr, PhysRegion, Platform, RangeError,
    RangeFlags, RangeInfo, RangeKind, Zone,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

const P: usize = PAGE_SIZE;
const FLAG_SETS: [RangeFlags; 5] = [
    RangeFlags::NONE,
    RangeFlags::MAP,
    RangeFlags::MAP.union(RangeFlags::DMA),
    RangeFlags::MAP.union(RangeFlags::ZERO),
    RangeFlags::MAP
        .union(RangeFlags::DMA)
        .union(RangeFlags::ZERO),
];

#[derive(Clone, Debug)]
enum Op {
    AllocFrames { order: usize, zone: Zone },
    FreeFrames { pick: usize },
    FreeWrongOrder { pick: usize, delta: usize },
    GetPut { pick: usize },
    NewRange { pages: usize, flags: usize },
    DelRange { pick: usize },
    DelInside { pick: usize, offset: usize },
    DelAnywhere { page: usize },
    Reserve { page: usize, pages: usize },
    Lookup { page: usize, offset: usize },
    Shrink,
}

fn op() -> impl Strategy<Value = Op> {
    let max_pages: usize = if cfg!(miri) { 8 } else { 64 };
    // Mostly small ranges, mostly address space only: many live segments, so that the
    // range cache grows and the window fills; some large and mapped ones to run out of
    // frames.
    let pages = prop_oneof![3 => 1..=4usize, 1 => 1..=max_pages];
    let flags = prop_oneof![2 => Just(0usize), 1 => 1..FLAG_SETS.len()];
    let order = prop_oneof![3 => 0..3usize, 1 => 0..=MAX_ORDER];
    let zone = prop_oneof![3 => Just(Zone::Normal), 1 => Just(Zone::Dma)];
    prop_oneof![
        3 => (order, zone).prop_map(|(order, zone)| Op::AllocFrames { order, zone }),
        3 => any::<usize>().prop_map(|pick| Op::FreeFrames { pick }),
        1 => (any::<usize>(), 1..ORDERS).prop_map(|(pick, delta)| Op::FreeWrongOrder { pick, delta }),
        1 => any::<usize>().prop_map(|pick| Op::GetPut { pick }),
        8 => (pages, flags).prop_map(|(pages, flags)| Op::NewRange { pages, flags }),
        4 => any::<usize>().prop_map(|pick| Op::DelRange { pick }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(pick, offset)| Op::DelInside { pick, offset }),
        1 => any::<usize>().prop_map(|page| Op::DelAnywhere { page }),
        1 => (any::<usize>(), 1..=16usize).prop_map(|(page, pages)| Op::Reserve { page, pages }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(page, offset)| Op::Lookup { page, offset }),
        1 => Just(Op::Shrink),
    ]
}

/// RAM with holes in both zones; small enough that frames and window run out often.
fn layout() -> HostedLayout {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    let (low, mid, high, window_pages) = if cfg!(miri) {
        (64 * K, 128 * K, 256 * K, 256)
    } else {
        (256 * K, 512 * K, 2 * M, 512)
    };
    HostedLayout {
        regions: std::vec![
            PhysRegion::new(0, low),
            PhysRegion::new(16 * M - mid, 16 * M + 2 * mid),
            PhysRegion::new(4 << 30, (4 << 30) + high),
        ],
        reserved: std::vec![PhysRegion::new(0, 4 * K)],
        window_pages,
        page_tables: false,
    }
}

#[derive(Default)]
struct Model {
    /// Live frame blocks: first frame -> order.
    frames: BTreeMap<u64, usize>,
    /// Live user ranges: start -> (pages, kind).
    ranges: BTreeMap<usize, (usize, RangeKind)>,
}

impl Model {
    fn frame(&self, pick: usize) -> Option<(PhysAddr, usize)> {
        let n = self.frames.len();
        (n > 0).then(|| {
            self.frames
                .iter()
                .nth(pick % n)
                .map(|(&a, &o)| (PhysAddr(a), o))
                .unwrap()
        })
    }

    fn range(&self, pick: usize) -> Option<(usize, usize, RangeKind)> {
        let n = self.ranges.len();
        (n > 0).then(|| {
            self.ranges
                .iter()
                .nth(pick % n)
                .map(|(&s, &(p, k))| (s, p, k))
                .unwrap()
        })
    }

    fn range_containing(&self, addr: usize) -> Option<RangeInfo> {
        let (&start, &(pages, kind)) = self.ranges.range(..=addr).next_back()?;
        (addr < start + pages * P).then_some(RangeInfo { start, pages, kind })
    }

    fn overlaps(&self, start: usize, end: usize) -> bool {
        self.ranges
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &(p, _))| s + p * P > start)
    }

    fn mapped_pages(&self) -> usize {
        self.ranges
            .values()
            .filter(|(_, k)| is_mapped(*k))
            .map(|(p, _)| p)
            .sum()
    }
}

fn is_mapped(kind: RangeKind) -> bool {
    matches!(kind, RangeKind::Allocated(f) if f.contains(RangeFlags::MAP))
}

/// A byte that identifies the range at `start`, written at both ends of each of its pages.
fn marker(start: usize) -> u8 {
    (start / P) as u8 ^ 0x5a
}

fn markers(heap: &HostedHeap<'_>, start: usize, pages: usize, write: bool) {
    for i in 0..pages {
        let page = heap.platform().pointer_to(start + i * P);
        for offset in [0, P - 1] {
            // SAFETY: the page is mapped for the live MAP range at `start`, which the test owns.
            unsafe {
                if write {
                    *page.add(offset) = marker(start);
                } else {
                    assert_eq!(
                        *page.add(offset),
                        marker(start),
                        "range {start:#x} was overwritten"
                    );
                }
            }
        }
    }
}

fn step(heap: &HostedHeap<'_>, model: &mut Model, op: &Op) {
    let (w, n) = (
        heap.platform().window_start(),
        heap.platform().window_pages(),
    );
    let before = heap.stats();
    match *op {
        Op::AllocFrames { order, zone } => match heap.alloc_frames(order, zone) {
            Ok(a) => {
                let len = (P as u64) << order;
                assert_eq!(a.0 % len, 0, "misaligned block");
                if zone == Zone::Dma {
                    assert!(a.0 + len <= DMA_LIMIT, "a DMA request got {a:?}");
                } else if Zone::of(a) == Zone::Dma {
                    let normal = &before.pages.free_blocks[Zone::Normal as usize];
                    assert!(
                        normal[order..].iter().all(|&b| b == 0),
                        "fell back to DMA too early"
                    );
                }
                let info = heap.frame_info(a).unwrap();
                assert_eq!(
                    (info.state, info.refcount, info.owner),
                    (PageState::Allocated, 1, PageOwner::None)
                );
                assert!(
                    model
                        .frames
                        .range(..a.0)
                        .next_back()
                        .is_none_or(|(&b, &o)| b + ((P as u64) << o) <= a.0)
                );
                assert!(
                    model
                        .frames
                        .range(a.0..)
                        .next()
                        .is_none_or(|(&b, _)| b >= a.0 + len)
                );
                model.frames.insert(a.0, order);
            }
            Err(e) => {
                assert_eq!(e, FrameError::OutOfMemory);
                let zones: &[Zone] = if zone == Zone::Dma {
                    &[Zone::Dma]
                } else {
                    &[Zone::Dma, Zone::Normal]
                };
                for z in zones {
                    assert!(
                        before.pages.free_blocks[*z as usize][order..]
                            .iter()
                            .all(|&b| b == 0),
                        "spurious OOM"
                    );
                }
            }
        },
        Op::FreeFrames { pick } => {
            if let Some((a, order)) = model.frame(pick) {
                heap.free_frames(a, order).unwrap();
                assert_eq!(heap.frame_info(a).unwrap().state, PageState::Free);
                model.frames.remove(&a.0);
            }
        }
        Op::FreeWrongOrder { pick, delta } => {
            if let Some((a, order)) = model.frame(pick) {
                let given = (order + delta) % ORDERS;
                let error = FrameError::WrongOrder {
                    addr: a,
                    expected: order,
                    given,
                };
                assert_eq!(heap.free_frames(a, given), Err(error));
                assert_eq!(heap.stats(), before);
            }
        }
        Op::GetPut { pick } => {
            if let Some((a, _)) = model.frame(pick) {
                assert_eq!(heap.get_page(a), Ok(2));
                assert_eq!(heap.put_page(a), Ok(false));
                assert_eq!(heap.frame_info(a).unwrap().refcount, 1);
            }
        }
        Op::NewRange { pages, flags } => new_range(heap, model, pages, FLAG_SETS[flags], &before),
        Op::DelRange { pick } => {
            if let Some((start, pages, kind)) = model.range(pick) {
                let frames: Vec<_> = if is_mapped(kind) {
                    markers(heap, start, pages, false);
                    (0..pages)
                        .map(|i| heap.platform().translate(start + i * P).unwrap())
                        .collect()
                } else {
                    Vec::new()
                };
                heap.del_range(start).unwrap();
                for (i, f) in frames.into_iter().enumerate() {
                    assert_eq!(heap.platform().translate(start + i * P), None);
                    assert_eq!(heap.frame_info(f).unwrap().state, PageState::Free);
                }
                model.ranges.remove(&start);
            }
        }
        Op::DelInside { pick, offset } => {
            if let Some((start, pages, _)) = model.range(pick) {
                let addr = start + 1 + offset % (pages * P - 1);
                assert_eq!(
                    heap.del_range(addr),
                    Err(RangeError::NotARangeStart { addr })
                );
            }
        }
        Op::DelAnywhere { page } => {
            let addr = w + page % n * P;
            if !model.ranges.contains_key(&addr) {
                let expected = match (model.range_containing(addr), heap.range_containing(addr)) {
                    (Some(_), _) => RangeError::NotARangeStart { addr },
                    (None, Some(i)) if i.start == addr => RangeError::Pinned { addr },
                    (None, Some(_)) => RangeError::NotARangeStart { addr },
                    (None, None) => RangeError::NotAllocated { addr },
                };
                assert_eq!(heap.del_range(addr), Err(expected));
                assert_eq!(heap.stats(), before);
            }
        }
        Op::Reserve { page, pages } => reserve(heap, model, w + page % (n + 2) * P, pages, &before),
        Op::Lookup { page, offset } => {
            let addr = w + page % n * P + offset % P;
            match (model.range_containing(addr), heap.range_containing(addr)) {
                (Some(expected), got) => assert_eq!(got, Some(expected)),
                (None, None) => {}
                (None, Some(info)) => {
                    assert_eq!(info.kind, RangeKind::Internal, "unknown range {info:?}")
                }
            }
        }
        Op::Shrink => {
            heap.shrink();
        }
    }
}

fn new_range(
    heap: &HostedHeap<'_>,
    model: &mut Model,
    pages: usize,
    flags: RangeFlags,
    before: &crate::HeapStats,
) {
    let (w, n) = (
        heap.platform().window_start(),
        heap.platform().window_pages(),
    );
    match heap.new_range(pages, flags) {
        Ok(start) => {
            let end = start + pages * P;
            assert!(
                start % P == 0 && start >= w && end <= w + n * P,
                "range outside the window"
            );
            assert!(!model.overlaps(start, end), "overlapping ranges");
            let info = Some(RangeInfo {
                start,
                pages,
                kind: RangeKind::Allocated(flags),
            });
            assert_eq!(
                (heap.range_containing(start), heap.range_containing(end - 1)),
                (info, info)
            );
            if flags.contains(RangeFlags::MAP) {
                let owner = heap.owner_of(start);
                assert!(matches!(owner, Some(PageOwner::Range(_))));
                for i in 0..pages {
                    let f = heap
                        .platform()
                        .translate(start + i * P)
                        .expect("MAP range not mapped");
                    let info = heap.frame_info(f).unwrap();
                    assert_eq!(
                        (info.state, info.refcount, Some(info.owner)),
                        (PageState::Allocated, 1, owner)
                    );
                    assert!(
                        !flags.contains(RangeFlags::DMA) || f.0 < DMA_LIMIT,
                        "DMA range got {f:?}"
                    );
                    let page = heap.platform().pointer_to(start + i * P);
                    if flags.contains(RangeFlags::ZERO) {
                        // SAFETY: the page is mapped for the new range, which the test owns.
                        let bytes = unsafe { core::slice::from_raw_parts(page, P) };
                        assert!(bytes.iter().all(|&b| b == 0), "ZERO range not zeroed");
                    }
                }
                markers(heap, start, pages, true);
            }
            model
                .ranges
                .insert(start, (pages, RangeKind::Allocated(flags)));
        }
        Err(RangeError::OutOfVirtualSpace) => {
            assert!(largest_free(heap) < pages, "spurious out of space")
        }
        Err(RangeError::OutOfMemory) => {
            let grow = usize::from(before.ranges.cache_free < LOW_WATER);
            if flags.contains(RangeFlags::MAP) {
                let usable = if flags.contains(RangeFlags::DMA) {
                    before.pages.free_dma_frames
                } else {
                    before.pages.free_frames
                };
                assert!(
                    usable < pages + grow,
                    "spurious out of memory: {usable} frames for {pages} pages"
                );
            } else {
                assert!(
                    grow == 1 && before.pages.free_frames == 0,
                    "spurious out of memory"
                );
            }
        }
        Err(e) => panic!("new_range({pages}, {flags:?}): {e:?}"),
    }
}

fn reserve(
    heap: &HostedHeap<'_>,
    model: &mut Model,
    addr: usize,
    pages: usize,
    before: &crate::HeapStats,
) {
    let (w, n) = (
        heap.platform().window_start(),
        heap.platform().window_pages(),
    );
    let end = addr + pages * P;
    let mut internal = false;
    heap.for_each_segment(|s, p, k| {
        internal |= k == Some(RangeKind::Internal) && s < end && addr < s + p * P
    });
    let result = heap.reserve(addr, pages);
    if end > w + n * P {
        assert_eq!(result, Err(RangeError::OutsideWindow { addr }));
    } else if model.overlaps(addr, end) || internal {
        let Err(RangeError::Occupied { addr: at }) = result else {
            panic!("reserve over a used range: {result:?}");
        };
        let used = heap
            .range_containing(at)
            .expect("Occupied names a used range");
        assert!(used.start == at && at < end && addr < at + used.pages * P);
    } else {
        match result {
            Ok(()) => {
                model.ranges.insert(addr, (pages, RangeKind::Reserved));
            }
            Err(RangeError::OutOfMemory) => {
                assert_eq!(before.pages.free_frames, 0, "spurious out of memory")
            }
            Err(e) => panic!("reserve({addr:#x}, {pages}) of free space: {e:?}"),
        }
    }
}

/// Conservation laws between the model and the heap's counters, then every invariant.
fn check(heap: &HostedHeap<'_>, model: &Model) {
    let st = heap.stats();
    let frames: usize = model.frames.values().map(|&o| 1 << o).sum();
    let mapped = model.mapped_pages();
    let internal = st.ranges.internal_pages;
    assert_eq!(
        st.pages.allocated_frames(),
        frames + mapped + internal,
        "frames are conserved"
    );
    assert_eq!(
        heap.platform().mapped_pages(),
        mapped + internal,
        "mappings"
    );
    let pages_of = |f: fn(&RangeKind) -> bool| -> usize {
        model
            .ranges
            .values()
            .filter(|(_, k)| f(k))
            .map(|(p, _)| p)
            .sum()
    };
    assert_eq!(
        st.ranges.allocated_pages,
        pages_of(|k| matches!(k, RangeKind::Allocated(_)))
    );
    assert_eq!(
        st.ranges.reserved_pages,
        pages_of(|k| *k == RangeKind::Reserved)
    );
    heap.check_invariants();
}

fn run(ops: &[Op]) {
    let mut machine = HostedMachine::new(layout());
    let heap = machine.boot().unwrap();
    let initial = snapshot(&heap);
    let mut model = Model::default();
    // Under Miri the full check every step would dominate; the steps themselves are
    // what Miri is there to watch.
    let check_every = if cfg!(miri) { 8 } else { 1 };
    for (i, op) in ops.iter().enumerate() {
        step(&heap, &mut model, op);
        if i % check_every == 0 {
            check(&heap, &model);
        }
    }
    check(&heap, &model);
    for (&start, &(pages, kind)) in &model.ranges {
        if is_mapped(kind) {
            markers(&heap, start, pages, false);
        }
        heap.del_range(start).unwrap();
    }
    for (&a, &order) in &model.frames {
        heap.free_frames(PhysAddr(a), order).unwrap();
    }
    heap.shrink();
    heap.check_invariants();
    assert_eq!(snapshot(&heap), initial, "not back to the state after boot");
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn heap_agrees_with_the_model_and_returns_to_its_initial_state(
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 400 })
    ) {
        run(&ops);
    }
}

/// A fixed sequence that makes the range cache grow several slabs with MAP ranges live,
/// then frees in an order that scatters the survivors, so that `shrink` must move
/// descriptors of mapped ranges (and retarget their frames) to get back to the start.
#[test]
fn growth_and_shrink_with_mapped_survivors() {
    let mut ops = Vec::new();
    let count = if cfg!(miri) { 72 } else { 300 };
    for i in 0..count {
        ops.push(Op::NewRange {
            pages: 1 + i % 2,
            flags: i % 2,
        });
    }
    for i in 0..count {
        ops.push(Op::DelRange { pick: i * 7 });
        if i % 16 == 0 {
            ops.push(Op::Shrink);
        }
    }
    run(&ops);
}
