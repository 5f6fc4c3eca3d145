#!/usr/bin/env bash
# The whole test suite: install missing packages, build, run ctest (unit tests + PyTorch
# twin tests, the server's API and browser tests; under a throwaway PostgreSQL server for the manifest's second backend), then rebuild everything under AddressSanitizer + UBSan and run the
# unit and twin tests and the server's quick API tests again, then build the libFuzzer harnesses (clang) and run each
# for OBORO_FUZZ_SECONDS (default 20) s. OBORO_SKIP_SANITIZE=1 / OBORO_SKIP_FUZZ=1 skip those stages.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
# Under a throwaway PostgreSQL server (tests/pg/with_server.sh sets OBORO_TEST_PG), so the manifest suites run on
# both backends and pg.concurrent_ingest runs.
tests/pg/with_server.sh bash -c 'cd build && ctest --output-on-failure -j"$(nproc)"'
if [ "${OBORO_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== sanitizer build (ASan + UBSan): every unit test, and the twin test on the sanitized binary =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DOBORO_SANITIZE=ON -DOBORO_NATIVE=OFF >/dev/null
  cmake --build build-asan -j"$(nproc)" --target oboro_tests oboro
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
  # under the throwaway PostgreSQL server too, so the manifest's PostgreSQL variants (libpq paths) run sanitized
  tests/pg/with_server.sh ./build-asan/tests/oboro_tests --gtest_brief=1
  /usr/bin/python3 tests/twin/test_dit_twin.py --oboro build-asan/oboro --workdir build-asan/twin_dit
  /usr/bin/python3 tests/twin/test_t5_twin.py --oboro build-asan/oboro --workdir build-asan/twin_t5
  # oboro serve's HTTP routes on the sanitized binary (the quick API tests; the server must exit 0, leak-free, on SIGTERM)
  /usr/bin/python3 tests/serve/test_api.py --oboro build-asan/oboro --workdir build-asan/serve_api \
    ServeApi.test_bad_inputs ServeApi.test_txt2img ServeApi.test_img2img ServeApi.test_openai ServeApi.test_png_info \
    ServeApi.test_listings_and_options ServeApi.test_health_metrics_ui ServeApi.test_origin_checks \
    ServeApi.test_job_lifecycle_and_events ServeProcess.test_api_key
fi
if [ "${OBORO_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz: every libFuzzer harness for ${OBORO_FUZZ_SECONDS:-20} s (scripts/fuzz.sh; docs/reliability.md) =="
  ./scripts/fuzz.sh "${OBORO_FUZZ_SECONDS:-20}"
fi
