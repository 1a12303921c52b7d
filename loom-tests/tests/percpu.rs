//! loom models of the per-CPU layer over the real allocator (`Kmalloc` over `CpuCaches`
//! over `SlabCaches` over the hosted heap), two CPUs being two loom threads
//! (`mm::loom_cpus`). `size-32` and `size-64` are tuned to `limit` 2, `batchcount` 1, so
//! that three operations in a row refill or flush. Every model ends with
//! `World::check_end`: no object handed out twice (checked at every allocation), none
//! left handed out, none lost (the caches' active counts back to zero once the arrays are
//! drained), the per-CPU counters add up where the model knows the count, and
//! `check_invariants` of the slab layer passes. loom itself reports any unordered access
//! to an array's header or entries (`mm::sync::cell::RaceCheck`). The bodies are in
//! `common/models.rs`.
//!
//! Preemption bounds: each model sets its own (`common::run`; `LOOM_MAX_PREEMPTIONS`
//! overrides it). The bound is how many times the scheduler may switch away from a
//! thread that could go on. Models 2, 6 and 7b (and 8 in `kmalloc.rs`) are explored
//! without one: loom's partial-order reduction finishes them in under a second. The
//! others pass dozens of atomics per operation on each CPU (its guard, the array
//! pointer, `avail`, counters, the owner table, the cache lock) and unbounded do not end
//! in minutes: 6 lets the scheduler stop each CPU inside any of its operations several
//! times, which is what the protocol's races need (one CPU stopped inside a critical
//! section or between a read and its re-check while the other does all it can); the
//! models that walk every cache (`reap`, the global switch) get 2 or 3, their walks
//! multiplying the points where a switch can happen. The whole loom step stays near a
//! minute of exploration on 2 cores.
#![cfg(loom)]

mod common;

use common::{models, run};

#[test]
fn model1_two_cpus_refill_and_flush() {
    run("1 two CPUs, refills and flushes", Some(6), models::model1);
}

#[test]
fn model2_cross_cpu_free() {
    run("2 cross-CPU free", None, models::model2);
}

#[test]
fn model3a_shrink_races_with_hits_and_misses() {
    run(
        "3a shrink vs hits and misses",
        Some(6),
        models::model3_shrink,
    );
}

#[test]
fn model3b_reap_races_with_hits_and_misses() {
    run("3b reap vs hits and misses", Some(2), models::model3_reap);
}

#[test]
fn model4a_tune_races_with_hits() {
    run("4a tune_cpucache vs hits", Some(6), models::model4_tune);
}

#[test]
fn model4b_switch_races_with_hits() {
    run(
        "4b set_per_cpu off/on vs hits",
        Some(2),
        models::model4_switch,
    );
}

#[test]
fn model5a_array_publication_vs_stats() {
    run("5a make_array vs stats", Some(6), models::model5_publish);
}

#[test]
fn model5b_stats_vs_tune() {
    run(
        "5b stats vs tune_cpucache",
        Some(6),
        models::model5_stats_vs_tune,
    );
}

#[test]
fn model6_kfree_races_with_shrink_of_its_cache() {
    run("6 kfree vs shrink", None, models::model6);
}

#[test]
fn model7a_grow_races_with_reap() {
    run("7a grow vs reap", Some(2), models::model7_grow_vs_reap);
}

#[test]
fn model7b_reclaim_try_lock_vs_reap() {
    run("7b reclaim vs reap", None, models::model7_reclaim_vs_reap);
    // Both ways were explored: the model is not one schedule run many times.
    let [nothing, released] = &models::RECLAIM_OUTCOMES;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        nothing.load(Relaxed) > 0 && released.load(Relaxed) > 0,
        "reclaim always or never won the race"
    );
}
