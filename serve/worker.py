"""A bounded inference worker: one model call at a time, a queue of at most ``max_queue`` waiting.

ONNX Runtime already uses every core for one call on the CPU, so calls run one after another on
a single thread; requests beyond the queue are refused at once (``Overloaded`` -> 503 with
Retry-After) instead of piling up until clients time out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Overloaded(Exception):
    """The queue is full."""


class InferenceWorker:
    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segtool-infer")
        self.lock = threading.Lock()
        self.pending = 0  # running + waiting

    @property
    def waiting(self) -> int:
        return max(0, self.pending - 1)

    async def run(self, fn: Callable[[], T]) -> T:
        with self.lock:
            if self.pending > self.max_queue:
                raise Overloaded()
            self.pending += 1
        try:
            return await asyncio.wrap_future(self.executor.submit(fn))
        finally:
            with self.lock:
                self.pending -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=True)
