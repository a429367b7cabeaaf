"""Soak model: echoes each input's number, says how many bytes its file held, and which
process ran it, so the soak can check every output against its input.

- ``hold``: seconds predict keeps running, in 10 ms steps (so a cancel interrupts it);
- ``blob``: an optional file input; its size comes back as ``blob_bytes`` (-1 without).
"""

import os
import time

from tungstenkit import BaseIO, Binary, Option, define_model


class Input(BaseIO):
    x: int
    hold: float = Option(0.0, ge=0, le=10)
    blob: Binary | None = Option(None)


class Output(BaseIO):
    x: int
    blob_bytes: int
    worker_pid: int


@define_model(input=Input, output=Output, batch_size=8)
class SoakModel:
    def predict(self, inputs):
        deadline = time.monotonic() + max(i.hold for i in inputs)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return [
            Output(x=i.x, blob_bytes=len(i.blob.read_bytes()) if i.blob is not None else -1, worker_pid=os.getpid())
            for i in inputs
        ]
