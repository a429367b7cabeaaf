"""The SDK's public surface, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import tungstenkit

PUBLIC = [
    "Audio", "BaseIO", "Binary", "Field", "Image", "MaskedImage", "Option", "Video", "__version__", "define_model",
]


def test_public_names_are_pinned() -> None:
    assert sorted(tungstenkit.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(tungstenkit, name)


def test_import_pulls_in_no_server_redis_or_torch() -> None:
    code = (
        "import sys, tungstenkit\n"
        "heavy = [m for m in ('starlette', 'uvicorn', 'redis', 'torch', 'rq', 'click', 'PIL') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
