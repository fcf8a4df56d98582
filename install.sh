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

if [ "$(uname -s)" = Linux ] && ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "install.sh: installing bubblewrap (the command sandbox)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap git >/dev/null
  else
    echo "install.sh: bubblewrap is missing; install it (e.g. 'sudo apt-get install bubblewrap')" \
         "or run commands with --no-sandbox" >&2
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
echo "install.sh: done. Run: .venv/bin/gemma-agent --help"
