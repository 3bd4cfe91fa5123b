"""Backbone study of Fang, Nguyen and Stamm (BMVC 2023, Table 2): ``metric`` with each
embedding network, with and without forensic pretraining, on every split of a benchmark.

    python bench/backbones.py DATA_LIST.yaml [--splits split1,split2] [--epochs N]
        [--pretrain-epochs N] [--out DIR] [--backbones mislnet,xception,resnet50,camid_cnn,srnet]
        [--device auto] [--seed 0] [--option KEY=VALUE ...] [--score NAME]
        [--variants scratch,pretrain] [--merge EARLIER_TABLE.json ...]

For each backbone two runs: ``metric`` (ProxyNCA++, default score ``centroid``) trained
from scratch for ``--epochs`` epochs, and the same after ``--pretrain-epochs`` epochs of
forensic pretraining (the method's ``pretrain_epochs`` option: processing-chain
classification on the ``real`` images; the paper pretrains on camera models instead).
The table has Fang's columns, aF1-CRR AUC, aF1 and CRR, plus closed-set accuracy, AUROC
over all unknown images and training seconds per metric-learning epoch (from the run's
train_log.jsonl; pretraining epochs are left out), mean ± std over splits.

Runs go to ``OUT/runs/<split>/<backbone>[-pretrain]``, reports to ``OUT/reports/...``; a run
whose report exists is skipped and an interrupted one resumed (bench/methods.py's
``run_one``, which this script reuses with its ``summarize`` and ``to_markdown``). The table
is printed and written to ``OUT/table.md`` and ``OUT/table.json``. ``--option`` (YAML value)
is a training option of every run, e.g. ``--option crop=64 --option width=0.5``.

A study can run in pieces (two processes on two cores, or sessions on different machines):
``--variants pretrain`` trains only the pretrained runs, and ``--merge`` puts the rows of
earlier ``table.json`` files (same splits, epochs, pretraining epochs and options, or an
error says which differs) before this run's rows in the table written.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import yaml

_spec = importlib.util.spec_from_file_location("bench_methods", Path(__file__).with_name("methods.py"))
bench_methods = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_methods)

#: Fang et al.'s Table 2 backbones (MISLNet is their default)
DEFAULT_BACKBONES = ("mislnet", "xception", "resnet50", "camid_cnn", "srnet")
#: the table's columns, in order (headers of bench/methods.py's COLUMNS)
HEADERS = ("aF1-CRR AUC", "aF1", "CRR", "Acc", "AUROC all", "s/epoch")
COLUMNS = [next(c for c in bench_methods.COLUMNS if c[0] == h) for h in HEADERS]


def run_name(backbone: str, pretrain: bool) -> str:
    """Directory / row name of one configuration."""
    return f"{backbone}-pretrain" if pretrain else backbone


def metric_seconds_per_epoch(run_dir: Path, pretrain_epochs: int) -> float | None:
    """Mean seconds of the metric-learning epochs in ``run_dir/train_log.jsonl`` (None if absent).

    A resumed run may log an epoch twice; the last record of each epoch counts.
    """
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return None
    last: dict[int, float] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            last[int(rec["epoch"])] = float(rec["seconds"])
    secs = [s for e, s in last.items() if e > pretrain_epochs]
    return sum(secs) / len(secs) if secs else None


VARIANTS = ("scratch", "pretrain")
#: what must agree between tables merged into one
_SAME = ("splits", "epochs", "pretrain_epochs", "options")


def merge_rows(earlier: list[Path], current: dict) -> dict:
    """The rows of the earlier ``table.json`` files, then ``current["backbones"]``'s rows.

    Each earlier table must have the settings of ``current`` (``_SAME``); a row present in
    both comes from ``current``.
    """
    rows: dict = {}
    for path in earlier:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--merge {path}: cannot read a table.json ({e})") from e
        for key in _SAME:
            if old.get(key) != current.get(key):
                raise ValueError(f"--merge {path}: its {key!r} is {old.get(key)!r}, this run's {current.get(key)!r}")
        rows.update(old.get("backbones", {}))
    rows.update(current["backbones"])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="benchmark data_list.yaml")
    ap.add_argument("--splits", default=None, help="comma-separated splits (default: all in the file)")
    ap.add_argument("--epochs", type=int, default=5, help="metric-learning epochs")
    ap.add_argument("--pretrain-epochs", type=int, default=2, help="forensic pretraining epochs of the pretrained runs")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-backbones"))
    ap.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES), help="comma-separated osma.models backbones")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64, help="evaluation batch size")
    ap.add_argument("--no-plots", action="store_true", help="skip the report plots")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="training option of every run (YAML value), e.g. --option crop=64")
    ap.add_argument("--score", default=None, metavar="NAME", help="knownness score (default: metric's centroid)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="which runs per backbone: scratch, pretrain or both (default)")
    ap.add_argument("--merge", action="append", default=[], type=Path, metavar="TABLE.json",
                    help="rows of an earlier table.json with the same settings, put before this run's")
    args = ap.parse_args(argv)

    from osma.data import split_names
    from osma.models import BACKBONES
    from osma.scores import SCORES

    if not args.data.is_file():
        ap.error(f"{args.data}: no such file")
    if args.epochs < 1 or args.pretrain_epochs < 1:
        ap.error("--epochs and --pretrain-epochs must be >= 1")
    available = split_names(args.data)
    splits = args.splits.split(",") if args.splits else available
    missing = [s for s in splits if s not in available]
    if missing:
        ap.error(f"splits {missing} not in {args.data} (has {available})")
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        ap.error(f"unknown backbones {unknown}; choose from {sorted(BACKBONES)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants {args.variants!r}: choose from {','.join(VARIANTS)}")
    pretrains = [v == "pretrain" for v in VARIANTS if v in variants]
    missing_merge = [str(p) for p in args.merge if not p.is_file()]
    if missing_merge:
        ap.error(f"--merge: no such file {missing_merge}")
    train_options: dict = {}
    for opt in args.option:
        key, sep, value = opt.partition("=")
        if not sep:
            ap.error(f"--option {opt!r}: expected KEY=VALUE")
        key = key.replace("-", "_")
        if key in ("backbone", "pretrain_epochs", "epochs"):
            ap.error(f"--option {key}: set by this script (--backbones, --pretrain-epochs, --epochs)")
        train_options[key] = yaml.safe_load(value)
    if args.score is not None:
        if args.score not in SCORES:
            ap.error(f"--score {args.score!r}: choose one of {sorted(SCORES)}")
        train_options["score"] = args.score

    names = [run_name(b, p) for b in backbones for p in pretrains]
    reports: dict[str, list[dict]] = {n: [] for n in names}
    for split in splits:
        for b in backbones:
            for pre in pretrains:
                name = run_name(b, pre)
                p_epochs = args.pretrain_epochs if pre else 0
                rep = bench_methods.run_one(
                    args.data, split, name, args.out, epochs=args.epochs, device=args.device, seed=args.seed,
                    batch_size=args.batch_size, train_options=train_options, plots=not args.no_plots,
                    spec=("metric", {"backbone": b, "pretrain_epochs": p_epochs}))
                # bench_train.json divides all training time by --epochs; count metric epochs only
                sec = metric_seconds_per_epoch(args.out / "runs" / split / name, p_epochs)
                if sec is not None:
                    rep["bench"]["seconds_per_epoch"] = sec
                reports[name].append(rep)
    result = {"splits": splits, "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
              "options": train_options, "command": " ".join(sys.argv),
              "backbones": bench_methods.summarize(reports, COLUMNS)}
    if args.merge:
        try:
            result["backbones"] = merge_rows(args.merge, result)
        except ValueError as e:
            ap.error(str(e))
        result["merged"] = [str(p) for p in args.merge]
    table = result["backbones"]
    md = bench_methods.to_markdown(table, splits, COLUMNS, label="backbone")
    md += (f"\nmetric (ProxyNCA++, score {train_options.get('score', 'centroid')}), {args.epochs} epoch(s); "
           f"'-pretrain': after {args.pretrain_epochs} epoch(s) of forensic pretraining. "
           "s/epoch: seconds per metric-learning epoch.\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(md, encoding="utf-8")
    (args.out / "table.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(md)
    print(f"written to {args.out / 'table.md'} and {args.out / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
