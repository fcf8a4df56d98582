#!/usr/bin/env bash
# Installs gemma-agent into ./.venv: system packages (bubblewrap for the sandbox on Linux),
# the virtual environment, and the project itself. `./install.sh --test` adds the test extra
# (PyTorch CPU + transformers, used only as the numerical reference in tests).
set -euo pipefail
cd "$(dirname "$0")"

extras=""
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]" ;;
    --cuda) extras="[cuda]" ;;
    -h|--help) echo "usage: ./install.sh [--test|--cuda]"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$(uname -s)" = Linux ]; then
  # bubblewrap: the command sandbox. OpenBLAS: MLX's Linux CPU wheel bundles a reference BLAS that is ~30x slower
  # for float32 products; mlx_model loads the system OpenBLAS in its place (mlx_model/blas.py).
  missing=""
  command -v bwrap >/dev/null 2>&1 || missing="bubblewrap"
  { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libopenblas\.so\.0' || missing="$missing libopenblas0-pthread"
  command -v git >/dev/null 2>&1 || missing="$missing git"
  if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "install.sh: installing $missing"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      echo "install.sh: missing system packages: $missing (e.g. 'sudo apt-get install $missing');" \
           "without bubblewrap run commands with --no-sandbox; without OpenBLAS float32 math is slower" >&2
    fi
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
echo "install.sh: done. Run: .venv/bin/gemma-agent --help"
