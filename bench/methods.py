"""Train and evaluate every method on every split of a benchmark and print one table.

    python bench/methods.py DATA_LIST.yaml [--splits split1,split2] [--epochs N] [--out DIR]
        [--methods softmax,pose-base,pose-am,pose,metric] [--device auto] [--seed 0]
        [--option KEY=VALUE ...] [--score NAME] [--score-opt KEY=VALUE ...]

Methods: ``softmax`` (closed-set classifier, POSE's "Base" trained by its own recipe),
``pose-base`` / ``pose-am`` / ``pose`` (POSE without augmentation models, with them but
without the diversity loss, full) and ``metric`` (Fang et al., ProxyNCA++ + centroids).
Runs go to ``OUT/runs/<split>/<method>``, reports to ``OUT/reports/<split>/<method>``; a
run whose report exists is skipped, a run interrupted during training is resumed, so the
script can be re-started at will. The table (mean ± std over splits, in %) is printed and
written to ``OUT/table.md`` and ``OUT/table.json``.

``--option KEY=VALUE`` (repeatable, YAML value) is a training option passed to every
method (``crop=64``, ``backbone=simple_cnn``, ...). ``--score NAME`` picks the knownness
score fitted after training and stored in the bundle (a name of ``osma.scores.SCORES``:
msp, max_logit, energy, centroid, knn, mahalanobis; default: each method's own), and
``--score-opt KEY=VALUE`` (repeatable, YAML value) sets one of its options, e.g.
``--score knn --score-opt k=5``; they reach ``osma.methods.train`` as ``score=NAME`` and
``score.KEY=VALUE``. ``--option score=knn`` and the first format's ``--option knn_k=5``
still work (``methods.train`` reads them the same way).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

#: bench name -> (registry method, method options). Options may hold two bench keys:
#: ``init_from`` (the bench name of a run on the same split whose bundle the method starts
#: from, e.g. PROSER fine-tunes the softmax classifier) and ``rescore`` (no training: the run
#: of that bench name re-scored with the entry's ``score``, e.g. OpenMax on the softmax run).
METHODS: dict[str, tuple[str, dict]] = {
    "softmax": ("softmax", {}),
    # the softmax classifier trained as long as PROSER (its 6 epochs start from softmax's 6):
    # run with --method-epochs softmax-12ep=12 (issue 13's confound)
    "softmax-12ep": ("softmax", {}),
    "pose-base": ("pose", {"variant": "base"}),
    "pose-am": ("pose", {"variant": "am"}),
    "pose": ("pose", {}),
    # POSE trained as long as PROSER and softmax-12ep: run with --method-epochs pose-12ep=12
    # (issue 13: is POSE's closed-set accuracy, hence its OSCR, a matter of training length?)
    "pose-12ep": ("pose", {}),
    "metric": ("metric", {}),
    # post-hoc scores on the softmax network (issue 13's cheap baselines, OpenMax)
    "softmax+max_logit": ("softmax", {"rescore": "softmax", "score": "max_logit"}),
    "softmax+energy": ("softmax", {"rescore": "softmax", "score": "energy"}),
    "softmax+mahalanobis": ("softmax", {"rescore": "softmax", "score": "mahalanobis"}),
    "softmax+knn": ("softmax", {"rescore": "softmax", "score": "knn"}),
    "openmax": ("softmax", {"rescore": "softmax", "score": "openmax"}),
    # open-set recognition methods (issue 13)
    "proser": ("proser", {"init_from": "softmax"}),
    "arpl": ("arpl", {"cs": False}),
    "arpl+cs": ("arpl", {}),
    "dias": ("dias", {"optimizer": "adam", "lr": 1e-4}),  # the code's SGD 0.1 diverged on mini (DCT input)
    # attribution methods (issue 14)
    "prnu": ("prnu", {}),
    "dct_cnn": ("dct_cnn", {}),
    "yu": ("yu", {}),
    "dna_det": ("dna_det", {}),
    "repmix": ("repmix", {}),
}

#: the README table's methods: what a run without --methods trains (the baselines are asked for by name)
CORE = ("softmax", "pose-base", "pose-am", "pose", "metric")

GROUPS = ("seed", "arch", "dataset", "all")

#: table columns: (header, path into the report / bench record, is a fraction)
COLUMNS: list[tuple[str, tuple[str, ...], bool]] = [
    ("Acc", ("closed_set", "accuracy"), True),
    *[(f"AUROC {g}", ("open_set", g, "auroc"), True) for g in GROUPS],
    *[(f"OSCR {g}", ("open_set", g, "oscr"), True) for g in GROUPS],
    ("aF1", ("fang", "af1"), True),
    ("CRR", ("fang", "crr"), True),
    ("aF1-CRR AUC", ("fang", "af1_crr_auc"), True),
    ("UR accept", ("unseen_real", "acceptance"), True),
    ("UR as real", ("unseen_real", "as_real"), True),
    ("UR accept @real tau", ("unseen_real", "real_tau", "acceptance"), True),
    ("CRR @real tau", ("unseen_real", "real_tau", "crr"), True),
    ("s/epoch", ("bench", "seconds_per_epoch"), False),
    ("img/s", ("timing", "images_per_second"), False),
]


#: columns shown only when some report has them (a split with unseen real test images)
OPTIONAL_COLUMNS: frozenset[str] = frozenset({"UR accept", "UR as real", "UR accept @real tau", "CRR @real tau"})


def _get(d: dict, path: tuple[str, ...]) -> float | None:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return None if d is None else float(d)


def run_one(data: Path, split: str, name: str, out: Path, *, epochs: int, device: str, seed: int,
            batch_size: int, train_options: dict, plots: bool = True,
            spec: tuple[str, dict] | None = None) -> dict:
    """Train (or resume, or skip) one method on one split, evaluate it and return the report.

    ``spec`` (registry method, method options) replaces ``METHODS[name]`` (other bench
    scripts name their own variants, e.g. bench/backbones.py).
    """
    from osma import methods
    from osma.data import load_split
    from osma.evaluation import evaluate

    method, options = spec if spec is not None else METHODS[name]
    options = dict(options)
    rescore, init_from = options.pop("rescore", None), options.pop("init_from", None)
    run_dir = out / "runs" / split / name
    rep_dir = out / "reports" / split / name
    done = rep_dir / "report.json"
    if done.exists():
        print(f"[{split}/{name}] done, skipping", flush=True)
        return json.loads(done.read_text(encoding="utf-8"))
    common = dict(epochs=epochs, device=device, seed=seed, batch_size=batch_size, train_options=train_options,
                  plots=plots)
    if rescore is not None:  # no training: the base run re-scored (trained first if needed)
        base = run_one(data, split, rescore, out, **common)
        return _rescore(data, split, {name: options.pop("score")}, out, rescore, base,
                        device=device, seed=seed, batch_size=batch_size, plots=plots)[name]
    if init_from is not None:
        run_one(data, split, init_from, out, **common)
        options["init_from"] = str(out / "runs" / split / init_from)
    marker = run_dir / "bench_train.json"  # written only once training finished
    if not marker.exists():
        resume = run_dir.exists() and any(run_dir.iterdir())
        print(f"[{split}/{name}] training {method} {options or ''} for {epochs} epoch(s)"
              f"{' (resuming)' if resume else ''}", flush=True)
        t0 = time.perf_counter()
        methods.train(data, split, method, run_dir, epochs=epochs, device=device, seed=seed, resume=resume,
                      progress=False, **{**train_options, **options})
        secs = time.perf_counter() - t0
        import torch

        # the thread count decides the float summation order, hence the run's exact figures
        marker.write_text(json.dumps({"seconds": secs, "epochs": epochs, "seconds_per_epoch": secs / max(epochs, 1),
                                      "resumed": resume, "threads": torch.get_num_threads()}, indent=2),
                          encoding="utf-8")
    bench = json.loads(marker.read_text(encoding="utf-8"))
    print(f"[{split}/{name}] evaluating", flush=True)
    attributor = methods.load_attributor(run_dir, device)
    report = evaluate(attributor, load_split(data, split), rep_dir, batch_size=batch_size, seed=seed, plots=plots)
    report["bench"] = bench
    done.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _rescore(data: Path, split: str, scores: dict[str, str], out: Path, base_name: str, base: dict, *,
             device: str, seed: int, batch_size: int, plots: bool) -> dict[str, dict]:
    """Evaluate the bundle of run ``base_name`` once per bench name in ``scores`` (name -> score),
    each score fitted on its training embeddings; the split is embedded once for all of them."""
    import shutil
    import tempfile

    from osma import methods
    from osma.data import load_split
    from osma.evaluation import evaluate_scores

    run_dir = out / "runs" / split / base_name
    print(f"[{split}/{','.join(scores)}] evaluating {base_name} with score(s) {','.join(scores.values())}", flush=True)
    att = methods.load_attributor(run_dir, device)
    (out / "reports" / split).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out / "reports" / split, prefix=".rescore-") as tmp:
        got = evaluate_scores(att, load_split(data, split), [(s, None) for s in scores.values()], tmp,
                              batch_size=batch_size, seed=seed, plots=plots)
        keys = list(got)  # evaluate_scores' keys, in the order of ``scores``
        reports = {}
        for (name, _), key in zip(scores.items(), keys):
            rep_dir = out / "reports" / split / name
            if rep_dir.exists():  # a report-less leftover of an interrupted evaluation
                shutil.rmtree(rep_dir)
            shutil.move(Path(tmp) / key, rep_dir)
            report = {**got[key], "bench": {**base.get("bench", {}), "rescored": base_name}}
            (rep_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            reports[name] = report
    return reports


def _rescore_shared(data: Path, split: str, names: list[str], out: Path, common: dict,
                    epochs_for: dict[str, int]) -> None:
    """Evaluate together the re-scorings of one run (e.g. max_logit, energy, OpenMax on softmax)
    that have no report yet, so that the run embeds the split once, not once per score."""
    by_base: dict[str, dict[str, str]] = {}
    for name in names:
        opts = METHODS[name][1]
        if "rescore" in opts and not (out / "reports" / split / name / "report.json").exists():
            by_base.setdefault(opts["rescore"], {})[name] = opts["score"]
    for base_name, scores in by_base.items():
        if len(scores) > 1:  # the base trained as run_one would (with its first re-scoring's epochs)
            base = run_one(data, split, base_name, out, **{**common, "epochs": epochs_for[next(iter(scores))]})
            _rescore(data, split, scores, out, base_name, base, device=common["device"], seed=common["seed"],
                     batch_size=common["batch_size"], plots=common["plots"])


def summarize(reports: dict[str, list[dict]], columns: list | None = None) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Per method and column (default :data:`COLUMNS`): mean, std (sample std, 0 for one split) and number of splits."""
    table: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for name, reps in reports.items():
        row = {}
        for header, path, _ in columns or COLUMNS:
            vals = np.array([v for v in (_get(r, path) for r in reps) if v is not None], float)
            row[header] = {
                "mean": float(vals.mean()) if len(vals) else None,
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else (0.0 if len(vals) else None),
                "n": int(len(vals)),
            }
        table[name] = row
    return table


def to_markdown(table: dict, splits: list[str], columns: list | None = None, label: str = "method") -> str:
    """The summary as a markdown table; fractions shown in %, mean ± std over splits."""
    columns = [c for c in columns or COLUMNS  # an optional column only when some row has a value
               if c[0] not in OPTIONAL_COLUMNS
               or any(row.get(c[0], {}).get("mean") is not None for row in table.values())]
    head = f"| {label} | " + " | ".join(h for h, _, _ in columns) + " |"
    lines = [f"Mean ± std over {len(splits)} split(s) ({', '.join(splits)}); metrics in %.", "",
             head, "|---|" + "---:|" * len(columns)]
    for name, row in table.items():
        cells = []
        for header, _, frac in columns:
            c = row[header]
            if c["mean"] is None:
                cells.append("–")
                continue
            k = 100.0 if frac else 1.0
            fmt = ".1f" if frac else ".3g"
            cells.append(f"{k * c['mean']:{fmt}}" + (f" ± {k * c['std']:{fmt}}" if c["n"] > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="benchmark data_list.yaml")
    ap.add_argument("--splits", default=None, help="comma-separated splits (default: all in the file)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-methods"))
    ap.add_argument("--methods", default=",".join(CORE), help=f"comma-separated, from {','.join(METHODS)} "
                    "(default: the README table's methods)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64, help="evaluation batch size")
    ap.add_argument("--method-epochs", action="append", default=[], metavar="NAME=N",
                    help="epochs for one method instead of --epochs (e.g. metric=30: its epochs are cheap)")
    ap.add_argument("--no-plots", action="store_true", help="skip the report plots (t-SNE is slow on big zoos)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra training option passed to every method (YAML value), e.g. --option crop=64")
    ap.add_argument("--score", default=None, metavar="NAME",
                    help="knownness score of every method (osma.scores: msp, max_logit, energy, centroid, knn, "
                         "mahalanobis; default: the method's own)")
    ap.add_argument("--score-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the score (YAML value), e.g. --score knn --score-opt k=5")
    args = ap.parse_args(argv)

    from osma.data import split_names

    if not args.data.is_file():
        ap.error(f"{args.data}: no such file")
    available = split_names(args.data)
    splits = args.splits.split(",") if args.splits else available
    missing = [s for s in splits if s not in available]
    if missing:
        ap.error(f"splits {missing} not in {args.data} (has {available})")
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    train_options = {}
    for opt in args.option:
        key, sep, value = opt.partition("=")
        if not sep:
            ap.error(f"--option {opt!r}: expected KEY=VALUE")
        train_options[key.replace("-", "_")] = yaml.safe_load(value)
    if args.score is not None:
        from osma.scores import SCORES

        if args.score not in SCORES:
            ap.error(f"--score {args.score!r}: choose one of {sorted(SCORES)}")
        if train_options.get("score", args.score) != args.score:
            ap.error(f"--score {args.score} and --option score={train_options['score']} disagree")
        train_options["score"] = args.score
    for opt in args.score_opt:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            ap.error(f"--score-opt {opt!r}: expected KEY=VALUE")
        train_options[f"score.{key.replace('-', '_')}"] = yaml.safe_load(value)
    if args.score is not None and args.score_opt:
        try:  # a misspelt score option fails here rather than after the first run started
            SCORES[args.score].Options.from_dict({k[6:]: v for k, v in train_options.items() if k.startswith("score.")})
        except ValueError as exc:
            ap.error(f"--score-opt: {exc}")

    epochs_for = {n: args.epochs for n in names}
    for opt in args.method_epochs:
        key, sep, value = opt.partition("=")
        if not sep or key not in METHODS or not value.isdigit():
            ap.error(f"--method-epochs {opt!r}: expected NAME=N with NAME in {list(METHODS)}")
        epochs_for[key] = int(value)

    reports: dict[str, list[dict]] = {n: [] for n in names}
    for split in splits:
        _rescore_shared(args.data, split, names, args.out,
                        dict(epochs=args.epochs, device=args.device, seed=args.seed, batch_size=args.batch_size,
                             train_options=train_options, plots=not args.no_plots), epochs_for)
        for name in names:
            reports[name].append(run_one(args.data, split, name, args.out, epochs=epochs_for[name],
                                         device=args.device, seed=args.seed, batch_size=args.batch_size,
                                         train_options=train_options, plots=not args.no_plots))
    table = summarize(reports)
    md = to_markdown(table, splits)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(md, encoding="utf-8")
    (args.out / "table.json").write_text(json.dumps({"splits": splits, "epochs": epochs_for, "options": train_options,
                                                    "command": " ".join(sys.argv), "methods": table},
                                                    indent=2) + "\n", encoding="utf-8")
    print(md)
    print(f"written to {args.out / 'table.md'} and {args.out / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
