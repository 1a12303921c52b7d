//! Boot-time self-checks of the CPU and memory set-up. Each check states what it
//! proves; a failed check panics, which fails the run.

use x86_64::structures::paging::PageTableFlags as Flags;

use crate::memory::{KernelImage, PHYS_OFFSET, paging};
use crate::pvh::BootInfo;

pub fn run(boot: &BootInfo, guard_pages: &[u64]) {
    // The IDT, the entry stubs and `iretq` work: an exception is taken and
    // execution resumes after it.
    crate::interrupts::check_exception_round_trip();

    // The kernel sections carry the permissions the linker script promises.
    let image = KernelImage::get();
    let (_, text) = paging::translate(image.text.0).expect("kernel text is mapped");
    assert!(
        !text.contains(Flags::WRITABLE),
        "kernel text must be read-only"
    );
    assert!(
        !text.contains(Flags::NO_EXECUTE),
        "kernel text must be executable"
    );
    let (_, rodata) = paging::translate(image.rodata.0).expect("kernel rodata is mapped");
    assert!(
        !rodata.contains(Flags::WRITABLE),
        "kernel rodata must be read-only"
    );
    let (_, data) = paging::translate(image.data.0).expect("kernel data is mapped");
    assert!(
        data.contains(Flags::WRITABLE),
        "kernel data must be writable"
    );
    if crate::cpu::has_nx() {
        assert!(rodata.contains(Flags::NO_EXECUTE) && data.contains(Flags::NO_EXECUTE));
    }

    // Stack overflows and null pointers fault instead of corrupting memory.
    for &guard in guard_pages {
        assert!(
            paging::translate(guard).is_none(),
            "guard page {guard:#x} must be unmapped"
        );
    }
    assert!(paging::translate(0).is_none(), "address 0 must be unmapped");
    let trampoline = smp::trampoline::TRAMPOLINE_PHYS;
    let (found, flags) =
        paging::translate(trampoline).expect("the AP trampoline is identity-mapped");
    assert!(
        found == trampoline && !flags.contains(Flags::NO_EXECUTE),
        "and executable"
    );

    // Every RAM byte is reachable through the direct map, up to the last one.
    for region in boot.ram() {
        for phys in [region.start, region.end() - 1] {
            let (found, _) = paging::translate(PHYS_OFFSET + phys).expect("RAM is direct-mapped");
            assert_eq!(found, phys, "direct map must map P at PHYS_OFFSET + P");
        }
    }
    log::info!("self-checks: exceptions, section permissions, guard pages, direct map: ok");
}
