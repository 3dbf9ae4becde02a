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

import glob
import logging
import re
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
    except ValueError:
        return False


def _named(path: Path, stem: str) -> Source:
    """A file the user named (or a media file found in a folder)."""
    problem = regular_file_problem(path)
    if problem:
        return Source(BAD, str(path), stem, f"{path}: {problem}")
    return Source(sniff(path), str(path), stem)


def _add_member(found: Discovery, path: Path, stem: str, exclude: Path | None) -> None:
    """A folder or glob member: media by suffix are inputs, other files are skipped and counted."""
    if path.name.startswith(".") or _inside(path, exclude):
        return
    if not is_media_name(path):
        if path.is_file():
            found.skipped.append(str(path))
        return
    if path.is_dir():
        return  # recursive walks enter it; a plain folder scan does not look inside
    found.items.append(_named(path, stem))


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
            members = path.glob("**/*" if recursive else "*")
            for p in sorted(m for m in members if not any(part.startswith(".") for part in m.relative_to(path).parts)):
                _add_member(found, p, p.relative_to(path).with_suffix("").as_posix(), out)
            if len(found.items) == before:  # never silence, e.g. for a folder named like an image
                log.warning(
                    "%s: a folder with no image or video in it%s", text, "" if recursive else " (-r enters sub-folders)"
                )
        elif path.exists() or path.is_symlink():
            found.items.append(_named(path, path.stem))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
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
