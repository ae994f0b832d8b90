#!/bin/sh
# Builds every libFuzzer harness of netmorph::io with clang (-fsanitize=fuzzer,address,undefined;
# linked with zlib, which the IDX reader uses) and runs each for SECONDS (default 60) on a copy of
# its seed corpus under fuzz/corpus/. Exits non-zero when a harness does not build or a run finds
# a crash, leak, timeout or UB report.
# Usage: fuzz/run.sh [SECONDS] [BUILD_DIR]
set -eu
seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${2:-$root/build-fuzz}
cxx=${CXX_FUZZ:-clang++}
mkdir -p "$build"
build=$(cd "$build" && pwd)  # absolute: the runs below change into it
eigen=$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)
status=0
for harness in safetensors architecture idx; do
  bin="$build/fuzz_$harness"
  echo "== building $bin"
  # shellcheck disable=SC2086
  $cxx -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/include" $eigen "$here/fuzz_$harness.cpp" -o "$bin" -lz
  corpus="$build/corpus_$harness"
  rm -rf "$corpus" && mkdir -p "$corpus"
  cp "$here/corpus/$harness"/* "$corpus"/
  echo "== running fuzz_$harness for ${seconds}s"
  rm -f "$build/$harness"-crash-* "$build/$harness"-leak-* "$build/$harness"-timeout-* \
    "$build/$harness"-oom-*
  log="$build/fuzz_$harness.log"
  # The run's own exit status counts (a pipeline into tail would hide it), and so does any
  # artifact it wrote.
  if ! (cd "$build" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$bin" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$build/$harness-" -print_final_stats=1 "$corpus" \
        "$here/corpus/$harness" >"$log" 2>&1); then
    status=1
  fi
  tail -n 25 "$log"
  if ls "$build/$harness"-crash-* "$build/$harness"-leak-* "$build/$harness"-timeout-* \
    "$build/$harness"-oom-* >/dev/null 2>&1; then
    echo "== fuzz_$harness found a failure:"
    ls "$build/$harness"-* 2>/dev/null || true
    status=1
  fi
done
exit $status
