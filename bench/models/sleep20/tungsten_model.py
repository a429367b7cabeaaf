"""Bench model: a batch of up to 32 inputs costs a fixed 20 ms (a sleep), whatever its size.

An accelerator-bound model in miniature: the ideal throughput is 32 inputs per 20 ms, reached
only when every batch is full and the next one starts the moment the last ends. Written
against the Tungstenkit model API only, so the same file runs on this server and on
Tungstenkit 0.2.20. Each output reports the batch it ran in (size, id, start time).
"""

import itertools
import os
import time
from typing import List

from tungstenkit import BaseIO, Field, define_model

BATCH_SECONDS = 20 / 1000
_BATCHES = itertools.count(1)


class Input(BaseIO):
    text: str = Field(description="Echoed back")


class Output(BaseIO):
    text: str
    batch: int
    batch_id: str
    batch_started: float  # time.time() when predict began: the bench derives the model's idle gaps


@define_model(input=Input, output=Output, batch_size=32)
class FixedCostModel:
    def predict(self, inputs: List[Input]) -> List[Output]:
        started = time.time()
        time.sleep(BATCH_SECONDS)
        batch_id = f"{os.getpid()}-{next(_BATCHES)}"
        return [Output(text=x.text, batch=len(inputs), batch_id=batch_id, batch_started=started) for x in inputs]
