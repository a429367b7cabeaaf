"""The Docker engine, when one is reachable (``tungsten build`` builds the image then)."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from tungstenkit._errors import TungstenError

#: Lines of Docker's build log kept to say why a build failed.
_TAIL_LINES = 20


class ImageBuildFailed(TungstenError):
    """``docker build`` of a stored model failed; ``reason`` is the last line Docker printed."""

    def __init__(self, tag: str, exit_code: int, reason: str) -> None:
        super().__init__(f"docker build of {tag} failed (exit code {exit_code}): {reason}")
        self.exit_code = exit_code
        self.reason = reason


def engine_problem() -> str | None:
    """None when a Docker engine answers; else why not, in a few words."""
    docker = shutil.which("docker")
    if docker is None:
        return "no `docker` command on PATH"
    try:
        result = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    except OSError as exc:
        return f"`docker info` could not run: {exc.strerror or exc}"
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        return lines[-1] if lines else f"`docker info` exited with {result.returncode}"
    return None


def build_image(context: Path, tag: str, log: IO[str]) -> None:
    """``docker build -t tag context``, its log copied line by line to ``log``.

    Raises ``ImageBuildFailed`` with the last line of the log (Docker's reason) on failure.
    """
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    # --force-rm: a failed step leaves no stopped container behind (the log says what failed).
    try:
        process = subprocess.Popen(
            ["docker", "build", "--force-rm", "-t", tag, str(context)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ImageBuildFailed(tag, 127, f"docker could not run: {exc.strerror or exc}") from None
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            log.write(line)
            log.flush()
            if line.strip():
                tail.append(line.strip())
    code = process.wait()
    if code != 0:
        raise ImageBuildFailed(tag, code, _reason(tail) or "Docker printed no reason")


def _reason(tail: collections.deque[str]) -> str:
    """The line of the log that says what went wrong: Docker's own error, else the last one."""
    for line in reversed(tail):
        lowered = line.lower()
        if lowered.startswith(("error", "the command", "failed to")) or "returned a non-zero code" in lowered:
            return line
    return tail[-1] if tail else ""


def check_image_pushable(image: str) -> None:
    """Raise unless a Docker engine is reachable and has the image ``image``."""
    problem = engine_problem()
    if problem:
        raise TungstenError(f"--image needs a Docker engine, and none is reachable: {problem}")
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
