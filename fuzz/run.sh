#!/bin/sh
# Builds every libFuzzer harness of netmorph::io with clang (-fsanitize=fuzzer,address,undefined;
# linked with zlib, which the IDX reader uses) and runs each for SECONDS (default 60) on a copy of
# its seed corpus under fuzz/corpus/, all of them side by side. Exits non-zero when a harness
# does not build or a run finds a crash, leak, timeout or UB report.
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
harnesses="safetensors architecture idx"

# build HARNESS: compiles one harness; its compiler output goes to its build log.
build() {
  # shellcheck disable=SC2086
  $cxx -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/include" $eigen "$here/fuzz_$1.cpp" -o "$build/fuzz_$1" -lz \
    >"$build/build_$1.log" 2>&1
}

# fuzz HARNESS: runs one harness for SECONDS on a fresh copy of its seed corpus. Its own exit
# status counts, and so does any artifact it wrote.
fuzz() {
  corpus="$build/corpus_$1"
  rm -rf "$corpus" && mkdir -p "$corpus"
  cp "$here/corpus/$1"/* "$corpus"/
  rm -f "$build/$1"-crash-* "$build/$1"-leak-* "$build/$1"-timeout-* "$build/$1"-oom-*
  (cd "$build" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$build/fuzz_$1" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$build/$1-" -print_final_stats=1 "$corpus" "$here/corpus/$1" \
    >"$build/fuzz_$1.log" 2>&1) || return 1
  ! ls "$build/$1"-crash-* "$build/$1"-leak-* "$build/$1"-timeout-* "$build/$1"-oom-* \
    >/dev/null 2>&1
}

# The harnesses are built, then run, side by side (the machine's cores share them); each
# result is collected by its own `wait`, so one failure cannot hide another.
status=0
pids=""
for h in $harnesses; do
  echo "== building $build/fuzz_$h"
  build "$h" &
  pids="$pids $!"
done
set -- $pids
for h in $harnesses; do
  if ! wait "$1"; then
    echo "== fuzz_$h did not build:"
    cat "$build/build_$h.log"
    status=1
  fi
  shift
done
[ $status -eq 0 ] || exit $status
pids=""
for h in $harnesses; do
  echo "== running fuzz_$h for ${seconds}s"
  fuzz "$h" &
  pids="$pids $!"
done
set -- $pids
for h in $harnesses; do
  ok=1
  wait "$1" || ok=0
  shift
  echo "== fuzz_$h:"
  tail -n 25 "$build/fuzz_$h.log"
  if [ $ok -eq 0 ]; then
    echo "== fuzz_$h found a failure:"
    ls "$build/$h"-* 2>/dev/null || true
    status=1
  fi
done
exit $status
