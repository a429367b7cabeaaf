"""Whom a request is for: the tenant that idempotency keys and fair sharing are scoped to."""

from __future__ import annotations

from starlette.requests import Request

#: The one tenant of a server without API keys. A header a client sends is not trusted
#: to name a tenant: anyone could then claim another's share or replay its keys.
SHARED_TENANT = ""


def tenant_of(request: Request) -> str:
    """The owner of the API key the request came with (``request.state.api_key``, set by
    ``access`` when keys are on: keys of one owner share its predictions, so they share a
    tenant too), else ``SHARED_TENANT``."""
    # The state's dict itself: ``request.state``'s missing attribute costs an exception on
    # every request of a server without keys (about 1% of the API's CPU in bench (b)).
    caller = request.scope.get("state", {}).get("api_key")
    return str(caller.owner) if caller is not None else SHARED_TENANT
