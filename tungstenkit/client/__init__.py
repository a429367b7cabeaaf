"""Clients of a Tungstenkit server: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

::

    from tungstenkit import Client

    client = Client("http://localhost:3000")
    output = client.predict({"prompt": "a cat", "seed": 7})   # submit, long-poll, decode
    output["image"].save("cat.png")

Importing this module imports httpx; ``import tungstenkit`` alone does not.
"""

from tungstenkit.client._async import AsyncClient
from tungstenkit.client._errors import (
    AccessDenied,
    APIError,
    ClientError,
    EventsUnsupported,
    InvalidInput,
    PredictionCanceled,
    PredictionFailed,
    PredictionNotFound,
    ServerBusy,
    TransportError,
    WaitTimeout,
)
from tungstenkit.client._prediction import Prediction
from tungstenkit.client._retry import IDEMPOTENCY_HEADER
from tungstenkit.client._sync import Client

__all__ = [
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
