"""Input discovery: what the user pointed at, turned into a list of inputs by one policy.

- A path named on the command line is an input whatever its suffix (its kind is sniffed from
  its first bytes); if it cannot be used, that is an error reported for it.
- Inside folders (``recursive`` for sub-folders) and glob matches, only files with an image or
  video suffix are inputs; other files are skipped and counted, not failures. Hidden files are
  ignored. Media names that are not regular files (FIFOs, devices) are reported, never opened.
- Anything inside ``exclude`` (the output folder) is never an input, so a run never reads
  its own outputs.
- URLs are streams, ``cameras`` are camera indices.

Each input carries its output stem, relative to a folder source's root, so two ``x.jpg`` in
different sub-folders do not overwrite each other.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import stat
from dataclasses import dataclass, field
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
    """Glob matches, each file once; ``**`` walks with ``_walk``, which never follows a cycle."""
    if "**" not in pattern:
        return sorted(Path(p) for p in glob.glob(pattern))
    parts = Path(pattern).parts
    fixed = next(k for k, part in enumerate(parts) if glob.has_magic(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    patterns = {pattern, pattern.replace("**/", "")}  # ``**/`` also matches no folder at all
    matches, seen = [], set()
    for path in _walk(found, root, recursive=True):
        text = str(path) if fixed else path.as_posix()
        if any(fnmatch.fnmatchcase(text, p) for p in patterns):
            try:
                key = (path.stat().st_dev, path.stat().st_ino)
            except OSError:
                key = (0, hash(text))
            if key not in seen:
                seen.add(key)
                matches.append(path)
    return matches


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
    found.items = _unique_stems(found.items)
    return found


def _url_stem(url: str) -> str:
    last = url.split("://", 1)[1].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(last).stem) or "stream"


def _unique_stems(items: list[Source]) -> list[Source]:
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        count = seen.get(item.stem, 0)
        seen[item.stem] = count + 1
        unique.append(
            item if count == 0 else Source(item.kind, item.location, f"{item.stem}-{count + 1}", item.problem)
        )
    return unique
