"""The HTTP service: FastAPI on uvicorn around one loaded :class:`~osma.attribution.Model`.

Endpoints: ``POST /v1/attribute`` (repeatable multipart field ``files``), ``GET /v1/sources``,
``GET /healthz``, OpenAPI docs at ``/docs``. Errors: 413 request or image too large,
415 not an image, 422 corrupt image or no files. The model is loaded once and shared;
predictions run under a lock (torch modules are not re-entrant across threads for
in-place state such as BatchNorm buffers, and one model at a time keeps memory bounded).
"""
from __future__ import annotations

import io
import threading
import warnings
from typing import Any, Optional

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from osma import __version__
from osma.attribution import Model

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 4096 * 4096


def _check_image(name: str, data: bytes, max_pixels: int) -> None:
    """Raise 415 for non-images and 413 for images over ``max_pixels`` (header only, no decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"{name}: {exc}") from None
    except UnidentifiedImageError:
        raise HTTPException(415, f"{name}: not a supported image file") from None
    except Exception as exc:  # noqa: BLE001 - a header Pillow recognises but cannot parse
        raise HTTPException(422, f"{name}: corrupt image ({exc})") from None
    if w * h > max_pixels:
        raise HTTPException(413, f"{name}: image has {w}x{h} pixels, over the limit of {max_pixels}")


def create_app(
    model: Model, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_pixels: int = DEFAULT_MAX_PIXELS
) -> FastAPI:
    """Build the FastAPI application serving ``model``."""
    import osma.images  # noqa: F401 - import (torch) now, not in the first request
    from osma.attribution import decode

    app = FastAPI(
        title="osma",
        version=__version__,
        description="Open-set model attribution: which model made this image?",
    )
    lock = threading.Lock()
    max_bytes = int(max_upload_mb * 1024 * 1024)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # noqa: ANN001, ANN202
        # refuse oversized bodies from their header, before the multipart form is parsed
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes + 64 * 1024:  # slack for multipart framing
            return JSONResponse(
                {"detail": f"request of {int(length)} bytes is over the limit of {max_upload_mb} MB"}, status_code=413
            )
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness: the model is loaded."""
        return {"status": "ok", "method": model.method, "sources": len(model.sources)}

    @app.get("/v1/sources")
    def sources() -> dict[str, Any]:
        """Known sources (trained and enrolled), the method and the threshold."""
        return {"method": model.method, "tau": model.tau, "sources": model.source_table()}

    @app.post("/v1/attribute")
    def attribute(
        files: list[UploadFile] = File(...),  # noqa: B008
        tau: Optional[float] = Query(None, description="Threshold; default: the model's calibrated tau."),  # noqa: B008
    ) -> dict[str, Any]:
        """Attribute one or more uploaded images (multipart field ``files``, repeatable)."""
        if not files:
            raise HTTPException(422, "no files: send images as the multipart field 'files'")
        total = 0
        arrays = []
        names = []
        for f in files:
            name = f.filename or "upload"
            data = f.file.read(max_bytes + 1 - total)
            total += len(data)
            if total > max_bytes:
                raise HTTPException(413, f"upload is over the limit of {max_upload_mb} MB (at {name})")
            if not data:
                raise HTTPException(422, f"{name}: empty file")
            _check_image(name, data, max_pixels)
            try:
                arrays.append(decode(data))
            except Exception as exc:  # noqa: BLE001 - any decoding failure of an upload is a 422
                raise HTTPException(422, f"{name}: corrupt image ({exc})") from None
            names.append(name)
        with lock:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # uncalibrated: accept all (documented)
                results = model.attribute(arrays, tau=tau)
        out = []
        for name, r in zip(names, results):
            r.path = name
            out.append(r.to_dict())
        return {"results": out}

    return app


def serve(model: Model, host: str = "127.0.0.1", port: int = 8000, **limits: Any) -> None:
    """Run the service with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(model, **limits), host=host, port=port, log_level="info")
