//! Each CPU's own data, reached through the GS segment base.
//!
//! The per-CPU areas are one static array, one [`CachePadded`] slot per possible
//! CPU, so that no two CPUs ever write the same cache line through them. Each CPU
//! points its `IA32_GS_BASE` at its own slot once, at start-up; from then on
//! [`current_cpu`] is a single `mov %gs:0, %reg`, and [`this_cpu`] a second load.
//!
//! The dense CPU index (0 = the BSP, then 1, 2, ... in start-up order) is what the
//! allocator's per-CPU caches are indexed by; the APIC ID is what IPIs are sent to.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use x86_64::VirtAddr;
use x86_64::registers::model_specific::GsBase;

use crate::MAX_CPUS;
use crate::lapic::LocalApic;

/// One CPU's data. `index` must stay the first field: [`current_cpu`] reads it at
/// offset 0 of the GS base.
#[repr(C)]
pub struct PerCpu {
    index: AtomicUsize,
    apic_id: AtomicU32,
    /// Set by the CPU itself once it runs Rust code with its tables loaded.
    pub online: AtomicBool,
    /// Local APIC timer interrupts taken on this CPU.
    pub timer_ticks: AtomicU64,
    /// Free for boot-time checks: bumped under a lock by the CPU itself.
    pub check_counter: AtomicU64,
    /// Critical sections (interrupts turned off by a lock or a per-CPU operation) open
    /// on this CPU, nested; kept in debug builds only. Written only by the CPU itself.
    critical_depth: AtomicU32,
    /// Interrupt handlers running on this CPU, nested. Written only by the CPU itself.
    interrupt_depth: AtomicU32,
    /// Only touched by the owning CPU, with interrupts off.
    lapic: UnsafeCell<Option<LocalApic>>,
}

// SAFETY: the atomics are shared freely; `lapic` is only reached through
// `with_local_apic`, which runs on the owning CPU with interrupts off, so it is
// never accessed from two contexts at once.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new() -> Self {
        Self {
            index: AtomicUsize::new(0),
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            timer_ticks: AtomicU64::new(0),
            check_counter: AtomicU64::new(0),
            critical_depth: AtomicU32::new(0),
            interrupt_depth: AtomicU32::new(0),
            lapic: UnsafeCell::new(None),
        }
    }

    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed)
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Critical sections open on this CPU (always 0 in release builds).
    pub fn critical_depth(&self) -> u32 {
        self.critical_depth.load(Ordering::Relaxed)
    }

    /// Interrupt handlers running on this CPU.
    pub fn interrupt_depth(&self) -> u32 {
        self.interrupt_depth.load(Ordering::Relaxed)
    }
}

/// Set once GS points at a per-CPU area (the BSP's boot area first).
static GS_READY: AtomicBool = AtomicBool::new(false);

/// Adds `delta` to one of this CPU's own depth counters (a load and a store: only the
/// CPU itself writes it, and an interrupt handler that changes it restores it before
/// it returns).
fn bump_depth(field: impl Fn(&PerCpu) -> &AtomicU32, delta: i32) {
    if !GS_READY.load(Ordering::Relaxed) {
        return;
    }
    let counter = field(this_cpu());
    let value = counter.load(Ordering::Relaxed);
    counter.store(value.wrapping_add_signed(delta), Ordering::Relaxed);
}

/// Called when a lock or a per-CPU operation turns interrupts off (see
/// [`may_serve_calls`]); debug builds only, to keep the hit path as it was.
#[inline]
pub fn enter_critical() {
    if cfg!(debug_assertions) {
        bump_depth(|area| &area.critical_depth, 1);
    }
}

/// Called when the critical section [`enter_critical`] opened ends.
#[inline]
pub fn leave_critical() {
    if cfg!(debug_assertions) {
        bump_depth(|area| &area.critical_depth, -1);
    }
}

/// Called by the interrupt dispatcher around every handler.
#[inline]
pub fn enter_interrupt() {
    bump_depth(|area| &area.interrupt_depth, 1);
}

/// Called by the interrupt dispatcher after every handler.
#[inline]
pub fn leave_interrupt() {
    bump_depth(|area| &area.interrupt_depth, -1);
}

/// True where this CPU may serve cross-CPU calls and so may make them (rules 2 and 3
/// in `ipi.rs`): interrupts on, or inside an interrupt handler with no critical section
/// open (a maskable interrupt arrives only where interrupts were on, outside every
/// critical section). In release builds critical sections are not counted, and only
/// the interrupt flag and the handler depth are checked.
pub fn may_serve_calls() -> bool {
    if x86_64::instructions::interrupts::are_enabled() || !GS_READY.load(Ordering::Relaxed) {
        return true;
    }
    let area = this_cpu();
    area.interrupt_depth() > 0 && area.critical_depth() == 0
}

static AREAS: [CachePadded<PerCpu>; MAX_CPUS] =
    [const { CachePadded::new(PerCpu::new()) }; MAX_CPUS];

/// The number of CPUs started so far (indices `0..count`).
static CPU_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The per-CPU area of CPU `index`.
pub fn cpu(index: usize) -> &'static PerCpu {
    &AREAS[index]
}

/// How many CPUs have been given an index.
pub fn cpu_count() -> usize {
    CPU_COUNT.load(Ordering::Acquire)
}

/// Reserves the next CPU index for the CPU with `apic_id`, or `None` when all
/// `MAX_CPUS` are taken.
pub fn assign_index(apic_id: u32) -> Option<usize> {
    let index = CPU_COUNT.fetch_add(1, Ordering::AcqRel);
    if index >= MAX_CPUS {
        CPU_COUNT.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    AREAS[index].index.store(index, Ordering::Relaxed);
    AREAS[index].apic_id.store(apic_id, Ordering::Relaxed);
    Some(index)
}

/// Points the BSP's GS base at the area of CPU 0 before the APIC is up, so that
/// [`current_cpu`] (which the allocator's per-CPU caches need from the first
/// allocation on) answers 0 from the start. [`install`] later completes the area.
///
/// # Safety
///
/// Once, on the BSP, before any other CPU runs and before [`install`].
pub unsafe fn install_boot_area() {
    GsBase::write(VirtAddr::from_ptr(&raw const *AREAS[0]));
    GS_READY.store(true, Ordering::Relaxed);
}

/// Points the calling CPU's GS base at the area of CPU `index`: the first thing an
/// AP does, before it takes any lock (locks count critical sections through GS).
///
/// # Safety
///
/// Once per CPU, by that CPU, with interrupts off, for an index returned by
/// [`assign_index`] for this CPU's APIC ID.
pub unsafe fn install_gs(index: usize) {
    GsBase::write(VirtAddr::from_ptr(&raw const *AREAS[index]));
}

/// Points the calling CPU's GS base at the area of CPU `index` and installs its
/// local APIC there.
///
/// # Safety
///
/// Must be called once per CPU, by that CPU, with interrupts off, for an index
/// returned by [`assign_index`] for this CPU's APIC ID.
pub unsafe fn install(index: usize, lapic: LocalApic) {
    let area: &PerCpu = &AREAS[index];
    // SAFETY: no one else uses this CPU's slot yet (the caller's promise), and
    // interrupts are off.
    unsafe { *area.lapic.get() = Some(lapic) };
    GsBase::write(VirtAddr::from_ptr(area as *const PerCpu));
}

/// The calling CPU's dense index: `mov %gs:0`.
#[inline]
pub fn current_cpu() -> usize {
    let index: usize;
    // SAFETY: after `install`, GS points at this CPU's `PerCpu`, whose first field
    // is the index; reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) index, options(nostack, preserves_flags, readonly));
    }
    index
}

/// The calling CPU's per-CPU area.
#[inline]
pub fn this_cpu() -> &'static PerCpu {
    cpu(current_cpu())
}

/// Runs `f` with the calling CPU's local APIC, interrupts off meanwhile.
pub fn with_local_apic<R>(f: impl FnOnce(&mut LocalApic) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let area = this_cpu();
        // SAFETY: only the owning CPU gets here (GS is per CPU), and with
        // interrupts off no handler on this CPU can be inside this function too,
        // so this is the only reference to the APIC for its lifetime.
        let lapic = unsafe { &mut *area.lapic.get() };
        f(lapic
            .as_mut()
            .expect("the local APIC is installed at CPU start-up"))
    })
}
