//! Hosted cost of the slab layer's global (locked) path, one thread.
//!
//! Every operation here takes the cache's spinlock (uncontended: one thread), as every
//! allocation will once the per-CPU layer misses. Workloads:
//! - alloc+free pairs of one object: a 64-byte cache, `kmalloc(64)`, `kmalloc(4096)`
//!   (off-slab, one object per page), and `GlobalAlloc` with a 64-byte layout;
//! - batches: N allocations then N frees, one call each, and the same through
//!   `alloc_batch` / `free_batch` (one lock acquisition per batch: the per-CPU refill and
//!   flush);
//! - the host's `malloc`/`free` (glibc) on 64 bytes, for scale.
//!
//! Run: `cargo bench -p mm --bench slab --features std --target x86_64-unknown-linux-gnu`
//! (release profile). An argument overrides the number of pairs (default 10 000 000).

use mm::hosted::{HostedLayout, HostedMachine};
use mm::kmalloc::Gfp;
use mm::kmalloc::Kmalloc;
use mm::slab::{SlabFlags, SlabOptions};
use mm::sync::NoInterrupts;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

fn report(name: &str, pairs: usize, f: impl FnOnce()) {
    let start = Instant::now();
    f();
    let elapsed = start.elapsed();
    let ns = elapsed.as_nanos() as f64 / pairs as f64;
    println!(
        "{name:<44} {ns:>8.2} ns/pair   ({pairs} pairs, {:.2} s)",
        elapsed.as_secs_f64()
    );
}

fn main() {
    let pairs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    // 64 MiB of fake RAM, a 64 MiB window.
    let mut machine = HostedMachine::new(HostedLayout::flat(16 * 1024, 16 * 1024));
    let heap = machine.boot().expect("boot");
    let slab = Kmalloc::<_, NoInterrupts>::new(&heap, SlabOptions::default()).expect("slab");
    let cache = slab
        .caches()
        .create_cache("bench-64", 64, 0, SlabFlags::NONE, None, None)
        .expect("cache");

    // Warm up: every slab the loops need exists, the code is in the cache.
    for _ in 0..100_000 {
        let o = cache.alloc().unwrap();
        // SAFETY: just allocated, not used after.
        unsafe { cache.free(o) }.unwrap();
    }
    println!("slab layer, global locked path, 1 thread (hosted, NoInterrupts)");

    report("cache(64): alloc+free", pairs, || {
        for _ in 0..pairs {
            let o = black_box(cache.alloc().unwrap());
            // SAFETY: just allocated, not used after.
            unsafe { cache.free(o) }.unwrap();
        }
    });
    report("kmalloc(64)+kfree", pairs, || {
        for _ in 0..pairs {
            let o = black_box(slab.kmalloc(64, Gfp::KERNEL).unwrap());
            // SAFETY: as above.
            unsafe { slab.kfree(o.as_ptr()) }.unwrap();
        }
    });
    report("kmalloc(4096)+kfree", pairs, || {
        for _ in 0..pairs {
            let o = black_box(slab.kmalloc(4096, Gfp::KERNEL).unwrap());
            // SAFETY: as above.
            unsafe { slab.kfree(o.as_ptr()) }.unwrap();
        }
    });
    let layout = Layout::from_size_align(64, 8).unwrap();
    report("GlobalAlloc alloc+dealloc (64, 8)", pairs, || {
        for _ in 0..pairs {
            // SAFETY: a valid layout; the block is freed once.
            unsafe {
                let p = black_box(slab.alloc(layout));
                slab.dealloc(p, layout);
            }
        }
    });

    const N: usize = 1000;
    let rounds = pairs.div_ceil(N);
    let mut objs = vec![std::ptr::null_mut::<u8>(); N];
    report(
        &format!("cache(64): {N} allocs then {N} frees"),
        rounds * N,
        || {
            for _ in 0..rounds {
                for o in objs.iter_mut() {
                    *o = cache.alloc().unwrap().as_ptr();
                }
                for &o in objs.iter().rev() {
                    // SAFETY: allocated just above, freed once.
                    unsafe { cache.free(std::ptr::NonNull::new(o).unwrap()) }.unwrap();
                }
            }
        },
    );
    report(
        &format!("kmalloc(64): {N} allocs then {N} frees"),
        rounds * N,
        || {
            for _ in 0..rounds {
                for o in objs.iter_mut() {
                    *o = slab.kmalloc(64, Gfp::KERNEL).unwrap().as_ptr();
                }
                for &o in objs.iter().rev() {
                    // SAFETY: as above.
                    unsafe { slab.kfree(o) }.unwrap();
                }
            }
        },
    );
    report(
        &format!("kmalloc(4096): {N} allocs then {N} frees"),
        rounds * N,
        || {
            for _ in 0..rounds {
                for o in objs.iter_mut() {
                    *o = slab.kmalloc(4096, Gfp::KERNEL).unwrap().as_ptr();
                }
                for &o in objs.iter().rev() {
                    // SAFETY: as above.
                    unsafe { slab.kfree(o) }.unwrap();
                }
            }
        },
    );
    for batch in [16usize, 64] {
        report(
            &format!("cache(64): alloc_batch/free_batch of {batch}"),
            rounds * N,
            || {
                for _ in 0..rounds {
                    for chunk in objs.chunks_mut(batch) {
                        assert_eq!(cache.alloc_batch(chunk), Ok(chunk.len()));
                    }
                    for chunk in objs.chunks(batch).rev() {
                        // SAFETY: allocated just above, freed once.
                        unsafe { cache.free_batch(chunk) }.unwrap();
                    }
                }
            },
        );
    }
    report("host malloc(64)+free (glibc, for scale)", pairs, || {
        for _ in 0..pairs {
            // SAFETY: a valid layout; the block is freed once.
            unsafe {
                let p = black_box(System.alloc(layout));
                System.dealloc(p, layout);
            }
        }
    });
    let stats = cache.stats();
    println!(
        "bench-64 after the run: {} slabs, {} allocations, {} frees, {} errors",
        stats.slab.total_slabs, stats.slab.allocs, stats.slab.frees, stats.slab.errors
    );
}
