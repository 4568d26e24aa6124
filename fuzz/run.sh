#!/bin/sh
# Runs every fuzz target once, one after the other, single job, then minimises its corpus into
# fuzz/corpus/<target>. Usage: fuzz/run.sh [seconds per target, default 600] [targets...]
# Each target runs for the whole time; FUZZ_RUNS=N stops a target after N executions instead.
# Needs cargo-fuzz; builds with `-s none` (stable toolchain, no sanitizer). See FUZZING.md.
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-"usage classify emulator_validate estimate estimate_vs_emulator first_frame settle emulator_http extremes"}
runs=${FUZZ_RUNS:--1}
cargo fuzz build -s none
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p logs artifacts work
for t in $targets; do
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    # -max_total_time stops at $secs seconds; -runs=-1 (the default) never stops it earlier.
    "$bin/$t" "work/$t" "corpus/$t" "seeds/$t" -dict=bedrock.dict \
        -max_total_time="$secs" -runs="$runs" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 > "logs/$t.log" 2>&1 || true
    tail -n 30 "logs/$t.log" | grep -E "^(#[0-9]+|stat::)|ERROR|SUMMARY" || true
    # Keep a minimal corpus that covers the same features, inputs of at most 2 KiB.
    rm -rf "corpus/$t.new" && mkdir -p "corpus/$t.new"
    "$bin/$t" -merge=1 -max_len=2048 "corpus/$t.new" "work/$t" "corpus/$t" > "logs/$t.merge.log" 2>&1
    rm -rf "corpus/$t" && mv "corpus/$t.new" "corpus/$t"
done
