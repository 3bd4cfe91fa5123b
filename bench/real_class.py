"""One factor of issue 19: does a broader real class keep unseen real photos accepted?

    .venv/bin/python bench/real_class.py ZOO [--split split1] [--methods softmax,pose]
        [--epochs 6] [--option KEY=VALUE ...] [--method-epochs NAME=N] [--out runs/real-class]

Two training sets that differ only in the ``real`` class, made from one zoo built with the
broad real class (docs/zoo.md, "Real images"; ZOO e.g. ``runs/zoo-mini-v4``):

- ``narrow``: the real training images made the way zoos before issue 19 made all of them:
  box-filter down-scaling, no JPEG (``dataset/real_images.csv``: ``pipeline == box``, empty
  ``jpeg``);
- ``broad``: as many real training images drawn at random (seed 0) from all pipelines.

Everything else is the zoo's: the generator training images, the validation images (so
both taus are calibrated on the same broad real validation images) and the test images,
seen and unseen real included. Each variant is a small directory under ``OUT/data/`` (its
``data_list.yaml``, the split's annotation files, a link to the zoo's images). Each method
is trained on both with ``bench/methods.py``'s ``run_one`` (resumable; reports under
``OUT/<variant>/``), then its real test images are broken down with
``bench/unseen_real.py``'s ``breakdown``. The printed table: per method and variant, the
unknown-group AUROCs, unseen real accepted at tau and at the real tau, as real, and the
unseen native-resolution crops (the images the issue found rejected) at the real tau.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
from pathlib import Path

import yaml


def _load(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench_methods, bench_ur = _load("methods"), _load("unseen_real")


def make_variant(zoo: Path, split: str, out: Path, keep_real: set[str]) -> Path:
    """A copy of ``split`` of ``zoo`` whose training list keeps only the real images in
    ``keep_real`` (paths as written in the annotation file); returns its data_list.yaml."""
    entry = yaml.safe_load((zoo / "data_list.yaml").read_text(encoding="utf-8"))[split]
    out.mkdir(parents=True, exist_ok=True)
    ds = out / "dataset"
    ds.mkdir(exist_ok=True)
    for item in (zoo / "dataset").iterdir():  # images, csv, other lists: links; the train list: filtered
        link = ds / item.name
        if item.name != f"{split}_train" and not link.exists():
            link.symlink_to(item.resolve())
    ann = zoo / "dataset" / f"{split}_train" / "annotations" / f"{split}_train.txt"
    lines = ann.read_text(encoding="utf-8").splitlines()
    real_label = "0"  # the real class is index 0 of known_classes in every zoo split
    if entry["known_classes"][0] != "real":
        raise SystemExit(f"{zoo}: {split}'s first known class is not real")
    kept = [ln for ln in lines if ln.split("\t")[1] != real_label or ln.split("\t")[0] in keep_real]
    dst = ds / f"{split}_train" / "annotations"
    dst.mkdir(parents=True, exist_ok=True)
    (dst / f"{split}_train.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (out / "data_list.yaml").write_text(yaml.safe_dump({split: entry}, sort_keys=False), encoding="utf-8")
    return out / "data_list.yaml"


def main(argv: list[str] | None = None) -> int:
    """Build the two variants, train, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--split", default="split1")
    ap.add_argument("--methods", default="softmax,pose")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--method-epochs", action="append", default=[], metavar="NAME=N")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("runs/real-class"))
    args = ap.parse_args(argv)

    from osma.data import REAL, UNKNOWN_GROUPS, load_split
    from osma.methods import load_attributor

    with (args.zoo / "dataset" / "real_images.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if "/real/train_" in r["path"]]
    narrow = {r["path"] for r in rows if r["pipeline"] == "box" and r["jpeg"] == ""}
    broad = set(random.Random(0).sample(sorted(r["path"] for r in rows), len(narrow)))
    train_opts = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.option)}
    epochs = {k: int(v) for k, v in (o.split("=", 1) for o in args.method_epochs)}
    records = bench_ur.real_records(args.zoo)
    result: dict = {}
    for variant, keep in (("narrow", narrow), ("broad", broad)):
        data = make_variant(args.zoo, args.split, args.out / "data" / variant, keep)
        sp = load_split(data, args.split)
        n_real = sum(s.label == REAL for s in sp.train)
        print(f"[{variant}] {n_real} real training images", flush=True)
        for name in args.methods.split(","):
            rep = bench_methods.run_one(data, args.split, name, args.out / variant, epochs=epochs.get(name, args.epochs),
                                        device=args.device, seed=0, batch_size=64, train_options=train_opts,
                                        plots=False)
            att = load_attributor(args.out / variant / "runs" / args.split / name, args.device)
            rows_ur = bench_ur.real_rows(att, sp, records)["rows"]
            result[f"{name} / {variant}"] = {"n_real_train": n_real, "report": rep, "breakdown": rows_ur}
    _print(result, list(UNKNOWN_GROUPS))
    (args.out / "table.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def _print(result: dict, groups: list[str]) -> None:
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    print("\n| method / real class | real train | Acc | " + " | ".join(f"AUROC {g}" for g in groups)
          + " | AUROC all | UR accept | UR as real | UR accept @real tau | UR native @real tau |")
    print("|---|" + "---:|" * (len(groups) + 7))
    for name, r in result.items():
        rep, b = r["report"], r["breakdown"]
        print(f"| {name} | {r['n_real_train']} | {pct(rep['closed_set']['accuracy'])} | "
              + " | ".join(pct(rep["open_set"][g]["auroc"]) for g in groups)
              + f" | {pct(rep['open_set']['all']['auroc'])} | {pct(b['unseen: all']['accept'])} | "
              f"{pct(b['unseen: all']['as_real'])} | {pct(b['unseen: all']['accept_real_tau'])} | "
              f"{pct(b['unseen: native']['accept_real_tau'])} |")


if __name__ == "__main__":
    sys.exit(main())
