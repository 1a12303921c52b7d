//! The first instructions: from QEMU's PVH hand-off to Rust in long mode.
//!
//! QEMU loads the ELF at its physical addresses and, because the image carries a
//! Xen `PHYS32_ENTRY` note, enters `pvh_start32` the way the Xen PVH boot ABI says:
//!
//! * 32-bit protected mode, paging off, flat 4 GiB code and data segments;
//! * interrupts off (`EFLAGS.IF = 0`), A20 on;
//! * `ebx` = physical address of the `hvm_start_info` structure (see `pvh.rs`).
//!
//! To reach 64-bit code the CPU needs paging in "IA-32e" form, so this file builds
//! the smallest page tables that work (the first 1 GiB identity-mapped with 2 MiB
//! pages), turns on long mode, and jumps to Rust on the boot stack. Rust then builds
//! the real page tables (`memory/paging.rs`) and throws these away.
//!
//! Every control-register write is commented with the bit it sets and why.

use crate::stack::GuardedStack;

/// The stack the bootstrap processor runs Rust on until it switches to nothing else:
/// the BSP keeps it for the life of the kernel. Its lowest page is the guard page.
#[unsafe(no_mangle)]
pub static BOOT_STACK: GuardedStack<{ 64 * 1024 }> = GuardedStack::new();

// The Xen ELF note that makes QEMU treat this ELF as a PVH kernel.
//
// An ELF note is: namesz, descsz, type (4 bytes each), the name padded to 4 bytes,
// then the descriptor. XEN_ELFNOTE_PHYS32_ENTRY (18) carries the physical address
// of the 32-bit entry point. QEMU reads the descriptor as a pointer-sized value, so
// it is emitted as 8 bytes.
core::arch::global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4             /* namesz: "Xen\0" */
    .long 8             /* descsz */
    .long 18            /* type: XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4
    .popsection
    "#,
    options(att_syntax)
);

// The boot page tables: one PML4, one PDPT and one page directory, 4 KiB each and
// 4 KiB aligned as the MMU demands. They live in .bss, which QEMU's loader zeroes.
core::arch::global_asm!(
    r#"
    .pushsection .bss.boot_page_tables, "aw", @nobits
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4096
    .popsection

    /* A temporary GDT with just what long mode needs: null, 64-bit code, data. */
    .pushsection .rodata.boot_gdt, "a"
    .balign 16
boot_gdt:
    .quad 0                     /* 0x00: the mandatory null descriptor */
    .quad 0x00af9a000000ffff    /* 0x08: code, present, ring 0, L=1 (64-bit) */
    .quad 0x00cf92000000ffff    /* 0x10: data, present, ring 0, writable */
boot_gdt_end:
    .balign 4
    .word 0
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .popsection
    "#,
    options(att_syntax)
);

// The 32-bit entry point and the switch to long mode.
core::arch::global_asm!(
    r#"
    .pushsection .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    /* Keep the start-info pointer in edi: it becomes the first argument (rdi) of
       the Rust entry point. Nothing below touches edi. */
    movl %ebx, %edi

    /* PML4[0] -> PDPT and PDPT[0] -> PD, each entry Present (bit 0) | Writable
       (bit 1). The upper halves of the 8-byte entries stay zero from .bss. */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt

    /* PD[i] -> the 2 MiB page at i * 2 MiB: Present | Writable | Page Size (bit 7).
       512 entries identity-map the first 1 GiB, which holds the kernel image, the
       boot stack and everything the PVH loader handed over. */
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(, %ecx, 8)
    incl %ecx
    cmpl $512, %ecx
    jne 1b

    /* CR4.PAE (bit 5): long mode requires the 64-bit (PAE) page-table format. */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4

    /* CR3: physical address of the top-level table. */
    movl $boot_pml4, %eax
    movl %eax, %cr3

    /* EFER (MSR 0xC0000080) bit 8, LME: long mode enable. It becomes active (LMA)
       when paging is turned on next. */
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr

    /* CR0.PG (bit 31): paging on, which with LME set enters IA-32e compatibility
       mode. CR0.WP (bit 16): the kernel too must respect read-only pages. CR0.PE
       (bit 0) is already set by the PVH loader. CR0.CD (bit 30) and CR0.NW (bit 29)
       are cleared: they are set at CPU reset and no firmware ran to clear them, and
       with them every memory access bypasses the caches (KVM honours that). */
    movl %cr0, %eax
    andl $~((1 << 30) | (1 << 29)), %eax
    orl $((1 << 31) | (1 << 16)), %eax
    movl %eax, %cr0

    /* Load a GDT with a 64-bit code segment and far-jump into it: the jump loads
       CS with the L bit set, and from the target on the CPU runs 64-bit code. */
    lgdt boot_gdt_pointer
    ljmpl $0x08, $long_mode_entry

    .code64
long_mode_entry:
    /* Data segment registers are ignored for addressing in 64-bit mode, but SS
       must hold a valid selector (or null) and the others must not be stale. */
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs

    /* The boot stack grows down from the end of BOOT_STACK. */
    leaq BOOT_STACK(%rip), %rsp
    addq ${stack_size}, %rsp

    /* Writes to edi zero-extended into rdi in 32-bit code, but the upper halves of
       registers are architecturally undefined across the mode switch: clear them. */
    movl %edi, %edi
    xorl %ebp, %ebp
    call {rust_entry}
2:  hlt
    jmp 2b
    .popsection
    "#,
    stack_size = const core::mem::size_of::<GuardedStack<{ 64 * 1024 }>>(),
    rust_entry = sym crate::kernel_entry,
    options(att_syntax)
);
