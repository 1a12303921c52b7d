//! The allocator: layers 1-4 of DESIGN.md as plain `no_std` Rust over a platform trait.
//!
//! Only the platform seam exists so far; the page, range, slab and per-CPU layers
//! arrive with their issues.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod platform;
