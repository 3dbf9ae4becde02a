"""`segtool serve` against hostile requests: every malformed body, header or query gets a 4xx JSON
error, never a 500; the health routes stay fast while a large JSON request is answered.

The tiny model (tests/tiny.py) serves: it loads in milliseconds, and a large tensor costs it little
inference, so parsing and writing JSON dominate. Real uvicorn processes on 127.0.0.1, free ports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from conftest import jpeg
from servers import Server

from segtool.runtime.model.session import create_session

INFER = "/v2/models/tiny/infer"
GOOD = {"name": "image", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.5] * 12}


@pytest.fixture(scope="module")
def server(tiny):
    running = Server(tiny, "--max-queue", "2", "--max-body-mb", "16")
    yield running
    running.stop()


def tensor(**override) -> dict:
    return {**GOOD, **override}


def infer(**request) -> bytes:
    return json.dumps({"inputs": [GOOD], **request}).encode()


def assert_4xx_json(response: httpx.Response, status: int = 400, needle: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json", response.headers
    message = response.json()["error"]
    assert isinstance(message, str) and needle in message, message


def test_deeply_nested_json_is_400(server):
    """50,000 nested arrays: json.loads raised RecursionError (500)."""
    with server.client() as client:
        deep = client.post(INFER, content=b"[" * 50_000 + b"]" * 50_000)
        inside = client.post(INFER, content=b'{"inputs": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}")
        data = client.post(INFER, content=b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 2, 2], '
                                          b'"data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}")  # fmt: skip
    for response in (deep, inside, data):
        assert_4xx_json(response, 400, "nested too deeply")


def test_overflowing_shapes_and_numbers_are_400(server):
    """Element counts past int64 (OverflowError, or a count that wrapped around) and numbers no
    datatype holds: a 400-digit integer, 300 in UINT8, 1e400, 5000 digits (past int()'s limit)."""
    cases = {
        "dims 10^23": infer(inputs=[tensor(shape=[10**23, 3, 2, 2])]),
        "count past int64": infer(inputs=[tensor(shape=[2**32, 2**32, 3, 1], data=[])]),
        "count wraps to 12": infer(inputs=[tensor(shape=[2**62, 2**2, 3, 1])]),
        "400 digits": infer(inputs=[tensor(data=[10**400] + [0.0] * 11)]),
        "300 in UINT8": infer(inputs=[tensor(datatype="UINT8", data=[300] * 12)]),
        "5000 digits": b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": ['
        + b"9" * 5000
        + b"]}]}",
        "1e400 is infinite": b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": ['
        + b"1e400, " * 11
        + b"1e400]}]}",
    }
    with server.client() as client:
        for label, body in cases.items():
            response = client.post(INFER, content=body)
            assert response.status_code == 400, (label, response.status_code, response.text[:200])
            assert response.json()["error"], label


def test_parameters_and_outputs_of_the_wrong_type_are_400(server):
    """The "parameters" as a string or a list, "outputs": 5 (AttributeError, TypeError: 500)."""
    cases = {
        "parameters string": infer(parameters="binary_data_output"),
        "parameters list": infer(parameters=[1, 2]),
        "input parameters string": infer(inputs=[tensor(parameters="x")]),
        "input parameters list": infer(inputs=[tensor(parameters=[])]),
        "outputs 5": infer(outputs=5),
        "outputs string": infer(outputs="logits"),
        "outputs [5]": infer(outputs=[5]),
        "output parameters string": infer(outputs=[{"name": "logits", "parameters": "binary"}]),
        "output name list": infer(outputs=[{"name": ["logits"]}]),
        "id object": infer(id={"a": 1}),
        "binary_data_size string": infer(inputs=[tensor(data=None, parameters={"binary_data_size": "48"})]),
        "binary_data_size true": infer(inputs=[tensor(data=None, parameters={"binary_data_size": True})]),
    }
    with server.client() as client:
        for label, body in cases.items():
            response = client.post(INFER, content=body)
            assert response.status_code == 400, (label, response.status_code, response.text[:200])
            assert response.json()["error"], label


def test_binary_header_length_must_be_ascii_digits(server):
    """Inference-Header-Content-Length "²": str.isdigit() said yes, int() said no (500)."""
    header = "Inference-Header-Content-Length"
    x = np.zeros((1, 3, 2, 2), np.float32)
    head = json.dumps({"inputs": [tensor(data=None, parameters={"binary_data_size": x.nbytes})]}).encode()
    with server.client() as client:
        for value in ["²".encode(), "٣".encode(), b"9" * 5000, b"-1", b"0x10", b"1 2", b""]:
            response = client.post(INFER, content=head + x.tobytes(), headers={header.encode(): value})
            assert_4xx_json(response, 400, header)
        off_by_one = client.post(INFER, content=head + x.tobytes(), headers={header: str(len(head) + 1)})
        good = client.post(INFER, content=head + x.tobytes(), headers={header: str(len(head))})
    assert_4xx_json(off_by_one, 400, "not JSON")
    assert good.status_code == 200, good.text


def asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """One request straight into the ASGI app, headers as given (an HTTP server would refuse a
    Content-Length of "²" before the app saw it; another ASGI server, or a proxy, may not)."""
    sent: list[dict] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answered = asyncio.Event()  # the client stays until the answer is sent (a disconnect stops the work)

    async def receive():
        if messages:
            return messages.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_content_length_must_be_ascii_digits(tiny):
    """Service.body read Content-Length with str.isdigit() and int(): "²" gave a 500."""
    from segtool.runtime import Segmenter
    from segtool.serve import ServeSettings, create_app

    app = create_app(Segmenter(tiny, device="cpu", warn_random=False), ServeSettings(max_body_mb=1))
    try:
        body = infer()
        for value in ("²".encode(), "٣".encode(), b"12 ", str(len(body)).encode()):
            status, content = asgi_post(app, INFER, [(b"content-length", value)], body)
            assert status == 200, (value, status, content[:200])  # the bytes that arrived are counted instead
        for value in (b"9" * 40, b"9" * 5000):  # past int()'s 4300 digits too
            status, content = asgi_post(app, INFER, [(b"content-length", value)], body)
            assert status == 413 and "limit" in json.loads(content)["error"]
        status, content = asgi_post(app, "/v1/segment", [(b"content-length", "²".encode())], b"")
        assert status == 400 and json.loads(content)["error"]
    finally:
        app.state.service.worker.close()


def test_non_ascii_bearer_token_is_401_not_500(tiny):
    """hmac.compare_digest on non-ASCII str raises TypeError: the key is compared as bytes."""
    keyed = Server(tiny, "--api-key", "sécret")
    try:
        with keyed.client() as client:
            key = {b"Authorization": "Bearer sécret".encode()}
            assert client.get("/v2/health/live", headers=key).status_code == 200
            wrong = ["Bearer sécret".encode("latin-1"), "Bearer sécrèt".encode(), b"Bearer \xff\xfe", b"Bearer s3cret"]
            for value in wrong:
                assert_4xx_json(client.get("/v2", headers={b"Authorization": value}), 401, "API key")
            assert_4xx_json(client.get("/v2"), 401, "API key")
            right = client.get("/v2", headers=key)
        assert right.status_code == 200 and right.json()["name"] == "segtool"
    finally:
        keyed.stop()


def test_health_stays_fast_during_a_large_json_response(server):
    """A 6 MB JSON request whose answer is 43 MB of JSON: /v2/health/live took 3-6 s while the
    event loop wrote it; it is now built on the worker, a chunk at a time."""
    x = np.random.default_rng(0).standard_normal((1, 3, 316, 316)).astype(np.float32)
    body = json.dumps({"inputs": [tensor(shape=list(x.shape), data=x.ravel().tolist())]}).encode()
    outcome: dict = {}

    def large():
        started = time.monotonic()
        with server.client() as client:
            response = client.post(INFER, content=body, headers={"Content-Type": "application/json"})
        outcome.update(status=response.status_code, size=len(response.content), seconds=time.monotonic() - started)

    worker = threading.Thread(target=large)
    worker.start()
    latencies = []
    deadline = time.monotonic() + 90
    with server.client() as client:
        while worker.is_alive() and time.monotonic() < deadline:
            started = time.monotonic()
            assert client.get("/v2/health/live", timeout=10).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
    worker.join(timeout=60)
    assert outcome.get("status") == 200 and outcome["size"] > 30e6, outcome
    assert len(latencies) >= 5, (latencies, outcome)  # the probes did overlap the request
    assert max(latencies) < 1.0, (max(latencies), outcome)


def test_non_finite_numbers(server, tiny):
    """NaN/Infinity in an input tensor: 400 (JSON literals and binary data alike). An output that
    overflows float32 is valid JSON: non-finite values as "NaN"/"Infinity"/"-Infinity" strings."""
    header = "Inference-Header-Content-Length"
    nan = np.full((1, 3, 2, 2), np.nan, np.float32)
    inf = np.full((1, 3, 2, 2), np.inf, np.float32)
    with server.client() as client:
        for literal in (b"NaN", b"Infinity", b"-Infinity"):
            body = infer().replace(b"0.5, 0.5", literal + b", 0.5", 1)
            assert_4xx_json(client.post(INFER, content=body), 400, "finite")
        for x in (nan, inf):
            head = json.dumps({"inputs": [tensor(data=None, parameters={"binary_data_size": x.nbytes})]}).encode()
            response = client.post(INFER, content=head + x.tobytes(), headers={header: str(len(head))})
            assert_4xx_json(response, 400, "finite")
        huge = np.full((1, 3, 2, 2), 3.4e38, np.float32)
        huge[0, :, 0, 0] = [-3.4e38, 3.4e38, -3.4e38]
        response = client.post(INFER, content=infer(inputs=[tensor(data=huge.ravel().tolist())]))
    assert response.status_code == 200, response.text[:300]

    def strict(constant: str):
        raise AssertionError(f"{constant} in the response: not JSON")

    output = json.loads(response.content, parse_constant=strict)["outputs"][0]
    served = np.array(output["data"], np.float32).reshape(output["shape"])
    session, _ = create_session(str(tiny), "cpu")
    expected = session.run(None, {"image": huge})[0]
    assert not np.isfinite(expected).all()  # the case is real: the output overflows float32
    np.testing.assert_array_equal(served, expected)  # NaN and ±inf come back as themselves


BASE64_GARBAGE = b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!"
UNTERMINATED = b'Content-Disposition: form-data; name="image"; filename="a"\r\n\r\nunterminated'
BAD_SHAPES = [[12], [1, 12], [1, 3, 4], [1, 1, 3, 2, 2], [3, 2, 2], [1, 3, -2, -2], [1, 3, 2.0, 2], [True, 3, 2, 2],
              [1, 3, "2", 2], "1,3,2,2", None, [1] * 70, []]  # fmt: skip
SIZES = [-48, 47, 10**30, 2**63, 1.5]  # binary_data_size for a 48-byte tensor


def multipart(*parts: bytes, boundary: bytes = b"xyz") -> tuple[bytes, dict]:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


def test_no_malformed_request_gets_a_500(server):
    """Bodies, headers and queries a client can get wrong, on both routes: each a 4xx JSON error."""
    header = "Inference-Header-Content-Length"
    x = np.zeros((1, 3, 2, 2), np.float32)
    blob = x.tobytes()
    head = json.dumps({"inputs": [tensor(data=None, parameters={"binary_data_size": x.nbytes})]}).encode()
    image = jpeg(16, 16)
    bad_multipart = [
        (b"--xyz\r\nzzz", {"Content-Type": "multipart/form-data; boundary=xyz"}),
        (b"--xyz\r\n", {"Content-Type": "multipart/form-data"}),  # no boundary
        multipart(b'Content-Disposition: form-data; name="other"; filename="a.jpg"\r\n\r\n' + image),
        multipart(b'Content-Disposition: form-data; name="image"\r\n\r\nnot a file'),
        multipart(b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n' + BASE64_GARBAGE),
        multipart(b"no headers at all"),
        (b"--xyz\r\n" + UNTERMINATED, {"Content-Type": "multipart/form-data; boundary=xyz"}),
    ]
    segment_cases: list[tuple[str, bytes, dict]] = [
        ("/v1/segment", b"", {}),
        ("/v1/segment", b"\x00garbage" * 10, {"Content-Type": "image/jpeg"}),
        ("/v1/segment", image[: len(image) // 2], {"Content-Type": "image/jpeg"}),  # truncated
        ("/v1/segment", base64.b64encode(image), {"Content-Type": "text/plain"}),  # base64, not bytes
        ("/v1/segment", b'{"image": "data:image/jpeg;base64,!!!"}', {"Content-Type": "application/json"}),
        ("/v1/segment", b"http://127.0.0.1:1/x.jpg", {}),  # a URL is not fetched
        ("/v1/segment", b"/etc/passwd", {}),  # nor a path opened
        ("/v1/segment?output=svg", image, {}),
        ("/v1/segment?max_size=-1", image, {}),
        ("/v1/segment?max_size=1e400", image, {}),
        ("/v1/segment?alpha=nan", image, {}),
        ("/v1/segment?alpha=2", image, {}),
        ("/v1/segment?images=maybe", image, {}),
        *[("/v1/segment", body, headers) for body, headers in bad_multipart],
    ]
    infer_cases: list[tuple[str, bytes, dict]] = [
        (INFER, b"", {}),
        (INFER, b"", {header: "0"}),
        (INFER, image, {"Content-Type": "image/jpeg"}),
        (INFER, b"\xff\xfe{}", {}),  # not UTF-8
        (INFER, b"[]", {}),
        (INFER, b'"inputs"', {}),
        (INFER, b"12", {}),
        (INFER, b"null", {}),
        (INFER, b'{"inputs": {}}', {}),
        (INFER, b'{"inputs": "image"}', {}),
        (INFER, b'{"inputs": [null]}', {}),
        (INFER, b'{"inputs": []}', {}),
        (INFER, infer(inputs=[{**GOOD, "name": 5}]), {}),
        (INFER, infer(inputs=[tensor(name="other")]), {}),
        (INFER, infer(inputs=[GOOD, GOOD]), {}),  # the same input twice
        (INFER, infer(inputs=[GOOD, tensor(name="second")]), {}),
        *[(INFER, infer(inputs=[tensor(datatype=d)]), {}) for d in ("FP33", "fp32", "", 5, None, ["FP32"], "BYTES")],
        (INFER, infer(inputs=[tensor(datatype="INT32", data=[0] * 12)]), {}),
        (INFER, infer(inputs=[tensor(data=[0.5] * 11)]), {}),  # mismatched data length
        (INFER, infer(inputs=[tensor(data=[0.5] * 13)]), {}),
        (INFER, infer(inputs=[tensor(data=[[0.5] * 6, [0.5] * 5])]), {}),  # ragged nesting
        (INFER, infer(inputs=[tensor(data=[[[[[0.5]]]]] * 12)]), {}),
        (INFER, infer(inputs=[tensor(data=["a"] * 12)]), {}),
        (INFER, infer(inputs=[tensor(data=[{}] * 12)]), {}),
        (INFER, infer(inputs=[tensor(data=[None] * 12)]), {}),
        (INFER, infer(inputs=[tensor(data="0.5")]), {}),
        (INFER, infer(inputs=[tensor(data={"0": 0.5})]), {}),
        (INFER, infer(inputs=[{k: v for k, v in GOOD.items() if k != "data"}]), {}),
        *[(INFER, infer(inputs=[tensor(shape=s)]), {}) for s in BAD_SHAPES],
        (INFER, infer(inputs=[tensor(shape=[0, 3, 2, 2], data=[])]), {}),
        (INFER, infer(inputs=[tensor(shape=[1, 3, 0, 0], data=[])]), {}),
        (INFER, infer(inputs=[tensor(shape=[1, 3, 1, 0], data=[])]), {}),
        (INFER, infer(outputs=[{"name": "labels"}]), {}),
        (INFER, head + x.tobytes(), {}),  # binary data without the header length
        (INFER, head + x.tobytes()[:-1], {header: str(len(head))}),  # binary data short of its size
        (INFER, head, {header: str(len(head))}),  # binary tensor header pointing past the body
        (INFER, head + x.tobytes() + b"!", {header: str(len(head))}),  # bytes no input claims
        (INFER, head + x.tobytes(), {header: str(len(head) + x.nbytes + 1)}),
        (INFER, head + x.tobytes(), {header: str(len(head) - 1)}),
        *[(INFER, infer(inputs=[tensor(data=None, parameters={"binary_data_size": n})]) + blob, {}) for n in SIZES],
        ("/v2/models/tiny/versions/2/infer", infer(), {}),
        ("/v2/models/TINY/infer", infer(), {}),
        ("/v2/models/tiny/versions//infer", infer(), {}),
        ("/v2/models/%2e%2e/infer", infer(), {}),
    ]
    seen = []
    with server.client() as client:
        for path, body, headers in segment_cases + infer_cases:
            response = client.post(path, content=body, headers=headers)
            seen.append((path, body[:60], response.status_code))
            assert 400 <= response.status_code < 500, (path, body[:120], headers, response.status_code, response.text)
            assert isinstance(response.json()["error"], str), (path, body[:120], response.text)
        for method, path in (("GET", INFER), ("PUT", "/v1/segment"), ("DELETE", "/v2"), ("GET", "/v2/models/nope")):
            response = client.request(method, path)
            assert 400 <= response.status_code < 500 and response.json()["error"], (method, path, response.text)
        assert client.post(INFER, content=infer()).status_code == 200  # and the server is fine afterwards
        plain = client.post(INFER, content=infer(), headers={"Content-Type": "text/plain"})
        assert plain.status_code == 200  # as Triton: the body is the protocol, whatever the content type says
        assert client.post("/v1/segment", content=image).status_code == 200
    assert len(seen) > 80


def test_json_output_over_the_limit_must_be_binary(server):
    """A JSON response is bounded (MAX_JSON_VALUES); past it the client is told to ask for binary data."""
    from segtool.serve import routes_kserve

    x = np.zeros((1, 3, 1000, 1000), np.float32)  # 21 M logits
    head = json.dumps({"inputs": [tensor(shape=list(x.shape), data=None, parameters={"binary_data_size": x.nbytes})]})
    headers = {"Inference-Header-Content-Length": str(len(head))}
    with server.client() as client:
        response = client.post(INFER, content=head.encode() + x.tobytes(), headers=headers)
    assert 21_000_000 > routes_kserve.MAX_JSON_VALUES
    assert_4xx_json(response, 400, "binary")


def test_schema_declares_the_error_answers(tiny):
    """/openapi.json says what the server answers: {"error": str} for 4xx, request bodies for the raw routes."""
    keyed = Server(tiny, "--api-key", "k", "--name", "street")
    try:
        with keyed.client() as client:
            schema = client.get("/openapi.json", headers={"Authorization": "Bearer k"}).json()
    finally:
        keyed.stop()
    infer_op = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"400", "401", "404", "413", "503"} <= set(infer_op["responses"])
    assert infer_op["responses"]["400"]["content"]["application/json"]["schema"]["required"] == ["error"]
    assert "application/json" in infer_op["requestBody"]["content"]
    name = next(p for p in infer_op["parameters"] if p["name"] == "name")
    assert name["schema"]["enum"] == ["street"]
    segment = schema["paths"]["/v1/segment"]["post"]
    assert {"image/jpeg", "multipart/form-data"} <= set(segment["requestBody"]["content"])
    assert {"application/json", "image/png", "image/jpeg"} <= set(segment["responses"]["200"]["content"])
    assert "401" not in schema["paths"]["/v2/health/live"]["get"]["responses"]


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes that are not (all) HTTP on a fresh connection; what comes back before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n",
        b"GET \xff\xfe HTTP/1.1\r\n\r\n",
    ],  # fmt: skip
    ids=["garbage", "tls-hello", "header-without-colon", "nul-in-header", "non-utf8-path"],
)
def test_bytes_that_are_not_http_get_uvicorns_400_and_the_server_lives_on(server, request_bytes):
    """The one answer that is not JSON (README): uvicorn's HTTP parser refuses these before the
    application sees a request, with a plain-text 400; the server goes on serving."""
    answer = raw_exchange(server.port, request_bytes)
    status = answer.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 4"), answer[:200]
    with server.client() as client:
        assert client.get("/v2/health/live").status_code == 200


def test_an_overlay_jpeg_cannot_hold_is_400_not_500(server):
    """66000x600 is under the pixel limit, but a JPEG side stops at 65535: the overlay cannot be
    encoded, which the request's size decides (was a 500, and the connection was dropped after it)."""
    picture = np.zeros((600, 66000, 3), np.uint8)
    picture[:, ::7] = 200
    body = cv2.imencode(".png", picture)[1].tobytes()
    with server.client() as client:
        overlay = client.post("/v1/segment?output=overlay", content=body)
        mask = client.post("/v1/segment?output=mask", content=body)  # the same connection goes on
    assert_4xx_json(overlay, 400, "ask for output=labels or mask (PNG)")
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"


def test_a_client_that_leaves_mid_upload_is_one_log_line_not_a_traceback(tiny):
    """Before: Starlette's ClientDisconnect escaped the body reading, and uvicorn logged "Exception in
    ASGI application" with its whole traceback for each client that went away."""
    running = Server(tiny)
    try:
        for path in ("/v1/segment", INFER):
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as conn:
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {1 << 20}\r\n\r\n"
                )
                conn.sendall(head.encode() + bytes(64 * 1024))
                time.sleep(0.3)  # the application is reading the body
        time.sleep(0.5)
        with running.client() as client:
            assert client.get("/v2/health/live").status_code == 200
    finally:
        code, log = running.stop()
    assert code == 0, log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    left = [line for line in log.splitlines() if "left before its request body was read" in line]
    assert len(left) == 2 and "/v1/segment" in left[0] and INFER in left[1], log
