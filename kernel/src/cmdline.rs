//! Kernel command-line options (QEMU's `-append`, or `scripts/run -- -append ...`).
//!
//! Options are space-separated `key=value` words:
//!
//! | option | meaning |
//! |---|---|
//! | `loglevel=error\|warn\|info\|debug\|trace` | how much the log says (default `info`) |
//! | `mmtest=exhaust` | the memory self-tests allocate until all RAM is used (slow on big guests) |
//! | `mmtest=off` | skip the memory and slab self-tests and the stress (the SMP matrix under slow nested KVM) |
//! | `slab_debug=on` | red zones and poisoning in every cache (the global debug switch) |
//! | `percpu=on\|off` | per-CPU object caches in front of every slab cache (default on) |
//! | `cpucache=NAME,LIMIT,BATCH` | 2.4's slabinfo write: cache NAME's per-CPU array holds LIMIT objects, moved BATCH at a time (up to 4 of these) |
//! | `stress=MS\|off` | length of the SMP allocator stress on every CPU (default 2000 ms) |
//! | `stress_provoke=on\|d1\|d2\|d3\|off` | the stress's provoking mode (`provoke.rs`): cross-CPU calls from every CPU and timer tick, statistics during retuning, shootdowns under low DMA memory; `d1`..`d3` only the parts that provoke one deadlock of issue 11 (default off) |
//! | `ap_timeout_us=N` | how long the BSP waits for each AP to report online (default 5 s); tiny values make APs start after their time-out |
//! | `acpi=scan` | ignore the loader's RSDP and find it by scanning the BIOS areas |
//! | `timer_hz=N` | local APIC timer interrupts per second on each CPU (default 100) |
//! | `test=panic` | panic on purpose after boot (the panic path must fail the run) |
//! | `test=pagefault` | write to an unmapped address (the report must name CR2) |
//! | `test=stack-overflow` | recurse into the boot stack's guard page (double fault on the IST stack) |
//! | `test=triple-fault` | fault with no usable IDT: the machine resets, which the host must notice |
//! | `test=hang` | stop without a verdict: the host's time-out must fire |
//!
//! Unknown words are reported and ignored, so a typo does not go unnoticed.

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
    /// The stress's provoking mode (`stress_provoke=on|d1|d2|d3`, see `provoke.rs`): a
    /// bitmask of its parts, 0 when off.
    pub stress_provoke: u32,
    /// How long the BSP waits for each AP to come online, in microseconds.
    pub ap_timeout_us: Option<u64>,
    /// The first word that was not understood, if any.
    pub unknown: Option<&'a str>,
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
            stress_provoke: 0,
            ap_timeout_us: None,
            unknown: None,
        };
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match (key, value) {
                ("loglevel", level) if level.parse::<log::LevelFilter>().is_ok() => {
                    options.log_level = level.parse().unwrap_or(log::LevelFilter::Info);
                }
                ("timer_hz", hz)
                    if hz.parse::<u32>().is_ok_and(|hz| (1..=10_000).contains(&hz)) =>
                {
                    options.timer_hz = hz.parse().unwrap_or(100);
                }
                ("acpi", "scan") => options.scan_for_rsdp = true,
                ("mmtest", "exhaust") => options.exhaust_memory = true,
                ("mmtest", "off") => options.skip_memory_tests = true,
                ("slab_debug", "on") => options.slab_debug = true,
                ("slab_debug", "off") => options.slab_debug = false,
                ("percpu", "on") => options.per_cpu = true,
                ("percpu", "off") => options.per_cpu = false,
                ("cpucache", value) if CpuCacheTuning::parse(value).is_some() => {
                    match options.cpu_cache_tunings.iter_mut().find(|t| t.is_none()) {
                        Some(free) => *free = CpuCacheTuning::parse(value),
                        None => {
                            options.unknown.get_or_insert(word);
                        }
                    }
                }
                ("stress", "off") => options.stress_ms = 0,
                ("stress_provoke", "off") => options.stress_provoke = 0,
                ("stress_provoke", parts) if crate::provoke::parts(parts).is_some() => {
                    options.stress_provoke = crate::provoke::parts(parts).unwrap_or(0);
                }
                ("ap_timeout_us", us) if us.parse::<u64>().is_ok_and(|us| us > 0) => {
                    options.ap_timeout_us = us.parse().ok();
                }
                ("stress", ms) if ms.parse::<u64>().is_ok_and(|ms| ms <= 600_000) => {
                    options.stress_ms = ms.parse().unwrap_or(0);
                }
                ("test", "panic") => options.crash_test = Some(CrashTest::Panic),
                ("test", "pagefault") => options.crash_test = Some(CrashTest::PageFault),
                ("test", "stack-overflow") => options.crash_test = Some(CrashTest::StackOverflow),
                ("test", "triple-fault") => options.crash_test = Some(CrashTest::TripleFault),
                ("test", "hang") => options.crash_test = Some(CrashTest::Hang),
                _ => {
                    options.unknown.get_or_insert(word);
                }
            }
        }
        options
    }
}
