//! Host-side harness: build the kernel, boot it in QEMU, read what it says.
//!
//! One implementation serves both `scripts/run` (through the `qemu-run` binary,
//! which echoes the serial console to the terminal) and the boot tests in
//! `tests/tests/` (which capture the log and check it). It owns the QEMU command
//! line, the choice between KVM and TCG, the time-out, and the meaning of QEMU's
//! exit status:
//!
//! | QEMU status | meaning |
//! |---|---|
//! | 33 = (0x10 << 1) \| 1 | the kernel wrote `Success` to `isa-debug-exit` |
//! | 35 = (0x11 << 1) \| 1 | the kernel wrote `Failure` (a panic or an exception) |
//! | 0 | the guest reset without reporting: with `-no-reboot` that is a triple fault |
//! | killed by the harness | no verdict before the time-out |

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{fmt, fs, io, thread};

/// QEMU's status when the kernel reports success (`(0x10 << 1) | 1`).
pub const QEMU_SUCCESS: i32 = 33;
/// QEMU's status when the kernel reports failure (`(0x11 << 1) | 1`).
pub const QEMU_FAILURE: i32 = 35;
/// The line a successful boot ends with.
pub const SUCCESS_LINE: &str = "kernel: all checks passed";

/// The emulated machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// i440FX + PIIX, the classic PC.
    Pc,
    /// Q35 + ICH9, PCI Express.
    Q35,
}

impl Machine {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pc" => Some(Self::Pc),
            "q35" => Some(Self::Q35),
            _ => None,
        }
    }

    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Pc => "pc",
            Self::Q35 => "q35",
        }
    }
}

/// How the guest CPUs are emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm (`-cpu host`: x2APIC available).
    Kvm,
    /// QEMU's multi-threaded binary translation (no x2APIC in QEMU 7.2).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "KVM",
            Self::Tcg => "TCG",
        })
    }
}

/// Whether /dev/kvm exists and this user may open it.
pub fn kvm_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Whether the host CPU has hardware virtualization (`vmx` or `svm` among the flags of
/// /proc/cpuinfo).
fn cpu_has_virtualization() -> bool {
    fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|line| line.starts_with("flags"))
            .flat_map(str::split_ascii_whitespace)
            .any(|flag| flag == "vmx" || flag == "svm")
    })
}

/// The accelerator to use when none is asked for, and why, in a few words.
///
/// KVM only where it runs the guest's ring 0 natively: /dev/kvm usable, `vmx` or `svm`
/// in /proc/cpuinfo, and no `kvm_pvm` module. `kvm_pvm` (the /dev/kvm of the machines
/// this project is developed on) is a software virtualizer that emulates every ring-0
/// guest instruction (about 0.5-1 us each): our kernel runs in ring 0, so it is about
/// 10x slower there than under TCG, and its timings mean nothing.
pub fn default_accel() -> (Accel, &'static str) {
    if Path::new("/sys/module/kvm_pvm").exists() {
        (
            Accel::Tcg,
            "/dev/kvm is kvm_pvm, which emulates ring 0 (~10x slower than TCG); --kvm forces it",
        )
    } else if !cpu_has_virtualization() {
        (
            Accel::Tcg,
            "no vmx/svm in /proc/cpuinfo: KVM could not run ring 0 natively",
        )
    } else if !Path::new("/dev/kvm").exists() {
        (Accel::Tcg, "no /dev/kvm")
    } else if !kvm_usable() {
        (Accel::Tcg, "/dev/kvm is not usable by this user")
    } else {
        (
            Accel::Kvm,
            "hardware virtualization (vmx/svm) and /dev/kvm usable",
        )
    }
}

/// Cargo profile of the kernel build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

/// The repository root (the workspace), found from this crate's manifest.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the kernel with cargo and returns the path of its ELF.
pub fn build_kernel(profile: Profile) -> io::Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "kernel",
        "--target",
        "x86_64-unknown-none",
    ]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    // The kernel's flags come from .cargo/config.toml; flags meant for the host
    // build that spawned us must not leak into it.
    command
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let status = command.status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "building the kernel failed ({status})"
        )));
    }
    let dir = if profile == Profile::Release {
        "release"
    } else {
        "debug"
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target_dir
        .join("x86_64-unknown-none")
        .join(dir)
        .join("kernel"))
}

/// The least guest RAM `scripts/run` accepts. The kernel stops with "not enough RAM"
/// when less than 4 MiB is free after its image, page tables and page descriptors
/// (`kernel/src/heap.rs`): a debug kernel with 4 CPUs needs 7 MiB; 16 MiB leaves room
/// for the image to grow and for the stacks of more CPUs (made at boot).
pub const MIN_MEM_BYTES: u64 = 16 << 20;

/// Above this much guest RAM, QEMU is told not to reserve it up front (the memory
/// backend's `reserve=off`): otherwise QEMU refuses a guest larger than the host's
/// memory, although the kernel touches only about 2% of it (its page descriptors and
/// the slab layer's owner table).
pub const RESERVE_LIMIT_BYTES: u64 = 8 << 30;

impl Machine {
    /// The most guest RAM `scripts/run` accepts on this machine. The kernel's page
    /// descriptors (24 bytes per 4 KiB frame) must fit in the RAM after the kernel
    /// below 4 GiB, which QEMU makes 3 GiB on `pc` and 2 GiB on `q35` when the guest has
    /// more than that; beyond, the kernel stops with "too much RAM" (at 511 GiB on pc,
    /// 340 GiB on q35 with today's debug image). These leave room for the image to grow.
    pub fn max_mem_bytes(self) -> u64 {
        match self {
            Self::Pc => 500 << 30,
            Self::Q35 => 330 << 30,
        }
    }
}

/// The bytes a QEMU `-m` size stands for: a number with an optional suffix K, M, G or
/// T (powers of 1024; no suffix means MiB, as QEMU reads it). `None` when it is not one.
pub fn parse_mem_size(size: &str) -> Option<u64> {
    let size = size.strip_prefix("size=").unwrap_or(size);
    let (number, shift) = match size.char_indices().last()? {
        (at, 'k' | 'K') => (&size[..at], 10),
        (at, 'm' | 'M') => (&size[..at], 20),
        (at, 'g' | 'G') => (&size[..at], 30),
        (at, 't' | 'T') => (&size[..at], 40),
        _ => (size, 20),
    };
    number.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The number of CPUs QEMU gives the guest for these `-smp` values, in command-line
/// order. QEMU merges every `-smp` into one option list where a later key overrides an
/// earlier one (so the last CPU count wins), a bare number is `cpus=`, and without
/// `cpus` the count is `maxcpus` or the product of the topology that is given.
/// `None` when a value is not understood.
pub fn effective_smp<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    let mut merged: Vec<(&str, u32)> = Vec::new();
    for value in values {
        for (index, part) in value.split(',').enumerate() {
            let (key, number) = match part.split_once('=') {
                Some((key, number)) => (key, number),
                None if index == 0 => ("cpus", part),
                None => return None,
            };
            let number = number.parse().ok()?;
            merged.retain(|&(seen, _)| seen != key);
            merged.push((key, number));
        }
    }
    let get = |key: &str| {
        merged
            .iter()
            .find(|&&(seen, _)| seen == key)
            .map(|&(_, n)| n)
    };
    let topology = ["sockets", "dies", "clusters", "cores", "threads"];
    get("cpus")
        .filter(|&n| n > 0)
        .or(get("maxcpus"))
        .or_else(|| {
            topology.iter().try_fold(1u32, |product, key| {
                product.checked_mul(get(key).unwrap_or(1))
            })
        })
}

/// Everything that decides one QEMU run.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    pub smp: u32,
    /// `-m` argument, e.g. "128M" or "8G".
    pub mem: String,
    pub machine: Machine,
    /// `None`: the [`default_accel`] (KVM only where it runs ring 0 natively).
    pub accel: Option<Accel>,
    /// The kernel command line (`-append`).
    pub append: String,
    /// Wait for gdb on tcp::1234 before the first instruction (`-s -S`).
    pub gdb: bool,
    pub timeout: Duration,
    /// Passed to QEMU unchanged, after everything else.
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    pub fn new(kernel: PathBuf) -> Self {
        Self {
            kernel,
            smp: 4,
            mem: "128M".into(),
            machine: Machine::Pc,
            accel: None,
            append: String::new(),
            gdb: false,
            timeout: Duration::from_secs(120),
            extra_args: Vec::new(),
        }
    }

    /// The accelerator this configuration will use.
    pub fn resolved_accel(&self) -> Accel {
        self.accel.unwrap_or_else(|| default_accel().0)
    }

    /// The CPUs the guest will have: [`smp`](Self::smp), unless a `-smp` among the
    /// extra arguments changes it (see [`effective_smp`]).
    pub fn effective_smp(&self) -> Option<u32> {
        let ours = self.smp.to_string();
        let mut values = vec![ours.as_str()];
        let mut args = self.extra_args.iter();
        while let Some(arg) = args.next() {
            if matches!(arg.as_str(), "-smp" | "--smp") {
                values.push(args.next()?);
            }
        }
        effective_smp(values)
    }

    /// The full QEMU argument list.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut machine = self.machine.qemu_name().to_string();
        let mut backend = Vec::new();
        if parse_mem_size(&self.mem).is_some_and(|bytes| bytes > RESERVE_LIMIT_BYTES) {
            machine.push_str(",memory-backend=guest-ram");
            backend = vec![
                "-object".into(),
                format!(
                    "memory-backend-ram,id=guest-ram,size={},reserve=off",
                    self.mem
                ),
            ];
        }
        let mut args: Vec<String> = vec![
            "-machine".into(),
            machine,
            "-m".into(),
            self.mem.clone(),
            "-smp".into(),
            self.smp.to_string(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-monitor".into(),
            "none".into(),
            // A triple fault resets the machine; make it stop QEMU instead.
            "-no-reboot".into(),
            "-device".into(),
            "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
        ];
        args.extend(backend);
        match self.resolved_accel() {
            // The host's CPU model, less IA32_ARCH_CAPABILITIES: some KVM set-ups
            // (kvm_pvm, on the machines this project is tested on, among them) refuse
            // to let QEMU set that MSR and QEMU aborts at start.
            Accel::Kvm => {
                args.extend(["-accel", "kvm", "-cpu", "host,-arch-capabilities"].map(String::from))
            }
            Accel::Tcg => args.extend(["-accel", "tcg,thread=multi"].map(String::from)),
        }
        if !self.append.is_empty() {
            args.extend(["-append".into(), self.append.clone()]);
        }
        if self.gdb {
            args.extend(["-s".into(), "-S".into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel reported success.
    Success,
    /// The kernel reported failure (a panic or an exception; the log says which).
    KernelFailure,
    /// The guest reset without reporting anything: a triple fault.
    TripleFault,
    /// No verdict before the time-out; QEMU was killed.
    TimedOut(Duration),
    /// QEMU itself failed (bad arguments, missing file...), with its status.
    QemuError(Option<i32>),
}

impl Outcome {
    /// The exit status `scripts/run` returns for this outcome.
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::Success => 0,
            Self::KernelFailure => 1,
            Self::TripleFault => 2,
            Self::TimedOut(_) => 3,
            Self::QemuError(_) => 4,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => write!(f, "the kernel reported success"),
            Self::KernelFailure => write!(f, "the kernel reported a failure (see the log above)"),
            Self::TripleFault => {
                write!(f, "the machine reset without a report: triple fault")
            }
            Self::TimedOut(limit) => write!(f, "no verdict within {} s: time-out", limit.as_secs()),
            Self::QemuError(Some(code)) => write!(f, "QEMU failed with status {code}"),
            Self::QemuError(None) => write!(f, "QEMU was killed by a signal"),
        }
    }
}

/// The result of one boot.
#[derive(Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    pub accel: Accel,
    /// The serial console output, with `\r` removed.
    pub log: String,
    /// QEMU's own error output.
    pub stderr: String,
    /// Wall-clock time from spawning QEMU to its exit.
    pub elapsed: Duration,
}

impl RunResult {
    /// Whether some line of the serial log contains `text`.
    pub fn log_has(&self, text: &str) -> bool {
        self.log.lines().any(|line| line.contains(text))
    }
}

/// Boots the kernel once. With `echo`, the serial console and QEMU's errors are
/// copied to this process's stdout/stderr as they arrive.
pub fn run(config: &QemuConfig, echo: bool) -> io::Result<RunResult> {
    let accel = config.resolved_accel();
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(config.qemu_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot start qemu-system-x86_64: {error}"),
            )
        })?;

    let log = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut raw = Vec::new();
            while matches!(lines.read_until(b'\n', &mut raw), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&raw).replace('\r', "");
                if echo {
                    print!("{line}");
                }
                log.lock().expect("log lock").push_str(&line);
                raw.clear();
            }
        })
    };
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        if echo {
            eprint!("{text}");
        }
        text
    });

    let deadline = (!config.gdb).then(|| started + config.timeout);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            child.kill()?;
            child.wait()?;
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    let outcome = match status {
        None => Outcome::TimedOut(config.timeout),
        Some(status) => match status.code() {
            Some(QEMU_SUCCESS) => Outcome::Success,
            Some(QEMU_FAILURE) => Outcome::KernelFailure,
            Some(0) => Outcome::TripleFault,
            code => Outcome::QemuError(code),
        },
    };
    let log = std::mem::take(&mut *log.lock().expect("log lock"));
    Ok(RunResult {
        outcome,
        accel,
        log,
        stderr,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_are_read_as_qemu_reads_them() {
        assert_eq!(parse_mem_size("128M"), Some(128 << 20));
        assert_eq!(parse_mem_size("128"), Some(128 << 20), "no suffix: MiB");
        assert_eq!(parse_mem_size("8G"), Some(8 << 30));
        assert_eq!(parse_mem_size("1t"), Some(1 << 40));
        assert_eq!(parse_mem_size("65536K"), Some(64 << 20));
        assert_eq!(parse_mem_size("size=2G"), Some(2 << 30));
        assert_eq!(parse_mem_size("12x"), None);
        assert_eq!(parse_mem_size(""), None);
        assert_eq!(parse_mem_size("99999999999T"), None, "overflow");
    }

    #[test]
    fn the_last_smp_wins_as_qemu_merges_them() {
        let mut config = QemuConfig::new(PathBuf::from("kernel"));
        config.smp = 4;
        assert_eq!(config.effective_smp(), Some(4));
        config.extra_args = ["-smp", "2"].map(String::from).to_vec();
        assert_eq!(config.effective_smp(), Some(2));
        config.extra_args = ["-smp", "2", "-d", "int", "--smp", "8"]
            .map(String::from)
            .to_vec();
        assert_eq!(config.effective_smp(), Some(8));
        config.extra_args = ["-smp", "6,sockets=2,cores=3"].map(String::from).to_vec();
        assert_eq!(config.effective_smp(), Some(6));
        assert_eq!(effective_smp(["sockets=2,cores=3,threads=2"]), Some(12));
        assert_eq!(effective_smp(["4", "maxcpus=8"]), Some(4), "cpus is kept");
        assert_eq!(effective_smp(["cores=3", "cores=5"]), Some(5));
        assert_eq!(effective_smp(["four"]), None);
        config.extra_args = vec!["-smp".into()];
        assert_eq!(config.effective_smp(), None, "-smp without a value");
    }

    #[test]
    fn large_guests_are_not_reserved_up_front() {
        let mut config = QemuConfig::new(PathBuf::from("kernel"));
        config.accel = Some(Accel::Tcg);
        assert!(
            !config
                .qemu_args()
                .iter()
                .any(|arg| arg.contains("reserve=off"))
        );
        config.mem = "64G".into();
        config.machine = Machine::Q35;
        let args = config.qemu_args();
        assert!(args.contains(&"q35,memory-backend=guest-ram".to_string()));
        assert!(args.contains(&"memory-backend-ram,id=guest-ram,size=64G,reserve=off".to_string()));
    }
}
