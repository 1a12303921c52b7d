//! RAM regions, zones, and the sparse map from frame numbers to descriptors.
//!
//! The firmware describes RAM as a list of physical regions with holes between them
//! (0..640 KiB, 1 MiB..3 GiB, 4 GiB..9 GiB, ...). Descriptors are kept per region, packed
//! one after the other in the caller's storage, so a hole costs nothing (Linux's
//! `mem_map` up to the highest frame would spend 24 bytes per missing frame too).
//!
//! Internally a region that crosses [`DMA_LIMIT`] is cut in two, so that every [`Span`]
//! lies in exactly one [`Zone`]; buddy blocks never leave their span, hence never mix
//! zones. Finding the span of a frame is a binary search over at most [`MAX_SPANS`]
//! entries: constant time in practice, O(log spans) in the worst case.
//!
//! Invariants: spans are sorted by frame number, do not overlap, are non-empty, and their
//! descriptor index ranges are consecutive from 0 in the same order.

use super::PageInitError;
use super::descriptor::DescIndex;
use crate::platform::{PAGE_SIZE, PhysAddr};

/// Frames below this physical address form the DMA zone (ISA DMA reaches 16 MiB).
pub const DMA_LIMIT: u64 = 16 << 20;

/// The most spans (RAM regions, after cutting at [`DMA_LIMIT`]) one allocator manages.
pub const MAX_SPANS: usize = 32;

const PAGE: u64 = PAGE_SIZE as u64;

/// A range of physical RAM, `start..end` in bytes. Unaligned ends are rounded inwards
/// to whole frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRegion {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: PhysAddr,
}

impl PhysRegion {
    /// The region `start..end` (bytes).
    pub const fn new(start: u64, end: u64) -> Self {
        Self {
            start: PhysAddr(start),
            end: PhysAddr(end),
        }
    }

    /// The whole frames inside the region, as frame numbers `first..last`.
    pub(super) fn frames(&self) -> (u64, u64) {
        let first = self.start.0.div_ceil(PAGE);
        let last = self.end.0 / PAGE;
        (first, last.max(first))
    }
}

/// Where a frame may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Zone {
    /// Frames below [`DMA_LIMIT`], for ISA-style DMA. Only given to requests that ask for
    /// them, or to `Normal` requests as a last resort (see [`super::PageAllocator`]).
    Dma = 0,
    /// Every other frame.
    Normal = 1,
}

impl Zone {
    /// Both zones, in index order.
    pub const ALL: [Zone; 2] = [Zone::Dma, Zone::Normal];

    /// The zone a physical address belongs to.
    pub const fn of(addr: PhysAddr) -> Zone {
        if addr.0 < DMA_LIMIT {
            Zone::Dma
        } else {
            Zone::Normal
        }
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

/// A run of RAM frames inside one zone, with its slice of descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    /// Frame number of the first frame.
    pub start_pfn: u64,
    /// Number of frames (at least one).
    pub frames: u64,
    /// Index of the first frame's descriptor.
    pub first: DescIndex,
    pub zone: Zone,
}

impl Span {
    pub fn end_pfn(&self) -> u64 {
        self.start_pfn + self.frames
    }

    /// Descriptor index of a frame of this span.
    pub fn index_of(&self, pfn: u64) -> DescIndex {
        debug_assert!((self.start_pfn..self.end_pfn()).contains(&pfn));
        self.first + (pfn - self.start_pfn) as DescIndex
    }

    /// Frame number of a descriptor of this span.
    pub fn pfn_of(&self, index: DescIndex) -> u64 {
        self.start_pfn + u64::from(index - self.first)
    }
}

/// The spans of one allocator, in frame order.
#[derive(Debug)]
pub(super) struct Spans {
    spans: [Span; MAX_SPANS],
    len: usize,
}

const EMPTY_SPAN: Span = Span {
    start_pfn: 0,
    frames: 0,
    first: 0,
    zone: Zone::Dma,
};

impl Spans {
    /// Number of frames (= descriptors) in `regions`, as `build` would lay them out.
    pub fn frames_in(regions: &[PhysRegion]) -> u64 {
        regions
            .iter()
            .map(|r| {
                let (first, last) = r.frames();
                last - first
            })
            .sum()
    }

    /// Validates `regions` (sorted, not overlapping) and cuts them into spans.
    pub fn build(regions: &[PhysRegion]) -> Result<Self, PageInitError> {
        let mut spans = Spans {
            spans: [EMPTY_SPAN; MAX_SPANS],
            len: 0,
        };
        let dma_end_pfn = DMA_LIMIT / PAGE;
        let mut prev_end = 0;
        let mut next_index: u64 = 0;
        for (i, region) in regions.iter().enumerate() {
            if region.end.0 < region.start.0 {
                return Err(PageInitError::Unsorted { index: i });
            }
            let (first, last) = region.frames();
            if first == last {
                continue;
            }
            if first < prev_end {
                return Err(PageInitError::Unsorted { index: i });
            }
            prev_end = last;
            // Cut at the DMA limit so that a span never straddles two zones.
            let pieces = [
                (first, last.min(dma_end_pfn)),
                (first.max(dma_end_pfn), last),
            ];
            for (start, end) in pieces {
                if start >= end {
                    continue;
                }
                if spans.len == MAX_SPANS {
                    return Err(PageInitError::TooManyRegions { max: MAX_SPANS });
                }
                let frames = end - start;
                // NIL (u32::MAX) must stay out of reach of real indices.
                if next_index + frames >= u64::from(DescIndex::MAX) {
                    return Err(PageInitError::TooManyFrames);
                }
                spans.spans[spans.len] = Span {
                    start_pfn: start,
                    frames,
                    first: next_index as DescIndex,
                    zone: Zone::of(PhysAddr(start * PAGE)),
                };
                spans.len += 1;
                next_index += frames;
            }
        }
        Ok(spans)
    }

    pub fn as_slice(&self) -> &[Span] {
        &self.spans[..self.len]
    }

    /// Total number of frames.
    pub fn frames(&self) -> usize {
        self.as_slice().iter().map(|s| s.frames as usize).sum()
    }

    /// The span holding frame `pfn`, if it is RAM.
    pub fn by_pfn(&self, pfn: u64) -> Option<&Span> {
        let spans = self.as_slice();
        let i = spans
            .partition_point(|s| s.start_pfn <= pfn)
            .checked_sub(1)?;
        let span = &spans[i];
        (pfn < span.end_pfn()).then_some(span)
    }

    /// The span owning descriptor `index` (which must be in range).
    pub fn by_index(&self, index: DescIndex) -> &Span {
        let spans = self.as_slice();
        let i = spans.partition_point(|s| s.first <= index) - 1;
        &spans[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn regions_are_rounded_inwards() {
        assert_eq!(PhysRegion::new(1, 2 * PAGE + 5).frames(), (1, 2));
        assert_eq!(PhysRegion::new(10, 20).frames(), (1, 1)); // less than a frame
        assert_eq!(
            Spans::frames_in(&[PhysRegion::new(1, 2 * PAGE + 5), PhysRegion::new(10, 20)]),
            1
        );
    }

    #[test]
    fn a_region_crossing_16_mib_is_cut_into_two_zones() {
        let spans = Spans::build(&[
            PhysRegion::new(0, 640 << 10),
            PhysRegion::new(MIB, 32 * MIB),
        ])
        .unwrap();
        let s = spans.as_slice();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].start_pfn, s[0].frames, s[0].zone),
            (0, 160, Zone::Dma)
        );
        assert_eq!(
            (s[1].start_pfn, s[1].end_pfn(), s[1].zone),
            (256, 4096, Zone::Dma)
        );
        assert_eq!(
            (s[2].start_pfn, s[2].end_pfn(), s[2].zone),
            (4096, 8192, Zone::Normal)
        );
        assert_eq!((s[1].first, s[2].first), (160, 160 + 3840));
        assert_eq!(
            spans.frames() as u64,
            Spans::frames_in(&[
                PhysRegion::new(0, 640 << 10),
                PhysRegion::new(MIB, 32 * MIB),
            ])
        );
    }

    #[test]
    fn lookups_skip_holes() {
        let spans = Spans::build(&[
            PhysRegion::new(0, 4 * PAGE),
            PhysRegion::new(8 * PAGE, 10 * PAGE),
        ])
        .unwrap();
        assert_eq!(spans.by_pfn(3).map(|s| s.first), Some(0));
        assert!(spans.by_pfn(4).is_none());
        assert!(spans.by_pfn(7).is_none());
        assert_eq!(spans.by_pfn(9).map(|s| s.index_of(9)), Some(5));
        assert!(spans.by_pfn(10).is_none());
        assert_eq!(spans.by_index(4).start_pfn, 8);
        assert_eq!(spans.by_index(4).pfn_of(5), 9);
    }

    #[test]
    fn unsorted_or_overlapping_regions_are_rejected() {
        let overlap = [
            PhysRegion::new(0, 8 * PAGE),
            PhysRegion::new(4 * PAGE, 9 * PAGE),
        ];
        assert_eq!(
            Spans::build(&overlap).unwrap_err(),
            PageInitError::Unsorted { index: 1 }
        );
        let reversed = [PhysRegion::new(8 * PAGE, 4 * PAGE)];
        assert_eq!(
            Spans::build(&reversed).unwrap_err(),
            PageInitError::Unsorted { index: 0 }
        );
    }

    #[test]
    fn too_many_regions_are_rejected() {
        let many: [PhysRegion; MAX_SPANS + 1] = core::array::from_fn(|i| {
            PhysRegion::new(2 * i as u64 * PAGE, (2 * i as u64 + 1) * PAGE)
        });
        assert_eq!(
            Spans::build(&many).unwrap_err(),
            PageInitError::TooManyRegions { max: MAX_SPANS }
        );
    }
}
