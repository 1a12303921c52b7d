//! Seeded defect `relaxed_publish` (`mm/src/seeded.rs`): `make_array` publishes a new
//! per-CPU array with a relaxed store. Model 5a must catch it: the statistics on another
//! CPU find the array and read its header, which nothing orders after its making.
#![cfg(all(loom, loom_bugs))]

mod common;

#[test]
#[should_panic(
    expected = "data race on a per-CPU array's header: read, not ordered with \
                           another access (last write: made)"
)]
fn relaxed_publish_is_caught_by_model5a() {
    mm::seeded::activate("relaxed_publish");
    common::run(
        "seeded relaxed_publish (5a)",
        Some(6),
        common::models::model5_publish,
    );
}
