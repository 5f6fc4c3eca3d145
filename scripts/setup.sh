#!/usr/bin/env bash
# Install every Debian 12 package oboro needs (idempotent: installs only what is missing).
# Run as root, or as a user with sudo.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config git
  libopenblas-dev            # CPU GEMM
  nlohmann-json3-dev libcli11-dev libtomlplusplus-dev
  libsentencepiece-dev       # tokenizer (T5 spiece.model) and vocabulary training
  libstb-dev libpng-dev libwebp-dev   # image decode (PNG/JPEG/WebP), PNG with text chunks
  libsqlite3-dev             # data manifest (oboro data ingest/dedup/...)
  libcpp-httplib-dev         # oboro serve (HTTP server) and train notifications (HTTP client)
  libopenmpi-dev openmpi-bin # data-parallel training: mpirun -np N oboro train (src/dist/, docs/distributed.md)
  libpq-dev                  # PostgreSQL manifest (--manifest postgresql://...; src/data/pg_db.*)
  postgresql                 # a throwaway server for the PostgreSQL manifest tests (tests/pg/with_server.sh)
  chromium                   # the web UI's browser test (driven by npm playwright-core; never downloads a browser)
  librsvg2-bin               # rsvg-convert: DiceBear SVG avatars → PNG (scripts/get-data)
  libgtest-dev googletest    # tests
  clang libclang-rt-14-dev   # libFuzzer harnesses (fuzz/, scripts/fuzz.sh): clang's fuzzer + ASan/UBSan runtimes
  python3 python3-torch python3-numpy   # the PyTorch twin (test oracle)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# scripts/get-data (licensed training data from npm) needs node and npm: Debian's nodejs + npm
# unless some node with npm is already there (e.g. one that bundles npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
