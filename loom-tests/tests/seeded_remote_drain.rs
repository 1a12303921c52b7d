//! Seeded defect `remote_drain` (`mm/src/seeded.rs`): `drain` empties every CPU's array
//! from the calling thread instead of running as each CPU. Model 3a must catch it: the
//! shrink's drain and CPU 1's own pushes and pops touch CPU 1's entries unordered.
#![cfg(all(loom, loom_bugs))]

mod common;

#[test]
#[should_panic(expected = "data race on a per-CPU array's entries")]
fn remote_drain_is_caught_by_model3a() {
    mm::seeded::activate("remote_drain");
    common::run(
        "seeded remote_drain (3a)",
        Some(6),
        common::models::model3_shrink,
    );
}
