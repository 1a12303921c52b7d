//! Shared by the boot-test binaries: the kernel under test and a logged boot.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use kernel_tests::{Outcome, Profile, QemuConfig, RunResult, SUCCESS_LINE};

/// The kernel ELF: `$KERNEL_ELF` (set by `scripts/test`) or a fresh debug build.
pub fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| match std::env::var_os("KERNEL_ELF") {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "KERNEL_ELF={} is not a file",
                    path.display()
                );
                path
            }
            None => kernel_tests::build_kernel(Profile::Debug).expect("the kernel builds"),
        })
        .clone()
}

/// A TCG configuration with a 100 ms allocator stress and a generous time-out: with many
/// CPUs on a 2-core host, TCG is oversubscribed. TCG, not KVM, unless a test asks: the
/// /dev/kvm of the machines this runs on is `kvm_pvm`, which emulates every ring-0
/// instruction, and the whole kernel runs in ring 0 (about 10x slower than TCG).
pub fn config() -> QemuConfig {
    let mut config = QemuConfig::new(kernel());
    config.accel = Some(kernel_tests::Accel::Tcg);
    config.timeout = Duration::from_secs(180);
    // A short SMP stress: these boots test other things (tests/stress.rs tests it).
    config.append = "stress=100".into();
    config
}

/// Boots once and prints the log (shown when the test fails).
pub fn boot(config: &QemuConfig) -> RunResult {
    let result = kernel_tests::run(config, false).expect("QEMU starts");
    println!(
        "--- {:?} ({}, {:.2} s) ---",
        config.qemu_args(),
        result.accel,
        result.elapsed.as_secs_f64()
    );
    print!("{}", result.log);
    eprint!("{}", result.stderr);
    result
}

/// Boots and checks that the kernel reported success and said so last.
pub fn assert_boots(config: &QemuConfig) -> RunResult {
    let result = boot(config);
    assert_eq!(
        result.outcome,
        Outcome::Success,
        "the kernel must report success"
    );
    assert_eq!(
        result.log.lines().last(),
        Some(SUCCESS_LINE),
        "the last line of a good run says so plainly"
    );
    result
}
