#!/usr/bin/env bash
# Runs every fuzz target for ${FUZZ_SECONDS:-60} seconds, each with its growing corpus
# (fuzz/corpus/<target>, not committed) and its committed seeds (fuzz/seeds/<target>).
# Exits non-zero if any target crashes, times out or leaks past the memory limit; the input is
# left in fuzz/artifacts/<target>/ and the log in fuzz/logs/<target>.log.
#
#   fuzz/run.sh                                  # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh batch_open      # one target, 10 min
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked). Builds go to
# ${CARGO_TARGET_DIR:-/tmp/fuzz-target}, so the workspace's target/ is never locked.
set -uo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/fuzz-target}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(modbus_decode batch_open evidence_parse agent_config gateway_config mqtt_guard)
fi

cargo +nightly fuzz build || exit 2
mkdir -p logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "=== $t: ${seconds} s"
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        </dev/null >"logs/$t.log" 2>&1; then
        grep -E "^#[0-9]+[[:space:]]+DONE" "logs/$t.log" | tail -n 1
    else
        failed+=("$t")
        echo "!!! $t failed: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "logs/$t.log" | head -n 5
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "ok: ${targets[*]} (${seconds} s each, no crash)"
