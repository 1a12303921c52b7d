//! Kernel command-line options (QEMU's `-append`, or `scripts/run -- -append ...`).
//!
//! Options are space-separated `key=value` words:
//!
//! | option | meaning |
//! |---|---|
//! | `loglevel=error\|warn\|info\|debug\|trace` | how much the log says (default `info`) |
//! | `mmtest=exhaust` | the memory self-tests allocate until all RAM is used (slow on big guests) |
//! | `mmtest=off` | skip the memory and slab self-tests and the stress (the KVM SMP matrix: kvm_pvm emulates ring 0, so they are slow there) |
//! | `slab_debug=on` | red zones and poisoning in every cache (the global debug switch) |
//! | `percpu=on\|off` | per-CPU object caches in front of every slab cache (default on) |
//! | `cpucache=NAME,LIMIT,BATCH` | 2.4's slabinfo write: cache NAME's per-CPU array holds LIMIT objects, moved BATCH at a time (up to 4 of these) |
//! | `stress=MS\|off` | length of the SMP allocator stress on every CPU (default 2000 ms) |
//! | `bench=scaling` | after the SMP checks, measure throughput and latency with every CPU allocating at once, mm (per-CPU on, off) and talc (`bench_scaling.rs`; booted by `scripts/bench scaling`), then stop |
//! | `bench_ms=N` | milliseconds per cell of `bench=scaling` (default 1000) |
//! | `bench_workers=N` | only the first N CPUs run the cells of `bench=scaling` (default: every CPU); the others wait. With `-smp 2` and N = 1 it shows what QEMU's multi-threaded TCG does to one CPU's figures once a second vCPU exists |
//! | `bench=hitpath` | after the SMP checks, count the allocator's instructions per alloc+free pair on the BSP (`bench_hitpath.rs`; booted by `scripts/bench hitpath` under `-icount`), then stop |
//! | `fault=N` | fault injection: the frame allocation N+1 of the stress fails as if memory had run out (the stress must lose nothing) |
//! | `stress_provoke=on\|d1\|d2\|d3\|off` | the stress's provoking mode (`provoke.rs`): cross-CPU calls from every CPU and timer tick, statistics during retuning, shootdowns under low DMA memory; `d1`..`d3` only the parts that provoke one deadlock of issue 11 (default off) |
//! | `ap_timeout_us=N` | how long the BSP waits for each AP to report online (default 5 s); tiny values make APs start after their time-out, and 0 gives up on every AP before it can start (each must park: a test) |
//! | `acpi=scan` | ignore the loader's RSDP and find it by scanning the BIOS areas |
//! | `timer_hz=N` | local APIC timer interrupts per second on each CPU (default 100) |
//! | `test=panic` | panic on purpose after boot (the panic path must fail the run) |
//! | `test=pagefault` | write to an unmapped address (the report must name CR2) |
//! | `test=stack-overflow` | recurse into the boot stack's guard page (double fault on the IST stack) |
//! | `test=triple-fault` | fault with no usable IDT: the machine resets, which the host must notice |
//! | `test=hang` | stop without a verdict: the host's time-out must fire |
//!
//! Every word that is not understood is reported and ignored (an unknown option, or a
//! known one whose value is out of range), so a typo does not go unnoticed.

/// A deliberate failure, for the tests of the crash paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashTest {
    Panic,
    PageFault,
    StackOverflow,
    TripleFault,
    Hang,
}

/// A `cpucache=NAME,LIMIT,BATCH` word.
#[derive(Clone, Copy, Debug)]
pub struct CpuCacheTuning<'a> {
    pub cache: &'a str,
    pub limit: usize,
    pub batchcount: usize,
}

impl<'a> CpuCacheTuning<'a> {
    fn parse(value: &'a str) -> Option<Self> {
        let mut parts = value.split(',');
        let tuning = Self {
            cache: parts.next().filter(|name| !name.is_empty())?,
            limit: parts.next()?.parse().ok()?,
            batchcount: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(tuning)
    }
}

/// How many `cpucache=` words count.
pub const MAX_TUNINGS: usize = 4;

/// How many ignored words are kept for the report (more are counted).
pub const MAX_IGNORED: usize = 8;

/// A word of the command line that was ignored, and why.
#[derive(Clone, Copy, Debug)]
pub enum Ignored<'a> {
    /// No option has this name, or this option has no such value.
    Unknown(&'a str),
    /// A known option with a number outside what it takes (the range, in words).
    OutOfRange(&'a str, &'static str),
    /// A fifth `cpucache=` word (at most [`MAX_TUNINGS`]).
    TooMany(&'a str),
}

impl core::fmt::Display for Ignored<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unknown(word) => write!(f, "ignoring unknown option {word:?}"),
            Self::OutOfRange(word, range) => {
                write!(f, "ignoring {word:?}: out of range ({range})")
            }
            Self::TooMany(word) => {
                write!(
                    f,
                    "ignoring {word:?}: at most {MAX_TUNINGS} cpucache= options"
                )
            }
        }
    }
}

/// The parsed command line.
#[derive(Debug)]
pub struct Options<'a> {
    pub log_level: log::LevelFilter,
    pub crash_test: Option<CrashTest>,
    pub timer_hz: u32,
    /// Find the ACPI RSDP by scanning the BIOS areas even when the loader gave it.
    pub scan_for_rsdp: bool,
    /// The memory self-test maps ranges until RAM runs out.
    pub exhaust_memory: bool,
    /// Skip the memory and slab self-tests.
    pub skip_memory_tests: bool,
    /// Red zones and poisoning in every slab cache.
    pub slab_debug: bool,
    /// Per-CPU object caches on (the default) or off.
    pub per_cpu: bool,
    /// `cpucache=` words, in order.
    pub cpu_cache_tunings: [Option<CpuCacheTuning<'a>>; MAX_TUNINGS],
    /// How long the SMP stress runs, in milliseconds (0: not at all).
    pub stress_ms: u64,
    /// Run the hit-path benchmark after the SMP checks, then stop.
    pub bench_hitpath: bool,
    /// The stress's provoking mode (`stress_provoke=on|d1|d2|d3`, see `provoke.rs`): a
    /// bitmask of its parts, 0 when off.
    pub stress_provoke: u32,
    /// How long the BSP waits for each AP to come online, in microseconds.
    pub ap_timeout_us: Option<u64>,
    /// `fault=N`: after N frame allocations of the stress, one fails.
    pub fault_after: Option<usize>,
    /// The words that were ignored, in order (the first [`MAX_IGNORED`]).
    pub ignored: [Option<Ignored<'a>>; MAX_IGNORED],
    /// How many words were ignored in all.
    pub ignored_count: usize,
    /// Run the scaling benchmark after the SMP checks, then stop.
    pub bench_scaling: bool,
    /// Milliseconds per cell of the scaling benchmark.
    pub bench_ms: u64,
    /// CPUs that run the scaling benchmark's cells (`None`: every CPU).
    pub bench_workers: Option<usize>,
}

impl<'a> Options<'a> {
    pub fn parse(cmdline: &'a str) -> Self {
        let mut options = Options {
            log_level: log::LevelFilter::Info,
            crash_test: None,
            timer_hz: 100,
            scan_for_rsdp: false,
            exhaust_memory: false,
            skip_memory_tests: false,
            slab_debug: false,
            per_cpu: true,
            cpu_cache_tunings: [None; MAX_TUNINGS],
            stress_ms: 2000,
            bench_hitpath: false,
            stress_provoke: 0,
            ap_timeout_us: None,
            fault_after: None,
            ignored: [None; MAX_IGNORED],
            ignored_count: 0,
            bench_scaling: false,
            bench_ms: 1000,
            bench_workers: None,
        };
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let number = value.parse::<u64>().ok();
            let ignored = match (key, value) {
                ("loglevel", level) if level.parse::<log::LevelFilter>().is_ok() => {
                    options.log_level = level.parse().unwrap_or(log::LevelFilter::Info);
                    None
                }
                ("timer_hz", _) if number.is_some_and(|hz| (1..=10_000).contains(&hz)) => {
                    options.timer_hz = number.unwrap_or(100) as u32;
                    None
                }
                ("timer_hz", _) if number.is_some() => {
                    Some(Ignored::OutOfRange(word, "1 to 10000 per second"))
                }
                ("acpi", "scan") => set(&mut options.scan_for_rsdp, true),
                ("mmtest", "exhaust") => set(&mut options.exhaust_memory, true),
                ("mmtest", "off") => set(&mut options.skip_memory_tests, true),
                ("slab_debug", "on") => set(&mut options.slab_debug, true),
                ("slab_debug", "off") => set(&mut options.slab_debug, false),
                ("percpu", "on") => set(&mut options.per_cpu, true),
                ("percpu", "off") => set(&mut options.per_cpu, false),
                ("cpucache", value) if CpuCacheTuning::parse(value).is_some() => {
                    match options.cpu_cache_tunings.iter_mut().find(|t| t.is_none()) {
                        Some(free) => {
                            *free = CpuCacheTuning::parse(value);
                            None
                        }
                        None => Some(Ignored::TooMany(word)),
                    }
                }
                ("stress", "off") => {
                    options.stress_ms = 0;
                    None
                }
                ("stress_provoke", "off") => {
                    options.stress_provoke = 0;
                    None
                }
                ("stress_provoke", parts) if crate::provoke::parts(parts).is_some() => {
                    options.stress_provoke = crate::provoke::parts(parts).unwrap_or(0);
                    None
                }
                ("ap_timeout_us", _) if number.is_some() => {
                    options.ap_timeout_us = number;
                    None
                }
                ("stress", _) if number.is_some_and(|ms| ms <= 600_000) => {
                    options.stress_ms = number.unwrap_or(0);
                    None
                }
                ("stress", _) if number.is_some() => {
                    Some(Ignored::OutOfRange(word, "0 to 600000 ms"))
                }
                ("bench", "hitpath") => set(&mut options.bench_hitpath, true),
                ("bench", "scaling") => set(&mut options.bench_scaling, true),
                ("bench_ms", _) if number.is_some_and(|ms| (1..=600_000).contains(&ms)) => {
                    options.bench_ms = number.unwrap_or(1000);
                    None
                }
                ("bench_ms", _) if number.is_some() => {
                    Some(Ignored::OutOfRange(word, "1 to 600000 ms"))
                }
                ("bench_workers", _)
                    if number.is_some_and(|n| (1..=smp::MAX_CPUS as u64).contains(&n)) =>
                {
                    options.bench_workers = number.map(|n| n as usize);
                    None
                }
                ("bench_workers", _) if number.is_some() => {
                    Some(Ignored::OutOfRange(word, "1 to 255 CPUs"))
                }
                ("fault", _) if number.is_some_and(|n| n <= 1 << 32) => {
                    options.fault_after = number.map(|n| n as usize);
                    None
                }
                ("fault", _) if number.is_some() => {
                    Some(Ignored::OutOfRange(word, "0 to 4294967296 allocations"))
                }
                ("test", "panic") => set_crash(&mut options.crash_test, CrashTest::Panic),
                ("test", "pagefault") => set_crash(&mut options.crash_test, CrashTest::PageFault),
                ("test", "stack-overflow") => {
                    set_crash(&mut options.crash_test, CrashTest::StackOverflow)
                }
                ("test", "triple-fault") => {
                    set_crash(&mut options.crash_test, CrashTest::TripleFault)
                }
                ("test", "hang") => set_crash(&mut options.crash_test, CrashTest::Hang),
                _ => Some(Ignored::Unknown(word)),
            };
            if let Some(ignored) = ignored {
                if let Some(slot) = options.ignored.get_mut(options.ignored_count) {
                    *slot = Some(ignored);
                }
                options.ignored_count += 1;
            }
        }
        options
    }
}

/// Sets a flag option; nothing is ignored.
fn set<'a>(flag: &mut bool, value: bool) -> Option<Ignored<'a>> {
    *flag = value;
    None
}

/// Sets the crash test; nothing is ignored.
fn set_crash<'a>(test: &mut Option<CrashTest>, which: CrashTest) -> Option<Ignored<'a>> {
    *test = Some(which);
    None
}
