#!/usr/bin/env bash
# The web UI's browser test (ctest serve.browser): Debian's chromium driven by npm playwright-core, which is
# installed from tests/serve/package-lock.json into WORKDIR/npm (`npm ci`; playwright-core never downloads a browser).
# Skips (exit 77) only when chromium is not installed.
#   tests/serve/run_browser_test.sh build/oboro WORKDIR [--docs-screenshot docs/serve-ui.png]
set -euo pipefail
OBORO=$(realpath "$1")
mkdir -p "$2"
WORK=$(realpath "$2")
shift 2
SRC=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${OBORO_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "SKIP: $CHROMIUM is not installed (scripts/setup.sh installs Debian's chromium)"
  exit 77
fi
command -v node >/dev/null && command -v npm >/dev/null || { echo "node/npm missing: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$WORK/npm"
if [ ! -f "$WORK/npm/node_modules/playwright-core/package.json" ] || ! cmp -s "$SRC/package-lock.json" "$WORK/npm/package-lock.json"; then
  cp "$SRC/package.json" "$SRC/package-lock.json" "$WORK/npm/"
  (cd "$WORK/npm" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec node "$SRC/browser_test.cjs" --oboro "$OBORO" --workdir "$WORK" --node-modules "$WORK/npm/node_modules" \
  --chromium "$CHROMIUM" "$@"
