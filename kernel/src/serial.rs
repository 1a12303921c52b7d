//! The serial console (COM1) and the kernel's log.
//!
//! Everything the kernel says goes to COM1, which QEMU connects to the terminal
//! (`scripts/run`) or to a pipe (the boot tests). `print!`/`println!` write raw
//! text; the `log` crate's macros (`info!`, `warn!`, ...) add the level, filtered by
//! the `loglevel=` command-line option.
//!
//! The port sits behind an interrupt-safe spinlock. A fault or panic can strike while that lock is
//! held (even by the same CPU), so the crash paths use [`emergency_print`], which
//! writes to the port without taking the lock: a report that interleaves with a
//! half-written line beats a report that never appears.

use core::fmt::{self, Write};

use crate::cpu::IrqLock;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

/// I/O port base of the first serial port on every PC.
const COM1: u16 = 0x3f8;

/// Interrupt handlers may log, so the port is taken with interrupts off.
static SERIAL: IrqLock<Option<Uart16550Tty<PioBackend>>> = IrqLock::new(None);

/// Programs COM1 (115200 8N1) and installs the kernel's logger.
pub fn init(level: log::LevelFilter) {
    // SAFETY: 0x3f8..0x400 are COM1's registers on every PC, and nothing else in
    // the kernel drives them (the emergency path only writes the data register).
    let port = unsafe { Uart16550Tty::new_port(COM1, Config::default()) };
    *SERIAL.lock() = port.ok();
    log::set_logger(&LOGGER).expect("the logger is installed once, at boot");
    log::set_max_level(level);
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    if let Some(port) = SERIAL.lock().as_mut() {
        // Writing to the UART cannot fail; a formatting error has nowhere to go.
        let _ = port.write_fmt(args);
    }
}

/// Writes to COM1 without taking the console lock: for panics and faults only.
pub fn emergency_print(args: fmt::Arguments<'_>) {
    let _ = EmergencyWriter.write_fmt(args);
}

struct EmergencyWriter;

impl Write for EmergencyWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        use x86_64::instructions::port::Port;
        let mut data = Port::<u8>::new(COM1);
        let mut line_status = Port::<u8>::new(COM1 + 5);
        for byte in text.bytes() {
            for byte in if byte == b'\n' {
                [b'\r', b'\n']
            } else {
                [byte, 0]
            } {
                if byte == 0 {
                    continue;
                }
                // SAFETY: COM1's line-status and data registers; reading the status
                // and writing a byte have no effect beyond transmitting it.
                unsafe {
                    while line_status.read() & 0x20 == 0 {
                        core::hint::spin_loop();
                    }
                    data.write(byte);
                }
            }
        }
        Ok(())
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::serial::_print(format_args!($($arg)*)));
}

/// Prints to the serial console, with a newline.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl log::Log for SerialLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            _print(format_args!("[{:<5}] {}\n", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}
