#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds (Release + a sanitizer build of the torch-free core) and
# runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
BUILD_DIR=build ./scripts/build.sh
# Sanitizer build (ASan+UBSan) of the torch-free core: tokenizers, checkpoint and config parsers, fuzz targets.
BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo ./scripts/build.sh -DGUARDKIT_SANITIZE=ON
jobs=$(nproc)
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j "$jobs")
(cd build && ctest --output-on-failure -j "$jobs" --timeout 900)
