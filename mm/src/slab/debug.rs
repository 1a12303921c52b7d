//! Debug checks: red zones and poisoning (2.4's `SLAB_RED_ZONE` and `SLAB_POISON`).
//!
//! A cache gets them from its flags, or from the allocator's global debug switch when it
//! is created (they change the slot layout, so they cannot be turned on for a cache that
//! already has slabs).
//!
//! - **Red zones**: a word before and a word after each object (see `geometry.rs` for
//!   where), holding [`RED_INACTIVE`] while the object is free and [`RED_ACTIVE`] while
//!   it is allocated. Freeing checks for `RED_ACTIVE` on both sides: anything else means
//!   the user wrote past an end of the object (or, for the leading word, its neighbour
//!   did). Allocating checks for `RED_INACTIVE`, which catches an overrun *into* a free
//!   object. The two values also tell the state of an object in a memory dump.
//! - **Poisoning**: a free object is filled with [`POISON_FREE`] and its last byte with
//!   [`POISON_END`]; allocation checks that the pattern is intact, so a write after free
//!   is found at the next allocation of that object (or when its slab is destroyed).
//!   Caches with a constructor or destructor are never poisoned: their free objects must
//!   keep their constructed state (that is the point of a constructor).
//!
//! A bad object found at allocation is *quarantined*: it stays marked allocated and is
//! never handed out again (its slab cannot be freed until the cache is destroyed), the
//! error is reported, and the allocation takes another object. A bad object found at
//! free is quarantined the same way and the error is returned.

use super::RedZoneSide;
use super::geometry::{Geometry, WORD};
use core::ptr::NonNull;

/// A free object's red zones (Linux's `RED_INACTIVE`).
pub const RED_INACTIVE: u64 = 0x09F9_1102_9D74_E35B;
/// An allocated object's red zones (Linux's `RED_ACTIVE`).
pub const RED_ACTIVE: u64 = 0xD841_56C5_6356_88C0;
/// The bytes of a free, poisoned object.
pub const POISON_FREE: u8 = 0x6b;
/// The last byte of a free, poisoned object.
pub const POISON_END: u8 = 0xa5;

/// The two red-zone words of the object at `obj`.
fn zones(obj: NonNull<u8>, geo: &Geometry) -> [(RedZoneSide, *mut u64); 2] {
    [
        (RedZoneSide::Before, obj.as_ptr().wrapping_sub(WORD).cast()),
        (
            RedZoneSide::After,
            obj.as_ptr().wrapping_add(geo.usable).cast(),
        ),
    ]
}

/// Writes `value` into both red zones of the object at `obj`.
///
/// # Safety
///
/// `obj` is an object of a cache with geometry `geo` (which has red zones), in a live
/// slab whose slot the caller may write (the cache lock, or a slab no one else sees).
pub unsafe fn set_red_zones(obj: NonNull<u8>, geo: &Geometry, value: u64) {
    debug_assert!(geo.red_zone());
    for (_, word) in zones(obj, geo) {
        // SAFETY: both words are inside the object's slot (`lead >= 8` before it,
        // `usable + 8 <= slot - lead` after it) and 8-byte aligned; the caller may write.
        unsafe { word.write(value) };
    }
}

/// Checks that both red zones hold `expected`; returns the first side that does not,
/// and what it holds.
///
/// # Safety
///
/// As for [`set_red_zones`], for reading.
pub unsafe fn check_red_zones(
    obj: NonNull<u8>,
    geo: &Geometry,
    expected: u64,
) -> Result<(), (RedZoneSide, u64)> {
    for (side, word) in zones(obj, geo) {
        // SAFETY: as in `set_red_zones`.
        let found = unsafe { word.read() };
        if found != expected {
            return Err((side, found));
        }
    }
    Ok(())
}

/// Fills the object at `obj` with the free pattern.
///
/// # Safety
///
/// `obj` is a free object (or one being freed) of a cache with geometry `geo`, which the
/// caller may write.
pub unsafe fn poison(obj: NonNull<u8>, geo: &Geometry) {
    // SAFETY: the object's `usable` bytes are inside its slot; the caller may write.
    unsafe {
        obj.write_bytes(POISON_FREE, geo.usable - 1);
        obj.add(geo.usable - 1).write(POISON_END);
    }
}

/// Checks the free pattern; returns the offset and value of the first wrong byte.
///
/// # Safety
///
/// As for [`poison`], for reading.
pub unsafe fn check_poison(obj: NonNull<u8>, geo: &Geometry) -> Result<(), (usize, u8)> {
    // SAFETY: the object's `usable` bytes are inside its slot, initialised (poisoned at
    // the latest when the slab was made), and no one else writes them meanwhile.
    let bytes = unsafe { core::slice::from_raw_parts(obj.as_ptr(), geo.usable) };
    let (body, last) = bytes.split_at(geo.usable - 1);
    if let Some(offset) = body.iter().position(|&b| b != POISON_FREE) {
        return Err((offset, body[offset]));
    }
    if last[0] != POISON_END {
        return Err((geo.usable - 1, last[0]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slab::SlabFlags;
    use std::vec;

    #[test]
    fn red_zones_and_poison_detect_single_byte_writes() {
        let geo = Geometry::compute(20, 0, SlabFlags::DEBUG, false, 0).unwrap();
        assert_eq!((geo.lead, geo.usable, geo.slot), (8, 24, 40));
        let mut slot = vec![0u64; geo.slot / 8];
        let obj = NonNull::new(slot.as_mut_ptr().cast::<u8>().wrapping_add(geo.lead)).unwrap();
        // SAFETY: `obj` is the object of a slot we own, laid out by `geo`.
        unsafe {
            set_red_zones(obj, &geo, RED_INACTIVE);
            poison(obj, &geo);
            assert_eq!(check_red_zones(obj, &geo, RED_INACTIVE), Ok(()));
            assert_eq!(check_poison(obj, &geo), Ok(()));
            assert_eq!(
                check_red_zones(obj, &geo, RED_ACTIVE),
                Err((RedZoneSide::Before, RED_INACTIVE))
            );
            // One byte past the end lands in the trailing red zone.
            obj.add(geo.usable).write(0);
            assert!(matches!(
                check_red_zones(obj, &geo, RED_INACTIVE),
                Err((RedZoneSide::After, _))
            ));
            obj.add(5).write(1);
            assert_eq!(check_poison(obj, &geo), Err((5, 1)));
            obj.add(5).write(POISON_FREE);
            obj.add(geo.usable - 1).write(POISON_FREE);
            assert_eq!(check_poison(obj, &geo), Err((23, POISON_FREE)));
        }
    }
}
