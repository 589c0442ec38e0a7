#!/usr/bin/env bash
# Installs every build and test dependency of guardkit from Debian 12's packages. Idempotent.
# --runtime: only the shared libraries the guardkit binary needs (deploy/Dockerfile's runtime stage;
# tests/test_cli_deploy.cpp checks that they cover every library the built binary links).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
RUNTIME_PKGS=(libtorch1.13 libopenblas0-openmp libspdlog1.10 libfmt9 libcpp-httplib0.11 libssl3 zlib1g libgomp1
              libstdc++6 libgcc-s1 libc6
              ca-certificates)
# haproxy and python3-yaml: tests only (the load-balancer drain test, the deployment files' YAML check).
PKGS=(build-essential cmake ninja-build ccache pkg-config
      libtorch-dev libopenblas0-openmp
      nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libcpp-httplib-dev
      googletest libgtest-dev libgmock-dev
      zlib1g-dev libssl-dev sentencepiece librsvg2-bin fonts-dejavu-core
      haproxy python3-yaml)
if [ "${1:-}" = "--runtime" ]; then PKGS=("${RUNTIME_PKGS[@]}"); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# fp32 GEMM in libtorch goes through libblas.so.3: select the OpenMP OpenBLAS (the reference BLAS is 60x slower,
# the pthread OpenBLAS oversubscribes the cores together with libtorch's OpenMP threads).
ARCH_DIR=/usr/lib/x86_64-linux-gnu
if [ -e "$ARCH_DIR/openblas-openmp/libblas.so.3" ]; then
  $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$ARCH_DIR/openblas-openmp/libblas.so.3" >/dev/null
  $SUDO update-alternatives --set liblapack.so.3-x86_64-linux-gnu "$ARCH_DIR/openblas-openmp/liblapack.so.3" >/dev/null
fi
echo "dependencies ready"
