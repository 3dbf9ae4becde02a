"""Input discovery: what the user pointed at, turned into a list of inputs by one policy.

- A path named on the command line is an input whatever its suffix (its kind is sniffed from
  its first bytes); if it cannot be used, that is an error reported for it.
- Inside folders (``recursive`` for sub-folders) and glob matches, only files with an image or
  video suffix are inputs; other files are skipped and counted, not failures. Hidden files are
  ignored. Media names that are not regular files (FIFOs, devices) are reported, never opened.
- Anything inside ``exclude`` (the output folder) is never an input, so a run never reads
  its own outputs.
- URLs are streams, ``cameras`` are camera indices.

Each input carries its output stem: every input of a run gets its own, by the rule of
``unique_stems``, so no input overwrites (or, with ``--skip-existing``, stands in for) another.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from segtool.runtime.files.images import IMAGE_SUFFIXES, regular_file_problem

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".avi",
        ".mov",
        ".mkv",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
        ".mts",
        ".3gp",
        ".ogv",
        ".gif",
    }
)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*", b"P5", b"P6")

IMAGE, VIDEO, BAD = "image", "video", "bad"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    kind: str  # IMAGE, VIDEO or BAD
    location: str | int  # file path, URL, or camera index
    stem: str  # output name stem, may contain sub-folders ("a/b/x")
    problem: str = ""  # why a BAD source cannot be used

    @property
    def live(self) -> bool:
        """A camera or network stream: no known length, no end."""
        return isinstance(self.location, int) or bool(_URL.match(str(self.location)))

    def __str__(self) -> str:
        return f"camera {self.location}" if isinstance(self.location, int) else str(self.location)


@dataclass
class Discovery:
    items: list[Source] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in folders that are not media

    @property
    def bad(self) -> list[Source]:
        return [item for item in self.items if item.kind == BAD]


def is_media_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def sniff(path: Path) -> str:
    """IMAGE or VIDEO for an existing regular file: by suffix, else by its first bytes."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return IMAGE
    if suffix in VIDEO_SUFFIXES:
        return VIDEO
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return IMAGE  # let the image reader report it
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return IMAGE
    return VIDEO  # OpenCV's video backend decides; it reports what it cannot open


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
        return True
    except (ValueError, OSError, RuntimeError):  # not inside, or a link that does not resolve (a loop)
        return False


def _named(path: Path, stem: str) -> Source:
    """A file the user named (or a media file found in a folder)."""
    problem = regular_file_problem(path)
    if problem:
        return Source(BAD, str(path), stem, f"{path}: {problem}")
    return Source(sniff(path), str(path), stem)


def _add_member(found: Discovery, path: Path, stem: str, exclude: Path | None) -> None:
    """A folder or glob member: media by suffix are inputs, other files are skipped and counted.
    A member that cannot even be looked at (a link loop, no permission) is reported, not skipped."""
    if path.name.startswith(".") or _inside(path, exclude):
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        found.items.append(Source(BAD, str(path), stem, f"{path}: cannot read ({exc.strerror or exc})"))
        return
    if stat.S_ISDIR(mode):
        return  # recursive walks enter it; a plain folder scan does not look inside
    if not is_media_name(path):
        if stat.S_ISREG(mode):
            found.skipped.append(str(path))
        return
    found.items.append(_named(path, stem))


def _walk(found: Discovery, root: Path, recursive: bool) -> list[Path]:
    """Entries under ``root`` (hidden ones left out), sorted; sub-folders entered when ``recursive``,
    each real folder once: a link back to a folder already walked is reported, never followed, so a
    cycle cannot make a run endless. A folder that cannot be read is reported, not skipped."""
    seen: set[tuple[int, int]] = set()
    entries: list[Path] = []

    def visit(folder: Path) -> None:
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                problem = "leads to a folder already walked (a link cycle or a second link): not walked twice"
                found.items.append(Source(BAD, str(folder), folder.name, f"{folder}: {problem}"))
                return
            seen.add((info.st_dev, info.st_ino))
            names = sorted(os.listdir(folder))
        except OSError as exc:
            problem = f"cannot read the folder ({exc.strerror or exc})"
            found.items.append(Source(BAD, str(folder), folder.name, f"{folder}: {problem}"))
            return
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            entries.append(path)
            if recursive and path.is_dir():  # is_dir is False for a link loop: _add_member reports it
                visit(path)

    visit(root)
    return entries


def _glob(found: Discovery, pattern: str) -> list[Path]:
    """Glob matches. Without a ``**`` component, the standard library's glob. With one, not
    ``glob(recursive=True)``: it follows links to folders under ``**``, so two link cycles multiply
    the paths past any run's time (measured: ``tree/**/*.jpg`` did not end in 20 s), and pathlib's
    glob silently leaves linked folders out. ``_walk`` enters each folder once and reports a cycle."""
    parts = Path(pattern).parts
    if "**" not in parts:
        return sorted(Path(p) for p in glob.glob(pattern))
    fixed = next(k for k, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    walked = _walk(found, root, recursive=True)
    return [path for path in walked if _matches(path.relative_to(root).parts, parts[fixed:])]


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """A path's components match the pattern's one by one (fnmatch, never across a ``/``), where
    ``**`` takes any number of components, none included."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[k:], pattern[1:]) for k in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def expand(
    sources: list[str], recursive: bool = False, cameras: list[int] | None = None, exclude: str | Path | None = None
) -> Discovery:
    """Command-line sources -> inputs, in the order given."""
    out = Path(exclude).resolve() if exclude is not None else None
    found = Discovery()
    for source in sources:
        text = str(source)
        path = Path(text)
        if _URL.match(text):
            found.items.append(Source(VIDEO, text, _url_stem(text)))
        elif path.is_dir():
            before = len(found.items)
            for p in _walk(found, path, recursive):
                _add_member(found, p, p.relative_to(path).with_suffix("").as_posix(), out)
            if len(found.items) == before:  # never silence, e.g. for a folder named like an image
                log.warning(
                    "%s: a folder with no image or video in it%s", text, "" if recursive else " (-r enters sub-folders)"
                )
        elif path.exists() or path.is_symlink():
            found.items.append(_named(path, path.stem))
        elif glob.has_magic(text):
            matches = _glob(found, text)
            for p in matches:
                _add_member(found, p, p.stem, out)
            if not matches:
                found.items.append(Source(BAD, text, path.stem, f"{text}: no file matches it"))
        else:
            found.items.append(Source(BAD, text, path.stem, f"{text}: no such file or folder"))
    found.items.extend(Source(VIDEO, index, f"camera{index}") for index in cameras or [])
    found.items = unique_stems(found.items)
    return found


def _url_stem(url: str) -> str:
    """A URL's last path segment without its suffix (``rtsp://cam/live`` -> ``live``), or, with no path,
    its host and port (``tcp://127.0.0.1:5000`` -> ``127_0_0_1_5000``)."""
    address, _, path = url.split("://", 1)[1].split("?", 1)[0].partition("/")
    last = path.rstrip("/").rsplit("/", 1)[-1]
    host = address.rsplit("@", 1)[-1]  # never a user name or password in a file name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(last).stem if last else host).strip("_") or "stream"


def unique_stems(items: list[Source]) -> list[Source]:
    """The inputs with the stems their outputs are named by (``<stem>_labels.png``, ``<stem>_frames/``):

    - the stem is the file name without its extension; for a file found in a folder, its path
      below that folder (``sub/x``); ``camera<N>`` for a camera; a URL's last path segment;
    - an input whose stem no other input of the run has keeps it, so distinct names write what
      they always wrote (``x.jpg`` -> ``x_labels.png``);
    - stems are compared ignoring case, as macOS and Windows file systems compare names;
    - inputs that share a stem each take their file name with its extension instead
      (``x.jpg`` and ``x.png`` -> ``x.jpg_labels.png`` and ``x.png_labels.png``);
    - where that name is still taken, by another input's own stem or by an earlier input of the
      run (one file name in two folders; ``x.jpg.png``, whose own stem is ``x.jpg``), the first
      free of ``-2``, ``-3``, ... is appended, in the order of the inputs.

    No two inputs get one stem (ignoring case), and no output suffix ends with another, so no two
    inputs share an output file either."""
    counts = Counter(item.stem.casefold() for item in items)
    taken = {item.stem.casefold() for item in items if counts[item.stem.casefold()] == 1}
    named = []
    for item in items:
        if counts[item.stem.casefold()] == 1:
            named.append(item)
            continue
        extension = "" if item.live else Path(str(item.location)).suffix
        named.append(replace(item, stem=_free(item.stem + extension, taken)))
    return named


def _free(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ...: the first not in ``taken`` (ignoring case), now taken."""
    candidate, number = name, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{name}-{number}"
    taken.add(candidate.casefold())
    return candidate
