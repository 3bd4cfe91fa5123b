#!/usr/bin/env python
"""Fuzz suite for issue 12: hostile images, benchmark lists, model bundles and HTTP clients.

Every corpus is generated here, in a temporary directory, from ``--seed`` (deterministic).
Per area one table row:

* ``tried``     cases run;
* ``handled``   refused with a clear message (an ``ImageError``/``ValueError`` naming the file,
  a ``file:line`` problem, ``error: ...`` naming ``model.json``/``model.safetensors``, a 4xx);
* ``accepted``  decoded / passed / loaded where that is allowed (valid inputs, a truncation
  that still holds every pixel, a harmless byte flip, a 200 for a valid request);
* ``silent``    accepted where it must be refused (a half-decoded image, a bad list that
  passes, a corrupt bundle that loads with other predictions, a 200 for ``tau=nan``, a
  chunked body read to its end);
* ``false_ref`` a valid input refused;
* ``unclear``   refused, but the message does not name the file (or the CLI did not answer
  with one ``error:`` line / a documented exit status);
* ``crashed``   any other exception, a traceback, a hang (per-case timeout), a dead worker,
  a 5xx or no answer;
* ``lost``/``dup`` (images) corpus entries without a row in ``osma attribute --out`` / rows
  written twice (two runs; the second must add nothing);
* ``held``      (http) connections still open after the read timeout + 5 s;
* ``peak_MB``   peak memory of the worst single image (images: each bomb-like case alone in
  a fresh process, the peak RSS the decode added: ``VmHWM`` after minus ``VmRSS`` before,
  as ``ru_maxrss`` is inherited from the parent across fork+exec on Linux; any other case
  whose decode added more than 64 MB is measured again that way; http: the server's VmHWM).

Cases run in worker processes (``--jobs``, default 2) with a per-case timeout and a 4 GiB
address-space cap, so a FIFO that blocks or a bundle that allocates 100 GB cannot hang or
take down the machine: a worker that times out or dies is killed and replaced.

    python bench/fuzz.py [--areas images,lists,bundles,http] [--quick] [--seed 0] [--jobs 2] [--keep DIR]

Exit status 0 when nothing failed, 1 otherwise. ``tests/test_fuzz.py`` runs a quick subset.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import hashlib
import io
import json
import os
import random
import re
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
AREAS = ("images", "lists", "bundles", "http")
GIB = 1 << 30
MEM_CAP = 4 * GIB
TINY = {"crop": 24, "width": 0.125, "embed_dim": 16, "per_class": 4, "epochs": 1, "batches_per_epoch": 2,
        "workers": 0, "device": "cpu", "progress": False}


def _osma_cli() -> str:
    for cand in (REPO / ".venv" / "bin" / "osma", Path(sys.executable).parent / "osma"):
        if cand.exists():
            return str(cand)
    found = shutil.which("osma")
    if not found:
        raise SystemExit("fuzz: the osma command is not installed (make install)")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(COLUMNS="400", PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# =============================================================================== bookkeeping
VERDICTS = ("accepted", "handled", "false_ref", "unclear", "silent", "held", "crashed")  # increasing severity
FAILING = {"false_ref", "unclear", "silent", "held", "crashed"}


@dataclass
class Area:
    """One row of the table plus the failing cases."""

    name: str
    tried: int = 0
    counts: Counter = field(default_factory=Counter)
    lost: int | None = None
    dup: int | None = None
    held: int | None = None
    peak_mb: float | None = None
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (verdict, case, detail)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log: list[tuple[str, str, str]] = field(default_factory=list)  # every case: (verdict, case, detail)

    def record(self, case: str, verdict: str, detail: str = "") -> None:
        assert verdict in VERDICTS, verdict
        self.tried += 1
        self.counts[verdict] += 1
        self.log.append((verdict, case, detail))
        if verdict in FAILING:
            self.failures.append((verdict, case, detail))

    def extra_failure(self, kind: str, case: str, detail: str) -> None:
        """A failure that is not a case of its own (lost entries, held connections, ...)."""
        self.failures.append((kind, case, detail))

    @property
    def n_failed(self) -> int:
        """Failing cases plus failures outside the cases (lost entries, held connections, ...)."""
        return len(self.failures)

    @property
    def crashed(self) -> int:
        """Crashed cases plus crashes outside the cases (a whole osma attribute run, the server)."""
        return sum(1 for k, _, _ in self.failures if k == "crashed")


def worst(*verdicts: tuple[str, str]) -> tuple[str, str]:
    """The most severe (verdict, detail)."""
    return max(verdicts, key=lambda v: VERDICTS.index(v[0]))


_TMP: list[str] = []  # the corpus directory, shown as $TMP in messages


def short(text: Any, limit: int = 160) -> str:
    """One printable line: newlines and undecodable bytes escaped, the corpus directory as $TMP."""
    s = str(text)
    for t in _TMP:
        s = s.replace(t, "$TMP")
    s = s.replace("\n", "\\n").replace("\r", "\\r").encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def show_name(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return ascii(name)[1:-1] if not name.isprintable() or not name.isascii() else name


# =============================================================================== worker pool
def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _proc_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field_name}:\s+(\d+) kB", fh.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _mem_before() -> tuple[int, str]:
    """(KB, how) to subtract from :func:`_mem_after` to get the peak memory a job added.

    ru_maxrss is not used when /proc is there: on Linux a child inherits its parent's RSS
    at fork into ru_maxrss across exec, so a fresh worker of a big parent would hide a peak.
    """
    if _reset_peak():
        rss = _proc_kb("VmRSS")
        if rss is not None:
            return rss, "VmHWM"
    hwm = _proc_kb("VmHWM")
    return (hwm, "VmHWM") if hwm is not None else (_maxrss_kb(), "ru_maxrss")


def _mem_after(how: str) -> int:
    return (_proc_kb("VmHWM") or 0) if how == "VmHWM" else _maxrss_kb()


def _worker_main(kind: str, mem_cap: int) -> None:
    """``fuzz.py --worker KIND``: read JSON jobs from stdin, answer one JSON line per job."""
    if mem_cap:
        resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # stray prints go to the log, not into the protocol
    handler = {"image": _w_image, "lists": _w_lists, "bundle": _w_bundle}[kind]()
    out.write(json.dumps({"ready": True, "rss": _maxrss_kb()}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        ru0 = _maxrss_kb()
        rss0, how = _mem_before()
        t0 = time.perf_counter()
        try:
            res = handler(job)
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the main process
            res = {"status": "exception", "type": type(exc).__name__,
                   "mro": [c.__name__ for c in type(exc).__mro__], "msg": str(exc)[:4000],
                   "tb": traceback.format_exc()[-2000:]}
        res.update(id=job["id"], rss0=rss0, rss1=_mem_after(how), mem=how, ru_maxrss0=ru0, ru_maxrss1=_maxrss_kb(),
                   secs=time.perf_counter() - t0)
        out.write(json.dumps(res) + "\n")


def _w_image() -> Callable[[dict], dict]:
    import numpy as np  # noqa: F401 - imported before the first case (warm-up)
    from PIL import Image

    from osma.images import load_image

    Image.init()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    load_image(buf.getvalue())  # warm up: plugins, numpy

    def run(job: dict) -> dict:
        arr = load_image(os.fsdecode(bytes.fromhex(job["path"])))
        return {"status": "ok", "shape": list(arr.shape), "dtype": str(arr.dtype),
                "sha1": hashlib.sha1(arr.tobytes()).hexdigest()}
    return run


def _w_lists() -> Callable[[dict], dict]:
    from osma.data import check

    def run(job: dict) -> dict:
        rep = check(job["yaml"], check_images=False)
        return {"status": "report", "ok": rep.ok, "problems": [[p.kind, p.message[:2000]] for p in rep.all_problems]}
    return run


def _w_bundle() -> Callable[[dict], dict]:
    import numpy as np
    import torch

    from osma.methods import load_attributor

    torch.set_num_threads(1)
    batch = _fixed_batch()

    def run(job: dict) -> dict:
        att = load_attributor(job["dir"], device="cpu")
        classes = list(att.classes)
        with torch.no_grad():
            p = att.predict_arrays(batch)
        return {"status": "ok", "classes": [str(c) for c in classes], "tau": _jsonable(getattr(att, "tau", None)),
                "pred": np.asarray(p.pred).tolist(), "score": np.asarray(p.score, np.float64).tolist(),
                "class_scores": np.asarray(p.class_scores, np.float64).tolist()}
    return run


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except (TypeError, ValueError):
        return repr(x)


def _fixed_batch() -> list:
    import numpy as np
    return [np.random.default_rng(100 + i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]


class _Worker:
    def __init__(self, pool: "Pool") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", pool.kind, "--mem-cap", str(pool.mem_cap)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=pool.log, env=_env(), cwd=pool.cwd)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        self.ready = False
        self.rss = 0
        self.job: dict | None = None
        self.t0 = time.monotonic()
        self.done = 0

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def read_lines(self) -> list[dict] | None:
        """Complete lines now available; None at end of file (the worker died)."""
        try:
            data = os.read(self.fileno(), 1 << 20)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(ln) for ln in lines if ln.strip()]

    def send(self, job: dict) -> bool:
        self.job, self.t0 = job, time.monotonic()
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def kill(self) -> int | None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        with contextlib.suppress(Exception):
            self.proc.stdout.close()
        return rc


class Pool:
    """Worker processes (``fuzz.py --worker KIND``) fed one job at a time, with a per-job
    timeout, a memory cap, and replacement of workers that hang or die. ``one_shot``: a
    fresh worker for every job (clean ``ru_maxrss`` per job)."""

    def __init__(self, kind: str, tmp: Path, *, n: int = 2, timeout: float = 20.0, mem_cap: int = MEM_CAP,
                 one_shot: bool = False, startup: float = 180.0) -> None:
        self.kind, self.n, self.timeout, self.mem_cap, self.one_shot = kind, n, timeout, mem_cap, one_shot
        self.startup = startup
        self.cwd = str(tmp)
        self.log = open(tmp / f"worker-{kind}.log", "ab")  # noqa: SIM115 - closed in run()
        self.spawn_failures = 0

    def run(self, jobs: list[dict]) -> dict[int, dict]:
        pending = deque(jobs)
        results: dict[int, dict] = {}
        workers: list[_Worker] = []
        try:
            while pending or any(w.job is not None for w in workers):
                busy = sum(w.job is not None for w in workers)
                while len(workers) < min(self.n, busy + len(pending)):
                    workers.append(_Worker(self))
                for w in workers:
                    if w.ready and w.job is None and pending:
                        job = pending.popleft()
                        if not w.send(job):  # died meanwhile: seen as EOF below, the job goes back
                            pending.appendleft(job)
                            w.job = None
                now = time.monotonic()
                deadlines = [w.t0 + (self.timeout if w.ready else self.startup) for w in workers
                             if w.job is not None or not w.ready]
                wait = max(0.01, min(deadlines) - now) if deadlines else 0.2
                readable, _, _ = select.select(workers, [], [], min(wait, 1.0))
                gone: list[_Worker] = []
                for w in workers:
                    lines = w.read_lines() if w in readable else []
                    if lines is None:  # EOF: the worker died
                        rc = w.kill()
                        if w.job is not None:
                            results[w.job["id"]] = {"status": "dead", "rc": rc, "id": w.job["id"]}
                        elif not w.ready:
                            self._spawn_failed(rc)
                        gone.append(w)
                        continue
                    for msg in lines:
                        if msg.get("ready"):
                            w.ready, w.rss, w.t0 = True, msg.get("rss", 0), time.monotonic()
                        elif w.job is not None and msg.get("id") == w.job["id"]:
                            results[msg["id"]] = msg
                            w.job = None
                            w.done += 1
                    if self.one_shot and w.done:
                        w.kill()
                        gone.append(w)
                now = time.monotonic()
                for w in workers:
                    if w in gone:
                        continue
                    if w.job is not None and now - w.t0 > self.timeout:
                        w.kill()
                        results[w.job["id"]] = {"status": "timeout", "secs": now - w.t0, "id": w.job["id"]}
                        gone.append(w)
                    elif not w.ready and now - w.t0 > self.startup:
                        self._spawn_failed(w.kill())
                        gone.append(w)
                workers = [w for w in workers if w not in gone]
        finally:
            for w in workers:
                with contextlib.suppress(Exception):
                    w.proc.stdin.close()
                try:
                    w.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    w.kill()
                with contextlib.suppress(Exception):
                    w.proc.stdout.close()
            self.log.close()
        return results

    def _spawn_failed(self, rc: int | None) -> None:
        self.spawn_failures += 1
        if self.spawn_failures > 3:
            raise RuntimeError(f"fuzz: {self.kind} workers do not start (rc {rc}); see worker-{self.kind}.log")


def run_cmd(args: list[str], timeout: float, cwd: str | None = None) -> tuple[int | None, str, str, float]:
    """(exit status or None on timeout, stdout, stderr, seconds); the process group is killed on timeout."""
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=cwd,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        rc = None
    return (rc, out.decode("utf-8", "surrogateescape"), err.decode("utf-8", "surrogateescape"),
            time.monotonic() - t0)


def cli_many(calls: list[list[str]], timeout: float, jobs: int) -> list[tuple[int | None, str, str, float]]:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        return list(ex.map(lambda a: run_cmd(a, timeout), calls))


def exc_refused(res: dict, kinds: tuple[str, ...] = ("ValueError",)) -> bool:
    return res.get("status") == "exception" and any(k in res.get("mro", []) for k in kinds)


def crash_detail(res: dict) -> str:
    st = res.get("status")
    if st == "timeout":
        return f"hang: no answer in {res.get('secs', 0):.0f} s (worker killed)"
    if st == "dead":
        return f"worker died (exit status {res.get('rc')})"
    if st == "exception":
        return f"{res.get('type')}: {short(res.get('msg'))}"
    return short(res)


# =============================================================================== the tiny model
def make_toy(root: Path) -> Path:
    """data_list.yaml of tests/conftest.py's toy benchmark (small)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_osma_test_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return Path(mod.make_toy_benchmark(root, n_train=8, n_val=4, n_test=4, size=32))


def train_bundle(tmp: Path) -> Path:
    """A tiny trained bundle (seconds), trained in a subprocess (keeps torch out of this one)."""
    out = tmp / "model"
    if (out / "model.json").exists():
        return out
    code = ("import sys, json; sys.path.insert(0, %r); import fuzz; from pathlib import Path; "
            "from osma import methods; dl = fuzz.make_toy(Path(%r)); "
            "methods.train(dl, 'split1', 'softmax', %r, seed=0, **fuzz.TINY)") % (
        str(Path(__file__).resolve().parent), str(tmp / "toy"), str(out))
    rc, so, se, _ = run_cmd([sys.executable, "-c", code], timeout=600)
    if rc != 0:
        raise RuntimeError(f"fuzz: training the tiny bundle failed (exit {rc}):\n{se[-3000:]}")
    for extra in ("checkpoints", "train_log.jsonl"):
        p = out / extra
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return out


# =============================================================================== images: corpus
def _chunk(typ: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)


def png_raw(w: int, h: int, depth: int, ctype: int, rows: Iterable[bytes], level: int = 6) -> bytes:
    """A PNG from raw scanlines (filter byte 0 is added), any bit depth and colour type."""
    comp = zlib.compressobj(level)
    parts = []
    for r in rows:
        parts.append(comp.compress(b"\0" + r))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_zero(w: int, h: int, depth: int, ctype: int) -> bytes:
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    row = bytes(w * channels * depth // 8)
    return png_raw(w, h, depth, ctype, (row for _ in range(h)), level=9)


def _content(w: int, h: int, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (3, 3, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), np.float32)
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pil(img, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def valid_images(seed: int) -> list[tuple[str, str, bytes]]:
    """(variant, extension, bytes): small valid images of every allowed format."""
    import numpy as np
    from PIL import Image

    from osma.images.decode import ALLOWED_FORMATS

    w, h = 45, 37
    arr = _content(w, h, seed)
    rgb = Image.fromarray(arr)
    rgba = Image.fromarray(np.dstack([arr, (arr[..., 0] // 2 + 64)]).astype(np.uint8))
    gray = rgb.convert("L")
    rng = np.random.default_rng(seed + 1)
    a16 = (rng.integers(0, 65536, (h, w, 4))).astype(">u2")
    out: list[tuple[str, str, bytes]] = []
    makers: dict[str, list[tuple[str, str, Callable[[], bytes]]]] = {
        "PNG": [
            ("png-rgb", "png", lambda: _pil(rgb, "PNG")),
            ("png-rgba", "png", lambda: _pil(rgba, "PNG")),
            ("png-gray", "png", lambda: _pil(gray, "PNG")),
            ("png-palette", "png", lambda: _pil(rgb.convert("P", palette=Image.ADAPTIVE), "PNG")),
            ("png-1bit", "png", lambda: _pil(gray.convert("1"), "PNG")),
            ("png-gray16", "png", lambda: png_raw(w, h, 16, 0, (a16[y, :, 0].tobytes() for y in range(h)))),
            ("png-rgb16", "png", lambda: png_raw(w, h, 16, 2, (a16[y, :, :3].tobytes() for y in range(h)))),
            ("png-rgba16", "png", lambda: png_raw(w, h, 16, 6, (a16[y].tobytes() for y in range(h)))),
            ("png-la16", "png", lambda: png_raw(w, h, 16, 4, (a16[y, :, :2].tobytes() for y in range(h)))),
        ],
        "JPEG": [
            ("jpeg-baseline", "jpg", lambda: _pil(rgb, "JPEG", quality=90)),
            ("jpeg-progressive", "jpg", lambda: _pil(rgb, "JPEG", quality=85, progressive=True)),
            ("jpeg-gray", "jpeg", lambda: _pil(gray, "JPEG", quality=90)),
            ("jpeg-444", "jpg", lambda: _pil(rgb, "JPEG", quality=95, subsampling=0)),
            ("jpeg-restart", "jpg", lambda: _pil(rgb, "JPEG", quality=90, restart_marker_blocks=2)),
            ("jpeg-cmyk", "jpg", lambda: _pil(rgb.convert("CMYK"), "JPEG", quality=90)),
        ],
        "WEBP": [
            ("webp-lossy", "webp", lambda: _pil(rgb, "WEBP", quality=80)),
            ("webp-lossless", "webp", lambda: _pil(rgba, "WEBP", lossless=True)),
        ],
        "GIF": [
            ("gif", "gif", lambda: _pil(rgb.convert("P", palette=Image.ADAPTIVE), "GIF")),
            ("gif-animated", "gif", lambda: _pil(rgb.convert("P", palette=Image.ADAPTIVE), "GIF", save_all=True,
                                                   append_images=[gray.convert("P")], duration=50)),
        ],
        "BMP": [
            ("bmp-rgb", "bmp", lambda: _pil(rgb, "BMP")),
            ("bmp-palette", "bmp", lambda: _pil(rgb.convert("P", palette=Image.ADAPTIVE), "BMP")),
        ],
        "TIFF": [
            ("tiff-raw", "tif", lambda: _pil(rgb, "TIFF")),
            ("tiff-lzw", "tiff", lambda: _pil(rgb, "TIFF", compression="tiff_lzw")),
            ("tiff-deflate", "tif", lambda: _pil(rgba, "TIFF", compression="tiff_adobe_deflate")),
            ("tiff-gray16", "tif", lambda: _pil(Image.fromarray(a16[..., 0].astype(np.uint16)), "TIFF")),
            ("tiff-float", "tif", lambda: _pil(Image.fromarray(arr[..., 0].astype(np.float32) / 255), "TIFF")),
        ],
        "PPM": [
            ("ppm", "ppm", lambda: _pil(rgb, "PPM")),
            ("pgm", "pgm", lambda: _pil(gray, "PPM")),
        ],
    }
    for fmt in ALLOWED_FORMATS:
        for variant, ext, make in makers.get(fmt, []):
            try:
                out.append((variant, ext, make()))
            except Exception as exc:  # noqa: BLE001 - a Pillow build without the codec
                print(f"fuzz: cannot write {variant} ({exc}); skipped", file=sys.stderr)
    return out


def jpeg_sof(data: bytes) -> int:
    """Offset of the SOFn marker segment's length field."""
    i = 2
    while i < len(data) - 4:
        if data[i] != 0xFF:
            i += 1
            continue
        m = data[i + 1]
        if m in (0xC0, 0xC1, 0xC2):
            return i + 2
        if m == 0xD8 or 0xD0 <= m <= 0xD7 or m == 0xFF:
            i += 1 if m == 0xFF else 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ValueError("no SOF")


def patch_jpeg_size(data: bytes, w: int, h: int) -> bytes:
    o = jpeg_sof(data)
    b = bytearray(data)
    b[o + 3:o + 5] = h.to_bytes(2, "big")
    b[o + 5:o + 7] = w.to_bytes(2, "big")
    return bytes(b)


def patch_png_size(data: bytes, w: int, h: int, fix_crc: bool = True) -> bytes:
    b = bytearray(data)
    b[16:20], b[20:24] = w.to_bytes(4, "big"), h.to_bytes(4, "big")
    if fix_crc:
        b[29:33] = (zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(b)


def patch_gif_size(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    b[6:8], b[8:10] = w.to_bytes(2, "little"), h.to_bytes(2, "little")
    pos = 13 + (3 * 2 ** ((b[10] & 7) + 1) if b[10] & 0x80 else 0)
    while pos < len(b):
        if b[pos] == 0x21:
            pos += 2
            while pos < len(b) and b[pos]:
                pos += b[pos] + 1
            pos += 1
        elif b[pos] == 0x2C:
            b[pos + 5:pos + 7], b[pos + 7:pos + 9] = w.to_bytes(2, "little"), h.to_bytes(2, "little")
            break
        else:
            break
    return bytes(b)


def patch_bmp_size(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    b[18:22], b[22:26] = w.to_bytes(4, "little", signed=True), h.to_bytes(4, "little", signed=True)
    return bytes(b)


def patch_tiff_size(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    order = "little" if b[:2] == b"II" else "big"
    ifd = int.from_bytes(b[4:8], order)
    for k in range(int.from_bytes(b[ifd:ifd + 2], order)):
        e = ifd + 2 + 12 * k
        tag = int.from_bytes(b[e:e + 2], order)
        if tag in (256, 257):
            b[e + 2:e + 4] = (4).to_bytes(2, order)  # LONG
            b[e + 4:e + 8] = (1).to_bytes(4, order)
            b[e + 8:e + 12] = (w if tag == 256 else h).to_bytes(4, order)
    return bytes(b)


def patch_webp_size(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    if b[12:16] == b"VP8L":
        bits = int.from_bytes(b[21:25], "little") & ~((1 << 28) - 1)
        b[21:25] = (bits | (w - 1) | ((h - 1) << 14)).to_bytes(4, "little")
    elif b[12:16] == b"VP8 ":
        b[26:28], b[28:30] = w.to_bytes(2, "little"), h.to_bytes(2, "little")
    elif b[12:16] == b"VP8X":
        b[24:27], b[27:30] = (w - 1).to_bytes(3, "little"), (h - 1).to_bytes(3, "little")
    return bytes(b)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")
PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
       b"3 0 obj<</Type/Page/MediaBox[0 0 10 10]/Parent 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


@dataclass
class ImgCase:
    id: int
    name: bytes  # file name in the corpus directory
    group: str
    expect: str  # accept | refuse | same (decodes only to the intact pixels) | may
    ref: int | None = None  # id of the intact variant (same / bigger-is-silent)
    one_shot: bool = False  # run alone in a fresh process (memory measured)
    note: str = ""

    @property
    def label(self) -> str:
        return show_name(self.name)


class ImageCorpus:
    def __init__(self, root: Path, seed: int, quick: bool) -> None:
        self.root, self.seed, self.quick = root, seed, quick
        self.cases: list[ImgCase] = []
        self.rng = random.Random(seed)
        root.mkdir(parents=True, exist_ok=True)

    def add(self, stem: str, ext: str, data: bytes | None, group: str, expect: str, *,
            name: bytes | None = None, **kw: Any) -> ImgCase:
        cid = len(self.cases)
        if name is None:
            safe = re.sub(r"[^A-Za-z0-9._+-]", "_", stem)
            name = f"{cid:04d}_{safe}{'.' + ext if ext else ''}".encode()
        if data is not None:
            (self.root / os.fsdecode(name)).write_bytes(data)
        case = ImgCase(cid, name, group, expect, **kw)
        self.cases.append(case)
        return case

    def path(self, case: ImgCase) -> bytes:
        return os.path.join(os.fsencode(self.root), case.name)

    def build(self) -> None:
        rng = self.rng
        variants = valid_images(self.seed)
        if self.quick:
            keep = {"png-rgb", "png-rgb16", "jpeg-baseline", "jpeg-progressive", "webp-lossy", "gif", "bmp-rgb",
                    "tiff-lzw", "ppm"}
            variants = [v for v in variants if v[0] in keep]
        base: dict[str, tuple[ImgCase, bytes]] = {}
        for variant, ext, data in variants:
            base[variant] = (self.add(f"valid_{variant}", ext, data, "valid", "accept"), data)

        # truncations at many offsets: may decode only to the intact pixels
        for variant, (vc, data) in base.items():
            n = len(data)
            ext = os.fsdecode(vc.name).rsplit(".", 1)[-1]
            offs = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 33, 50, 64, 100, n - 1, n - 2, n - 3, n - 4, n - 8, n - 12, n - 16}
            offs |= {n * k // 24 for k in range(1, 24)}
            offs = sorted(o for o in offs if 0 <= o < n)
            if self.quick:
                offs = sorted(rng.sample(offs, 2))
            for o in offs:
                self.add(f"trunc_{variant}_{o}", ext, data[:o], "truncated", "same", ref=vc.id, note=f"first {o} of {n} bytes")

        # JPEGs cut short with the end marker re-appended: must be refused (half-decoded)
        for variant, (vc, data) in base.items():
            if not variant.startswith("jpeg"):
                continue
            fracs = (0.3, 0.5, 0.7, 0.85, 0.95, 0.99) if not self.quick else (0.5,)
            for f in fracs:
                cut = int(len(data) * f)
                self.add(f"jpegcut_{variant}_{cut}", "jpg", data[:cut] + b"\xff\xd9", "half-jpeg", "same", ref=vc.id,
                         note=f"cut at {cut} of {len(data)} bytes, EOI re-appended")

        # random bit flips: anything but a crash, or pixels invented beyond the intact size
        flips = 12 if not self.quick else 1
        for variant, (vc, data) in base.items():
            ext = os.fsdecode(vc.name).rsplit(".", 1)[-1]
            for k in range(flips):
                b = bytearray(data)
                nflip = 1 if k % 3 else rng.randint(2, 8)
                where = []
                for _ in range(nflip):
                    pos = rng.randrange(len(b)) if k % 2 else rng.randrange(min(len(b), 200))  # headers often
                    bit = rng.randrange(8)
                    b[pos] ^= 1 << bit
                    where.append(f"{pos}.{bit}")
                self.add(f"flip_{variant}_{k}", ext, bytes(b), "bit-flip", "may", ref=vc.id, note="flipped " + ",".join(where))

        self._bombs(base)
        self._wrong_formats(base)
        self._special(base)
        self._odd_names(base)

    def _bombs(self, base: dict[str, tuple[ImgCase, bytes]]) -> None:
        from PIL import Image

        small = _content(96, 96, self.seed + 7)
        jpeg96 = _pil(Image.fromarray(small), "JPEG", quality=90)
        png = base.get("png-rgb", (None, _pil(Image.fromarray(small), "PNG")))[1]
        sq = [
            ("png_ihdr_60000x60000", "png", lambda: patch_png_size(png, 60000, 60000), "refuse"),
            ("png_ihdr_60000x60000_badcrc", "png", lambda: patch_png_size(png, 60000, 60000, fix_crc=False), "refuse"),
            ("jpeg96_sof_8000x8000", "jpg", lambda: patch_jpeg_size(jpeg96, 8000, 8000), "refuse"),
            ("sparse_1GB_png_signature", "png", None, "refuse"),
        ]
        if not self.quick:
            gif = _pil(Image.fromarray(small).convert("P", palette=Image.ADAPTIVE), "GIF")
            bmp = _pil(Image.fromarray(small), "BMP")
            tif = _pil(Image.fromarray(small), "TIFF")
            webp_l = _pil(Image.fromarray(small), "WEBP", lossless=True)
            webp_y = _pil(Image.fromarray(small), "WEBP", quality=80)
            sq += [
                ("jpeg96_sof_65500x65500", "jpg", lambda: patch_jpeg_size(jpeg96, 65500, 65500), "refuse"),
                ("jpeg96_sof_8192x8192", "jpg", lambda: patch_jpeg_size(jpeg96, 8192, 8192), "refuse"),
                ("gif_65535x65535", "gif", lambda: patch_gif_size(gif, 65535, 65535), "refuse"),
                ("bmp_50000x50000", "bmp", lambda: patch_bmp_size(bmp, 50000, 50000), "refuse"),
                ("bmp_8000x8000", "bmp", lambda: patch_bmp_size(bmp, 8000, 8000), "refuse"),
                ("tiff_100000x100000", "tif", lambda: patch_tiff_size(tif, 100000, 100000), "refuse"),
                ("tiff_8000x8000", "tif", lambda: patch_tiff_size(tif, 8000, 8000), "refuse"),
                ("webp_lossless_16384x16384", "webp", lambda: patch_webp_size(webp_l, 16384, 16384), "refuse"),
                ("webp_lossy_16383x16383", "webp", lambda: patch_webp_size(webp_y, 16383, 16383), "refuse"),
                ("ppm_header_100000x100000", "ppm", lambda: b"P6\n100000 100000\n255\n" + bytes(1000), "refuse"),
                ("png_10000x10000_gray_zeros", "png", lambda: png_zero(10000, 10000, 8, 0), "refuse"),
                ("png_8192x8192_rgb_zeros", "png", lambda: png_zero(8192, 8192, 8, 2), "may"),
                ("png16_8192x8192_rgb_zeros", "png", lambda: png_zero(8192, 8192, 16, 2), "may"),
                ("png16_4096x4096_rgb_zeros", "png", lambda: png_zero(4096, 4096, 16, 2), "may"),
                ("png16_8192x8192_gray_zeros", "png", lambda: png_zero(8192, 8192, 16, 0), "may"),
                ("png16_4096x4096_rgba_zeros", "png", lambda: png_zero(4096, 4096, 16, 6), "may"),
                ("png_ztxt_100MB", "png", lambda: self._ztxt_bomb(png), "may"),
                ("jpeg_8192x8192", "jpg", lambda: self._big_jpeg(8192), "may"),
                ("jpeg_8192x8192_progressive", "jpg", lambda: self._big_jpeg(8192, progressive=True), "may"),
                ("tiff_8192x8192_deflate", "tif",
                 lambda: _pil(Image.new("RGB", (8192, 8192)), "TIFF", compression="tiff_adobe_deflate"), "may"),
                ("gif_8192x8192", "gif", lambda: _pil(Image.new("P", (8192, 8192)), "GIF"), "may"),
                ("webp_4096x4096_lossless", "webp",
                 lambda: _pil(Image.new("RGB", (4096, 4096), (9, 99, 199)), "WEBP", lossless=True), "may"),
                ("bmp_8000x8000_rle_like_zeros", "bmp", lambda: _pil(Image.new("RGB", (8000, 8000)), "BMP"), "may"),
                ("sparse_300MB_png_signature", "png", None, "refuse"),
            ]
        else:
            sq += [("png16_2048x2048_rgb_zeros", "png", lambda: png_zero(2048, 2048, 16, 2), "may")]
        for stem, ext, make, expect in sq:
            if make is None:  # sparse file: a valid 100x100 PNG header, then a hole
                case = self.add(stem, ext, png_zero(100, 100, 8, 2), "bomb", expect, one_shot=True)
                size = GIB if "1GB" in stem else 300 * 1024 * 1024
                with open(self.path(case), "r+b") as fh:
                    fh.truncate(size)
                continue
            self.add(stem, ext, make(), "bomb", expect, one_shot=True)

    def _ztxt_bomb(self, png: bytes) -> bytes:
        comp = zlib.compressobj(9)
        body = b"".join(comp.compress(bytes(1 << 20)) for _ in range(100)) + comp.flush()
        return png[:33] + _chunk(b"zTXt", b"bomb\0\0" + body) + png[33:]

    def _big_jpeg(self, size: int, progressive: bool = False) -> bytes:
        import numpy as np
        from PIL import Image

        a = np.zeros((size, size, 3), np.uint8)
        a[..., 0] = (np.arange(size) % 256)[None, :]
        a[..., 1] = (np.arange(size) % 256)[:, None]
        return _pil(Image.fromarray(a), "JPEG", quality=50, progressive=progressive)

    def _wrong_formats(self, base: dict[str, tuple[ImgCase, bytes]]) -> None:
        from PIL import Image

        small = Image.fromarray(_content(20, 20, self.seed + 3))
        png = base.get("png-rgb", (None, _pil(small, "PNG")))[1]
        jpg = base.get("jpeg-baseline", (None, _pil(small, "JPEG")))[1]
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w") as z:
            z.writestr("inside.png", png)
        items: list[tuple[str, str, Callable[[], bytes], str]] = [
            ("text", "png", lambda: b"hello, this is not an image\n", "refuse"),
            ("empty", "png", lambda: b"", "refuse"),
            ("empty", "jpg", lambda: b"", "refuse"),
            ("eps", "png", lambda: EPS, "refuse"),
            ("eps", "eps", lambda: EPS, "refuse"),
            ("pdf", "png", lambda: PDF, "refuse"),
            ("zip", "png", lambda: zbuf.getvalue(), "refuse"),
            ("jpeg_named_png", "png", lambda: jpg, "accept"),
        ]
        if not self.quick:
            items += [
                ("pdf", "pdf", lambda: PDF, "refuse"),
                ("zip", "zip", lambda: zbuf.getvalue(), "refuse"),
                ("pillow_pdf", "png", lambda: _pil(small, "PDF"), "refuse"),
                ("ico", "png", lambda: _pil(small, "ICO"), "refuse"),
                ("tga", "png", lambda: _pil(small, "TGA"), "refuse"),
                ("pcx", "png", lambda: _pil(small, "PCX"), "refuse"),
                ("sgi", "png", lambda: _pil(small, "SGI"), "refuse"),
                ("im", "png", lambda: _pil(small, "IM"), "refuse"),
                ("svg", "png", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "refuse"),
                ("html", "jpg", lambda: b"<!doctype html><html><body>x</body></html>", "refuse"),
                ("json", "png", lambda: b'{"not": "an image"}', "refuse"),
                ("gzip_png", "png", lambda: __import__("gzip").compress(png), "refuse"),
                ("elf", "png", lambda: Path(sys.executable).resolve().read_bytes()[:4096], "refuse"),
                ("random_bytes", "png", lambda: self.rng.randbytes(3000), "refuse"),
                ("png_signature_only", "png", lambda: png[:8], "refuse"),
                ("jpeg_soi_only", "jpg", lambda: b"\xff\xd8", "refuse"),
                ("jpeg_soi_eoi", "jpg", lambda: b"\xff\xd8\xff\xd9", "refuse"),
                ("png_trailing_garbage", "png", lambda: png + self.rng.randbytes(500), "may"),
                ("jpeg_trailing_garbage", "jpg", lambda: jpg + self.rng.randbytes(500), "may"),
                ("png_twice", "png", lambda: png + png, "may"),
                ("nul_bytes", "png", lambda: bytes(4096), "refuse"),
                ("png_named_gif", "gif", lambda: png, "accept"),
            ]
            with contextlib.suppress(Exception):
                jp2 = _pil(small, "JPEG2000")
                items.append(("jpeg2000", "png", lambda: jp2, "refuse"))
        for stem, ext, make, expect in items:
            self.add(f"wrong_{stem}", ext, make(), "wrong-format", expect)

    def _special(self, base: dict[str, tuple[ImgCase, bytes]]) -> None:
        png_case = base.get("png-rgb") or next(iter(base.values()))
        specials = [("fifo", "png"), ("devzero", "png"), ("dir", "png"), ("dangling", "png"), ("loop", "png"),
                    ("link_to_valid", "png")]
        if not self.quick:
            specials += [("devnull", "jpg"), ("devurandom", "jpg"), ("socket", "png"), ("link_to_dir", "png"),
                         ("unreadable", "png"), ("link_to_fifo", "png")]
        fifo_name = None
        for kind, ext in specials:
            expect = "accept" if kind == "link_to_valid" else "refuse"
            case = self.add(f"special_{kind}", ext, None, "special", expect)
            p = self.path(case)
            if kind == "fifo":
                os.mkfifo(p)
                fifo_name = case.name
            elif kind == "devzero":
                os.symlink("/dev/zero", p)
            elif kind == "devnull":
                os.symlink("/dev/null", p)
            elif kind == "devurandom":
                os.symlink("/dev/urandom", p)
            elif kind == "dir":
                os.mkdir(p)
                case.note = "a directory named like an image"
            elif kind == "dangling":
                os.symlink(os.path.join(os.fsencode(self.root), b"no-such-file.png"), p)
            elif kind == "loop":
                os.symlink(case.name, p)
            elif kind == "link_to_valid":
                os.symlink(png_case[0].name, p)
            elif kind == "link_to_dir":
                empty = self.root.parent / "an-empty-dir"
                empty.mkdir(exist_ok=True)
                os.symlink(str(empty), p)
            elif kind == "link_to_fifo":
                if fifo_name is None:
                    os.mkfifo(p)
                else:
                    os.symlink(fifo_name, p)
            elif kind == "socket":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.bind(os.fsdecode(p))
                except OSError:  # path too long for AF_UNIX
                    os.mkfifo(p)
                finally:
                    s.close()
            elif kind == "unreadable":
                p2 = os.fsdecode(p)
                Path(p2).write_bytes(png_case[1])
                os.chmod(p2, 0)
                if os.geteuid() == 0:
                    case.expect = "may"  # root reads it anyway
                    case.note = "mode 000 (running as root: readable)"

    def _odd_names(self, base: dict[str, tuple[ImgCase, bytes]]) -> None:
        png = (base.get("png-rgb") or next(iter(base.values())))[1]
        jpg = (base.get("jpeg-baseline") or next(iter(base.values())))[1]
        names: list[tuple[bytes, bytes, str]] = [
            (b"with space.png", png, "accept"),
            (b"new\nline.png", png, "accept"),
            (b"non-utf8-\xff\xfe.png", png, "accept"),
            (b"trunc-non-utf8-\xe9\x80.jpg", jpg[: len(jpg) // 2], "refuse"),
        ]
        if not self.quick:
            names += [
                (b"tab\tname.jpg", jpg, "accept"),
                (b"cr\rname.png", png, "accept"),
                ("émoji-🙂.png".encode(), png, "accept"),
                (b"-leading-dash.png", png, "accept"),
                (b"--.png", png, "accept"),
                (b"x" * 240 + b".png", png, "accept"),
                (b".hidden.png", png, "accept"),
                (b"UPPER.PNG", png, "accept"),
                (b"double.png.jpg", jpg, "accept"),
                (b"quote'\"name.png", png, "accept"),
                (b"back\\slash.png", png, "accept"),
                (b"semi;colon,comma.png", png, "accept"),
                (b"dollar$(echo x).png", png, "accept"),
                (b"percent%s%n.png", png, "accept"),
                (b"ctrl\x01\x1b[31m.png", png, "accept"),
                (b"latin1-caf\xe9.jpg", jpg, "accept"),
                (b"surrogate-\xed\xa0\x80.png", png, "accept"),
                (b"no_extension", png, "accept"),
                (b"trunc with space.png", png[:100], "refuse"),
                (b"trunc\nnewline.png", png[:100], "refuse"),
                (b"half-jpeg-\xff.jpg", jpg[: len(jpg) // 2] + b"\xff\xd9", "refuse"),
            ]
        for i, (name, data, expect) in enumerate(names):
            self.add("", "", data, "odd-name", expect, name=b"%04d_" % len(self.cases) + name)


# =============================================================================== images: run
def fuzz_images(tmp: Path, seed: int, quick: bool, jobs: int, bundle: Path | None) -> Area:
    area = Area("images")
    t0 = time.monotonic()
    corpus = ImageCorpus(tmp / "images", seed, quick)
    corpus.build()
    cases = corpus.cases
    pooled = [c for c in cases if not c.one_shot]
    shot = [c for c in cases if c.one_shot]
    print(f"  images: {len(cases)} cases ({len(shot)} in fresh processes, memory measured)", file=sys.stderr)
    jobs_of = lambda cs: [{"id": c.id, "path": corpus.path(c).hex()} for c in cs]  # noqa: E731
    results = Pool("image", tmp, n=jobs, timeout=30.0).run(jobs_of(pooled))
    # cases whose worker grew by more than 64 MB are measured again, alone
    regrow = [c for c in pooled if results.get(c.id, {}).get("rss1", 0) - results.get(c.id, {}).get("rss0", 0) > 65536]
    results.update(Pool("image", tmp, n=jobs, timeout=180.0, one_shot=True).run(jobs_of(shot + regrow)))

    peaks: list[tuple[int, str]] = []
    for c in shot + regrow:
        r = results.get(c.id, {})
        if "rss1" in r:
            outcome = "decoded" if r.get("status") == "ok" else "refused" if exc_refused(r) else r.get("type", "?")
            peaks.append((r["rss1"] - r["rss0"], f"{c.label} ({outcome}, {r.get('secs', 0):.1f} s)"))
        elif r.get("status") in ("dead", "timeout"):
            peaks.append((MEM_CAP // 1024, f"{c.label} ({r['status']}: at least the {MEM_CAP >> 30} GiB cap)"))
    peaks.sort(reverse=True)
    peak_kb, peak_case = peaks[0] if peaks else (0, "")
    area.peak_mb = peak_kb / 1024
    if peaks:
        area.notes.append("peak memory per image, alone in a fresh process (VmHWM after - VmRSS before): "
                          + "; ".join(f"{kb / 1024:.0f} MB {what}" for kb, what in peaks[:8]))
    bound = _documented_image_bound()
    if peak_case:
        area.notes.append(f"worst single image: {peak_case}, {area.peak_mb:.0f} MB"
                          + (f" (documented bound {bound / 2**20:.0f} MiB)" if bound else ""))
    if bound and peak_kb * 1024 > bound:
        area.extra_failure("over-bound", peak_case, f"peak {area.peak_mb:.0f} MB over the documented bound "
                                                    f"{bound / 2**20:.0f} MiB")

    for c in cases:
        r = results.get(c.id, {"status": "missing"})
        verdict, detail = classify_image(c, r, results)
        area.record(c.label, verdict, f"{c.group}: {detail}" + (f" [{c.note}]" if c.note else ""))

    if bundle is not None:
        attribute_lost(area, corpus, bundle, quick, jobs)
    area.seconds = time.monotonic() - t0
    return area


def _documented_image_bound() -> int | None:
    try:
        from osma.images import decode
    except Exception:  # noqa: BLE001
        return None
    if hasattr(decode, "MAX_DECODE_BYTES") and hasattr(decode, "MAX_PIXELS"):
        return int(decode.MAX_DECODE_BYTES) + 3 * int(decode.MAX_PIXELS)
    return None


def classify_image(c: ImgCase, r: dict, results: dict[int, dict]) -> tuple[str, str]:
    st = r.get("status")
    base = os.path.basename(os.fsdecode(c.name))
    if st == "ok":
        ref = results.get(c.ref, {}) if c.ref is not None else {}
        same = ref.get("status") == "ok" and ref.get("sha1") == r.get("sha1")
        what = f"decoded to {r.get('shape')}"
        if c.expect == "refuse":
            return "silent", f"{what}; must be refused"
        if c.expect == "same" and not same:
            if ref.get("status") != "ok":
                return "accepted", f"{what} (intact variant not decoded: cannot compare)"
            return "silent", f"{what}, pixels differ from the intact file's {ref.get('shape')} (half-decoded)"
        gif = os.fsdecode(c.name).lower().endswith(".gif")  # a GIF canvas larger than its frame is valid
        if c.expect == "may" and not gif and ref.get("status") == "ok" and r.get("shape") and ref.get("shape"):
            h, w = r["shape"][:2]
            h0, w0 = ref["shape"][:2]
            if h * w > h0 * w0:
                return "silent", f"{what}, more pixels than the intact {ref['shape']}: invented blocks"
        return "accepted", what
    if exc_refused(r):
        msg = r.get("msg", "")
        if c.expect == "accept":
            return "false_ref", f"valid input refused: {short(msg)}"
        if base not in msg and os.fsdecode(c.name) not in msg:
            return "unclear", f"message does not name the file: {r.get('type')}: {short(msg)}"
        return "handled", f"{r.get('type')}: {short(msg, 100)}"
    return "crashed", crash_detail(r)


def attribute_lost(area: Area, corpus: ImageCorpus, bundle: Path, quick: bool, jobs: int) -> None:
    """``osma attribute DIR --out F`` twice: every corpus entry has one row (or is named on stderr)."""
    from osma.images.decode import IMAGE_EXTENSIONS

    root = corpus.root
    entries = []
    skippable = 0  # entries a walk may leave out (it may count them in a "skipped" summary)
    for name in os.listdir(os.fsencode(root)):
        p = os.path.join(os.fsencode(root), name)
        if os.path.isdir(p) and not os.path.islink(p):
            continue  # a directory is walked into, not a row
        if os.path.islink(p) and os.path.isdir(p):
            skippable += 1  # a link to a directory: not an image entry
            continue
        if os.path.splitext(os.fsdecode(name))[1].lower() not in IMAGE_EXTENSIONS:
            skippable += 1  # not picked up by a directory walk, by design
            continue
        entries.append(name)
    expected = {os.path.abspath(os.path.join(os.fsdecode(root), os.fsdecode(n))): n for n in entries}
    timeout = 240.0 if quick else 600.0
    total_lost, total_dup = 0, 0
    for fmt in (("jsonl",) if quick else ("jsonl", "csv")):
        out = corpus.root.parent / f"results.{fmt}"
        counts = []
        for attempt in (1, 2):
            args = [_osma_cli(), "attribute", str(bundle), str(root), "--out", str(out), "--device", "cpu",
                    "--no-progress", "--batch-size", "16"]
            rc, so, se, secs = run_cmd(args, timeout)
            label = f"osma attribute --out results.{fmt} (run {attempt})"
            if rc is None:
                area.extra_failure("crashed", label, f"no exit within {timeout:.0f} s (killed): a hang")
            elif rc not in (0, 1) or "Traceback" in se or "Traceback" in so:
                tail = [ln for ln in se.splitlines() if ln.strip()][-1:] or [""]
                area.extra_failure("crashed", label, f"exit {rc}: {short(tail[0])}")
            rows, bad = read_rows(out, fmt)
            if bad:
                area.extra_failure("crashed", label, f"{bad} unreadable row(s) in results.{fmt}")
            counts.append(len(rows))
            area.notes.append(f"{label}: exit {rc}, {len(rows)} rows, {secs:.0f} s")
            if attempt == 2:
                if counts[1] != counts[0]:
                    area.extra_failure("dup", label, f"the second run added {counts[1] - counts[0]} row(s)")
                lost, dup, named = match_rows(rows, expected, se)
                # entries a walk may leave out without a row: another extension, a link to a directory
                m = re.search(r"skipped (\d+) entr", se)
                counted = max(0, int(m.group(1)) - skippable) if m else 0
                if lost and counted:
                    k = min(counted, len(lost))
                    area.notes.append(f"results.{fmt}: {k} entries without a row but counted in the summary line "
                                      f"({short(m.group(0))}...): " + ", ".join(show_name(n) for n in lost[:k]))
                    lost = lost[k:]
                total_lost += len(lost)
                total_dup += len(dup)
                for n in lost:
                    area.extra_failure("lost", f"{show_name(n)} ({fmt})", "no row in the output and not named on stderr")
                for p, k in dup:
                    area.extra_failure("dup", f"{show_name(p)} ({fmt})", f"{k} rows")
                if named:
                    area.notes.append(f"results.{fmt}: {named} entries without a row but named on stderr")
    area.lost, area.dup = total_lost, total_dup


def read_rows(path: Path, fmt: str) -> tuple[list[str], int]:
    """Paths of the rows of an ``--out`` file, and the number of unreadable rows."""
    if not path.exists():
        return [], 0
    raw = path.read_bytes().decode("utf-8", "surrogateescape")
    paths, bad = [], 0
    if fmt == "jsonl":
        for line in raw.split("\n"):
            if not line.strip():
                continue
            try:
                paths.append(str(json.loads(line)["path"]))
            except (ValueError, KeyError, TypeError):
                bad += 1
    else:
        import csv
        rd = csv.reader(io.StringIO(raw, newline=""))
        header = next(rd, None)
        if header is None:
            return [], 0
        col = header.index("path") if "path" in header else 0
        for row in rd:
            if row and row != header:
                if len(row) <= col:
                    bad += 1
                else:
                    paths.append(row[col])
    return paths, bad


def _fuzzy(s: str) -> str:
    """The ASCII letters and digits of a file name (matches escaped forms of odd names)."""
    s = os.path.basename(s)
    s = re.sub(r"\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|%[0-9A-Fa-f]{2}|\\[nrt\\]", "", s)
    return re.sub(r"[^A-Za-z0-9]", "", s.encode("ascii", "ignore").decode())


def match_rows(rows: list[str], expected: dict[str, bytes], stderr: str) -> tuple[list[bytes], list, int]:
    seen = Counter(os.path.abspath(p) for p in rows)
    dup = [(p, k) for p, k in seen.items() if k > 1]
    missing = [p for p in expected if p not in seen]
    extra = [p for p in seen if p not in expected]
    # odd names may be written in an escaped form: match what is left by their letters and digits
    fuzzy_extra = Counter(_fuzzy(p) for p in extra)
    lost, named = [], 0
    for p in missing:
        key = _fuzzy(p)
        if key and fuzzy_extra[key] > 0:
            fuzzy_extra[key] -= 1
            continue
        base = os.path.basename(p)
        if base in stderr or (key and key in _fuzzy_text(stderr)):
            named += 1
            continue
        lost.append(expected[p])
    return lost, dup, named


def _fuzzy_text(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text.encode("ascii", "ignore").decode())


# =============================================================================== lists
LIST_KEYS = ("train", "val", "test", "test_out", "test_out_seed", "test_out_arch", "test_out_dataset")
BAD_LABELS = ["--1", "-1", "+1", "\u00b2", "\uff11", "\u0663", "1.0", "1e0", "0x1", " 1x", "1 1", "", "nan", "None",
              "9" * 30, "9" * 5000, "1\x00", "\u00a01", "1_0", "\U0001d7cf", "True", "[1]"]
YAML_KEYS = ("data_path", "known_classes", "unknown_classes1", "unknown_classes2", "unknown_classes3",
             "train_collection", "val_collection", "test_data_path", "out_data_path")


@dataclass
class ListCase:
    id: int
    label: str
    dir: Path
    target: str  # "yaml" or a LIST_KEYS entry
    expect: str  # flag | may | pass


def _list_files(dl: Path) -> dict[str, Path]:
    ann = dl.parent / "dataset"
    return {
        "train": ann / "split1_train/annotations/split1_train.txt",
        "val": ann / "split1_val/annotations/split1_val.txt",
        "test": ann / "split1_test/annotations/split1_test.txt",
        "test_out": ann / "split1_test/annotations/split1_test_out.txt",
        "test_out_seed": ann / "split1_test/annotations/split1_test_out_seed.txt",
        "test_out_arch": ann / "split1_test/annotations/split1_test_out_arch.txt",
        "test_out_dataset": ann / "split1_test/annotations/split1_test_out_dataset.txt",
    }


N_LABELS = {"train": 4, "val": 4, "test": 4, "test_out": 3, "test_out_seed": 1, "test_out_arch": 1,
            "test_out_dataset": 1}


def list_must_flag(data: bytes, key: str) -> str | None:
    """Why a list file is certainly malformed (a problem must be reported), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    if "\ufeff" in text:
        return "byte order mark / U+FEFF"
    if "\x00" in text:
        return "NUL byte"
    entries = 0
    for ln in text.split("\n"):
        s = ln.rstrip(" \t\r")
        if not s.strip():
            continue
        if "\r" in s:
            return "CR inside a line"
        parts = s.split("\t")
        if len(parts) != 2:
            return f"{len(parts) - 1} tabs in a line"
        path, label = parts
        if not path:
            return "empty path"
        if not re.fullmatch(r"[0-9]+", label):
            return f"label {label[:20]!r}"
        if len(label.lstrip("0")) > 6 or int(label) >= N_LABELS[key]:
            return f"label {label[:20]} out of range"
        enc = path.encode("utf-8", "surrogateescape")
        if len(enc) > 4096 or any(len(c) > 255 for c in enc.split(b"/")):
            return "over-long path"
        entries += 1
    if entries == 0 and key in ("train", "val", "test", "test_out"):
        return "no entries"
    return None


def _yaml_dump(doc: Any) -> str:
    import yaml
    return yaml.safe_dump(doc, sort_keys=False, width=10**7, allow_unicode=True)


def build_list_cases(root: Path, base_dl: Path, seed: int, quick: bool) -> list[ListCase]:
    import yaml

    rng = random.Random(seed + 2)
    base_files = _list_files(base_dl)
    base_text = {k: p.read_bytes() for k, p in base_files.items()}
    base_yaml = base_dl.read_text()
    base_doc = yaml.safe_load(base_yaml)
    cases: list[ListCase] = []

    def new(label: str, target: str, expect: str, data: bytes | None = None,
            yaml_data: bytes | None = None) -> None:
        d = root / f"v{len(cases):04d}"
        files = _list_files(d / "data_list.yaml")
        for k, p in files.items():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data if (k == target and data is not None) else base_text[k])
        (d / "data_list.yaml").write_bytes(yaml_data if yaml_data is not None else base_yaml.encode())
        if target != "yaml" and data is not None and expect == "auto":
            why = list_must_flag(data, target)
            expect = "flag" if why else "may"
            label += f" ({why})" if why else ""
        cases.append(ListCase(len(cases), label, d, target, expect))

    def lines(key: str) -> list[bytes]:
        return base_text[key].split(b"\n")[:-1]

    def join(ls: list[bytes]) -> bytes:
        return b"".join(ln + b"\n" for ln in ls)

    new("intact benchmark", "yaml", "pass")
    # ---- list files
    for key in LIST_KEYS:
        ls = lines(key)
        for k in (1, 2, len(ls) // 2):
            drop = set(rng.sample(range(len(ls)), min(k, len(ls))))
            new(f"{key}: {len(drop)} line(s) deleted", key, "auto", join([x for i, x in enumerate(ls) if i not in drop]))
        new(f"{key}: every line deleted", key, "auto", b"")
        new(f"{key}: only a newline", key, "auto", b"\n")
        for k in (1, 3):
            dup = [ls[rng.randrange(len(ls))] for _ in range(k)]
            new(f"{key}: {k} line(s) duplicated", key, "auto", join(ls + dup))
        i = rng.randrange(len(ls))
        for how, rep in (("tab removed", b""), ("tab -> space", b" "), ("two tabs", b"\t\t"), ("extra field", b"\t0\t")):
            new(f"{key}: line {i + 1} {how}", key, "auto", join(ls[:i] + [ls[i].replace(b"\t", rep, 1)] + ls[i + 1:]))
        new(f"{key}: UTF-8 BOM", key, "auto", b"\xef\xbb\xbf" + base_text[key])
        new(f"{key}: label out of range", key, "auto", join(ls + [b"./dataset/x/new.png\t%d" % N_LABELS[key]]))
        new(f"{key}: path of 100000 bytes", key, "auto", join(ls + [b"./" + b"d/" * 50000 + b"x.png\t0"]))
        for ch in (b"\x00", b"\x07", b"\x1b"):
            pos = rng.randrange(len(base_text[key]))
            data = base_text[key][:pos] + ch + base_text[key][pos:]
            new(f"{key}: {ch!r} at byte {pos}", key, "auto", data)
        for bad in (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"):
            pos = rng.randrange(len(base_text[key]))
            new(f"{key}: non-UTF-8 {bad!r} at byte {pos}", key, "auto", base_text[key][:pos] + bad + base_text[key][pos:])
        new(f"{key}: CRLF line ends", key, "auto", base_text[key].replace(b"\n", b"\r\n"))
        new(f"{key}: CR-only line ends", key, "auto", base_text[key].replace(b"\n", b"\r"))
        new(f"{key}: random bytes appended", key, "auto", base_text[key] + rng.randbytes(rng.randint(1, 64)))
        shuffled = ls[:]
        rng.shuffle(shuffled)
        new(f"{key}: lines shuffled", key, "auto", join(shuffled))
    for j, lab in enumerate(BAD_LABELS):
        for key in (LIST_KEYS[j % len(LIST_KEYS)], "train"):
            ls = lines(key)
            i = rng.randrange(len(ls))
            path = ls[i].split(b"\t")[0]
            data = join(ls[:i] + [path + b"\t" + lab.encode("utf-8")] + ls[i + 1:])
            new(f"{key}: label {lab[:12]!r} on line {i + 1}", key, "auto", data)
    for key in ("train", "test_out"):
        new(f"{key}: '../' traversal path", key, "auto", join(lines(key) + [b"../../../../etc/passwd\t0"]))
        new(f"{key}: absolute path", key, "auto", join(lines(key) + [b"/etc/passwd\t0"]))
        new(f"{key}: U+FEFF inside a later line", key, "auto", join(lines(key) + ["\ufeff./x.png\t0".encode()]))
    # ---- data_list.yaml
    def set_key(key: str, value: Any) -> bytes:
        doc = copy.deepcopy(base_doc)
        doc["split1"][key] = value
        return _yaml_dump(doc).encode()

    for key in YAML_KEYS:
        doc = copy.deepcopy(base_doc)
        del doc["split1"][key]
        expect = "may" if key == "data_path" or key.startswith("unknown") else "flag"
        new(f"yaml: key {key} deleted", "yaml", expect, yaml_data=_yaml_dump(doc).encode())
        for tname, value in (("a string", "xyz"), ("a number", 3), ("a float", 1.5), ("a list", [1, 2]),
                             ("null", None), ("a mapping", {"a": 1}), ("a bool", True), ("nested lists", [[["x"]]])):
            if key == "data_path" and tname == "a string":
                continue
            expect = "flag"
            if value is None and (key == "data_path" or key.startswith("unknown")):
                expect = "may"
            new(f"yaml: {key} is {tname}", "yaml", expect, yaml_data=set_key(key, value))
    new("yaml: data_path of 100000 chars", "yaml", "flag", yaml_data=set_key("data_path", "./" + "x" * 100000))
    new("yaml: known_classes of 10000 names", "yaml", "may", yaml_data=set_key("known_classes", [f"c{i}" for i in range(10000)]))
    new("yaml: class name of 100000 chars", "yaml", "may",
        yaml_data=set_key("known_classes", ["real", "g" * 100000, "gan_b", "gan_c"]))
    for ch in ("\x00", "\x07", "\x1b", "\x0b", "\x7f", "\x85", "\ufffe"):
        for k in range(2):
            pos = rng.randrange(len(base_yaml))
            expect = "flag" if ch in ("\x00", "\x07", "\x1b", "\x0b", "\ufffe") else "may"
            new(f"yaml: {ch!r} at char {pos}", "yaml", expect,
                yaml_data=(base_yaml[:pos] + ch + base_yaml[pos:]).encode("utf-8", "surrogatepass"))
    for bad in (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xfe\xff"):
        pos = rng.randrange(len(base_yaml))
        raw = base_yaml.encode()
        new(f"yaml: non-UTF-8 {bad!r} at byte {pos}", "yaml", "flag", yaml_data=raw[:pos] + bad + raw[pos:])
    for n in (5000, 100000):
        new(f"yaml: {n}-deep lists", "yaml", "flag", yaml_data=("split1: " + "[" * n + "]" * n + "\n").encode())
        new(f"yaml: {n}-deep mappings", "yaml", "flag", yaml_data=("split1: " + "{a: " * n + "1" + "}" * n + "\n").encode())
    new("yaml: 5000-deep block nesting", "yaml", "flag",
        yaml_data=("split1:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(5000)) + " " * 5001 + "b: 1\n").encode())
    laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
    new("yaml: billion laughs (aliases)", "yaml", "may", yaml_data=(base_yaml + laughs).encode())
    new("yaml: billion laughs as a split", "yaml", "flag",
        yaml_data=(laughs + "split1: *a9\n").encode())
    new("yaml: integer of 100000 digits", "yaml", "may", yaml_data=(base_yaml + "other: " + "9" * 100000 + "\n").encode())
    for label, text, expect in (
        ("empty", "", "flag"), ("only a comment", "# nothing\n", "flag"), ("top-level list", "- split1\n", "flag"),
        ("top-level scalar", "split1\n", "flag"), ("two documents", base_yaml + "---\n" + base_yaml, "flag"),
        ("tab indentation", base_yaml.replace("  ", "\t"), "flag"), ("unclosed flow", "split1: [unclosed\n", "flag"),
        ("python tag", "split1: !!python/object/apply:os.system [echo]\n", "flag"),
        ("undefined alias", "split1: *nothing\n", "flag"), ("split name an integer", base_yaml.replace("split1:", "1:"), "flag"),
        ("split name null", base_yaml.replace("split1:", "~:"), "flag"),
        ("duplicate split key", base_yaml + base_yaml, "may"), ("UTF-8 BOM", "\ufeff" + base_yaml, "may"),
        ("split is a list", "split1: [1, 2]\n", "flag"), ("split is null", "split1:\n", "flag"),
        ("unknown extra key", base_yaml.replace("  data_path:", "  surprise: 1\n  data_path:"), "may"),
        ("binary tag", "split1: !!binary aGVsbG8=\n", "flag"), ("set tag", "split1: !!set {a, b}\n", "flag"),
        ("timestamp split", "2001-12-14: {}\n", "flag"),
        ("merge key", base_yaml.replace("  data_path:", "  <<: {x: 1}\n  data_path:"), "may"),
        ("CRLF", base_yaml.replace("\n", "\r\n"), "may"), ("CR only", base_yaml.replace("\n", "\r"), "may"),
    ):
        new(f"yaml: {label}", "yaml", expect, yaml_data=text.encode())
    ylines = base_yaml.split("\n")
    for k in range(12):
        drop = set(rng.sample(range(1, len(ylines) - 1), rng.randint(1, 3)))
        new(f"yaml: line(s) {sorted(i + 1 for i in drop)} deleted", "yaml", "may",
            yaml_data="\n".join(x for i, x in enumerate(ylines) if i not in drop).encode())
    raw = base_yaml.encode()
    for k in range(24):
        b = bytearray(raw)
        where = []
        for _ in range(rng.randint(1, 4)):
            pos, bit = rng.randrange(len(b)), rng.randrange(8)
            b[pos] ^= 1 << bit
            where.append(f"{pos}.{bit}")
        new(f"yaml: bits flipped at {','.join(where)}", "yaml", "may", yaml_data=bytes(b))
    if quick:
        keep = {0} | set(random.Random(seed).sample(range(1, len(cases)), 29))
        cases = [c for c in cases if c.id in keep]
    return cases


def fuzz_lists(tmp: Path, seed: int, quick: bool, jobs: int) -> Area:
    area = Area("lists")
    t0 = time.monotonic()
    base_dl = make_toy(tmp / "toy-lists")
    cases = build_list_cases(tmp / "lists", base_dl, seed, quick)
    print(f"  lists: {len(cases)} variants", file=sys.stderr)
    results = Pool("lists", tmp, n=jobs, timeout=30.0).run([{"id": c.id, "yaml": str(c.dir / "data_list.yaml")}
                                                            for c in cases])
    # the CLI on a sample (and on every variant whose library call crashed)
    sample = [c for c in cases if c.id % 10 == 0 or results.get(c.id, {}).get("status") != "report"]
    sample = sample[:40] if not quick else sample[:3]
    cli = dict(zip([c.id for c in sample], cli_many(
        [[_osma_cli(), "data", "check", str(c.dir / "data_list.yaml"), "--no-images"] for c in sample], 120, jobs)))
    for c in cases:
        r = results.get(c.id, {"status": "missing"})
        v = classify_list(c, r)
        if c.id in cli:
            v = worst(v, classify_list_cli(c, cli[c.id]))
        area.record(c.label, *v)
    area.notes.append(f"osma data check --no-images run on {len(cli)} variants")
    area.seconds = time.monotonic() - t0
    return area


def _names_a_file(msg: str, c: ListCase) -> bool:
    names = ["data_list.yaml"] + [p.name for p in _list_files(c.dir / "data_list.yaml").values()]
    return any(n in msg for n in names)


def classify_list(c: ListCase, r: dict) -> tuple[str, str]:
    st = r.get("status")
    target = "data_list.yaml" if c.target == "yaml" else _list_files(c.dir / "data_list.yaml")[c.target].name
    if st == "report":
        probs = r.get("problems", [])
        if r.get("ok"):
            if c.expect == "flag":
                return "silent", "check() passed it (ok, no problem reported)"
            return "accepted", "passed"
        if c.expect == "pass":
            return "false_ref", f"the intact benchmark is flagged: {short(probs[0][1]) if probs else ''}"
        # problems about a file's syntax must name it (file:line); content problems (an empty
        # class, an overlap) are about the benchmark as a whole
        vague = [m for k, m in probs if k in ("format", "missing_list", "malformed", "label") and not _names_a_file(m, c)]
        if vague:
            return "unclear", f"a problem names no file: {short(vague[0])}"
        if c.expect == "flag" and not any(target in m for _, m in probs):
            return "unclear", f"no problem names the changed file {target}: {short(probs[0][1])}"
        return "handled", f"{len(probs)} problem(s): {short(probs[0][1], 100)}"
    if exc_refused(r, ("ValueError", "FileNotFoundError")):
        msg = r.get("msg", "")
        if c.expect == "pass":
            return "false_ref", f"the intact benchmark raises {r.get('type')}: {short(msg)}"
        if not _names_a_file(msg, c):
            return "unclear", f"{r.get('type')} names no file: {short(msg)}"
        return "handled", f"{r.get('type')}: {short(msg, 100)}"
    return "crashed", crash_detail(r)


def classify_list_cli(c: ListCase, res: tuple[int | None, str, str, float]) -> tuple[str, str]:
    rc, so, se, _ = res
    if rc is None:
        return "crashed", "osma data check: no exit within 120 s"
    if "Traceback" in so or "Traceback" in se or rc not in (0, 1, 2):
        last = ([ln for ln in (se or so).splitlines() if ln.strip()] or [""])[-1]
        return "crashed", f"osma data check: exit {rc}, {short(last)}"
    if rc == 0 and c.expect == "flag":
        return "silent", "osma data check exits 0"
    if rc != 0 and c.expect == "pass":
        return "false_ref", f"osma data check exits {rc} on the intact benchmark"
    return ("accepted" if rc == 0 else "handled"), f"osma data check: exit {rc}"


# =============================================================================== bundles
@dataclass
class BundleCase:
    id: int
    label: str
    dir: Path
    must: bool  # must be refused (a load is silent even with equal predictions)


def build_bundle_cases(root: Path, bundle: Path, seed: int, quick: bool) -> list[BundleCase]:
    import torch
    from safetensors.torch import load_file, save_file

    rng = random.Random(seed + 3)
    js = (bundle / "model.json").read_bytes()
    st = (bundle / "model.safetensors").read_bytes()
    doc = json.loads(js)
    cases: list[BundleCase] = []

    def new(label: str, must: bool, *, json_bytes: bytes | None = None, st_bytes: bytes | None = None,
            edit: Callable[[Path], None] | None = None) -> None:
        d = root / f"b{len(cases):04d}"
        d.mkdir(parents=True)
        (d / "model.json").write_bytes(js if json_bytes is None else json_bytes)
        (d / "model.safetensors").write_bytes(st if st_bytes is None else st_bytes)
        if edit is not None:
            edit(d)
        cases.append(BundleCase(len(cases), label, d, must))

    def with_doc(f: Callable[[dict], Any]) -> bytes:
        d = copy.deepcopy(doc)
        f(d)
        return json.dumps(d, indent=2).encode()

    def tensors(f: Callable[[dict], None]) -> bytes:
        t = load_file(str(bundle / "model.safetensors"))
        f(t)
        tmpf = root / "_t.safetensors"
        save_file(t, str(tmpf))
        data = tmpf.read_bytes()
        tmpf.unlink()
        return data

    new("intact bundle", False)
    hlen = int.from_bytes(st[:8], "little")
    # truncations of model.safetensors
    offs = sorted({0, 1, 7, 8, 9, 8 + hlen // 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 1, len(st) - 1, len(st) - 4}
                  | {len(st) * k // 12 for k in range(1, 12)})[:20]
    for o in offs:
        new(f"model.safetensors cut to {o} of {len(st)} bytes", True, st_bytes=st[:o])
    # random byte flips in model.json and in the safetensors header
    for k in range(20):
        b = bytearray(js)
        pos = rng.randrange(len(b))
        b[pos] ^= 1 << rng.randrange(8)
        new(f"model.json bit flip at byte {pos} ({js[pos:pos + 1]!r} -> {bytes(b[pos:pos + 1])!r})", False,
            json_bytes=bytes(b))
    for k in range(20):
        b = bytearray(st)
        pos = 8 + rng.randrange(hlen)
        b[pos] ^= 1 << rng.randrange(8)
        new(f"safetensors header bit flip at byte {pos} ({st[pos:pos + 1]!r} -> {bytes(b[pos:pos + 1])!r})", False,
            st_bytes=bytes(b))
    # key deletions
    for key in list(doc):
        new(f"model.json: key {key!r} deleted", False, json_bytes=with_doc(lambda d, key=key: d.pop(key)))
    for sect in ("preprocess", "options", "score"):
        for key in list(doc.get(sect, {}) if isinstance(doc.get(sect), dict) else {}):
            new(f"model.json: {sect}.{key} deleted", False, json_bytes=with_doc(lambda d, s=sect, k=key: d[s].pop(k)))
    # type substitutions
    subs = (("a string", "abc"), ("a number", 7), ("a list", [1, "x"]), ("null", None), ("an object", {"z": 1}),
            ("a bool", False), ("a negative number", -1))
    def set_(path: tuple[str, ...], value: Any) -> Callable[[dict], None]:
        def f(d: dict) -> None:
            node = d
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = value
        return f

    paths = [(k,) for k in doc] + [(s, k) for s in ("preprocess", "options") for k in doc.get(s, {})]
    for path in paths:
        cur = doc
        for p in path:
            cur = cur[p]
        for tname, value in subs:
            if type(value) is type(cur) and value == cur:
                continue
            if isinstance(cur, (int, float)) and not isinstance(cur, bool) and tname in ("a number", "a negative number"):
                continue  # another value of the same type: not a type error
            if cur is None and tname == "a number":
                continue  # a nullable number (resize, tau): a valid value, not a type error
            new(f"model.json: {'.'.join(path)} is {tname}", False, json_bytes=with_doc(set_(path, value)))
    # absurd sizes
    for path, value in ((("preprocess", "crop"), 100000), (("options", "width"), 1000), (("options", "embed_dim"), 10**9),
                        (("preprocess", "resize"), 10**6), (("options", "embed_batch_size"), 10**12),
                        (("options", "embed_dim"), 2**63), (("preprocess", "crop"), 0), (("options", "width"), 1e-9),
                        (("options", "width"), float("inf")), (("n_trained",), 10**6)):
        new(f"model.json: {'.'.join(path)} = {value}", True, json_bytes=with_doc(set_(path, value)))
    new("model.json: tau NaN", True, json_bytes=with_doc(set_(("tau",), float("nan"))))
    new("model.json: tau Infinity", False, json_bytes=with_doc(set_(("tau",), float("inf"))))
    new("model.json: format osma-bundle/99", True, json_bytes=with_doc(set_(("format",), "osma-bundle/99")))
    new("model.json: classes 'real' (a string)", True, json_bytes=with_doc(set_(("classes",), "real")))
    new("model.json: three names for a four-class head", True,
        json_bytes=with_doc(lambda d: d.update(classes=d["classes"][:3], n_trained=3)))
    new("model.json: duplicate class names", True,
        json_bytes=with_doc(lambda d: d.update(classes=[d["classes"][0]] * len(d["classes"]))))
    # NaN / inf weights, wrong tensors
    loaded = load_file(str(bundle / "model.safetensors"))
    names = [k for k, v in loaded.items() if v.is_floating_point() and v.numel() > 1]
    first = names[0]
    new(f"NaN weights ({first})", True, st_bytes=tensors(lambda t: t[first].fill_(float("nan"))))
    new("all-NaN weights", True, st_bytes=tensors(lambda t: [v.fill_(float("nan")) for v in t.values()
                                                            if v.is_floating_point()]))
    new(f"one inf weight ({names[-1]})", True, st_bytes=tensors(lambda t: t[names[-1]].view(-1).__setitem__(0, float("inf"))))
    new(f"tensor {first} missing", True, st_bytes=tensors(lambda t: t.pop(first)))
    new("an extra tensor", True, st_bytes=tensors(lambda t: t.update(extra=torch.zeros(3))))
    new(f"tensor {first} transposed/reshaped", True,
        st_bytes=tensors(lambda t: t.update({first: t[first].reshape(-1).flip(0).reshape(-1, 1).contiguous()})))
    new(f"tensor {first} as float64", False, st_bytes=tensors(lambda t: t.update({first: t[first].double()})))
    new(f"tensor {first} as int32", False, st_bytes=tensors(lambda t: t.update({first: t[first].int()})))
    new("no tensors at all", True, st_bytes=tensors(lambda t: t.clear()))
    # raw junk in either file
    import pickle
    for label, fname, data, *must in (
        ("model.safetensors empty", "model.safetensors", b""),
        ("model.safetensors random bytes", "model.safetensors", rng.randbytes(4096)),
        ("model.safetensors a pickle", "model.safetensors", pickle.dumps({"w": [1.0, 2.0]})),
        ("model.safetensors header length 2**62", "model.safetensors", (2**62).to_bytes(8, "little") + st[8:]),
        ("model.safetensors header length past the end", "model.safetensors", (len(st)).to_bytes(8, "little") + st[8:]),
        ("model.safetensors header not JSON", "model.safetensors", (10).to_bytes(8, "little") + b"not json!!" + st[8 + hlen:]),
        ("model.safetensors header a JSON list", "model.safetensors", (2).to_bytes(8, "little") + b"[]"),
        ("model.json empty", "model.json", b""),
        ("model.json not UTF-8", "model.json", b"\xff\xfe{}"),
        ("model.json a JSON list", "model.json", b"[1, 2]"),
        ("model.json a number", "model.json", b"42"),
        ("model.json NaN literal", "model.json", b"NaN"),
        ("model.json 100000-deep lists", "model.json", b"[" * 100000 + b"]" * 100000),
        ("model.json 100000-deep objects", "model.json", b'{"a":' * 100000 + b"1" + b"}" * 100000),
        ("model.json options.x 500-deep", "model.json",
         with_doc(lambda d: d.update(options={**d["options"], "x": json.loads('{"a":' * 500 + "1" + "}" * 500)}))),
        ("model.json duplicate keys", "model.json", js.replace(b'"method"', b'"method": "nosuch", "method"', 1), False),
        ("model.json with a BOM", "model.json", b"\xef\xbb\xbf" + js, False),
        ("model.json 1e400 tau (inf)", "model.json", with_doc(set_(("tau",), 0.5)).replace(b"0.5", b"1e400", 1), False),
        ("model.json huge integer", "model.json", with_doc(set_(("n_trained",), 1)).replace(b'"n_trained": 1',
                                                                                            b'"n_trained": ' + b"9" * 5000, 1)),
    ):
        kw = {"json_bytes": data} if fname == "model.json" else {"st_bytes": data}
        new(label, must[0] if must else True, **kw)
    # files that are missing or not regular files
    def unlink(name: str) -> Callable[[Path], None]:
        return lambda d: (d / name).unlink()

    def fifo(name: str) -> Callable[[Path], None]:
        return lambda d: ((d / name).unlink(), os.mkfifo(d / name))

    def link(name: str, target: str) -> Callable[[Path], None]:
        return lambda d: ((d / name).unlink(), os.symlink(target, d / name))

    def mkdir(name: str) -> Callable[[Path], None]:
        return lambda d: ((d / name).unlink(), (d / name).mkdir())

    for label, edit in (("model.json missing", unlink("model.json")), ("model.safetensors missing", unlink("model.safetensors")),
                        ("model.json a FIFO", fifo("model.json")), ("model.safetensors a FIFO", fifo("model.safetensors")),
                        ("model.json -> /dev/zero", link("model.json", "/dev/zero")),
                        ("model.safetensors -> /dev/zero", link("model.safetensors", "/dev/zero")),
                        ("model.json a directory", mkdir("model.json")),
                        ("model.safetensors a directory", mkdir("model.safetensors")),
                        ("model.json a dangling link", link("model.json", "/nonexistent/x.json"))):
        new(label, True, edit=edit)
    # sparse huge safetensors (not read whole)
    def sparse(d: Path) -> None:
        with open(d / "model.safetensors", "r+b") as fh:
            fh.truncate(5 * GIB)
    new("model.safetensors sparse 5 GiB", True, edit=sparse)
    if quick:
        keep = {0} | set(random.Random(seed).sample(range(1, len(cases)), 19))
        cases = [c for c in cases if c.id in keep]
    return cases


def fuzz_bundles(tmp: Path, seed: int, quick: bool, jobs: int, bundle: Path) -> Area:
    area = Area("bundles")
    t0 = time.monotonic()
    cases = build_bundle_cases(tmp / "bundles", bundle, seed, quick)
    print(f"  bundles: {len(cases)} corrupt bundles", file=sys.stderr)
    results = Pool("bundle", tmp, n=jobs, timeout=60.0).run([{"id": c.id, "dir": str(c.dir)} for c in cases])
    intact = results.get(0, {})
    step = 14
    sample = [c for c in cases if c.id % step == 0] if not quick else [c for c in cases][:: max(1, len(cases) // 2)][:2]
    cli = dict(zip([c.id for c in sample], cli_many(
        [[_osma_cli(), "sources", str(c.dir), "--device", "cpu"] for c in sample], 120, jobs)))
    for c in cases:
        r = results.get(c.id, {"status": "missing"})
        v = classify_bundle(c, r, intact)
        if c.id in cli:
            v = worst(v, classify_bundle_cli(c, cli[c.id], v[0]))
        area.record(c.label, *v)
    area.notes.append(f"osma sources run on {len(cli)} bundles")
    area.seconds = time.monotonic() - t0
    return area


def _same_predictions(a: dict, b: dict) -> bool:
    import numpy as np

    if a.get("classes") != b.get("classes") or a.get("pred") != b.get("pred"):
        return False
    for k in ("score", "class_scores"):
        x, y = np.asarray(a.get(k), np.float64), np.asarray(b.get(k), np.float64)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=False):
            return False
    return True


def classify_bundle(c: BundleCase, r: dict, intact: dict) -> tuple[str, str]:
    st = r.get("status")
    if st == "ok":
        if c.id == 0:
            return "accepted", "loads"
        if intact.get("status") != "ok":
            return ("silent" if c.must else "accepted"), "loaded (intact bundle did not load: cannot compare)"
        if c.must:
            return "silent", f"loaded; must be refused (classes {short(r.get('classes'), 60)})"
        if _same_predictions(r, intact):
            return "accepted", "loaded, predictions equal the intact bundle's (harmless)"
        return "silent", f"loaded with other predictions/classes: classes {short(r.get('classes'), 60)}, pred {r.get('pred')}"
    if exc_refused(r, ("ValueError", "FileNotFoundError")):
        msg = r.get("msg", "")
        if c.id == 0:
            return "false_ref", f"the intact bundle does not load: {short(msg)}"
        if "model.json" not in msg and "model.safetensors" not in msg:
            return "unclear", f"{r.get('type')} names neither model.json nor model.safetensors: {short(msg)}"
        return "handled", f"{r.get('type')}: {short(msg, 100)}"
    return "crashed", crash_detail(r)


def classify_bundle_cli(c: BundleCase, res: tuple[int | None, str, str, float], lib: str) -> tuple[str, str]:
    rc, so, se, _ = res
    if rc is None:
        return "crashed", "osma sources: no exit within 120 s"
    text = so + se
    lines = [ln for ln in se.splitlines() if ln.strip()]
    if "Traceback" in text:
        return "crashed", f"osma sources: exit {rc} with a traceback: {short(lines[-1] if lines else '')}"
    if rc == 0:
        return ("accepted", "osma sources: exit 0") if lib == "accepted" else ("silent", "osma sources: exit 0")
    if rc != 2:
        return "crashed", f"osma sources: exit {rc} (not 2): {short(lines[-1] if lines else so[-200:])}"
    out_lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(out_lines) != 1 or not out_lines[0].startswith("error: "):
        return "unclear", f"osma sources: exit 2 but {len(out_lines)} lines: {short(out_lines[:2])}"
    if "model.json" not in out_lines[0] and "model.safetensors" not in out_lines[0]:
        return "unclear", f"osma sources: the error names neither file: {short(out_lines[0])}"
    return "handled", f"osma sources: {short(out_lines[0], 100)}"


# =============================================================================== http
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(parts: list[tuple[str, str | None, bytes, str]], boundary: str = "fuzzboundary1234") -> tuple[bytes, str]:
    """(body, content type) for multipart parts (field, filename or None, data, part content type)."""
    out = b""
    for fld, fname, data, ctype in parts:
        disp = f'form-data; name="{fld}"' + (f'; filename="{fname}"' if fname is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def _request(method: str, path: str, body: bytes = b"", ctype: str | None = None, headers: dict | None = None,
             length: int | None = None) -> bytes:
    h = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if ctype:
        h.append(f"Content-Type: {ctype}")
    if body or length is not None or method in ("POST", "PUT"):
        h.append(f"Content-Length: {len(body) if length is None else length}")
    for k, v in (headers or {}).items():
        h.append(f"{k}: {v}")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


@dataclass
class HttpCase:
    label: str
    data: bytes | Callable[[socket.socket], None]
    expect: str  # "4xx" | "200" | "any" (2xx or 4xx)
    allow_close: bool = False  # closing without an answer counts as handled
    codes: tuple[int, ...] = ()  # other status codes that count as handled
    doc: tuple[int, ...] = ()  # the documented status (another 4xx is "unclear")


def _read_status(sock: socket.socket, deadline: float) -> tuple[int | None, bool]:
    """(status code or None, closed): reads until a status line, EOF or the deadline."""
    buf = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, OSError):
            return (_status_of(buf), True)
        if not chunk:
            return (_status_of(buf), True)
        buf += chunk
        st = _status_of(buf)
        if st is not None:
            return st, False
    return _status_of(buf), False


def _status_of(buf: bytes) -> int | None:
    m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", buf)
    return int(m.group(1)) if m else None


def http_one(port: int, case: HttpCase, wait: float) -> tuple[str, str]:
    t0 = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        return "crashed", f"cannot connect: {exc}"
    with sock:
        try:
            if callable(case.data):
                case.data(sock)
            else:
                sock.sendall(case.data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as exc:
            sent_err = exc
        else:
            sent_err = None
        status, closed = _read_status(sock, t0 + wait)
    secs = time.monotonic() - t0
    return classify_http(case, status, closed, secs, sent_err)


def classify_http(case: HttpCase, status: int | None, closed: bool, secs: float, sent_err: Any) -> tuple[str, str]:
    where = f"{status or 'no answer'}{' (closed)' if closed and status is None else ''} after {secs:.1f} s"
    if status is None:
        if closed and case.allow_close:
            return "handled", f"closed without an answer after {secs:.1f} s"
        return "crashed", f"{'closed' if closed else 'no answer'} after {secs:.1f} s" + (f" (send: {sent_err})" if sent_err else "")
    if status in case.codes:
        return "handled", where
    if 500 <= status:
        return "crashed", where
    if case.expect == "200":
        return ("accepted", where) if status == 200 else ("false_ref", where)
    if case.expect == "any":
        return ("accepted" if status < 300 else "handled"), where
    if 400 <= status < 500:
        if case.doc and status not in case.doc:
            return "unclear", f"{where}; the documented status is {case.doc[0]}"
        return "handled", where
    return "silent", f"{where}; a 4xx was expected"


def _chunked_over(limit_mb: float, total_mb: float, note: dict) -> Callable[[socket.socket], None]:
    def send(sock: socket.socket) -> None:
        body_png = b"x" * 65536
        head = (b"POST /v1/attribute HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=fuzzboundary1234\r\nConnection: close\r\n\r\n")
        sock.sendall(head)
        sent = 0
        pre = (b'--fuzzboundary1234\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n" % (len(pre), pre))
        sock.settimeout(10)
        note["sent"] = 0
        while sent < total_mb * 1e6:
            r, _, _ = select.select([sock], [], [], 0)
            if r:  # an answer (413) arrived: stop
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(body_png), body_png))
            sent += len(body_png)
            note["sent"] = sent
        if sent >= total_mb * 1e6:
            sock.sendall(b"0\r\n\r\n")
    return send


def fuzz_http(tmp: Path, seed: int, quick: bool, jobs: int, bundle: Path) -> Area:
    area = Area("http")
    t0 = time.monotonic()
    rng = random.Random(seed + 4)
    rc, help_text, _, _ = run_cmd([_osma_cli(), "serve", "--help"], 60)
    port = _free_port()
    read_timeout = 4.0
    max_conn = 24
    args = [_osma_cli(), "serve", str(bundle), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
            "--max-upload-mb", "1"]
    if "--read-timeout" in help_text:
        args += ["--read-timeout", str(read_timeout)]
        documented = read_timeout
    else:
        documented = 30.0  # issue 12: "a stalled request is answered or closed within 30 s by default"
        area.notes.append("osma serve has no --read-timeout: the default 30 s is assumed")
    if "--max-connections" in help_text:
        args += ["--max-connections", str(max_conn)]
    else:
        max_conn = 0
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        if not _wait_healthy(port, server, 120):
            area.extra_failure("crashed", "osma serve", "did not become healthy in 120 s: " +
                               short((tmp / "server.log").read_text(errors="replace")[-300:]))
            area.seconds = time.monotonic() - t0
            return area
        cases = http_cases(rng, quick)
        wait = documented + 10
        with ThreadPoolExecutor(max_workers=8) as ex:
            verdicts = list(ex.map(lambda c: http_one(port, c, wait), cases))
        for c, v in zip(cases, verdicts):
            area.record(c.label, *v)
        # a chunked body above --max-upload-mb: answered 413 before it is all sent
        note: dict = {}
        big = HttpCase("chunked body of 20 MB above --max-upload-mb 1", _chunked_over(1, 20, note), "4xx",
                       allow_close=True)
        v = http_one(port, big, wait)
        if v[0] == "handled" and note.get("sent", 0) >= 20e6:
            v = ("silent", f"{v[1]}, but only after the whole 20 MB body was sent")
        area.record(big.label, v[0], v[1] + f" (sent {note.get('sent', 0) / 1e6:.1f} MB)")
        slow_clients(area, port, documented, quick)
        if max_conn:
            flood(area, port, max_conn, documented)
        ok = _get_status(port, "/healthz", 15)
        if ok != 200:
            area.extra_failure("crashed", "GET /healthz after the fuzzing", f"answered {ok}: the server is gone")
        elif server.poll() is not None:
            area.extra_failure("crashed", "osma serve", f"exited with {server.returncode}")
        try:
            status = Path(f"/proc/{server.pid}/status").read_text()
            hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
            if hwm:
                area.peak_mb = int(hwm.group(1)) / 1024
                area.notes.append(f"server peak RSS (VmHWM) {area.peak_mb:.0f} MB")
        except OSError:
            pass
    finally:
        with contextlib.suppress(OSError):
            os.killpg(server.pid, 15)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(server.pid, 9)
            server.wait()
        log.close()
    tb = (tmp / "server.log").read_text(errors="replace").count("Traceback")
    if tb:
        area.notes.append(f"server log holds {tb} traceback(s) ({tmp / 'server.log'})")
    area.held = area.counts["held"]
    area.seconds = time.monotonic() - t0
    return area


def _wait_healthy(port: int, server: subprocess.Popen, limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if server.poll() is not None:
            return False
        if _get_status(port, "/healthz", 2) == 200:
            return True
        time.sleep(0.3)
    return False


def _get_status(port: int, path: str, timeout: float) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(_request("GET", path))
            return _read_status(s, time.monotonic() + timeout)[0]
    except OSError:
        return None


def http_cases(rng: random.Random, quick: bool) -> list[HttpCase]:
    from PIL import Image

    arr = _content(40, 36, 5)
    png = _pil(Image.fromarray(arr), "PNG")
    jpg = _pil(Image.fromarray(arr), "JPEG", quality=90)
    png16 = png_raw(64, 64, 16, 2, (bytes(rng.randbytes(64 * 6)) for _ in range(64)))

    def post(files: list[tuple[str, bytes]], query: str = "", field_name: str = "files",
             ctype: str = "image/png") -> bytes:
        body, ct = _multipart([(field_name, n, d, ctype) for n, d in files])
        return _request("POST", "/v1/attribute" + query, body, ct)

    cases = [
        HttpCase("GET /healthz", _request("GET", "/healthz"), "200"),
        HttpCase("GET /v1/sources", _request("GET", "/v1/sources"), "200"),
        HttpCase("POST a valid PNG", post([("a.png", png)]), "200"),
        HttpCase("POST a valid JPEG and a 16-bit PNG", post([("a.jpg", jpg), ("b.png", png16)]), "200"),
        HttpCase("tau=inf", post([("a.png", png)], "?tau=inf"), "200"),
        HttpCase("tau=-inf", post([("a.png", png)], "?tau=-inf"), "200"),
        HttpCase("tau=0.5", post([("a.png", png)], "?tau=0.5"), "200"),
    ]
    for tau in ("nan", "NaN", "-nan", "abc", "", "1e999999x", "0x10", "nan(1)", "%00"):
        cases.append(HttpCase(f"tau={tau!r}", post([("a.png", png)], f"?tau={tau}"), "4xx"))
    cases.append(HttpCase("tau=1e999 (overflows to inf)", post([("a.png", png)], "?tau=1e999"), "any"))
    half_jpg = jpg[: len(jpg) // 2] + b"\xff\xd9"
    for label, data, codes in (
        ("EPS named .png", EPS, (415,)), ("text named .png", b"hello", (415,)), ("PDF named .png", PDF, (415,)),
        ("truncated PNG", png[: len(png) // 2], (422,)), ("half JPEG + EOI", half_jpg, (422,)),
        ("PNG header 60000x60000", patch_png_size(png, 60000, 60000), (413,)), ("empty file", b"", (422,)),
        ("zip named .png", b"PK\x03\x04" + rng.randbytes(200), (415,)),
    ):
        cases.append(HttpCase(f"upload: {label} (documented {codes[0]})", post([("x.png", data)]), "4xx", doc=codes))
    n_random = 20 if not quick else 4
    for k in range(n_random):
        n = rng.choice([1, 2, 16, 100, 1000, 4000])
        cases.append(HttpCase(f"random bytes as the request #{k} ({n} bytes)", rng.randbytes(n) + b"\r\n\r\n", "4xx",
                              allow_close=True))
    png_part = png
    bad_multipart = [
        ("no closing boundary", b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + png_part,
         "multipart/form-data; boundary=B"),
        ("boundary mismatch", _multipart([("files", "a.png", png_part, "image/png")], "AAA")[0],
         "multipart/form-data; boundary=BBB"),
        ("no boundary parameter", _multipart([("files", "a.png", png_part, "image/png")])[0], "multipart/form-data"),
        ("garbage body", rng.randbytes(500), "multipart/form-data; boundary=B"),
        ("part without Content-Disposition", b"--B\r\nContent-Type: image/png\r\n\r\n" + png_part + b"\r\n--B--\r\n",
         "multipart/form-data; boundary=B"),
        ("field 'file' instead of 'files'", *_multipart([("file", "a.png", png_part, "image/png")])),
        ("'files' as a text field", *_multipart([("files", None, b"not a file", "text/plain")])),
        ("no parts", b"--B--\r\n", "multipart/form-data; boundary=B"),
        ("part header of 100 KB", b'--B\r\nContent-Disposition: form-data; name="files"; filename="' + b"a" * 100000
         + b'.png"\r\n\r\n' + png_part + b"\r\n--B--\r\n", "multipart/form-data; boundary=B"),
        ("500 empty files", *_multipart([("files", f"{i}.png", b"", "image/png") for i in range(500)])),
        ("filename with NUL and ../", *_multipart([("files", "../../\x00evil.png", b"junk", "image/png")])),
        ("unterminated part headers", b'--B\r\nContent-Disposition: form-data; name="files"', "multipart/form-data; boundary=B"),
    ]
    for label, body, ct in bad_multipart:
        cases.append(HttpCase(f"malformed multipart: {label}", _request("POST", "/v1/attribute", body, ct), "4xx"))
    for label, body, ct in (
        ("application/json", b'{"files": []}', "application/json"), ("text/plain", b"files=abc", "text/plain"),
        ("x-www-form-urlencoded", b"files=abc", "application/x-www-form-urlencoded"),
        ("octet-stream PNG", png, "application/octet-stream"), ("no content type", png, None),
        ("multipart/mixed", _multipart([("files", "a.png", png, "image/png")])[0], "multipart/mixed; boundary=fuzzboundary1234"),
        ("image/png body", png, "image/png"),
    ):
        cases.append(HttpCase(f"wrong content type: {label}", _request("POST", "/v1/attribute", body, ct), "4xx"))
    cases += [
        HttpCase("one header of 100 KB (server.py: headers bounded by h11's 16 KiB)", _request("GET", "/healthz", headers={"X-Big": "a" * 100000}), "4xx", allow_close=True),
        HttpCase("one header of 4 MB", _request("GET", "/healthz", headers={"X-Big": "a" * 4_000_000}), "4xx",
                 allow_close=True),
        HttpCase("2000 headers of 50 bytes (100 KB; server.py: headers bounded by h11's 16 KiB)", _request("GET", "/healthz", headers={f"X-H{i}": "v" * 40 for i in range(2000)}), "4xx",
                 allow_close=True),
        HttpCase("URL of 100 KB", _request("GET", "/" + "a" * 100000), "4xx", allow_close=True),
        HttpCase("Content-Length larger than the body",
                 _request("POST", "/v1/attribute", post([("a.png", png)]).split(b"\r\n\r\n", 1)[1][:100],
                          "multipart/form-data; boundary=fuzzboundary1234", length=10000), "4xx", allow_close=True),
        HttpCase("Content-Length 50 MB (headers only)",
                 _request("POST", "/v1/attribute", b"", "multipart/form-data; boundary=B", length=50_000_000), "4xx",
                 allow_close=True),
        HttpCase("negative Content-Length", _request("POST", "/v1/attribute", b"", "multipart/form-data; boundary=B",
                                                     length=-5), "4xx", allow_close=True),
        HttpCase("Content-Length not a number", _request("POST", "/v1/attribute", b"", None, headers={}).replace(
            b"Content-Length: 0", b"Content-Length: abc"), "4xx", allow_close=True),
        HttpCase("Content-Length and chunked", _request("POST", "/v1/attribute", b"0\r\n\r\n", "multipart/form-data; boundary=B",
                                                        headers={"Transfer-Encoding": "chunked"}), "4xx", allow_close=True),
        HttpCase("bad chunk size", b"POST /v1/attribute HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Type: multipart/form-data; boundary=B\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", "4xx", allow_close=True),
        HttpCase("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "4xx", allow_close=True, codes=(505,)),
        HttpCase("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", "any", allow_close=True, codes=(505,)),
        HttpCase("no Host header (HTTP/1.1)", b"GET /healthz HTTP/1.1\r\n\r\n", "4xx", allow_close=True),
        HttpCase("PUT /v1/attribute", _request("PUT", "/v1/attribute", b"x"), "4xx"),
        HttpCase("GET /v1/attribute", _request("GET", "/v1/attribute"), "4xx"),
        HttpCase("DELETE /healthz", _request("DELETE", "/healthz"), "4xx"),
        HttpCase("GET /no/such/path", _request("GET", "/no/such/path"), "4xx"),
        HttpCase("GET /../../etc/passwd", _request("GET", "/../../etc/passwd"), "4xx"),
        HttpCase("header with NUL", _request("GET", "/healthz", headers={"X-A": "a\x00b"}), "4xx", allow_close=True),
        HttpCase("bare LF line ends", b"GET /healthz HTTP/1.1\nHost: x\n\n", "any", allow_close=True),
        HttpCase("a request line only, then nothing", b"GET /healthz HTTP/1.1\r\n", "4xx", allow_close=True),
        HttpCase("connect and send nothing", b"", "4xx", allow_close=True),
    ]
    return cases


def slow_clients(area: Area, port: int, documented: float, quick: bool) -> None:
    """N=20 connections sending 1 byte per 0.5 s for at most 15 s; held = still open at
    the documented read timeout + 5 s."""
    n = 20 if not quick else 6
    limit = 15.0
    hold_at = documented + 5.0
    state: list[dict] = [{} for _ in range(n)]
    body, ct = _multipart([("files", "a.png", b"\x89PNG" + bytes(2000), "image/png")])
    full = _request("POST", "/v1/attribute", body, ct)
    head, rest = full.split(b"\r\n\r\n", 1)

    def client(i: int) -> None:
        st = state[i]
        slow_head = i % 2 == 0
        t0 = time.monotonic()
        st["t0"] = t0
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as exc:
            st.update(result="crashed", detail=f"cannot connect: {exc}")
            return
        with sock:
            data = full if slow_head else rest
            if not slow_head:
                sock.sendall(head + b"\r\n\r\n")
            pos = 0
            sock.setblocking(False)
            while time.monotonic() - t0 < limit:
                try:
                    chunk = sock.recv(4096)
                    if not chunk:
                        st.update(closed_at=time.monotonic() - t0)
                        return
                    st.setdefault("answer", b"")
                    st["answer"] += chunk
                    st.setdefault("answered_at", time.monotonic() - t0)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    st.update(closed_at=time.monotonic() - t0)
                    return
                if pos < len(data):
                    try:
                        sock.send(data[pos:pos + 1])
                        pos += 1
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        st.update(closed_at=time.monotonic() - t0)
                        return
                time.sleep(0.5)
            st.update(open_at_end=True)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    ctl = _get_status(port, "/healthz", 10)
    for t in threads:
        t.join(limit + 15)
    if ctl != 200:
        area.record(f"GET /healthz while {n} slow clients are connected", "crashed", f"answered {ctl}: the server is held")
    else:
        area.record(f"GET /healthz while {n} slow clients are connected", "accepted", "200")
    for i, st in enumerate(state):
        kind = "slow headers" if i % 2 == 0 else "slow body"
        label = f"slow client #{i} ({kind}, 1 byte / 0.5 s)"
        if "result" in st:
            area.record(label, st["result"], st["detail"])
            continue
        status = _status_of(st.get("answer", b""))
        ended = st.get("closed_at", st.get("answered_at"))
        if status is not None and status >= 500 and status != 503:
            area.record(label, "crashed", f"answered {status}")
        elif ended is not None and ended <= hold_at:
            area.record(label, "handled", f"{status or 'closed'} after {ended:.1f} s")
        else:
            area.record(label, "held", f"still open after {hold_at:.0f} s (read timeout {documented:g} s + 5 s)"
                        + (f"; {status or 'closed'} at {ended:.1f} s" if ended else "; open at the end of the 15 s test"))


def flood(area: Area, port: int, max_conn: int, documented: float) -> None:
    """max_connections + 8 idle connections: the extra ones get 503 at once, the others 408/close
    within the read timeout; then the server answers again."""
    socks = []
    for _ in range(max_conn + 8):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            socks.append(None)
    deadline = time.monotonic() + documented + 5
    codes = []
    for s in socks:
        if s is None:
            codes.append("refused")
            continue
        st, closed = _read_status(s, deadline)
        codes.append(st if st is not None else ("closed" if closed else "open"))
        s.close()
    c = Counter(codes)
    label = f"{max_conn + 8} idle connections (--max-connections {max_conn})"
    still = c.get("open", 0)
    if still:
        area.record(label, "held", f"{still} still open after {documented + 5:.0f} s: {dict(c)}")
    elif any(isinstance(k, int) and k >= 500 and k != 503 for k in c):
        area.record(label, "crashed", f"answers {dict(c)}")
    elif c.get(503, 0) < 8:
        area.record(label, "unclear", f"fewer than 8 answered 503: {dict(c)}")
    else:
        area.record(label, "handled", f"answers {dict(c)}")
    time.sleep(0.5)
    st = _get_status(port, "/healthz", 10)
    area.record("GET /healthz after the flood", "accepted" if st == 200 else "crashed", f"{st}")


# =============================================================================== main
def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
        return head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def table(areas: list[Area]) -> str:
    cols = ["area", "tried", "handled", "accepted", "silent", "false_ref", "unclear", "crashed", "lost", "dup", "held",
            "peak_MB", "secs"]
    rows = []
    for a in areas:
        def opt(x: Any, fmt: str = "{}") -> str:
            return "-" if x is None else fmt.format(x)
        rows.append([a.name, str(a.tried), str(a.counts["handled"]), str(a.counts["accepted"]), str(a.counts["silent"]),
                     str(a.counts["false_ref"]), str(a.counts["unclear"]), str(a.crashed),
                     opt(a.lost), opt(a.dup), opt(a.held), opt(a.peak_mb, "{:.0f}"), f"{a.seconds:.0f}"])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


LEGEND = """\
handled: refused with a message naming the file (4xx for http) | accepted: decoded/passed/loaded where allowed
silent: accepted where it must be refused | false_ref: a valid input refused | unclear: refused without naming the file
crashed: other exception, traceback, hang, dead worker, 5xx or no answer (plus whole-run crashes of osma attribute)
lost: corpus entries without a row in osma attribute --out (jsonl; csv too in the full run) | dup: duplicated rows
held: connections open after the read timeout + 5 s (http)
peak_MB: images: the worst single image, decoded alone in a fresh process (peak RSS added by load_image:
VmHWM after - VmRSS before; ru_maxrss is inherited from the parent across fork+exec); http: the server's VmHWM"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--areas", default=",".join(AREAS))
    ap.add_argument("--quick", action="store_true", help="a small subset (seconds): what tests/test_fuzz.py runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--keep", type=Path, default=None, help="build the corpora in DIR and keep them")
    ap.add_argument("--max-failures", type=int, default=20, help="failing cases printed per area")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    ap.add_argument("--verbose", action="store_true", help="print every case with its verdict")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--mem-cap", type=int, default=MEM_CAP, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        _worker_main(a.worker, a.mem_cap)
        return 0
    areas = [x.strip() for x in a.areas.split(",") if x.strip()]
    unknown = [x for x in areas if x not in AREAS]
    if unknown:
        ap.error(f"unknown area(s) {unknown}; choose from {', '.join(AREAS)}")
    summary = run(areas, seed=a.seed, quick=a.quick, jobs=a.jobs, keep=a.keep, max_failures=a.max_failures,
                  verbose=a.verbose)
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2))
    return 1 if any(v["failed"] for v in summary.values()) else 0


def run(areas: Iterable[str], *, seed: int = 0, quick: bool = False, jobs: int = 2, keep: Path | None = None,
        max_failures: int = 20, out: Any = None, verbose: bool = False) -> dict[str, dict]:
    """Run the areas, print the table and the failing cases; return a summary per area."""
    out = out or sys.stdout
    areas = list(areas)
    started = datetime.datetime.now().astimezone()
    t_start = time.monotonic()
    ctx = contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory(prefix="osma-fuzz-")
    results: list[Area] = []
    with ctx as tmpname:
        tmp = Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        _TMP[:] = [str(tmp.resolve()), str(tmp)]
        print(f"fuzz: corpora in {tmp}", file=sys.stderr)
        bundle = None
        if {"images", "bundles", "http"} & set(areas):
            t = time.monotonic()
            bundle = train_bundle(tmp)
            print(f"  tiny bundle trained in {time.monotonic() - t:.0f} s", file=sys.stderr)
        for name in areas:
            print(f"fuzz: {name} ...", file=sys.stderr)
            try:
                if name == "images":
                    results.append(fuzz_images(tmp, seed, quick, jobs, bundle))
                elif name == "lists":
                    results.append(fuzz_lists(tmp, seed, quick, jobs))
                elif name == "bundles":
                    results.append(fuzz_bundles(tmp, seed, quick, jobs, bundle))
                elif name == "http":
                    results.append(fuzz_http(tmp, seed, quick, jobs, bundle))
            except Exception as exc:  # noqa: BLE001 - a broken area must not hide the others
                ar = Area(name)
                ar.extra_failure("crashed", "the fuzzer itself", f"{type(exc).__name__}: {exc}")
                ar.notes.append(traceback.format_exc()[-1500:])
                results.append(ar)
        _unlock(tmp)
    w = out.write
    w(f"osma fuzz: seed {seed}, {'quick' if quick else 'full'}, areas {','.join(areas)}; {started:%Y-%m-%d %H:%M %Z}; "
      f"commit {git_state()}; {time.monotonic() - t_start:.0f} s\n\n")
    w(table(results) + "\n\n" + LEGEND + "\n")
    for ar in results:
        if verbose:
            w(f"\n[{ar.name}] every case\n" + "".join(f"  {v:9s} {short(c, 120)}: {short(d, 400)}\n" for v, c, d in ar.log))
        if ar.notes:
            w(f"\n[{ar.name}] notes\n" + "".join(
                "  " + n.encode("utf-8", "backslashreplace").decode() + "\n" for n in ar.notes))
        if ar.failures:
            kinds = Counter(k for k, _, _ in ar.failures)
            w(f"\n[{ar.name}] failing cases ({', '.join(f'{v} {k}' for k, v in kinds.most_common())}); "
              f"first {min(max_failures, len(ar.failures))}:\n")
            order = ["crashed", "lost", "dup", "held", "over-bound", "silent", "unclear", "false_ref"]
            ranked = sorted(ar.failures, key=lambda f: order.index(f[0]) if f[0] in order else len(order))
            for k, case, detail in ranked[:max_failures]:
                w(f"  {k:9s} {short(case, 120)}: {short(detail, 400)}\n")
    out.flush()
    return {ar.name: {"tried": ar.tried, **{k: ar.counts[k] for k in VERDICTS},
                      "crashed": ar.crashed,
                      "lost": ar.lost, "dup": ar.dup, "held": ar.held, "peak_mb": ar.peak_mb, "failed": ar.n_failed,
                      "failures": [list(f) for f in ar.failures]} for ar in results}


def _unlock(tmp: Path) -> None:
    """Make everything removable (mode-000 files) and remove FIFOs before the temp dir goes."""
    for dirpath, dirnames, filenames in os.walk(tmp):
        for n in filenames + dirnames:
            p = os.path.join(dirpath, n)
            with contextlib.suppress(OSError):
                if not os.path.islink(p):
                    os.chmod(p, 0o700 if os.path.isdir(p) else 0o600)


if __name__ == "__main__":
    sys.exit(main())
