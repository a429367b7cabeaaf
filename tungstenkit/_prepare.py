"""Making a batch's file inputs ready before ``predict``: URLs downloaded, masks finished.

This runs in the worker, inside the batch's temporary folder, before the model sees
the batch. A download that is refused or fails is reported for its own input only, so
the worker can fail that input's prediction and run the rest of the batch.

The client reads the same ``URLFetchFailed`` whatever stopped a download (a refused
address, a refused redirect, a connection refused, a 404, a timeout): told apart, they
would let anyone map the server's network. Why it failed is logged here, with the URL
cut of its query string and escaped. A file too large, or not what its field takes, is
still reported as such: that is known only once the download succeeded.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pydantic

from tungstenkit._errors import FetchError, FileInputError, URLFetchFailed
from tungstenkit._fetch import Download, FetchPolicy, fetch
from tungstenkit._files import File, FilePolicy
from tungstenkit._log_safety import printable, url_for_log
from tungstenkit._masked_image import MaskedImage

logger = logging.getLogger(__name__)

#: Downloads of one batch that run at the same time.
MAX_PARALLEL_DOWNLOADS = 8


@dataclass(frozen=True)
class FileFailure:
    """Why an input cannot run: the field whose file failed, and the error."""

    field: str
    error: FileInputError


def remote_urls(inputs: Sequence[pydantic.BaseModel]) -> list[str]:
    """The distinct URLs that ``inputs`` refer to and that are not downloaded yet."""
    return list(_file_users(inputs)[0])


def prepare_inputs(
    inputs: Sequence[pydantic.BaseModel],
    policy: FilePolicy,
    fetched: Mapping[str, Download | FileInputError] | None = None,
) -> dict[int, FileFailure]:
    """Download every URL input (each distinct URL once) and finish ``MaskedImage`` inputs.

    URLs found in ``fetched`` (downloaded beforehand, off the model thread: see
    ``tungstenkit.worker.preparer``) are not downloaded again. Downloads land in the
    current materialisation folder. Returns the inputs that cannot run, by index; the
    others are ready.
    """
    users, masks = _file_users(inputs)
    failures: dict[int, FileFailure] = {}
    if users:
        fetched = fetched or {}
        downloads = _download_all([url for url in users if url not in fetched], policy.fetch)
        for url, wanting in users.items():
            result = fetched[url] if url in fetched else downloads[url]
            for index, name, file in wanting:
                if index in failures:
                    continue
                try:
                    if isinstance(result, FileInputError):
                        raise result
                    file.attach_download(result, policy)
                except FileInputError as exc:
                    failures[index] = FileFailure(name, exc)
    for index, name, masked in masks:
        if index in failures:
            continue
        try:
            masked.finish(policy)
        except FileInputError as exc:
            failures[index] = FileFailure(f"{name}.{exc.field}" if exc.field else name, exc)
    return failures


def _file_users(
    inputs: Sequence[pydantic.BaseModel],
) -> tuple[dict[str, list[tuple[int, str, File]]], list[tuple[int, str, MaskedImage]]]:
    """The files still to download, by URL, with the inputs and fields that use them;
    and the masked images still to finish."""
    users: dict[str, list[tuple[int, str, File]]] = {}
    masks: list[tuple[int, str, MaskedImage]] = []
    for index, item in enumerate(inputs):
        for name in type(item).model_fields:
            value = getattr(item, name)
            if isinstance(value, File) and value.is_remote:
                users.setdefault(value.uri, []).append((index, name, value))
            elif isinstance(value, MaskedImage):
                for part in ("image", "mask"):
                    file = getattr(value, part)
                    if file.is_remote:
                        users.setdefault(file.uri, []).append((index, f"{name}.{part}", file))
                if not value.ready:
                    masks.append((index, name, value))
    return users, masks


def _download_all(urls: list[str], policy: FetchPolicy) -> dict[str, Download | FileInputError]:
    if len(urls) <= 1:
        return {url: download(url, policy) for url in urls}
    # Downloads run on helper threads and only return bytes; files are written by the
    # caller. If the batch is interrupted (cancel, timeout) while waiting, the helpers
    # are left to finish within their timeouts and their bytes are dropped.
    pool = concurrent.futures.ThreadPoolExecutor(min(MAX_PARALLEL_DOWNLOADS, len(urls)), "tungsten-download")
    try:
        futures = {url: pool.submit(download, url, policy) for url in urls}
        return {url: future.result() for url, future in futures.items()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def download(url: str, policy: FetchPolicy) -> Download | FileInputError:
    """Fetch one URL input: its bytes, or the error its inputs fail with (never raises)."""
    try:
        return fetch(url, policy)
    except FetchError as exc:
        logger.warning(
            "URL input %s could not be fetched: %s: %s", url_for_log(url), type(exc).__name__, printable(exc)
        )
        return URLFetchFailed(exc)
    except FileInputError as exc:
        return exc
    except Exception as exc:  # one bad URL must not take the batch down
        logger.warning("URL input %s failed unexpectedly: %s: %s", url_for_log(url), type(exc).__name__, printable(exc))
        logger.debug("The traceback of that failure", exc_info=True)
        return URLFetchFailed(exc)
