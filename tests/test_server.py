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
