"""CLI commands that put a trained model to use: attribute, calibrate, enroll, sources, discover, serve."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from osma.cli.data import (KNOWN, SPLIT_SEED, TEST_FRACTION, UNKNOWN_ARCH, UNKNOWN_DATASET, UNKNOWN_SEED, UNSEEN_REAL,
                           VAL_FRACTION, folder_options)

FORMATS = ("table", "jsonl", "csv")


CROPS = typer.Option(
    None, "--crops", min=1, help="Crops per image: a grid of at most N non-overlapping crops spread over the image, "
    "each embedded, aggregated by --agg (default: the bundle's setting; a new model's is 4, a bundle saved "
    "without one uses 1 = the centre crop).")
AGG = typer.Option(None, "--agg", help="Aggregation of the crops: mean (embeddings and logits, then the score), "
                   "mean_score, vote or max (the most confident crop); default: the bundle's, else mean.")
PRECISION_HELP = "auto, fp32 or bf16 inference (auto: bf16 only where measured equal, see docs/speed.md)."


def _load_model(model: str, device: str, crops: Optional[int] = None, agg: Optional[str] = None,  # noqa: ANN202
                precision: str = "auto"):  # osma.attribution.Model
    from osma.attribution import load
    from osma.crops import set_inference

    try:
        m = load(model, device=device, precision=precision)
        set_inference(m.attributor, crops, agg)
        return m
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fmt(x: Optional[float]) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.4g}"


# --- output files (jsonl / csv), resumable ------------------------------------------------
def _csv_header(sources: list[str]) -> list[str]:
    return ["path", "source", "nearest", "score", "threshold", "error", "crops"] + [f"score:{s}" for s in sources]


def _csv_row(d: dict[str, Any], header: list[str]) -> list[str]:
    row = []
    for h in header:
        v = d["scores"].get(h[6:]) if h.startswith("score:") else d.get(h)
        row.append("" if v is None else (repr(v) if isinstance(v, float) else str(v)))
    return row


def read_done(out: Path, fmt: str) -> tuple[set[str], int, Optional[list[str]]]:
    """Paths already in ``out`` and how many of them failed; a truncated last line is cut off.

    Returns (done paths, error count, csv header or None).
    """
    if not out.exists() or out.stat().st_size == 0:
        return set(), 0, None
    raw = out.read_bytes()
    keep = raw.rfind(b"\n") + 1  # everything after the last newline is a partial row
    if keep < len(raw):
        with open(out, "r+b") as fh:
            fh.truncate(keep)
        raw = raw[:keep]
    # file names that are not valid UTF-8 were written as their own bytes (surrogateescape) and
    # come back as the same str; JSON lines carry them as \udcXX escapes, which json.loads maps back
    text = raw.decode("utf-8", errors="surrogateescape")
    done: set[str] = set()
    n_err = 0
    header = None
    if fmt == "jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{out}:{lineno}: not a JSON line; refusing to append to it") from None
            if d.get("path"):
                done.add(d["path"])
                n_err += d.get("error") is not None
    else:
        rows = list(csv.reader(io.StringIO(text)))
        if rows:
            header = rows[0]
            if header[:1] != ["path"]:
                raise ValueError(f"{out}:1: not an osma csv file (first column must be 'path')")
            ierr = header.index("error")
            for r in rows[1:]:
                if r:
                    done.add(r[0])
                    n_err += bool(r[ierr]) if len(r) > ierr else 0
    return done, n_err, header


def _fmt_from(out: Optional[Path], fmt: Optional[str]) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        if out is not None and fmt == "table":
            raise typer.BadParameter("--out writes jsonl or csv; use --format jsonl|csv")
        return fmt
    if out is not None:
        return "csv" if out.suffix.lower() == ".csv" else "jsonl"
    return "table"


def _shown(text: str) -> str:
    """A file name for the terminal: bytes that are not UTF-8 (surrogate escapes) shown as
    U+FFFD, and rich markup escaped, so that no name can break the table."""
    from rich.markup import escape

    return escape(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    paths = [d["path"] or "" for d in rows]
    base = ""
    if len(paths) > 1 and all(paths):
        try:
            base = os.path.commonpath(paths)
        except ValueError:  # mixed absolute and relative paths
            base = ""
        if base in paths:  # a single file repeated: keep full names
            base = ""
    if base:
        title += f"\nin {_shown(base)}"
    any_error = any(d["error"] for d in rows)
    table = Table(title=title)
    table.add_column("path", overflow="fold", ratio=2)
    for col in ("source", "nearest"):
        table.add_column(col, overflow="fold", ratio=1)
    table.add_column("score", justify="right", no_wrap=True)
    if any_error:
        table.add_column("error", overflow="fold", ratio=2)
    for p, d in zip(paths, rows):
        src = d["source"] or ""
        style = "red" if d["error"] else ("yellow" if src == "unknown" else "green")
        cells = [_shown(os.path.relpath(p, base) if base else p), f"[{style}]{src}[/]", d["nearest"] or "",
                 _fmt(d["score"])]
        table.add_row(*cells, *([_shown(d["error"] or "")] if any_error else []))
    Console().print(table)


def _progress(total: int, enabled: bool):  # noqa: ANN202 - tqdm
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="attribute", disable=not enabled, file=sys.stderr)


# --- commands ------------------------------------------------------------------------------
def attribute(
    model: str = typer.Argument(..., help="Model bundle or training run directory."),
    paths: list[str] = typer.Argument(..., help="Image files, directories (recursive) or globs."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="table, jsonl or csv (default: table, or from --out's suffix); --engine ray: parquet (default) or jsonl."),  # noqa: A002
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Append results to FILE as they come; a re-run resumes (--engine ray: a directory of shard files)."),
    tau: Optional[float] = typer.Option(None, "--tau", help="Threshold (default: the bundle's calibrated tau)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on for more than one batch)."),
    shard_spec: Optional[str] = typer.Option(
        None, "--shard", help="I/N: attribute only part I of N of the inputs (1-based; contiguous parts in input "
        "order; 1/N..N/N together cover every input once), e.g. one Slurm array task each."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors; --out is then a directory)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (--engine ray; default: a local Ray instance)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray actors, each loading the model once (--engine ray)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs per Ray actor; > 0 runs on CUDA (--engine ray)."),
    shard_size: int = typer.Option(1024, "--shard-size", min=1, help="Images per output shard file (--engine ray)."),
    crops: Optional[int] = CROPS,
    agg: Optional[str] = AGG,
) -> None:
    """Attribute images to their source model (or 'unknown').

    INPUTS are image files, directories (recursive), globs, URIs (file://, s3://, ... to a
    file or a directory, read with pyarrow.fs), and text files (*.txt, *.lst, *.list) listing
    such inputs one per line. With --engine ray, results go to Parquet (or
    --format jsonl) shard files in the --out directory; a re-run skips the shards written.

    Exit status: 0 when every image was attributed, 1 when any could not be read.
    """
    from osma.batch import parse_shard, read_inputs, shard

    if engine not in ("local", "ray"):
        raise typer.BadParameter("--engine must be local or ray")
    if engine == "ray":
        if out is None:
            raise typer.BadParameter("--engine ray needs --out DIR")
        fmt = format or "parquet"
        if fmt not in ("parquet", "jsonl"):
            raise typer.BadParameter("--engine ray writes --format parquet or jsonl")
    else:
        fmt = _fmt_from(out, format)
    m = _load_model(model, device, crops, agg, precision)
    if m.tau is None and tau is None:
        typer.echo("warning: model not calibrated (no tau): nothing is rejected as unknown; run `osma calibrate`", err=True)
    skipped_entries: list[tuple[str, str]] = []
    items = read_inputs(paths, skipped_entries)
    if skipped_entries:
        typer.echo(_skipped_summary(skipped_entries), err=True)
    if shard_spec is not None:
        try:
            items = shard(items, *parse_shard(shard_spec))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    if not items:
        typer.echo("error: no images found in the given paths" + (f" (shard {shard_spec})" if shard_spec else ""), err=True)
        raise typer.Exit(2)
    if engine == "ray":
        _attribute_ray(model, items, out, fmt=fmt, tau=tau, batch_size=batch_size, address=address,
                       workers=workers, gpus_per_worker=gpus_per_worker, shard_size=shard_size,
                       crops=crops, agg=agg, precision=precision)
        return
    prior_errors = 0
    header: Optional[list[str]] = None
    fh = None
    if out is not None:
        try:
            done, prior_errors, header = read_done(out, fmt)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        skipped = len(items)
        done_abs = {os.path.abspath(p) for p in done}  # same file, whether named relatively or not
        items = [p for p in items if os.path.abspath(p) not in done_abs]
        skipped -= len(items)
        if skipped:
            typer.echo(f"resuming: {skipped} image(s) already in {out}, {len(items)} to go", err=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes
        fh = open(out, "a", encoding="utf-8", errors="surrogateescape", newline="")
        if fmt == "csv" and header is None:
            header = _csv_header(m.sources)
            csv.writer(fh).writerow(header)
            fh.flush()
    if header is None:
        header = _csv_header(m.sources)

    show = progress if progress is not None else len(items) > batch_size
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    n_err = 0
    writer = csv.writer(fh if fh is not None else _Stdout())
    if fh is None and fmt == "csv":
        writer.writerow(header)
    try:
        with warnings.catch_warnings(), _progress(len(items), show) as bar:
            warnings.simplefilter("ignore")  # the uncalibrated warning was printed above
            batch_rows: list[dict[str, Any]] = []
            for r in m.attribute_iter(items, tau=tau, batch_size=batch_size):
                d = r.to_dict()
                n_err += d["error"] is not None
                key = "error" if d["error"] else d["source"]
                counts[key] = counts.get(key, 0) + 1
                batch_rows.append(d)
                if len(batch_rows) == batch_size:
                    _emit(batch_rows, fmt, fh, writer, header, rows)
                    bar.update(len(batch_rows))
                    batch_rows = []
            _emit(batch_rows, fmt, fh, writer, header, rows)
            bar.update(len(batch_rows))
    finally:
        if fh is not None:
            fh.close()
    if fmt == "table":
        _print_table(rows, f"osma attribute ({m.method}, {m.precision}, tau = {_fmt(m.threshold(tau)) or '-inf'})")
        for d in rows:
            if d["error"]:
                typer.echo(f"failed: {d['error']}", err=True)  # unfolded, for copy and paste
    if out is not None or fmt == "table":
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        typer.echo(f"{sum(counts.values())} image(s) attributed in {m.precision}" + (f" ({summary})" if summary else "")
                   + (f"; results in {out}" if out is not None else ""), err=True)
    if n_err + prior_errors:
        typer.echo(f"{n_err + prior_errors} image(s) could not be read", err=True)
        raise typer.Exit(1)


def _attribute_ray(model: str, items: list[str], out: Path, **kw: Any) -> None:  # noqa: ANN401
    from osma.batch import attribute_ray

    try:
        res = attribute_ray(model, items, out, **kw)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(items)} image(s) in {res['shards']} shard(s): {res['skipped']} shard(s) already written, "
               f"{res['rows']} image(s) attributed now; results in {res['out']}", err=True)
    if res["errors"]:
        typer.echo(f"{res['errors']} image(s) could not be read", err=True)
        raise typer.Exit(1)


def _emit(batch: list[dict[str, Any]], fmt: str, fh, writer, header: list[str], rows: list) -> None:  # noqa: ANN001
    """Write a batch of results to the output file (flushed) or stdout; tables are collected."""
    if not batch:
        return
    if fmt == "table":
        rows.extend(batch)
        return
    for d in batch:
        if fmt == "jsonl":
            line = json.dumps(d) + "\n"  # ASCII: a name that is not valid UTF-8 becomes \udcXX escapes
            (fh or sys.stdout).write(line)
        else:
            writer.writerow(_csv_row(d, header))
    (fh or sys.stdout).flush()


class _Stdout:
    """``sys.stdout`` for csv rows: a file name that is not valid UTF-8 (a str with surrogate
    escapes) is written as its own bytes instead of raising ``UnicodeEncodeError``."""

    def write(self, text: str) -> int:
        out = sys.stdout
        try:
            return out.write(text)
        except UnicodeEncodeError:
            buf = getattr(out, "buffer", None)
            if buf is None:
                return out.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            out.flush()
            buf.write(text.encode(out.encoding or "utf-8", "surrogateescape"))
            buf.flush()
            return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


#: plural of each ``osma.attribution.SKIPPED_*`` reason, for the summary line
_SKIPPED_PLURAL = {
    "not an image by extension": "not images by extension",
    "dangling link": "dangling links",
    "link loop": "link loops",
    "special file (FIFO, socket or device)": "special files (FIFO, socket or device)",
    "link to a directory (not followed)": "links to directories (not followed)",
}


def _skipped_summary(skipped: list[tuple[str, str]]) -> str:
    """One line counting the entries of directory walks and globs that were left out, by reason."""
    counts: dict[str, int] = {}
    for _, why in skipped:
        counts[why] = counts.get(why, 0) + 1
    parts = ", ".join(f"{k} {why if k == 1 else _SKIPPED_PLURAL.get(why, why)}"
                      for why, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    n = len(skipped)
    return f"skipped {n} entr{'y' if n == 1 else 'ies'} in directories and globs: {parts}"


def calibrate(
    model: str = typer.Argument(..., help="Model bundle or training run directory."),
    data: Optional[Path] = typer.Option(None, "--data", help="data_list.yaml of the benchmark, or a folder ROOT/<source>/**/<image> (default: the model's training data)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split whose validation images of the known sources are used (data_list.yaml; default: split1, or the training split when --data is omitted)."),
    target_tpr: float = typer.Option(0.95, "--target-tpr", min=0.0, max=1.0, help="Known acceptance to aim for."),
    unknown_val: Optional[list[str]] = typer.Option(None, "--unknown-val", help="Validation images of unknown sources (files, dirs, globs); repeatable."),
    root: Optional[Path] = typer.Option(None, "--root", help="Data root (default: next to data_list.yaml)."),
    device: str = typer.Option("auto", "--device"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the result without writing the bundle."),
    known: Optional[list[str]] = KNOWN,
    unknown_seed: Optional[list[str]] = UNKNOWN_SEED,
    unknown_arch: Optional[list[str]] = UNKNOWN_ARCH,
    unknown_dataset: Optional[list[str]] = UNKNOWN_DATASET,
    val_fraction: Optional[float] = VAL_FRACTION,
    test_fraction: Optional[float] = TEST_FRACTION,
    split_seed: Optional[int] = SPLIT_SEED,
    unseen_real: Optional[list[str]] = UNSEEN_REAL,
    crops: Optional[int] = CROPS,
    agg: Optional[str] = AGG,
    on_source: Optional[list[str]] = typer.Option(None, "--on-source", help="Calibrate on the validation images of this known source only (repeatable), e.g. real: accept --target-tpr of real photos."),
) -> None:
    """Choose the threshold tau and store it in the bundle's model.json.

    Without --unknown-val: the largest tau that accepts at least --target-tpr of the known
    validation images. With it: the tau maximising Youden's J = TPR - FPR (known = positive).
    --on-source real: the known images are the real ones only, so that --target-tpr of real
    photos are accepted (falsely calling a real photo synthetic is the costly error).
    --crops / --agg are stored with tau: attribute, serve and evaluate then use them by default.
    """
    from osma.attribution import calibrate_model, expand_paths
    from osma.cli.evaluate import _open_split

    m = _load_model(model, device, crops, agg)
    try:
        sp = _open_split(m.attributor, data, split, root, folder_options(
            known, unknown_seed, unknown_arch, unknown_dataset, val_fraction, test_fraction, split_seed, unseen_real))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    known = [(str(s.path), s.label if isinstance(s.label, str) else sp.known_classes[s.label]) for s in sp.val]
    unknown = expand_paths(unknown_val) if unknown_val else []
    if unknown_val and not unknown:
        typer.echo("error: --unknown-val matched no images", err=True)
        raise typer.Exit(2)
    try:
        res = calibrate_model(m, known, unknown, target_tpr=target_tpr, on_sources=on_source or ())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"criterion: {res['criterion']}")
    typer.echo(f"tau = {res['tau']:.6g}  (was {_fmt(res['previous_tau']) or 'not set'})")
    typer.echo(f"known validation images: {res['n_known']}  expected known acceptance: {res['known_acceptance']:.1%}"
               f"  correct attribution: {res['known_accuracy']:.1%}")
    if res["on_sources"]:
        typer.echo(f"expected acceptance of {', '.join(res['on_sources'])}: {res['on_acceptance']:.1%}")
    if res["unknown_rejection"] is not None:
        typer.echo(f"unknown validation images: {res['n_unknown']}  expected unknown rejection: {res['unknown_rejection']:.1%}")
    else:
        typer.echo("expected unknown rejection: not measured (give --unknown-val images of unknown sources)")
    if res["errors"]:
        typer.echo(f"{len(res['errors'])} validation image(s) could not be read and were left out", err=True)
    if not dry_run:
        typer.echo(f"saved tau in {m.save()}/model.json")


def enroll(
    model: str = typer.Argument(..., help="Model bundle or training run directory."),
    images: Optional[list[str]] = typer.Argument(None, help="Images of the new source (files, dirs, globs)."),
    name: str = typer.Option(..., "--name", help="Name of the new source."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the enlarged model here (default: update MODEL in place)."),
    from_cluster: Optional[Path] = typer.Option(None, "--from-cluster", help="A cluster directory written by `osma discover`."),
    device: str = typer.Option("auto", "--device"),
    crops: Optional[int] = CROPS,
    agg: Optional[str] = AGG,
) -> None:
    """Add a new known source from at least 10 of its images, without retraining."""
    from osma.attribution import MIN_ENROLL_IMAGES, expand_paths
    from osma.discovery import read_members

    items = expand_paths(images or [])
    if from_cluster is not None:
        try:
            items += [p for p in read_members(from_cluster) if p not in set(items)]
        except FileNotFoundError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if len(items) < MIN_ENROLL_IMAGES:
        typer.echo(f"error: enrolling {name!r} needs at least {MIN_ENROLL_IMAGES} images, got {len(items)}", err=True)
        raise typer.Exit(2)
    m = _load_model(model, device, crops, agg)
    try:
        n = m.enroll(name, items)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    target = m.save(out)
    typer.echo(f"enrolled {name!r} from {n} image(s); model now has {len(m.sources)} sources; saved to {target}")


def sources(
    model: str = typer.Argument(..., help="Model bundle or training run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """List the model's known sources: trained and enrolled, with image counts."""
    m = _load_model(model, device)
    rows = m.source_table()
    if as_json:
        typer.echo(json.dumps({"method": m.method, "tau": m.tau, "sources": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{m.bundle_dir} ({m.method}, tau={_fmt(m.tau) or 'not calibrated'})")
    for col in ("#", "source", "kind", "images"):
        table.add_column(col)
    for i, r in enumerate(rows):
        table.add_row(str(i), r["name"], r["kind"], "" if r["images"] is None else str(r["images"]))
    Console().print(table)


def discover(
    model: str = typer.Argument(..., help="Model bundle or training run directory."),
    paths: list[str] = typer.Argument(..., help="Images to cluster (files, dirs, globs)."),
    method: str = typer.Option("kmeans", "--method", help="Discovery method: kmeans (one clustering) or girish (iterative, retrains)."),
    k: str = typer.Option("auto", "--k", help="kmeans: number of clusters, or 'auto' (silhouette over 2..--k-max)."),
    k_max: int = typer.Option(12, "--k-max", min=2, help="kmeans: largest k tried by --k auto."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="girish: iterations (default 4)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=0, help="girish: epochs of each retraining (default: the model's)."),
    option: Optional[list[str]] = typer.Option(None, "--opt", help="Method option KEY=VALUE (repeatable; see docs/discovery.md)."),
    out: Path = typer.Option(Path("discovered"), "--out", help="Output directory (cluster_<k>/ per cluster)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="True labels: a path<TAB>label file, or 'folders' (parent folder names)."),
    rejected_only: bool = typer.Option(False, "--rejected-only", help="Cluster only the images the model rejects as unknown."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    crops: Optional[int] = CROPS,
    agg: Optional[str] = AGG,
) -> None:
    """Group images into candidate new sources (k-means on L2-normalised embeddings, or Girish et al.'s pipeline)."""
    from osma.attribution import UNKNOWN, decode, expand_paths
    from osma.discovery import create_discovery, score_clustering, true_labels, write_clusters
    from osma.options import parse_assignments

    if k != "auto" and not k.isdigit():
        raise typer.BadParameter("--k must be 'auto' or a positive integer")
    try:
        opts = parse_assignments(option)
        opts["seed"] = seed
        if method == "kmeans":
            opts.update(k=k if k == "auto" else int(k), k_max=k_max)
        else:
            opts.update({key: v for key, v in (("iterations", iterations), ("epochs", epochs)) if v is not None})
            opts.setdefault("device", device)
        disc, options = create_discovery(method, opts)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    m = _load_model(model, device, crops, agg)
    items = expand_paths(paths)
    if rejected_only:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = [r.path for r in m.attribute_iter(items) if r.error is None and r.source == UNKNOWN]
        typer.echo(f"{len(items)} image(s) rejected as unknown")
    try:
        res = disc.run(m, items, out, options)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    errors = res.errors
    for e in errors.values():
        typer.echo(f"skipped: {e}", err=True)
    if len(res.paths) < 2:
        typer.echo("error: need at least 2 readable images to cluster", err=True)
        raise typer.Exit(2)
    kept_paths = res.paths
    try:
        truth = true_labels(kept_paths, labels)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    clustering = res.clustering
    metrics = None
    if truth is not None:
        inside = clustering.labels >= 0  # girish leaves images in no cluster (-1): scored over the clustered ones
        metrics = score_clustering([t for t, i in zip(truth, inside) if i], clustering.labels[inside]) \
            if inside.any() else None
    if method == "kmeans":
        write_clusters(out, kept_paths, clustering, decode, metrics)
    else:
        write_clusters(out, kept_paths, clustering, decode, metrics, method=disc.description,
                       extra=res.summary)
    if method == "kmeans":
        how = "auto (silhouette)" if k == "auto" else "given"
        typer.echo(f"{len(kept_paths)} image(s) in {clustering.k} cluster(s), k {how}; written to {out}/cluster_<k>/")
    else:
        for rec in res.summary.get("iterations", []):
            typer.echo(f"iteration {rec['iteration']}: {rec['attributed_known']} attributed to known sources, "
                       f"{rec['clustered']} clustered into {rec['clusters']}, {rec['after_merge']} after merging, "
                       f"{rec['kept']} kept {rec['kept_sizes']}")
        n_in = int((clustering.labels >= 0).sum())
        typer.echo(f"{len(kept_paths)} image(s), {n_in} in {clustering.k} cluster(s); written to {out}/cluster_<k>/; "
                   f"log {out}/discovery_log.jsonl; retrained model: {res.summary.get('model') or 'none'}")
    for c in range(clustering.k):
        typer.echo(f"  cluster_{c}: {int((clustering.labels == c).sum())} image(s)")
    if metrics:
        typer.echo("against the true labels: " + ", ".join(f"{key}={_fmt(v) if isinstance(v, float) else v}" for key, v in metrics.items()))
    if errors:
        raise typer.Exit(1)


def serve(
    model: str = typer.Argument(..., help="Model bundle or training run directory."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest request body (all files together)."),
    max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", help="Largest image (width x height)."),
    read_timeout: float = typer.Option(
        30.0, "--read-timeout", min=0.001,
        help="Seconds to receive a request's headers, and again its body; a slower client gets 408 or is cut off."),
    max_connections: int = typer.Option(
        64, "--max-connections", min=1, help="Open connections at most; more are answered 503 and closed."),
    max_concurrent_decodes: int = typer.Option(
        2, "--max-concurrent-decodes", min=1,
        help="Requests decoding and predicting at once (bounds decode memory); the others wait."),
    batch_window_ms: float = typer.Option(
        5.0, "--batch-window-ms", min=0.0,
        help="Milliseconds to wait after a request for concurrent ones to predict with it in one batch."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Images per model batch at most; 1: no batching."),
    device: str = typer.Option("auto", "--device"),
    crops: Optional[int] = CROPS,
    agg: Optional[str] = AGG,
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Serve the model over HTTP (POST /v1/attribute, GET /v1/sources, GET /healthz, /docs)."""
    from osma.server import serve as _serve

    m = _load_model(model, device, crops, agg, precision)
    typer.echo(f"precision: {m.precision}", err=True)
    _serve(m, host=host, port=port, max_upload_mb=max_upload_mb, max_pixels=max_pixels, read_timeout=read_timeout,
           max_connections=max_connections, max_concurrent_decodes=max_concurrent_decodes,
           batch_window_ms=batch_window_ms, max_batch=max_batch)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for fn in (attribute, calibrate, enroll, sources, discover, serve):
        app.command(fn.__name__)(fn)
