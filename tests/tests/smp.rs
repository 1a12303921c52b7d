//! SMP boot matrix: every CPU comes online, IPIs reach every CPU, timers tick on
//! every CPU. TCG runs exercise the xAPIC (QEMU 7.2's TCG has no x2APIC); KVM runs,
//! where /dev/kvm is usable, exercise the x2APIC.

mod common;

use common::{assert_boots, config};
use kernel_tests::{Accel, Machine, kvm_usable};

/// Boots of this many CPUs or more run one at a time: two at once (128 and 255 virtual
/// CPUs on a 2-core host) slow each other past what the test measures.
const MANY_CPUS: u32 = 64;

/// Held by a boot of [`MANY_CPUS`] or more.
static MANY_CPUS_BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_all_cpus_work(smp: u32, machine: Machine, accel: Accel) {
    let _one_at_a_time = (smp >= MANY_CPUS).then(|| {
        MANY_CPUS_BOOT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    });
    let mut config = config();
    config.smp = smp;
    config.machine = machine;
    config.accel = Some(accel);
    if accel == Accel::Kvm {
        // The memory self-tests take about a minute under the kvm_pvm of the machines
        // this runs on, which emulates ring 0 (see common::config); this matrix is
        // about CPUs.
        config.append.push_str(" mmtest=off");
    }
    let result = assert_boots(&config);
    assert_eq!(result.accel, accel);
    let mode = match accel {
        Accel::Kvm => "x2APIC",
        Accel::Tcg => "xAPIC",
    };
    assert!(
        result.log_has(&format!(
            "cpu 0: APIC ID 0, {mode}, online (bootstrap processor)"
        )),
        "the BSP runs its local APIC in {mode} mode"
    );
    for cpu in 1..smp {
        assert!(
            result.log_has(&format!("cpu {cpu}: APIC ID {cpu}, {mode}, online after")),
            "CPU {cpu} comes online in {mode} mode"
        );
    }
    if smp == 1 {
        assert!(result.log_has("smp: 1 CPU online (the firmware lists no application processors)"));
    } else {
        assert!(result.log_has(&format!("smp: {smp} CPUs online, 0 failed to start")));
    }
    // All-to-all up to 8 CPUs; beyond, CPU 0 to all and a ring (kernel/src/smp_boot.rs).
    let calls = if smp <= 8 {
        format!("smp: on_each_cpu from every CPU to every CPU: {smp}x{smp} calls ok")
    } else {
        format!(
            "smp: on_each_cpu from CPU 0 to every CPU, then on_cpu from every CPU to the \
             next in a ring: {smp}+{smp} calls ok"
        )
    };
    assert!(result.log_has(&calls), "IPIs reach every CPU: {calls:?}");
    let ticking = result
        .log
        .lines()
        .filter(|line| line.contains(": online, ") && line.contains(" timer ticks, "))
        .count();
    assert_eq!(ticking, smp as usize, "every CPU reports its timer ticks");
    assert!(result.log_has("smp: every CPU ran its checks and its timer ticks"));
}

macro_rules! tcg_matrix {
    ($($name:ident: $smp:expr, $machine:expr;)*) => {$(
        #[test]
        fn $name() {
            check_all_cpus_work($smp, $machine, Accel::Tcg);
        }
    )*};
}

tcg_matrix! {
    tcg_pc_smp_1: 1, Machine::Pc;
    tcg_pc_smp_2: 2, Machine::Pc;
    tcg_pc_smp_3: 3, Machine::Pc;
    tcg_pc_smp_4: 4, Machine::Pc;
    tcg_pc_smp_8: 8, Machine::Pc;
    tcg_pc_smp_16: 16, Machine::Pc;
    tcg_q35_smp_1: 1, Machine::Q35;
    tcg_q35_smp_2: 2, Machine::Q35;
    tcg_q35_smp_3: 3, Machine::Q35;
    tcg_q35_smp_4: 4, Machine::Q35;
    tcg_q35_smp_8: 8, Machine::Q35;
    tcg_q35_smp_16: 16, Machine::Q35;
    tcg_q35_smp_64_brings_all_64_cpus_online: 64, Machine::Q35;
    tcg_q35_smp_128_brings_all_128_cpus_online: 128, Machine::Q35;
    tcg_pc_smp_255_brings_all_255_cpus_online: 255, Machine::Pc;
}

macro_rules! kvm_matrix {
    ($($name:ident: $smp:expr, $machine:expr;)*) => {$(
        #[test]
        fn $name() {
            if !kvm_usable() {
                eprintln!("SKIPPED {}: /dev/kvm is not usable here", stringify!($name));
                return;
            }
            check_all_cpus_work($smp, $machine, Accel::Kvm);
        }
    )*};
}

kvm_matrix! {
    kvm_pc_smp_1: 1, Machine::Pc;
    kvm_pc_smp_2: 2, Machine::Pc;
    kvm_pc_smp_4: 4, Machine::Pc;
    kvm_q35_smp_1: 1, Machine::Q35;
    kvm_q35_smp_2: 2, Machine::Q35;
    kvm_q35_smp_4: 4, Machine::Q35;
}

#[test]
fn the_rsdp_is_found_by_scanning_the_bios_areas_too() {
    let mut config = config();
    config.accel = Some(Accel::Tcg);
    config.append.push_str(" acpi=scan");
    let result = assert_boots(&config);
    assert!(result.log_has("acpi: scanning the EBDA and 0xe0000-0xfffff for the RSDP"));
    assert!(result.log_has("smp: 4 CPUs online, 0 failed to start"));
}

/// Issue 11: an AP that started after the BSP gave up on it read the next AP's
/// parameter block (its stack and index) and ran as that AP. With `ap_timeout_us=0` the
/// BSP gives up on every AP before it can start (a 1 us time-out was not enough on an
/// idle host: APs claimed their tickets first): each must park, the boot goes on alone,
/// and the count says so.
#[test]
fn aps_that_start_after_their_time_out_park() {
    let mut config = config();
    config.smp = 8;
    config.append = "stress=300 ap_timeout_us=0".into();
    let result = assert_boots(&config);
    let late = (1..8)
        .filter(|cpu| {
            result.log_has(&format!(
                "cpu {cpu}: APIC ID {cpu}: did not start within 0 us, continuing without it"
            ))
        })
        .count();
    let online = (1..8)
        .filter(|cpu| result.log_has(&format!("cpu {cpu}: APIC ID {cpu}, xAPIC, online after")))
        .count();
    assert!(late > 0, "some AP missed its 1 us time-out");
    assert_eq!(
        late + online,
        7,
        "every AP is either online as itself or parked"
    );
    assert!(result.log_has(&format!(
        "smp: {} CPUs online, {late} failed to start",
        online + 1
    )));
}
