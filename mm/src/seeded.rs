//! Seeded defects: deliberate bugs that the loom models must catch, to show that they
//! can fail (`loom-tests/tests/seeded_*.rs`).
//!
//! They exist only in a build with `--cfg loom --cfg loom_bugs` (`scripts/test` makes it
//! in a target directory of its own); everywhere else [`on`] is a constant `false` and
//! the defective branches compile away. In that build each defect is still off until a
//! test process switches exactly one on with `activate`, so that one build serves every
//! seeded-defect test (each its own test binary, i.e. its own process).
//!
//! The defects, by name:
//! - `relaxed_publish`: `make_array` publishes a new array with a relaxed store.
//! - `remote_drain`: `drain` empties every CPU's array from the calling thread instead
//!   of running as each CPU (`on_each_cpu`).
//! - `stats_without_tuning_lock`: statistics read the arrays without the cache's tuning
//!   lock, so `tune_cpucache` may free an array under them.
//! - `large_claim_check_then_store`: `kfree` of a large block claims it with a load and
//!   a store instead of one compare-and-swap.
//! - `live_take_check_then_clear`: a free takes an object's live mark with a load and
//!   then a clear instead of one read-modify-write.

/// Names of the defects (`activate` refuses others).
pub const DEFECTS: [&str; 5] = [
    "relaxed_publish",
    "remote_drain",
    "stats_without_tuning_lock",
    "large_claim_check_then_store",
    "live_take_check_then_clear",
];

#[cfg(loom_bugs)]
static ACTIVE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// True when the defect `name` is switched on (never, outside the `loom_bugs` build).
#[cfg(not(loom_bugs))]
#[inline(always)]
pub const fn on(_name: &str) -> bool {
    false
}

/// True when the defect `name` is switched on in this process.
#[cfg(loom_bugs)]
pub fn on(name: &str) -> bool {
    ACTIVE.get().is_some_and(|active| *active == name)
}

/// Switches the defect `name` on for the rest of this process (one per process).
///
/// # Panics
///
/// If `name` is not a defect, or another one is on already.
#[cfg(loom_bugs)]
pub fn activate(name: &'static str) {
    assert!(DEFECTS.contains(&name), "no seeded defect {name}");
    let active = *ACTIVE.get_or_init(|| name);
    assert_eq!(active, name, "one seeded defect per process");
}
