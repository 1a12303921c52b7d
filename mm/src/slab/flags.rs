//! Cache flags (2.4's `SLAB_*`) and the constructor and destructor types.

use core::ptr::NonNull;

/// Cache flags (2.4's `SLAB_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlabFlags(u32);

impl SlabFlags {
    /// None.
    pub const NONE: Self = Self(0);
    /// Align objects to cache lines (small objects: to the smallest power of two that
    /// holds them, so that two never straddle a line).
    pub const HWCACHE_ALIGN: Self = Self(1);
    /// `reap` never takes this cache's free slabs (`shrink` and `destroy` still do).
    pub const NO_REAP: Self = Self(2);
    /// Slabs come from the DMA zone (frames below 16 MiB; each page its own frame).
    pub const DMA: Self = Self(4);
    /// Red zones around every object (see `debug.rs`).
    pub const RED_ZONE: Self = Self(8);
    /// Poison free objects (ignored for caches with a constructor or destructor).
    pub const POISON: Self = Self(16);
    /// Both debug checks.
    pub const DEBUG: Self = Self(8 | 16);
    /// Every valid flag.
    pub const ALL: Self = Self(31);
    /// Internal: one of kmalloc's general caches (never valid in `create_cache`).
    pub(crate) const GENERAL: Self = Self(1 << 31);

    /// The flags from their bits (any bits: `create` rejects unknown ones).
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These flags without those of `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl core::ops::BitOr for SlabFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// Initialises an object when its slab is made (2.4's `ctor`).
///
/// # Safety
///
/// Called by the slab layer only, with a pointer to the object's `size` bytes (aligned as
/// the cache says), which nothing else uses during the call.
pub type Constructor = unsafe fn(object: NonNull<u8>);

/// Undoes a constructor when the object's slab is unmade (2.4's `dtor`). The object is
/// in its constructed state, as every free object of a cache with a constructor must be.
///
/// # Safety
///
/// As for [`Constructor`].
pub type Destructor = unsafe fn(object: NonNull<u8>);
