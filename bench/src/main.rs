//! `hitpath`: one (allocator, workload) of the hit-path benchmark, for callgrind to
//! count. `scripts/bench hitpath` runs it once per row and column of its table, under
//! `valgrind --tool=callgrind --toggle-collect=*::measured`, and reads the counts; run
//! alone it prints nothing and counts nothing (it is not a timed benchmark).
//!
//! Usage: `hitpath --alloc NAME --workload pairs|rounds --iters N [--warm-up N]`,
//! NAME one of `ours`, `ours-nopercpu`, `glibc`, `mimalloc`, `talc`,
//! `linked_list_allocator`, `null`. Every allocator is driven through
//! `GlobalAlloc::alloc`/`dealloc` with 64-byte, 8-aligned objects on one thread (which
//! stands for CPU 0 of mm's hosted platform); see `workload.rs` for the loops and
//! `peers.rs` for how each peer is set up.
//!
//! `hitpath --profile FILE --per N [--top K]` reads a callgrind output file instead and
//! prints the functions with the most instructions per iteration (`profile.rs`).

mod ours;
mod peers;
mod profile;
mod workload;

use std::process::ExitCode;
use workload::{Workload, bench};

/// The allocators, in the order of the table.
const ALLOCATORS: [&str; 7] = [
    "ours",
    "ours-nopercpu",
    "glibc",
    "mimalloc",
    "talc",
    "linked_list_allocator",
    "null",
];

const USAGE: &str = "usage: hitpath --alloc NAME --workload pairs|rounds --iters N [--warm-up N]
       hitpath --profile CALLGRIND_OUT --per N [--top K]
NAME: ours, ours-nopercpu, glibc, mimalloc, talc, linked_list_allocator, null";

/// `--profile FILE --per N [--top K]`, when the arguments are that.
fn profile_args() -> Option<Result<(String, u64, usize), String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("--profile") {
        return None;
    }
    let value = |name: &str| {
        let at = args.iter().position(|a| a == name)?;
        args.get(at + 1).cloned()
    };
    Some((|| {
        let file = value("--profile").ok_or("--profile needs a file")?;
        let per = value("--per")
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .ok_or("--per takes a number of iterations")?;
        let top =
            value("--top").map_or(Ok(15), |n| n.parse().map_err(|_| "--top takes a number"))?;
        Ok((file, per, top))
    })())
}

struct Args {
    alloc: String,
    workload: Workload,
    iters: u64,
    warm_up: u64,
}

fn parse_args() -> Result<Args, String> {
    let (mut alloc, mut workload, mut iters, mut warm_up) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--alloc" if ALLOCATORS.contains(&value.as_str()) => alloc = Some(value.clone()),
            "--alloc" => return Err(format!("unknown allocator {value:?}")),
            "--workload" => {
                workload =
                    Some(Workload::parse(&value).ok_or(format!("unknown workload {value:?}"))?);
            }
            "--iters" => iters = Some(number()?),
            "--warm-up" => warm_up = Some(number()?),
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    let iters = iters.ok_or("--iters is required")?;
    Ok(Args {
        alloc: alloc.ok_or("--alloc is required")?,
        workload: workload.ok_or("--workload is required")?,
        iters,
        // Enough for every array, thread cache and slab list to reach its steady state.
        warm_up: warm_up.unwrap_or(4 * workload::ROUND as u64 * 16),
    })
}

fn main() -> ExitCode {
    match profile_args() {
        Some(Ok((file, per, top))) => {
            return match std::fs::read_to_string(&file) {
                Ok(text) => {
                    profile::print(&text, per, top);
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("hitpath: cannot read {file}: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Err(message)) => {
            eprintln!("hitpath: {message}\n{USAGE}");
            return ExitCode::from(64);
        }
        None => {}
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("hitpath: {message}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let Args {
        alloc,
        workload,
        iters,
        warm_up,
    } = args;
    match alloc.as_str() {
        "ours" => bench(ours::allocator(true), workload, iters, warm_up),
        "ours-nopercpu" => bench(ours::allocator(false), workload, iters, warm_up),
        "glibc" => bench(&std::alloc::System, workload, iters, warm_up),
        "mimalloc" => bench(&mimalloc::MiMalloc, workload, iters, warm_up),
        "talc" => bench(peers::talc(), workload, iters, warm_up),
        "linked_list_allocator" => bench(peers::linked_list(), workload, iters, warm_up),
        "null" => bench(&peers::Null, workload, iters, warm_up),
        _ => unreachable!("checked by parse_args"),
    }
    ExitCode::SUCCESS
}
