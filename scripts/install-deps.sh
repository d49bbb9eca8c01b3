#!/usr/bin/env bash
# Installs the Debian packages ouro needs to build, test and benchmark.
# Run as root; idempotent (apt-get install of what is present is a no-op).
set -euo pipefail

pkgs=(
  # build
  build-essential autoconf automake libtool pkg-config clang
  # libraries ouro links against
  liburcu-dev libhwloc-dev
  # tests and benchmarks harness
  check libbenchmark-dev
  # sanitizer runtimes for clang (fuzzing, LSan)
  libclang-rt-14-dev
  # peers for side-by-side benchmarks
  libmimalloc-dev libjemalloc-dev libgoogle-perftools-dev libgc-dev
  # programs run under the malloc override in tests, plots
  python3 gnuplot-nox
)

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
