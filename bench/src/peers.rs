//! The peers of the hit-path benchmark, each as a `GlobalAlloc` set up the way its users
//! set it up, plus the null allocator that measures the harness itself.
//!
//! - `glibc`: the host's `malloc`/`free` (`std::alloc::System`), with its per-thread
//!   cache (tcache).
//! - `mimalloc`: the `mimalloc` crate (its own C build, default options).
//! - `talc`: `Talck` behind a spin lock over one arena claimed up front, as a `no_std`
//!   kernel uses it (the arena is leaked heap memory here instead of a `static`: the
//!   same code path, and no `static mut`).
//! - `linked_list_allocator`: its `LockedHeap` (spinning_top lock) over such an arena.
//! - `null`: hands out one fixed address and frees nothing, both inlined. The loop around
//!   it is the harness alone (loop counter, stores of the pointers, `black_box`), which
//!   `scripts/bench hitpath` subtracts from every other row.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

/// Bytes of arena for the arena allocators: far more than 1024 live 64-byte objects.
const ARENA_BYTES: usize = 16 << 20;

fn leaked_arena() -> &'static mut [u8] {
    Box::leak(vec![0u8; ARENA_BYTES].into_boxed_slice())
}

/// talc behind a spin lock, over a leaked arena that it claims when it first runs out.
pub fn talc() -> &'static (impl GlobalAlloc + Sync) {
    let arena = leaked_arena();
    // SAFETY: the arena is leaked, so it lives for the rest of the process, and nothing
    // else uses it: talc owns it from here on.
    let oom = unsafe {
        talc::ClaimOnOom::new(talc::Span::from_base_size(arena.as_mut_ptr(), arena.len()))
    };
    Box::leak(Box::new(talc::Talc::new(oom).lock::<spin::Mutex<()>>()))
}

/// linked_list_allocator's `LockedHeap` over a leaked arena.
pub fn linked_list() -> &'static (impl GlobalAlloc + Sync) {
    let arena = leaked_arena();
    // SAFETY: the arena is leaked (valid for the rest of the process), `ARENA_BYTES`
    // long, and used by nothing but this heap.
    let heap = unsafe { linked_list_allocator::LockedHeap::new(arena.as_mut_ptr(), arena.len()) };
    Box::leak(Box::new(heap))
}

/// The allocator that allocates nothing: see the module docs.
pub struct Null;

// SAFETY: never called for real memory: `alloc` returns a well-aligned dangling pointer
// that the harness only passes back to `dealloc`, which does nothing; nothing reads or
// writes through it (the harness never dereferences what it allocates).
unsafe impl GlobalAlloc for Null {
    #[inline(always)]
    unsafe fn alloc(&self, _layout: Layout) -> *mut u8 {
        NonNull::<u64>::dangling().cast::<u8>().as_ptr()
    }

    #[inline(always)]
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
