#!/usr/bin/env bash
# The whole test suite: install missing packages, build, run ctest (unit tests + PyTorch
# twin tests), then rebuild the file-parsing tests under AddressSanitizer + UBSan and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)")
if [ "${OBORO_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== sanitizer build (ASan + UBSan): parsers, corrupted files, bad CLI input =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DOBORO_SANITIZE=ON -DOBORO_NATIVE=OFF >/dev/null
  cmake --build build-asan -j"$(nproc)" --target oboro_tests oboro
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ./build-asan/tests/oboro_tests --gtest_filter='Safetensors*:TensorSource*:InfoCommand*:DType*:DtypeF8*:Cli*:Tensor.*:DiT.Load*:DiTConfig*'
fi
