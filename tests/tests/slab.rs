//! Boot tests of the slab layer and kmalloc in the kernel: the self-test passes, each
//! detection is reported with the cache and address, and slabinfo ends the run.

mod common;

use common::{assert_boots, config};
use kernel_tests::Accel;

fn check_slab_self_test(append: &str, mem: &str) {
    let mut config = config();
    config.accel = Some(Accel::Tcg);
    config.mem = mem.into();
    config.append.push(' ');
    config.append.push_str(append);
    let result = assert_boots(&config);
    assert!(
        result.log_has(
            "slab self-test: kmalloc, collections, ctor/dtor, out of memory, detections: ok"
        )
    );
    for report in [
        "slab: double free of 0x",
        "slab: free of 0x",
        "which the allocator never handed out",
        "into cache selftest-plain, but it belongs to cache selftest-other",
        "in cache selftest-debug overwritten",
        "slab: write after free: object 0x",
    ] {
        assert!(result.log_has(report), "the log reports {report:?}");
    }
    assert!(result.log_has("all freed and reaped"));
    let slabinfo = result
        .log
        .lines()
        .position(|line| line == "slabinfo - version: 1.1 (statistics)")
        .expect("the slabinfo table is printed");
    let table: Vec<&str> = result.log.lines().skip(slabinfo + 1).collect();
    for cache in [
        "kmem_cache",
        "size-32",
        "size-32(DMA)",
        "size-131072",
        "size-131072(DMA)",
    ] {
        assert!(
            table
                .iter()
                .any(|line| line.split_whitespace().next() == Some(cache)),
            "slabinfo lists {cache}"
        );
    }
}

#[test]
fn slab_self_test_passes_and_slabinfo_ends_the_run() {
    check_slab_self_test("", "128M");
}

#[test]
fn slab_self_test_passes_with_the_global_debug_switch_on() {
    check_slab_self_test("slab_debug=on", "128M");
}

#[test]
fn kmalloc_runs_out_cleanly_at_64_mib() {
    check_slab_self_test("mmtest=exhaust", "64M");
}
