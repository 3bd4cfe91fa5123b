"""The HTTP service: a real uvicorn server on a free loopback port, spoken to with httpx."""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from serving import free_port, png_bytes, running
from test_attribution import KNOWN, colour_image, make_fake

from osma.attribution import Model
from osma.server import create_app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Model]]:
    fake = make_fake()
    fake.tau = -3.0
    model = Model(fake)
    app = create_app(model, max_upload_mb=0.05, max_pixels=100 * 100)
    with running(app, free_port()) as port:
        yield f"http://127.0.0.1:{port}", model


TIMEOUT = httpx.Timeout(60.0)  # the machine is shared; never flaky on a slow start


def test_health_sources_docs(server: tuple[str, Model]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "method": "fake", "sources": 3}
    src = httpx.get(f"{url}/v1/sources").json()
    assert [s["name"] for s in src["sources"]] == KNOWN and src["tau"] == -3.0
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/v1/attribute" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_attribute_matches_python_api(server: tuple[str, Model]) -> None:
    url, model = server
    imgs = {"a.png": colour_image("red", 1), "b.png": colour_image("yellow", 2), "c.png": colour_image("blue", 3)}
    files = [("files", (n, png_bytes(a), "image/png")) for n, a in imgs.items()]
    r = httpx.post(f"{url}/v1/attribute", files=files, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    want = [d.to_dict() for d in model.attribute(list(imgs.values()))]
    for g, w, name in zip(got, want, imgs):
        w["path"] = name
        assert g == w  # JSON round-trips floats exactly
    assert [g["source"] for g in got] == ["red", "unknown", "blue"]
    r = httpx.post(f"{url}/v1/attribute", params={"tau": -1e9}, files=files[1:2], timeout=TIMEOUT)
    assert r.json()["results"][0]["threshold"] == -1e9
    assert r.json()["results"][0]["source"] == r.json()["results"][0]["nearest"]


def test_bad_uploads(server: tuple[str, Model]) -> None:
    url, _ = server
    post = lambda files, **kw: httpx.post(f"{url}/v1/attribute", files=files, timeout=TIMEOUT, **kw)  # noqa: E731
    r = post([("files", ("notes.txt", b"hello, not an image", "text/plain"))])
    assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
    good = png_bytes(colour_image("red", 1))
    r = post([("files", ("cut.png", good[: len(good) // 2], "image/png"))])
    assert r.status_code == 422 and "cut.png" in r.json()["detail"]
    r = post([("files", ("big.png", png_bytes(np.zeros((200, 200, 3), np.uint8)), "image/png"))])
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    noisy = png_bytes(np.random.default_rng(0).integers(0, 255, (99, 99, 3), dtype=np.uint8))  # ~30 kB each
    r = post([("files", (f"n{i}.png", noisy, "image/png")) for i in range(3)])
    assert r.status_code == 413
    r = httpx.post(f"{url}/v1/attribute", content=b"x" * 200_000, timeout=TIMEOUT,
                   headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "200000 bytes" in r.json()["detail"]  # refused from the header
    r = httpx.post(f"{url}/v1/attribute", data={"other": "x"})
    assert r.status_code == 422
    r = post([("files", ("empty.png", b"", "image/png"))])
    assert r.status_code == 422
    assert httpx.get(f"{url}/healthz").status_code == 200  # still serving


def test_concurrent_requests(server: tuple[str, Model]) -> None:
    url, _ = server
    names = ["red", "green", "blue", "yellow"] * 4

    def one(i: int) -> str:
        a = colour_image(names[i], 50 + i)
        r = httpx.post(f"{url}/v1/attribute", files=[("files", (f"{i}.png", png_bytes(a), "image/png"))], timeout=TIMEOUT)
        r.raise_for_status()
        return r.json()["results"][0]["source"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(len(names))))
    assert got == [n if n != "yellow" else "unknown" for n in names]


def test_request_threads_raise_anyio_limit() -> None:
    """serve() lets every connection run in a request thread (issue 17): the limiter of the
    server's event loop has the tokens asked for, where anyio's default is 40."""
    import anyio.to_thread

    from osma.server import request_threads

    for n, want in ((None, 40), (70, 70)):
        app = create_app(Model(make_fake()))
        if n is not None:
            request_threads(app, n)

        @app.get("/tokens")
        async def tokens() -> dict:
            return {"tokens": anyio.to_thread.current_default_thread_limiter().total_tokens}

        with running(app, free_port()) as port:
            got = httpx.get(f"http://127.0.0.1:{port}/tokens", timeout=TIMEOUT).json()["tokens"]
        assert got == want, n


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: bytes = b"osmab", close: bool = True) -> bytes:
    """A multipart/form-data body written by hand: (field name, filename or None, data) per part."""
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disp.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


def test_multipart_parts_other_fields_and_malformed_bodies(server: tuple[str, Model]) -> None:
    """The endpoint parses its multipart body itself (issue 17): only ``files`` parts count,
    in order (a part without a filename is named ``upload``), and a malformed body is a 400."""
    url, _ = server
    red, blue = png_bytes(colour_image("red", 7)), png_bytes(colour_image("blue", 8))

    def post(body: bytes, ctype: str = "multipart/form-data; boundary=osmab") -> httpx.Response:
        return httpx.post(f"{url}/v1/attribute", content=body, headers={"content-type": ctype}, timeout=TIMEOUT)

    r = post(_multipart([("note", None, b"ignored"), ("files", "r.png", red), ("files", None, blue)]))
    assert r.status_code == 200, r.text
    assert [(d["path"], d["source"]) for d in r.json()["results"]] == [("r.png", "red"), ("upload", "blue")]
    r = post(_multipart([("note", None, b"x")]))
    assert r.status_code == 422 and "no files" in r.json()["detail"]
    r = post(_multipart([("files", "r.png", red)]), ctype="multipart/form-data")
    assert r.status_code == 400 and "boundary" in r.json()["detail"]
    r = post(b"not multipart at all")
    assert r.status_code == 400 and "malformed" in r.json()["detail"]
    r = post(_multipart([("files", "r.png", red)], close=False))  # cut before its closing boundary
    assert r.status_code == 400 and "closing boundary" in r.json()["detail"]
    r = post(_multipart([("files", "r.png", red)], boundary=b"other"))  # the body's boundary is not the header's
    assert r.status_code == 400
    r = post(_multipart([("note", None, b"")] * 1001))
    assert r.status_code == 400 and "1000 parts" in r.json()["detail"]
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_body_is_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing, decoding and the JSON answer run in the request's worker thread: the event
    loop, shared by every connection, only receives bodies (issue 17)."""
    import asyncio

    import osma.server

    seen: list[bool] = []
    real = osma.server._multipart_files

    def recording(ctype: str, chunks: list[bytes]) -> list:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return real(ctype, chunks)

    monkeypatch.setattr(osma.server, "_multipart_files", recording)
    app = create_app(Model(make_fake()))
    with running(app, free_port()) as port:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/attribute", timeout=TIMEOUT,
                       files=[("files", ("a.png", png_bytes(colour_image("red", 1)), "image/png"))])
    assert r.status_code == 200 and seen == [False]


def test_client_gone_mid_body_is_no_server_error() -> None:
    """A client that disconnects before its body is complete costs a 400 nobody reads, not an
    'Exception in ASGI application' with a traceback in the server's log."""
    import logging
    import socket
    import time

    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    app = create_app(Model(make_fake()))
    with running(app, free_port()) as port:
        logging.getLogger("uvicorn.error").addHandler(handler)  # uvicorn's loggers do not reach the root's
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST /v1/attribute HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                          b"boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n")
                time.sleep(0.3)
            time.sleep(0.5)
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT).status_code == 200
        finally:
            logging.getLogger("uvicorn.error").removeHandler(handler)
    assert not errors, [r.getMessage() for r in errors]


def test_serve_freezes_the_garbage_collector_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() exempts what is alive at start (model, torch, app) from the cyclic GC, whose
    full collections of those objects stalled the server for ~250 ms each (issue 17)."""
    import gc

    import uvicorn

    import osma.server

    seen: list[int] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.append(gc.get_freeze_count()))
    gc.unfreeze()
    try:
        osma.server.serve(Model(make_fake()), port=free_port())
    finally:
        gc.unfreeze()
    assert seen and seen[0] > 1000
