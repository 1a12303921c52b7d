//! Bringing up every CPU: the kernel side of the `smp` crate.
//!
//! The BSP enables its local APIC, calibrates the TSC and the APIC timer, reads the
//! CPUs from the ACPI MADT and starts the APs one by one through the trampoline.
//! Each AP loads its own GDT/TSS (with its own double-fault stack), the shared IDT,
//! points GS at its per-CPU area, enables its local APIC and timer, reports online
//! and then idles with interrupts on, serving IPIs and timer ticks, until the BSP
//! posts work for every CPU ([`run_on_every_cpu`]).
//!
//! Each AP's stacks and descriptor tables are made at boot for the CPUs the MADT lists
//! ([`ApResources`]), not kept in statics for `MAX_CPUS` (255) CPUs: an absent CPU
//! costs no memory.
//!
//! [`run_checks`] then proves every CPU does work: each AP bumped a shared counter
//! and its own under an interrupt-safe lock; every CPU makes cross-CPU calls at the
//! same time (all-to-all up to [`ALL_TO_ALL_MAX_CPUS`] CPUs, so that the calls cross
//! while CPUs wait on each other; a ring beyond, each CPU calling the next); and the
//! timer ticks on every CPU.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::cpu::IrqLock;
use smp::lapic::{ApicMode, LocalApic};
use smp::percpu::{self, current_cpu, this_cpu};
use smp::trampoline::{self, ApStart, StartResult, TRAMPOLINE_PHYS};
use smp::{MAX_CPUS, ipi, timer, vectors};
use x86_64::VirtAddr;

use crate::gdt::{CpuTables, FAULT_STACK_SIZE};
use crate::interrupts::{self, TrapFrame};
use crate::memory::{MMIO_OFFSET, PHYS_OFFSET, paging};
use crate::stack::HeapStack;

/// Stack size of each AP.
const AP_STACK_SIZE: usize = 64 * 1024;
/// How long to wait for an AP to report in. Generous: under TCG, 255 virtual CPUs
/// on 2 host cores start slowly.
const AP_START_TIMEOUT_US: u64 = 5_000_000;

/// The highest APIC ID that xAPIC mode can send an IPI to: its destination field has 8
/// bits, and 0xff is the broadcast. Larger IDs need x2APIC.
const XAPIC_MAX_APIC_ID: u32 = 0xfe;

/// What one AP needs from the BSP, made for each CPU the MADT lists before any AP
/// starts (while the BSP is the only CPU, as the allocator's boot-time rules want),
/// and never freed: its address is the argument the trampoline hands `ap_entry`.
struct ApResources {
    index: usize,
    stack: HeapStack,
    fault_stack: HeapStack,
    tables: CpuTables,
}

impl ApResources {
    /// The stacks and tables of the AP that will get `index`, or a panic: a machine
    /// without 80 KiB per listed CPU cannot run what the boot checks run anyway.
    fn make(index: usize) -> &'static Self {
        let heap = crate::heap::HEAP
            .get()
            .expect("the heap is up before the APs");
        let stack = |bytes| {
            let stack = HeapStack::new(heap, bytes).unwrap_or_else(|error| {
                panic!("smp: no memory for CPU {index}'s stacks: {error:?}")
            });
            assert!(
                paging::translate(stack.guard_page()).is_none(),
                "the guard page under CPU {index}'s stack is unmapped"
            );
            stack
        };
        Box::leak(Box::new(Self {
            index,
            stack: stack(AP_STACK_SIZE),
            fault_stack: stack(FAULT_STACK_SIZE),
            tables: CpuTables::new(),
        }))
    }
}

/// APIC timer period in timer counts, set by the BSP after calibration.
static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);

/// The boot check of the interrupt-safe lock: every CPU adds one.
static SHARED_COUNTER: IrqLock<u64> = IrqLock::new(0);

/// Up to this many CPUs the boot check of cross-CPU calls is all-to-all (every CPU
/// calls every CPU at once: n² calls, which cross while their senders wait on each
/// other); beyond, a ring (each CPU calls the next online one: n calls), so that 255
/// CPUs check in seconds under TCG rather than make 65,000 calls.
const ALL_TO_ALL_MAX_CPUS: usize = 8;

/// `ALL_TO_ALL_CALLS[s][t]`: times CPU `t` ran a function sent by CPU `s`.
static ALL_TO_ALL_CALLS: [[AtomicU64; ALL_TO_ALL_MAX_CPUS]; ALL_TO_ALL_MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; ALL_TO_ALL_MAX_CPUS] }; ALL_TO_ALL_MAX_CPUS];
/// `RING_CALLS[t]`: times CPU `t` ran a function sent by its ring predecessor, and
/// `RING_SENDER[t]`: that sender.
static RING_CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static RING_SENDER: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];

/// Time from the first INIT to the last AP online, in microseconds.
static AP_BRINGUP_US: AtomicU64 = AtomicU64::new(0);
static APS_FAILED: AtomicUsize = AtomicUsize::new(0);

/// The xAPIC register page (physical), to be mapped uncached.
pub fn xapic_phys_base() -> u64 {
    smp::lapic::xapic_phys_base()
}

fn xapic_virt_base() -> u64 {
    MMIO_OFFSET + xapic_phys_base()
}

/// Brings up the BSP's APIC and timer, then every AP the MADT lists.
///
/// # Safety
///
/// Once, on the BSP, with interrupts off, after the page tables (with the APIC
/// page and the trampoline page mapped) and the IDT are live; `pml4` is the
/// physical address of the kernel's PML4. `ap_timeout_us` overrides how long to wait
/// for each AP.
pub unsafe fn start_all_cpus(
    rsdp: Option<u64>,
    pml4: u64,
    timer_hz: u32,
    ap_timeout_us: Option<u64>,
) {
    let ap_timeout_us = ap_timeout_us.unwrap_or(AP_START_TIMEOUT_US);
    interrupts::set_handler(vectors::TIMER, timer_interrupt);
    interrupts::set_handler(vectors::CALL_FUNCTION, call_function_interrupt);
    interrupts::set_handler(vectors::TLB_SHOOTDOWN, tlb_shootdown_interrupt);
    interrupts::set_handler(vectors::APIC_ERROR, apic_error_interrupt);
    interrupts::set_handler(vectors::SPURIOUS, |_| {});
    mask_legacy_pic();

    // SAFETY: the APIC page is mapped uncached at xapic_virt_base and the vectors
    // have handlers (just registered).
    let lapic = unsafe { LocalApic::enable(xapic_virt_base()) };
    let bsp_apic_id = lapic.id();
    let mode = lapic.mode();
    let index = percpu::assign_index(bsp_apic_id).expect("the BSP is the first CPU");
    // SAFETY: the BSP, once, with interrupts off, with its own index.
    unsafe { percpu::install(index, lapic) };
    percpu::cpu(0).online.store(true, Ordering::Release);

    let calibration = percpu::with_local_apic(timer::calibrate);
    let count = (calibration.apic_timer_hz / timer_hz.max(1) as u64).clamp(1, u32::MAX as u64);
    TIMER_COUNT.store(count as u32, Ordering::Relaxed);
    log::info!(
        "timer: TSC {} MHz, APIC timer {} kHz (divide 16), {} Hz ticks = {} counts",
        calibration.tsc_hz / 1_000_000,
        calibration.apic_timer_hz / 1000,
        timer_hz,
        count
    );
    println!(
        "cpu 0: APIC ID {bsp_apic_id}, {}, online (bootstrap processor)",
        mode_name(mode)
    );

    match rsdp {
        Some(rsdp) => log::info!("acpi: reading the MADT through the RSDP at {rsdp:#x}"),
        None => log::info!("acpi: scanning the EBDA and 0xe0000-0xfffff for the RSDP"),
    }
    // SAFETY: the direct map covers the BIOS areas and the ACPI tables (firmware
    // ranges below 4 GiB), which nothing has overwritten.
    let cpus = match unsafe {
        smp::madt::read_cpus(
            smp::madt::DirectMap {
                phys_offset: PHYS_OFFSET,
            },
            rsdp,
        )
    } {
        Ok(cpus) => cpus,
        Err(error) => {
            log::warn!("smp: cannot read the ACPI MADT ({error:?}): running on the BSP only");
            start_local_timer();
            return;
        }
    };
    for (entry, reason) in cpus.skipped() {
        log::warn!(
            "smp: skipping MADT processor with APIC ID {}: {reason:?}",
            entry.apic_id
        );
    }
    if cpus.skipped_uncounted > 0 {
        log::warn!(
            "smp: {} more processor entries skipped",
            cpus.skipped_uncounted
        );
    }
    // Fail the run rather than run on part of the machine as if all were fine.
    assert!(
        cpus.beyond_max_cpus == 0,
        "smp: the MADT lists {} usable processors, more than the {MAX_CPUS} this kernel \
         supports (smp::MAX_CPUS)",
        MAX_CPUS + cpus.beyond_max_cpus
    );
    if mode == ApicMode::XApic {
        let unreachable = cpus
            .usable()
            .filter(|entry| entry.apic_id > XAPIC_MAX_APIC_ID)
            .count();
        assert!(
            unreachable == 0,
            "smp: {unreachable} processors have APIC IDs above {XAPIC_MAX_APIC_ID}, which \
             xAPIC mode cannot send IPIs to (this CPU has no x2APIC)"
        );
    }
    let aps: Vec<_> = cpus
        .usable()
        .filter(|entry| entry.apic_id != bsp_apic_id)
        .collect();
    // Indices are handed out in start-up order: the AP started k-th gets index k.
    let resources: Vec<_> = (1..=aps.len()).map(ApResources::make).collect();

    let trampoline_page = (PHYS_OFFSET + TRAMPOLINE_PHYS) as *mut u8;
    // SAFETY: the trampoline page is reserved low RAM, direct-mapped writable.
    unsafe { trampoline::install(trampoline_page) };
    let efer_bits = if crate::cpu::has_nx() { 1 << 11 } else { 0 };

    let first_init = timer::rdtsc();
    for (entry, resources) in aps.into_iter().zip(resources) {
        let index = percpu::assign_index(entry.apic_id)
            .expect("the MADT lists at most MAX_CPUS usable processors (checked above)");
        assert_eq!(index, resources.index, "indices are handed out in order");
        let start = ApStart {
            cr3: u32::try_from(pml4).expect("the boot frames (and so the PML4) are below 1 GiB"),
            efer_bits,
            stack_top: resources.stack.top(),
            entry: ap_entry as *const () as u64,
            argument: resources as *const ApResources as u64,
        };
        let online = &percpu::cpu(index).online;
        // SAFETY: the trampoline is installed and identity-mapped executable in the
        // tables of `pml4`; the stack of `resources` is mapped there and used by no one; `ap_entry`
        // never returns; the target is a CPU the firmware left in wait-for-SIPI.
        let result = percpu::with_local_apic(|lapic| unsafe {
            trampoline::start_ap(
                lapic,
                trampoline_page,
                entry.apic_id,
                start,
                online,
                ap_timeout_us,
            )
        });
        match result {
            StartResult::Online { micros } => println!(
                "cpu {index}: APIC ID {}, {}, online after {micros} us",
                entry.apic_id,
                mode_name(mode)
            ),
            StartResult::TimedOut => {
                APS_FAILED.fetch_add(1, Ordering::Relaxed);
                println!(
                    "cpu {index}: APIC ID {}: did not start within {} us, continuing without it",
                    entry.apic_id, ap_timeout_us
                );
            }
        }
    }
    let micros = timer::tsc_to_ns(timer::rdtsc() - first_init) / 1000;
    AP_BRINGUP_US.store(micros, Ordering::Relaxed);
    start_local_timer();
}

fn mode_name(mode: ApicMode) -> &'static str {
    match mode {
        ApicMode::X2Apic => "x2APIC",
        ApicMode::XApic => "xAPIC",
    }
}

/// The 8259 PICs are not used: mask every line so that nothing arrives on vectors
/// that collide with CPU exceptions. (The local APIC masks LINT0 as well.)
fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: writing 0xff to the PICs' interrupt-mask registers masks all lines.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}

fn start_local_timer() {
    let count = TIMER_COUNT.load(Ordering::Relaxed);
    percpu::with_local_apic(|lapic| lapic.start_timer(count, true));
}

/// Where each AP arrives from the trampoline, on its own stack, interrupts off, with
/// the address of its [`ApResources`].
extern "C" fn ap_entry(resources: u64) -> ! {
    // SAFETY: the BSP passes the address of a leaked `ApResources` (never freed, never
    // written after it was made), and only to the AP it was made for.
    let resources: &'static ApResources = unsafe { &*(resources as *const ApResources) };
    let index = resources.index;
    // SAFETY: this AP, once, interrupts off, with the index the BSP gave its APIC ID
    // (checked against the APIC below). First, so that every lock finds its area.
    unsafe { percpu::install_gs(index) };
    crate::cpu::enable_write_back_caching();
    resources
        .tables
        .load(VirtAddr::new(resources.fault_stack.top()));
    interrupts::load();
    // SAFETY: the BSP mapped the APIC page for all CPUs and registered the handlers.
    let lapic = unsafe { LocalApic::enable(xapic_virt_base()) };
    let expected = percpu::cpu(index).apic_id();
    assert_eq!(
        lapic.id(),
        expected,
        "CPU {index} woke up with the wrong APIC ID"
    );
    // SAFETY: this AP, once, interrupts off, with the index the BSP gave its APIC ID.
    unsafe { percpu::install(index, lapic) };

    {
        let mut shared = SHARED_COUNTER.lock();
        *shared += 1;
        this_cpu().check_counter.fetch_add(1, Ordering::Relaxed);
    }
    start_local_timer();
    this_cpu().online.store(true, Ordering::Release);
    let mut jobs_done = 0;
    loop {
        // Look for work with interrupts off: a wake-up IPI that arrives after the
        // look stays pending until the `sti` below, and `sti; hlt` back to back
        // lets it end the `hlt` instead of slipping in before it.
        x86_64::instructions::interrupts::disable();
        let posted = JOBS_POSTED.load(Ordering::Acquire);
        if posted != jobs_done {
            jobs_done = posted;
            x86_64::instructions::interrupts::enable();
            let job = JOB.load(Ordering::Acquire);
            // SAFETY: a posted job stays alive until every AP that was online when it
            // was posted (we were: the job counted us) has counted itself done.
            unsafe {
                (*(*job).work)(index);
                (*job).remaining.fetch_sub(1, Ordering::AcqRel);
            }
            continue;
        }
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Work for every CPU, posted by [`run_on_every_cpu`].
struct Job {
    /// The work, with its lifetime erased: the poster waits for `remaining` to reach 0.
    work: *const (dyn Fn(usize) + Sync),
    /// APs that have not finished it yet.
    remaining: AtomicUsize,
}

/// The job being run; valid while `remaining` of the last posted job is not 0.
static JOB: AtomicPtr<Job> = AtomicPtr::new(core::ptr::null_mut());
/// Jobs posted so far: an AP runs the current job when this moved since it looked.
static JOBS_POSTED: AtomicU64 = AtomicU64::new(0);

/// Runs `work(cpu index)` on every online CPU at once, in normal (not interrupt)
/// context with interrupts on, so that the CPUs keep taking timer ticks and IPIs
/// while they work; returns when all have finished. Unlike `ipi::on_each_cpu`,
/// whose functions run with interrupts off, the work may itself wait for other
/// CPUs (drain their caches, shoot down their TLBs). BSP only, after `start_all_cpus`.
///
/// Called with interrupts on: it calls `on_each_cpu` (rule 3 in `smp/src/ipi.rs`).
pub fn run_on_every_cpu(work: &(dyn Fn(usize) + Sync)) {
    assert_eq!(current_cpu(), 0, "jobs are posted by the BSP");
    assert!(
        x86_64::instructions::interrupts::are_enabled(),
        "run_on_every_cpu with interrupts off: see rule 3 in smp/src/ipi.rs"
    );
    let aps = (1..percpu::cpu_count())
        .filter(|&cpu| percpu::cpu(cpu).online.load(Ordering::Acquire))
        .count();
    // SAFETY: only the lifetime is erased; `job` and `work` outlive every use of
    // the pointer, because this function waits for `remaining` to reach zero.
    let work: *const (dyn Fn(usize) + Sync) = unsafe { core::mem::transmute(work) };
    let job = Job {
        work,
        remaining: AtomicUsize::new(aps),
    };
    JOB.store((&raw const job).cast_mut(), Ordering::Release);
    JOBS_POSTED.fetch_add(1, Ordering::AcqRel);
    // Wake the APs from `hlt` now rather than at their next timer tick (without
    // waiting for them: under TCG that could take longer than a short job).
    ipi::kick_others();
    // SAFETY: `job.work` points at `work`, borrowed for this call.
    unsafe { (*job.work)(0) };
    while job.remaining.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
    JOB.store(core::ptr::null_mut(), Ordering::Release);
}

/// Work every CPU's timer interrupt runs, registered by the loads that need it (the
/// stress and its provoking mode) with [`add_timer_hook`]: the timer handler names no
/// load, so this module does not depend on them.
static TIMER_HOOKS: [AtomicPtr<()>; 4] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 4];

/// Makes every CPU's timer interrupt call `hook` from now on (after its EOI, with
/// interrupts off). Hooks are never removed: a load's hook does nothing when the load
/// is not running.
pub fn add_timer_hook(hook: fn()) {
    let hook = hook as *mut ();
    let added = TIMER_HOOKS.iter().any(|slot| {
        slot.compare_exchange(
            core::ptr::null_mut(),
            hook,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    });
    assert!(added, "more than {} timer hooks", TIMER_HOOKS.len());
}

fn timer_interrupt(_frame: &mut TrapFrame) {
    this_cpu().timer_ticks.fetch_add(1, Ordering::Relaxed);
    // EOI before the hooks: a provoking hook makes a cross-CPU call that waits for other
    // CPUs, and this CPU's next tick must not be held up behind it longer than that.
    percpu::with_local_apic(LocalApic::end_of_interrupt);
    for slot in &TIMER_HOOKS {
        let hook = slot.load(Ordering::Acquire);
        if !hook.is_null() {
            // SAFETY: non-null slots hold only `fn()` pointers, stored by
            // `add_timer_hook` as `*mut ()`: the same pointer, back to its type.
            let hook = unsafe { core::mem::transmute::<*mut (), fn()>(hook) };
            hook();
        }
    }
}

fn call_function_interrupt(_frame: &mut TrapFrame) {
    // EOI first: a new CALL_FUNCTION IPI that arrives while we serve is then
    // latched and delivered after `iretq` instead of being merged into this one.
    percpu::with_local_apic(LocalApic::end_of_interrupt);
    ipi::serve_mailbox();
}

fn tlb_shootdown_interrupt(_frame: &mut TrapFrame) {
    smp::tlb::answer();
    percpu::with_local_apic(LocalApic::end_of_interrupt);
}

fn apic_error_interrupt(_frame: &mut TrapFrame) {
    log::error!("local APIC error on CPU {}", current_cpu());
    percpu::with_local_apic(LocalApic::end_of_interrupt);
}

/// Proves that every online CPU works: counters under the interrupt-safe lock,
/// all-to-all `on_each_cpu`, timer ticks everywhere. Panics on a failed check.
/// Turns interrupts on on the BSP, and leaves them on.
pub fn run_checks() {
    ipi::set_stall_hook(report_stall);
    let online: usize = (0..percpu::cpu_count())
        .filter(|&cpu| percpu::cpu(cpu).online.load(Ordering::Acquire))
        .count();
    let failed = APS_FAILED.load(Ordering::Relaxed);
    if percpu::cpu_count() == 1 {
        println!("smp: 1 CPU online (the firmware lists no application processors)");
    } else {
        println!(
            "smp: {online} CPUs online, {failed} failed to start; APs brought up in {} us \
             (first INIT to last online)",
            AP_BRINGUP_US.load(Ordering::Relaxed)
        );
    }
    x86_64::instructions::interrupts::enable();

    let shared = *SHARED_COUNTER.lock();
    assert_eq!(
        shared as usize,
        online - 1,
        "every AP adds one to the shared counter"
    );
    for cpu in 1..percpu::cpu_count() {
        let area = percpu::cpu(cpu);
        if area.online.load(Ordering::Acquire) {
            assert_eq!(
                area.check_counter.load(Ordering::Relaxed),
                1,
                "CPU {cpu} counted itself once"
            );
        }
    }

    let is_online = |cpu: usize| percpu::cpu(cpu).online.load(Ordering::Acquire);
    if percpu::cpu_count() <= ALL_TO_ALL_MAX_CPUS {
        check_calls_all_to_all(is_online);
        println!("smp: on_each_cpu from every CPU to every CPU: {online}x{online} calls ok");
    } else {
        check_calls_in_a_ring(is_online);
        println!(
            "smp: on_each_cpu from CPU 0 to every CPU, then on_cpu from every CPU to the \
             next in a ring: {online}+{online} calls ok"
        );
    }
    // The last CPU that came online (an AP that missed its start-up time-out parks,
    // and a call to it would wait forever).
    let last = (0..percpu::cpu_count())
        .rev()
        .find(|&cpu| is_online(cpu))
        .expect("the BSP is online");
    let ran_on = AtomicUsize::new(usize::MAX);
    ipi::on_cpu(last, &|| ran_on.store(current_cpu(), Ordering::Relaxed));
    assert_eq!(
        ran_on.load(Ordering::Relaxed),
        last,
        "on_cpu runs on the CPU it names"
    );

    // The timer ticks on every CPU.
    let deadline = timer::deadline_after_us(10_000_000);
    for cpu in (0..percpu::cpu_count()).filter(|&cpu| is_online(cpu)) {
        while percpu::cpu(cpu).timer_ticks.load(Ordering::Relaxed) < 3 {
            assert!(!timer::expired(deadline), "CPU {cpu}'s timer does not tick");
            x86_64::instructions::hlt();
        }
    }
    for cpu in (0..percpu::cpu_count()).filter(|&cpu| is_online(cpu)) {
        let area = percpu::cpu(cpu);
        println!(
            "cpu {cpu}: APIC ID {}: online, {} timer ticks, {} IPI calls served",
            area.apic_id(),
            area.timer_ticks.load(Ordering::Relaxed),
            ipi::calls_served(cpu)
        );
    }
    // Interrupts stay on from here: the BSP's later work (self-tests, the stress, its
    // drains and statistics) calls `on_each_cpu` and takes the slab chain and tuning
    // locks, which rules 3 and 4 of `smp/src/ipi.rs` allow only with interrupts on.
    println!("smp: every CPU ran its checks and its timer ticks");
}

/// Every CPU, at the same moment, asks every CPU to record the call: each runs every
/// other's call once.
fn check_calls_all_to_all(is_online: impl Fn(usize) -> bool) {
    ipi::on_each_cpu(&|| {
        let sender = current_cpu();
        ipi::on_each_cpu(&|| {
            ALL_TO_ALL_CALLS[sender][current_cpu()].fetch_add(1, Ordering::Relaxed);
        });
    });
    for sender in (0..percpu::cpu_count()).filter(|&cpu| is_online(cpu)) {
        for target in (0..percpu::cpu_count()).filter(|&cpu| is_online(cpu)) {
            let calls = ALL_TO_ALL_CALLS[sender][target].load(Ordering::Relaxed);
            assert_eq!(calls, 1, "CPU {target} ran CPU {sender}'s call once");
        }
    }
}

/// CPU 0 asks every CPU (`on_each_cpu`), and each, at the same moment, asks the next
/// online CPU (`on_cpu`, wrapping round) to record the call: each runs its
/// predecessor's call once. Every CPU sends and receives, every mailbox is used, and
/// the calls still cross while their senders wait, in n calls rather than n².
fn check_calls_in_a_ring(is_online: impl Fn(usize) -> bool + Sync) {
    let count = percpu::cpu_count();
    let next_online = |cpu: usize| {
        (1..=count)
            .map(|step| (cpu + step) % count)
            .find(|&next| is_online(next))
            .expect("the caller is online")
    };
    ipi::on_each_cpu(&|| {
        let sender = current_cpu();
        ipi::on_cpu(next_online(sender), &|| {
            let me = current_cpu();
            RING_SENDER[me].store(sender, Ordering::Relaxed);
            RING_CALLS[me].fetch_add(1, Ordering::Relaxed);
        });
    });
    for sender in (0..count).filter(|&cpu| is_online(cpu)) {
        let target = next_online(sender);
        let calls = RING_CALLS[target].load(Ordering::Relaxed);
        assert_eq!(calls, 1, "CPU {target} ran its predecessor's call once");
        let from = RING_SENDER[target].load(Ordering::Relaxed);
        assert_eq!(from, sender, "CPU {target}'s call came from CPU {sender}");
    }
}

/// What a stalled cross-CPU wait does: print the wait graph and fail the run.
fn report_stall(graph: &ipi::WaitGraph) -> ! {
    static REPORTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if REPORTED.swap(true, Ordering::AcqRel) {
        // Another CPU is reporting the same stall: one graph is enough.
        crate::qemu::halt_forever();
    }
    crate::serial::emergency_print(format_args!("\n{graph}\n"));
    panic!("cross-CPU wait stalled on CPU {}", graph.reporter);
}
