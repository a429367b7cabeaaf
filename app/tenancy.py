"""Whom a request is for: the tenant that idempotency keys and fair sharing are scoped to."""

from __future__ import annotations

from starlette.requests import Request

#: The one tenant of a server without API keys. A header a client sends is not trusted
#: to name a tenant: anyone could then claim another's share or replay its keys.
SHARED_TENANT = ""


def tenant_of(request: Request) -> str:
    """The id of the API key the request came with (``request.state.api_key_id``, set
    when API keys are on), else ``SHARED_TENANT``."""
    return str(getattr(request.state, "api_key_id", None) or SHARED_TENANT)
