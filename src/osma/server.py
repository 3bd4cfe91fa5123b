"""The HTTP service: FastAPI on uvicorn around one loaded :class:`~osma.attribution.Model`.

Endpoints: ``POST /v1/attribute`` (repeatable multipart field ``files``; query ``tau``, a
number or ``inf``/``-inf``, never NaN), ``GET /v1/sources``, ``GET /healthz``, OpenAPI docs
at ``/docs``. Errors: 400 malformed multipart body (no boundary, no closing boundary,
over 1000 parts), 408 request not received in time, 413 request or image too large,
415 not an image (not an allowed format, e.g. EPS whatever its name), 422 corrupt or
truncated image, no files, or a bad ``tau``; 503 too many open connections. The model is
loaded once and shared; every prediction runs in one thread, the :class:`Batcher`'s (torch
modules are not re-entrant across threads for in-place state such as BatchNorm buffers,
and one model batch at a time keeps memory bounded).

Micro-batching (issue 17; :func:`serve`, ``osma serve``): concurrent requests are predicted
together. A request decodes its images (below), turns each into its crop stack (the
model's ``crops`` network-sized crops, :mod:`osma.crops`; one crop, the evaluation patch,
by default) and hands them to the :class:`Batcher`, which collects waiting requests
up to ``max_batch`` images (``--max-batch``, default 64; an image counts once whatever its
number of crops, so a batch holds at most ``max_batch * crops`` crops) and embeds and
scores them as one batch, each image's crops aggregated by the model's ``--agg``; each
request gets its own rows, decided with its own ``tau`` (the same rows as alone, ``crops``
field included, up to the floating-point rounding of a batch in the network). The batcher waits
for more only while other requests are still decoding, and never longer than
``batch_window_ms`` (``--batch-window-ms``, default 5 ms) after the oldest waiting
request: a client alone is not delayed, and none by more than the window.
``--max-batch 1`` turns batching off. Requests run in threads, as many at once as ``max_connections``
(:func:`request_threads`; anyio's default is 40).

The request path is kept short because on a small machine it competes with the network
for the same cores (docs/speed.md measures it): the event loop only receives the body;
one worker thread per request parses the multipart body (python-multipart,
:func:`_multipart_files`, instead of Starlette's form parser on the event loop), decodes,
waits for its batch and renders the JSON answer (a ``JSONResponse``, not a dict for
FastAPI to validate and encode).

Limits against slow, oversized and concurrent clients (:func:`serve`, ``osma serve``):

* ``read_timeout`` (``--read-timeout``, default 30 s) bounds the time to *receive* a
  request, counted from its first byte (or from the connection's opening): the headers must
  be complete within ``read_timeout``, the body within ``read_timeout`` after the headers.
  Uploads must therefore arrive at ``max_upload_mb / read_timeout`` or faster (0.67 MB/s
  for the defaults). The time to compute the answer is not limited. uvicorn has no such
  timeout (``timeout_keep_alive`` only covers the idle time *between* requests and is
  reset by every byte received, and ``h11_max_incomplete_event_size`` bounds the header
  *size*, not its time), so it is done in two places:

  - headers: :class:`GuardedH11Protocol` (the server always runs uvicorn's h11
    implementation, never httptools), uvicorn's h11 protocol with a deadline armed when
    a connection opens or a new request's first byte arrives, disarmed once the request is
    received completely. A request whose headers are not complete in time is answered
    ``408`` (written directly, the connection then closed). After the headers the same
    deadline is re-armed at ``read_timeout + 2 s`` as a backstop for bodies that the
    application does not read (connection closed);
  - body: :class:`RequestGuard`, an ASGI middleware that wraps ``receive`` with
    :func:`asyncio.wait_for` against the request's deadline and answers ``408`` (with
    ``Connection: close``) when the body is not complete in time.

* ``max_connections`` (``--max-connections``, default 64) bounds the open connections: a
  connection opened beyond it is answered ``503`` and closed at once, and uvicorn's
  ``limit_concurrency`` is set to ``max_connections + 1`` so that requests whose client has
  gone away while their work still runs also count (beyond it: ``503``). With the read
  timeout, a slow client holds one of these slots for at most ``read_timeout`` (+2 s).
  Idle keep-alive connections are closed after ``min(5, read_timeout)`` s.

* ``max_upload_mb`` (``--max-upload-mb``, default 20): a request whose ``Content-Length``
  exceeds it (plus 64 KiB of multipart framing) is answered ``413`` from its headers;
  a body without ``Content-Length`` (chunked) is counted as it arrives in
  :class:`RequestGuard` and answered ``413`` (``Connection: close``) as soon as it
  exceeds the same limit, without reading the rest. Header blocks are bounded only by h11 (a 4 MB one gets 400; bench/fuzz.py found 100 KB ones accepted).

* ``max_concurrent_decodes`` (``--max-concurrent-decodes``, default 2) bounds how many
  requests decode at once (a semaphore; the others wait, holding only their received
  upload; a request gives its slot back while its group waits for a batch). Within a request, files are read, checked (header only) and decoded one
  at a time, and the decoded arrays are handed to the model in groups whenever they
  reach ``3 * max_pixels`` bytes (one largest image) or 64 images, so a request of many
  small-but-huge images never holds them all (results are the same up to floating-point
  rounding of the batch). Peak memory of the server, beyond the loaded model and one model
  batch (at most ``max_batch`` images, or one group, after the model's crop), is bounded by::

      (max_connections + 1) * U                              received uploads
      + max_connections * 128 KiB                            uvicorn's per-connection buffers
      + max_concurrent_decodes * (D(max_pixels) + 6 * max_pixels)    decoding
      + (max_connections + 1) * 64 * crops * 3 * crop**2     crops waiting for a batch

  where ``U = max_upload_mb`` MB (the body is received in memory, then turned into its
  parts chunk by chunk, each chunk dropped once parsed; each part is dropped once decoded;
  ``max_connections + 1`` requests can be in the application at once, counting those whose
  client has gone), ``D(p)`` is the peak memory of decoding one image of ``p`` pixels,
  output included (the per-image bound of :func:`osma.images.decode.load_image`), and
  ``6 * max_pixels`` bytes are the decoded arrays of one group (below ``3 * max_pixels``
  plus one image of at most ``3 * max_pixels``). Measured D for the worst case named in
  issue 12, a 16-bit RGB PNG of 4096 x 4096 (the default ``max_pixels``): 1.37 GB (86 bytes
  per pixel) with the decoder before the issue, 0.24 GB (15 bytes per pixel) with the
  bounded one (issue 12, item 2). For the defaults this gives 65 x 20 MB + 64 x 128 KiB + 2 x (D + 100 MB):
  about 1.3 GB for uploads (worst case) and 2 x 0.34 GB = 0.7 GB for decoding (2.9 GB
  with the old decoder), i.e. about 2 GB in all. Four 16-bit 4096 x 4096 uploads at
  once cost two decodes at a time, not four. The crops waiting for a batch are
  crop-sized (13 MB at crop 32, 200 MB at crop 128 for the defaults with one crop per
  image; ``crops`` times that with ``--crops``, 4 for a new model's default on large images); an attributor without ``crop_patches``
  (test doubles) keeps whole decoded groups instead.
"""
from __future__ import annotations

import asyncio
import collections
import io
import math
import threading
import time
import warnings
from typing import Any, Optional

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from osma import __version__
from osma.attribution import Model

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_MAX_CONCURRENT_DECODES = 2

#: multipart framing allowed on top of ``max_upload_mb`` before a request is refused
FRAMING_SLACK = 64 * 1024
#: the transport-level backstop fires this long after the application's body deadline
BACKSTOP_GRACE = 2.0
#: decoded arrays are handed to the model in groups of at most this many images
GROUP_IMAGES = 64
#: parts of a multipart request at most (Starlette's default for its own parser)
MAX_PARTS = 1000
#: OpenAPI description of ``POST /v1/attribute``'s body (the endpoint parses it itself)
ATTRIBUTE_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "Images (PNG, JPEG, ...); the field repeats, one image each."}}}}}}
#: how long the batcher waits for more requests after the first one of a batch (milliseconds)
DEFAULT_BATCH_WINDOW_MS = 5.0
#: images per model batch at most (a request's group is never split: a batch holds at least one)
DEFAULT_MAX_BATCH = 64


class _Job:
    """One request's group of prepared patches waiting for a batch."""

    __slots__ = ("patches", "tau", "arrived", "done", "result", "error")

    def __init__(self, patches: list[np.ndarray], tau: Optional[float]) -> None:
        self.patches = patches
        self.tau = tau
        self.arrived = time.monotonic()
        self.done = threading.Event()
        self.result: Optional[list[Any]] = None
        self.error: Optional[BaseException] = None


class Batcher:
    """Micro-batching of concurrent requests: one thread runs every prediction.

    Request threads decode their images (between :meth:`enter` and :meth:`leave`: "busy"),
    turn them into crop stacks (:meth:`osma.attribution.Model.prepare`, crop-sized)
    and :meth:`submit` them. The batching thread takes the oldest waiting group and adds
    later ones, whole, while the batch stays within ``max_batch`` images; it predicts the
    batch as soon as it is full, or no request is busy decoding (nothing more is on its
    way: a lone client is not delayed at all), or ``window`` seconds have passed since the
    oldest group arrived (no request waits longer than the window for company). The batch
    is predicted as one (:meth:`osma.attribution.Model.attribute_prepared`, each row with
    its own request's ``tau``); should that fail, each group is predicted alone, so a
    failure reaches only the request that caused it. ``max_batch=1`` is the unbatched
    server: one request's group per prediction.
    """

    def __init__(self, model: Model, window: float = DEFAULT_BATCH_WINDOW_MS / 1000,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if not (window >= 0 and math.isfinite(window)):
            raise ValueError(f"batch window must be a non-negative number of seconds, got {window}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.window = float(window)
        self.max_batch = int(max_batch)
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._busy = 0
        self._closed = False
        #: sizes (images) of the batches predicted so far, the last 1000 (for tests and benches)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self._thread = threading.Thread(target=self._run, name="osma-batcher", daemon=True)
        self._thread.start()

    def enter(self) -> None:
        """A request starts decoding (a group of its images will follow)."""
        with self._cond:
            self._busy += 1

    def leave(self) -> None:
        """A request stops decoding without submitting (it is done, or failed)."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def submit(self, patches: list[np.ndarray], tau: Optional[float], leave: bool = False) -> list[Any]:
        """Predict one group (blocks until its batch is done) and return its rows; re-raises
        its error. ``leave``: :meth:`leave` at the hand-over (atomically)."""
        job = _Job(patches, tau)
        with self._cond:
            if leave:
                self._busy -= 1
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._jobs.append(job)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the batching thread (groups already submitted are predicted first)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(10)

    def _take(self) -> Optional[list[_Job]]:
        """The next batch (None: closed and nothing left); called with the condition held."""
        while not self._jobs:
            if self._closed:
                return None
            self._cond.wait()
        deadline = self._jobs[0].arrived + self.window
        while True:
            batch: list[_Job] = []
            n = 0
            for job in self._jobs:
                if batch and n + len(job.patches) > self.max_batch:
                    break
                batch.append(job)
                n += len(job.patches)
            full = len(batch) < len(self._jobs) or n >= self.max_batch
            left = deadline - time.monotonic()
            if full or self._busy <= 0 or left <= 0 or self._closed:
                for _ in batch:
                    self._jobs.popleft()
                return batch
            self._cond.wait(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
            if batch is None:
                return
            self._predict(batch)

    def _predict(self, batch: list[_Job]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # uncalibrated: accept all (documented)
            try:
                rows = self.model.attribute_prepared([p for j in batch for p in j.patches],
                                                     [j.tau for j in batch for _ in j.patches])
                self.batch_sizes.append(len(rows))
                start = 0
                for j in batch:
                    j.result = rows[start:start + len(j.patches)]
                    start += len(j.patches)
            except Exception:  # noqa: BLE001 - predict each group alone: only the culprit fails
                for j in batch:
                    try:
                        j.result = self.model.attribute_prepared(j.patches, [j.tau] * len(j.patches))
                        self.batch_sizes.append(len(j.patches))
                    except Exception as exc:  # noqa: BLE001 - handed to the request's thread
                        j.error = exc
        for j in batch:
            j.done.set()


def _multipart_files(content_type: str, chunks: list[bytes]) -> list[tuple[str, bytearray]]:
    """The ``files`` parts of a multipart/form-data body as ``(filename, data)``, in order.

    The body's chunks are parsed with python-multipart in the request's thread (not on the
    event loop, where Starlette's form parser would run) and dropped as they are fed, so the
    request holds its upload about once. Other fields are skipped. ``400`` for a malformed
    body (also one without its closing boundary) or more than :data:`MAX_PARTS` parts,
    ``422`` when there are no files.
    """
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    no_files = HTTPException(422, "no files: send images as the multipart field 'files'")
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise no_files
    if not params.get(b"boundary"):
        raise HTTPException(400, "malformed multipart body: no boundary in its Content-Type")
    files: list[tuple[str, bytearray]] = []
    part: dict[str, Any] = {}
    parts = 0
    header = [b"", b""]

    def on_part_begin() -> None:
        nonlocal part, parts
        parts += 1
        if parts > MAX_PARTS:
            raise HTTPException(400, f"malformed multipart body: more than {MAX_PARTS} parts")
        part = {"disposition": b"", "data": None}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        if header[0].lower() == b"content-disposition":
            part["disposition"] = header[1]
        header[0] = header[1] = b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(part["disposition"])
        if opts.get(b"name") == b"files":  # a file (with or without a filename); other fields are skipped
            part["data"] = bytearray()
            files.append((opts.get(b"filename", b"").decode("utf-8", "replace") or "upload", part["data"]))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["data"] is not None:
            part["data"] += data[start:end]

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    chunks.reverse()
    try:
        while chunks:
            parser.write(chunks.pop())
        parser.finalize()
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
        raise HTTPException(400, f"malformed multipart body ({exc})") from None
    if parser.state != MultipartState.END:
        raise HTTPException(400, "malformed multipart body: it ends before its closing boundary")
    if not files:
        raise no_files
    return files


def _decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode one uploaded file (the server calls this, one request's files one at a time)."""
    from osma.images.decode import load_image

    return load_image(data, max_pixels=max_pixels)


def _check_image(name: str, data: bytes, max_pixels: int) -> None:
    """Raise 415 for non-images and disallowed formats, 413 for images over ``max_pixels`` (header only)."""
    from PIL import Image, UnidentifiedImageError

    from osma.images.decode import ALLOWED_FORMATS

    Image.init()  # register every plugin so that ``formats=`` can name them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"{name}: {exc}") from None
    except UnidentifiedImageError:
        raise HTTPException(
            415, f"{name}: not a supported image file (allowed formats: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a header Pillow recognises but cannot parse
        raise HTTPException(422, f"{name}: corrupt image ({exc})") from None
    if w * h > max_pixels:
        raise HTTPException(413, f"{name}: image has {w}x{h} pixels, over the limit of {max_pixels}")


def _check_tau(tau: Optional[float]) -> None:
    if tau is not None and math.isnan(tau):
        raise HTTPException(422, "tau must be a number, inf or -inf, not NaN")


# --- request guard (ASGI middleware): body deadline and byte count -----------------------
class _Refused(HTTPException):
    """408/413 raised from inside ``receive``: FastAPI re-raises HTTPExceptions from body parsing."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail, headers={"Connection": "close"})


class RequestGuard:
    """ASGI middleware: refuse bodies over ``max_bytes`` (header or count) and bodies not received in time."""

    def __init__(self, app: Any, max_bytes: int, read_timeout: float, limit_text: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.limit_text = limit_text

    async def _answer(self, send: Any, exc: HTTPException) -> None:
        import json

        body = json.dumps({"detail": exc.detail}).encode()
        await send({"type": "http.response.start", "status": exc.status_code, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + FRAMING_SLACK
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._answer(send, _Refused(
                413, f"request of {int(length)} bytes is over the limit of {self.limit_text} MB"))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        received = 0
        complete = False
        started = False

        async def guarded_receive() -> dict:
            nonlocal received, complete
            if complete:  # body done: waiting for a disconnect is not bounded here
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise _Refused(408, f"request body not received within {self.read_timeout:g} s") from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise _Refused(413, f"request body over the limit of {self.limit_text} MB "
                                        f"(stopped reading at {received} bytes)")
                complete = not msg.get("more_body", False)
            else:
                complete = True
            return msg

        async def tracking_send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except _Refused as exc:  # raised where nothing turned it into a response
            if started:
                raise
            await self._answer(send, exc)


# --- connection guard (uvicorn protocol): header deadline, connection count --------------
def _raw_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-receipt deadline and a bound on open connections.

    Configure with :func:`guarded_protocol` (class attributes ``read_timeout`` and
    ``max_connections``).
    """

    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: Optional[asyncio.TimerHandle] = None
        self._in_body = False

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.connections.discard(self)
            transport.write(_raw_response(503, "Service Unavailable",
                                          f"too many open connections (limit {self.max_connections})"))
            transport.close()
            return
        self._arm(self.read_timeout)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        import h11

        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._in_body = False
            self._arm(self.read_timeout)  # a new request on a kept-alive connection
        super().data_received(data)
        self._update()

    def _update(self) -> None:
        import h11

        state = self.conn.their_state
        if state is h11.SEND_BODY and not self._in_body:
            self._in_body = True  # headers complete: the middleware bounds the body; this is the backstop
            self._arm(self.read_timeout + BACKSTOP_GRACE)
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # request received (DONE), or the connection is closing
            self._in_body = False

    def on_response_complete(self) -> None:  # noqa: D102
        super().on_response_complete()
        self._update()

    def connection_lost(self, exc: Optional[Exception]) -> None:  # noqa: D102
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        import h11

        self._deadline = None
        if self.transport.is_closing():
            return
        headers_done = self.conn.their_state is not h11.IDLE
        if not headers_done or (self.cycle is not None and not self.cycle.response_started):
            what = "request body" if headers_done else "request headers"
            self.transport.write(_raw_response(408, "Request Timeout",
                                               f"{what} not received within {self.read_timeout:g} s"))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's later send() is dropped
        self.transport.close()


def guarded_protocol(read_timeout: float = DEFAULT_READ_TIMEOUT,
                     max_connections: int = DEFAULT_MAX_CONNECTIONS) -> type:
    """A :class:`GuardedH11Protocol` subclass with these limits (for ``uvicorn.Config(http=...)``)."""
    if not (read_timeout > 0 and math.isfinite(read_timeout)):
        raise ValueError(f"read_timeout must be a positive number of seconds, got {read_timeout}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    return type("OsmaH11Protocol", (GuardedH11Protocol,),
                {"read_timeout": float(read_timeout), "max_connections": int(max_connections)})


def server_config(app: Any, host: str = "127.0.0.1", port: int = 8000,
                  read_timeout: float = DEFAULT_READ_TIMEOUT,
                  max_connections: int = DEFAULT_MAX_CONNECTIONS, log_level: str = "info") -> Any:
    """The ``uvicorn.Config`` that :func:`serve` runs: guarded protocol, connection and idle limits."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        http=guarded_protocol(read_timeout, max_connections),
        limit_concurrency=max_connections + 1,
        timeout_keep_alive=min(5.0, read_timeout),  # type: ignore[arg-type] - used with call_later
    )


def create_app(
    model: Model,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_concurrent_decodes: int = DEFAULT_MAX_CONCURRENT_DECODES,
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> FastAPI:
    """Build the FastAPI application serving ``model`` (limits and batching: see the module
    docstring). The application's :class:`Batcher` is ``app.state.batcher``."""
    import osma.images  # noqa: F401 - import (torch) now, not in the first request

    if max_concurrent_decodes < 1:
        raise ValueError(f"max_concurrent_decodes must be >= 1, got {max_concurrent_decodes}")
    if not (read_timeout > 0 and math.isfinite(read_timeout)):
        raise ValueError(f"read_timeout must be a positive number of seconds, got {read_timeout}")
    app = FastAPI(
        title="osma",
        version=__version__,
        description="Open-set model attribution: which model made this image?",
    )
    batcher = Batcher(model, window=batch_window_ms / 1000, max_batch=max_batch)
    slots = threading.BoundedSemaphore(max_concurrent_decodes)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    group_bytes = 3 * max_pixels
    app.add_middleware(RequestGuard, max_bytes=max_bytes, read_timeout=read_timeout, limit_text=f"{max_upload_mb:g}")
    app.state.batcher = batcher
    app.router.on_shutdown.append(batcher.close)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness: the model is loaded."""
        return {"status": "ok", "method": model.method, "sources": len(model.sources)}

    @app.get("/v1/sources")
    def sources() -> dict[str, Any]:
        """Known sources (trained and enrolled), the method and the threshold."""
        return {"method": model.method, "tau": model.tau, "precision": model.precision,
                "sources": model.source_table()}

    @app.post("/v1/attribute", response_class=JSONResponse, openapi_extra={"requestBody": ATTRIBUTE_BODY})
    async def attribute(
        request: Request,
        tau: Optional[float] = Query(  # noqa: B008
            None, description="Threshold (a number, inf or -inf); default: the model's calibrated tau."),
    ) -> JSONResponse:
        """Attribute one or more uploaded images (multipart field ``files``, repeatable)."""
        _check_tau(tau)
        # the body arrives on the event loop (RequestGuard bounds its size and time); all
        # else, parsing included, runs in one worker thread per request
        try:
            chunks = [chunk async for chunk in request.stream()]
        except ClientDisconnect:  # nobody reads the answer; a 400 as FastAPI's body parsing gives
            raise HTTPException(400, "the client disconnected before its body was complete") from None
        ctype = request.headers.get("content-type", "")
        return await anyio.to_thread.run_sync(predict, ctype, chunks, tau)

    def predict(ctype: str, chunks: list[bytes], tau: Optional[float]) -> JSONResponse:
        files = _multipart_files(ctype, chunks)
        results: list[Any] = []
        names: list[str] = []
        group: list[np.ndarray] = []
        held = 0
        decoding = False  # holds a decode slot and counts as "busy" for the batcher

        def start_decoding() -> None:
            nonlocal decoding
            slots.acquire()  # at most max_concurrent_decodes requests decode at once
            batcher.enter()  # "busy": the batcher may wait (at most its window) for this request's group
            decoding = True

        def flush(last: bool) -> None:
            # give the decode slot back while the group waits for its batch; after the last
            # group the request is done decoding and never queues for a slot again
            nonlocal group, held, decoding
            patches, group, held = group, [], 0
            slots.release()
            decoding = False
            results.extend(batcher.submit(patches, tau, leave=True))
            if not last:
                start_decoding()

        def decode_all() -> None:
            nonlocal held
            total = 0
            for i, (name, data) in enumerate(files):
                files[i] = (name, bytearray())  # the request holds each upload until it is decoded, not longer
                total += len(data)
                if total > max_bytes:
                    raise HTTPException(413, f"upload is over the limit of {max_upload_mb:g} MB (at {name})")
                if not data:
                    raise HTTPException(422, f"{name}: empty file")
                _check_image(name, data, max_pixels)
                try:
                    arr = _decode_upload(data, max_pixels)
                    held += arr.nbytes
                    arr = model.prepare(arr)  # the image's crops from here on
                except Exception as exc:  # noqa: BLE001 - any decoding failure of an upload is a 422
                    raise HTTPException(422, f"{name}: corrupt image ({exc})") from None
                del data
                names.append(name)
                group.append(arr)
                last = i == len(files) - 1
                if last or held >= group_bytes or len(group) >= GROUP_IMAGES:
                    flush(last)

        start_decoding()
        try:
            decode_all()
        finally:
            if decoding:  # failed while decoding (a failed submit has already left)
                batcher.leave()
                slots.release()
        out = []
        for name, r in zip(names, results):
            r.path = name
            out.append(r.to_dict())
        return JSONResponse({"results": out})  # rendered here, in the worker thread

    return app


def serve(
    model: Model,
    host: str = "127.0.0.1",
    port: int = 8000,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    **limits: Any,
) -> None:
    """Run the service with uvicorn (blocking). ``limits`` go to :func:`create_app`."""
    import uvicorn

    app = create_app(model, read_timeout=read_timeout, **limits)
    request_threads(app, max_connections)
    freeze_gc()
    uvicorn.Server(server_config(app, host, port, read_timeout, max_connections)).run()


def freeze_gc() -> None:
    """Collect once, then exempt every object alive now (the model, torch, numpy, the app)
    from Python's cyclic garbage collector (:func:`gc.freeze`). A full collection otherwise
    walks those ~237,000 objects: on a 2-core machine 240-290 ms each, every thread stopped
    (the batcher's too), and p99 462-559 ms at 50 clients against 270-338 frozen
    (bench/server_gc.py, docs/speed.md). What requests allocate is still collected."""
    import gc

    gc.collect()
    gc.freeze()


def request_threads(app: FastAPI, n: int) -> None:
    """At start-up, let ``n`` requests run in threads at once (anyio's default: 40): with
    ``max_connections`` of them, no admitted request waits for a thread before it can
    queue for a decode slot and join a batch (docs/speed.md)."""
    import anyio.to_thread

    async def set_tokens() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(int(n), 1)

    app.router.on_startup.append(set_tokens)
