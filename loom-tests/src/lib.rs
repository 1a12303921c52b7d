//! loom models of the allocator's locking protocol: the per-CPU array caches, the
//! cache spinlocks and the drain-by-IPI path, run over the same `mm` code the
//! kernel runs (`RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`).
//!
//! No models yet: they arrive with the per-CPU cache layer they check.
