"""Every example in the README runs in a test, against generated stand-ins for the files it names
(street.jpg, walk.mp4, a VOC tree, exported models), in one temporary folder.

How each kind of example is covered:

- ```python blocks: executed in-process (``exec``), in that folder.
- ```bash blocks, line by line (a line ending in a backslash is joined to the next):
  - ``segtool ...``: in-process through typer's CliRunner on ``segtool.cli.main.app``; must exit 0.
    ``segtool export --weights random --seed 0`` is exactly what the session fixture ``export_run``
    (tests/conftest.py) runs, with ``--output``: the test checks that, rather than export twice.
    ``segtool serve ...`` starts the real server (a subprocess, `--port` replaced by a free one)
    that the ``curl`` lines after it talk to.
  - ``curl ...``: against that server, with ``--fail``; its port in place of 8000.
  - ``bash scripts/demo.sh``: the script must end in ``segtool demo``, which runs in-process with
    an export already in ``models/`` (the virtualenv and pip install are not run; the export and
    its offline fallback are tested in test_cli.py and test_zoo.py).
  - a line whose comment says "not run by tests" (it needs a GPU, a Ray cluster, a container, a
    download, or it is the CI run itself): a ``segtool`` line is parsed by click (every flag and
    value must be accepted; nothing runs), a ``bash FILE`` line must name an existing file, and
    anything else (docker) only has to carry the mark.
  - any other line fails: give it a way to run here, or mark it.
- Every command has an example; every ``--flag`` the README names is a flag of some command (or of
  a tool in ``FOREIGN_FLAGS``); the exit-code table matches ``segtool.cli.main``; the layout names
  folders that exist, every package among them.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import scene
from servers import Server
from test_eval_compare import make_voc
from typer.main import get_command
from typer.testing import CliRunner

from segtool.cli.main import COMMANDS, app
from segtool.runtime import VOC_CLASSES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
NOT_RUN = "not run by tests"
# Flags of other tools that the README names (docker, curl, prlimit).
FOREIGN_FLAGS = {"--gpus", "--rm", "--model-repository", "--data-binary", "--as"}


def shell_lines() -> list[str]:
    """Every command line of the README's ```bash blocks, continuations joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


LINES = shell_lines()


def words(line: str) -> list[str]:
    """The line as argv: shell comments and a trailing `&` dropped."""
    args = shlex.split(line, comments=True)
    return args[:-1] if args and args[-1] == "&" else args


def serve_line() -> list[str]:
    (line,) = [words(line) for line in LINES if line.startswith("segtool serve ")]
    return line


def own_model_files(root: Path) -> None:
    """ "Your own model": a 3-class lraspp fine-tune and a 3-class smp U-Net (seeded random weights,
    saved as state_dicts, as training scripts save them), with a classes and a colours file."""
    import segmentation_models_pytorch as smp
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    (root / "my_classes.txt").write_text("background\ncar\nperson\n")
    (root / "my_colours.txt").write_text("0 0 0\n#ff8800\n30 144 255\n")
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    torch.save(net.state_dict(), root / "my_lraspp.pth")
    unet = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=3)
    torch.save(unet.state_dict(), root / "my_unet.pth")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, model_path, int8_model):
    root = tmp_path_factory.mktemp("readme")
    (root / "models").mkdir()
    (root / "models" / "fcn_resnet50_random.onnx").symlink_to(model_path)
    (root / "models" / "fcn_resnet50_random_int8.onnx").symlink_to(int8_model)
    (root / "models" / "fcn_resnet50.onnx").symlink_to(model_path)  # what `segtool demo` finds and reuses
    (root / "my_model.onnx").symlink_to(model_path)  # `segtool adopt`: "a model exported elsewhere"
    (root / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    own_model_files(root)
    cv2.imwrite(str(root / "street.jpg"), scene(240, 320, seed=5))
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]
    writer = cv2.VideoWriter(str(root / "walk.mp4"), fourcc, 25.0, (96, 64))
    for k in range(6):
        writer.write(scene(64, 96, seed=k))
    writer.release()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 15
    make_voc(root / "VOCdevkit" / "VOC2012", {"a": (scene(48, 64, seed=1), mask)})
    return root


@pytest.fixture(scope="module")
def server(workdir):
    """The README's `segtool serve` line, as written but for the port (and --device cpu, from Server)."""
    args = serve_line()[2:]
    if "--port" in args:
        del args[args.index("--port") : args.index("--port") + 2]
    model, *flags = args
    running = Server(workdir / model, *flags)
    yield running
    running.stop()


def invoke(args: list[str]) -> Any:
    """`segtool ARGS` in-process; asserts exit 0 and shows the output and any traceback if not."""
    result = CliRunner().invoke(app, args)
    trace = "".join(traceback.format_exception(result.exception)) if result.exception else ""
    assert result.exit_code == 0, f"segtool {shlex.join(args)} -> {result.exit_code}\n{result.output}\n{trace}"
    return result


def parse_only(args: list[str]) -> None:
    """Parse `segtool ARGS` with click as the command line would, without running the command."""
    root = get_command(app)
    parent = root.context_class(root, info_name="segtool")
    command = getattr(root, "commands", {}).get(args[0])
    assert command is not None, f"no command {args[0]!r}"
    with command.make_context(args[0], list(args[1:]), parent=parent):
        pass


def test_readme_has_examples():
    assert len(BLOCKS) >= 3 and len(LINES) >= 15
    assert len(README.splitlines()) <= 300, "the README is on a diet: details go to docs/CLI.md notes"


def test_readme_has_an_example_for_every_command():
    shown = {words(line)[1] for line in LINES if line.startswith("segtool ")}
    assert not set(COMMANDS) - shown, f"commands without a README example: {sorted(set(COMMANDS) - shown)}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    exec(compile(BLOCKS[index], f"<README.md python block {index}>", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("line", LINES)
def test_readme_shell_line(line, workdir, export_run, request, monkeypatch):
    monkeypatch.chdir(workdir)
    args = words(line)
    if NOT_RUN in line:
        if args[0] == "segtool":
            parse_only(args[1:])
        elif args[0] == "bash":
            assert (ROOT / args[1]).is_file(), line
        return
    if args[:2] == ["bash", "scripts/demo.sh"]:
        script = (ROOT / "scripts" / "demo.sh").read_text().strip().splitlines()
        assert script[-1] == 'exec .venv/bin/segtool demo "$@"', "the README says demo.sh runs `segtool demo`"
        invoke(["demo", *args[2:]])
        assert (workdir / "segtool-out" / "sample_labels.png").is_file()
    elif args[:2] == ["segtool", "serve"]:
        server = request.getfixturevalue("server")
        assert server.client().get("/v2/health/ready").status_code == 200
    elif args[0] == "segtool" and args[1:] == ["export", "--weights", "random", "--seed", "0"]:
        out, proc = export_run  # the session's export: this very command, with --output
        assert [str(a) for a in proc.args[1:]] == [*args[1:], "--output", str(out)] and proc.returncode == 0
    elif args[0] == "segtool":
        invoke(args[1:])
    elif args[0] == "curl":
        server = request.getfixturevalue("server")
        command = [re.sub(r"localhost:8000", server.url.removeprefix("http://"), a) for a in args]
        proc = subprocess.run(["curl", "--fail", "--silent", "--show-error", *command[1:]], capture_output=True,
                              timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    else:
        pytest.fail(f"README line neither run nor marked {NOT_RUN!r}: {line}")


def test_readme_test_command_is_what_ci_runs():
    """The quickstart's test command (not run: it is the test run) is what .ci/run ends with."""
    (line,) = [line for line in LINES if line.startswith("bash scripts/check.sh")]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for part in line.split("#")[0].split("&&"):
        assert part.strip() in ci, part


def segtool_flags() -> set[str]:
    root = get_command(app)
    flags = {"-h", "--help", "--version"}
    for command in getattr(root, "commands", {}).values():
        for param in command.params:
            flags.update(param.opts + param.secondary_opts)
    return flags


def test_readme_names_only_flags_that_exist():
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README))
    unknown = named - segtool_flags() - FOREIGN_FLAGS
    assert not unknown, f"README names flags no command has: {sorted(unknown)}"


def _interrupt_code(name: str) -> int:
    from segtool.cli.common import INTERRUPTED

    return INTERRUPTED["SIGTERM" if name == "Terminated" else "SIGINT"]


def test_readme_exit_codes_match_the_cli():
    from segtool.cli.main import exit_code
    from segtool.runtime import errors

    table = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([\d /]+) \|.*\|(.*)\|$", table, flags=re.M)
    assert len(rows) == 4
    for codes, names in rows:
        for name in re.findall(r"`(\w+)`", names):
            if name in ("KeyboardInterrupt", "Terminated"):
                assert str(_interrupt_code(name)) in codes.split(" / "), name
            else:
                assert str(exit_code(getattr(errors, name)("x"))) == codes.strip(), name


def test_readme_layout_names_existing_folders_and_every_package():
    block = README.split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    listed = {line.split()[0] for line in block.splitlines() if line[:1].strip() and line.split()[0].endswith("/")}
    assert all((ROOT / folder).is_dir() for folder in listed), listed
    packages = {f"{p.parent.relative_to(ROOT)}/" for p in [*ROOT.glob("*/__init__.py"), *ROOT.glob("*/*/__init__.py")]}
    packages = {p for p in packages if not p.startswith((".", "build")) and "egg-info" not in p}
    assert packages <= listed, f"packages missing from the README's layout: {sorted(packages - listed)}"
