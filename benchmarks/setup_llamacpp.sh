#!/usr/bin/env bash
# Build llama.cpp's llama-bench, llama-server and llama-quantize for the benchmarks that compare
# against it (bench_families.py, bench_serve.py --against llama-server). Never part of `make test`.
#
# The source is the llama.cpp that the llama-cpp-python sdist vendors (PyPI is the one registry
# these machines reach), pinned below. CPU build, native instructions, no curl, static libraries.
# Idempotent: a finished build is reused. Prints the folder holding the three programs.
#
#   benchmarks/setup_llamacpp.sh [CACHE_DIR]     (default: ~/.cache/codeassist-llamacpp)
set -euo pipefail

VERSION=0.3.36
CACHE=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/codeassist-llamacpp}
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
JOBS=${JOBS:-$(nproc)}
SRC=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$CACHE/build-$VERSION
BIN=$BUILD/bin

if [[ -x $BIN/llama-bench && -x $BIN/llama-server && -x $BIN/llama-quantize ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE"
if [[ ! -f $CACHE/llama_cpp_python-$VERSION.tar.gz ]]; then
  "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$CACHE" >&2
fi
if [[ ! -d $SRC ]]; then
  tar -C "$CACHE" -xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz"
fi
for tool in cmake c++; do
  command -v $tool >/dev/null || { echo "setup_llamacpp: $tool is missing (apt-get install cmake g++)" >&2; exit 1; }
done
nice -n 19 cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TOOLS=ON >&2
nice -n 19 cmake --build "$BUILD" -j "$JOBS" --target llama-bench llama-server llama-quantize >&2
echo "$BIN"
