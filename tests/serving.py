"""Test helpers for the HTTP service: a real uvicorn server in a thread on a free loopback port."""
from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import uvicorn
from PIL import Image


def png_bytes(a: np.ndarray) -> bytes:
    """A uint8 image as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(app: Any, port: int, config: uvicorn.Config | None = None) -> Iterator[int]:  # noqa: ANN401
    """Serve ``app`` on ``port`` (with ``config`` when given) until the block ends; yields the port."""
    srv = uvicorn.Server(config or uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline and th.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        srv.should_exit = True
        th.join(10)
