"""A wheel of the running ``tungstenkit``, for the images that ``tungsten build`` makes.

The image must run the same server as the machine that built it, whether that machine
installed the package from a wheel or in editable mode from a checkout. So the wheel is
made from what is installed: the files of the packages as Python finds them, and the
distribution's own metadata (``METADATA``, ``entry_points.txt``), which pyproject.toml
produced. Nothing here restates the package's name, dependencies or console script.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import zipfile
from importlib import metadata
from pathlib import Path

from tungstenkit._errors import TungstenError

DISTRIBUTION = "tungstenkit"
#: Every package of the distribution. The folders app/, worker/ and cli/ of the
#: repository install as the last three (pyproject.toml maps them; a test keeps the two
#: lists equal).
PACKAGES = ("tungstenkit", "tungstenkit.app", "tungstenkit.worker", "tungstenkit.cli")
_SKIPPED_PARTS = ("__pycache__",)
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_WHEEL_DATE = (1980, 1, 1, 0, 0, 0)


def package_files() -> dict[str, Path]:
    """Each file of the installed packages, by its path inside a wheel."""
    files: dict[str, Path] = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise TungstenError(f"the package {package} is not installed")
        root = Path(next(iter(spec.submodule_search_locations)))
        prefix = package.replace(".", "/")
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if path.is_dir() or path.suffix in _SKIPPED_SUFFIXES or set(relative.parts) & set(_SKIPPED_PARTS):
                continue
            # A nested package that is mapped elsewhere would appear twice: the mapping wins.
            files.setdefault(f"{prefix}/{relative.as_posix()}", path)
    return files


def write_runtime_wheel(folder: Path) -> Path:
    """Write the wheel into ``folder``; returns its path."""
    distribution = _installed_distribution()
    version = distribution.version
    dist_info = f"{DISTRIBUTION}-{version}.dist-info"
    contents: dict[str, bytes] = {name: path.read_bytes() for name, path in package_files().items()}
    contents[f"{dist_info}/METADATA"] = _required(distribution, "METADATA").encode()
    entry_points = distribution.read_text("entry_points.txt")
    if entry_points:
        contents[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tungstenkit\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in contents.items()]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{DISTRIBUTION}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            # A fixed date: the same code makes the same bytes, so Docker reuses the image
            # layer that installs it instead of installing the package again on every build.
            entry = zipfile.ZipInfo(name, date_time=_WHEEL_DATE)
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return wheel


def _installed_distribution() -> metadata.Distribution:
    """The installed distribution (a ``.dist-info``). A checkout's ``.egg-info``, which
    setuptools leaves beside the source, may come first on ``sys.path`` and lacks the
    dependencies in its metadata, so it is passed over."""
    for distribution in metadata.distributions(name=DISTRIBUTION):
        if distribution.read_text("METADATA") is not None:
            return distribution
    raise TungstenError(f"{DISTRIBUTION} is not installed as a distribution (no METADATA found)")


def _required(distribution: metadata.Distribution, name: str) -> str:
    text = distribution.read_text(name)
    if text is None:
        raise TungstenError(f"the installed {DISTRIBUTION} has no {name}")
    return text


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
