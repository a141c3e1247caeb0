#!/usr/bin/env bash
# run_fuzz.sh: builds the checkpoint-reader fuzz targets (tests/fuzz/fuzz_*.cpp with the nn/io reader
# sources, no CMake) using clang++ -fsanitize=fuzzer,address,undefined, then runs each one for a fixed
# time on a copy of its seed corpus (tests/fuzz/corpus/<target>/, left unchanged). Exits non-zero on the
# first crash, leak, timeout or sanitizer report; the reproducer is saved in the build directory.
#
#   scripts/io/run_fuzz.sh [SECONDS_PER_TARGET (default 20)] [BUILD_DIR (default build-fuzz)]
#
# Needs clang++ with libFuzzer and libfmt-dev. Debian 12: apt-get install clang-14 libclang-rt-14-dev
# (the `clang` metapackage pulls both). Override the compiler with CXX=...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
out=${2:-$root/build-fuzz}
cxx=${CXX:-$(command -v clang++ || command -v clang++-14 || true)}
if [[ -z "$cxx" ]] || ! "$cxx" --version | grep -q clang; then
  echo "run_fuzz.sh: clang++ not found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 2
fi
mkdir -p "$out"
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -I"$root")
sources=(raw_tensor zip_reader zip_writer pickle_reader pth json_lite safetensors)
targets=(fuzz_pth fuzz_torch_pickle fuzz_safetensors)

objs=()
for s in "${sources[@]}"; do  # the readers, instrumented for coverage but without libFuzzer's main
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/nn/io/$s.cpp" -o "$out/$s.o"
  objs+=("$out/$s.o")
done
for t in "${targets[@]}"; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/$t.cpp" "${objs[@]}" -lfmt -o "$out/$t"
done
echo "run_fuzz.sh: built ${targets[*]} in $out"

status=0
for t in "${targets[@]}"; do
  work="$out/corpus/$t"  # new inputs go here; the committed seeds are only read
  mkdir -p "$work" "$out/artifacts"
  echo "run_fuzz.sh: $t for ${secs}s"
  if ! "$out/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$out/artifacts/$t-" "$work" "$root/tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1; then
    echo "run_fuzz.sh: $t FAILED; see $out/$t.log and $out/artifacts/" >&2
    tail -40 "$out/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$t.log" | tr '\n' ' '
    echo
  fi
done
exit $status
