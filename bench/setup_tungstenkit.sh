#!/usr/bin/env bash
# Tungstenkit 0.2.20, the peer the benchmarks compare against, in its own venv
# (bench/.venv-tk), installed from the package registry: its code is never vendored.
#
# Pins: pydantic 1.10.13 and fastapi 0.104.1. With pydantic >= 1.10.20 (what pip picks
# for tungstenkit's "pydantic>=1.10.2,<2") define_model fails with KeyError '__slots__',
# and later fastapi releases need a newer pydantic. Everything else is what tungstenkit's
# own metadata asks for (plain uvicorn: no uvloop/httptools, as its image would have).
# With --torch it also installs torch==2.13.0 (the CPU build this machine has on disk)
# for scenario (e), text_to_image.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
venv="$here/.venv-tk"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet tungstenkit==0.2.20 pydantic==1.10.13 fastapi==0.104.1
if [[ "${1:-}" == "--torch" ]]; then
  "$venv/bin/python" -m pip install --quiet torch==2.13.0 numpy
fi
(cd / && "$venv/bin/python" -c "import tungstenkit; print('tungstenkit', tungstenkit.__version__, 'in', '$venv')")
