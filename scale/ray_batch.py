"""`segtool run --ray`: the job layer on Ray Data, for more inputs than one process gets through.

The inputs become a Ray Dataset with two stages: decoding (Ray tasks; each image read and decoded
with the same pixel limit and reduced JPEG decoding as a plain run), then segmentation in a fixed
pool of actors, each holding one ``Segmenter`` limited to the intra-op threads it is given. Actors
write outputs straight to the output folder with the same names, atomic writes and pixels as
``segtool run``; one manifest row per input (with the Ray node and host that did it) comes back
to the driver and goes to ``<out>/manifest.parquet``.

Faults are one line each: an address where no Ray cluster answers (checked with a plain TCP
connection before Ray is asked, which would otherwise retry for minutes), and a node or actor
lost mid-job: the job stops, the manifest keeps the inputs done, the hidden temporary files of
the job's dead actors are removed, and ``--skip-existing`` does the rest.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import socket
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
from segtool.runtime.jobs import Decoded, JobOptions, Report, Result, load, outputs_complete, process
from segtool.runtime.model.segmenter import Segmenter

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
COLUMNS = ("source", "kind", "outputs", "width", "height", "frames", "classes", "seconds", "error", "node", "host")
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
DECODE_CPUS = 0.1
CONNECT_TIMEOUT_S = 5.0
RAY_CLIENT_PORT = 10001  # ray://host without a port


class ClusterLost(SegtoolError):
    """A Ray node or actor died mid-job; what was done is written, --skip-existing does the rest."""


def cluster_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that ``address`` names (``auto`` reads RAY_ADDRESS as Ray does), or None for
    ``local`` and for ``auto`` without RAY_ADDRESS (Ray then looks for a cluster started here)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
    if address in ("local", "auto"):
        return None
    rest = address.removeprefix("ray://")
    host, colon, port = rest.rpartition(":")
    if not colon:
        host, port = rest, str(RAY_CLIENT_PORT) if address.startswith("ray://") else ""
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray {address!r}: give local, auto, HOST:PORT or ray://HOST:PORT")
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable(address: str) -> None:
    """One line, quickly, when nothing listens at the address (``ray.init`` retries for minutes)."""
    endpoint = cluster_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"--ray {address}: no Ray cluster answers at {endpoint[0]}:{endpoint[1]} ({reason})") from None


def connect(address: str) -> None:
    """``local``: a Ray instance in this process on this machine's cores; ``auto``: the cluster
    started with `ray start`; ``ray://host:port``: a remote cluster through Ray Client."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the driver's C++ core worker: no notices
    check_reachable(address)
    endpoint = cluster_endpoint(address)
    if endpoint and is_loopback(endpoint[0]):
        # Ray replaces a loopback address by this machine's network address before connecting, where a
        # cluster started on loopback (`ray start --node-ip-address=127.0.0.1`) does not listen; this
        # setting (read when Ray is imported) keeps the driver on loopback, as on macOS and Windows.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError as exc:  # installed but broken (a missing dependency of its own)
        raise UsageError(f"--ray: Ray cannot be imported ({exc}): pip install 'segtool[ray]'") from None

    # Ray's own log lines and warnings stay out of segtool's output (the driver shows its own bar).
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray(\.|$)")
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    try:
        if address == "local":  # on loopback only
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)  # type: ignore[arg-type]
        else:
            ray.init(address=address, **quiet)  # type: ignore[arg-type]
    except (ConnectionError, TimeoutError) as exc:  # "auto" with no cluster started here, a GCS that went away
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--ray {address}: cannot connect ({first})") from None
    import ray.data

    # After importing ray.data, which sets up its own loggers; the driver reports failures itself (one
    # line each), Ray Data would add their tracebacks at ERROR.
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
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
        import ray

        self.where = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
        self.seg = Segmenter(model, device=device, threads=threads, warn_random=False)
        self.options = options  # the dataclass itself (pickled): nested settings stay typed
        self.painter = Painter(self.seg.meta, self.options.alpha)
        self.out_dir = Path(out_dir)

    def __call__(self, batch: dict) -> dict:
        rows = [self.one({k: batch[k][i] for k in batch}) for i in range(len(batch["source"]))]
        return {column: [r[column] for r in rows] for column in COLUMNS}

    def one(self, row: dict) -> dict:
        return self.segment(row) | self.where

    def segment(self, row: dict) -> dict:
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


INTEGERS = ("width", "height", "frames")


def write_manifest(out_dir: Path, rows: list[dict]) -> Path:
    """One row per input, written atomically as Parquet (classes and outputs as JSON strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {c: pa.int64() if c in INTEGERS else pa.float64() if c == "seconds" else pa.string() for c in COLUMNS}
    schema = pa.schema(list(types.items()))
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path = out_dir / MANIFEST
    atomic_write_bytes(path, buffer.getvalue())
    return path


def stopped_actor_pids(wait_s: float = 10.0) -> set[int]:
    """Process ids of this job's segmentation actors, once none of them runs any more (at most
    ``wait_s``), from the cluster's actor table; none if it cannot be read (nothing is removed then)."""
    import ray
    from ray._private import state  # the GCS actor table (ray.util.state needs the dashboard)

    deadline = time.monotonic() + wait_s
    while True:
        try:
            actors = state.actors(job_id=ray.JobID.from_hex(ray.get_runtime_context().get_job_id())).values()
        except Exception as exc:  # a cleanup aid only: the job's own outcome is what counts
            log.warning("cannot list the job's Ray actors (%s): hidden temporary files may stay behind", exc)
            return set()
        ours = [a for a in actors if "SegmentActor" in a["ActorClassName"]]
        if all(a["State"] == "DEAD" for a in ours) or time.monotonic() > deadline:
            return {int(a["Pid"]) for a in ours if a["Pid"]}
        time.sleep(0.2)


def remove_dead_temps(out_dir: Path, pids: set[int]) -> int:
    """Remove the hidden temporary files (``images.temp_name``) the job's actors left when killed
    mid-write; those of other processes writing to the same folder are left alone."""
    removed = 0
    for pid in pids:
        for temp in out_dir.glob(f".segtool-{pid}-*.partial*"):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed


def run_ray(
    model: Path,
    sources: list[Source],
    out_dir: Path,
    options: JobOptions,
    device: str = "cpu",
    num_actors: int = 2,
    actor_threads: int = 1,
    gpus_per_actor: float = 0.0,
    on_row: Callable[[dict], None] = lambda row: None,
) -> Report:
    """Segment ``sources`` on the connected Ray cluster; Ctrl-C or SIGTERM stops the job (what was
    written stays complete) and the manifest holds the inputs done. ``ClusterLost`` when a node or an
    actor dies mid-job."""
    import ray
    import ray.data
    import ray.exceptions

    report, rows = Report(inputs=len(sources)), []
    started = time.perf_counter()
    items = [
        {"source": str(s.location), "kind": s.kind, "stem": s.stem, "error": s.problem if s.kind == BAD else ""}
        for s in sources
    ]
    actor_args = {
        "model": str(Path(model).resolve()),
        "device": device,
        "threads": actor_threads,
        "options": options,
        "out_dir": str(Path(out_dir).resolve()),
    }
    lost = (
        ray.exceptions.RayActorError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.ObjectLostError,
        ray.exceptions.OwnerDiedError,
    )
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
            with warnings.catch_warnings():  # max_restarts as a keyword: "deprecated", and still Ray Data's way
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(
                    SegmentActor,
                    batch_size=1,
                    compute=ray.data.ActorPoolStrategy(size=num_actors),
                    num_cpus=max(DECODE_CPUS, actor_threads - DECODE_CPUS),
                    num_gpus=gpus_per_actor or None,
                    max_restarts=0,  # a failed actor is that input's failure, not a silent retry
                    fn_constructor_kwargs=actor_args,
                )
            for row in ds.iter_rows():
                rows.append(dict(row))
                report.add(Result.from_row(rows[-1]))
                on_row(rows[-1])
    except KeyboardInterrupt as exc:
        report.interrupted = interrupt_name(exc)
    except lost as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        done = sum(outputs_complete(s, out_dir, options) for s in sources)
        why = first.rstrip(".")
        raise ClusterLost(
            f"--ray: the cluster lost a node or an actor mid-job ({why}); {done} of {len(items)} input(s) "
            f"have their outputs ({len(rows)} in {out_dir / MANIFEST}): rerun with --skip-existing for the rest"
        ) from None
    finally:
        report.seconds = time.perf_counter() - started
        write_manifest(out_dir, rows)
        if any(out_dir.glob(".segtool-*.partial*")) and (removed := remove_dead_temps(out_dir, stopped_actor_pids())):
            log.info("removed %d temporary file(s) of actors stopped mid-write", removed)
    return report
