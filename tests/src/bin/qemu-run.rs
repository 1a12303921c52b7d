//! `qemu-run`: build the kernel and boot it in QEMU with the serial console on the
//! terminal. This is what `scripts/run` calls; see `--help`.

use std::process::ExitCode;
use std::time::Duration;

use kernel_tests::{Accel, Machine, Profile, QemuConfig, build_kernel, run};

const USAGE: &str = "\
usage: scripts/run [options] [-- qemu arguments...]

Builds the kernel and boots it in QEMU (serial console here, no window).

options:
  --smp N            number of CPUs (default 4)
  --mem SIZE         guest RAM, e.g. 64M, 512M, 8G (default 128M)
  --machine pc|q35   machine type (default pc)
  --no-kvm           use TCG even when /dev/kvm is usable
  --release          build the kernel with optimizations
  --debug            build the kernel without them (the default)
  --append TEXT      the kernel command line (e.g. \"loglevel=debug\")
  --stress MS        run the SMP allocator stress this long (kernel default 2000;
                     0 skips it): adds stress=MS to the command line
  --percpu on|off    per-CPU object caches on (default) or off: adds percpu=...
  --timeout SECS     give up after this long (default: 120, plus the stress, plus
                     45 per GiB of RAM under KVM, whose first touch of each guest
                     page is slow on nested virtualisation)
  --gdb              wait for a debugger on localhost:1234 (no time-out)
  -h, --help         this text
  -- ARGS...         everything after -- goes to QEMU unchanged

exit status: 0 the kernel reported success, 1 it reported a failure (panic,
exception), 2 triple fault, 3 time-out, 4 QEMU failed, 64 bad usage.";

struct Args {
    config: QemuConfig,
    profile: Profile,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut config = QemuConfig::new(Default::default());
    let mut profile = Profile::Debug;
    let mut timeout = None;
    let mut stress_ms: u64 = 2000;
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--smp" => {
                config.smp = value("--smp")?
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or("--smp takes a number of CPUs (1 or more)")?;
            }
            "--mem" => config.mem = value("--mem")?,
            "--machine" => {
                let name = value("--machine")?;
                config.machine =
                    Machine::parse(&name).ok_or(format!("unknown machine {name:?}: pc or q35"))?;
            }
            "--no-kvm" => config.accel = Some(Accel::Tcg),
            "--release" => profile = Profile::Release,
            "--debug" => profile = Profile::Debug,
            "--append" => config.append = value("--append")?,
            "--stress" => {
                stress_ms = value("--stress")?
                    .parse()
                    .map_err(|_| "--stress takes milliseconds")?;
                words.push(format!("stress={stress_ms}"));
            }
            "--percpu" => match value("--percpu")?.as_str() {
                on_off @ ("on" | "off") => words.push(format!("percpu={on_off}")),
                _ => return Err("--percpu takes on or off".into()),
            },
            "--timeout" => {
                let secs: u64 = value("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout takes seconds")?;
                timeout = Some(Duration::from_secs(secs));
            }
            "--gdb" => config.gdb = true,
            "--" => {
                config.extra_args = args.by_ref().collect();
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    for word in words {
        if !config.append.is_empty() {
            config.append.push(' ');
        }
        config.append.push_str(&word);
    }
    config.timeout = timeout.unwrap_or_else(|| {
        let kvm_secs = match config.resolved_accel() {
            Accel::Kvm => 45 * mem_mib(&config.mem).div_ceil(1024),
            Accel::Tcg => 0,
        };
        Duration::from_secs(120 + stress_ms.div_ceil(1000) + kvm_secs)
    });
    Ok(Some(Args { config, profile }))
}

/// QEMU's `-m` size in MiB: a number with an optional K, M, G or T suffix (MiB
/// without one); 128 when it cannot be read (QEMU will complain about it itself).
fn mem_mib(size: &str) -> u64 {
    let size = size.trim();
    let (digits, unit) = match size.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => size.split_at(at),
        None => (size, "M"),
    };
    let Ok(number) = digits.parse::<u64>() else {
        return 128;
    };
    match unit.to_ascii_uppercase().trim_end_matches('B') {
        "K" => number.div_ceil(1024),
        "M" | "" => number,
        "G" => number * 1024,
        "T" => number * 1024 * 1024,
        _ => 128,
    }
}

fn main() -> ExitCode {
    let Args {
        mut config,
        profile,
    } = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("scripts/run: {message}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    config.kernel = match build_kernel(profile) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("scripts/run: {error}");
            return ExitCode::from(4);
        }
    };
    let accel = config.resolved_accel();
    let why = match (accel, config.accel) {
        (Accel::Kvm, _) => "/dev/kvm is usable",
        (Accel::Tcg, Some(_)) => "--no-kvm",
        (Accel::Tcg, None) if std::path::Path::new("/dev/kvm").exists() => {
            "/dev/kvm is not usable by this user"
        }
        (Accel::Tcg, None) => "no /dev/kvm",
    };
    eprintln!(
        "scripts/run: booting {} on QEMU {} with {} CPUs, {} RAM, {accel} ({why})",
        config.kernel.display(),
        config.machine.qemu_name(),
        config.smp,
        config.mem,
    );
    if config.gdb {
        eprintln!(
            "scripts/run: waiting for gdb: gdb {} -ex 'target remote localhost:1234'",
            config.kernel.display()
        );
    }
    let result = match run(&config, true) {
        Ok(result) => result,
        Err(error) => {
            eprintln!("scripts/run: {error}");
            return ExitCode::from(4);
        }
    };
    eprintln!(
        "scripts/run: {} after {:.2} s ({})",
        result.outcome,
        result.elapsed.as_secs_f64(),
        result.accel
    );
    ExitCode::from(result.outcome.exit_status() as u8)
}
