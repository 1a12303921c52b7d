//! The platform seam: everything hardware-shaped that the allocator needs.
//!
//! `mm` knows nothing about x86. The kernel implements [`Platform`] with real page
//! tables; the hosted build (`hosted.rs`) implements it over an arena of host memory
//! so that the very same allocator code runs in unit tests, under Miri and in
//! benchmarks. The per-CPU part of the seam (the interrupt guard, which CPU am I,
//! run-on-every-CPU) is [`InterruptControl`] and [`CpuLocal`], also here: the spinlocks
//! of [`crate::sync`] are generic over the first.

/// Size of a page frame and of the unit of the range allocator.
pub const PAGE_SIZE: usize = 4096;

/// A physical address. Kept distinct from virtual addresses (`usize`) on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

/// Why a page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A page-table frame was needed and none was left.
    OutOfMemory,
    /// The virtual page is already mapped.
    AlreadyMapped,
}

/// The machine as the allocator sees it.
///
/// # Safety
///
/// Implementors guarantee that after `map_page(virt, phys, ..)` returns `Ok`, the 4 KiB
/// page at `virt` is readable and writable kernel memory backed by frame `phys` until
/// `unmap_page(virt)`, that nothing else uses that virtual page meanwhile, and that
/// `translate` reports exactly the mappings made through this trait.
pub unsafe trait Platform: Sync {
    /// What the range and page locks disable while held: the kernel's `cli`, because
    /// an interrupt handler that allocates may need them; nothing on a host.
    type Interrupts: InterruptControl;

    /// Maps one 4 KiB page. `alloc_table_frame` supplies zeroed-on-use frames for any
    /// page-table level that does not exist yet (the kernel never frees those).
    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError>;

    /// Unmaps one page and returns the frame it was mapped to, or `None` if it was not
    /// mapped.
    fn unmap_page(&self, virt: usize) -> Option<PhysAddr>;

    /// The frame behind a mapped virtual page, if any.
    fn translate(&self, virt: usize) -> Option<PhysAddr>;

    /// Makes every `unmap_page` done so far by this CPU visible on every other CPU
    /// (a TLB shootdown), and returns when it is. The range allocator calls it after
    /// unmapping a range and before its frames go back to the page allocator and its
    /// addresses can be handed out again, so that no CPU keeps a stale translation of a
    /// page that is mapped anew or of a frame that is handed out anew. Called with the range
    /// lock held and interrupts off: an implementation must make progress while other
    /// CPUs spin on that lock with interrupts off (the kernel's spinning CPUs answer
    /// shootdowns in [`InterruptControl::relax`]). One CPU, or a host: nothing to do.
    fn flush_remote_tlbs(&self) {}

    /// A pointer through which `mm` reads and writes the kernel virtual address `virt`
    /// (the range cache keeps its descriptors in pages it mapped itself).
    ///
    /// Kernel virtual addresses are plain integers, so the default, an integer-to-pointer
    /// cast with exposed provenance, is right for the kernel. A hosted platform whose
    /// "kernel memory" is an allocation of its own overrides it to derive the pointer from
    /// that allocation (`ptr.with_addr(virt)`), which keeps Miri's provenance checks exact.
    /// The pointer's address is `virt`. Calling this is safe; using the pointer is only
    /// sound on a page mapped through this trait and owned by the caller.
    fn pointer_to(&self, virt: usize) -> *mut u8 {
        core::ptr::with_exposed_provenance_mut(virt)
    }
}

// SAFETY: every method forwards to `T`, so a reference upholds exactly the guarantees
// of the platform it points to.
unsafe impl<T: Platform + ?Sized> Platform for &T {
    type Interrupts = T::Interrupts;

    fn map_page(
        &self,
        virt: usize,
        phys: PhysAddr,
        alloc_table_frame: &mut dyn FnMut() -> Option<PhysAddr>,
    ) -> Result<(), MapError> {
        (**self).map_page(virt, phys, alloc_table_frame)
    }

    fn unmap_page(&self, virt: usize) -> Option<PhysAddr> {
        (**self).unmap_page(virt)
    }

    fn translate(&self, virt: usize) -> Option<PhysAddr> {
        (**self).translate(virt)
    }

    fn pointer_to(&self, virt: usize) -> *mut u8 {
        (**self).pointer_to(virt)
    }

    fn flush_remote_tlbs(&self) {
        (**self).flush_remote_tlbs();
    }
}

/// The per-CPU part of the seam: which CPU am I, and run something on every CPU.
///
/// The per-CPU object caches ([`crate::percpu`]) rest on one rule, the kernel's: a CPU's
/// cache is touched only by that CPU, with its interrupts off. "Interrupts off" is
/// [`InterruptControl::disable`]: in the kernel `cli`, hosted a per-CPU lock that the
/// thread standing for the CPU takes (`hosted_cpus.rs`), under loom the same lock made
/// of loom's atomics. So the code that runs is the same; only what "a CPU" is differs.
///
/// # Safety
///
/// 1. Between `Self::disable()` and the matching `restore`, `current_cpu()` returns the
///    same index, below [`CPUS`](Self::CPUS), and no other thread of execution runs with
///    that index and `Self` disabled at the same time.
/// 2. `on_each_cpu(f)` calls `f(cpu)` once for every CPU that has run or can run with
///    `Self` disabled, each call made *as* that CPU (with its interrupts disabled, and
///    `current_cpu()` returning `cpu`), and returns when all have returned. A CPU that
///    comes online during the call may be skipped: it has used no per-CPU cache yet.
pub unsafe trait CpuLocal: InterruptControl {
    /// CPU slots: `current_cpu()` is below this. 0 means no per-CPU guard exists (a
    /// lock that disables nothing), and the per-CPU layer stays off.
    const CPUS: usize;

    /// The calling CPU's index. Stable only while interrupts are off.
    fn current_cpu() -> usize;

    /// Runs `f` on every CPU, as that CPU with its interrupts off, and waits for all
    /// (2.4's `smp_call_function` with `wait`, plus the local call). Called with
    /// interrupts on, and with no lock held that `f` takes.
    fn on_each_cpu(f: &(dyn Fn(usize) + Sync));
}

/// Turning local interrupts off and back on: what a lock must disable in the kernel.
///
/// # Safety
///
/// Implementors guarantee that between `disable()` and the matching `restore()` the
/// current CPU runs no interrupt handler that can reach `mm` (the kernel: `cli`), or that
/// no such handler exists at all (a hosted process, [`NoInterrupts`]). Later layers (the
/// per-CPU caches) rely on this for memory safety, not just for freedom from deadlock.
pub unsafe trait InterruptControl {
    /// What `disable` saw, to be given back to `restore` (the kernel: RFLAGS.IF).
    type State: Copy;

    /// Disables local interrupts and returns the previous state.
    fn disable() -> Self::State;

    /// Puts back the state that the matching `disable` returned.
    ///
    /// # Safety
    ///
    /// `state` comes from the most recent `disable` on this CPU not yet restored (calls
    /// nest like brackets). Restoring anything else could turn interrupts on inside a
    /// section that relies on them being off.
    unsafe fn restore(state: Self::State);

    /// Called on every turn of a spin-wait with interrupts possibly off. The kernel
    /// answers TLB shootdowns here (see [`crate::Platform::flush_remote_tlbs`]), so that
    /// a CPU that waits for a lock with interrupts off never stalls the CPU holding it.
    fn relax() {
        core::hint::spin_loop();
    }

    /// Whether another CPU waiting for this one in `on_each_cpu` would be served: local
    /// interrupts are on, or no other CPU runs yet (for assertions, and to decide
    /// whether running out of memory may drain other CPUs' arrays). Where nothing can
    /// interrupt (a host thread), true.
    fn can_take_ipis() -> bool {
        true
    }

    /// Called by [`SpinLock::lock`](crate::sync::SpinLock::lock) (not `try_lock`) before
    /// it may spin: a lock type can assert here the state a waiter must be in
    /// ([`InterruptsOn`](crate::sync::InterruptsOn)).
    fn check_may_wait() {}
}

/// For hosted code and tests: there are no interrupts, nothing to disable.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInterrupts;

// SAFETY: a host thread runs no interrupt handler that can reach `mm`, so there is
// nothing to disable (`InterruptControl`'s second case). The kernel must not use this.
unsafe impl InterruptControl for NoInterrupts {
    type State = ();

    fn disable() {}

    unsafe fn restore(_state: ()) {}
}

// SAFETY: `CPUS` is 0: no per-CPU cache is ever made, so the other two are never used
// for one (and `on_each_cpu` has no CPU to run on).
unsafe impl CpuLocal for NoInterrupts {
    const CPUS: usize = 0;

    fn current_cpu() -> usize {
        0
    }

    fn on_each_cpu(_f: &(dyn Fn(usize) + Sync)) {}
}
