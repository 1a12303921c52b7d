//! The interrupt descriptor table, the entry stubs and the exception reports.
//!
//! Every one of the 256 vectors gets a small assembly stub (`trap_stubs`, 16 bytes
//! apart) that makes the stack look the same for all of them: the CPU pushes
//! SS, RSP, RFLAGS, CS, RIP and, for some exceptions, an error code; stubs of
//! vectors without an error code push a 0 in its place, then every stub pushes its
//! vector number and jumps to `trap_common`, which saves the general registers and
//! calls [`trap_dispatch`] with a pointer to the resulting [`TrapFrame`].
//!
//! Exceptions (vectors 0-31) are fatal (but for the self-check's deliberate
//! invalid opcode): the report names the
//! exception, the error code, RIP, RSP, CR2 for page faults, and the CPU, then the
//! run fails through `isa-debug-exit`. Vectors 32-255 go to a handler registered
//! with [`set_handler`] (the timer and IPIs, later), or are reported as unexpected.
//!
//! The stubs are plain `global_asm!`: `extern "x86-interrupt"` is not stable Rust.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{EntryOptions, InterruptDescriptorTable};

use crate::gdt::DOUBLE_FAULT_IST_INDEX;
use crate::qemu::{ExitCode, exit};
use crate::serial::emergency_print;

/// The machine state saved on the stack by the CPU and the entry stub.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Distance between consecutive stubs in `trap_stubs`.
const STUB_SIZE: u64 = 16;

core::arch::global_asm!(
    r#"
    .pushsection .text.trap_stubs, "ax"
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    /* Exceptions 8, 10-14, 17, 21, 29 and 30 push an error code; the others do not. */
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp trap_common
    .set vector, vector + 1
    .endr

trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    /* The CPU aligned RSP to 16 bytes before pushing its 5-word frame; with the
       error code, the vector and 15 registers, 22 words in all, RSP is 16-byte
       aligned again here, as the C ABI wants at a call. */
    movq %rsp, %rdi
    cld
    call {dispatch}
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp      /* drop the vector and the error code */
    iretq
    .popsection
    "#,
    dispatch = sym trap_dispatch,
    options(att_syntax)
);

unsafe extern "C" {
    /// The first of the 256 entry stubs defined above.
    static trap_stubs: u8;
}

/// A handler for an interrupt vector (32-255).
pub type Handler = fn(&mut TrapFrame);

/// Registered handlers, as `fn` pointers (0 = none).
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Set by [`check_exception_round_trip`] around its deliberate invalid opcode.
static EXPECTING_INVALID_OPCODE: AtomicBool = AtomicBool::new(false);

/// Raises an invalid-opcode exception on purpose and checks that the handler ran
/// and execution resumed after it: the IDT, the stubs, the saved registers and
/// `iretq` all work. (A fault, not `int3`: KVM on AMD hosts without next-RIP
/// saving emulates software interrupts, and nested set-ups fail to.)
pub fn check_exception_round_trip() {
    EXPECTING_INVALID_OPCODE.store(true, Ordering::Release);
    // SAFETY: `ud2` raises #UD; the dispatcher sees the flag, skips the 2-byte
    // instruction and returns here with every register restored.
    unsafe { core::arch::asm!("ud2") };
    assert!(
        !EXPECTING_INVALID_OPCODE.load(Ordering::Acquire),
        "the invalid-opcode handler did not run"
    );
}

/// Builds the IDT (first call) and loads it on the calling CPU.
pub fn load() {
    IDT.call_once(build_idt).load();
}

/// Loads an IDT with no entries at all, so that the next exception becomes a
/// triple fault (for the test of the host's triple-fault report only).
pub fn load_empty_idt() {
    let empty = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::zero(),
    };
    // SAFETY: an empty IDT is a valid IDT; every exception after this resets the
    // machine, which is exactly what the caller asks for.
    unsafe { x86_64::instructions::tables::lidt(&empty) };
}

/// Registers `handler` for an interrupt vector (32-255).
#[allow(
    dead_code,
    reason = "the APIC timer and IPIs register here (smp issue)"
)]
pub fn set_handler(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors 0-31 are CPU exceptions");
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

fn build_idt() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    let stubs = &raw const trap_stubs as u64;
    for vector in 0..=255u8 {
        let stub = VirtAddr::new(stubs + vector as u64 * STUB_SIZE);
        let Some(options) = set_entry(&mut idt, vector, stub) else {
            continue; // reserved vector: leave the entry not-present
        };
        if vector == 8 {
            // SAFETY: IST slot DOUBLE_FAULT_IST_INDEX holds a dedicated, guarded
            // stack in every CPU's TSS (gdt.rs), loaded before interrupts can occur.
            unsafe { options.set_stack_index(DOUBLE_FAULT_IST_INDEX) };
        }
    }
    idt
}

/// Points IDT entry `vector` at `stub`; `None` for the reserved vectors.
fn set_entry(
    idt: &mut InterruptDescriptorTable,
    vector: u8,
    stub: VirtAddr,
) -> Option<&mut EntryOptions> {
    // SAFETY: (for every arm) `stub` is the entry stub of this very vector, which
    // saves all registers, calls the dispatcher and returns with `iretq`, adjusting
    // for the error code when the CPU pushes one.
    let options = unsafe {
        match vector {
            8 => idt.double_fault.set_handler_addr(stub),
            10 => idt.invalid_tss.set_handler_addr(stub),
            11 => idt.segment_not_present.set_handler_addr(stub),
            12 => idt.stack_segment_fault.set_handler_addr(stub),
            13 => idt.general_protection_fault.set_handler_addr(stub),
            14 => idt.page_fault.set_handler_addr(stub),
            17 => idt.alignment_check.set_handler_addr(stub),
            18 => idt.machine_check.set_handler_addr(stub),
            21 => idt.cp_protection_exception.set_handler_addr(stub),
            29 => idt.vmm_communication_exception.set_handler_addr(stub),
            30 => idt.security_exception.set_handler_addr(stub),
            15 | 22..=27 | 31 => return None,
            other => idt[other].set_handler_addr(stub),
        }
    };
    Some(options)
}

/// Called by `trap_common` for every interrupt and exception.
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as usize;
    if vector == 6 && EXPECTING_INVALID_OPCODE.swap(false, Ordering::AcqRel) {
        // The self-check's deliberate `ud2` (2 bytes): step over it and resume.
        frame.rip += 2;
        return;
    }
    if vector < 32 {
        report_exception(frame);
    }
    let handler = HANDLERS[vector].load(Ordering::Acquire);
    if handler == 0 {
        emergency_print(format_args!("\nUNEXPECTED INTERRUPT: vector {vector}\n"));
        report_exception(frame);
    }
    // SAFETY: only `set_handler` stores non-zero values, and it stores `Handler`s.
    let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
    // Counted so that the rules of `smp/src/ipi.rs` can tell a handler (which may make
    // and serve cross-CPU calls with interrupts off) from code that turned them off.
    smp::percpu::enter_interrupt();
    handler(frame);
    smp::percpu::leave_interrupt();
}

/// Prints what went wrong and fails the run.
fn report_exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector;
    emergency_print(format_args!(
        "\nEXCEPTION: {} (vector {vector}) on CPU with APIC ID {}\n",
        exception_name(vector),
        crate::cpu::apic_id()
    ));
    emergency_print(format_args!(
        "  error code {:#x}  RIP {:#018x}  CS {:#x}  RFLAGS {:#x}  RSP {:#018x}\n",
        frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp
    ));
    if vector == 14 {
        let code = frame.error_code;
        emergency_print(format_args!(
            "  page fault at CR2={:#018x}: {} {} in {} mode{}\n",
            Cr2::read_raw(),
            if code & 1 != 0 {
                "protection violation on"
            } else {
                "not-present page on"
            },
            if code & 0x10 != 0 {
                "instruction fetch"
            } else if code & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if code & 4 != 0 { "user" } else { "kernel" },
            if code & 8 != 0 {
                " (reserved bit set in a page-table entry)"
            } else {
                ""
            },
        ));
    }
    if vector == 8 {
        emergency_print(format_args!(
            "  (a double fault from kernel code is most often a stack overflow into a guard page)\n"
        ));
    }
    emergency_print(format_args!("kernel: FAILED: unhandled exception\n"));
    exit(ExitCode::Failure)
}

fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection exception (#CP)",
        28 => "hypervisor injection exception (#HV)",
        29 => "VMM communication exception (#VC)",
        30 => "security exception (#SX)",
        32.. => "interrupt",
        _ => "reserved exception",
    }
}
