"""Throughput of osma on this machine, side by side in one run (issue 17).

    .venv/bin/python bench/throughput.py [--quick] [--crops 32,64,128] [--device cpu]
        [--seconds 3] [--precisions fp32,bf16] [--client raw|httpx] [--json OUT.json]

Rows, each with a ratio to its reference and the peak resident memory of the process
that ran it (``ru_maxrss`` from ``os.wait4``; a process's peak so far when it ran several
rows, noted ``*``):

* ``matmul``: fp32 and bf16 matrix multiply (n x n, n = 2048) in GFLOP/s; reference: fp32.
* ``forward``: the embedding network alone (an untrained ``softmax`` bundle's simple_cnn, batch
  256, the one inference path ``NetworkMethod._embed_pixels``) per crop and precision, in
  images/s (note: the GFLOP/s that is, from torch's FLOP counter); reference: fp32 at that
  crop. ``forward nchw``: the same with the input in the
  default layout instead of channels-last (``osma.precision.channels_last``), measured in
  alternation with ``forward``; reference: ``forward``.
* ``decode``: one thread decoding a folder of crop-sized PNGs and one of JPEGs (quality 90),
  ``osma.images.load_image`` (bounds, integrity checks: a JPEG is decoded twice, see its
  docstring) and plain Pillow (``Image.open(...).convert("RGB")``) in alternation, images per
  second of the thread's CPU time; reference: Pillow on the same files.
* ``attribute``: ``osma attribute`` end to end (model load, decode, crop, embed, score, JSONL
  written) on a folder of crop-sized PNGs and one of JPEGs, per crop and precision;
  reference: ``forward`` at that crop and precision (issue 17 asks for >= 0.80).
* ``server``: ``osma serve`` (its own process, precision auto) under 1, 10 and 50
  concurrent clients (the load generator in its own process, ``--client raw`` a plain
  socket per client, ``httpx`` an ``httpx.Client``; one crop-sized PNG per request), batching
  on (defaults) and off (``--max-batch 1``), and the defaults with a model that costs nothing
  (``no network``: each prediction a copy of one row, i.e. the HTTP path alone: receive,
  parse, decode, crop, batcher, JSON), the four servers up at once and loaded in turn, the
  order rotating per client count: requests/s, p50, p99, the load generator's CPU ms per
  request; ``bare ASGI app``: no FastAPI, no osma, an app that reads the body and answers a
  fixed row, on the same uvicorn configuration (the transport's floor). Reference: the same
  clients with batching off (for the ``off`` rows: ``attribute`` PNG fp32 at that crop, i.e.
  the share of the offline rate the server reaches; for ``no network`` and ``bare ASGI
  app``: batching on, with the network).
* ``train``: softmax, pose and metric training, images/s of the second epoch (the
  trainer's own epoch time, train_log.jsonl) on synthetic crop-sized images, 4 classes, 8
  per class per batch; reference: softmax at that crop. POSE also with
  ``forwards=shared`` and ``concat`` (3 network passes a step instead of 5), whose
  reference is POSE's default at that crop.

``--sections train,forward`` runs only those (``matmul``, ``forward``, ``decode``, ``attribute``,
``server``, ``train``; a ratio whose reference was not run is left out).

``--quick`` runs everything at a tiny size (crop 32, few images, short windows) to check
that the script works; its numbers mean nothing. Every row runs in a fresh process, one
after the other: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
CLASSES = ["real", "gan_a", "gan_b", "gan_c"]


# --- the measurements (each runs in its own process: ``--section NAME --params JSON``) ------
def _timed(fn, seconds: float) -> tuple[int, float]:  # noqa: ANN001
    """Call ``fn`` (after one warm-up call) until ``seconds`` have passed; (calls, seconds)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n, dt


def sec_matmul(p: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    n, rows = int(p["n"]), []
    dev = torch.device(p["device"])
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name not in p["precisions"]:
            continue
        a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        calls, secs = _timed(lambda: (a @ b, sync()), p["seconds"])  # noqa: B023
        rows.append({"what": "matmul", "precision": name, "value": 2 * n**3 * calls / secs / 1e9, "unit": "GFLOP/s"})
    return rows


def _model(crop: int, device: str, precision: str = "fp32"):  # noqa: ANN202 - a softmax NetworkMethod
    import numpy as np

    from osma.methods import METHODS

    m = METHODS["softmax"](CLASSES, preprocess={"crop": crop}, options={"workers": 0}, device=device)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(64, m.opts.embed_dim)).astype(np.float32)
    m.fit_score(emb, np.arange(64) % len(CLASSES))
    m.set_precision(precision)
    return m


def sec_forward(p: dict[str, Any]) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    rows = []
    batch = np.random.default_rng(0).integers(0, 256, (int(p["batch"]), p["crop"], p["crop"], 3), dtype=np.uint8)
    for prec in p["precisions"]:
        m = _model(p["crop"], p["device"], prec)
        m.train_mode(False)
        x = m.input_tensor(batch)
        # osma's layout (channels-last where measured faster) and the default NCHW layout, alternately
        total = {True: [0, 0.0], False: [0, 0.0]}
        with torch.no_grad():
            for i in range(4):
                for cl in ((True, False) if i % 2 == 0 else (False, True)):
                    m.channels_last = cl
                    calls, secs = _timed(lambda: m._embed_pixels(x), p["seconds"] / 4)  # noqa: B023
                    total[cl][0] += calls
                    total[cl][1] += secs
        for cl, what in ((True, "forward"), (False, "forward nchw")):
            rate = total[cl][0] * len(batch) / total[cl][1]
            rows.append({"what": what, "crop": p["crop"], "precision": prec, "value": rate, "unit": "img/s",
                         "note": f"{rate * _flops_per_image(m) / 1e9:.0f} GFLOP/s"})
    return rows


def _flops_per_image(m) -> float:  # noqa: ANN001
    """FLOPs of one image through the model's input transform and backbone (a multiply-add
    counts 2, as in the matmul row), from torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, m.pre.crop, m.pre.crop, device=m.device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m.features(x)
    return float(fc.get_total_flops())


def _write_images(folder: Path, n: int, size: int, fmt: str) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        ext = "png" if fmt == "PNG" else "jpg"
        Image.fromarray(a).save(folder / f"{i:05d}.{ext}", format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def sec_attribute(p: dict[str, Any]) -> list[dict[str, Any]]:
    from typer.testing import CliRunner

    from osma.cli import app

    tmp = Path(p["tmp"])
    bundle = tmp / f"bundle{p['crop']}"
    rows = []
    warm = tmp / f"warm{p['crop']}"
    _write_images(warm, 1, p["crop"], "PNG")  # imports and first-call costs, not timed
    CliRunner().invoke(app, ["attribute", str(bundle), str(warm), "--format", "jsonl", "--device", p["device"]])
    for fmt in ("PNG", "JPEG"):
        folder = tmp / f"{fmt.lower()}{p['crop']}"
        _write_images(folder, int(p["images"]), p["crop"], fmt)
        for prec in p["precisions"]:
            out = tmp / f"out_{fmt}_{prec}_{p['crop']}.jsonl"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            r = CliRunner().invoke(app, ["attribute", str(bundle), str(folder), "--out", str(out), "--precision", prec,
                                         "--device", p["device"], "--batch-size", "256", "--no-progress",
                                         "--tau", "-inf"])
            secs = time.perf_counter() - t0
            if r.exit_code != 0:
                raise RuntimeError(f"osma attribute failed: {r.output}")
            rows.append({"what": f"attribute {fmt.lower()}", "crop": p["crop"], "precision": prec,
                         "value": int(p["images"]) / secs, "unit": "img/s"})
    return rows


def sec_decode(p: dict[str, Any]) -> list[dict[str, Any]]:
    """One thread decoding crop-sized files: osma's safe decode and plain Pillow, CPU time."""
    import numpy as np
    from PIL import Image

    from osma.images import load_image

    def pillow(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    rows = []
    for fmt in ("PNG", "JPEG"):
        folder = Path(p["tmp"]) / f"decode_{fmt.lower()}{p['crop']}"
        _write_images(folder, int(p["images"]), p["crop"], fmt)
        files = sorted(folder.iterdir())
        decoders = {"pillow": pillow, "osma": load_image}
        best = dict.fromkeys(decoders, 0.0)
        for fn in decoders.values():
            fn(files[0])  # first-call costs
        for _ in range(3):  # the two decoders in alternation, the fastest of three rounds kept
            for name, fn in decoders.items():
                t0 = time.thread_time()  # CPU time of this thread: little moved by other processes
                for f in files:
                    fn(f)
                best[name] = max(best[name], len(files) / (time.thread_time() - t0))
        rows += [{"what": f"decode {fmt.lower()} {name}", "crop": p["crop"], "precision": "", "value": v,
                  "unit": "img/s", "note": "1 thread, CPU time"} for name, v in best.items()]
    return rows


def sec_bundle(p: dict[str, Any]) -> list[dict[str, Any]]:
    _model(p["crop"], "cpu").save(Path(p["tmp"]) / f"bundle{p['crop']}")
    return []


def sec_loadgen(p: dict[str, Any]) -> list[dict[str, Any]]:
    """``clients`` threads, each with its own keep-alive connection, posting one PNG per request.

    ``client="raw"`` (default): the multipart request is built once and written to a plain
    socket, the answer read by its Content-Length (about 0.2 ms of CPU per request, so the
    load generator takes little of the cores the server runs on); ``client="httpx"``: an
    ``httpx.Client`` per thread (what a Python client costs, several ms per request). The CPU
    time of this process per request is reported (``client_cpu_ms``).
    """
    import socket
    import threading

    import numpy as np

    png = Path(p["png"]).read_bytes()
    kind = p.get("client", "raw")
    boundary = b"osmathroughput7d3f"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary + b"--\r\n")
    request = (b"POST /v1/attribute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary="
               + boundary + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    clock = {"t0": 0.0, "cpu0": 0.0}

    def begin() -> None:  # the window opens when every client is connected and ready
        clock["t0"] = time.perf_counter()
        t = os.times()
        clock["cpu0"] = t.user + t.system

    start = threading.Barrier(p["clients"], action=begin)

    def raw_post(s: socket.socket, buf: bytearray) -> int:
        s.sendall(request)
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        head = bytes(buf[:end]).lower()
        i = head.index(b"content-length:") + 15
        size = int(head[i:].split(b"\r\n", 1)[0])
        while len(buf) < end + 4 + size:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        del buf[:end + 4 + size]
        return int(head[9:12])

    def client() -> None:
        mine = 0
        if kind == "httpx":
            import httpx

            c = httpx.Client(timeout=60.0)
            url = f"http://127.0.0.1:{p['port']}/v1/attribute"

            def post() -> int:
                return c.post(url, files=[("files", ("x.png", png, "image/png"))]).status_code
        else:
            c = socket.create_connection(("127.0.0.1", p["port"]), timeout=60.0)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()

            def post() -> int:
                return raw_post(c, buf)
        with c:
            start.wait()
            while True:  # at least one request each; none started after the window
                t0 = time.perf_counter()
                if t0 >= clock["t0"] + p["seconds"] and mine:
                    break
                mine += 1
                status = post()
                dt = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(p["clients"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - clock["t0"]
    t = os.times()
    cpu = t.user + t.system - clock["cpu0"]
    a = np.array(lat) if lat else np.array([float("nan")])
    return [{"requests_per_s": len(lat) / secs, "p50_ms": 1000 * float(np.percentile(a, 50)),
             "p99_ms": 1000 * float(np.percentile(a, 99)), "errors": errors[0], "requests": len(lat),
             "client_cpu_ms": 1000 * cpu / max(len(lat) + errors[0], 1), "client": kind}]


def sec_serve(p: dict[str, Any]) -> list[dict[str, Any]]:
    """Not a measurement: a server for the ``server`` rows without the network. ``app="osma"``:
    ``osma.server.serve`` (what ``osma serve`` runs) on the bundle with a model whose every
    prediction is a copy of one row computed at start: the HTTP path alone (receive, parse,
    decode, crop, batcher, JSON); with ``network=True`` the real model; ``freeze=False``
    without :func:`osma.server.freeze_gc`; ``gc_stats=FILE``: every garbage collection's
    generation, end time and duration written to FILE (JSON lines) as it ends (bench/server_gc.py). ``app="bare"``: no FastAPI and no osma, a plain ASGI app that
    reads the body and answers that row's JSON, on the same uvicorn configuration
    (:func:`osma.server.server_config`: osma's guarded h11 protocol): the transport's floor."""
    import copy
    import warnings

    import numpy as np

    import osma
    from osma.server import serve, server_config

    model = osma.load(p["bundle"], device=p["device"])
    network = p["app"] == "osma" and p.get("network", False)
    if not network:  # the one row every answer copies
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = model.attribute_prepared([model.prepare(np.zeros((p["crop"], p["crop"], 3), np.uint8))], [None])[0]
    if p["app"] == "osma":
        if not network:
            model.attribute_prepared = lambda patches, taus: [copy.copy(row) for _ in patches]  # type: ignore[method-assign]
        if not p.get("freeze", True):
            import osma.server

            osma.server.freeze_gc = lambda: None  # serve() looks it up at call time
        if p.get("gc_stats"):
            _record_gc(Path(p["gc_stats"]))
        serve(model, port=p["port"])
        return []
    import uvicorn

    row.path = "x.png"
    answer = json.dumps({"results": [row.to_dict()]}).encode()

    async def app(scope: dict, receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    uvicorn.Server(server_config(app, port=p["port"])).run()
    return []


def _record_gc(path: Path) -> None:
    """Append every garbage collection (generation, end time, seconds) to ``path`` as it ends."""
    import gc

    out = path.open("a", buffering=1)
    out.write(json.dumps({"objects": len(gc.get_objects())}) + "\n")  # tracked at start, model loaded
    began = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            end = time.perf_counter()
            out.write(json.dumps({"gen": info["generation"], "end": time.time(), "s": end - began[0]}) + "\n")

    gc.callbacks.append(callback)


def sec_train(p: dict[str, Any]) -> list[dict[str, Any]]:
    from osma.data import write_benchmark
    from osma.methods import train

    root = Path(p["tmp"]) / f"train{p['crop']}"
    data = root / "data_list.yaml"
    if not data.exists():
        pairs: dict[str, list[tuple[str, str]]] = {k: [] for k in ("train", "val", "test", "out_seed", "out_arch",
                                                                   "out_dataset")}
        for c in CLASSES:
            for part, n in (("train", p["per_class_images"]), ("val", 2), ("test", 2)):
                rel = f"./dataset/{c}/{part}"
                _write_images(root / rel, n, p["crop"], "PNG")
                pairs[part] += [(f"{rel}/{i:05d}.png", c) for i in range(n)]
        for g in ("seed", "arch", "dataset"):
            rel = f"./dataset/u_{g}/test"
            _write_images(root / rel, 2, p["crop"], "PNG")
            pairs[f"out_{g}"] += [(f"{rel}/{i:05d}.png", f"u_{g}") for i in range(2)]
        spec = {"split1": {"known_classes": CLASSES,
                           "unknown_classes": {"seed": ["u_seed"], "arch": ["u_arch"], "dataset": ["u_dataset"]}}}
        write_benchmark(root, spec, {"split1": pairs})
    options = p.get("options", {})
    label = p["method"] + "".join(f" {k}={v}" for k, v in options.items())
    out = root / f"run_{label.replace(' ', '_')}"
    train(data, "split1", p["method"], out, epochs=2, device=p["device"], seed=0, progress=False, crop=p["crop"],
          per_class=8, batches_per_epoch=p["batches"], workers=0, precise_bn=False, **options)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    last = log[-1]
    return [{"what": f"train {label}", "crop": p["crop"], "precision": "fp32",
             "value": last["batches"] * 8 * len(CLASSES) / last["seconds"], "unit": "img/s"}]


ALL_SECTIONS = ("matmul", "forward", "decode", "attribute", "server", "train")
SECTIONS = {"matmul": sec_matmul, "forward": sec_forward, "decode": sec_decode, "attribute": sec_attribute,
            "bundle": sec_bundle, "serve": sec_serve,
            "loadgen": sec_loadgen, "train": sec_train}


# --- the driver --------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_section(name: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Run one section in a fresh process; (its rows, its peak RSS in MB)."""
    proc = subprocess.Popen([sys.executable, str(HERE), "--section", name, "--params", json.dumps(params)],
                            stdout=subprocess.PIPE, env=_env(), text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"section {name} {params} failed (exit {proc.returncode})")
    rows = json.loads(out.strip().splitlines()[-1])
    return rows, usage.ru_maxrss / 1024  # Linux: kilobytes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(params: dict[str, Any]) -> subprocess.Popen:
    """A :func:`sec_serve` server in its own process (output discarded)."""
    return subprocess.Popen([sys.executable, str(HERE), "--section", "serve", "--params", json.dumps(params)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_serving(servers: list[tuple[int, subprocess.Popen]], seconds: float = 120) -> None:
    """Wait until every ``(port, process)`` answers ``GET /healthz`` (RuntimeError when one
    exits or ``seconds`` pass first)."""
    import httpx

    deadline = time.time() + seconds
    for port, proc in servers:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server on port {port} did not start")
            time.sleep(0.2)


SERVERS = {  # label: (--max-batch 1?, what serves: "osma serve", or sec_serve's app)
    "batching off": (True, "osma serve"), "batching on": (False, "osma serve"),
    "batching on, no network": (False, "osma"), "bare ASGI app": (False, "bare")}


def run_servers(tmp: Path, crop: int, clients: list[int], seconds: float, device: str,
                client: str = "raw") -> list[dict[str, Any]]:
    """Four servers in their own processes at once: ``osma serve`` with batching off
    (``--max-batch 1``) and on (defaults), the defaults without the network and a bare ASGI
    app (:func:`sec_serve`); for each client count a load-generator process runs against each
    in turn (the order rotating), so that none is favoured by when it ran."""
    servers = {}
    for label, (unbatched, app) in SERVERS.items():
        port = _free_port()
        if app == "osma serve":
            cmd = [sys.executable, "-m", "osma", "serve", str(tmp / f"bundle{crop}"), "--port", str(port),
                   "--device", device] + (["--max-batch", "1"] if unbatched else [])
            servers[label] = (port, subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))
        else:
            servers[label] = (port, start_serve({"bundle": str(tmp / f"bundle{crop}"), "port": port,
                                                 "device": device, "crop": crop, "app": app}))
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
    try:
        wait_until_serving(list(servers.values()))
        png = next((tmp / f"png{crop}").glob("*.png"))
        labels = list(servers)
        for i, c in enumerate(clients):
            for label in labels[i % len(labels):] + labels[:i % len(labels)]:
                (r,), _ = run_section("loadgen", {"port": servers[label][0], "png": str(png), "clients": c,
                                                  "seconds": seconds, "client": client})
                rows[label].append({
                    "what": f"server {c} clients, {label}", "crop": crop,
                    "precision": "auto", "value": r["requests_per_s"], "unit": "req/s",
                    "note": f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, client {client} "
                            f"{r['client_cpu_ms']:.1f} CPU ms/req" + (f", {r['errors']} errors" if r["errors"] else ""),
                    "clients": c, **r})
    finally:
        for label, (_, server) in servers.items():
            server.terminate()
            _, _, usage = os.wait4(server.pid, 0)
            server.returncode = 0
            for r in rows[label]:
                r["peak_mb"] = usage.ru_maxrss / 1024
    return [r for label in servers for r in rows[label]]


def main(argv: list[str] | None = None) -> int:
    """Run every section and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs (numbers mean nothing)")
    ap.add_argument("--crops", default=None, help="comma-separated crop sizes (default 32,64,128; --quick: 32)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=None, help="time per measurement (default 3; --quick 0.3)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="of the matmul, forward and attribute rows (bf16 where it is emulated takes long and says nothing)")
    ap.add_argument("--sections", default=",".join(ALL_SECTIONS), help="comma-separated, from " + ",".join(ALL_SECTIONS))
    ap.add_argument("--client", default="raw", choices=("raw", "httpx"),
                    help="the server rows' load generator: a plain socket (default) or httpx.Client")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section:
        print(json.dumps(SECTIONS[args.section](json.loads(args.params))))
        return 0

    q = args.quick
    crops = [int(c) for c in (args.crops or ("32" if q else "32,64,128")).split(",")]
    secs = args.seconds if args.seconds is not None else (0.3 if q else 3.0)
    clients = [1, 10, 50]
    dev = args.device
    precs = [x for x in ("fp32", "bf16") if x in args.precisions.split(",")]
    todo = set(args.sections.split(","))
    if todo - set(ALL_SECTIONS):
        ap.error(f"unknown sections {sorted(todo - set(ALL_SECTIONS))}; choose from {','.join(ALL_SECTIONS)}")
    rows: list[dict[str, Any]] = []

    def add(new: list[dict[str, Any]], peak: float | None, several: bool = False) -> None:
        for r in new:
            if peak is not None:
                r["peak_mb"], r["peak_so_far"] = peak, several
            rows.append(r)
            print(f"  measured: {r['what']} crop {r.get('crop', '-')} {r.get('precision', '')}: "
                  f"{r['value']:.1f} {r['unit']}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="osma-throughput-") as t:
        tmp = Path(t)
        if "matmul" in todo:
            new, peak = run_section("matmul", {"n": 256 if q else 2048, "device": dev, "seconds": secs,
                                               "precisions": precs})
            add(new, peak, True)
        for crop in crops:
            if "forward" in todo:
                new, peak = run_section("forward", {"crop": crop, "batch": 32 if q else 256, "device": dev,
                                                    "seconds": secs, "precisions": precs})
                add(new, peak, True)
            if "decode" in todo:
                new, peak = run_section("decode", {"crop": crop, "images": 64 if q else max(64, 2000 * 32 * 32 // (crop * crop)),
                                                   "tmp": str(tmp)})
                add(new, peak, True)
            if {"attribute", "server"} & todo:
                run_section("bundle", {"crop": crop, "tmp": str(tmp)})
            if "attribute" in todo:
                n_img = 64 if q else max(256, 7680 * 32 * 32 // (crop * crop))
                new, peak = run_section("attribute", {"crop": crop, "images": n_img, "device": dev, "tmp": str(tmp),
                                                      "precisions": precs})
                add(new, peak, True)
            if "server" in todo:
                if not (tmp / f"png{crop}").is_dir():  # the attribute section writes it
                    _write_images(tmp / f"png{crop}", 4, crop, "PNG")
                add(run_servers(tmp, crop, clients, secs * (2 if q else 3), dev, args.client), None)
            if "train" in todo:
                runs = [("softmax", {}), ("pose", {}), ("pose", {"forwards": "shared"}),
                        ("pose", {"forwards": "concat"}), ("metric", {})]
                for method, options in runs:
                    new, peak = run_section("train", {"crop": crop, "method": method, "options": options,
                                                      "device": dev, "tmp": str(tmp), "batches": 2 if q else 20,
                                                      "per_class_images": 16 if q else 160})
                    add(new, peak)

    # ratios to references
    def find(what: str, crop: Any, prec: str) -> float | None:  # noqa: ANN401
        return next((r["value"] for r in rows if r["what"] == what and r.get("crop") == crop
                     and r.get("precision") == prec), None)

    for r in rows:
        w, c, p = r["what"], r.get("crop"), r.get("precision")
        ref, ref_name = None, ""
        if w == "matmul":
            ref, ref_name = find("matmul", None, "fp32"), "matmul fp32"
        elif w == "forward":
            ref, ref_name = find("forward", c, "fp32"), "forward fp32"
        elif w == "forward nchw":
            ref, ref_name = find("forward", c, p), f"forward {p}"
        elif w.startswith("decode") and w.endswith("osma"):
            ref_name = w.replace("osma", "pillow")
            ref = find(ref_name, c, "")
        elif w.startswith("attribute"):
            ref, ref_name = find("forward", c, p), f"forward {p}"
        elif w.startswith("server") and w.endswith(("no network", "bare ASGI app")):
            ref_name = w.replace(", no network", "").replace("bare ASGI app", "batching on")
            ref = find(ref_name, c, "auto")
        elif w.startswith("server"):
            if w.endswith("on"):
                ref_name = w.replace("batching on", "batching off")
                ref = find(ref_name, c, "auto")
            else:
                ref, ref_name = find("attribute png", c, "fp32"), "attribute png fp32"
        elif w.startswith("train pose forwards="):
            ref, ref_name = find("train pose", c, "fp32"), "train pose"
        elif w.startswith("train"):
            ref, ref_name = find("train softmax", c, "fp32"), "train softmax"
        r["ratio"] = None if not ref else r["value"] / ref
        r["reference"] = ref_name

    print(f"\nosma throughput ({'QUICK: sizes too small to mean anything, ' if q else ''}device {dev}, "
          f"{os.cpu_count()} CPUs, torch threads {_torch_threads()})")
    print(f"{'measurement':<44} {'crop':>4} {'prec':>5} {'value':>8} {'unit':<7} {'ratio':>5}  {'reference':<32} {'peak MB':>8}  note")
    for r in rows:
        peak = f"{r['peak_mb']:.0f}{'*' if r.get('peak_so_far') else ''}" if "peak_mb" in r else "-"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['what']:<44} {str(r.get('crop', '-')):>4} {r.get('precision', ''):>5} "
              f"{r['value']:>8.1f} {r['unit']:<7} {ratio:>5}  {r['reference']:<32} {peak:>8}  {r.get('note', '')}")
    print("* peak of a process that ran several rows (its peak so far)")
    if args.json is not None:
        args.json.write_text(json.dumps({"quick": q, "device": dev, "rows": rows}, indent=2) + "\n")
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
