//! loom models of the allocator's locking protocol, run over the same `mm` code the
//! kernel runs, compiled with loom's atomics:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release \
//!     --target x86_64-unknown-linux-gnu --target-dir target/loom
//! ```
//!
//! (`scripts/test` runs exactly that; a target directory of its own keeps the loom
//! build from invalidating the normal one.)
//!
//! - `tests/spinlock.rs`: `mm::sync::SpinLock`, the lock of every cache and of the range
//!   and page allocators: exclusion, ordering, `try_lock`, the acquisition counter.
//! - `tests/crosscpu.rs`: `smp::protocol`, the cross-CPU call and TLB shootdown
//!   protocol (mailboxes, pending bits, generations, acknowledgements) that the kernel's
//!   `on_each_cpu` and `tlb::shootdown` run: calls crossing, calls from handlers against
//!   shootdowns under locks, concurrent shootdowns, on 2 and 3 CPUs; and deadlock 1 of
//!   issue 11 seeded back, which loom must report as a deadlock (not as a model that ran
//!   out of branches).
//!
//! Not modelled yet: the per-CPU arrays and their drain. Their synchronisation is the
//! per-CPU guard and `on_each_cpu` (checked on host threads in `mm/src/percpu_tests.rs`,
//! also under Miri, and in the kernel's stress); modelling it under loom needs every
//! atomic of `mm` behind the same shim as `sync.rs`, and a loom `CpuLocal`.
