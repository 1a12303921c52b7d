//! Seeded defect `stats_without_tuning_lock` (`mm/src/seeded.rs`): the statistics read
//! the per-CPU arrays without the cache's tuning lock. Model 5b must catch it:
//! `tune_cpucache` frees an array that the statistics are reading.
#![cfg(all(loom, loom_bugs))]

mod common;

#[test]
fn stats_without_tuning_lock_is_caught_by_model5b() {
    mm::seeded::activate("stats_without_tuning_lock");
    let report = std::panic::catch_unwind(|| {
        common::run(
            "seeded stats_without_tuning_lock (5b)",
            Some(6),
            common::models::model5_stats_vs_tune,
        );
    })
    .expect_err("model 5b passed with the statistics reading arrays unlocked");
    let message = report
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| report.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    // Either side may be the one to see the race: the free after the read, or the read
    // after the free; both name the header and the free.
    assert!(
        message.starts_with("data race on a per-CPU array's header: ") && message.contains("freed"),
        "model 5b failed, but not with the race of a freed array: {message}"
    );
}
