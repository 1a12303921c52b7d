//! Seeded defect `live_take_check_then_clear` (`mm/src/seeded.rs`): a free takes an
//! object's live mark with a load and then a clear instead of one read-modify-write.
//! Model 10 must catch it: both racing `kfree`s of one object succeed.
#![cfg(all(loom, loom_bugs))]

mod common;

#[test]
#[should_panic(expected = "both kfrees of one object succeeded")]
fn live_take_check_then_clear_is_caught_by_model10() {
    mm::seeded::activate("live_take_check_then_clear");
    common::run(
        "seeded live_take_check_then_clear (10)",
        None,
        common::models::model10,
    );
}
