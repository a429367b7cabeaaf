"""The exception hierarchy shared by the SDK, the API and the worker.

Domain code raises these; only ``app/`` maps them to HTTP status codes and only
``cli/`` maps them to exit codes.
"""

from __future__ import annotations


class TungstenError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelDefinitionError(TungstenError, TypeError):
    """A model class, or its input/output classes, break the ``define_model`` contract."""


class ModelLoadError(TungstenError):
    """A model file could not be found, imported, or holds no usable model."""


class ModelNotFound(TungstenError):
    """A model reference names nothing in the local model store."""


class StoreError(TungstenError):
    """The local model store refused an operation (bad name, existing tag, ...)."""


class ConfigError(TungstenError):
    """A setting or command-line option has an unusable value."""


class RedisUnavailable(TungstenError):
    """Redis could not be reached or did not answer in time."""


class NotReplicated(RedisUnavailable):
    """Fewer replicas than required acknowledged an accepted prediction in time (Redis
    ``WAIT``); it was canceled, and the client should retry (503)."""


class RedisServerError(TungstenError):
    """The embedded ``redis-server`` could not be found or started."""


class QueueFull(TungstenError):
    """The queue holds as many inputs as it is allowed to; retry later."""

    def __init__(self, queued: int, limit: int, retry_after_s: int = 1) -> None:
        super().__init__(f"The queue is full ({queued} inputs waiting, limit {limit}); retry later")
        self.queued = queued
        self.limit = limit
        self.retry_after_s = retry_after_s


class IdempotencyKeyReused(TungstenError):
    """An ``Idempotency-Key`` came with another request than the one first sent with it."""

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with another request (other inputs or parameters); "
            "send a new key with a new request"
        )


class OwnerQueueFull(TungstenError):
    """The predictions of an API key's owner hold as many queued inputs as it may have."""

    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        super().__init__(f"This API key may have {limit} inputs waiting or running; retry when some have ended")
        self.limit = limit
        self.retry_after_s = retry_after_s


class PredictionNotFound(TungstenError):
    """No prediction with this id exists (never created, or its result expired)."""

    def __init__(self, prediction_id: str) -> None:
        super().__init__(f"Prediction {prediction_id} not found")
        self.prediction_id = prediction_id


class SetupFailed(TungstenError):
    """The model's ``setup()`` raised or timed out."""


class InvalidOutput(TungstenError):
    """``predict`` returned something that does not match the declared output."""


class PredictionInterrupted(BaseException):
    """Raised inside ``predict`` to stop a batch (cancel or timeout).

    A ``BaseException`` so that a model's own ``except Exception`` cannot swallow it.
    """

    #: What a client reads as the prediction's ``error_message``.
    client_message = "Interrupted"


class PredictionCanceled(PredictionInterrupted):
    """Every prediction in the running batch was canceled."""

    client_message = "Canceled"


class PredictionTimeout(PredictionInterrupted):
    """A call into the model ran longer than its timeout."""

    client_message = "Timeout"


class FileInputError(TungstenError, ValueError):
    """A file input cannot be used: too large, not what it claims to be, or unreachable.

    ``field`` names the input field (``"image"``, ``"masked.mask"``) when it is known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class FileTooLarge(FileInputError):
    """A file is over the per-file size limit (``max_file_bytes``)."""


class ImageTooLarge(FileInputError):
    """An image has more pixels than ``max_image_pixels`` allows (a decompression bomb, perhaps)."""


class MediaTooLong(FileInputError):
    """An audio or video file lasts longer than its field's ``max_duration_s``."""


class InvalidFileContent(FileInputError):
    """A file's bytes contradict its declared type, or are not the kind of file the field takes."""


class FetchError(FileInputError):
    """Downloading a URL input failed: unreachable, an HTTP error, too slow or too large."""


class URLRefused(FetchError):
    """A URL input points somewhere the server may not fetch from (a private address, a bad scheme)."""


class URLFetchFailed(FetchError):
    """What a client is told of a URL input that was refused or failed while fetched.

    One message whatever the cause: "connection refused", "closed without answer" and
    "answered 404" told apart would make the server a port scanner of its own network.
    The cause goes to the worker's log, and stays on ``cause`` for a caller that may
    show it (``tungsten predict``, run by the machine's own user).
    """

    def __init__(self, cause: Exception | None = None, field: str | None = None) -> None:
        super().__init__("the URL could not be fetched", field)
        self.cause = cause


class InvalidWebhook(TungstenError, ValueError):
    """A webhook a client asked for cannot be used (bad URL, unknown event, refused address).

    ``field`` names the query parameter (``webhook`` or ``webhook_events``).
    """

    def __init__(self, message: str, field: str = "webhook") -> None:
        super().__init__(message)
        self.field = field


class WebhookFailed(TungstenError):
    """A webhook delivery was not accepted (an error status, a timeout, no connection)."""


class RegistryError(TungstenError):
    """Pushing to or pulling from an OCI registry failed (bad reference, refused, not found)."""


class RegistryUnreachable(RegistryError):
    """The registry could not be reached (no connection, TLS failure, timeout)."""


class DigestMismatch(RegistryError):
    """Content from a registry does not match its digest: corrupted or tampered with."""


class NotAModelArtifact(RegistryError):
    """A registry reference names something that is not a Tungsten model (an image, another artifact)."""
