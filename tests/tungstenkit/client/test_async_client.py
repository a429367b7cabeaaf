"""``AsyncClient`` against a real ``tungsten serve``: 100 predictions at once, errors, cancel."""

from __future__ import annotations

import asyncio

import pytest

from tests.filesupport import png
from tests.support import EXAMPLES, MODELS, ServerFactory
from tungstenkit import AsyncClient, Image
from tungstenkit.client import InvalidInput, PredictionFailed


def test_a_hundred_concurrent_predictions(serve: ServerFactory) -> None:
    server = serve(EXAMPLES / "noop")

    async def main() -> list[str]:
        async with AsyncClient(server.url) as client:
            outputs = await asyncio.gather(*(client.predict({"text": f"input {i}"}) for i in range(100)))
        return [output["text"] for output in outputs]

    assert asyncio.run(main()) == [f"input {i}" for i in range(100)]


def test_errors_files_cancel_and_stream(serve: ServerFactory) -> None:
    server = serve(MODELS / "files")

    async def main() -> None:
        async with AsyncClient(server.url) as client:
            output = await client.predict({"image": png((5, 4))})
            assert isinstance(output["echo"]["image"][0], Image) and output["image_size"] == [5, 4]
            with pytest.raises(InvalidInput):
                await client.predict({"hold": "long"})
            with pytest.raises(PredictionFailed, match="failed on purpose"):
                await client.predict({"fail": True})
            prediction_id = await client.submit({"hold": 30})
            updates = []
            async for update in client.stream(prediction_id):
                updates.append(update)
                if len(updates) == 1:
                    await client.cancel(prediction_id)
            assert updates[0].status == "pending" and updates[-1].canceled
            assert (await client.wait(prediction_id)).canceled
            assert (await client.health())["status"] == "ok"

    asyncio.run(main())
