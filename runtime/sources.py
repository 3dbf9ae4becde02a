"""What the user pointed at: images, folders, globs, video files, cameras and stream URLs.

Each command-line source expands to ``Source`` items whose kind is detected (suffix, then the
file's first bytes), never declared. Items also carry the output stem, relative to a folder
source's root, so two ``x.jpg`` in different sub-folders do not overwrite each other.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from .imagefiles import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".mts", ".3gp", ".ogv", ".gif"})
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*", b"P5", b"P6")

IMAGE, VIDEO, MISSING = "image", "video", "missing"


@dataclass(frozen=True)
class Source:
    kind: str  # IMAGE, VIDEO or MISSING
    location: str | int  # file path, URL, or camera index
    stem: str  # output name stem, may contain sub-folders ("a/b/x")

    @property
    def live(self) -> bool:
        """A camera or network stream: no known length, no end."""
        return isinstance(self.location, int) or bool(_URL.match(str(self.location)))

    def __str__(self) -> str:
        return f"camera {self.location}" if isinstance(self.location, int) else str(self.location)


def sniff(path: Path) -> str:
    """IMAGE or VIDEO for an existing file: by suffix, else by its first bytes."""
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


def _files_in(folder: Path, recursive: bool) -> list[Path]:
    """Every visible file: media by suffix or content; anything else is reported, not skipped silently."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


def expand(sources: list[str], recursive: bool = False, cameras: list[int] | None = None) -> list[Source]:
    """Command-line sources -> items, in the order given; unmatched paths become MISSING items."""
    items: list[Source] = []
    for source in sources:
        text = str(source)
        path = Path(text)
        if _URL.match(text):
            items.append(Source(VIDEO, text, _url_stem(text)))
        elif path.is_dir():
            for p in _files_in(path, recursive):
                items.append(Source(sniff(p), str(p), p.relative_to(path).with_suffix("").as_posix()))
        elif path.exists():
            items.append(Source(sniff(path), text, path.stem))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            items.extend(Source(sniff(p), str(p), p.stem) for p in matches)
            if not matches:
                items.append(Source(MISSING, text, path.stem))
        else:
            items.append(Source(MISSING, text, path.stem))
    items.extend(Source(VIDEO, index, f"camera{index}") for index in cameras or [])
    return _unique_stems(items)


def _url_stem(url: str) -> str:
    last = url.split("://", 1)[1].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(last).stem) or "stream"


def _unique_stems(items: list[Source]) -> list[Source]:
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        count = seen.get(item.stem, 0)
        seen[item.stem] = count + 1
        unique.append(item if count == 0 else Source(item.kind, item.location, f"{item.stem}-{count + 1}"))
    return unique
