"""The Docker engine, when one is reachable (``tungsten build`` builds the image then)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tungstenkit._errors import TungstenError


def engine_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def build_image(context: Path, tag: str) -> None:
    # Docker's log goes to stderr: stdout carries only what scripts read (NAME:TAG).
    result = subprocess.run(["docker", "build", "-t", tag, str(context)], stdout=sys.stderr, check=False)
    if result.returncode != 0:
        raise TungstenError(f"docker build of {tag} failed (exit code {result.returncode})")
