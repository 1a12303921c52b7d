//! The `bench=scaling` kernel option (what `scripts/bench scaling` boots, once per CPU
//! count): with a tiny duration per cell it runs every workload over every allocator on
//! every CPU, prints one line per cell and stops with success. Benchmarks report
//! numbers; this checks the lines and the outcome, never the figures.

#[allow(
    dead_code,
    reason = "shared helpers: this test binary needs only `boot` and `config`"
)]
mod common;

use common::{boot, config};
use kernel_tests::{Outcome, SUCCESS_LINE};

#[test]
fn bench_scaling_prints_a_line_per_cell_and_stops_with_success() {
    let mut config = config();
    config.smp = 2;
    config.append = "bench=scaling bench_ms=4".into();
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::Success);
    for workload in ["pairs", "rounds", "prodcons", "random"] {
        for allocator in ["mm", "mm-nopercpu", "talc"] {
            let prefix = format!("scaling: cpus=2 alloc={allocator} workload={workload} ");
            let line = result
                .log
                .lines()
                .find(|line| line.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no line starting {prefix:?}"));
            for key in [
                "ops_per_s",
                "cycles_per_op",
                "alloc_p99",
                "alloc_max",
                "free_p99",
                "free_max",
                "irqoff_max",
            ] {
                let value = line
                    .split_ascii_whitespace()
                    .find_map(|word| word.strip_prefix(&format!("{key}=")))
                    .unwrap_or_else(|| panic!("{line}: no {key}="));
                assert!(
                    value.parse::<f64>().is_ok(),
                    "{line}: {key} is not a number"
                );
            }
        }
    }
    assert!(result.log_has("scaling: done"), "every cell ran");
    assert!(
        !result.log_has(SUCCESS_LINE),
        "the benchmark stops the run before the self-tests"
    );
}
