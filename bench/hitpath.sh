#!/usr/bin/env bash
# scripts/bench hitpath: instructions per 64-byte alloc+free pair, counted exactly.
#
#   hosted   bench/ (binary `hitpath`) under valgrind --tool=callgrind, counting only
#            its `measured` function (--toggle-collect), for N and 2N iterations: the
#            difference is N iterations of steady state, with nothing counted once per
#            run left in it. Then the same for the null allocator (the harness loop
#            alone), which is subtracted from every row. Peers in the same run: glibc,
#            mimalloc, talc (spin lock, arena), linked_list_allocator (LockedHeap), and
#            ours with per-CPU caches on and off, all through GlobalAlloc.
#   kernel   the kernel built in release and in debug, booted with bench=hitpath under
#            QEMU -icount shift=0 -accel tcg,thread=single, where the TSC counts
#            instructions (kernel/src/bench_hitpath.rs).
#
# Usage: scripts/bench hitpath [--check] [--hosted-only] [--kernel-only] [--iters N]
#   --check        CI guard: ours (per-CPU on), pairs, hosted only; exits 1 when the
#                  count exceeds the budget in bench/hitpath-budget.txt.
#   --iters N      iterations (pairs) per hosted count (default 100000; rounds are
#                  rounded to whole rounds of 1024).
# Output: a table at the end, target/bench/hitpath.csv, the callgrind files and the
# kernel logs under target/bench/hitpath/.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0 hosted=1 kernel=1 iters=100000
while [ "$#" -gt 0 ]; do
    case "$1" in
        --check) check=1 kernel=0 ;;
        --hosted-only) kernel=0 ;;
        --kernel-only) hosted=0 ;;
        --iters) iters=${2:?--iters needs a number}; shift ;;
        *) echo "usage: scripts/bench hitpath [--check] [--hosted-only] [--kernel-only] [--iters N]" >&2
           exit 64 ;;
    esac
    shift
done

target=${CARGO_TARGET_DIR:-$PWD/target}
out=$target/bench/hitpath
mkdir -p "$out"
budget_file=bench/hitpath-budget.txt

say() { printf 'hitpath: %s\n' "$*" >&2; }

# --- hosted: callgrind ------------------------------------------------------------

ensure_valgrind() {
    command -v valgrind >/dev/null 2>&1 && return
    say "installing valgrind"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        valgrind >/dev/null
}

# count ALLOC WORKLOAD ITERS: instructions callgrind counted inside `measured`.
count() {
    local file=$out/callgrind.$1.$2.$3
    valgrind --tool=callgrind --toggle-collect='*::measured' --dump-instr=no \
        --callgrind-out-file="$file" \
        "$target/release/hitpath" --alloc "$1" --workload "$2" --iters "$3" \
        >"$file.log" 2>&1 || { say "callgrind failed for $1 $2:"; cat "$file.log" >&2; exit 1; }
    local total
    total=$(sed -n 's/^summary: *//p; s/^totals: *//p' "$file" | head -1)
    [ -n "$total" ] || { say "no count in $file"; exit 1; }
    echo "$total"
}

# per_pair ALLOC WORKLOAD: (count(2N) - count(N)) / N, one decimal.
per_pair() {
    local n=$iters
    [ "$2" = rounds ] && n=$(( (iters + 1023) / 1024 * 1024 ))
    local one two
    one=$(count "$1" "$2" "$n")
    two=$(count "$1" "$2" $((2 * n)))
    awk -v a="$one" -v b="$two" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }'
}

sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

declare -A figure=()
rows=()

if [ "$hosted" -eq 1 ]; then
    ensure_valgrind
    say "building bench/ (release)"
    cargo build --release --quiet -p bench
    if [ "$check" -eq 1 ]; then
        allocators=(ours) workloads=(pairs)
    else
        allocators=(ours ours-nopercpu glibc mimalloc talc linked_list_allocator)
        workloads=(pairs rounds)
    fi
    for workload in "${workloads[@]}"; do
        harness=$(per_pair null "$workload")
        figure["hosted|harness|$workload"]=$harness
        for alloc in "${allocators[@]}"; do
            raw=$(per_pair "$alloc" "$workload")
            figure["hosted|$alloc|$workload"]=$(sub "$raw" "$harness")
            say "hosted $alloc $workload: ${figure["hosted|$alloc|$workload"]} (raw $raw, harness $harness)"
        done
    done
    for alloc in "${allocators[@]}"; do rows+=("hosted|$alloc"); done
fi

if [ "$check" -eq 1 ]; then
    budget=$(sed -n 's/^pairs[[:space:]]\{1,\}\([0-9.]\{1,\}\).*/\1/p' "$budget_file")
    [ -n "$budget" ] || { say "no 'pairs N' line in $budget_file"; exit 1; }
    got=${figure["hosted|ours|pairs"]}
    if awk -v g="$got" -v b="$budget" 'BEGIN { exit !(g > b) }'; then
        say "FAILED: ours (per-CPU on) pairs costs $got instructions per pair, over the budget of $budget ($budget_file)"
        exit 1
    fi
    say "ok: ours (per-CPU on) pairs costs $got instructions per pair (budget $budget, $budget_file)"
    exit 0
fi

# --- kernel: QEMU with -icount ----------------------------------------------------

if [ "$kernel" -eq 1 ]; then
    for build in release debug; do
        say "building the kernel ($build)"
        flag=()
        [ "$build" = release ] && flag=(--release)
        cargo build --quiet -p kernel --target x86_64-unknown-none "${flag[@]}"
        log=$out/kernel-$build.log
        say "booting it with -icount shift=0 (log: $log)"
        status=0
        timeout 600 qemu-system-x86_64 -machine pc -m 128M -smp 1 \
            -kernel "$target/x86_64-unknown-none/$build/kernel" \
            -display none -serial stdio -monitor none -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            -accel tcg,thread=single -icount shift=0 \
            -append "bench=hitpath timer_hz=1 loglevel=warn" >"$log" 2>&1 || status=$?
        # isa-debug-exit: (33 << 1) | 1 = 33 is the kernel's success.
        if [ "$status" -ne 33 ]; then
            say "the $build kernel failed (QEMU status $status):"
            tail -20 "$log" >&2
            exit 1
        fi
        while read -r _ api workload value rest; do
            figure["kernel-$build|$api|$workload"]=$value
            figure["kernel-$build|$api|$workload|moved"]=$(sed -n 's/.* moved \([0-9.]*\) objects\/pair.*/\1/p' <<<"$rest")
            case " ${rows[*]} " in
                *" kernel-$build|$api "*) ;;
                *) rows+=("kernel-$build|$api") ;;
            esac
        done < <(grep -E '^hitpath: [a-z_-]+ (pairs|rounds) [0-9.]+ insns/pair' "$log")
    done
fi

# --- the table and the CSV --------------------------------------------------------

label() {
    local side=${1%%|*} name=${1#*|}
    case "$name" in
        ours) name="ours (per-CPU on)" ;;
        ours-nopercpu) name="ours (per-CPU off)" ;;
        *-nopercpu) name="${name%-nopercpu} (per-CPU off)" ;;
    esac
    case "$side" in
        hosted) echo "hosted $name" ;;
        kernel-*) echo "kernel ${side#kernel-}: $name" ;;
    esac
}
ratio() {
    local mine=${figure["$1|$2"]:-} peer=${figure["hosted|mimalloc|$2"]:-}
    if [ -n "$mine" ] && [ -n "$peer" ]; then
        awk -v a="$mine" -v b="$peer" 'BEGIN { printf "%.2fx", a / b }'
    else
        echo "-"
    fi
}

csv=$target/bench/hitpath.csv
echo "side,allocator,workload,insns_per_pair,x_mimalloc" >"$csv"
echo
echo "instructions per 64-byte alloc+free pair (net of the harness loop; x mimalloc = / hosted mimalloc)"
printf '%-44s %10s %10s %12s %12s\n' "" pairs rounds "pairs x mim" "rounds x mim"
for row in "${rows[@]}"; do
    printf '%-44s %10s %10s %12s %12s\n' "$(label "$row")" \
        "${figure["$row|pairs"]:--}" "${figure["$row|rounds"]:--}" \
        "$(ratio "$row" pairs)" "$(ratio "$row" rounds)"
    for workload in pairs rounds; do
        value=${figure["$row|$workload"]:-}
        [ -n "$value" ] || continue
        r=$(ratio "$row" "$workload")
        echo "${row%%|*},${row#*|},$workload,$value,${r%x}" >>"$csv"
    done
done
if [ "$kernel" -eq 1 ]; then
    echo
    echo "refill and flush, kernel: instructions per object moved between a per-CPU array and the slabs"
    echo "(rounds - pairs) / objects moved per pair of rounds, counted by the arrays (refills + flushes) x batchcount"
    for row in "${rows[@]}"; do
        moved=${figure["$row|rounds|moved"]:-}
        case "$row" in kernel-*) ;; *) continue ;; esac
        awk -v m="${moved:-0}" 'BEGIN { exit !(m > 0) }' || continue
        awk -v p="${figure["$row|pairs"]}" -v r="${figure["$row|rounds"]}" -v m="$moved" -v name="$(label "$row")" \
            'BEGIN { printf "%-44s %10.1f   (%.3f objects moved per pair)\n", name, (r - p) / m, m }'
    done
fi
if [ "$hosted" -eq 1 ]; then
    echo "(hosted harness loop, subtracted above: ${figure["hosted|harness|pairs"]} per pair on pairs," \
        "${figure["hosted|harness|rounds"]} on rounds; the kernel subtracts its own empty loop)"
    echo
    echo "where ours (per-CPU on) spends a pair, hosted (callgrind, inclusive, per pair):"
    "$target/release/hitpath" --profile "$out/callgrind.ours.pairs.$iters" --per "$iters" --top 15
fi
echo
echo "CSV: $csv"
