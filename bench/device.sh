#!/usr/bin/env bash
# The accelerator figures of issue #18 in one prepared run (about 7 minutes on one NVIDIA H100):
#   1. bench/mtp_curve.py: speculative speedup vs acceptance, 12B widths at full depth (48 layers), 1K and 16K.
#   2. bench/context_decode.py: decode tok/s at 1K / 32K / 128K, bf16 / 8-bit / 4-bit pages, ours vs mlx-lm 0.32.2.
# Every step has its own time limit, so a slow one costs its own figures only. Results: $OUT (default
# .bench/device) as curve.json, context_decode.json and log.txt.
#
#   bench/device.sh run       on the GPU machine: install mlx[cuda13] and mlx-lm 0.32.2 (from PyPI, or offline from
#                             the wheels in .whl/ and /tmp/device-wheels), then run both benches.
#   bench/device.sh fetch     where PyPI is reachable: the wheels for an offline GPU machine (Python 3.12, CUDA 13)
#                             into .whl/a and .whl/b, each under 60 MiB (the 90 MB mlx-cuda wheel is split in two).
#   bench/device.sh stage     on the GPU machine: keep .whl/a in /tmp/device-wheels for a following `run` (for
#                             machines that take at most 64 MiB per call: call 1 carries .whl/a and stages it,
#                             call 2, right after, carries .whl/b and runs).
#   bench/device.sh dry-run   here, on the CPU: the same steps at tiny sizes with .venv's python, no install
#                             (tests/test_device_script.py runs it).
# Sizes can be overridden: LAYERS, CURVE_CONTEXTS, CURVE_TOKENS, CURVE_REPEATS, DECODE_LAYERS, DECODE_CONTEXTS,
# DECODE_TOKENS, CURVE_LIMIT and DECODE_LIMIT (seconds for each step; a context-decode worker gets a fifth).
set -uo pipefail

cd "$(dirname "$0")/.."
mode=${1:-run}
MLX_VERSION=0.32.4
MLX_LM_VERSION=0.32.2
STAGE=/tmp/device-wheels

case "$mode" in
  fetch)
    set -e
    rm -rf .whl && mkdir -p .whl/a .whl/b /tmp/device-fetch
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      -d /tmp/device-fetch "mlx==$MLX_VERSION" "mlx-cuda-13==$MLX_VERSION" "mlx-lm==$MLX_LM_VERSION"
    cuda=$(ls /tmp/device-fetch/mlx_cuda_13-*.whl)
    split -b 45M "$cuda" ".whl/a/$(basename "$cuda").part-"
    mv .whl/a/*.part-ab .whl/b/
    cp /tmp/device-fetch/mlx-*.whl /tmp/device-fetch/mlx_lm-*.whl .whl/b/
    du -sh .whl/a .whl/b
    exit 0 ;;
  stage)
    mkdir -p "$STAGE" && cp .whl/a/* "$STAGE"/ && ls -la "$STAGE"
    exit 0 ;;
  run|dry-run) ;;
  *) echo "usage: bench/device.sh [run|fetch|stage|dry-run]" >&2; exit 2 ;;
esac

OUT=${OUT:-.bench/device}
mkdir -p "$OUT"
log="$OUT/log.txt"
: > "$log"
say() { echo "== $*" | tee -a "$log"; }

if [ "$mode" = dry-run ]; then
  PY=${PY:-.venv/bin/python}
  : "${LAYERS:=7}" "${CURVE_CONTEXTS:=64 300}" "${CURVE_TOKENS:=8}" "${CURVE_REPEATS:=1}" "${DECODE_LAYERS:=7}"
  : "${DECODE_CONTEXTS:=64 300}" "${DECODE_TOKENS:=4}" "${CURVE_LIMIT:=400}" "${DECODE_LIMIT:=400}"
  tiny=--tiny
  curve_args="--alphas 0.3 0.9 --ks 1 3"
else
  PY=${PY:-python3}
  : "${LAYERS:=48}" "${CURVE_CONTEXTS:=1024 16384}" "${CURVE_TOKENS:=32}" "${CURVE_REPEATS:=2}"
  : "${DECODE_LAYERS:=8}" "${DECODE_CONTEXTS:=1024 32768 131072}" "${DECODE_TOKENS:=32}"
  : "${CURVE_LIMIT:=170}" "${DECODE_LIMIT:=220}"
  tiny=
  curve_args=
  # mlx[cuda13]: the CUDA 13 build (the GPU image has CUDA 13 libraries; mlx[cuda] would pull CUDA 12 ones)
  say "install mlx[cuda13] $MLX_VERSION, mlx-lm $MLX_LM_VERSION"
  wheels=$(mktemp -d)
  cp "$STAGE"/* .whl/a/* .whl/b/* "$wheels"/ 2>/dev/null
  if ls "$wheels"/*.part-aa >/dev/null 2>&1; then  # rejoin the split mlx-cuda wheel
    for first in "$wheels"/*.part-aa; do cat "${first%aa}"* > "${first%.part-aa}" && rm "${first%aa}"*; done
  fi
  if ls "$wheels"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl >> "$log" 2>&1
  else
    "$PY" -m pip install -q --target /tmp/site "mlx[cuda13]==$MLX_VERSION" "mlx-lm==$MLX_LM_VERSION" >> "$log" 2>&1
  fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
fi
export PYTHONUNBUFFERED=1

say "device check"
"$PY" -c "import mlx.core as mx, mlx_lm; print(mx.__version__, mx.default_device(), 'mlx-lm', mlx_lm.__version__)" \
  2>&1 | tee -a "$log" || { say "mlx / mlx-lm do not import: stopping"; exit 1; }

status=0
say "speculative curve: $LAYERS layers, contexts $CURVE_CONTEXTS"
# shellcheck disable=SC2086  # word splitting of the size lists is intended
timeout "$CURVE_LIMIT" "$PY" bench/mtp_curve.py $tiny --layers "$LAYERS" --contexts $CURVE_CONTEXTS \
  --tokens "$CURVE_TOKENS" --repeats "$CURVE_REPEATS" $curve_args --json > "$OUT/curve.txt" 2>> "$log" || status=1
tail -n 1 "$OUT/curve.txt" > "$OUT/curve.json"
grep -v '^{' "$OUT/curve.txt" | tee -a "$log"

say "decode vs context: $DECODE_LAYERS layers, contexts $DECODE_CONTEXTS"
# shellcheck disable=SC2086
timeout "$DECODE_LIMIT" "$PY" bench/context_decode.py $tiny --layers "$DECODE_LAYERS" --contexts $DECODE_CONTEXTS \
  --tokens "$DECODE_TOKENS" --timeout $((DECODE_LIMIT / 5)) --workdir /tmp/context_decode --json \
  > "$OUT/context_decode.txt" 2>> "$log" || status=1
tail -n 1 "$OUT/context_decode.txt" > "$OUT/context_decode.json"
grep -v '^{' "$OUT/context_decode.txt" | tee -a "$log"
rm -f "$OUT/curve.txt" "$OUT/context_decode.txt"
say "done (status $status)"
exit $status
