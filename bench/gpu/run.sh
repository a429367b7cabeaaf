#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, with bench/gpu/wheels carried along
# (made by bench/gpu/fetch_wheels.sh). That machine has torch and torchvision but not the
# serving dependencies: they are installed from the folder, without any registry, into a
# venv that still sees the system's torch. Then the GPU scenario runs once.
#   bash bench/gpu/run.sh [gpu_resnet.py options]     # e.g. --workers 1 for the one-worker figure
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${GPU_VENV:-/tmp/tungsten-gpu-venv}"
python="${PYTHON:-python3}"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
test -x "$venv/bin/python" || "$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --no-index --find-links "$here/wheels" "$here"/wheels/tungstenkit-*.whl
cd "$root"
# The venv's interpreter runs the bench, the servers and the workers (they are started
# with the interpreter that starts them). The checkout's packages shadow the wheel's.
exec "$venv/bin/python" bench/gpu_resnet.py "$@"
