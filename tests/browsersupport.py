"""Headless Chromium for the page tests: Debian's browser, driven by Playwright.

No browser is ever downloaded (``playwright install`` is never run): the tests use
``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and skip,
saying so, where it is absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where screenshots go when set (``TUNGSTEN_SCREENSHOTS=docs`` refreshes the README's).
SCREENSHOTS = os.environ.get("TUNGSTEN_SCREENSHOTS")


def launch() -> Iterator[Any]:
    """A Chromium browser for the session, or a skip that says why not."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run the page tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot as ``name`` under ``$TUNGSTEN_SCREENSHOTS``, when it is set."""
    if SCREENSHOTS:
        folder = ROOT / SCREENSHOTS
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / name), full_page=True)
