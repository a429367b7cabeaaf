"""The streaming examples, served: tokens and denoising steps arrive as output events."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image as PILImage

from tests.support import EXAMPLES, ServerFactory
from tests.test_events import events, submit


def test_the_token_generator_streams_a_token_per_step_and_returns_the_text(serve: ServerFactory) -> None:
    server = serve(EXAMPLES / "token_stream")
    prediction_id = submit(
        server, [{"prompt": "one two three", "delay_ms": 20}, {"prompt": "four five", "delay_ms": 20}]
    )
    seen = [e for _, e in events(server, f"/predictions/{prediction_id}/events")]
    tokens: dict[int, str] = {0: "", 1: ""}
    for event in seen:
        if event.event == "output":
            for item in json.loads(event.data):
                tokens[item["index"]] += item["output"]["text"]
    assert tokens == {0: "one two three ", 1: "four five "}
    final = json.loads(seen[-1].data)
    assert final["outputs"] == [{"text": "one two three"}, {"text": "four five"}]
    assert "decoding 2 prompts in 3 steps" in final["logs"] and final["progress"]["step"] == 3


def test_the_denoising_model_streams_an_image_per_step(serve: ServerFactory) -> None:
    server = serve(EXAMPLES / "denoising")
    prediction_id = submit(server, [{"colour": "blue", "steps": 4, "size": 16}])
    seen = [e for _, e in events(server, f"/predictions/{prediction_id}/events")]
    images = [json.loads(e.data)[0]["output"]["image"] for e in seen if e.event == "output"]
    assert len(images) == 4
    last = PILImage.open(io.BytesIO(base64.b64decode(images[-1].split(",", 1)[1])))
    assert last.size == (16, 16) and last.convert("RGB").getpixel((5, 5)) == (40, 80, 220)
    assert json.loads(seen[-1].data)["outputs"][0]["image"] == images[-1]
