"""Bench model: does nothing, so a run measures the server's own cost per input.

Written against the Tungstenkit model API only, so the same file runs on this server and
on Tungstenkit 0.2.20. Each output reports the batch it ran in (size and a batch id).
"""

import itertools
import os
import time
from typing import List

from tungstenkit import BaseIO, Field, define_model

_BATCHES = itertools.count(1)


class Input(BaseIO):
    text: str = Field(description="Echoed back")


class Output(BaseIO):
    text: str
    batch: int
    batch_id: str
    batch_started: float  # time.time() when predict began: the bench derives the model's idle gaps


@define_model(input=Input, output=Output, batch_size=32)
class NoopModel:
    def predict(self, inputs: List[Input]) -> List[Output]:
        started = time.time()
        batch_id = f"{os.getpid()}-{next(_BATCHES)}"
        return [Output(text=x.text, batch=len(inputs), batch_id=batch_id, batch_started=started) for x in inputs]
