#!/usr/bin/env bash
# Fuzzes every parser that reads bytes from the network or the operator (fuzz/, cargo-fuzz
# and libFuzzer, coverage-guided): draft-cavage and RFC 9421 signatures, digests, public
# keys, actor documents, JWKS files and JWTs, the blocklist file, the config and the
# upstream HTTP/1.1 response parser. A panic, a crash, an input that runs longer than the
# timeout, an allocation past the bound of fuzz/src/lib.rs or an RSS past -rss_limit_mb
# fails the run, and libFuzzer saves the input under target/fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh smoke [SECONDS]  the inputs of fuzz/regressions/<target> once, then
#                                         each target for SECONDS (default 15), as the test
#                                         command runs it
#   bash scripts/fuzz.sh long [RUNS]      each target for RUNS executions (default 10000000),
#                                         one after another; figures in target/fuzz/report.txt
#   bash scripts/fuzz.sh run TARGET [libFuzzer flags...]
#                                         one target as long as you like (Ctrl-C ends it)
#   bash scripts/fuzz.sh merge            adds the inputs of target/fuzz/corpus/<target> that
#                                         reach new coverage to fuzz/corpus/<target>
#
# FUZZ_TARGETS="cavage jwt" limits any mode to those targets. Installs cargo-fuzz (from
# crates.io) when it is missing. The targets are built on the pinned stable toolchain without
# a sanitizer (the gateway has no unsafe code; fuzz/src/lib.rs bounds allocations instead),
# into target/fuzz so that the main target directory keeps its builds. Inputs the fuzzer
# finds go to target/fuzz/corpus/<target>; the committed seeds in fuzz/corpus/<target>
# (fuzz/seeds.py writes them) are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-smoke}"
[ $# -gt 0 ] && shift

all_targets=(cavage rfc9421 digest key actor jwt blocklist config h1_response activity)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"

# The largest input each target is given (its parser's realistic inputs are smaller; the
# response parser's head limit is 64 KiB, so its inputs may pass it).
max_len() {
  case "$1" in
    actor | config) echo 16384 ;;
    h1_response) echo 69632 ;;
    *) echo 8192 ;;
  esac
}

fuzz_dir="$PWD/target/fuzz"
report="$fuzz_dir/report.txt"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$fuzz_dir/$triple/release"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
# The pinned toolchain (rust-toolchain.toml), whatever the default is.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install || true

build() {
  local t
  for t in "${targets[@]}"; do
    echo "building fuzz target $t" >&2
    cargo fuzz build --sanitizer none --codegen-units 16 --target-dir "$fuzz_dir" "$t"
  done
}

# libFuzzer's flags for target $1, then extra ones.
flags() {
  local t="$1"
  shift
  local f=(
    -max_len="$(max_len "$t")"
    -timeout=10
    -rss_limit_mb=2048
    -print_final_stats=1
    -artifact_prefix="$fuzz_dir/artifacts/$t/"
  )
  [ -f "fuzz/dicts/$t.dict" ] && f+=(-dict="fuzz/dicts/$t.dict")
  printf '%s\n' "${f[@]}" "$@"
}

# Runs target $1 with extra libFuzzer flags; its output goes to $fuzz_dir/logs/$1.log.
# Fails when the target fails.
run() {
  local t="$1"
  shift
  mkdir -p "$fuzz_dir/corpus/$t" "$fuzz_dir/artifacts/$t" "$fuzz_dir/logs"
  local args
  mapfile -t args < <(flags "$t" "$@")
  # The request path runs on tokio's worker threads, whose stacks are 2 MiB: so does the
  # fuzzer, so that an input nesting deep enough to overflow one is found.
  (
    ulimit -s 2048
    exec "$bin_dir/$t" "${args[@]}" "$fuzz_dir/corpus/$t" "fuzz/corpus/$t"
  ) >"$fuzz_dir/logs/$t.log" 2>&1
}

# Runs every input of fuzz/regressions/$1 once through target $1, whatever its length.
replay() {
  local t="$1"
  local dir="fuzz/regressions/$t"
  [ -d "$dir" ] || return 0
  mkdir -p "$fuzz_dir/artifacts/$t" "$fuzz_dir/logs"
  (
    ulimit -s 2048
    exec "$bin_dir/$t" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$fuzz_dir/artifacts/$t/" "$dir"/*
  ) >"$fuzz_dir/logs/$t.log" 2>&1 && echo "fuzz $t: regressions ok ($(ls "$dir" | wc -l) inputs)"
}

# The figures of target $1's last run, from its log: one line.
figures() {
  local log="$fuzz_dir/logs/$1.log"
  local runs eps rss done_line
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  eps="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
  rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)"
  done_line="$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/^#[0-9]+[[:space:]]+[A-Z]+[[:space:]]+//')"
  echo "executions=${runs:-?} exec/s=${eps:-?} peak_rss_mb=${rss:-?} | ${done_line:-no status line}"
}

# When target $1 failed: what libFuzzer said, and the input it saved.
failure() {
  local log="$fuzz_dir/logs/$1.log"
  echo "FAILED: fuzz target $1 (log: $log)" >&2
  grep -E -A 12 "panicked at|ERROR: libFuzzer|fedgate-fuzz:|overflowed its stack" "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
  ls -1 "$fuzz_dir/artifacts/$1/" >&2 2>/dev/null || true
}

case "$mode" in
  smoke)
    seconds="${1:-15}"
    build
    failed=()
    for t in "${targets[@]}"; do
      if ! replay "$t"; then
        failure "$t"
        failed+=("$t")
        continue
      fi
      start=$SECONDS
      if run "$t" -max_total_time="$seconds"; then
        echo "fuzz $t: ok in $((SECONDS - start)) s, $(figures "$t")"
      else
        failure "$t"
        failed+=("$t")
      fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
      exit 1
    fi
    echo "fuzz: ${#targets[@]} passed, 0 failed"
    ;;
  long)
    runs="${1:-10000000}"
    build
    mkdir -p "$fuzz_dir"
    {
      echo "fedgate fuzzing, $(date -u +%Y-%m-%dT%H:%M:%SZ), $runs executions per target"
      echo "$(rustc --version), $(cargo fuzz --version 2>/dev/null | head -n 1), $(nproc) cores"
      echo "columns: target, result, wall time; libFuzzer's final stats; its last status line (cov = edges covered, ft = features, corp = corpus units/bytes)"
    } >"$report"
    failed=()
    for t in "${targets[@]}"; do
      start=$SECONDS
      if run "$t" -runs="$runs"; then
        result=ok
      else
        result=FAILED
        failure "$t"
        failed+=("$t")
      fi
      line="$t $result $((SECONDS - start))s $(figures "$t")"
      echo "$line" | tee -a "$report"
    done
    echo "report: $report"
    [ ${#failed[@]} -eq 0 ] || exit 1
    ;;
  run)
    t="${1:?usage: fuzz.sh run TARGET [libFuzzer flags]}"
    shift
    targets=("$t")
    build
    mkdir -p "$fuzz_dir/corpus/$t" "$fuzz_dir/artifacts/$t"
    mapfile -t args < <(flags "$t" "$@")
    ulimit -s 2048
    exec "$bin_dir/$t" "${args[@]}" "$fuzz_dir/corpus/$t" "fuzz/corpus/$t"
    ;;
  merge)
    build
    for t in "${targets[@]}"; do
      mkdir -p "$fuzz_dir/corpus/$t" "$fuzz_dir/logs"
      mapfile -t args < <(flags "$t" -merge=1)
      (ulimit -s 2048 && "$bin_dir/$t" "${args[@]}" "fuzz/corpus/$t" "$fuzz_dir/corpus/$t") \
        >"$fuzz_dir/logs/$t.merge.log" 2>&1
      echo "fuzz $t: $(find "fuzz/corpus/$t" -type f | wc -l) inputs in fuzz/corpus/$t"
    done
    ;;
  *)
    echo "usage: bash scripts/fuzz.sh smoke [SECONDS] | long [RUNS] | run TARGET [flags] | merge" >&2
    exit 2
    ;;
esac
