"""Tungstenkit: define a model in Python and serve it over REST.

This import stays light: it pulls in pydantic, never starlette, uvicorn, redis, torch or
httpx. ``Client`` and ``AsyncClient`` (``tungstenkit.client``) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tungstenkit._base_io import BaseIO, Field, Option
from tungstenkit._files import Audio, Binary, File, Image, Video
from tungstenkit._masked_image import MaskedImage
from tungstenkit._model import define_model
from tungstenkit._progress import progress

if TYPE_CHECKING:
    from tungstenkit.client import AsyncClient, Client

__version__ = "0.3.0"

#: Names served from ``tungstenkit.client`` on first use (it imports httpx).
_CLIENT_NAMES = ("AsyncClient", "Client")

__all__ = [
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


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from tungstenkit import client

        return getattr(client, name)
    raise AttributeError(f"module 'tungstenkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CLIENT_NAMES))
