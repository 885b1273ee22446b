#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite: the C++ suite (plain, then under
# AddressSanitizer and UndefinedBehaviorSanitizer) and the Python suite against the installed
# package. Run from the repository root: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"

# --- dependencies -----------------------------------------------------------------------------
if [ ! -f /usr/include/gtest/gtest.h ] && [ ! -f /usr/local/include/gtest/gtest.h ]; then
  echo "== installing GoogleTest (libgtest-dev)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq libgtest-dev cmake g++ >/dev/null
fi

echo "== installing fastnn and its test dependencies"
# The pinned CPU build of PyTorch: an unpinned torch pulls a multi-GB GPU build.
"$PYTHON" -m pip install -q "torch==2.13.0"
"$PYTHON" -m pip install -q ".[test]"

# --- C++ suite --------------------------------------------------------------------------------
cpp_suite() {  # build dir, extra cmake args...
  local dir="$1"; shift
  cmake -S . -B "$dir" -DFASTNN_BUILD_TESTS=ON -DFASTNN_BUILD_PYTHON=OFF "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS" >/dev/null
  "$dir/fastnn_tests" --gtest_brief=1
}

echo "== C++ suite"
cpp_suite build-tests -DCMAKE_BUILD_TYPE=Release
echo "== C++ suite under AddressSanitizer + UndefinedBehaviorSanitizer"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  cpp_suite build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASTNN_SANITIZE=ON

# --- Python suite -----------------------------------------------------------------------------
echo "== Python suite"
# Run from tests/ against the installed package, so a stale in-tree build cannot be picked up.
cd tests
"$PYTHON" -m pytest -q -p no:cacheprovider .
