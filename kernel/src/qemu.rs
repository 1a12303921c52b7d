//! Leaving QEMU with a status the host can read.
//!
//! QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`)
//! ends the emulator when the guest writes to its port, with exit status
//! `(value << 1) | 1`. Status 0 is therefore impossible, so the host runner maps
//! [`ExitCode::Success`] (status 33) to 0 and [`ExitCode::Failure`] (35) to 1.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

/// Ends the QEMU run. If the device is missing (the kernel was started some other
/// way), the CPU halts with interrupts off instead.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: writing to the debug-exit port stops the virtual machine; on a machine
    // without the device, port 0xf4 is unused and the write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    halt_forever()
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}
