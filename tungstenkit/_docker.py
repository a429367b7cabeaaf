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


def check_image_pushable(image: str) -> None:
    """Raise unless a Docker engine is reachable and has the image ``image``."""
    if not engine_available():
        raise TungstenError("--image needs a Docker engine, and none is reachable (is `docker info` working?)")
    inspected = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if inspected.returncode != 0:
        raise TungstenError(f"No Docker image {image}: build it with `tungsten build` where Docker runs, then push")


def push_image(image: str, target: str) -> None:
    """Push the local ``image`` as ``target`` (Docker's own login for that registry applies)."""
    if subprocess.run(["docker", "tag", image, target], stdout=sys.stderr, check=False).returncode != 0:
        raise TungstenError(f"docker tag {image} {target} failed")
    try:
        result = subprocess.run(["docker", "push", target], stdout=sys.stderr, check=False)
        if result.returncode != 0:
            raise TungstenError(
                f"docker push {target} failed (exit code {result.returncode}); Docker uses its own login: "
                "`docker login` to that registry"
            )
    finally:
        # The extra name was only for pushing: the image stays under its own.
        subprocess.run(["docker", "image", "rm", target], capture_output=True, check=False)
