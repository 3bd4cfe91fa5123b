"""Robustness to what platforms do to images: closed-set accuracy and AUROC of a trained
model when its known and unknown test images are re-compressed, down-scaled, cropped or
noised at test time.

    PYTHONPATH=src .venv/bin/python bench/robustness.py MODEL DATA [--split split1]
        [--only none,jpeg75,...] [--crops N] [--agg NAME] [--batch-size 64] [--device auto]
        [--limit N] [--seed 0]

DATA is a data_list.yaml or a folder tree (a folder uses the split recorded in MODEL).
Every perturbation is applied alike to the known test images and to every unknown test
image, after decoding and before the model's own preprocessing (crop, or the --crops grid):

  none              the images as stored
  jpeg{95,85,75,60} JPEG re-compression at that quality (Pillow / libjpeg, 4:2:0)
  down{0.75,0.5}-bilinear  down-scaling of both sides by the factor, Pillow BILINEAR
                    (antialiased: the kernel widens when shrinking)
  down{0.75,0.5}-area      the same with Pillow BOX (each output pixel the mean of the input
                    area it covers, OpenCV's INTER_AREA)
  crop-half         the centre crop of half the width and half the height
  noise{2,5}        additive Gaussian noise of that sigma (0-255 scale), rounded, clipped;
                    seeded per image (``--seed``, list, image index)
  noise{2,5}+jpeg75 the noise, then JPEG re-compression at quality 75

Printed: one row per perturbation with the closed-set accuracy on the known test images
and the AUROC of the model's knownness score, known test against each unknown group and
against all unknowns. The model is not re-calibrated: AUROC needs no threshold.
``--limit N`` keeps N images of every list, drawn at random (``--seed``) in list order, so
that a list sorted by class keeps its class mix.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

Perturb = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _jpeg(q: int) -> Perturb:
    from osma.images import jpeg_recompress

    return lambda img, rng: jpeg_recompress(img, q)


def _down(f: float, how: str) -> Perturb:
    from PIL import Image

    method = {"bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX}[how]

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        size = (max(1, round(w * f)), max(1, round(h * f)))
        return np.asarray(Image.fromarray(img).resize(size, method), dtype=np.uint8)
    return fn


def _crop_half(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = max(1, h // 2), max(1, w // 2)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top:top + ch, left:left + cw])


def _noise(sigma: float) -> Perturb:
    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return fn


def _then(a: Perturb, b: Perturb) -> Perturb:
    return lambda img, rng: b(a(img, rng), rng)


def perturbations() -> dict[str, Perturb]:
    """Name -> perturbation of a uint8 HxWx3 image (with a per-image random generator)."""
    p: dict[str, Perturb] = {"none": lambda img, rng: img}
    for q in (95, 85, 75, 60):
        p[f"jpeg{q}"] = _jpeg(q)
    for how in ("bilinear", "area"):
        for f in (0.75, 0.5):
            p[f"down{f:g}-{how}"] = _down(f, how)
    p["crop-half"] = _crop_half
    for s in (2, 5):
        p[f"noise{s}"] = _noise(s)
    for s in (2, 5):
        p[f"noise{s}+jpeg75"] = _then(_noise(s), _jpeg(75))
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--only", default=None, help="comma-separated perturbation names (default: all)")
    ap.add_argument("--crops", type=int, default=None, help="crops per image (default: the bundle's)")
    ap.add_argument("--agg", default=None, help="aggregation of the crops (default: the bundle's)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from osma.attribution import decode_many, find_bundle
    from osma.data import open_data
    from osma.methods import load_attributor
    from osma.metrics import auroc, closed_set_accuracy

    pert = perturbations()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(pert)
    bad = [n for n in names if n not in pert]
    if bad:
        ap.error(f"unknown perturbation(s) {bad}; known: {', '.join(pert)}")
    att = load_attributor(find_bundle(args.model), args.device)
    att.set_inference(args.crops, args.agg)
    from precision import limit_split  # bench/precision.py: the same --limit draw

    sp = limit_split(open_data(args.data, args.split, recorded=att.training.folder), args.limit, args.seed)
    lists = {"known": sp.test, **{g: sp.test_out.get(g, []) for g in ("seed", "arch", "dataset")}}
    index = {c: i for i, c in enumerate(att.classes)}
    # name -> list -> (pred, score); labels of the readable known images
    res: dict[str, dict[str, tuple[list, list]]] = {n: {k: ([], []) for k in lists} for n in names}
    labels: list[int] = []
    for li, (key, samples) in enumerate(lists.items()):
        for lo in range(0, len(samples), args.batch_size):
            chunk = samples[lo:lo + args.batch_size]
            decoded, _ = decode_many([str(s.path) for s in chunk])
            kept = sorted(decoded)
            if key == "known":
                labels += [index[chunk[i].label] for i in kept]
            for n in names:
                imgs = [pert[n](decoded[i], np.random.default_rng([args.seed, li, lo + i]))
                        for i in kept]
                if not imgs:
                    continue
                p, _ = att.predict_images(imgs)
                res[n][key][0].append(np.asarray(p.pred))
                res[n][key][1].append(np.asarray(p.score, np.float64))
    y = np.asarray(labels, np.int64)
    print(f"# bench/robustness.py model={args.model} data={args.data} split={args.split} crops={att.crops} "
          f"agg={att.crop_agg} known={len(y)} " + " ".join(f"{g}={len(lists[g])}" for g in ("seed", "arch", "dataset")))
    print("| perturbation | Acc | AUROC seed | AUROC arch | AUROC dataset | AUROC all |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        cat = {k: (np.concatenate(v[0]) if v[0] else np.zeros(0, np.int64), np.concatenate(v[1]) if v[1] else np.zeros(0))
               for k, v in res[n].items()}
        ks = cat["known"][1]
        cells = [f"{100 * auroc(ks, cat[g][1]):.1f}" if len(cat[g][1]) and len(ks) else "-"
                 for g in ("seed", "arch", "dataset")]
        allu = np.concatenate([cat[g][1] for g in ("seed", "arch", "dataset")])
        cells.append(f"{100 * auroc(ks, allu):.1f}" if len(allu) and len(ks) else "-")
        acc = f"{100 * closed_set_accuracy(y, cat['known'][0]):.1f}" if len(y) else "-"
        print(f"| {n} | {acc} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
