//! loom models of kmalloc's own paths over the real allocator (see `percpu.rs` and
//! `common/mod.rs` for the set-up and the checks at the end).
#![cfg(loom)]

mod common;

use common::{World, run};
use loom::sync::Arc;
use loom::thread;
use mm::loom_cpus::LoomCpus;
use mm::slab::SlabError;

/// A block larger than the largest size class (128 KiB): a range of its own.
const LARGE: usize = (128 << 10) + 1;

/// Model 8: two `kfree`s of one large block from two CPUs: the owner table's mark is
/// claimed by compare-and-swap, so exactly one frees the pages and the other is
/// reported as an invalid free.
#[test]
fn model8_two_kfrees_of_one_large_block() {
    run("8 two kfrees of one large block", Some(2), model8);
}

pub fn model8() {
    let w = World::new(2, 1);
    LoomCpus::bind(0);
    let block = w.alloc.kmalloc(LARGE, mm::kmalloc::Gfp::KERNEL).unwrap();
    let addr = block.addr().get();
    let free = move |w: &World| {
        // SAFETY: a double free on purpose: the allocator must detect it.
        unsafe { w.alloc.kfree(core::ptr::with_exposed_provenance_mut(addr)) }
    };
    let other = {
        let w = Arc::clone(&w);
        thread::spawn(move || {
            LoomCpus::bind(1);
            free(&w)
        })
    };
    let here = free(&w);
    let there = other.join().unwrap();
    let wins = [here, there].iter().filter(|r| r.is_ok()).count();
    assert!(wins <= 1, "both kfrees of one large block succeeded");
    assert_eq!(wins, 1, "neither kfree of a large block succeeded");
    for result in [here, there] {
        assert!(
            matches!(result, Ok(()) | Err(SlabError::InvalidFree { .. })),
            "{result:?}"
        );
    }
    w.check_end(&[], 0);
}

/// Model 9: kmalloc of two size classes from two CPUs at once, from cold: each makes its
/// array and grows its cache (two cache locks, the range lock and the page lock), with
/// no deadlock (loom reports one when every thread is blocked).
#[test]
fn model9_two_size_classes_at_once() {
    run("9 two size classes at once", Some(1), || {
        let w = World::new(2, 1);
        let other = {
            let w = Arc::clone(&w);
            thread::spawn(move || {
                LoomCpus::bind(1);
                let object = w.kmalloc(64);
                w.kfree(object);
            })
        };
        LoomCpus::bind(0);
        let object = w.kmalloc(32);
        w.kfree(object);
        other.join().unwrap();
        w.check_end(&[32, 64], 2);
    });
}
