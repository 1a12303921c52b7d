//! Starting an application processor (AP): the trampoline and INIT-SIPI-SIPI.
//!
//! An AP wakes up from a start-up IPI (SIPI) in 16-bit real mode, at address
//! `vector << 12`, with CS = `vector << 8` and IP = 0. It knows nothing: no stack,
//! no page tables, no idea which CPU it is. The trampoline below takes it to long
//! mode with the kernel's own page tables and calls Rust on its own stack:
//!
//! ```text
//! real mode (16-bit)  cli; DS = CS; lgdt (a GDT inside the trampoline page);
//!                     CR0.PE = 1; far jump -> 32-bit code segment
//! protected (32-bit)  CR4.PAE = 1; CR3 = kernel PML4 (below 4 GiB); EFER.LME (and
//!                     NXE, as on the BSP) = 1; CR0.PG|WP = 1; far jump -> 64-bit
//! long mode (64-bit)  rsp = the AP's stack; rdi = its argument; jump to its entry
//! ```
//!
//! The code is position-dependent only through `TRAMPOLINE_PHYS`: it is linked
//! inside the kernel image but copied to that page (below 1 MiB and page-aligned,
//! as a SIPI vector demands), so every absolute address in it is computed as
//! `TRAMPOLINE_PHYS + (label - start)`. The kernel identity-maps that page as
//! executable, because the instruction that turns paging on is fetched from it.
//!
//! The parameters (CR3, EFER bits, stack, entry, argument) sit in a data block at
//! the end of the page, written by the BSP before each start. APs are started one
//! at a time: the BSP waits for each to report online (or times out) before it
//! reuses the block for the next. A ticket in the block names the AP it is for (APIC
//! ID + 1); the AP claims it with a compare-and-swap before it reads anything else, and
//! the BSP revokes it on a time-out. So an AP that starts after its time-out finds a
//! ticket that is not its own and parks, instead of running on the next AP's stack
//! with the next AP's index.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::lapic::LocalApic;
use crate::timer;

/// Physical address the trampoline is copied to; its SIPI vector is `0x08`.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

core::arch::global_asm!(
    r#"
    .pushsection .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start, ap_trampoline_end, ap_trampoline_params
    .code16
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    /* The GDT pointer is addressed relative to DS = CS = the trampoline page. */
    lgdtl (ap_gdt_pointer - ap_trampoline_start)
    /* CR0.PE (bit 0): protected mode. */
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, ${phys} + (ap_protected_mode - ap_trampoline_start)

    .code32
ap_protected_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* Which CPU am I? CPUID leaf 0xB gives the x2APIC ID in EDX (when the leaf exists
       and is valid: EBX != 0); otherwise leaf 1 gives the initial APIC ID in EBX[31:24]. */
    xorl %eax, %eax
    cpuid
    cmpl $0xb, %eax
    jb 2f
    movl $0xb, %eax
    xorl %ecx, %ecx
    cpuid
    testl %ebx, %ebx
    jz 2f
    movl %edx, %esi
    jmp 3f
2:  movl $1, %eax
    cpuid
    shrl $24, %ebx
    movl %ebx, %esi
    /* Claim the parameter block: its ticket must be (my APIC ID + 1), and becomes
       0xffffffff (claimed). A late AP, whose start the BSP gave up (revoking its
       ticket) and whose block may now hold the next AP's stack and index, finds another
       ticket and parks here, touching nothing. */
3:  leal 1(%esi), %eax
    movl $0xffffffff, %edx
    lock cmpxchgl %edx, {phys} + (ap_param_ticket - ap_trampoline_start)
    jne ap_park
    /* CR4.PAE (bit 5): the 64-bit page-table format. */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    /* CR3: the kernel's PML4, the same tables the BSP runs on. */
    movl {phys} + (ap_param_cr3 - ap_trampoline_start), %eax
    movl %eax, %cr3
    /* EFER (MSR 0xC0000080): LME (bit 8) and, if the BSP uses it, NXE (bit 11). */
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    orl {phys} + (ap_param_efer - ap_trampoline_start), %eax
    wrmsr
    /* CR0.PG (bit 31) and CR0.WP (bit 16): paging on, long mode active. CR0.CD
       (bit 30) and CR0.NW (bit 29), set by INIT, are cleared: caches on. */
    movl %cr0, %eax
    andl $~((1 << 30) | (1 << 29)), %eax
    orl $((1 << 31) | (1 << 16)), %eax
    movl %eax, %cr0
    ljmpl $0x18, ${phys} + (ap_long_mode - ap_trampoline_start)

    .code64
ap_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq {phys} + (ap_param_stack - ap_trampoline_start), %rsp
    movq {phys} + (ap_param_argument - ap_trampoline_start), %rdi
    movq {phys} + (ap_param_entry - ap_trampoline_start), %rax
    xorl %ebp, %ebp
    /* A call, not a jump, keeps the stack aligned as a function entry expects. */
    call *%rax
1:  cli
    hlt
    jmp 1b

    .code32
ap_park:
    cli
    hlt
    jmp ap_park

    .balign 8
ap_gdt:
    .quad 0                     /* null */
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code, flat */
    .quad 0x00cf92000000ffff    /* 0x10: data, flat */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
ap_gdt_pointer:
    .word 4 * 8 - 1
    .long {phys} + (ap_gdt - ap_trampoline_start)

    .balign 8
ap_trampoline_params:
ap_param_cr3:      .long 0
ap_param_efer:     .long 0
ap_param_stack:    .quad 0
ap_param_entry:    .quad 0
ap_param_argument: .quad 0
ap_param_ticket:   .long 0
ap_param_pad:      .long 0
ap_trampoline_end:
    .code64
    .popsection
    "#,
    phys = const TRAMPOLINE_PHYS,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_params: u8;
}

/// The parameter block at the end of the trampoline (layout fixed by the asm).
#[repr(C)]
struct Params {
    cr3: u32,
    efer_bits: u32,
    stack_top: u64,
    entry: u64,
    argument: u64,
    /// `apic_id + 1`: the block is for that AP; 0: for none; `CLAIMED`: taken.
    ticket: AtomicU32,
    _pad: u32,
}

/// The ticket of a parameter block an AP has claimed.
const CLAIMED: u32 = u32::MAX;

/// What an AP needs to reach Rust.
#[derive(Clone, Copy, Debug)]
pub struct ApStart {
    /// Physical address of the kernel PML4; must be below 4 GiB (loaded in 32-bit mode).
    pub cr3: u32,
    /// EFER bits to set besides LME (NXE when the BSP uses no-execute pages).
    pub efer_bits: u32,
    pub stack_top: u64,
    /// `extern "C" fn(argument: u64) -> !`
    pub entry: u64,
    pub argument: u64,
}

/// Copies the trampoline to `TRAMPOLINE_PHYS`, which the caller maps at `page`.
///
/// # Safety
///
/// `page` must be a writable mapping of the physical page `TRAMPOLINE_PHYS`, which
/// nothing else uses.
pub unsafe fn install(page: *mut u8) {
    let start = &raw const ap_trampoline_start;
    let len = &raw const ap_trampoline_end as usize - start as usize;
    assert!(len <= 4096, "the trampoline fits in its page");
    // SAFETY: the source is the trampoline in the kernel image; the destination is
    // the caller's page, which does not overlap it.
    unsafe { core::ptr::copy_nonoverlapping(start, page, len) };
}

/// How one AP start went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartResult {
    /// The AP reported in after this many microseconds.
    Online { micros: u64 },
    /// It did not report within the time-out.
    TimedOut,
}

/// Starts the AP with `apic_id` and waits until it sets `online` (its entry code
/// does so), for at most `timeout_us`.
///
/// The INIT-SIPI-SIPI sequence of the Intel SDM (vol. 3, 8.4.4): INIT, wait
/// 10 ms; SIPI, wait 200 us; a second SIPI, for CPUs that missed the first; all
/// delays measured on the calibrated TSC.
///
/// # Safety
///
/// The trampoline must be installed at `TRAMPOLINE_PHYS` (mapped at `page`),
/// identity-mapped executable in the tables of `start.cr3`; `start` must describe
/// a stack no one uses and an entry that never returns; the target must not be
/// running kernel code.
pub unsafe fn start_ap(
    lapic: &mut LocalApic,
    page: *mut u8,
    apic_id: u32,
    start: ApStart,
    online: &AtomicBool,
    timeout_us: u64,
) -> StartResult {
    let offset = &raw const ap_trampoline_params as usize - &raw const ap_trampoline_start as usize;
    let block = page.wrapping_add(offset).cast::<Params>();
    // SAFETY: the parameter block lies inside the installed trampoline page, aligned
    // (8, by the asm); `ticket` is only accessed atomically, by us and by APs.
    let ticket = unsafe { &(*block).ticket };
    // The previous block was claimed or revoked, so no AP uses the fields now: an AP
    // touches them only after claiming a ticket that names it.
    debug_assert!(matches!(ticket.load(Ordering::Acquire), 0 | CLAIMED));
    ticket.store(0, Ordering::Relaxed);
    // SAFETY: as above; the fields are plain memory that no AP reads until the ticket
    // names it (released below).
    unsafe {
        (&raw mut (*block).cr3).write_volatile(start.cr3);
        (&raw mut (*block).efer_bits).write_volatile(start.efer_bits);
        (&raw mut (*block).stack_top).write_volatile(start.stack_top);
        (&raw mut (*block).entry).write_volatile(start.entry);
        (&raw mut (*block).argument).write_volatile(start.argument);
    }
    ticket.store(apic_id + 1, Ordering::Release);

    let started = timer::rdtsc();
    if timeout_us == 0 {
        // The test of late APs (`ap_timeout_us=0`): give up before the AP can start, as
        // a BSP whose time-out ran out would, but every time. Under TCG an AP claims its
        // ticket within microseconds of the SIPI, before a 1 us time-out is looked at,
        // so only revoking first makes it late on an idle host too. It must park.
        ticket.store(0, Ordering::Release);
    }
    // A time-out shorter than the wait after the SIPI shortens that wait too.
    let after_sipi_us = timeout_us.min(200);
    // SAFETY: the caller guarantees the target is not running kernel code and
    // that the trampoline is in place.
    unsafe {
        lapic.send_init(apic_id);
        timer::delay_us(10_000);
        lapic.send_startup(apic_id, (TRAMPOLINE_PHYS >> 12) as u8);
        timer::delay_us(after_sipi_us);
        if !online.load(Ordering::Acquire) {
            lapic.send_startup(apic_id, (TRAMPOLINE_PHYS >> 12) as u8);
        }
    }
    if timeout_us == 0 {
        return StartResult::TimedOut;
    }
    let mut deadline = timer::deadline_after_us(timeout_us);
    while !online.load(Ordering::Acquire) {
        if timer::expired(deadline) {
            // Revoke the ticket, unless the AP claimed it just now: then it runs on its
            // own stack with its own index, and will come online; wait once more.
            match ticket.compare_exchange(apic_id + 1, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return StartResult::TimedOut,
                Err(_) => deadline = timer::deadline_after_us(timeout_us),
            }
        }
        core::hint::spin_loop();
    }
    StartResult::Online {
        micros: timer::tsc_to_ns(timer::rdtsc() - started) / 1000,
    }
}
