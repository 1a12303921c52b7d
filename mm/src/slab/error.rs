//! [`SlabError`]: everything the slab layer (and the layers above it) can report.

use super::SlabFlags;
use core::fmt;

/// Which red zone of an object was damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedZoneSide {
    /// The word just before the object (an underrun, or the previous object's overrun).
    Before,
    /// The word just after the object (an overrun).
    After,
}

/// What went wrong. Allocation failures leave everything unchanged; bad frees are
/// detected and leave the caches unchanged (objects with damaged red zones are
/// quarantined, see `debug.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// No memory for a new slab (or a large kmalloc).
    OutOfMemory,
    /// An object size of 0, or above [`MAX_OBJECT_SIZE`](super::MAX_OBJECT_SIZE).
    InvalidSize {
        /// The size asked for.
        size: usize,
    },
    /// An alignment that is not a power of two, or above the page size.
    InvalidAlign {
        /// The alignment asked for.
        align: usize,
    },
    /// Unknown flag bits.
    InvalidFlags {
        /// The flags given.
        flags: SlabFlags,
    },
    /// `destroy` of a cache that still has objects allocated.
    Busy {
        /// The cache.
        cache: &'static str,
        /// Objects still allocated.
        active: usize,
    },
    /// A pointer that no cache handed out: outside any slab (`cache: None`), or inside a
    /// slab of `cache` but not at the start of an object.
    InvalidFree {
        /// The cache whose slab holds `addr`, if any.
        cache: Option<&'static str>,
        /// The pointer.
        addr: usize,
    },
    /// A free of an object that is already free.
    DoubleFree {
        /// The cache.
        cache: &'static str,
        /// The object.
        addr: usize,
    },
    /// A free through one cache of an object of another.
    WrongCache {
        /// The cache it was freed into.
        expected: &'static str,
        /// The cache that owns it (`"kmalloc (large)"` for a large kmalloc).
        actual: &'static str,
        /// The object.
        addr: usize,
    },
    /// A red zone did not hold the value the object's state calls for.
    RedZone {
        /// The cache.
        cache: &'static str,
        /// The object.
        addr: usize,
        /// Which side.
        side: RedZoneSide,
        /// What the red-zone word held.
        found: u64,
    },
    /// `limit` above [`crate::percpu::MAX_LIMIT`], or `batchcount` not in `1..=limit`.
    InvalidTuning {
        /// The limit asked for.
        limit: usize,
        /// The batch count asked for.
        batchcount: usize,
    },
    /// No cache has that name.
    NoSuchCache,
    /// A free object's poison was overwritten: someone wrote to it after freeing it.
    UseAfterFree {
        /// The cache.
        cache: &'static str,
        /// The object.
        addr: usize,
        /// Offset of the first damaged byte in the object.
        offset: usize,
        /// The byte found there.
        found: u8,
    },
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfMemory => write!(f, "slab: out of memory"),
            Self::InvalidSize { size } => write!(f, "slab: invalid object size {size}"),
            Self::InvalidAlign { align } => write!(f, "slab: invalid alignment {align}"),
            Self::InvalidFlags { flags } => write!(f, "slab: invalid flags {:#x}", flags.bits()),
            Self::Busy { cache, active } => {
                write!(
                    f,
                    "slab: cache {cache} still has {active} objects allocated"
                )
            }
            Self::InvalidFree { cache: None, addr } => {
                write!(
                    f,
                    "slab: free of {addr:#x}, which the allocator never handed out"
                )
            }
            Self::InvalidFree {
                cache: Some(cache),
                addr,
            } => write!(
                f,
                "slab: free of {addr:#x}, inside a slab of {cache} but not an object"
            ),
            Self::DoubleFree { cache, addr } => {
                write!(f, "slab: double free of {addr:#x} in cache {cache}")
            }
            Self::WrongCache {
                expected,
                actual,
                addr,
            } => write!(
                f,
                "slab: free of {addr:#x} into cache {expected}, but it belongs to cache {actual}"
            ),
            Self::RedZone {
                cache,
                addr,
                side,
                found,
            } => {
                let side = match side {
                    RedZoneSide::Before => "before",
                    RedZoneSide::After => "after",
                };
                write!(
                    f,
                    "slab: red zone {side} object {addr:#x} in cache {cache} overwritten \
                     (found {found:#018x})"
                )
            }
            Self::InvalidTuning { limit, batchcount } => write!(
                f,
                "slab: cannot tune to limit {limit}, batchcount {batchcount}"
            ),
            Self::NoSuchCache => write!(f, "slab: no such cache"),
            Self::UseAfterFree {
                cache,
                addr,
                offset,
                found,
            } => write!(
                f,
                "slab: write after free: object {addr:#x} in cache {cache}, byte {offset} \
                 changed (now {found:#04x})"
            ),
        }
    }
}
