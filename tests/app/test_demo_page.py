"""The demo page at ``GET /``, in a real browser (Debian's Chromium, headless).

A person opens ``/``, fills the form generated from the model's schema, runs it, sees the
outputs, cancels, and reads the server's complaints next to the fields; API clients still
get the JSON.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from tests.browsersupport import screenshot
from tests.support import EXAMPLES, MODELS, Server, ServerFactory, tungsten
from tungstenkit.app.demo import prefers_html

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def image_filter(module_serve: ServerFactory) -> Server:
    return module_serve(EXAMPLES / "image_filter")


@pytest.fixture(scope="module")
def files_model(module_serve: ServerFactory) -> Server:
    return module_serve(MODELS / "files")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.requests = []  # type: ignore[attr-defined]
    page.errors = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def _picture(path: Path) -> Path:
    """A picture with shapes in it, so that a filter visibly changes it."""
    image = PILImage.new("RGB", (320, 220), (246, 241, 232))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 150, 120), fill=(59, 91, 219))
    draw.ellipse((130, 60, 290, 200), fill=(240, 140, 40))
    draw.polygon([(40, 200), (110, 130), (180, 200)], fill=(43, 138, 62))
    draw.line((0, 215, 320, 160), fill=(29, 35, 48), width=6)
    image.save(path)
    return path


def _decode(data_uri: str) -> PILImage.Image:
    header, _, payload = data_uri.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return PILImage.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


def test_browsers_get_the_page_and_api_clients_the_json(image_filter: Server) -> None:
    page = image_filter.client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="assets/demo.js"' in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["vary"] == "Accept"
    for accept in ("*/*", "application/json", "text/html;q=0.5, application/json", None):
        answer = image_filter.client.get("/", headers={"Accept": accept} if accept else {})
        assert answer.headers["content-type"] == "application/json", accept
        assert answer.json()["model_class"] == "ImageFilter"
    for name in ("demo.js", "demo.css"):
        asset = image_filter.client.get(f"/assets/{name}")
        assert asset.status_code == 200 and not re.search(r"https?://\w", asset.text)  # loads nothing from elsewhere


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("*/*", False),
        ("", False),
        ("application/json, text/html", False),
        ("text/html;q=0", False),
        ("application/json;q=0.5, text/html", True),
        ("text/*", False),
    ],
)
def test_content_negotiation(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_fill_the_form_run_and_see_the_filtered_image(image_filter: Server, page: Any, tmp_path: Path) -> None:
    picture = _picture(tmp_path / "shapes.png")
    page.goto(image_filter.url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    assert page.inner_text("#model-name") == image_filter.client.get("/").json()["name"]
    assert page.locator("a[href='docs']").count() >= 1
    # The form follows the schema: a required image with drag-and-drop, a select of the choices.
    assert page.locator("[data-field=image] .required").count() == 1
    assert page.locator("#field-filter option").all_inner_texts() == ["blur", "sharpen", "edges", "invert"]
    assert page.input_value("#field-filter") == page.locator("#field-filter option", has_text="blur").get_attribute(
        "value"
    )
    page.set_input_files("input[type=file][name=image]", str(picture))
    page.select_option("#field-filter", label="edges")
    page.wait_for_selector(".preview img")
    screenshot(page, "demo-before.png")

    page.click("#submit")
    page.wait_for_selector("#status.success")
    page.wait_for_function(
        "() => { const i = document.querySelector('.out-file img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    screenshot(page, "demo-after.png")

    shown = _decode(page.get_attribute(".out-file img", "src"))
    with PILImage.open(picture) as original:
        assert shown.size == original.size
        assert shown.tobytes() != original.convert("RGB").tobytes()  # the filter changed the pixels
    direct = image_filter.client.post(
        "/predict",
        json=[{"image": "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode(), "filter": "edges"}],
    ).json()["outputs"][0]["image"]
    assert _decode(direct).tobytes() == shown.tobytes()  # what the model made, shown as it is
    assert page.get_attribute(".out-file a.download", "download") == "image.png"

    # The prediction is remembered by this browser, and can be shown again after a reload.
    page.reload()
    page.wait_for_selector("#history li button")
    assert "image: shapes.png, filter: edges" in page.inner_text("#history")
    page.click("#history li button")
    page.wait_for_selector("#status.success")
    page.wait_for_selector(".out-file img")
    assert _decode(page.get_attribute(".out-file img", "src")).tobytes() == shown.tobytes()

    assert not page.errors
    outside = [url for url in page.requests if not url.startswith((image_filter.url, "data:", "blob:"))]
    assert not outside, f"the page reached beyond its server: {outside}"


def test_a_refused_input_shows_the_servers_message_next_to_the_field(
    image_filter: Server, page: Any, tmp_path: Path
) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("these are words, not pixels\n")
    page.goto(image_filter.url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    page.click("#submit")
    assert page.inner_text("#error-image") == "Required: choose a file."  # caught before sending

    page.set_input_files("input[type=file][name=image]", str(not_an_image))
    page.wait_for_selector(".preview .file-name")
    page.click("#submit")
    page.wait_for_selector("#status.refused")
    page.wait_for_selector("#error-image:not([hidden])")
    refusal = image_filter.client.post(
        "/predictions",
        json=[{"image": "data:text/plain;base64," + base64.b64encode(not_an_image.read_bytes()).decode()}],
    )
    assert refusal.status_code == 422
    assert page.inner_text("#error-image") == refusal.json()["detail"][0]["msg"]
    assert page.locator("[data-field=image].invalid").count() == 1
    assert page.locator("[data-field=filter].invalid").count() == 0
    assert "refused" in page.inner_text("#run-message")


def test_cancel_a_running_prediction_from_the_page(files_model: Server, page: Any) -> None:
    page.goto(files_model.url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    assert page.get_attribute("[data-field=hold] input[type=range]", "max") == "120"  # bounds make a slider
    page.fill("#field-hold", "60")
    page.click("#submit")
    page.wait_for_selector("#status.running")
    prediction_id = page.inner_text("#prediction-id").removeprefix("id ")
    page.click("#cancel")
    page.wait_for_selector("#status.canceled")
    assert page.is_hidden("#cancel")
    body = files_model.client.get(f"/predictions/{prediction_id}").json()
    assert (body["status"], body["error_message"]) == ("failed", "Canceled")
    assert "Canceled" in page.inner_text("#history")


def test_a_streaming_model_shows_its_steps_progress_and_logs_while_it_runs(serve: ServerFactory, page: Any) -> None:
    server = serve(EXAMPLES / "denoising")
    page.goto(server.url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    page.select_option("#field-colour", label="green")
    page.fill("#field-steps", "40")
    page.fill("#field-step_ms", "50")
    page.click("#submit")
    # While it runs: the newest denoising step, and the progress the model reports.
    page.wait_for_selector("#status.running")
    page.wait_for_selector(".out-file img")
    page.wait_for_function(
        "() => /Step \\d+ of 40: denoising/.test(document.querySelector('#model-progress').textContent)"
    )
    running_step = page.inner_text("#model-progress")
    page.wait_for_selector("#status.success")
    assert running_step != "Step 40 of 40: denoising"
    assert page.inner_text("#model-progress") == "Step 40 of 40: denoising"
    assert _decode(page.get_attribute(".out-file img", "src")).getpixel((3, 3)) == (40, 180, 70)
    assert any(url.endswith("/events") for url in page.requests)  # followed through its events, not polling
    assert not page.errors


def test_the_page_fits_a_phone(image_filter: Server, browser: Any) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(image_filter.url + "/")
        page.wait_for_selector("#submit:not([disabled])")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        cards = page.eval_on_selector_all(".card", "cards => cards.map(c => c.getBoundingClientRect().width)")
        assert all(width <= PHONE["width"] for width in cards)
        screenshot(page, "demo-phone.png")
    finally:
        context.close()


def test_the_api_docs_render_markdown_and_try_requests_offline(image_filter: Server, page: Any) -> None:
    page.goto(image_filter.url + "/docs")
    page.wait_for_selector(".opblock")
    name = image_filter.client.get("/").json()["name"]
    assert name in page.locator(".info .renderedMarkdown code, .info .markdown code").all_inner_texts()
    document = image_filter.client.get("/openapi.json").json()
    assert page.locator(".opblock").count() == sum(len(item) for item in document["paths"].values())
    screenshot(page, "docs.png")
    # Try GET /health from the page.
    health = page.locator(".opblock-get", has=page.locator("[data-path='/health']"))
    health.locator(".opblock-summary").click()
    health.locator(".execute").click()
    status = health.locator(".live-responses-table tbody td.response-col_status")
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert '"status": "ok"' in health.locator(".live-responses-table tbody .microlight").first.inner_text()
    assert not page.errors
    outside = [url for url in page.requests if not url.startswith((image_filter.url, "data:", "blob:"))]
    assert not outside, f"the docs reached beyond their server: {outside}"


def test_the_page_asks_for_an_api_key_and_sends_it_with_every_request(
    module_serve: ServerFactory, redis_url: str, page: Any, tmp_path: Path
) -> None:
    namespace = f"demokeys{uuid.uuid4().hex[:8]}"
    created = tungsten("keys", "create", "--name", "browser", "--redis-url", redis_url, "--namespace", namespace)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    server = module_serve(
        MODELS / "files", namespace=namespace, env={"TUNGSTEN_API_KEYS": "on", "TUNGSTEN_OUTPUT_FILES": "url"}
    )
    page.goto(server.url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    assert page.is_hidden("#api-key-box")
    page.click("#submit")
    page.wait_for_selector("#status.refused")
    assert "401" in page.inner_text("#run-message") and page.is_visible("#api-key-box")

    page.fill("#api-key", token)
    page.dispatch_event("#api-key", "change")
    page.set_input_files("input[type=file][name=image]", str(_picture(tmp_path / "shapes.png")))
    page.wait_for_selector(".preview img")
    page.click("#submit")
    page.wait_for_selector("#status.success")
    # The output image is a /files/ link, fetched with the key and shown from memory.
    page.wait_for_function(
        "() => { const i = document.querySelector('.out-file img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.get_attribute(".out-file img", "src").startswith("blob:")
    assert page.evaluate("() => sessionStorage.getItem('tungsten-demo:api-key')") == token
    assert page.evaluate("() => localStorage.getItem('tungsten-demo:api-key')") is None
    page.reload()  # the key stays for the tab
    page.wait_for_selector("#submit:not([disabled])")
    assert page.is_visible("#api-key-box") and page.input_value("#api-key") == token
    assert not page.errors
