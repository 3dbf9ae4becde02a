"""`segtool serve` fuzzed from its own OpenAPI schema with Schemathesis, against a real uvicorn.

Every operation in the schema gets its examples, Schemathesis' coverage cases (edge values,
missing and wrong-typed parameters and bodies) and up to ``MAX_EXAMPLES`` generated requests,
valid and invalid ones. Each answer must not be a 5xx, and must have a status code, a media type
and headers the schema declares for that operation, with a JSON body valid against the declared
schema (the ``{"error": str}`` of a 4xx included); a request the schema rules out must not
succeed. The tiny model serves (milliseconds to load and to run); the whole file takes 30-40 s on
two busy cores.

The tests are collected from the schema of an app built in this process on the same tiny model
(one test per operation); the fixture checks that the running server's /openapi.json is that
schema, then every request goes to the server.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from conftest import scene_video  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from servers import Server  # noqa: E402
from tiny import tiny_model  # noqa: E402

from segtool.runtime import Segmenter  # noqa: E402
from segtool.serve import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.schemathesis

MAX_EXAMPLES = 25  # generated requests per operation, on top of the examples and coverage cases
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]  # fmt: skip
CONFIG = {
    "seed": 20240601,  # the same requests on every run: a failure replays
    "request-timeout": 30,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
}  # fmt: skip
FLAGS = ("--max-queue", "4", "--max-body-mb", "2", "--max-pixels", "100000")

_folder = tempfile.TemporaryDirectory(prefix="segtool-schema-")  # removed when the process ends
MODEL = tiny_model(Path(_folder.name) / "tiny.onnx")
# Schemathesis has no generator for video bodies: a real 3-frame clip, or any bytes (short, so the
# generated requests stay under the body limit)
CLIP = scene_video(Path(_folder.name) / "clip.mp4", 3, width=32, height=24).read_bytes()
for _video in ("video/mp4", "video/webm"):
    schemathesis.openapi.media_type(_video, st.one_of(st.just(CLIP), st.binary(max_size=4096)))
_app = create_app(Segmenter(MODEL, device="cpu", warn_random=False), ServeSettings())
OPENAPI = _app.openapi()
_app.state.service.worker.close()
schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def served():
    server = Server(MODEL, *FLAGS)
    try:
        assert httpx.get(f"{server.url}/openapi.json", timeout=30).json() == OPENAPI  # its own schema
        yield server.url
    finally:
        code, stderr = server.stop()
        assert code == 0 and "Traceback" not in stderr, stderr[-3000:]  # no handler let an exception through


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_is_declared_and_none_is_5xx(case, served):
    case.call_and_validate(base_url=served, checks=CHECKS)
