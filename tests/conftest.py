"""Shared fixtures and helpers: one random-weights export through the real `segtool export`
command, two ways to run `segtool`, and the builders the test files share.

Every test that needs a model uses this file; the PyTorch model it came from is rebuilt from
the same seed, so parity can be checked independently of the export's own gate.

Running segtool:

- ``run_in_process`` calls the entry point of the console script, ``segtool.cli.main.main``, in
  the test process: the same argument parsing, the same typed errors turned into one line and an
  exit code, both output streams captured down to the file descriptors (what OpenCV or ONNX Runtime
  print from C as well). It costs no interpreter start; the default for CLI tests.
- ``run_segtool`` starts the installed console script as a user would. For what needs a real
  process: signals (``interrupt_segtool``), a server, a Ray cluster, another environment
  (PYTHONPATH, an offline child), resource limits, or a timeout that kills a hang; and at least
  one test per command, so that the entry point itself stays tested.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import itertools
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:
    from segtool.export.graph import SegmentationGraph
    from segtool.runtime import ModelMetadata, Segmenter

SEGTOOL = str(Path(sys.executable).with_name("segtool"))
SEED = 0
# --device auto's engine timings (runtime.model.choice): one cache per test session, never the user's
os.environ["SEGTOOL_CACHE"] = tempfile.mkdtemp(prefix="segtool-cache-")


class Ran(Protocol):
    """What a finished `segtool` left: a ``subprocess.CompletedProcess`` or an ``InProcess``."""

    @property
    def returncode(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


def run_segtool(
    *args: object, env_extra: dict[str, str] | None = None, cwd: Path | str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a user would; returns the completed process."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([SEGTOOL, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@dataclass
class InProcess:
    """The fields of a ``subprocess.CompletedProcess`` that tests read, from ``run_in_process``."""

    args: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""


@contextlib.contextmanager
def _captured(into: InProcess) -> Iterator[None]:
    """File descriptors 1 and 2, and ``sys.stdout``/``sys.stderr`` on them, into files, as a process's
    pipes would get them (stdout block-buffered, stderr line-buffered, UTF-8); the text lands in
    ``into`` when the block ends. pytest's own capture is put back as it was."""
    streams = sys.stdout, sys.stderr
    for stream in streams:
        stream.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # closed below
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
        try:
            yield
        finally:
            sys.stdout.close()  # flushes; the descriptors stay open (closefd=False)
            sys.stderr.close()
            sys.stdout, sys.stderr = streams
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            out.seek(0)
            err.seek(0)
            into.stdout = out.read().decode("utf-8", "replace")
            into.stderr = err.read().decode("utf-8", "replace")


def _exit_status(code: object) -> int:
    """The status a process ends with for ``sys.exit(code)`` (a message is printed to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_in_process(*args: object, cwd: Path | str | None = None) -> InProcess:
    """`segtool ARGS` through ``segtool.cli.main.main`` in this process, as the console script runs it.

    What ``main()`` changes in the process (the ``segtool`` logger, the SIGTERM handler) and what
    this sets up (``sys.argv``, the working folder, the output streams) is put back afterwards. An
    exception ``main()`` does not map (a bug) is what the interpreter would make of it: its
    traceback on stderr and exit status 1, so ``assert_clean_failure`` keeps its meaning."""
    from segtool.cli import main as cli_main

    ran = InProcess(["segtool", *map(str, args)], 0)
    logger = logging.getLogger("segtool")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    argv, folder, on_sigterm = sys.argv, os.getcwd(), signal.getsignal(signal.SIGTERM)
    try:
        sys.argv = list(ran.args)
        if cwd is not None:
            os.chdir(cwd)
        with _captured(ran):
            try:
                cli_main.main()
            except SystemExit as exc:
                ran.returncode = _exit_status(exc.code)
            except Exception:  # an unmapped error (a bug): a traceback, as without the test
                traceback.print_exc()
                ran.returncode = 1
    finally:
        sys.argv = argv
        os.chdir(folder)
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    if ran.returncode in (130, 143):  # Ctrl-C or SIGTERM reached this process: stop the tests, as without main()
        raise KeyboardInterrupt(f"{shlex.join(ran.args)}: {ran.stderr.strip()}")
    return ran


def _default_sigint() -> None:
    """In the child, before segtool starts: SIGINT as a terminal's Ctrl-C finds it, even where the
    tests themselves run with SIGINT ignored (a background job of a non-interactive shell): Python
    turns SIGINT into KeyboardInterrupt only if it is not ignored at startup."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_segtool(
    *args: object,
    ready: Callable[[], bool],
    signum: signal.Signals = signal.SIGINT,
    settle: float = 0.0,
    wait: float = 120,
    timeout: float = 120,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Start the console script, wait until ``ready()`` (at most ``wait`` s, or until the process
    ends by itself), ``settle`` s more, send ``signum``, and collect the process. One that has not
    ended ``timeout`` s later fails the test with its output and, from faulthandler, every thread's
    stack (where it hangs)."""
    command = [SEGTOOL, *map(str, args)]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(env_extra or {})}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)  # fmt: skip
    try:
        deadline = time.monotonic() + wait
        while process.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(settle)
        process.send_signal(signum)  # nothing, if it has ended already: the test then sees how
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler writes each thread's stack to stderr
            try:
                stdout, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            pytest.fail(f"{shlex.join(command)} did not end within {timeout} s of {signum.name}:\n"
                        f"{stdout[-3000:]}\n{stderr[-12000:]}")  # fmt: skip
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_clean_failure(proc: Ran, code: int, *needles: str) -> None:
    """A user error: the expected exit code, no traceback, and a message naming what went wrong."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- two tiers --------------------------------------------------------------------------------------
# The default run (`python -m pytest`) is the fast tier; `python -m pytest -m slow` the slow one. A
# test is slow when it needs a real network exported or trained (one of these fixtures), or when its
# module is marked with one of SLOW_KINDS (a browser, a Ray cluster, ...): conftest adds the mark.
SLOW_FIXTURES = frozenset(
    {
        "export_run",
        "model_path",
        "segmenter",
        "torch_graph",
        "int8_model",
        "trained",
        "zoo",
        "other_model",
        "torchvision_export",
        "checkpoint",
        "lraspp",
        "fcn2",
        "deeplab5",
        "labels_model",
        "fp16_model",
    }
)
SLOW_KINDS = ("browser", "ray", "openvino", "schemathesis", "memory")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs_network = SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if needs_network or any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


# -- no network for pretrained weights --------------------------------------------------------------

OFFLINE_MESSAGE = "no network (segtool tests)"


def _no_download(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise urllib.error.URLError(OFFLINE_MESSAGE)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision cannot download weights in this test (in this process): as on a machine offline."""
    from torchvision.models._api import WeightsEnum

    monkeypatch.setattr(WeightsEnum, "get_state_dict", _no_download)


OFFLINE_SITECUSTOMIZE = f"""\
import urllib.error

from torchvision.models._api import WeightsEnum


def _no_download(self, *args, **kwargs):
    raise urllib.error.URLError({OFFLINE_MESSAGE!r})


WeightsEnum.get_state_dict = _no_download
"""


@pytest.fixture
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``env_extra`` for ``run_segtool``: the same offline torchvision in the child process (a
    ``sitecustomize`` on its PYTHONPATH)."""
    folder = tmp_path_factory.mktemp("offline")
    (folder / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


# -- models ------------------------------------------------------------------------------------------


def code_key(*extra: object) -> str:
    """A key that changes with segtool's code (export/, runtime/, cli/), the versions of the libraries
    an export depends on, and ``extra``: what a cached export or training is filed under."""
    digest = hashlib.sha256(repr(extra).encode())
    root = Path(__file__).resolve().parent.parent
    for folder in ("export", "runtime", "cli"):
        for source in sorted((root / folder).rglob("*.py")):
            digest.update(source.relative_to(root).as_posix().encode())
            digest.update(source.read_bytes())
    for name in ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{name}=={importlib.metadata.version(name)}".encode())
    return digest.hexdigest()[:16]


def cache_folder(request: pytest.FixtureRequest, name: str) -> Path:
    """A folder that outlives this pytest run (pytest's cache: the fast and the slow tier of one CI run
    share it), or a temporary one under ``-p no:cacheprovider``."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return request.getfixturevalue("tmp_path_factory").mktemp(name)
    return Path(cache.mkdir(name))


@pytest.fixture(scope="session")
def export_run(request: pytest.FixtureRequest) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``segtool export --weights random --seed 0``, run once per code and library versions: the file
    and what the command printed come from the cache when this very code made them before."""
    args = ["export", "--weights", "random", "--seed", str(SEED)]
    folder = cache_folder(request, "exports") / code_key(*args)
    out, printed = folder / "fcn_random.onnx", folder / "printed.json"
    command = [SEGTOOL, *args, "--output", str(out)]
    if out.is_file() and printed.is_file():
        stdout, stderr = json.loads(printed.read_text())
        return out, subprocess.CompletedProcess(command, 0, stdout, stderr)
    folder.mkdir(parents=True, exist_ok=True)
    proc = run_segtool(*args, "--output", out)  # segtool writes the file whole or not at all
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed.write_text(json.dumps([proc.stdout, proc.stderr]))
    return out, proc


@pytest.fixture(scope="session")
def model_path(export_run: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    return export_run[0]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model of tests/tiny.py (loads in milliseconds), written once."""
    from tiny import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small-calibration int8 variant (no gate: the fp32 export is checked elsewhere; forced, since
    the speed gate measures time and tests assert correctness, not speed)."""
    from segtool.export import export_model

    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    small = ((1, 3, 64, 96),)
    result = export_model(out, weights="random", seed=SEED, verify=False, precision="int8", shapes=small,
                          calibration_count=6, calibration_size=96, variant_min_agreement=0.5, force=True)  # fmt: skip
    return result.path


@pytest.fixture(scope="session")
def torch_graph() -> SegmentationGraph:
    from segtool.export import build_graph

    graph, _ = build_graph("fcn_resnet50", "random", SEED)
    return graph


@pytest.fixture(scope="session")
def segmenter(model_path: Path) -> Segmenter:
    from segtool.runtime import Segmenter

    return Segmenter(model_path, device="cpu", warn_random=False)


# -- pictures, videos, data sets ---------------------------------------------------------------------


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random BGR picture: blobs of colour, like a photo at a glance (the runtime's own generator)."""
    from segtool.runtime.tools.synthetic import smooth_image

    return smooth_image(height, width, seed=seed, cell=12)


def jpeg(height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    """``scene(height, width, seed)`` as JPEG bytes."""
    return cv2.imencode(".jpg", scene(height, width, seed))[1].tobytes()


def imread(path: Path | str) -> np.ndarray:
    """``cv2.imread``, checked to have decoded (it returns None for a file it cannot read)."""
    image = cv2.imread(str(path))
    assert image is not None, f"{path} does not decode"
    return image


def imdecode(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """``cv2.imdecode`` of ``data``, checked to have decoded."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    assert image is not None, "the bytes do not decode"
    return image


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> Path:
    """An mp4 (MPEG-4 part 2, which every OpenCV build writes) of ``frames``: BGR, all one size."""
    rest = iter(frames)
    first = next(rest)
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in itertools.chain([first], rest):
        writer.write(frame)
    writer.release()
    return path


def scene_video(path: Path, frames: int, width: int, height: int, fps: float = 10.0) -> Path:
    """An mp4 whose frame k is ``scene(height, width, seed=k)``."""
    return write_video(path, (scene(height, width, seed=k) for k in range(frames)), fps)


def make_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: float = 12.0) -> list[np.ndarray]:
    """Write a small mp4 of drifting colour blobs; return the frames as OpenCV decodes them back."""
    base = scene(height, width * 2, seed=3)
    write_video(path, (np.ascontiguousarray(base[:, k % width : k % width + width]) for k in range(frames)), fps)
    decoded, _ = read_video(path)
    assert len(decoded) == frames
    return decoded


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame OpenCV decodes from ``path``, and the frame rate it reports."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while (got := capture.read())[0]:
        frames.append(got[1])
    return frames, capture.get(cv2.CAP_PROP_FPS)


def make_voc(root: Path, samples: Mapping[str, tuple[np.ndarray, np.ndarray | None]], split: str = "val") -> Path:
    """A VOC2012-style tree at ``root``: JPEGImages, SegmentationClass (paletted PNGs; a None mask
    is left out) and ImageSets/Segmentation/``split``.txt listing every sample."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (image, mask) in samples.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), image)
        if mask is not None:
            (root / "SegmentationClass" / f"{name}.png").write_bytes(labels_png(mask))
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(samples) + "\n")
    return root


def voc_meta(random_weights: bool = True) -> ModelMetadata:
    """Metadata of a VOC model, as an export would write it (for painting without a model file)."""
    from segtool.runtime import VOC_CLASSES, ModelMetadata, voc_colormap

    weights = {"kind": "random", "seed": 0} if random_weights else {"kind": "torchvision", "name": "X.Y"}
    return ModelMetadata("fcn_resnet50", VOC_CLASSES, voc_colormap(21), (0.485, 0.456, 0.406),
                         (0.229, 0.224, 0.225), "RGB", "logits", weights)  # fmt: skip


def labels_png(labels: np.ndarray) -> bytes:
    """A VOC paletted PNG of ``labels`` (all 256 VOC colours, 255 = void), by the runtime's own painter."""
    from segtool.runtime import Painter, voc_colormap

    painter = Painter(voc_meta())
    painter.palette_rgb = voc_colormap()
    return painter.labels_png(labels)
