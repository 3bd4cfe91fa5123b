"""Attribution of large image collections: input lists, ``--shard I/N`` job arrays, and the
Ray Data engine (``osma attribute MODEL INPUTS --engine ray --out DIR``).

The Ray engine splits the inputs into numbered shards of ``shard_size`` paths, in input
order (``_plan.json`` records the split), and runs ``map_batches`` over the shards with an
actor pool: each actor loads the bundle once and attributes one shard per call, in batches
of ``batch_size`` through the same loop as the single-process ``osma attribute``
(:meth:`osma.attribution.Model.attribute_iter`), and writes ``part-<shard>.parquet`` (or
``.jsonl``) atomically (temporary file, then rename). Shards whose file exists are not
run again, so a killed job, run again with the same arguments, does only what is missing.
Output files must be on storage every actor sees (a shared file system on a cluster).
Every actor applies the job's ``crops`` / ``agg`` (:mod:`osma.crops`; default: the bundle's)
and ``precision`` (:mod:`osma.precision`, resolved on the actor's device); the plan records
the crops when not 1 and the precision when not ``auto``.

Rows: JSONL shards hold exactly the JSON lines of ``osma attribute --format jsonl``;
Parquet shards hold the columns of ``--format csv`` (``path, source, nearest, score,
threshold, error, crops, score:<source>...``), numbers as float64 and missing values as nulls.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: an explicitly named file with one of these suffixes is a list of inputs, one per line
LIST_SUFFIXES = (".txt", ".lst", ".list")
FORMATS = ("parquet", "jsonl")
PLAN = "_plan.json"  # "_": pyarrow and pandas skip it when reading the directory as one table


def read_inputs(inputs: Iterable[str | os.PathLike], skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """Expand inputs as :func:`osma.attribution.expand_paths` does (files, directories,
    globs), except that a file named ``*.txt``/``*.lst``/``*.list`` is read as a list of
    inputs, one per line (blank lines and lines starting with ``#`` ignored; each line is
    expanded the same way, so a list may name directories and globs), and that a URI
    (``scheme://...``, see :func:`is_uri`) is expanded by :func:`expand_uri`."""
    out: list[str] = []
    seen: set[str] = set()
    left_out: list[tuple[str, str]] = []
    for raw in inputs:
        s = os.fsdecode(raw)
        if not is_uri(s) and s.lower().endswith(LIST_SUFFIXES) and os.path.isfile(s):
            with open(s, encoding="utf-8", errors="surrogateescape") as fh:
                lines = [ln.rstrip("\r\n") for ln in fh]
            found = _expand([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")], left_out)
        else:
            found = _expand([s], left_out)
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    if skipped is not None:
        listed: set[str] = set()
        for path, why in left_out:  # an entry reached twice is counted once
            if path not in listed:
                listed.add(path)
                skipped.append((path, why))
    return out


def _expand(entries: Sequence[str], skipped: list[tuple[str, str]]) -> list[str]:
    """Local entries through ``expand_paths`` (runs of them in one call), URIs through ``expand_uri``, in order."""
    from osma.attribution import expand_paths

    out: list[str] = []
    run: list[str] = []
    for e in [*entries, None]:
        if e is not None and not is_uri(e):
            run.append(e)
            continue
        if run:
            out += expand_paths(run, skipped)
            run = []
        if e is not None:
            out += expand_uri(e, skipped)
    return out


# --- URI inputs (pyarrow's file systems: file://, s3://, gs://, hdfs://, ...) ---------------
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(s: str | os.PathLike) -> bool:
    """True for ``scheme://...`` strings (read with pyarrow's file systems), False for local paths."""
    return isinstance(s, str) and _URI.match(s) is not None


def _filesystem(uri: str) -> tuple[Any, str]:
    """``pyarrow.fs.FileSystem.from_uri``; a missing pyarrow or a bad/unsupported URI is a ``ValueError`` naming it."""
    try:
        from pyarrow import fs as pafs
    except ImportError:
        raise ValueError(f"{uri}: reading URIs needs pyarrow: pip install 'osma[ray]'") from None
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/ArrowNotImplementedError/OSError
        raise ValueError(f"{uri}: unsupported or invalid URI ({exc})") from None


def expand_uri(uri: str, skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """A URI to a directory -> the URIs of the image files under it (recursively, the
    extensions of :data:`osma.images.decode.IMAGE_EXTENSIONS`, sorted by path; ``skipped``
    gets the other entries, as :func:`osma.attribution.expand_paths` does); anything else
    (a file, a missing object, a URI that cannot be opened) is kept as one input, which then
    reads or fails, as a row error, in :func:`read_uri`. Globs in URIs are not expanded."""
    from osma.attribution import SKIPPED_EXTENSION, SKIPPED_SPECIAL
    from osma.images.decode import IMAGE_EXTENSIONS

    try:
        fs, base = _filesystem(uri)
        from pyarrow import fs as pafs  # _filesystem succeeded, so pyarrow is here

        if fs.get_file_info(base).type != pafs.FileType.Directory:
            return [uri]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except Exception:  # noqa: BLE001 - reported per row when the URI is read
        return [uri]
    parts = urllib.parse.urlsplit(uri)
    root, prefix = parts.path.rstrip("/"), base.rstrip("/") + "/"
    found, left_out = [], []
    for info in infos:
        if info.type == pafs.FileType.Directory or not info.path.startswith(prefix):
            continue
        # the entry's URI: the directory URI with the (percent-encoded) relative path appended
        sub = urllib.parse.urlunsplit(parts._replace(path=root + "/" + urllib.parse.quote(info.path[len(prefix):])))
        if info.type != pafs.FileType.File:
            left_out.append((info.path, sub, SKIPPED_SPECIAL))
        elif os.path.splitext(info.path)[1].lower() not in IMAGE_EXTENSIONS:
            left_out.append((info.path, sub, SKIPPED_EXTENSION))
        else:
            found.append((info.path, sub))
    if skipped is not None:  # sorted as expand_paths sorts (by path components)
        skipped.extend((sub, why) for _, sub, why in sorted(left_out, key=lambda e: e[0].split("/")))
    return [sub for _, sub in sorted(found, key=lambda e: e[0].split("/"))]


def read_uri(uri: str, max_bytes: int | None = None) -> bytes:
    """The bytes of the object at ``uri``, at most ``max_bytes`` (default: the decoder's
    :data:`osma.images.decode.MAX_FILE_BYTES`): only a file is opened, one whose listed size
    is over the limit is refused unread, and at most ``max_bytes + 1`` bytes are read from the
    stream (one more tells an object larger than listed). Failures are :class:`ImageError`
    naming the URI."""
    from osma.images.decode import MAX_FILE_BYTES, ImageError

    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    too_big = "file is {} bytes, over the limit of " + f"{limit} bytes (max_bytes)"
    try:
        fs, path = _filesystem(uri)
        from pyarrow import fs as pafs  # _filesystem succeeded, so pyarrow is here

        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ImageError(uri, "cannot read file (not found)")
        if info.type != pafs.FileType.File:
            kind = "a directory" if info.type == pafs.FileType.Directory else "not a plain file"
            raise ImageError(uri, f"not a regular file ({kind})")
        if info.size is not None and info.size > limit:
            raise ImageError(uri, too_big.format(info.size))
        chunks, total = [], 0
        with fs.open_input_stream(path) as fh:
            while total < limit + 1:
                more = fh.read(min(limit + 1 - total, 1 << 24))
                if not more:
                    break
                chunks.append(more)
                total += len(more)
    except ImageError:
        raise
    except ValueError as exc:  # from _filesystem: the message names the URI already
        raise ImageError(uri, str(exc).removeprefix(f"{uri}: ")) from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's I/O errors (OSError and others)
        raise ImageError(uri, f"cannot read file ({exc})") from None
    if total > limit:
        raise ImageError(uri, too_big.format(f"more than {limit}"))
    return b"".join(chunks)


def load_uri(uri: str) -> Any:  # noqa: ANN401 - np.ndarray
    """Decode the image at ``uri`` with :func:`osma.images.decode.load_image` from its bytes
    (:func:`read_uri`), every bound of the decoder kept; errors name the URI."""
    from osma.images.decode import ImageError, load_image

    data = read_uri(uri)
    try:
        return load_image(data)
    except ImageError as exc:  # it names "<bytes>"
        raise ImageError(uri, exc.reason) from None


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` (1-based) -> ``(I, N)``; a bad spec is a ``ValueError`` quoting it."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected I/N, e.g. 1/4") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {spec!r}: need 1 <= I <= N")
    return i, n


def shard(items: Sequence[Any], i: int, n: int) -> list[Any]:  # noqa: ANN401
    """Part ``i`` of ``n`` (1-based) of ``items``: contiguous blocks in input order whose
    sizes differ by at most one; parts 1..n together hold every item exactly once."""
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: need 1 <= I <= N")
    k = len(items)
    return list(items[(i - 1) * k // n: i * k // n])


# --- rows --------------------------------------------------------------------------------
def columns(sources: Sequence[str]) -> list[str]:
    """Parquet columns: those of ``osma attribute --format csv``."""
    return ["path", "source", "nearest", "score", "threshold", "error", "crops"] + [f"score:{s}" for s in sources]


def flat_row(d: dict[str, Any], sources: Sequence[str]) -> dict[str, Any]:
    """An ``Attribution.to_dict()`` as one Parquet row (per-source scores as columns)."""
    row = {k: d.get(k) for k in ("path", "source", "nearest", "score", "threshold", "error")}
    if "crops" in d:
        row["crops"] = d["crops"]
    row.update({f"score:{s}": d["scores"].get(s) for s in sources})
    return row


def nested_row(row: dict[str, Any], sources: Sequence[str]) -> dict[str, Any]:
    """Inverse of :func:`flat_row` (scores of images that failed are an empty dict)."""
    d = {k: row.get(k) for k in ("source", "nearest", "score", "threshold")}
    d["scores"] = {} if row.get("error") else {s: row.get(f"score:{s}") for s in sources}
    d["path"], d["error"] = row.get("path"), row.get("error")
    if "crops" in row:
        d["crops"] = row["crops"]
    return d


def _write_parquet(rows: list[dict[str, Any]], sources: Sequence[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = columns(sources)
    types = {c: pa.float64() if c in ("score", "threshold") or c.startswith("score:")
             else pa.int64() if c == "crops" else pa.string() for c in cols}
    flat = [flat_row(d, sources) for d in rows]
    table = pa.table({c: pa.array([r.get(c) for r in flat], type=types[c]) for c in cols})
    pq.write_table(table, path)


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
        for d in rows:
            fh.write(json.dumps(d) + "\n")


def write_shard(rows: list[dict[str, Any]], sources: Sequence[str], out_dir: Path, index: int, fmt: str) -> Path:
    """Write one shard's rows to ``part-<index>.<fmt>`` atomically (temporary file, then rename)."""
    final = shard_path(out_dir, index, fmt)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    (_write_parquet(rows, sources, tmp) if fmt == "parquet" else _write_jsonl(rows, tmp))
    tmp.replace(final)
    return final


def shard_path(out_dir: Path, index: int, fmt: str) -> Path:
    """The file of shard ``index``."""
    return Path(out_dir) / f"part-{index:06d}.{fmt}"


def read_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of a Ray-engine output directory, in input order, as ``Attribution.to_dict()`` dicts."""
    d = Path(out_dir)
    plan = json.loads((d / PLAN).read_text(encoding="utf-8"))
    fmt, sources = plan["format"], plan["sources"]
    rows: list[dict[str, Any]] = []
    for f in sorted(d.glob(f"part-*.{fmt}")):
        if fmt == "jsonl":
            rows += [json.loads(ln) for ln in f.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
                     if ln.strip()]
        else:
            import pyarrow.parquet as pq

            rows += [nested_row(r, sources) for r in pq.read_table(f).to_pylist()]
    return rows


# --- the plan ----------------------------------------------------------------------------
def _digest(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in items:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def make_plan(out_dir: Path, items: Sequence[str], *, shard_size: int, fmt: str, bundle: Path,
              sources: Sequence[str], tau: float | None, inference: dict[str, Any] | None = None,
              precision: str = "auto") -> dict[str, Any]:
    """Write ``_plan.json`` (or check that an existing one describes the same job: then the
    shards already written are kept). A different job in the same directory is an error.
    ``inference`` (crops and aggregation, recorded when given) and ``precision`` (recorded
    when not ``auto``) are kept out of plans that do not need them, so older plans still match."""
    plan = {"inputs": len(items), "sha256": _digest(items), "shard_size": int(shard_size), "format": fmt,
            "model": str(bundle), "sources": list(sources), "tau": tau,
            "shards": max(1, math.ceil(len(items) / shard_size)),
            **({"inference": dict(inference)} if inference else {}),
            **({"precision": precision} if precision != "auto" else {})}
    f = out_dir / PLAN
    if f.is_file():
        old = json.loads(f.read_text(encoding="utf-8"))
        diff = [k for k in {**old, **plan} if old.get(k) != plan.get(k)]
        if diff:
            raise ValueError(f"{f}: written by another job (differs in {', '.join(diff)}): "
                             "use another --out directory, or delete it to start over")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
        tmp.replace(f)
    return plan


# --- the Ray engine ----------------------------------------------------------------------
class ShardAttributor:
    """Ray actor: loads the bundle once, then attributes and writes one shard per call."""

    def __init__(self, bundle: str, out_dir: str, fmt: str, tau: float | None, batch_size: int, device: str,
                 crops: int | None = None, agg: str | None = None, precision: str = "auto") -> None:
        import warnings

        from osma.attribution import load
        from osma.crops import set_inference

        self.model = load(bundle, device=device, precision=precision)
        set_inference(self.model.attributor, crops, agg)
        self.out, self.fmt, self.tau, self.batch_size = Path(out_dir), fmt, tau, batch_size
        warnings.simplefilter("ignore")  # the uncalibrated-model warning: the driver printed it

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        done, errors = [], []
        for index, paths in zip(batch["shard"], batch["paths"]):
            rows = [r.to_dict() for r in self.model.attribute_iter(list(paths), tau=self.tau,
                                                                   batch_size=self.batch_size)]
            write_shard(rows, self.model.sources, self.out, int(index), self.fmt)
            done.append(len(rows))
            errors.append(sum(r["error"] is not None for r in rows))
        return {"shard": np.asarray(batch["shard"]), "rows": np.asarray(done), "errors": np.asarray(errors)}


def attribute_ray(
    model: str | os.PathLike,
    items: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 64,
    shard_size: int = 1024,
    fmt: str = "parquet",
    tau: float | None = None,
    crops: int | None = None,
    agg: str | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Attribute ``items`` on Ray into shard files under ``out_dir``; returns a summary
    (``shards``, ``skipped`` shards already written, ``rows`` and ``errors`` of this run).
    ``crops`` / ``agg`` (None: the bundle's) and ``precision`` apply in every actor.

    Uses the running Ray instance, or connects with ``ray.init(address=address)``
    (``None``: a local instance). GPU actors (``gpus_per_worker`` > 0) run on CUDA.
    """
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'osma[ray]'") from None
    from osma.attribution import find_bundle, load
    from osma.crops import set_inference

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: the Ray engine writes {' or '.join(FORMATS)}")
    if shard_size < 1 or batch_size < 1 or workers < 1:
        raise ValueError("shard_size, batch_size and workers must be >= 1")
    if fmt == "parquet":
        import pyarrow  # noqa: F401 - fail here, not in an actor

    out = Path(out_dir).resolve()
    bundle = find_bundle(model).resolve()
    driver = load(bundle, device="cpu", precision=precision)  # checks the options here, not in an actor
    set_inference(driver.attributor, crops, agg)
    sources = driver.sources
    n_crops = int(getattr(driver.attributor, "crops", 1))
    inference = {"crops": n_crops, "agg": driver.attributor.crop_agg} if n_crops != 1 else None
    items = list(items)
    plan = make_plan(out, items, shard_size=shard_size, fmt=fmt, bundle=bundle, sources=sources, tau=tau,
                     inference=inference, precision=precision)
    for stale in out.glob(".part-*.tmp-*"):  # left by a killed actor
        stale.unlink(missing_ok=True)
    todo = [k for k in range(plan["shards"]) if not shard_path(out, k, fmt).exists()]
    summary = {"shards": plan["shards"], "skipped": plan["shards"] - len(todo), "rows": 0, "errors": 0,
               "out": str(out)}
    if not todo or not items:
        return summary
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items([{"shard": k, "paths": items[k * shard_size:(k + 1) * shard_size]} for k in todo],
                             override_num_blocks=len(todo))
    device = "cuda" if gpus_per_worker > 0 else "cpu"
    res = ds.map_batches(
        ShardAttributor, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
        fn_constructor_kwargs=dict(bundle=str(bundle), out_dir=str(out), fmt=fmt, tau=tau,
                                   batch_size=batch_size, device=device, crops=crops, agg=agg, precision=precision),
        num_cpus=cpus_per_worker, **({"num_gpus": gpus_per_worker} if gpus_per_worker > 0 else {}),
    ).take_all()
    summary["rows"] = int(sum(int(r["rows"]) for r in res))
    summary["errors"] = int(sum(int(r["errors"]) for r in res))
    return summary


# --- the embedding pass of an evaluation on Ray -----------------------------------------
class ChunkEmbedder:
    """Ray actor: loads the bundle once, then embeds and scores one chunk of paths per call
    (the same loop as the single-process evaluation, :func:`osma.attribution.predict_batches`:
    the model's crops and their aggregation)."""

    def __init__(self, bundle: str, batch_size: int, device: str, crops: int | None = None,
                 agg: str | None = None, precision: str = "auto") -> None:
        from osma.attribution import load
        from osma.crops import set_inference

        self.attributor = load(bundle, device=device, precision=precision).attributor
        set_inference(self.attributor, crops, agg)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from osma.attribution import predict_batches

        out: dict[str, list] = {"start": [], "kept": [], "errors": [], "emb": [], "dim": [], "pred": [], "score": []}
        for start, paths in zip(batch["start"], batch["paths"]):
            kept, embs, preds, scores, errors = [], [], [], [], {}
            for idx, p, _, errs in predict_batches(self.attributor, list(paths), self.batch_size):
                errors.update(errs)
                if idx:
                    kept += idx
                    embs.append(np.asarray(p.embedding, np.float32))
                    preds.append(np.asarray(p.pred, np.int64))
                    scores.append(np.asarray(p.score, np.float64))
            e = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
            out["start"].append(int(start))
            out["kept"].append(json.dumps(kept))
            out["errors"].append(json.dumps({str(k): v for k, v in errors.items()}))
            out["emb"].append(e.tobytes())
            out["dim"].append(int(e.shape[1]) if e.ndim == 2 else 0)
            out["pred"].append((np.concatenate(preds) if preds else np.zeros(0, np.int64)).tobytes())
            out["score"].append((np.concatenate(scores) if scores else np.zeros(0)).tobytes())
        return {"start": np.asarray(out["start"]), "kept": np.asarray(out["kept"], dtype=object),
                "errors": np.asarray(out["errors"], dtype=object), "emb": np.asarray(out["emb"], dtype=object),
                "dim": np.asarray(out["dim"]), "pred": np.asarray(out["pred"], dtype=object),
                "score": np.asarray(out["score"], dtype=object)}


def embed_paths_ray(model: str | os.PathLike, paths: Sequence[str], **kw: Any) -> tuple[Any, list[int], dict[int, str]]:  # noqa: ANN401
    """Embed ``paths`` on a Ray actor pool (each actor loads the model once); returns
    (embeddings of the readable images, their indices into ``paths``, {index: error}).
    Options: those of :func:`predict_paths_ray`."""
    emb, _, _, kept, errors = predict_paths_ray(model, paths, **kw)
    return emb, kept, errors


def predict_paths_ray(model: str | os.PathLike, paths: Sequence[str], *, address: str | None = None,
                      workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
                      batch_size: int = 64, chunk_size: int = 1024, crops: int | None = None,
                      agg: str | None = None, precision: str = "auto") -> tuple[Any, Any, Any, list[int], dict[int, str]]:  # noqa: ANN401
    """Embed and score ``paths`` on a Ray actor pool (each actor loads the model once, with
    ``crops`` / ``agg``, None: the bundle's, and ``precision``); returns (embeddings, predicted
    class indices, knownness scores of the readable images, their indices into ``paths``,
    {index: error})."""
    import numpy as np

    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'osma[ray]'") from None
    from osma.attribution import find_bundle

    bundle = find_bundle(model).resolve()
    paths = list(paths)
    if not paths:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0), [], {}
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    chunks = [{"start": s, "paths": paths[s:s + chunk_size]} for s in range(0, len(paths), chunk_size)]
    res = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
        ChunkEmbedder, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(chunks))),
        fn_constructor_kwargs=dict(bundle=str(bundle), batch_size=batch_size,
                                   device="cuda" if gpus_per_worker > 0 else "cpu",
                                   crops=crops, agg=agg, precision=precision),
        num_cpus=cpus_per_worker, **({"num_gpus": gpus_per_worker} if gpus_per_worker > 0 else {}),
    ).take_all()
    kept: list[int] = []
    embs: list[Any] = []
    preds: list[Any] = []
    scores: list[Any] = []
    errors: dict[int, str] = {}
    for r in sorted(res, key=lambda r: int(r["start"])):
        s = int(r["start"])
        kept += [s + i for i in json.loads(r["kept"])]
        errors.update({s + int(k): v for k, v in json.loads(r["errors"]).items()})
        if int(r["dim"]):
            embs.append(np.frombuffer(r["emb"], np.float32).reshape(-1, int(r["dim"])))
            preds.append(np.frombuffer(r["pred"], np.int64))
            scores.append(np.frombuffer(r["score"], np.float64))
    return ((np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)),
            (np.concatenate(preds) if preds else np.zeros(0, np.int64)),
            (np.concatenate(scores) if scores else np.zeros(0)), kept, errors)


def split_outputs_ray(attributor: Any, split: Any, model: str | os.PathLike, **kw: Any) -> Any:  # noqa: ANN401
    """:func:`osma.evaluation.embed_split` with the embedding pass on Ray: every evaluation
    image of ``split`` (val, known test, unknown groups) embedded once by
    :func:`predict_paths_ray`, with ``attributor``'s crops and aggregation; with one crop
    per image, predictions and scores are then computed here from the embeddings, as
    :func:`osma.evaluation.evaluate` does with precomputed outputs; with several, the
    actors' aggregated predictions are kept (the mean embedding cannot reproduce them).
    ``kw``: the options of :func:`predict_paths_ray` (``precision`` included)."""
    import time

    import numpy as np

    from osma.data import UNKNOWN_GROUPS
    from osma.evaluation import Outputs, SplitOutputs, rescore

    parts = {"val": list(split.val), "test": list(split.test),
             **{g: list(split.test_out.get(g, [])) for g in UNKNOWN_GROUPS}}
    samples = [s for v in parts.values() for s in v]
    t0 = time.perf_counter()
    n_crops = int(getattr(attributor, "crops", 1))
    kw = {**kw, "crops": n_crops, "agg": getattr(attributor, "crop_agg", None) if n_crops != 1 else None}
    emb, pred, score, kept, errors = predict_paths_ray(model, [str(s.path) for s in samples], **kw)
    row = {i: j for j, i in enumerate(kept)}
    seconds = time.perf_counter() - t0
    outs: dict[str, Any] = {}
    offset = 0
    for name, ss in parts.items():
        idx = [offset + i for i in range(len(ss)) if offset + i in row]
        failed = [(str(samples[offset + i].path), errors[offset + i]) for i in range(len(ss)) if offset + i in errors]
        rows = [row[i] for i in idx]
        e = emb[rows] if idx else np.zeros((0, emb.shape[1] if emb.ndim == 2 else 0), np.float32)
        o = Outputs([str(samples[i].path) for i in idx], [str(samples[i].label) for i in idx],
                    pred[rows] if idx else np.zeros(0, np.int64), score[rows] if idx else np.zeros(0),
                    e, failed, seconds)
        outs[name] = rescore(attributor, o, kw.get("batch_size", 64)) if n_crops == 1 else o
        offset += len(ss)
    return SplitOutputs(outs["val"], outs["test"], {g: outs[g] for g in UNKNOWN_GROUPS}, attributor)


__all__ = [
    "FORMATS", "LIST_SUFFIXES", "ChunkEmbedder", "ShardAttributor", "attribute_ray", "columns", "embed_paths_ray",
    "expand_uri", "flat_row", "is_uri", "load_uri", "make_plan", "predict_paths_ray", "split_outputs_ray",
    "nested_row", "parse_shard", "read_inputs", "read_uri", "read_rows", "shard", "shard_path", "write_shard",
]
