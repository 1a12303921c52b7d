//! The `bench=hitpath` kernel option (what `scripts/bench hitpath` boots): it measures
//! every allocator path on the BSP, prints one line each, destroys its cache and stops
//! with success. Under plain TCG the TSC counts time, not instructions, so this checks
//! the lines and the outcome, never the figures.

#[allow(
    dead_code,
    reason = "shared helpers: this test binary needs only `boot` and `config`"
)]
mod common;

use common::{boot, config};
use kernel_tests::{Outcome, SUCCESS_LINE};

#[test]
fn bench_hitpath_prints_a_figure_for_every_path_and_stops_with_success() {
    let mut config = config();
    config.smp = 2;
    config.append = "bench=hitpath".into();
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::Success);
    for api in ["kmalloc", "kmem_cache", "global_alloc"] {
        for per_cpu in ["", "-nopercpu"] {
            for workload in ["pairs", "rounds"] {
                let line = format!("hitpath: {api}{per_cpu} {workload} ");
                let figure = result
                    .log
                    .lines()
                    .find_map(|l| l.strip_prefix(line.as_str()))
                    .unwrap_or_else(|| panic!("no line starting {line:?}"));
                let value = figure.split_ascii_whitespace().next().unwrap_or("");
                assert!(value.parse::<f64>().is_ok(), "{line}{figure}: not a number");
                assert!(figure.contains(" insns/pair (raw "), "{line}{figure}");
            }
        }
    }
    assert!(
        result.log_has("hitpath: done"),
        "the dedicated cache is destroyed"
    );
    assert!(
        !result.log_has(SUCCESS_LINE),
        "the benchmark stops the run before the self-tests"
    );
}
