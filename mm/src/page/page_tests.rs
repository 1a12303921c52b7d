//! Unit tests of the page allocator: every operation and every error path.

use super::*;
use std::vec::Vec;

const MIB: u64 = 1 << 20;

/// 0..640K (DMA), 1M..20M (DMA up to 16M, then Normal), 4G..4G+8M (Normal).
fn pc_regions() -> [PhysRegion; 3] {
    [
        PhysRegion::new(0, 640 << 10),
        PhysRegion::new(MIB, 20 * MIB),
        PhysRegion::new(4 << 30, (4 << 30) + 8 * MIB),
    ]
}

fn storage(regions: &[PhysRegion]) -> Vec<MaybeUninit<PageDescriptor>> {
    let mut v = Vec::new();
    v.resize_with(
        PageAllocator::descriptors_needed(regions),
        MaybeUninit::uninit,
    );
    v
}

fn free_block_list(pa: &PageAllocator<'_>) -> Vec<(u64, usize, Zone)> {
    let mut v = Vec::new();
    pa.for_each_free_block(|a, o, z| v.push((a.0, o, z)));
    v.sort();
    v
}

#[test]
fn descriptors_are_counted_per_region_not_up_to_the_highest_frame() {
    let regions = pc_regions();
    assert_eq!(
        PageAllocator::descriptors_needed(&regions),
        160 + 19 * 256 + 8 * 256
    );
}

#[test]
fn construction_frees_everything_but_the_reserved_frames() {
    let regions = pc_regions();
    let reserved = [
        PhysRegion::new(0, 4096),              // the real-mode IVT
        PhysRegion::new(MIB, MIB + 8193),      // a "kernel image", partial last frame
        PhysRegion::new(100 << 30, 101 << 30), // outside RAM: ignored
    ];
    let mut s = storage(&regions);
    let pa = PageAllocator::new(&regions, &reserved, &mut s).unwrap();
    pa.check_invariants();
    let st = pa.stats();
    assert_eq!(st.total_frames, 160 + 19 * 256 + 8 * 256);
    assert_eq!(st.reserved_frames, 1 + 3);
    assert_eq!(st.free_frames, st.total_frames - 4);
    assert_eq!(st.free_dma_frames, 159 + 15 * 256 - 3);
    assert_eq!(st.allocated_frames(), 0);
    // The normal zone: 16M..20M is one 4 MiB block, 4G..4G+8M two.
    assert_eq!(st.free_blocks[Zone::Normal as usize][MAX_ORDER], 3);
    let info = pa.frame_info(PhysAddr(MIB + 5)).unwrap();
    assert_eq!((info.state, info.zone), (PageState::Reserved, Zone::Dma));
}

#[test]
fn bad_constructor_arguments_are_refused() {
    let regions = pc_regions();
    let mut short = storage(&regions);
    short.pop();
    let needed = short.len() + 1;
    assert_eq!(
        PageAllocator::new(&regions, &[], &mut short).unwrap_err(),
        PageInitError::StorageTooSmall {
            needed,
            given: needed - 1
        }
    );
    let unsorted = [regions[1], regions[0]];
    let mut s = storage(&unsorted);
    assert_eq!(
        PageAllocator::new(&unsorted, &[], &mut s).unwrap_err(),
        PageInitError::Unsorted { index: 1 }
    );
}

#[test]
fn blocks_are_aligned_and_in_the_requested_zone() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    for order in 0..=MAX_ORDER {
        for zone in Zone::ALL {
            let a = pa.alloc_frames(order, zone).unwrap();
            assert_eq!(a.0 % (PAGE << order), 0, "order {order} misaligned");
            assert_eq!(Zone::of(a), zone);
            let info = pa.frame_info(a).unwrap();
            assert_eq!(
                (info.state, info.refcount, info.block_order),
                (PageState::Allocated, 1, Some(order))
            );
        }
    }
    pa.check_invariants();
}

#[test]
fn normal_requests_fall_back_to_dma_only_when_normal_is_empty() {
    let regions = [
        PhysRegion::new(0, 8 * PAGE),
        PhysRegion::new(DMA_LIMIT, DMA_LIMIT + 2 * PAGE),
    ];
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    assert_eq!(
        Zone::of(pa.alloc_frame(Zone::Normal).unwrap()),
        Zone::Normal
    );
    assert_eq!(
        Zone::of(pa.alloc_frame(Zone::Normal).unwrap()),
        Zone::Normal
    );
    let dma_before = pa.stats().free_dma_frames;
    // Normal is empty now: the next normal request takes a DMA frame.
    assert_eq!(Zone::of(pa.alloc_frame(Zone::Normal).unwrap()), Zone::Dma);
    assert_eq!(pa.stats().free_dma_frames, dma_before - 1);
    // A DMA request never takes a normal frame.
    let regions = [PhysRegion::new(DMA_LIMIT, DMA_LIMIT + 2 * PAGE)];
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    assert_eq!(pa.alloc_frame(Zone::Dma), Err(FrameError::OutOfMemory));
}

#[test]
fn out_of_memory_is_an_error_and_freeing_restores_the_initial_shape() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[PhysRegion::new(0, PAGE)], &mut s).unwrap();
    let initial = (pa.stats(), free_block_list(&pa));
    let mut got = Vec::new();
    loop {
        match pa.alloc_frames(3, Zone::Normal) {
            Ok(a) => got.push(a),
            Err(e) => {
                assert_eq!(e, FrameError::OutOfMemory);
                break;
            }
        }
    }
    assert!(!pa.can_allocate(3, Zone::Dma) && !pa.can_allocate(3, Zone::Normal));
    assert!(pa.stats().free_frames < 8);
    pa.check_invariants();
    // Free in an interleaved order so that merges happen in every direction.
    let (even, odd): (Vec<_>, Vec<_>) = got.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, a) in odd.into_iter().chain(even.into_iter().rev()) {
        pa.free_frames(*a, 3).unwrap();
    }
    pa.check_invariants();
    assert_eq!((pa.stats(), free_block_list(&pa)), initial);
}

#[test]
fn invalid_frees_are_reported_and_change_nothing() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[PhysRegion::new(0, PAGE)], &mut s).unwrap();
    let a = pa.alloc_frames(2, Zone::Normal).unwrap();
    let before = (pa.stats(), free_block_list(&pa));
    let hole = PhysAddr(800 << 10);
    let cases = [
        (
            pa.free_frames(a, 1),
            FrameError::WrongOrder {
                addr: a,
                expected: 2,
                given: 1,
            },
        ),
        (
            pa.free_frames(a, 11),
            FrameError::InvalidOrder { order: 11 },
        ),
        (
            pa.free_frames(PhysAddr(a.0 + PAGE), 0),
            FrameError::NotAllocated {
                addr: PhysAddr(a.0 + PAGE),
            },
        ),
        (
            pa.free_frames(PhysAddr(a.0 + 1), 2),
            FrameError::Misaligned {
                addr: PhysAddr(a.0 + 1),
            },
        ),
        (
            pa.free_frames(hole, 0),
            FrameError::OutsideRam { addr: hole },
        ),
        (
            pa.free_frames(PhysAddr(0), 0),
            FrameError::Reserved { addr: PhysAddr(0) },
        ),
        (
            pa.free_frames(PhysAddr(2 * MIB), 0),
            FrameError::NotAllocated {
                addr: PhysAddr(2 * MIB),
            },
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, Err(want));
    }
    assert_eq!((pa.stats(), free_block_list(&pa)), before);
    pa.free_frames(a, 2).unwrap();
    // Double free.
    assert_eq!(
        pa.free_frames(a, 2),
        Err(FrameError::NotAllocated { addr: a })
    );
    pa.check_invariants();
}

#[test]
fn references_follow_the_sos_protocol() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    let free0 = pa.stats().free_frames;
    // Allocate (1), map (2), drop the allocation's reference (1): still allocated.
    let f = pa.alloc_frame(Zone::Normal).unwrap();
    assert_eq!(pa.get_page(f), Ok(2));
    assert_eq!(pa.put_page(f), Ok(false));
    assert_eq!(pa.frame_info(f).unwrap().state, PageState::Allocated);
    assert_eq!(pa.stats().free_frames, free0 - 1);
    // Unmap: the mapping's reference was the last one.
    assert_eq!(pa.put_page(f), Ok(true));
    assert_eq!(pa.stats().free_frames, free0);
    assert_eq!(pa.get_page(f), Err(FrameError::NotAllocated { addr: f }));
    assert_eq!(pa.put_page(f), Err(FrameError::NotAllocated { addr: f }));
    // free_frames also just drops a reference.
    let g = pa.alloc_frames(1, Zone::Dma).unwrap();
    pa.get_page(g).unwrap();
    pa.free_frames(g, 1).unwrap();
    assert_eq!(pa.frame_info(g).unwrap().refcount, 1);
    pa.free_frames(g, 1).unwrap();
    assert_eq!(pa.frame_info(g).unwrap().state, PageState::Free);
    pa.check_invariants();
}

#[test]
fn owned_frames_are_released_only_by_their_owner() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    let f = pa.alloc_frames(1, Zone::Normal).unwrap();
    let tail = PhysAddr(f.0 + PAGE);
    pa.set_owner(tail, PageOwner::Slab(0x40)).unwrap();
    pa.set_owner(f, PageOwner::Range(0x80)).unwrap();
    assert_eq!(pa.owner(f), Ok(PageOwner::Range(0x80)));
    assert_eq!(pa.owner(tail), Ok(PageOwner::Slab(0x40)));
    let owned = FrameError::Owned {
        addr: f,
        owner: PageOwner::Range(0x80),
    };
    assert_eq!(pa.put_page(f), Err(owned));
    assert_eq!(pa.free_frames(f, 1), Err(owned));
    // A pin taken on top of the owner's reference may be dropped.
    pa.get_page(f).unwrap();
    assert_eq!(pa.put_page(f), Ok(false));
    // The range layer releases its mapping's reference, which clears the owner.
    assert_eq!(pa.put_mapped(f), Ok(true));
    assert_eq!(pa.owner(f), Err(FrameError::NotAllocated { addr: f }));
    let info = pa.frame_info(tail).unwrap();
    assert_eq!((info.state, info.owner), (PageState::Free, PageOwner::None));
    assert_eq!(
        pa.set_owner(f, PageOwner::None),
        Err(FrameError::NotAllocated { addr: f })
    );
    pa.check_invariants();
}

#[test]
fn a_pinned_mapped_frame_survives_its_mapping_without_an_owner() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    let f = pa.alloc_frame(Zone::Normal).unwrap();
    pa.set_owner(f, PageOwner::Range(0x40)).unwrap();
    pa.get_page(f).unwrap(); // someone pins it
    assert_eq!(pa.put_mapped(f), Ok(false));
    assert_eq!(pa.owner(f), Ok(PageOwner::None));
    assert_eq!(pa.put_page(f), Ok(true));
    pa.check_invariants();
}

#[test]
fn counters_track_each_zone_and_order() {
    let regions = [
        PhysRegion::new(0, 16 * PAGE),
        PhysRegion::new(DMA_LIMIT, DMA_LIMIT + 16 * PAGE),
    ];
    let mut s = storage(&regions);
    let mut pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    let st = pa.stats();
    assert_eq!(st.free_blocks[Zone::Dma as usize][4], 1);
    assert_eq!(st.free_blocks[Zone::Normal as usize][4], 1);
    pa.alloc_frames(2, Zone::Dma).unwrap();
    let st = pa.stats();
    assert_eq!((st.free_frames, st.free_dma_frames), (28, 12));
    assert_eq!(&st.free_blocks[Zone::Dma as usize][..5], &[0, 0, 1, 1, 0]);
}

#[test]
fn frame_info_outside_ram_and_misaligned_owner_queries() {
    let regions = pc_regions();
    let mut s = storage(&regions);
    let pa = PageAllocator::new(&regions, &[], &mut s).unwrap();
    let hole = PhysAddr(3 << 30);
    assert_eq!(
        pa.frame_info(hole),
        Err(FrameError::OutsideRam { addr: hole })
    );
    assert_eq!(
        pa.owner(PhysAddr(7)),
        Err(FrameError::Misaligned { addr: PhysAddr(7) })
    );
    assert_eq!(pa.frame_info(PhysAddr(7)).unwrap().state, PageState::Free);
}
