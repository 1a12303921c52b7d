//! The one place `mm` takes its atomics from: `core`'s normally, loom's under
//! `--cfg loom`, so that the models in `loom-tests/` see (and interleave at) every atomic
//! access of the allocator, not only the spinlock's.
//!
//! Every other module imports `crate::sync::atomic::{..}`, never `core::sync::atomic`
//! (`tests/layering.rs` scans the source for it). The types have the same API in both
//! builds except one thing: loom's `new` is not `const`. Code that builds atomics in
//! `const` context (arrays of them, statics) keeps that for the kernel and builds them
//! at run time under loom (`core::array::from_fn`, `loom::lazy_static!`).

#[cfg(not(loom))]
pub use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
