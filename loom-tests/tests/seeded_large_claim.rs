//! Seeded defect `large_claim_check_then_store` (`mm/src/seeded.rs`): `kfree` of a large
//! block claims the owner table's mark with a load and then a store instead of one
//! compare-and-swap. Model 8 must catch it: both racing `kfree`s succeed.
#![cfg(all(loom, loom_bugs))]

mod common;

#[test]
#[should_panic(expected = "both kfrees of one large block succeeded")]
fn large_claim_check_then_store_is_caught_by_model8() {
    mm::seeded::activate("large_claim_check_then_store");
    common::run(
        "seeded large_claim_check_then_store (8)",
        None,
        common::models::model8,
    );
}
