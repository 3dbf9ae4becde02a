"""Which files an ONNX model is made of: the .onnx itself and the external data files its tensors
name (``onnx.save_model(..., save_as_external_data=True)``, the only way past protobuf's 2 GB).

ONNX Runtime reads those files from beside the model, so whatever copies or measures a model
(``segtool info``'s size, ``segtool triton``) must know them. The runtime has no onnx package:
the locations are read from the protobuf wire format directly, walking only the messages that
can hold tensors (graph initializers, Constant-style attributes, subgraphs, functions) and
skipping every payload by its length, so a 2 GB file costs one pass over its field headers.
"""

from __future__ import annotations

import mmap
from pathlib import Path, PurePosixPath

from segtool.runtime.errors import ModelError

# message kind -> {field number: kind of the sub-message in it} (field numbers from onnx.proto)
_FIELDS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},  # external_data: repeated StringStringEntryProto
    "entry": {},
}


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _locations(buf) -> list[str]:
    found: list[str] = []
    stack = [("model", 0, len(buf))]
    while stack:
        kind, pos, end = stack.pop()
        fields = _FIELDS[kind]
        entry: dict[int, bytes] = {}
        while pos < end:
            key, pos = _varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(buf, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(buf, pos)
                if pos + length > end:
                    raise ValueError("field runs past its message")
                if number in fields:
                    stack.append((fields[number], pos, pos + length))
                elif kind == "entry" and number in (1, 2):
                    entry[number] = bytes(buf[pos : pos + length])
                pos += length
            else:
                raise ValueError(f"wire type {wire}")
        if pos != end:
            raise ValueError("message overruns its length")
        if kind == "entry" and entry.get(1) == b"location" and 2 in entry:
            location = entry[2].decode("utf-8", "replace")
            if location not in found:
                found.append(location)
    return found


def external_locations(path: str | Path) -> list[str]:
    """The external data locations (relative to the model's folder) that ``path``'s tensors name,
    in the order first seen; ``[]`` for a self-contained file. ``ModelError`` for a file that is not
    a readable protobuf."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if path.stat().st_size == 0:
                return []
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if buf.find(b"location") < 0:  # the key every external tensor carries
                    return []
                return _locations(buf)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{path}: not an ONNX protobuf file ({exc or 'truncated'})") from None


def safe_location(location: str, model: Path) -> PurePosixPath:
    """A location as a relative path inside the model's folder; ``ModelError`` for one that leaves it
    (ONNX Runtime refuses those too)."""
    relative = PurePosixPath(location.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ModelError(f"{model}: external data location {location!r} is not a path inside the model's folder")
    return relative


def model_files(path: str | Path) -> list[Path]:
    """The .onnx file and every external data file it names (which may be missing)."""
    path = Path(path)
    return [path] + [path.parent / safe_location(loc, path) for loc in external_locations(path)]


def model_bytes(path: str | Path) -> int:
    """Size on disk of the model with its external data (files that are missing count 0)."""
    return sum(p.stat().st_size for p in model_files(path) if p.is_file())
