//! `scaling`: the hosted half of `scripts/bench scaling`, and the report of both halves.
//!
//! - `scaling run [--threads 1,2,4,8] [--ms N] [--alloc A,B,...]`: the four workloads
//!   (the `scaling-workloads` crate, which the kernel runs too, on threads:
//!   `workloads.rs`) on 1, 2, 4, 8 host threads for every allocator in the same
//!   process: mm with per-CPU caches on (`mm`) and off (`mm-nopercpu`), glibc,
//!   mimalloc, jemalloc (tikv-jemallocator), talc and linked_list_allocator. Each cell
//!   is a timed pass of `ms / 4` (every operation timed: p99 and max) and then a
//!   throughput pass of `ms`; it prints one line, in the format of the kernel's
//!   `bench=scaling`, with `side=hosted`.
//! - `scaling report --out DIR [--cores N] [--kernel-label TEXT] FILE...`: reads the cell lines of kernel logs
//!   and hosted runs, prints the tables (throughput, speed-up over 1 CPU, scaling
//!   efficiency T(n) / (n T(1)), mm's ratio to each peer, latency), and writes
//!   `DIR/scaling.csv` and an SVG per side and workload (`report.rs`, `plot.rs`).
//!   CPU counts above `--cores` (default: this host's) are labelled oversubscribed.

#[path = "../ours.rs"]
mod ours;
#[allow(
    dead_code,
    reason = "shared with the hitpath binary, whose null allocator this one does not use"
)]
#[path = "../peers.rs"]
mod peers;
mod plot;
mod report;
mod workloads;

use std::alloc::GlobalAlloc;
use std::io::Write;
use std::process::ExitCode;

use scaling_workloads::{Line, WORKLOADS, Workload};

/// The hosted allocators, in the order of the output.
const ALLOCATORS: [&str; 7] = [
    "mm",
    "mm-nopercpu",
    "glibc",
    "mimalloc",
    "jemalloc",
    "talc",
    "linked_list_allocator",
];

const USAGE: &str = "\
usage: scaling run [--threads 1,2,4,8] [--ms N] [--alloc NAME,...]
       scaling report --out DIR [--cores N] [--kernel-label TEXT] FILE...
allocators: mm, mm-nopercpu, glibc, mimalloc, jemalloc, talc, linked_list_allocator";

fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::to_owned).collect()
}

/// Runs every cell of one allocator and prints its lines.
fn run_allocator<A: GlobalAlloc + Sync + ?Sized>(
    name: &str,
    allocator: &A,
    workload: Workload,
    threads: &[usize],
    millis: u64,
    tsc_hz: u64,
) {
    for &n in threads {
        let cycles = millis * tsc_hz / 1000;
        let latency = workloads::measure(allocator, workload, n, (cycles / 4).max(1), true);
        let figures = workloads::measure(allocator, workload, n, cycles, false);
        let line = Line {
            throughput: &figures,
            latency: &latency,
            hz: tsc_hz,
        };
        println!(
            "scaling: side=hosted cpus={n} alloc={name} workload={} {line} timed_ops={}",
            workload.name(),
            latency.operations,
        );
        let _ = std::io::stdout().flush();
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut threads = vec![1, 2, 4, 8];
    let mut millis = 1000;
    let mut allocators: Vec<String> = ALLOCATORS.iter().map(|&a| a.to_owned()).collect();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--threads" => {
                threads = list(value)
                    .iter()
                    .map(|n| n.parse().ok().filter(|&n| (1..=16).contains(&n)))
                    .collect::<Option<_>>()
                    .ok_or("--threads takes numbers from 1 to 16 (mm's host CPU slots)")?;
            }
            "--ms" => millis = value.parse().map_err(|_| "--ms takes milliseconds")?,
            "--alloc" => {
                allocators = list(value);
                if let Some(bad) = allocators
                    .iter()
                    .find(|a| !ALLOCATORS.contains(&a.as_str()))
                {
                    return Err(format!("unknown allocator {bad:?}"));
                }
            }
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    let tsc_hz = workloads::tsc_hz();
    println!(
        "scaling: side=hosted threads {threads:?}, {millis} ms per cell (+{} ms timed), TSC {} MHz",
        millis / 4,
        tsc_hz / 1_000_000
    );
    // One instance of each arena allocator for the whole run, as a kernel has one heap.
    let mm = ours::allocator(true);
    let mm_off = ours::allocator(false);
    let talc = peers::talc();
    let linked_list = peers::linked_list();
    for workload in WORKLOADS {
        for name in &allocators {
            match name.as_str() {
                "mm" => run_allocator(name, mm, workload, &threads, millis, tsc_hz),
                "mm-nopercpu" => run_allocator(name, mm_off, workload, &threads, millis, tsc_hz),
                "glibc" => run_allocator(
                    name,
                    &std::alloc::System,
                    workload,
                    &threads,
                    millis,
                    tsc_hz,
                ),
                "mimalloc" => run_allocator(
                    name,
                    &mimalloc::MiMalloc,
                    workload,
                    &threads,
                    millis,
                    tsc_hz,
                ),
                "jemalloc" => run_allocator(
                    name,
                    &tikv_jemallocator::Jemalloc,
                    workload,
                    &threads,
                    millis,
                    tsc_hz,
                ),
                "talc" => run_allocator(name, talc, workload, &threads, millis, tsc_hz),
                "linked_list_allocator" => {
                    run_allocator(name, linked_list, workload, &threads, millis, tsc_hz)
                }
                _ => unreachable!("checked above"),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("report") => report::main(&args[1..]),
        _ => Err("a subcommand, run or report, is required".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("scaling: {message}\n{USAGE}");
            ExitCode::from(64)
        }
    }
}
