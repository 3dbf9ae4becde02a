"""Seeded fuzzing: mutated PNG, JPEG and MP4 bytes through `segtool run` and through the Python API.

Every case must end in a result or a clean error (``SegtoolError`` / one line), never a traceback
or a hang. Mutations: bit flips, overwritten runs, cut-offs, inserted junk, and PNG/JPEG size
fields rewritten to huge values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from conftest import run_segtool, scene, scene_video

CASES_PER_KIND = 110  # x 3 kinds = 330 cases
SEED = 1234


def seeds(tmp: Path) -> dict[str, bytes]:
    video = scene_video(tmp / "seed.mp4", frames=4, width=48, height=32)
    image = scene(40, 56, seed=9)
    return {".png": cv2.imencode(".png", image)[1].tobytes(), ".jpg": cv2.imencode(".jpg", image)[1].tobytes(),
            ".mp4": video.read_bytes()}  # fmt: skip


def mutate(data: bytes, rng: np.random.Generator, suffix: str) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 6))
        at = int(rng.integers(0, max(1, len(out))))
        if kind == 0 and out:  # flip bits
            out[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # overwrite a run with noise
            n = int(rng.integers(1, 64))
            out[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        elif kind == 2:  # cut off
            del out[at:]
        elif kind == 3:  # insert junk
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        elif kind == 4 and suffix == ".png" and len(out) > 24:  # claim a huge size in IHDR
            out[16:24] = int(rng.integers(1, 2**31)).to_bytes(4, "big") + int(rng.integers(1, 2**31)).to_bytes(4, "big")
        elif kind == 5 and suffix == ".jpg":  # rewrite a SOF0 size field
            sof = out.find(b"\xff\xc0")
            if sof > 0 and len(out) > sof + 9:
                out[sof + 5 : sof + 9] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    return bytes(out)


def make_cases(folder: Path) -> list[Path]:
    rng = np.random.default_rng(SEED)
    folder.mkdir()
    cases = []
    for suffix, data in seeds(folder.parent).items():
        for k in range(CASES_PER_KIND):
            cases.append(folder / f"case{k:03d}{suffix}")
            cases[-1].write_bytes(mutate(data, rng, suffix))
    return cases


API_SCRIPT = """
import json, sys
from pathlib import Path
from segtool.runtime import JobOptions, Segmenter, SegtoolError, segment_image, segment_video
from segtool.runtime.files.sources import expand
seg = Segmenter(sys.argv[1], device="cpu", warn_random=False)
options = JobOptions(max_pixels=4_000_000, max_frames=6, image_kinds=("labels", "overlay"))
counts = {"result": 0, "error": 0}
for source in expand([sys.argv[2]]).items:
    try:
        if source.kind == "bad":
            raise SegtoolError(source.problem)
        run = segment_image if source.kind == "image" else segment_video
        run(seg, source, Path(sys.argv[3]), options)
        counts["result"] += 1
    except SegtoolError:
        counts["error"] += 1
print(json.dumps(counts))
"""


def test_fuzzed_files_through_the_cli_and_the_api(tmp_path, tiny):
    cases = make_cases(tmp_path / "cases")
    assert len(cases) >= 300
    proc = run_segtool("run", tmp_path / "cases", "--model", tiny, "--out", tmp_path / "out", "--max-pixels",
                       "4000000", "--max-frames", "6", "--json", "--quiet", "--device", "cpu", timeout=900)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["inputs"] == len(cases) and summary["skipped"] == 0
    assert summary["ok"] + summary["failed"] >= len(cases)  # a cut video can be done and reported
    assert all(f["error"] for f in summary["failures"])
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary file left
    api = subprocess.run([sys.executable, "-c", API_SCRIPT, str(tiny), str(tmp_path / "cases"), str(tmp_path / "api")],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert api.returncode == 0, api.stderr[-3000:]
    counts = json.loads(api.stdout.strip().splitlines()[-1])
    assert counts["result"] + counts["error"] == len(cases) and counts["result"] > 0 and counts["error"] > 0
