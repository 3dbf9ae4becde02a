"""Reliability at the unit level: memory retries in smaller tiles, unreadable folders, temporary
names, concurrent commits of a frames folder, camera indices."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from segtool.runtime.errors import OutOfMemory
from segtool.runtime.files.images import temp_name
from segtool.runtime.files.sources import BAD, expand
from segtool.runtime.jobs import JobOptions, _FramesFolder, infer
from segtool.runtime.model.memory import MIN_TILE


class TightMemory:
    """A stand-in model that runs out of memory above ``limit`` pixels per call and labels every
    pixel by its row's parity otherwise (so tiled and whole results can be compared)."""

    provider = "test"

    def __init__(self, limit: int):
        self.limit, self.calls = limit, list[tuple[int, ...]]()
        self.meta = SimpleNamespace(classes=("a", "b"), output="logits")

    def prepare(self, images, color="bgr", max_size=None, size=None):
        return np.stack([np.asarray(image, np.float32).transpose(2, 0, 1) for image in images])

    def run(self, tensor):
        self.calls.append(tensor.shape)
        if tensor.shape[2] * tensor.shape[3] > self.limit:
            raise OutOfMemory(f"no room for {tensor.shape}")
        return tensor

    def labels_at(self, output, height, width):
        return [np.broadcast_to((np.arange(height) % 2)[:, None], (height, width)).astype(np.uint8)] * len(output)

    def segment(self, image, color="bgr", max_size=None, size=None, tile=None):
        height, width = image.shape[:2]
        for y in range(0, height, tile or height):
            for x in range(0, width, tile or width):
                self.run(self.prepare([image[y : y + (tile or height), x : x + (tile or width)]]))
        return self.labels_at([image], height, width)[0]

    def segment_stream(self, frames, color="bgr", max_size=None, size=None, batch=1):
        raise NotImplementedError


def test_out_of_memory_is_retried_in_smaller_tiles():
    image = np.zeros((1024, 1024, 3), np.uint8)
    seg = TightMemory(limit=300 * 300)
    done = infer(seg, image, JobOptions(auto_tile=False))  # type: ignore[arg-type]
    assert done.tiled == 256 and done.output is None  # 1024 -> 512 -> 256: the first that fits
    assert done.labels.shape == (1024, 1024) and done.labels[1, 0] == 1
    assert [s[2:] for s in seg.calls[:2]] == [(1024, 1024), (512, 512)]


def test_out_of_memory_below_the_smallest_tile_is_that_inputs_failure():
    seg = TightMemory(limit=10)
    with pytest.raises(OutOfMemory, match=f"even in {MIN_TILE} px tiles"):
        infer(seg, np.zeros((600, 600, 3), np.uint8), JobOptions(auto_tile=False))  # type: ignore[arg-type]


def test_an_unreadable_folder_is_reported_not_skipped(tmp_path, monkeypatch):
    (tmp_path / "in" / "locked").mkdir(parents=True)
    (tmp_path / "in" / "x.jpg").write_bytes(b"\xff\xd8\xff")
    listdir = os.listdir

    def refuse(path):  # root reads any folder, so the refusal is made here
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return listdir(path)

    monkeypatch.setattr(os, "listdir", refuse)
    found = expand([str(tmp_path / "in")], recursive=True)
    bad = [item for item in found.items if item.kind == BAD]
    assert len(bad) == 1 and "locked: cannot read the folder (Permission denied)" in bad[0].problem
    assert any(item.stem == "x" for item in found.items if item.kind != BAD)


def test_temporary_names_are_short_and_unique_whatever_the_name(tmp_path: Path):
    target = tmp_path / ("é" * 120 + ".mp4")  # 244 bytes of UTF-8
    names = {temp_name(target, ".mp4") for _ in range(100)}  # each one created
    assert len(names) == 100 and all(len(n.name.encode()) < 64 and n.name.endswith(".mp4") for n in names)
    assert all(n.name.startswith(".") and str(os.getpid()) in n.name for n in names)


def test_two_runs_commit_one_frames_folder_and_the_last_wins_whole(tmp_path):
    target = tmp_path / "walk_frames"
    first, second = _FramesFolder(target), _FramesFolder(target)  # two runs, started together
    for folder, count in ((first, 3), (second, 5)):
        for k in range(count):
            folder.path(k).write_bytes(b"x")
    first.commit()
    second.commit()
    assert sorted(p.name for p in target.iterdir()) == [f"{k:06d}_labels.png" for k in range(5)]
    assert [p.name for p in tmp_path.iterdir()] == ["walk_frames"]  # nothing half-done left beside it


def test_a_negative_camera_index_is_refused_before_opencv_sees_it():
    from segtool.runtime.errors import InputError
    from segtool.runtime.files.video import VideoSource

    with pytest.raises(InputError, match="camera -1: camera indices start at 0"):
        VideoSource(-1)
