#!/bin/sh
# Run the proxy tests against the fast lane built with AddressSanitizer and
# UndefinedBehaviorSanitizer. The instrumented extension is built in a scratch copy of the
# working tree (never in src/), which is deleted afterwards; see docs/proxy.md.
#
#   scripts/fastlane-sanitize.sh                 # tests/proxy (no browser tests)
#   scripts/fastlane-sanitize.sh -k fastlane -x  # extra arguments go to pytest
#
# Environment: PYTHON (default .venv/bin/python), CC (default gcc), TESTS (default
# tests/proxy), KEEP=1 keeps the scratch copy.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
CC=${CC:-gcc}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/parlour-fastlane-asan.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "scratch copy: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

mkdir -p "$WORK/src"
cp -R "$ROOT/src/parlour" "$WORK/src/"
cp -R "$ROOT/tests" "$WORK/"
cp "$ROOT/pyproject.toml" "$WORK/"
rm -f "$WORK"/src/parlour/proxy/_fastlane*.so
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +

# The same sources and warnings as setup.py, compiled directly: setup.py reads
# pyproject.toml, which needs a newer setuptools than the venv's (pip builds in isolation).
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
INCLUDE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SUFFIX=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
FL="$WORK/src/parlour/proxy"
# With OpenSSL's headers (libssl-dev), TLS in the engine too, as setup.py builds it.
TLS=""
if printf '#include <openssl/ssl.h>\nint main(void){return SSL_CTX_new(TLS_server_method())==0;}\n' |
  $CC -x c - -o "$WORK/probe" -lssl -lcrypto 2>/dev/null; then
  TLS="-DFL_TLS=1 -lssl -lcrypto"
fi
# shellcheck disable=SC2086
$CC -shared -fPIC -std=c11 -Wall -Wextra $SAN -I"$INCLUDE" "$FL"/_fastlane/*.c $TLS -o "$FL/_fastlane$SUFFIX"

ASAN_LIB=$($CC -print-file-name=libasan.so)
UBSAN_LIB=$($CC -print-file-name=libubsan.so)
# Python's own allocations are never freed at exit: leak detection would only report them
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$WORK/src"
export PYTHONDONTWRITEBYTECODE=1
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"

cd "$WORK"
# the scratch copy's instrumented build must be the one imported
"$PY" -c 'import sys, parlour.proxy._fastlane as m; assert m.__file__.startswith(sys.argv[1]), m.__file__; m.Engine; assert "libasan" in open("/proc/self/maps").read()' "$WORK/src"
# --capture=sys: a sanitizer report is written to fd 2 just before the abort, which
# pytest's fd-level capture would swallow. (The browser tests would run chromium with
# libasan preloaded.)
# shellcheck disable=SC2086
"$PY" -m pytest -p no:cacheprovider -o addopts="-ra -q --strict-markers" --capture=sys ${TESTS:-tests/proxy} \
  --deselect tests/proxy/control_plane/test_cp_dashboard_browser.py \
  --deselect tests/proxy/control_plane/test_cp_dashboard_live.py "$@"
