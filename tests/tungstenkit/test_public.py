"""The SDK's public surface, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import tungstenkit

PUBLIC = [
    "AsyncClient",
    "Audio",
    "BaseIO",
    "Binary",
    "Client",
    "Field",
    "File",
    "Image",
    "MaskedImage",
    "Option",
    "Video",
    "__version__",
    "define_model",
    "progress",
]
CLIENT_PUBLIC = [
    "IDEMPOTENCY_HEADER",
    "APIError",
    "AccessDenied",
    "AsyncClient",
    "Client",
    "ClientError",
    "EventsUnsupported",
    "InvalidInput",
    "Prediction",
    "PredictionCanceled",
    "PredictionFailed",
    "PredictionNotFound",
    "ServerBusy",
    "TransportError",
    "WaitTimeout",
]


def test_public_names_are_pinned() -> None:
    assert sorted(tungstenkit.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(tungstenkit, name)


def test_client_names_are_pinned() -> None:
    from tungstenkit import client

    assert sorted(client.__all__) == sorted(CLIENT_PUBLIC)
    assert tungstenkit.Client is client.Client and tungstenkit.AsyncClient is client.AsyncClient


def test_import_pulls_in_no_server_redis_torch_or_http_client() -> None:
    code = (
        "import sys, tungstenkit\n"
        "heavy = [m for m in ('starlette', 'uvicorn', 'redis', 'torch', 'rq', 'click', 'PIL', 'httpx')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_client_is_imported_on_first_use() -> None:
    code = "import sys, tungstenkit\nprint(tungstenkit.Client.__name__, 'httpx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["Client", "True"]
