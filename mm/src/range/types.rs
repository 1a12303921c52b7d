//! The range allocator's public vocabulary: flags, what a range is, errors, counters.

/// How a range is to be backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeFlags(u8);

impl RangeFlags {
    /// Address space only: nothing is mapped.
    pub const NONE: Self = Self(0);
    /// Back every page now with a frame of its own, mapped through the platform.
    pub const MAP: Self = Self(1);
    /// With `MAP`: frames from the DMA zone (below 16 MiB). Each page gets its own frame;
    /// the frames are not physically contiguous.
    pub const DMA: Self = Self(2);
    /// With `MAP`: fill the pages with zeros.
    pub const ZERO: Self = Self(4);

    /// True when every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of flags.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for RangeFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// What a used range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeKind {
    /// Returned by `new_range` with these flags.
    Allocated(RangeFlags),
    /// Registered with `reserve`.
    Reserved,
    /// A slab of the range cache (the bootstrap page among them); owned by `mm`.
    Internal,
}

/// A used range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeInfo {
    /// Its first address.
    pub start: usize,
    /// Its size in pages.
    pub pages: usize,
    /// What it is.
    pub kind: RangeKind,
}

/// Why a range operation failed. On error nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// No free run of the window is large enough.
    OutOfVirtualSpace,
    /// Frames (for `MAP`, or page tables) or range descriptors ran out.
    OutOfMemory,
    /// A page count of zero.
    InvalidSize,
    /// `DMA` or `ZERO` without `MAP`.
    InvalidFlags,
    /// An alignment that is not a power of two at least the page size.
    InvalidAlignment {
        /// The alignment asked for, in bytes.
        align: usize,
    },
    /// `addr` is not page-aligned.
    Misaligned {
        /// The address.
        addr: usize,
    },
    /// `addr` (or the range from it) is not inside the window.
    OutsideWindow {
        /// The address.
        addr: usize,
    },
    /// `addr` is inside a used range but does not start it.
    NotARangeStart {
        /// The address.
        addr: usize,
    },
    /// `addr` is in free space: never allocated, or already deleted (a double delete).
    NotAllocated {
        /// The address.
        addr: usize,
    },
    /// `reserve`: the used range starting at `addr` overlaps the request.
    Occupied {
        /// Start of the overlapping used range.
        addr: usize,
    },
    /// The range belongs to `mm` itself (a slab of the range cache).
    Pinned {
        /// The address.
        addr: usize,
    },
    /// The platform found `addr` already mapped: something mapped a page of the window
    /// without reserving it first.
    AlreadyMapped {
        /// The address.
        addr: usize,
    },
}

/// Counters of the range allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeStats {
    /// First address of the window.
    pub window_start: usize,
    /// Size of the window in pages.
    pub window_pages: usize,
    /// Free pages.
    pub free_pages: usize,
    /// Pages in ranges from `new_range`.
    pub allocated_pages: usize,
    /// Pages in reserved ranges.
    pub reserved_pages: usize,
    /// Pages of the range cache (one per slab).
    pub internal_pages: usize,
    /// Segments (free and used).
    pub segments: usize,
    /// Free segments.
    pub free_segments: usize,
    /// Slabs of the range cache.
    pub cache_slabs: usize,
    /// Free descriptors in the range cache.
    pub cache_free: usize,
}
