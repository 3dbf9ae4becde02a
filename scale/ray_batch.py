"""`segtool run --ray`: the job layer on Ray Data, for more inputs than one process gets through.

The inputs become a Ray Dataset with two stages: decoding (Ray tasks; each image read and decoded
with the same pixel limit and reduced JPEG decoding as a plain run), then segmentation in a fixed
pool of actors, each holding one ``Segmenter`` limited to the intra-op threads it is given. Actors
write outputs straight to the output folder with the same names, atomic writes and pixels as
``segtool run``; one manifest row per input comes back to the driver and goes to
``<out>/manifest.parquet``.
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from segtool.runtime.errors import SegtoolError, UsageError, interrupt_name
from segtool.runtime.files.images import atomic_write_bytes
from segtool.runtime.files.pictures import Painter
from segtool.runtime.files.sources import BAD, IMAGE, Source
from segtool.runtime.jobs import Decoded, JobOptions, Report, Result, load, process
from segtool.runtime.model.segmenter import Segmenter

MANIFEST = "manifest.parquet"
COLUMNS = ("source", "kind", "outputs", "width", "height", "frames", "classes", "seconds", "error")
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
DECODE_CPUS = 0.1


def connect(address: str) -> None:
    """``local``: a Ray instance in this process on this machine's cores; ``auto``: the cluster
    started with `ray start`; ``ray://host:port``: a remote cluster through Ray Client."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the driver's C++ core worker: no notices
    try:
        import ray
    except ImportError as exc:  # installed but broken (a missing dependency of its own)
        raise UsageError(f"--ray: Ray cannot be imported ({exc}): pip install 'segtool[ray]'") from None

    # Ray's own log lines and warnings stay out of segtool's output (the driver shows its own bar).
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray(\.|$)")
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    if address == "local":  # on loopback only
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)  # type: ignore[arg-type]
    else:
        ray.init(address=address, **quiet)  # type: ignore[arg-type]
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows its own bar: done, failed, rate, ETA
    context.print_on_execution_start = False


def decode_row(row: dict, max_pixels: int | None, reduce_to: int | None) -> dict:
    """Stage 1: read and decode an image (videos pass through; the actor reads them)."""
    row = dict(row, image=NO_IMAGE, full_height=0, full_width=0)
    if row["kind"] != IMAGE or row["error"]:
        return row
    try:
        decoded = load(row["source"], JobOptions(max_pixels=max_pixels, max_size=reduce_to))
        row["image"], (row["full_height"], row["full_width"]) = decoded.image, decoded.full
    except SegtoolError as exc:
        row["error"] = str(exc)
    return row


class SegmentActor:
    """Stage 2: one model per actor; ``process`` (the job layer) writes the pictures, and the
    result's manifest row comes back."""

    def __init__(self, model: str, device: str, threads: int, options: JobOptions, out_dir: str):
        self.seg = Segmenter(model, device=device, threads=threads, warn_random=False)
        self.options = options  # the dataclass itself (pickled): nested settings stay typed
        self.painter = Painter(self.seg.meta, self.options.alpha)
        self.out_dir = Path(out_dir)

    def __call__(self, batch: dict) -> dict:
        rows = [self.one({k: batch[k][i] for k in batch}) for i in range(len(batch["source"]))]
        return {column: [r[column] for r in rows] for column in COLUMNS}

    def one(self, row: dict) -> dict:
        source = str(row["source"])
        if row["error"]:
            return Result(source, row["kind"], error=str(row["error"])).row()
        item: Source | Decoded = Source(str(row["kind"]), source, str(row["stem"]))
        if row["kind"] == IMAGE:
            full = (int(row["full_height"]), int(row["full_width"]))
            item = Decoded(row["image"], full, source, str(row["stem"]))
        try:
            return process(self.seg, item, self.options, self.out_dir, self.painter).row()
        except SegtoolError as exc:
            return Result(source, row["kind"], error=str(exc)).row()


def write_manifest(out_dir: Path, rows: list[dict]) -> Path:
    """One row per input, written atomically as Parquet (classes and outputs as JSON strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows],
                                 schema=pa.schema([("source", pa.string()), ("kind", pa.string()),
                                                   ("outputs", pa.string()), ("width", pa.int64()),
                                                   ("height", pa.int64()), ("frames", pa.int64()),
                                                   ("classes", pa.string()), ("seconds", pa.float64()),
                                                   ("error", pa.string())]))  # fmt: skip
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path = out_dir / MANIFEST
    atomic_write_bytes(path, buffer.getvalue())
    return path


def run_ray(model: Path, sources: list[Source], out_dir: Path, options: JobOptions, device: str = "cpu",
            num_actors: int = 2, actor_threads: int = 1, gpus_per_actor: float = 0.0,
            on_row: Callable[[dict], None] = lambda row: None) -> Report:  # fmt: skip
    """Segment ``sources`` on the connected Ray cluster; Ctrl-C or SIGTERM stops the job (what was
    written stays complete) and the manifest holds the inputs done."""
    import ray
    import ray.data

    report, rows = Report(inputs=len(sources)), []
    started = time.perf_counter()
    items = [{"source": str(s.location), "kind": s.kind, "stem": s.stem, "error": s.problem if s.kind == BAD else ""}
             for s in sources]  # fmt: skip
    try:
        if items:
            # Decoding tasks ask for a tenth of a core and each actor for its threads less a tenth, so
            # decoding always finds room next to a full actor pool (a task asking for no CPU at all
            # is throttled by Ray Data: measured 10x slower here); a few items per block keep
            # scheduling overhead low (docs/BENCHMARKS.md).
            decode = partial(decode_row, max_pixels=options.max_pixels, reduce_to=options.max_size)
            blocks = max(1, min(len(items), 4 * num_actors))
            ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=blocks)
            ds = ds.map(decode, num_cpus=DECODE_CPUS)
            ds = ds.map_batches(SegmentActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=num_actors),
                                num_cpus=max(DECODE_CPUS, actor_threads - DECODE_CPUS), num_gpus=gpus_per_actor or None,
                                max_restarts=0,  # a failed actor is that input's failure, not a silent retry
                                fn_constructor_kwargs={"model": str(Path(model).resolve()), "device": device,
                                                       "threads": actor_threads, "options": options,
                                                       "out_dir": str(Path(out_dir).resolve())})  # fmt: skip
            for row in ds.iter_rows():
                rows.append(dict(row))
                report.add(Result.from_row(rows[-1]))
                on_row(rows[-1])
    except KeyboardInterrupt as exc:
        report.interrupted = interrupt_name(exc)
    finally:
        report.seconds = time.perf_counter() - started
        write_manifest(out_dir, rows)
    return report
