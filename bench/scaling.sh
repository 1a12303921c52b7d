#!/usr/bin/env bash
# scripts/bench scaling: allocation throughput and latency with every CPU allocating at
# once, in the kernel and hosted, peers in the same run; a table, a CSV and plots.
#
#   kernel   the release kernel booted with bench=scaling, once per CPU count (1, 2, 4,
#            8), under QEMU's multi-threaded TCG (a vCPU is a host thread): mm with its
#            per-CPU caches on and off and talc behind a spin lock, in the same boot,
#            over the same heap (kernel/src/bench_scaling.rs).
#   hosted   bench/ (binary `scaling run`): the same workloads on 1, 2, 4, 8 host
#            threads, pinned, with mm (per-CPU on, off), glibc, mimalloc, jemalloc, talc
#            and linked_list_allocator in the same process (bench/src/scaling/). Both
#            run the workloads of workloads/ (crate scaling-workloads).
#   report   `scaling report`: tables (throughput, speed-up, efficiency, mm over each
#            peer, latency), target/bench/scaling/scaling.csv and one SVG per side and
#            workload, target/bench/scaling/{kernel,hosted}-WORKLOAD.svg.
#
# Usage: scripts/bench scaling [--quick] [--save] [--kernel-only] [--hosted-only]
#                              [--ms N] [--cpus LIST] [--icount]
#   --quick     100 ms per cell instead of 1000 (the whole run in well under 3 minutes
#               on 2 cores, once built)
#   --save      also copy the CSV, the plots, the logs and a line on the machine to
#               bench/results/DATE/ (the dated results the README shows)
#   --ms N      milliseconds per cell (a cell also runs a timed pass of N/4 first)
#   --cpus L    CPU (and thread) counts, comma-separated (default 1,2,4,8)
#   --icount    boot the kernel with -icount shift=0 -accel tcg,thread=single: the TSC
#               then counts guest instructions, so the latency and interrupts-off
#               figures are instruction counts (the vCPUs take turns on one host
#               thread: the throughput no longer says anything about parallelism)
# CPU counts above the host's cores are labelled oversubscribed (*).
set -euo pipefail
cd "$(dirname "$0")/.."

ms=1000 save=0 kernel=1 hosted=1 cpus=1,2,4,8 accel=(-accel tcg,thread=multi)
label="QEMU, multi-threaded TCG: a vCPU is a host thread"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --quick) ms=100 ;;
        --save) save=1 ;;
        --kernel-only) hosted=0 ;;
        --hosted-only) kernel=0 ;;
        --ms) ms=${2:?--ms needs a number}; shift ;;
        --cpus) cpus=${2:?--cpus needs a list}; shift ;;
        --icount) accel=(-accel tcg,thread=single -icount shift=0)
                  label="QEMU -icount: cycles are instructions, vCPUs take turns" ;;
        *) echo "usage: scripts/bench scaling [--quick] [--save] [--kernel-only] [--hosted-only] [--ms N] [--cpus LIST] [--icount]" >&2
           exit 64 ;;
    esac
    shift
done

target=${CARGO_TARGET_DIR:-$PWD/target}
out=$target/bench/scaling
rm -rf "$out"
mkdir -p "$out"
started=$SECONDS
load_before=$(cut -d" " -f1-3 /proc/loadavg)
say() { printf 'scaling: %s\n' "$*" >&2; }

# progress LINE: one short line per cell on stderr.
progress() {
    awk '/^scaling: .*cpus=[0-9]+ alloc=/ {
        side = "kernel"; n = a = w = ops = ""
        for (i = 2; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "side") side = kv[2]
            if (kv[1] == "cpus") n = kv[2]
            if (kv[1] == "alloc") a = kv[2]
            if (kv[1] == "workload") w = kv[2]
            if (kv[1] == "ops_per_s") ops = kv[2]
        }
        printf "scaling: %-6s %2s CPUs %-22s %-9s %9.2f Mops/s\n", side, n, a, w, ops / 1e6 > "/dev/stderr"
        fflush("/dev/stderr")
    }'
}

say "building bench/ and the kernel (release)"
cargo build --release --quiet -p bench
[ "$kernel" -eq 0 ] || cargo build --release --quiet -p kernel --target x86_64-unknown-none
logs=()

if [ "$kernel" -eq 1 ]; then
    # What QEMU's TCG does to the figures: the TSC counts host time spent emulating, a
    # vCPU is a host thread, and with more vCPUs than cores they time-share.
    for n in ${cpus//,/ }; do
        log=$out/kernel-smp$n.log
        say "kernel: booting -smp $n under TCG, ${accel[*]} (log: $log)"
        status=0
        # Time-out: 12 cells of 1.25 x ms, with slack for boots on an oversubscribed host.
        limit=$(( 120 + 12 * ms * 5 / 4 / 1000 * 4 ))
        timeout "$limit" qemu-system-x86_64 -machine pc -m 256M -smp "$n" \
            -kernel "$target/x86_64-unknown-none/release/kernel" \
            -display none -serial stdio -monitor none -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            "${accel[@]}" \
            -append "bench=scaling bench_ms=$ms loglevel=warn" 2>&1 |
            tr -d '\r' | tee "$log" | progress || status=${PIPESTATUS[0]}
        # isa-debug-exit: (0x10 << 1) | 1 = 33 is the kernel's success.
        if [ "$status" -ne 33 ]; then
            say "the kernel failed at -smp $n (QEMU status $status):"
            tail -20 "$log" >&2
            exit 1
        fi
        logs+=("$log")
    done
fi

if [ "$hosted" -eq 1 ]; then
    log=$out/hosted.log
    say "hosted: threads $cpus, $ms ms per cell (log: $log)"
    "$target/release/scaling" run --threads "$cpus" --ms "$ms" | tee "$log" | progress
    logs+=("$log")
fi

cores=$(nproc)
"$target/release/scaling" report --out "$out" --cores "$cores" --kernel-label "$label" "${logs[@]}" | tee "$out/table.txt"
machine="$(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $cores cores, \
$(qemu-system-x86_64 --version | head -1), load average before the run: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg), \
$ms ms per cell, kernel under ${accel[*]}"
echo "$machine" >"$out/machine.txt"
say "machine: $machine"
say "done in $((SECONDS - started)) s"

if [ "$save" -eq 1 ]; then
    dest=bench/results/$(date -u +%Y-%m-%d)
    mkdir -p "$dest"
    cp "$out"/scaling.csv "$out"/*.svg "$out"/*.log "$out"/table.txt "$out"/machine.txt "$dest"/
    say "saved to $dest"
fi
