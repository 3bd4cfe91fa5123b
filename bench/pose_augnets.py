"""What POSE's diversity loss does to the augmentation models of trained runs.

    .venv/bin/python bench/pose_augnets.py DATA_LIST SPLIT RUN [RUN ...] [--images 400] [--device auto]

For each trained ``pose`` run (variant ``am`` or ``full``) prints, on known test images of
SPLIT (centre crops):

- *spread*: the mean and minimum pairwise cosine similarity of f(A_i(x)) and f(A_j(x))
  over the run's augmentation models A_1..A_T, and the mean cosine of f(x) and f(A_i(x)),
  under the final network (lower pairwise similarity = more diverse open space);
- *pull*: the gradient norm, with respect to the augmentation model's parameters, of each
  weighted term of L_A (w * term: ``mse``, ``close_known``, ``div`` against a random
  earlier model) at the start of an epoch (a fresh model) and at its end (the run's last
  model A_T), the network in train mode as during training. A term whose pull is orders of
  magnitude below the others' cannot shape the augmentation models.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
import torch.nn.functional as F

from osma.data import load_split
from osma.images import load_images
from osma.methods import load_attributor
from osma.methods.pose import AugNet
from osma.runtime import seed_everything


def _grad_norms(att, aug: torch.nn.Module, x: torch.Tensor, previous: torch.nn.Module) -> dict[str, float]:  # noqa: ANN001
    weights = att.augnet_weights()
    out = {}
    for name in ("mse", "close_known", "div"):
        aug.zero_grad(set_to_none=True)
        term = att.augnet_terms(aug, x, previous)[name]
        (weights[name] * term).backward()
        out[name] = float(torch.sqrt(sum((p.grad**2).sum() for p in aug.parameters())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_list")
    ap.add_argument("split")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--images", type=int, default=400, help="known test images used (evenly spaced)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    split = load_split(args.data_list, args.split)
    test = split.test[:: max(1, len(split.test) // args.images)][: args.images]
    imgs, failed = load_images([s.path for s in test])
    if failed:
        raise SystemExit(f"{len(failed)} test images could not be read, e.g. {failed[0][0]}: {failed[0][1]}")
    print(f"{'run':48s} {'variant':7s} {'w_div':>7s} {'T':>3s} {'cos A_i,A_j':>12s} {'min':>6s} {'cos x,A_i':>9s}"
          f"  |grad| start: mse / close / div        |grad| end: mse / close / div")
    for run in args.runs:
        seed_everything(0)
        att = load_attributor(run, args.device)
        if att.method != "pose" or len(att.augnets) < 2:
            raise SystemExit(f"{run}: not a pose run with at least two augmentation models")
        x = att.input_tensor(np.stack([att.prepare(np.asarray(im)) for im in imgs]))
        att.train_mode(False)
        with torch.no_grad():
            f0 = att.features(x)
            fa = [att.features(a(x)) for a in att.augnets]
        pair = [F.cosine_similarity(fa[i], fa[j]).mean().item() for i, j in itertools.combinations(range(len(fa)), 2)]
        to_known = np.mean([F.cosine_similarity(f0, f).mean().item() for f in fa])
        # gradients as in step 1 of training: network in train mode, its weights frozen
        att.train_mode(True)
        for name, m in att.modules().items():
            if name != "augnets":
                for p in m.parameters():
                    p.requires_grad_(False)
        xb = x[:64]
        fresh = AugNet(att.opts.aug_hidden).to(att.device)  # what training creates at the start of an epoch
        last = att.augnets[-1]
        for p in last.parameters():
            p.requires_grad_(True)
        g0 = _grad_norms(att, fresh, xb, att.augnets[0])
        g1 = _grad_norms(att, last, xb, att.augnets[0])
        fmt = " / ".join
        print(f"{run[-48:]:48s} {att.opts.variant:7s} {float(att.opts.w_div):7.0e} {len(fa):3d} "
              f"{np.mean(pair):12.3f} {np.min(pair):6.3f} {to_known:9.3f}  "
              f"{fmt(f'{g0[k]:.1e}' for k in ('mse', 'close_known', 'div')):34s}  "
              f"{fmt(f'{g1[k]:.1e}' for k in ('mse', 'close_known', 'div'))}")


if __name__ == "__main__":
    main()
