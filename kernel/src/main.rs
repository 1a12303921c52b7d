//! The kernel: boots on QEMU through the PVH entry, sets up the CPU and memory,
//! runs its self-checks and leaves QEMU with a status the host can read.
//!
//! Boot path: `boot.rs` (32-bit entry, long mode) -> [`kernel_entry`] (GDT, IDT,
//! serial console, memory map, page tables) -> self-checks -> `qemu::exit`.
//!
//! Built for the host (as `cargo test --workspace` does), this crate is an empty
//! program that explains itself: the kernel only means something on
//! `x86_64-unknown-none`.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod allocator;
#[cfg(target_os = "none")]
mod bench_hitpath;
#[cfg(target_os = "none")]
mod bench_scaling;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod cmdline;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod gdt;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod interrupts;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod mm_selftest;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
mod pvh;
#[cfg(target_os = "none")]
mod qemu;
#[cfg(target_os = "none")]
#[macro_use]
mod serial;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod slab_selftest;
#[cfg(target_os = "none")]
mod smp_boot;
#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod stress;
// After `serial`, whose `println!` it uses.
#[cfg(target_os = "none")]
mod provoke;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "This crate is the kernel: build it for x86_64-unknown-none and boot it with scripts/run."
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
use {cmdline::CrashTest, qemu::ExitCode, spin::Once};

/// The loader's information, copied out of low memory at boot.
#[cfg(target_os = "none")]
static BOOT_INFO: Once<pvh::BootInfo> = Once::new();

/// Called by `boot.rs` on the boot stack, in long mode, with interrupts off and the
/// first GiB identity-mapped. `start_info` is the physical address of the PVH
/// `hvm_start_info`.
#[cfg(target_os = "none")]
extern "C" fn kernel_entry(start_info: u32) -> ! {
    // SAFETY: `start_info` is what QEMU passed in ebx, and the boot page tables
    // identity-map the low memory it points into.
    let boot = unsafe { pvh::BootInfo::read(start_info as u64) };
    let options_level = boot.as_ref().map_or(log::LevelFilter::Info, |boot| {
        cmdline::Options::parse(boot.cmdline()).log_level
    });
    serial::init(options_level);

    cpu::enable_write_back_caching();
    gdt::BSP_TABLES.load(x86_64::VirtAddr::new(gdt::BSP_FAULT_STACK.top()));
    interrupts::load();

    let boot = match boot {
        Ok(boot) => BOOT_INFO.call_once(|| boot),
        Err(error) => panic!("unusable PVH start info: {error:?}"),
    };
    let options = cmdline::Options::parse(boot.cmdline());
    println!(
        "kernel: booting on CPU with APIC ID {} (PVH entry)",
        cpu::apic_id()
    );
    log::info!("command line: {:?}", boot.cmdline());
    log::info!("cpu: NX {}, x2APIC {}", cpu::has_nx(), cpu::has_x2apic());
    match boot.rsdp {
        Some(rsdp) => log::info!("acpi: RSDP at {rsdp:#x} (from the PVH start info)"),
        None => log::info!("acpi: the loader gave no RSDP"),
    }
    if boot.cmdline_cut {
        log::warn!(
            "command line: longer than {} bytes, the rest is dropped",
            boot.cmdline().len()
        );
    }
    if boot.cmdline_replaced > 0 {
        log::warn!(
            "command line: not UTF-8 (or a character cut at the end): {} bytes read as '?'",
            boot.cmdline_replaced
        );
    }
    for ignored in options.ignored.iter().flatten() {
        log::warn!("command line: {ignored}");
    }
    if options.ignored_count > options.ignored.len() {
        log::warn!(
            "command line: and {} more words ignored",
            options.ignored_count - options.ignored.len()
        );
    }
    print_memory_map(boot);

    // The BSP's stacks; the APs' are made later, in the heap window, with their guard
    // pages never mapped (`smp_boot.rs`).
    let guard_pages = [
        boot::BOOT_STACK.guard_page(),
        gdt::BSP_FAULT_STACK.guard_page(),
    ];
    let extra = memory::paging::ExtraPages {
        guard_pages: &guard_pages,
        mmio: &[smp_boot::xapic_phys_base()],
        identity_executable: &[smp::trampoline::TRAMPOLINE_PHYS],
    };
    // SAFETY: first and only call, on the BSP, with the boot identity map active; the
    // PVH structures were copied into BOOT_INFO above.
    let paging = match unsafe { memory::paging::init(boot, &extra) } {
        Ok(summary) => summary,
        Err(error) => panic!("cannot build the kernel page tables: {error:?}"),
    };
    log::info!(
        "paging: kernel image {} pages ({} guard pages unmapped), direct map {} MiB at {:#x}, \
         NX {}, page-table frames [{:#x}, {:#x})",
        paging.kernel_pages,
        paging.guard_pages,
        paging.direct_map_bytes >> 20,
        memory::PHYS_OFFSET,
        if paging.no_execute {
            "on"
        } else {
            "unsupported"
        },
        paging.table_frames.0,
        paging.table_frames.1,
    );

    selftest::run(boot, &guard_pages);
    // SAFETY: on the BSP, once, before any AP runs; the allocator's per-CPU caches
    // read the CPU index through GS from the first allocation on.
    unsafe { smp::percpu::install_boot_area() };
    // SAFETY: once, on the BSP, paging is up and nothing has allocated frames since.
    unsafe { heap::init(boot, &paging) };
    allocator::init(options.slab_debug, options.per_cpu);
    for tuning in options.cpu_cache_tunings.iter().flatten() {
        // The stress caches do not exist yet: the stress applies their tunings.
        if !stress::STRESS_CACHES
            .iter()
            .any(|(name, _)| *name == tuning.cache)
        {
            allocator::tune(tuning);
        }
    }

    let rsdp = if options.scan_for_rsdp {
        None
    } else {
        boot.rsdp
    };
    // The loads that work in timer interrupts; each does nothing until it runs.
    smp_boot::add_timer_hook(stress::timer_tick);
    smp_boot::add_timer_hook(provoke::timer_tick);
    // SAFETY: once, on the BSP, interrupts off, page tables (with the APIC and
    // trampoline pages) and IDT live; `paging.pml4` is the live PML4.
    unsafe { smp_boot::start_all_cpus(rsdp, paging.pml4, options.timer_hz, options.ap_timeout_us) };
    smp_boot::run_checks();
    if options.bench_hitpath {
        bench_hitpath::run();
        qemu::exit(ExitCode::Success);
    }
    if options.bench_scaling {
        bench_scaling::run(options.bench_ms, options.bench_workers);
        qemu::exit(ExitCode::Success);
    }
    if options.skip_memory_tests {
        println!("kernel: memory self-tests skipped (mmtest=off)");
    } else {
        mm_selftest::run(options.exhaust_memory);
        slab_selftest::run(options.exhaust_memory);
        if options.stress_ms > 0 {
            let heap = heap::HEAP.get().expect("the heap is up");
            if let Some(successes) = options.fault_after {
                println!(
                    "fault: frame allocation {} of the stress will fail",
                    successes + 1
                );
                heap.fail_frames_after(Some(successes));
            }
            stress::run(&stress::StressOptions {
                millis: options.stress_ms,
                per_cpu: options.per_cpu,
                tunings: &options.cpu_cache_tunings,
                provoke: options.stress_provoke,
            });
            if options.fault_after.is_some() {
                let fired = !heap.frame_fault_pending();
                heap.fail_frames_after(None);
                println!(
                    "fault: {}",
                    if fired {
                        "the injected frame failure happened, and nothing was lost"
                    } else {
                        "the stress allocated fewer frames: no failure was injected"
                    }
                );
            }
        }
    }
    print_slabinfo();

    if let Some(test) = options.crash_test {
        crash_on_purpose(test);
    }
    println!("kernel: all checks passed");
    qemu::exit(ExitCode::Success)
}

/// The Linux 2.4 `/proc/slabinfo` table of every cache, with its statistics and
/// per-CPU columns, at the end of the run.
#[cfg(target_os = "none")]
fn print_slabinfo() {
    struct Console;
    impl core::fmt::Write for Console {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            print!("{text}");
            Ok(())
        }
    }
    let _ = allocator::slab().caches().slabinfo_statistics(&mut Console);
}

#[cfg(target_os = "none")]
fn print_memory_map(boot: &pvh::BootInfo) {
    println!("memory map (from the PVH start info):");
    for region in boot.regions() {
        println!("  {region}");
    }
    if boot.regions_dropped > 0 {
        log::warn!(
            "memory map: {} entries beyond the first 32 ignored",
            boot.regions_dropped
        );
    }
    let ram: u64 = boot.ram().map(|region| region.size).sum();
    println!(
        "  usable RAM: {} MiB in {} regions",
        ram >> 20,
        boot.ram().count()
    );
}

/// The deliberate failures that the boot tests use to check the crash paths.
#[cfg(target_os = "none")]
fn crash_on_purpose(test: CrashTest) -> ! {
    println!("kernel: crashing on purpose ({test:?})");
    match test {
        CrashTest::Panic => panic!("deliberate panic requested by the command line"),
        CrashTest::PageFault => {
            let address = 0x0dea_dbee_f000 as *mut u64;
            // SAFETY: not sound, on purpose: the address is unmapped and the write
            // must raise a page fault whose report names it.
            unsafe { address.write_volatile(1) };
            panic!("the write to an unmapped address did not fault");
        }
        CrashTest::StackOverflow => {
            recurse(0);
            panic!("unbounded recursion returned");
        }
        CrashTest::TripleFault => {
            interrupts::load_empty_idt();
            // SAFETY: not sound, on purpose: with an empty IDT the #UD cannot be
            // delivered, nor the double fault that follows, so the CPU resets.
            unsafe { core::arch::asm!("ud2") };
            panic!("the machine did not reset");
        }
        CrashTest::Hang => qemu::halt_forever(),
    }
}

/// Eats the stack until it runs into the guard page.
#[cfg(target_os = "none")]
#[allow(unconditional_recursion, reason = "it is meant to overflow the stack")]
fn recurse(depth: u64) -> u64 {
    let frame = [depth; 64];
    core::hint::black_box(&frame);
    recurse(depth + 1) + core::hint::black_box(frame[0])
}
