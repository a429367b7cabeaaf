#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, with bench/gpu/wheels carried along
# (made by bench/gpu/fetch_wheels.sh). That machine has torch and torchvision but not the
# serving dependencies, and its python3 is itself a venv (a venv made from it with
# --system-site-packages would not see torch). So the wheels are unpacked into a folder of
# their own, without any registry or dependency resolution, and that folder goes on
# PYTHONPATH for the bench and every process it starts. Then the GPU scenario runs.
#   bash bench/gpu/run.sh [gpu_resnet.py options]     # e.g. --workers 1 for the one-worker figure
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
site="${GPU_SITE:-/tmp/tungsten-gpu-site}"
python="${PYTHON:-python3}"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$python" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$site" "$here"/wheels/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# The checkout must not shadow the installed package: its app/, worker/ and cli/ folders
# only become tungstenkit.app, .worker and .cli when installed.
export PYTHONSAFEPATH=1
# The wheels' console scripts went to $site/bin; the bench starts `python -m` instead.
cd "$root"
exec "$python" bench/gpu_resnet.py "$@"
