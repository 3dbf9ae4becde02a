"""The inference worker: two lanes of jobs, one model call at a time, and work that can be stopped.

- Two lanes, each one thread with at most ``max_queue`` jobs waiting (more: ``Overloaded`` -> 503 with
  Retry-After): ``short`` (images, the v2 ``infer``) and ``long`` (videos, and images over ``LONG_MP``
  at inference). Decoding, painting and encoding of the two run side by side.
- One model call at a time (ONNX Runtime already uses every core for one call on the CPU): every call
  of the served model takes the model's ``Turn``, and short jobs get it first. A video gives the model
  up after each frame, a large image after each tile (``segtool run`` tiles what memory cannot hold
  whole), so a short request waits for one such call at most, never for a whole video.
- Every job can be stopped (``Job.stop``): past the deadline, when its client leaves, at shutdown. Its
  answer is given at once (``Stopped``); the work itself stops at its next model call, and a call in
  flight on ONNX Runtime's CPU path is cut between two nodes of the graph (``RunOptions.terminate``).
  Tiled images and video frames are one call per tile or frame, so they stop between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from queue import SimpleQueue
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from segtool.runtime.model.engines import SESSION_ERRORS, OrtEngine, inference_error

T = TypeVar("T")
LANES = ("short", "long")  # the first takes the model first
LONG_MP = 4.0  # images over this many megapixels at inference go to the long lane
_current = threading.local()  # .job: the job the thread runs now


class Overloaded(Exception):
    """The lane's queue is full."""


class Stopped(Exception):
    """The job was stopped: ``reason`` is "deadline", "client" (it left) or "shutdown"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Job:
    """One request's work: ``fn`` run on a lane's thread, its outcome in ``future``."""

    def __init__(self, fn: Callable[[], Any], first: bool):
        self.fn, self.first = fn, first  # first: takes the model before the other lane
        self.future: Future = Future()
        self.stopped = threading.Event()
        self.reason = ""
        self.options = ort.RunOptions()  # its model calls; ``terminate`` cuts one in flight

    def stop(self, reason: str) -> None:
        """Answer ``Stopped(reason)`` now; the work stops at its next check or model call."""
        if self.stopped.is_set():
            return
        self.reason = reason
        self.stopped.set()
        self.options.terminate = True
        self._finish(exception=Stopped(reason))

    def check(self) -> None:
        if self.stopped.is_set():
            raise Stopped(self.reason)

    def execute(self) -> None:
        _current.job = self
        try:
            self.check()
            self._finish(result=self.fn())
        except BaseException as exc:  # the caller's to raise
            self._finish(exception=exc)
        finally:
            _current.job = None

    def _finish(self, result: Any = None, exception: BaseException | None = None) -> None:
        with contextlib.suppress(InvalidStateError):  # the first outcome stands (a stop, or the event loop's cancel)
            if exception is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(exception)


class Turn:
    """Whose turn the model is: one call at a time, a job of the ``first`` lane before any other."""

    def __init__(self) -> None:
        self.ready = threading.Condition()
        self.busy = False
        self.first_waiting = 0

    @contextlib.contextmanager
    def take(self, job: Job) -> Iterator[None]:
        with self.ready:
            self.first_waiting += job.first
            try:
                while self.busy or (not job.first and self.first_waiting):
                    job.check()
                    self.ready.wait(0.05)  # woken by the call before; the timeout only to see a stop
                job.check()
            finally:
                self.first_waiting -= job.first
            self.busy = True
        try:
            yield
        finally:
            with self.ready:
                self.busy = False
                self.ready.notify_all()


class TurnEngine:
    """The served model's engine: each call takes the model's ``Turn`` for the job running it, and on
    ONNX Runtime's CPU path runs with the job's ``RunOptions``, so that ``Job.stop`` cuts it short.
    The rest of the engine (``session``, ``provider``, ...) is the engine it wraps."""

    def __init__(self, inner: Any, turn: Turn):
        self.inner, self.turn = inner, turn
        self.session, self.provider, self.reduced = inner.session, inner.provider, inner.reduced

    def reference(self) -> Any:
        return self.inner.reference()

    def run(self, tensor: np.ndarray) -> np.ndarray:
        job: Job | None = getattr(_current, "job", None)
        if job is None:
            return self.inner.run(tensor)
        with self.turn.take(job):
            inner = self.inner
            if not isinstance(inner, OrtEngine) or inner.io_binding:  # OpenVINO, GPUs: stopped between calls
                return inner.run(tensor)
            try:  # OrtEngine.run's CPU path, with the job's RunOptions
                return inner.session.run([inner.output_name], {inner.input_name: tensor}, job.options)[0]
            except SESSION_ERRORS as exc:
                job.check()  # a call cut by ``terminate`` fails: it was stopped
                raise inference_error(exc, tensor.shape, inner.provider) from exc


class Lane:
    """A thread running its jobs one after another; at most ``max_queue`` waiting."""

    def __init__(self, name: str, max_queue: int):
        self.max_queue = max_queue
        self.jobs: SimpleQueue[Job | None] = SimpleQueue()
        self.lock = threading.Lock()
        self.pending = 0  # running + waiting, until the job's thread is done with it (stopped or not)
        self.thread = threading.Thread(target=self._serve, name=f"segtool-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.lock:
            if self.pending > self.max_queue:
                raise Overloaded()
            self.pending += 1
        self.jobs.put(job)

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job.execute()
            finally:
                with self.lock:
                    self.pending -= 1
            del job


class InferenceWorker:
    """The lanes, the model's turn, and each request's deadline (``deadline_s``; None: none)."""

    def __init__(self, max_queue: int, deadline_s: float | None = None):
        self.turn = Turn()
        self.lanes = {name: Lane(name, max_queue) for name in LANES}
        self.deadline_s = deadline_s
        self.jobs: weakref.WeakSet[Job] = weakref.WeakSet()  # queued or running

    @property
    def waiting(self) -> int:
        return sum(max(0, lane.pending - 1) for lane in self.lanes.values())

    async def run(self, fn: Callable[[], T], lane: str = "short", left: Callable[[], Awaitable] | None = None) -> T:
        """``fn()`` on ``lane``; ``Stopped`` when the deadline passes (counted from here, waiting included)
        or ``left()`` returns (the client went away) first; ``Overloaded`` when the lane is full."""
        job = Job(fn, first=lane == LANES[0])
        self.lanes[lane].submit(job)
        self.jobs.add(job)
        outcome = asyncio.wrap_future(job.future)
        watch = asyncio.ensure_future(left()) if left else None
        try:
            done, _ = await asyncio.wait([outcome, *([watch] if watch else [])], timeout=self.deadline_s,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        except asyncio.CancelledError:  # the server's own end (past --drain-s)
            job.stop("shutdown")
            raise
        finally:
            if watch:
                watch.cancel()
        if outcome not in done:
            job.stop("client" if watch in done else "deadline")
        return await outcome

    def stop_all(self, reason: str = "shutdown") -> None:
        for job in list(self.jobs):
            job.stop(reason)

    def stop_after(self, seconds: float) -> None:
        """Stop every job ``seconds`` from now (on the running event loop): the drain's bound."""
        asyncio.get_running_loop().call_later(seconds, self.stop_all)

    def close(self, timeout: float = 1.0) -> None:
        """Stop every job, end the lanes, and wait for their threads at most ``timeout`` s (they are
        daemon threads: a thread still inside a call does not keep the process)."""
        self.stop_all()
        for lane in self.lanes.values():
            lane.jobs.put(None)
        end = time.monotonic() + timeout
        for lane in self.lanes.values():
            lane.thread.join(max(0.0, end - time.monotonic()))

    @property
    def busy(self) -> bool:
        """A lane's thread is still inside a job (after ``close``: a call that could not be cut in time)."""
        return any(lane.thread.is_alive() for lane in self.lanes.values())
