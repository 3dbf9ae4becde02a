"""`segtool bundle`: everything a box without the package index needs to run segtool, for one target.

A bundle is a folder (or a ``.tar.gz`` of one) holding:

- ``wheels/``: segtool's own wheel and the wheels of its base requirements for the target,
  downloaded with ``pip download --only-binary :all: --platform ... --python-version ...``
  (ONNX Runtime as the target names it: ``onnxruntime`` for CPU targets; no PyAV with
  ``video=False``);
- ``tools/pip-*.whl``: pip, run from its wheel by ``install.sh`` so that pip is never installed on
  the box (and Debian's python3-venv, which only brings pip into new environments, is not needed);
- ``models/``: the model files, each checked to be a segtool model, with any external data;
- ``install.sh [PREFIX]``: a virtual environment at PREFIX (default ``./segtool-env``) with
  ``PREFIX/bin/segtool``, installed with ``--no-index --no-deps`` (no network); what a running
  box never needs (test folders, typing stubs, headers, build and conversion tools) is
  removed after the install by the same rule (``droppable``) the sizes here are estimated with;
- ``README.md``: the exact commands and what takes the space.

Everything is made in a temporary folder beside the output and renamed into place at the end, so
a failure (a wheel missing for the target, a file that is not a segtool model) leaves nothing."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from segtool.runtime.errors import ModelError, OutputError, SegtoolError, UsageError
from segtool.runtime.model.external import model_files
from segtool.runtime.tools.describe import describe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A kind of box: its ``uname -m``, the Python it usually has, its ONNX Runtime package."""

    machine: str
    python: str
    onnxruntime: str
    boxes: str  # what it is for, for the README


#: manylinux wheels for glibc 2.17 to 2.35 (Debian and Raspberry Pi OS bookworm have 2.36, Ubuntu 22.04 2.35)
GLIBC_MINORS = range(17, 36)

TARGETS = {
    "linux-aarch64": Target(
        machine="aarch64",
        python="3.11",
        onnxruntime="onnxruntime",
        boxes="64-bit ARM Linux on the CPU: Raspberry Pi OS bookworm (64-bit), Debian bookworm, Ubuntu 22.04+",
    ),
    "linux-x86_64": Target(
        machine="x86_64",
        python="3.11",
        onnxruntime="onnxruntime",
        boxes="x86_64 Linux on the CPU: Debian bookworm, Ubuntu 22.04+",
    ),
    "linux-x86_64-cuda": Target(
        machine="x86_64",
        python="3.11",
        onnxruntime="onnxruntime-gpu",
        boxes="x86_64 Linux with an NVIDIA GPU; the driver and the CUDA and cuDNN libraries that its "
        "onnxruntime-gpu release needs (ONNX Runtime's CUDA table) must be on the box: the bundle does not carry "
        "NVIDIA's libraries (`pip install 'segtool[cuda]'` brings them where the package index can be reached)",
    ),
}

ONNXRUNTIMES = {"onnxruntime", "onnxruntime-gpu"}
VIDEO = "av"  # PyAV: video decode and encode


def platform_tags(target: Target) -> list[str]:
    """pip's ``--platform`` values for the target, oldest glibc first: where a release has wheels for
    several, pip takes the most portable one (and opencv-python-headless's is the smaller)."""
    return [f"manylinux2014_{target.machine}"] + [f"manylinux_2_{minor}_{target.machine}" for minor in GLIBC_MINORS]


def target_named(name: str) -> Target:
    if name not in TARGETS:
        raise UsageError(f"no bundle target {name!r}: use one of {', '.join(TARGETS)}")
    return TARGETS[name]


def check_python(version: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", version):
        raise UsageError(f"--python takes the box's Python as X.Y, e.g. 3.11 (got {version!r})")
    return version


def requirements(requires: Sequence[str], target: Target, python: str, video: bool = True) -> list[str]:
    """segtool's base requirements (``requires``: its Requires-Dist lines) on the target: markers
    evaluated for the target's Linux, machine and Python, extras left out, ONNX Runtime as the
    target names it (with the version range segtool asks for), PyAV only with ``video``."""
    env = {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": target.machine,
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    chosen, onnxruntime = [], ""
    for line in requires:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in ONNXRUNTIMES:
            onnxruntime = onnxruntime or str(req.specifier)
        elif (req.marker is None or req.marker.evaluate(env)) and (video or name != VIDEO):
            chosen.append(f"{req.name}{req.specifier}")
    return chosen + [target.onnxruntime + onnxruntime]


def droppable(path: str) -> bool:
    """Whether an installed file (``path``: relative to site-packages, with ``/``) is never needed by
    a running box: test suites, typing stubs, C sources, headers and static libraries, numpy's build
    tools (distutils, f2py), ONNX Runtime's model-conversion tools."""
    parts = path.split("/")
    tools = {"numpy": ("distutils", "f2py"), "onnxruntime": ("transformers", "quantization", "tools")}
    return (
        "tests" in parts[:-1]
        or path.endswith((".pyi", ".pxd", ".pyx", ".h", ".c", ".a"))
        or (len(parts) > 2 and parts[1] in tools.get(parts[0], ()))
    )


# ---------------------------------------------------------------------------------------------
# segtool's own wheel


def _source_tree() -> Path | None:
    """The project folder when segtool runs from a checkout (an editable install): the folder above
    the runtime package, holding segtool's pyproject.toml."""
    import segtool.runtime

    root = Path(segtool.runtime.__file__).resolve().parents[1]
    project = root / "pyproject.toml"
    return root if project.is_file() and re.search(r'(?m)^name = "segtool"', project.read_text()) else None


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"]
    log.info("running %s", shlex.join(command))
    return subprocess.run(command, capture_output=True, text=True)


def _pip_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    return (lines or [line.strip() for line in proc.stderr.splitlines() if line.strip()] or ["pip failed"])[-1]


def _build_from_source(root: Path, folder: Path, index: Sequence[str]) -> Path:
    """``pip wheel --no-deps`` of a copy of the project (its top-level files and package folders),
    so the checkout gets no build/ or egg-info. Without build isolation when setuptools is here
    (no index needed), else with it."""
    source = folder / "source"
    source.mkdir()
    for item in root.iterdir():
        if item.is_file():
            shutil.copy2(item, source / item.name)
        elif (item / "__init__.py").is_file():
            shutil.copytree(item, source / item.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tries = [["--no-build-isolation"]] if importlib.util.find_spec("setuptools") else []
    for isolation in [*tries, [*index]]:
        proc = _pip("wheel", "--no-deps", "--quiet", *isolation, "--wheel-dir", str(folder), str(source))
        if proc.returncode == 0:
            shutil.rmtree(source)
            return next(folder.glob("segtool-*.whl"))
    raise SegtoolError(f"cannot build segtool's wheel from {root}: {_pip_error(proc)}")


def _installed_distribution() -> importlib.metadata.Distribution:
    """The installed distribution that holds the running segtool (not a stale egg-info elsewhere)."""
    import segtool.runtime

    here = Path(segtool.runtime.__file__).resolve()
    for dist in importlib.metadata.distributions(name="segtool"):
        if any(Path(str(f.locate())).resolve() == here for f in dist.files or []):
            return dist
    raise SegtoolError(f"cannot find the installed files of segtool ({here}) to put its wheel in the bundle")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(dist: importlib.metadata.Distribution, folder: Path) -> Path:
    """A wheel made of an installed (non-editable) distribution's own files, as its RECORD lists
    them: what pip installed from the wheel, without bytecode, scripts outside site-packages or
    the installer's notes; RECORD written anew."""
    info = next(f.parts[0] for f in dist.files or [] if f.parts[0].endswith(".dist-info"))
    wheel_file = dist.read_text("WHEEL") or ""
    wheel_tags = [line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")]
    name = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}-{wheel_tags[0]}.whl"
    skipped = {f"{info}/RECORD", f"{info}/INSTALLER", f"{info}/REQUESTED", f"{info}/direct_url.json"}
    record = []
    with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.as_posix() in skipped:
                continue
            data = Path(str(file.locate())).read_bytes()
            wheel.writestr(file.as_posix(), data)
            record.append(f"{file.as_posix()},{_record_hash(data)},{len(data)}")
        wheel.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return folder / name


def own_wheel(folder: Path, index: Sequence[str] = ()) -> Path:
    """segtool's wheel in ``folder``: built from the checkout when segtool runs from one, else
    remade from the installed files."""
    root = _source_tree()
    return _build_from_source(root, folder, index) if root else wheel_from_installed(_installed_distribution(), folder)


def wheel_metadata(wheel: Path, field: str) -> list[str]:
    """The values of one field of a wheel's METADATA (``Requires-Dist``, ``Requires-Python``)."""
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = z.read(metadata).decode().split("\n\n", 1)[0]
    return [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.startswith(f"{field}:")]


def check_python_supported(wheel: Path, python: str) -> None:
    for spec in wheel_metadata(wheel, "Requires-Python"):
        if python not in SpecifierSet(spec):
            raise UsageError(f"segtool needs Python {spec}, not {python}")


# ---------------------------------------------------------------------------------------------
# the wheels for the target


def download(reqs: Sequence[str], target_name: str, python: str, folder: Path, index: Sequence[str]) -> None:
    """``pip download`` of ``reqs`` (and their requirements) as wheels for the target into
    ``folder``; a requirement without such a wheel is one line naming it."""
    target = TARGETS[target_name]
    tags = [f"--platform={tag}" for tag in platform_tags(target)]
    proc = _pip(
        "download",
        "--only-binary",
        ":all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        *tags,
        "--dest",
        str(folder),
        "--progress-bar",
        "off",
        *index,
        *reqs,
    )
    if proc.returncode == 0:
        return
    missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
    if missing:
        raise UsageError(
            f"no wheel of {missing.group(1)} for {target_name} (Python {python}, manylinux glibc <= "
            f"2.{GLIBC_MINORS[-1]}): try another --python, or add one with --find-links DIR"
        )
    raise SegtoolError(f"pip download for {target_name} failed: {_pip_error(proc)}")


# ---------------------------------------------------------------------------------------------
# the models


def model_parts(path: Path) -> list[Path]:
    """The model's files (the .onnx and its external data), once it is known to be a segtool model."""
    if not path.is_file():
        raise ModelError(f"model {path} not found" + (" (a folder; name its .onnx file)" if path.is_dir() else ""))
    problems = describe(path, "cpu")["problems"]  # ModelError for a file ONNX Runtime cannot read
    if problems:
        raise ModelError(f"{path} {problems[0]}: make it a segtool model with `segtool adopt {path} --classes FILE`")
    return model_files(path)


def copy_models(parts: dict[Path, list[Path]], folder: Path) -> None:
    """Each model's files into ``folder``, beside each other as they were beside the model."""
    names: dict[str, Path] = {}
    for model, files in parts.items():
        for part in files:
            relative = part.relative_to(model.parent)
            if str(relative) in names:
                raise UsageError(f"{part} and {names[str(relative)]} would both be models/{relative} in the bundle")
            names[str(relative)] = part
    for name, part in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(part, folder / name)


# ---------------------------------------------------------------------------------------------
# sizes, install.sh, README


@dataclass
class Component:
    name: str
    version: str
    wheel_bytes: int
    installed_bytes: int  # the files install.sh keeps (before bytecode and block rounding)


def component(wheel: Path) -> Component:
    name, version = wheel.name.split("-")[:2]
    with zipfile.ZipFile(wheel) as z:
        kept = sum(i.file_size for i in z.infolist() if not droppable(i.filename))
    return Component(canonicalize_name(name), version, wheel.stat().st_size, kept)


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


@dataclass
class Bundle:
    path: Path
    target: str
    python: str
    video: bool
    components: list[Component] = field(default_factory=list)  # largest installed first
    pip_wheel: str = ""
    models: dict[str, int] = field(default_factory=dict)  # name in models/ -> bytes
    bytes: int = 0  # the folder, or the .tar.gz

    @property
    def installed_bytes(self) -> int:
        return sum(c.installed_bytes for c in self.components)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "target": self.target,
            "python": self.python,
            "video": self.video,
            "bytes": self.bytes,
            "installed_bytes": self.installed_bytes,
            "models": self.models,
            "components": [vars(c) for c in self.components],
        }


INSTALL_SH = r"""#!/bin/sh
# Install segtool from this bundle with no network: sh install.sh [PREFIX] (default ./segtool-env).
# Made by `segtool bundle` for @TARGET@ (Python @PYTHON@). Needs only Python @PYTHON@ and its venv
# module on the box; pip runs from tools/pip-*.whl and is not installed.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${1:-./segtool-env}
fail() { echo "install.sh: error: $*" >&2; exit 1; }
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python@PYTHON@
    command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
fi
command -v "$PYTHON" >/dev/null 2>&1 ||
    fail "no $PYTHON on PATH: install Python @PYTHON@ (Debian: apt-get install python3)"
MACHINE=$(uname -m)
[ "$MACHINE" = "@MACHINE@" ] || fail "this bundle is for @MACHINE@ (@TARGET@), this box is $MACHINE"
HAVE=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$HAVE" = "@PYTHON@" ] || fail "this bundle is for Python @PYTHON@, $PYTHON is $HAVE" \
    "(set PYTHON=/path/to/python@PYTHON@, or make a bundle with --python $HAVE)"
"$PYTHON" -c 'import venv' 2>/dev/null || fail "$PYTHON -m venv is unavailable (Debian: apt-get install python3-venv)"
case $PREFIX in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
[ ! -e "$PREFIX" ] || [ -z "$(ls -A "$PREFIX")" ] ||
    fail "$PREFIX exists and is not empty: remove it or name another PREFIX"
PIP=$(ls "$HERE"/tools/pip-*.whl 2>/dev/null) || fail "no tools/pip-*.whl in $HERE: is this a whole bundle?"
trap 'rm -rf "$PREFIX"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$PYTHON" -m venv --without-pip "$PREFIX" || fail "$PYTHON -m venv $PREFIX failed"
"$PREFIX/bin/python" "$PIP/pip" install --isolated --no-index --no-deps --no-compile --no-cache-dir --quiet \
    --disable-pip-version-check --no-warn-script-location --root-user-action ignore "$HERE"/wheels/*.whl \
    || fail "pip could not install the wheels of $HERE/wheels"
"$PREFIX/bin/python" - <<'EOF'
# Remove what a running box never needs (the rule segtool bundle estimated the sizes with).
import shutil, sys, sysconfig
from pathlib import Path

@DROPPABLE@
site = Path(sysconfig.get_paths()["purelib"])
for path in sorted(site.rglob("*"), reverse=True):
    if path.is_file() and droppable(path.relative_to(site).as_posix()):
        path.unlink()
    elif path.is_dir() and not any(path.iterdir()):
        path.rmdir()
EOF
cp -R "$HERE/models" "$PREFIX/models"
VERSION=$("$PREFIX/bin/segtool" --version) || fail "$PREFIX/bin/segtool --version failed"
trap - EXIT
echo "installed $VERSION in $PREFIX: $(du -sm "$PREFIX" | cut -f1) MiB," \
    "of which models $(du -sm "$PREFIX/models" | cut -f1) MiB"
echo "largest parts (MiB):"
du -sm "$PREFIX"/lib/python*/site-packages/* | sort -rn | head -n 8
echo "run: $PREFIX/bin/segtool run PICTURE --model $PREFIX/models/@MODEL@ --out out"
"""


def install_script(bundle: Bundle) -> str:
    values = {
        "@TARGET@": bundle.target,
        "@PYTHON@": bundle.python,
        "@MACHINE@": TARGETS[bundle.target].machine,
        "@MODEL@": next(iter(bundle.models)),
        "@DROPPABLE@": inspect.getsource(droppable),
    }
    return re.sub("|".join(values), lambda m: values[m.group(0)], INSTALL_SH)


def readme(bundle: Bundle, command: str) -> str:
    target = TARGETS[bundle.target]
    model = next(iter(bundle.models))
    folder = bundle.path.name.removesuffix(".tar.gz").removesuffix(".tgz")
    unpack = f"tar xzf {bundle.path.name}\n" if bundle.path.name != folder else ""
    rows = "\n".join(
        f"| {c.name} {c.version} | {mib(c.wheel_bytes)} | {mib(c.installed_bytes)} |" for c in bundle.components
    )
    rows += "".join(f"\n| model {name} | {mib(size)} | {mib(size)} |" for name, size in bundle.models.items())
    video = "with video (PyAV)" if bundle.video else "images only (no PyAV: video inputs say they need it)"
    jetson = (
        "\n## NVIDIA Jetson\n\nThe package index has no onnxruntime-gpu for Jetson: NVIDIA publishes its own wheels "
        "for each JetPack (JetPack 6: Python 3.10, so make the bundle with `--python 3.10`). To use the GPU, put "
        "NVIDIA's `onnxruntime_gpu-*.whl` for your JetPack into `wheels/` and delete `wheels/onnxruntime-*.whl` "
        "before running install.sh; it installs every wheel in `wheels/` (check that wheel's numpy requirement "
        "against `wheels/numpy-*`). Untested here: no Jetson was available.\n"
        if target.machine == "aarch64"
        else ""
    )
    return f"""# segtool for {bundle.target}, Python {bundle.python}, {video}

Made on {date.today()} by `{command}`. For {target.boxes}.
Wheels: manylinux, glibc 2.{GLIBC_MINORS[-1]} or older; ONNX Runtime package: `{target.onnxruntime}`.

## Install (no network)

The box needs Python {bundle.python} with its venv module (Debian and Raspberry Pi OS bookworm
have Python 3.11: `sudo apt-get install python3`; `python3-venv` is not needed, as pip runs from
`tools/{bundle.pip_wheel}` and is never installed; if `python3 -m venv` is missing altogether,
install.sh says so in one line).

```bash
{unpack}cd {folder}
bash install.sh /opt/segtool          # PREFIX, default ./segtool-env; it must not exist yet
/opt/segtool/bin/segtool run photo.jpg --model /opt/segtool/models/{model} --out out
```

install.sh makes a virtual environment at PREFIX, installs every wheel of `wheels/` with
`pip install --no-index --no-deps`, removes what a running box never needs (test folders, typing
stubs, C headers and sources, numpy's build tools, ONNX Runtime's model-conversion tools),
copies `models/` to PREFIX/models, checks `PREFIX/bin/segtool --version` and prints the
installed size. A failure removes PREFIX again.
Another Python: `PYTHON=/usr/bin/python{bundle.python} bash install.sh PREFIX`. More wheels later:
`PREFIX/bin/python tools/{bundle.pip_wheel}/pip install --no-index WHEEL`.

## What takes the space

Installed: the files install.sh keeps; Python adds bytecode (`__pycache__`) for the modules
segtool imports as it runs, a few MiB. Total {mib(bundle.installed_bytes)} installed.

| component | wheel | installed |
| --- | --- | --- |
{rows}
{jetson}"""


# ---------------------------------------------------------------------------------------------
# the bundle


def archive_name(output: Path) -> str | None:
    """The folder name inside a .tar.gz output (None when the output is a folder)."""
    for suffix in (".tar.gz", ".tgz"):
        if output.name.endswith(suffix) and len(output.name) > len(suffix):
            return output.name[: -len(suffix)]
    return None


def check_output(output: Path) -> None:
    if archive_name(output) is None and output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputError(f"{output} exists: remove it or name a new folder (or FILE.tar.gz)")
    if archive_name(output) is not None and output.is_dir():
        raise OutputError(f"{output} is a folder")
    if not output.parent.is_dir():
        raise OutputError(f"{output.parent} is not a folder")


def make_bundle(
    models: Sequence[Path],
    target: str,
    output: Path,
    python: str | None = None,
    video: bool = True,
    index: Sequence[str] = (),
    command: str = "segtool bundle",
) -> Bundle:
    """Write the bundle for ``target`` at ``output`` (a new folder, or FILE.tar.gz written at once).
    ``index``: pip options naming where wheels come from (``--find-links DIR``, ``--index-url URL``,
    ``--no-index``). Bad input (target, Python, model, output) fails before any download."""
    spec = target_named(target)
    python = check_python(python or spec.python)
    if not models:
        raise UsageError("name at least one model to put in the bundle")
    parts = {model: model_parts(model) for model in models}
    check_output(output)
    name = archive_name(output) or output.name
    try:
        work = Path(tempfile.mkdtemp(prefix=".segtool-bundle-", dir=output.parent))
    except OSError as exc:
        raise OutputError(f"cannot write the bundle {output}: {exc.strerror or exc}") from None
    try:
        root = work / name
        for sub in ("wheels", "tools", "models", "build"):
            (root / sub).mkdir(parents=True)
        copy_models(parts, root / "models")
        own = own_wheel(root / "build", index)
        check_python_supported(own, python)
        reqs = requirements(wheel_metadata(own, "Requires-Dist"), spec, python, video)
        log.info("downloading wheels for %s, Python %s: %s", target, python, ", ".join(reqs))
        download([*reqs, "pip"], target, python, root / "wheels", index)
        shutil.move(own, root / "wheels" / own.name)
        shutil.rmtree(root / "build")
        pip_wheel = next((root / "wheels").glob("pip-*.whl"))
        shutil.move(pip_wheel, root / "tools" / pip_wheel.name)
        components = sorted((component(w) for w in (root / "wheels").glob("*.whl")), key=lambda c: -c.installed_bytes)
        models_bytes = {
            p.relative_to(root / "models").as_posix(): p.stat().st_size
            for p in sorted((root / "models").rglob("*"))
            if p.is_file()
        }
        bundle = Bundle(output, target, python, video, components, pip_wheel.name, models_bytes)
        (root / "install.sh").write_text(install_script(bundle))
        (root / "install.sh").chmod(0o755)
        (root / "README.md").write_text(readme(bundle, command))
        if archive_name(output) is None:
            os.replace(root, output)  # over an empty folder too
        else:
            temp = work / "bundle.tar.gz"
            with open(temp, "wb") as file:
                with tarfile.open(fileobj=file, mode="w:gz", compresslevel=1) as tar:
                    tar.add(root, arcname=name)
                os.fsync(file.fileno())
            os.replace(temp, output)
        bundle.bytes = (
            sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
            if output.is_dir()
            else (output.stat().st_size)
        )
        return bundle
    except OSError as exc:
        raise OutputError(f"cannot write the bundle {output}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["TARGETS", "Bundle", "Target", "droppable", "make_bundle", "platform_tags", "requirements"]
