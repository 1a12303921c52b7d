//! Boot tests: each boots the kernel in QEMU and checks the exit status and the
//! serial log. The kernel is built once per test binary (debug profile), or taken
//! from `$KERNEL_ELF` when `scripts/test` already built it.

mod common;

use std::time::Duration;

use common::{assert_boots, boot, config};
use kernel_tests::{Accel, Machine, Outcome, SUCCESS_LINE};

#[test]
fn boots_with_default_settings_and_prints_the_memory_map() {
    let result = assert_boots(&config());
    assert!(result.log_has("kernel: booting on CPU"));
    assert!(result.log_has("memory map (from the PVH start info):"));
    assert!(result.log_has("Ram"), "the memory map lists RAM regions");
    assert!(
        result.log_has("self-checks: exceptions, section permissions, guard pages, direct map: ok")
    );
}

#[test]
fn boots_on_the_q35_machine() {
    let mut config = config();
    config.machine = Machine::Q35;
    assert_boots(&config);
}

#[test]
fn boots_under_kvm_where_it_is_usable() {
    if !kernel_tests::kvm_usable() {
        eprintln!("SKIPPED boots_under_kvm_where_it_is_usable: /dev/kvm is not usable here");
        return;
    }
    let mut config = config();
    config.accel = Some(Accel::Kvm);
    let result = assert_boots(&config);
    assert_eq!(result.accel, Accel::Kvm);
}

#[test]
fn boots_with_64_mib_and_one_cpu() {
    let mut config = config();
    config.smp = 1;
    config.mem = "64M".into();
    let result = assert_boots(&config);
    assert!(
        result.log_has("usable RAM: 63 MiB"),
        "64 MiB minus the firmware's share"
    );
}

/// The least RAM `scripts/run` accepts, with the default four CPUs and the stress.
#[test]
fn boots_with_the_least_memory_scripts_run_accepts() {
    let mut config = config();
    config.mem = format!("{}M", kernel_tests::MIN_MEM_BYTES >> 20);
    assert_boots(&config);
}

#[test]
fn too_little_memory_stops_the_boot_with_a_message() {
    let mut config = config();
    // 7M is the least that boots (debug, 4 CPUs).
    config.mem = "6M".into();
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::KernelFailure);
    assert!(
        result.log_has("kernel: FAILED: not enough RAM: ")
            && result.log_has("give the machine at least"),
        "says what is missing, not out of memory in a self-test"
    );
}

/// 64 GiB on both machines: the most that boots in a few seconds here (5 s each; the
/// kernel's own limits, 330G on q35 and 500G on pc for scripts/run, take 30 s and more
/// and make the host back 7 GB). Above 8 GiB the harness asks QEMU not to reserve
/// the guest's RAM, so the host needs only what the kernel touches (1.3 GB here).
#[test]
fn boots_with_64_gib_and_maps_ram_above_4_gib() {
    for machine in [Machine::Pc, Machine::Q35] {
        let mut config = config();
        config.mem = "64G".into();
        config.machine = machine;
        config.smp = 2;
        // TCG: setting up 64 GiB of page descriptors is ring-0 work, which the kvm_pvm
        // of the machines this runs on emulates instruction by instruction.
        config.accel = Some(Accel::Tcg);
        let result = assert_boots(&config);
        assert!(
            result.log_has("[0x000100000000 - "),
            "QEMU puts RAM above 4 GiB and the kernel must see it"
        );
        assert!(result.log_has("usable RAM: 65535 MiB"));
    }
}

/// More RAM than the page descriptors can describe from below 4 GiB (2 GiB there on
/// q35): refused before anything touches it, so the run is short.
#[test]
fn too_much_memory_stops_the_boot_with_a_message() {
    let mut config = config();
    config.mem = "400G".into();
    config.machine = Machine::Q35;
    config.smp = 1;
    config.accel = Some(Accel::Tcg);
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::KernelFailure);
    assert!(
        result.log_has("kernel: FAILED: too much RAM: 409599 MiB needs")
            && result.log_has("this machine takes at most 3"),
        "says how much this machine takes (339 GiB today)"
    );
}

#[test]
fn a_panic_fails_the_run_and_shows_the_message() {
    let mut config = config();
    config.append.push_str(" test=panic");
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::KernelFailure);
    assert!(result.log_has("PANIC on CPU with APIC ID 0 at kernel/src/main.rs"));
    assert!(result.log_has("deliberate panic requested by the command line"));
    assert!(!result.log_has(SUCCESS_LINE));
}

#[test]
fn a_page_fault_is_reported_with_the_faulting_address() {
    let mut config = config();
    config.append.push_str(" test=pagefault");
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::KernelFailure);
    assert!(result.log_has("EXCEPTION: page fault (#PF) (vector 14)"));
    assert!(result.log_has("page fault at CR2=0x00000deadbeef000: not-present page on write"));
}

#[test]
fn a_stack_overflow_hits_the_guard_page_and_double_faults_on_the_ist_stack() {
    let mut config = config();
    config.append.push_str(" test=stack-overflow");
    let result = boot(&config);
    assert_eq!(
        result.outcome,
        Outcome::KernelFailure,
        "not a triple fault: the IST stack works"
    );
    assert!(result.log_has("EXCEPTION: double fault (#DF) (vector 8)"));
}

#[test]
fn a_triple_fault_is_told_apart_from_a_reported_failure() {
    let mut config = config();
    config.append.push_str(" test=triple-fault");
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::TripleFault);
    assert_eq!(result.outcome.exit_status(), 2);
}

#[test]
fn a_kernel_that_never_reports_times_out() {
    let mut config = config();
    config.append.push_str(" test=hang");
    // One CPU under TCG boots in well under a second; under kvm_pvm (emulated ring 0)
    // the boot alone takes seconds, so it is not used here.
    config.smp = 1;
    config.accel = Some(Accel::Tcg);
    config.timeout = Duration::from_secs(15);
    let result = boot(&config);
    assert_eq!(result.outcome, Outcome::TimedOut(Duration::from_secs(15)));
    assert!(
        result.log_has("crashing on purpose (Hang)"),
        "the kernel did boot before hanging"
    );
}

#[test]
fn unknown_command_line_options_are_reported() {
    let mut config = config();
    config.append.push_str(" loglevel=debug frobnicate=1");
    let result = assert_boots(&config);
    assert!(result.log_has("ignoring unknown option \"frobnicate=1\""));
}

/// A command line that is too long, cut inside a character, with unknown and
/// out-of-range words: everything valid still counts, and every problem is reported.
#[test]
fn a_bad_command_line_keeps_its_valid_options_and_reports_every_problem() {
    let mut config = config();
    config
        .append
        .push_str(" loglevel=debug frobnicate=1 timer_hz=0 stress=999999 pad=");
    // The kernel keeps 511 bytes: put the first byte of a two-byte character last.
    let fill = 510 - config.append.len();
    config.append.push_str(&"x".repeat(fill));
    config.append.push_str("\u{e9} lost=1");
    assert_eq!(config.append.as_bytes()[510], 0xc3);
    let result = assert_boots(&config);
    for report in [
        "command line: longer than 511 bytes, the rest is dropped",
        "command line: not UTF-8 (or a character cut at the end): 1 bytes read as '?'",
        "ignoring unknown option \"frobnicate=1\"",
        "ignoring \"timer_hz=0\": out of range (1 to 10000 per second)",
        "ignoring \"stress=999999\": out of range (0 to 600000 ms)",
    ] {
        assert!(result.log_has(report), "the log reports {report:?}");
    }
    // `loglevel=debug` after the bad words still took effect.
    assert!(result.log.contains("[DEBUG]"), "debug messages are shown");
    assert!(!result.log_has("lost=1"));
}

/// `fault=N`: a frame allocation in the middle of the stress fails; the stress sees
/// out-of-memory errors and still loses nothing (its own check ends the run).
#[test]
fn an_injected_frame_failure_during_the_stress_loses_nothing() {
    let mut config = config();
    config.append = "stress=300 fault=40".into();
    let result = assert_boots(&config);
    assert!(result.log_has("fault: frame allocation 41 of the stress will fail"));
    assert!(
        result.log_has("fault: the injected frame failure happened, and nothing was lost"),
        "the fault fired"
    );
    assert!(result.log_has("stress: nothing lost"));
}

fn free_frames_line(log: &str, prefix: &str) -> Option<usize> {
    let line = log.lines().find(|line| line.starts_with(prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

#[test]
fn memory_runs_out_cleanly_at_64_mib_and_every_frame_comes_back() {
    let mut config = config();
    config.mem = "64M".into();
    config.accel = Some(Accel::Tcg);
    config.append.push_str(" mmtest=exhaust");
    let result = assert_boots(&config);
    let before = free_frames_line(&result.log, "mm self-test: ").expect("the count before");
    assert!(
        result.log_has(&format!("mm self-test: frames: {before} allocated in")),
        "every free frame can be allocated, then out of memory is an error, not a panic"
    );
    assert!(result.log_has("until out of memory, all freed, counts restored"));
    assert!(
        result.log_has("until out of memory, all deleted"),
        "ranges run out cleanly too"
    );
    let tables: usize = result
        .log
        .lines()
        .find(|line| line.starts_with("mm self-test: ranges, pass 2"))
        .and_then(|line| line.split('(').nth(1))
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the pass-2 line names the page-table frames kept");
    let after_line = format!("free frames after ({tables} kept as page tables)");
    let after = result
        .log
        .lines()
        .find(|line| line.starts_with("mm self-test: ranges, pass 2") && line.contains(&after_line))
        .and_then(|line| line.split("; ").nth(1))
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("the pass-2 line gives the free count");
    assert_eq!(
        after + tables,
        before,
        "free frames restored, but for the page tables kept"
    );
}

#[test]
fn the_memory_self_test_restores_the_free_count_at_every_size() {
    for mem in ["64M", "512M", "3G"] {
        let mut config = config();
        config.mem = mem.into();
        config.smp = 2;
        config.accel = Some(Accel::Tcg);
        let result = assert_boots(&config);
        assert!(
            result.log_has("counts restored"),
            "{mem}: the frame phase gives back every frame"
        );
        assert!(
            result.log_has("mm self-test: ranges, pass 2"),
            "{mem}: both range passes ran"
        );
    }
}
