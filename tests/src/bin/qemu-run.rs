//! `qemu-run`: build the kernel and boot it in QEMU with the serial console on the
//! terminal. This is what `scripts/run` calls; see `--help`.

use std::process::ExitCode;
use std::time::Duration;

use kernel_tests::{
    Accel, MIN_MEM_BYTES, Machine, Profile, QemuConfig, build_kernel, default_accel,
    parse_mem_size, run,
};

const USAGE: &str = "\
usage: scripts/run [options] [-- qemu arguments...]

Builds the kernel and boots it in QEMU (serial console here, no window).

options:
  --smp N            number of CPUs (default 4)
  --mem SIZE         guest RAM, e.g. 64M, 512M, 8G (default 128M): at least 16M,
                     at most 500G on pc and 330G on q35 (the kernel's page
                     descriptors must fit below 4 GiB); above 8G QEMU does not
                     reserve it up front (the kernel touches about 2% of it)
  --machine pc|q35   machine type (default pc)
  --kvm              use KVM even where it would not run ring 0 natively (kvm_pvm)
  --no-kvm           use TCG even where KVM runs natively (the default choice: KVM
                     only with vmx/svm in /proc/cpuinfo and no kvm_pvm; the run
                     says in one line which it chose and why)
  --release          build the kernel with optimizations
  --debug            build the kernel without them (the default)
  --append TEXT      the kernel command line (e.g. \"loglevel=debug\")
  --stress MS        run the SMP allocator stress this long (kernel default 2000;
                     0 skips it): adds stress=MS to the command line
  --percpu on|off    per-CPU object caches on (default) or off: adds percpu=...
  --timeout SECS     give up after this long (default: 120, plus the stress; ten
                     times that under a forced --kvm on kvm_pvm, which emulates
                     every ring-0 instruction)
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
            "--kvm" => config.accel = Some(Accel::Kvm),
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
    let mem_bytes = parse_mem_size(&config.mem).ok_or(format!(
        "--mem takes a size such as 512M or 8G, not {:?}",
        config.mem
    ))?;
    let most = config.machine.max_mem_bytes();
    if !(MIN_MEM_BYTES..=most).contains(&mem_bytes) {
        return Err(format!(
            "--mem {} is out of range: the kernel needs at least {}M (its image, page \
             tables and descriptors, and 4 MiB of heap), and on {} at most {}G (its page \
             descriptors, 24 bytes per 4 KiB of RAM, must fit in the RAM below 4 GiB)",
            config.mem,
            MIN_MEM_BYTES >> 20,
            config.machine.qemu_name(),
            most >> 30
        ));
    }
    for word in words {
        if !config.append.is_empty() {
            config.append.push(' ');
        }
        config.append.push_str(&word);
    }
    config.timeout = timeout.unwrap_or_else(|| {
        let secs = 120 + stress_ms.div_ceil(1000);
        // KVM asked for where it does not run ring 0 natively (kvm_pvm): every kernel
        // instruction is emulated, about ten times slower than TCG.
        let forced = config.accel == Some(Accel::Kvm) && default_accel().0 == Accel::Tcg;
        Duration::from_secs(if forced { 10 * secs } else { secs })
    });
    Ok(Some(Args { config, profile }))
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
    let why = match config.accel {
        Some(Accel::Kvm) => "--kvm",
        Some(Accel::Tcg) => "--no-kvm",
        None => default_accel().1,
    };
    // A -smp among QEMU's own arguments (after --) overrides --smp.
    let cpus = config
        .effective_smp()
        .map_or_else(|| "an unknown number of".into(), |n| n.to_string());
    eprintln!(
        "scripts/run: booting {} on QEMU {} with {cpus} CPUs, {} RAM, {accel} ({why})",
        config.kernel.display(),
        config.machine.qemu_name(),
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
