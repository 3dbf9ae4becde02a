"""Output names: every input of a run gets its own outputs, named by one documented rule
(``segtool.runtime.files.sources.unique_stems``), and ``--skip-existing`` skips an input only for
its own outputs. Globs match as the shell's ``**`` would, and never follow a link cycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import jpeg, run_in_process
from PIL import Image

from segtool.runtime.files.pictures import IMAGE_OUTPUTS, VIDEO_OUTPUTS, output_paths
from segtool.runtime.files.sources import IMAGE, VIDEO, Source, expand, unique_stems


def write(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(24 + seed, 32, seed=seed))  # a different size each: whose labels a file holds is visible
    return path


def labels_sizes(out: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(out).as_posix(): Image.open(p).size for p in sorted(out.rglob("*_labels.png"))}


def test_inputs_sharing_a_stem_each_get_their_own_outputs(tiny, tmp_path):
    """Before: x.png became ``x-2`` beside the real x-2.jpg, and one overwrote the other's outputs."""
    for seed, name in enumerate(["x.jpg", "x.png", "x-2.jpg"]):
        write(tmp_path, name, seed)
    proc = run_in_process("run", "x.jpg", "x.png", "x-2.jpg", "--model", tiny, "--out", "out", "--device", "cpu",
                          "--save", "labels", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert labels_sizes(tmp_path / "out") == {
        "x-2_labels.png": (32, 26),
        "x.jpg_labels.png": (32, 24),
        "x.png_labels.png": (32, 25),
    }


def test_skip_existing_skips_an_input_only_for_its_own_outputs(tiny, tmp_path):
    """Before: the earlier run's x-2_labels.png (of x-2.jpg) made the next run skip x.png, named x-2 too."""
    for seed, name in enumerate(["x.jpg", "x.png", "x-2.jpg"]):
        write(tmp_path, name, seed)
    common = ("--model", tiny, "--out", "out", "--device", "cpu", "--save", "labels", "--json")
    first = run_in_process("run", "x-2.jpg", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_in_process("run", "x.jpg", "x.png", "x-2.jpg", *common, "--skip-existing", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert sorted(r["input"] for r in report["results"]) == ["x.jpg", "x.png"]
    assert report["existing"] == 1
    assert sorted(labels_sizes(tmp_path / "out")) == ["x-2_labels.png", "x.jpg_labels.png", "x.png_labels.png"]


def stems_of(tmp_path: Path, *names: str) -> list[str]:
    for seed, name in enumerate(names):
        write(tmp_path, name, seed)
    return [item.stem for item in expand(list(names)).items]


@pytest.mark.parametrize(
    ("names", "stems"),
    [
        (["x.jpg", "x.png", "x-2.jpg"], ["x.jpg", "x.png", "x-2"]),
        (["x.jpg", "x.png", "x.jpg.png"], ["x.jpg-2", "x.png", "x.jpg"]),  # x.jpg.png's own stem is x.jpg
        (["a/x.jpg", "b/x.jpg"], ["x.jpg", "x.jpg-2"]),  # one file name in two folders
        (["a/x.jpg", "b/x.jpg", "x.jpg-2.png"], ["x.jpg", "x.jpg-3", "x.jpg-2"]),
        (["X.jpg", "x.png"], ["X.jpg", "x.png"]),  # one name on a file system that ignores case
        (["X.jpg", "a/x.jpg"], ["X.jpg", "x.jpg-2"]),
        (["y.jpg", "x.jpg"], ["y", "x"]),  # unique stems stay as they were
    ],
)
def test_the_naming_rule_on_tricky_names(tmp_path, monkeypatch, names, stems):
    monkeypatch.chdir(tmp_path)
    assert stems_of(tmp_path, *names) == stems


def test_folder_members_keep_their_sub_folders_and_cameras_are_numbered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed, name in enumerate(["in/x.jpg", "in/sub/x.jpg", "in/sub/x.png"]):
        write(tmp_path, name, seed)
    found = expand(["in", "in/sub/x.jpg"], recursive=True, cameras=[0, 0])
    assert [item.stem for item in found.items] == ["sub/x.jpg", "sub/x.png", "x.jpg", "x.jpg-2", "camera0", "camera0-2"]


def outputs(stems: list[str]) -> list[str]:
    """Every output path of every input, as a file system that ignores case would see them."""
    paths = []
    for stem in stems:
        for suffixes in (IMAGE_OUTPUTS, VIDEO_OUTPUTS):
            paths += [p.as_posix().casefold() for p in output_paths(Path("out"), stem, suffixes, suffixes).values()]
        paths.append(f"out/{stem}_frames".casefold())
    return paths


def test_no_two_inputs_share_an_output_for_any_names():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    part = st.sampled_from(["x", "X", "x-2", "x.jpg", "x-2.jpg", "y", "-2", "-3", "_labels", ".png", "a/", "b/"])
    names = st.lists(st.lists(part, min_size=1, max_size=4).map("".join), min_size=1, max_size=12)

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(names)
    def check(names: list[str]) -> None:
        items = [Source(IMAGE, name, str(Path(name).with_suffix("")) if Path(name).suffix else name) for name in names]
        items.append(Source(VIDEO, 0, "camera0"))
        stems = [item.stem for item in unique_stems(items)]
        assert len(set(outputs(stems))) == len(outputs(stems)), stems
        for item, stem in zip(items, stems):  # an input whose stem no other input shares keeps it
            if sum(other.stem.casefold() == item.stem.casefold() for other in items) == 1:
                assert stem == item.stem

    check()


# -- globs -----------------------------------------------------------------------------------------


def test_a_glob_component_never_matches_across_folders(tmp_path, monkeypatch):
    """``photos/**/2023*.jpg`` names files called 2023*.jpg; before, fnmatch's ``*`` also took in the
    whole of a folder called 2023 (``photos/2023/other.jpg``)."""
    monkeypatch.chdir(tmp_path)
    for seed, name in enumerate(["photos/2023a.jpg", "photos/2023/other.jpg", "photos/deep/2023b.jpg"]):
        write(tmp_path, name, seed)
    found = expand(["photos/**/2023*.jpg"])
    assert sorted(str(item.location) for item in found.items) == ["photos/2023a.jpg", "photos/deep/2023b.jpg"]
