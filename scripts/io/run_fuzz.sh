#!/usr/bin/env bash
# run_fuzz.sh: builds the fuzz targets (tests/fuzz/fuzz_*.cpp with the nn/io reader sources, autograd,
# mo's own checkpoint reader, the image decoders and transforms of data/, and the recipe reader; no CMake) using clang++ with libFuzzer,
# ASan and UBSan, then runs each one for a fixed time on a copy of its seed corpus (tests/fuzz/corpus/<target>/,
# left unchanged). Exits non-zero on the first crash, leak, timeout or sanitizer report; the reproducer
# is saved in the build directory.
#
# UBSan runs with its integer-overflow checks, unsigned ones included: the readers combine sizes read
# from files only through nn/io/byte_reader.h's checked_add/checked_mul, so any other wrap of an
# unsigned value in the instrumented code is a bug. System headers (libstdc++, fmt, protobuf), whose
# hashing wraps on purpose, are left out by tests/fuzz/ubsan_ignorelist.txt.
#
#   scripts/io/run_fuzz.sh [SECONDS_PER_TARGET (default 20)] [BUILD_DIR (default build-fuzz)]
#
# Needs clang++ with libFuzzer, libfmt-dev, libprotobuf-dev and protoc. Debian 12: apt-get install
# clang-14 libclang-rt-14-dev libfmt-dev libprotobuf-dev protobuf-compiler. Override the compiler with CXX=...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
out=${2:-$root/build-fuzz}
cxx=${CXX:-$(command -v clang++ || command -v clang++-14 || true)}
if [[ -z "$cxx" ]] || ! "$cxx" --version | grep -q clang; then
  echo "run_fuzz.sh: clang++ not found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 2
fi
protoc=$(command -v protoc || true)
[[ -n "$protoc" ]] || { echo "run_fuzz.sh: protoc not found (Debian: apt-get install protobuf-compiler)" >&2; exit 2; }
mkdir -p "$out"
san=(-fsanitize=address,undefined,unsigned-integer-overflow -fno-sanitize-recover=all
     -fsanitize-ignorelist="$root/tests/fuzz/ubsan_ignorelist.txt")
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer "${san[@]}" -I"$root" -I"$out")
"$protoc" -I "$root" --cpp_out="$out" "$root/tools/engine/checkpoint.proto"
sources=(nn/io/raw_tensor nn/io/zip_reader nn/io/zip_writer nn/io/pickle_reader nn/io/pth nn/io/json_lite
         nn/io/safetensors nn/io/tensor_convert nn/io/file_read autograd/check autograd/storage autograd/tensor autograd/graph
         autograd/cpu_only_stubs tools/engine/checkpoint tools/engine/crc32c)
targets=(fuzz_pth fuzz_torch_pickle fuzz_safetensors fuzz_to_tensor fuzz_mo_checkpoint)

objs=()
for s in "${sources[@]}"; do  # instrumented for coverage but without libFuzzer's main
  o="$out/$(basename "$s").o"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/$s.cpp" -o "$o"
  objs+=("$o")
done
"$cxx" "${flags[@]}" -w -c "$out/tools/engine/checkpoint.pb.cc" -o "$out/checkpoint.pb.o"  # generated code
objs+=("$out/checkpoint.pb.o")
for t in "${targets[@]}"; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/$t.cpp" "${objs[@]}" -lprotobuf -lfmt -lz -lpthread -o "$out/$t"
done
# the image decoders, over Debian's libpng, libwebp and libjpeg (not instrumented)
img_objs=()
for s in data/image_decode data/jpeg autograd/check; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/$s.cpp" -o "$out/img_$(basename "$s").o"
  img_objs+=("$out/img_$(basename "$s").o")
done
"$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_image_decode.cpp" "${img_objs[@]}" -lpng -lwebpdemux -lwebp -ljpeg \
  -lfmt -o "$out/fuzz_image_decode"
# the transforms on top of them (windowed decode, resample, RandAugment; the scalar and AVX2 kernels both
# run: the dispatch picks what the CPU has), seeded with its own JPEGs and the decoders' PNG and WebP files
for s in data/transforms data/rand_augment data/augment_ops data/resample autograd/cpu_isa; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/$s.cpp" -o "$out/img_$(basename "$s").o"
  img_objs+=("$out/img_$(basename "$s").o")
done
"$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_transforms.cpp" "${img_objs[@]}" -lpng -lwebpdemux -lwebp -ljpeg \
  -lfmt -o "$out/fuzz_transforms"
targets+=(fuzz_image_decode fuzz_transforms)
# the training recipe (YAML through the key registry, the range checks, the dump), over Debian's yaml-cpp
rec_objs=()
for s in tools/engine/config_schema tools/engine/train_config tools/engine/recipe_path tools/engine/schedule autograd/check; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/$s.cpp" -o "$out/rec_$(basename "$s").o"
  rec_objs+=("$out/rec_$(basename "$s").o")
done
"$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_recipe.cpp" "${rec_objs[@]}" -lyaml-cpp -lfmt -o "$out/fuzz_recipe"
targets+=(fuzz_recipe)
echo "run_fuzz.sh: built ${targets[*]} in $out"

status=0
for t in "${targets[@]}"; do
  work="$out/corpus/$t"  # new inputs go here; the committed seeds are only read
  extra=()  # the transforms also start from the decoders' PNG and WebP seeds
  [[ $t == fuzz_transforms ]] && extra=("$root/tests/fuzz/corpus/fuzz_image_decode")
  mkdir -p "$work" "$out/artifacts"
  echo "run_fuzz.sh: $t for ${secs}s"
  if ! "$out/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$out/artifacts/$t-" "$work" "$root/tests/fuzz/corpus/$t" "${extra[@]}" >"$out/$t.log" 2>&1; then
    echo "run_fuzz.sh: $t FAILED; see $out/$t.log and $out/artifacts/" >&2
    tail -40 "$out/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$t.log" | tr '\n' ' '
    echo
  fi
done
exit $status
