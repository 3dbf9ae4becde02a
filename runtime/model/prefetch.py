"""Work on one background thread, a bounded number of items in flight, in order: the runtime's one
concurrency helper. ``prefetch`` runs ahead of its caller (decoding and preprocessing frame N+1 while
ONNX Runtime works on frame N), ``Behind`` behind it (painting and encoding frame N-1); an exception
travels to the caller.

A Ctrl-C can land at any step of the caller's thread, so the caller takes no lock that the worker
takes too: a ``Condition`` (of ``queue.Queue``, or of a ``concurrent.futures`` future or executor)
left held by an interrupted ``with`` would keep the worker waiting forever. Calls and outcomes go
through two ``queue.SimpleQueue``, whose ``put`` a signal cannot cut in two and whose ``get`` holds
nothing when interrupted. Nothing is polled.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator, Iterable
from queue import SimpleQueue
from typing import Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")
_END = object()


class _Worker:
    """A thread running the calls handed to it one after another; their outcomes come back in order.

    The thread starts with the first call, inside the owner's block that stops it (``finally``,
    ``with``); where a Ctrl-C cut that block short, it ends when the worker is garbage collected.
    """

    def __init__(self, name: str):
        self.calls: SimpleQueue[Callable[[], object] | None] = SimpleQueue()
        self.outcomes: SimpleQueue[tuple[bool, object]] = SimpleQueue()
        self.thread = threading.Thread(target=_serve, args=(self.calls, self.outcomes), name=name, daemon=True)
        self.started = False
        weakref.finalize(self, self.calls.put, None)

    def submit(self, call: Callable[[], object]) -> None:
        self.calls.put(call)
        if not self.started:
            self.started = True
            self.thread.start()

    def outcome(self) -> object:
        """The result of the oldest call not yet taken; its exception is raised."""
        ok, value = self.outcomes.get()
        if not ok:
            raise cast(BaseException, value)
        return value

    def stop(self) -> None:
        """End the thread after the calls handed over (the owner makes those not started return at once)."""
        self.calls.put(None)
        if self.thread.is_alive():
            self.thread.join()


def _serve(calls: SimpleQueue[Callable[[], object] | None], outcomes: SimpleQueue[tuple[bool, object]]) -> None:
    """The worker's thread: each call's outcome, in order, until None. It holds nothing of its owner
    while it waits (no ``self``, no last call), so that the owner can be collected."""
    while (call := calls.get()) is not None:
        try:
            outcomes.put((True, call()))
        except BaseException as exc:  # the caller's to raise
            outcomes.put((False, exc))
        del call


def prefetch(items: Iterable[T], fn: Callable[[T], R], depth: int = 4) -> Generator[R, None, None]:
    """Yield ``fn(item)`` for each item; the items are drawn and ``fn`` runs on a worker thread, up to
    ``depth`` items ahead. An exception there is raised here; closing the generator stops the worker."""
    source = iter(items)
    stopped = False

    def step() -> object:
        item = _END if stopped else next(source, _END)
        return _END if item is _END else fn(cast(T, item))

    worker = _Worker("segtool-prefetch")
    try:
        for _ in range(depth):
            worker.submit(step)
        while (value := worker.outcome()) is not _END:
            worker.submit(step)
            yield cast(R, value)
    finally:
        stopped = True  # the steps not started return at once
        worker.stop()


class Behind(Generic[T]):
    """``fn(item)`` for each item ``put``, on a worker thread, in order, at most ``depth`` waiting.

    The first exception ``fn`` raises is raised by every later ``put`` and by ``wait`` (which waits
    for every call); the items after it are dropped. Leaving the ``with`` block drops the items not
    started and waits for the one under way.
    """

    def __init__(self, fn: Callable[[T], object], depth: int = 8):
        self.fn = fn
        self.depth = depth
        self.error: BaseException | None = None
        self.closed = False
        self.waiting = 0  # calls whose outcome is not taken yet; after a Ctrl-C perhaps fewer, never more
        self.worker = _Worker("segtool-behind")

    def _call(self, item: T) -> None:
        if self.error is None and not self.closed:
            try:
                self.fn(item)
            except BaseException as exc:
                self.error = exc

    def put(self, item: T) -> None:
        if self.waiting >= self.depth:
            self.waiting -= 1
            self.worker.outcome()
        if self.error is not None:
            raise self.error
        self.worker.submit(lambda: self._call(item))
        self.waiting += 1

    def wait(self) -> None:
        """Wait for every call handed over (a last call marks the end: calls run in order)."""
        self.worker.submit(lambda: _END)
        while self.worker.outcome() is not _END:
            pass
        self.waiting = 0
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Behind[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True
        self.worker.stop()
