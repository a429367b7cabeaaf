"""The README's console examples, read from the README itself, and a runner that types them.

A journey takes a block of commands exactly as the README writes them. The only liberties
the runner takes: a free port instead of 3000 (another server may hold 3000), the id that
the previous command printed instead of the example's id, and unique tags for Docker
images (the image namespace is the machine's); each journey says which.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import ROOT, wait_for

README = ROOT / "README.md"


@dataclass(frozen=True)
class Command:
    """One `$ ...` line (continuation lines joined) and the lines the README shows after it."""

    text: str
    output: tuple[str, ...]

    @property
    def shown(self) -> str:
        return "\n".join(self.output)


def console_blocks(text: str | None = None) -> list[list[Command]]:
    """Every ```console block of the README, as its commands."""
    text = README.read_text() if text is None else text
    blocks = []
    for body in re.findall(r"^```console\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        commands: list[Command] = []
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                if lines[i].strip():
                    output.append(lines[i])
                i += 1
            commands.append(Command(" ".join(command.split()), tuple(output)))
        blocks.append(commands)
    return blocks


def block_with(fragment: str, after: str | None = None) -> list[Command]:
    """The first console block holding a command that contains ``fragment`` (after the line ``after``)."""
    text = README.read_text()
    if after is not None:
        text = text[text.index(after) :]
    for block in console_blocks(text):
        if any(fragment in command.text for command in block):
            return block
    raise AssertionError(f"the README has no console block with {fragment!r}")


@dataclass
class Shell:
    """Types commands in a working directory, as a user at a terminal (`cd` included)."""

    cwd: Path
    env: dict[str, str]
    background: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    @classmethod
    def for_user(cls, cwd: Path, home: Path) -> Shell:
        # `tungsten` is this checkout's, as after `make install`.
        env = {k: v for k, v in os.environ.items() if k not in ("TUNGSTEN_REDIS_URL", "REDIS_URL")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env["TUNGSTEN_HOME"] = str(home)
        return cls(cwd, env)

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        if command.startswith("cd "):
            self.cwd = (self.cwd / command[3:].strip()).resolve()
            return subprocess.CompletedProcess(command, 0, "", "")
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, command: str, log: Path) -> subprocess.Popen[bytes]:
        """A command that runs until stopped (a server), in a session of its own."""
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((process, log))
        return process

    def wait_ready(
        self,
        process: subprocess.Popen[bytes],
        log: Path,
        url: str,
        timeout: float = 180,
        ready: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        def answered() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                response = httpx.get(url + "/health", timeout=2)
            except httpx.TransportError:
                return False
            return ready(response) if ready else response.status_code == 200

        wait_for(answered, timeout, interval=0.1, what=f"{url} to be ready")

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 60) -> int:
        """Ctrl+C's cousin: SIGTERM to the command's whole session; returns its exit code."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise AssertionError(f"did not stop within {timeout}s") from None
        return process.returncode

    def stop_all(self) -> None:
        for process, _ in self.background:
            if process.poll() is None:
                self.stop(process)


def on_port(command: str, port: int) -> str:
    """The command with the free port in place of the README's 3000."""
    return (
        command.replace("localhost:3000", f"localhost:{port}")
        .replace("-p 3000:3000", f"-p 127.0.0.1:{port}:3000")
        .replace("-p 3000", f"-p {port}")
    )
