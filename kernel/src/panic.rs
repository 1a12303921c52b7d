//! The panic handler: say what, where and on which CPU, then fail the run.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::qemu::{ExitCode, exit};
use crate::serial::emergency_print;

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: the first report is what matters.
        exit(ExitCode::Failure);
    }
    let cpu = crate::cpu::apic_id();
    match info.location() {
        Some(location) => emergency_print(format_args!(
            "\nPANIC on CPU with APIC ID {cpu} at {}:{}:{}: {}\n",
            location.file(),
            location.line(),
            location.column(),
            info.message()
        )),
        None => emergency_print(format_args!(
            "\nPANIC on CPU with APIC ID {cpu}: {}\n",
            info.message()
        )),
    }
    emergency_print(format_args!("kernel: FAILED: panic\n"));
    exit(ExitCode::Failure)
}
