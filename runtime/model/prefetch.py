"""Run a function over an iterable on a background thread, a bounded number of items ahead.

The one concurrency helper of the runtime: the segmenter uses it to decode and preprocess
frame N+1 while ONNX Runtime works on frame N. Order is kept, memory is bounded by ``depth``,
an exception in the producer is raised in the consumer, and closing the generator early
stops the producer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def prefetch(items: Iterable[T], fn: Callable[[T], R], depth: int = 4) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, computed ahead on a daemon thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("ok", fn(item))):
                    return
            put(("end", _END))
        except BaseException as exc:
            put(("error", exc))

    thread = threading.Thread(target=produce, name="segtool-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


class Drain:
    """The other direction: items handed over with ``put`` are consumed by ``fn`` on a daemon thread.

    ``put`` blocks while ``depth`` items wait (bounded memory); the first exception ``fn`` raises
    is re-raised by the next ``put`` or by ``close``, after which further items are dropped.
    """

    def __init__(self, fn: Callable[[T], object], depth: int = 8):
        self.fn = fn
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._work, name="segtool-drain", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        # Polls rather than waiting for a wake-up: a Ctrl-C that lands in the producer's ``put`` can
        # lose the notification, and the worker must still see ``close`` (seen once in CI as a hang).
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.closing.is_set():
                    return
                continue
            if item is _END:
                return
            if self.error is None:
                try:
                    self.fn(item)
                except BaseException as exc:
                    self.error = exc

    def put(self, item: T) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def close(self) -> None:
        """Wait for every queued item; raise the first error, if any."""
        self.closing.set()  # the worker ends once the queue is empty
        self.thread.join()
        if self.error is not None:
            raise self.error
