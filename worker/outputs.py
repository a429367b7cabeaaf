"""Output files served as links (``output_files=url``) instead of inline data URIs."""

from __future__ import annotations

import mimetypes
import secrets

from tungstenkit._files import File
from tungstenkit._media import normalize_mime_type
from tungstenkit._queue import StoredFile


def new_file_name(mime_type: str) -> str:
    """An unguessable name (192 random bits) with the extension of its media type."""
    return secrets.token_urlsafe(24) + (mimetypes.guess_extension(normalize_mime_type(mime_type)) or "")


class OutputFileSink:
    """Collects the files of one output while it is serialised, giving each a link.

    Used as the ``OUTPUT_FILE_SINK`` serialisation context: the worker's writer thread
    stores the collected files in Redis just before the output becomes visible.
    """

    def __init__(self, public_url: str = "") -> None:
        self._base = public_url.rstrip("/")
        self.files: list[StoredFile] = []

    def __call__(self, file: File) -> str:
        if file.is_remote:
            return file.uri  # a URL the model returned as it is
        data = file.read_bytes()
        mime_type = file.content_type(data)
        stored = StoredFile(new_file_name(mime_type), mime_type, data)
        self.files.append(stored)
        return f"{self._base}/files/{stored.name}"
