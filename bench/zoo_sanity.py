"""Sanity check of a zoo benchmark with a plain closed-set CNN.

    .venv/bin/python bench/zoo_sanity.py runs/zoo-mini [--split split1] [--epochs 8]

Trains a small CNN on the split's known classes (train list, 32x32 centre crops, random
horizontal flips only), then prints its closed-set test accuracy and, with the maximum softmax
probability as the knownness score, AUROC of known test images against each unknown
group (seed / arch / dataset) and all unknowns together. A useful zoo has separable known
sources (high accuracy) and unknowns that are not trivially rejected; in the published
benchmark the unseen-seed group is the hardest. When the split has unseen real test images
(real photos no training image comes from, issue 19), it also prints how they fare: the
AUROC of the seen known test images against them (0.5: they look as known as the seen
ones), the share attributed to ``real``, and the share accepted at the threshold that
accepts 95% of the validation images.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from osma.data import UNKNOWN_GROUPS, load_split
from osma.images import center_crop, load_images
from osma.metrics import auroc, calibrate_threshold, closed_set_accuracy
from osma.models import to_pixels
from osma.runtime import resolve_device, seed_everything


def _tensor(samples: list, size: int) -> torch.Tensor:
    imgs, failed = load_images([s.path for s in samples])
    if failed:
        raise SystemExit(f"{len(failed)} images could not be read, e.g. {failed[0][0]}: {failed[0][1]}")
    arr = np.stack([center_crop(im, size) for im in imgs])
    return to_pixels(torch.from_numpy(arr).permute(0, 3, 1, 2))


class SmallCNN(nn.Module):
    """Four conv blocks, no early down-sampling (generator traces live in the finest pixels)."""

    def __init__(self, n_classes: int, ch: int = 32) -> None:
        super().__init__()

        def block(a: int, b: int, pool: bool) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, 1, 1), nn.BatchNorm2d(b), nn.ReLU(True)] + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *block(3, ch, False), *block(ch, ch, True), *block(ch, 2 * ch, True), *block(2 * ch, 4 * ch, True)
        )
        self.head = nn.Linear(4 * ch, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def fit_cnn(x: torch.Tensor, y: torch.Tensor, n_classes: int, epochs: int, device: torch.device, seed: int) -> nn.Module:
    """Train :class:`SmallCNN` on images ``x`` in [-1, 1] (N, 3, H, W): AdamW, one-cycle lr, flips."""
    model = SmallCNN(n_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            xb = x[idx].to(device)
            xb = torch.where(torch.rand(len(idx), 1, 1, 1, generator=gen).to(device) < 0.5, xb, xb.flip(3))
            loss = F.cross_entropy(model(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


@torch.no_grad()
def _softmax(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    model.eval()
    return np.concatenate([F.softmax(model(x[i : i + 512].to(device)), 1).cpu().numpy() for i in range(0, len(x), 512)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo", help="zoo directory (or its data_list.yaml)")
    ap.add_argument("--split", default="split1")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", action="store_true", help="also print AUROC per unknown class and where its images go")
    args = ap.parse_args()

    path = Path(args.zoo)
    data_list = path / "data_list.yaml" if path.is_dir() else path
    split = load_split(data_list, args.split, check_images=True)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    t0 = time.time()
    x_train, y_train = _tensor(split.train, args.size), torch.from_numpy(split.labels(split.train))
    x_test, y_test = _tensor(split.test, args.size), split.labels(split.test)
    x_out = {g: _tensor(split.test_out[g], args.size) for g in UNKNOWN_GROUPS if split.test_out.get(g)}

    model = fit_cnn(x_train, y_train, len(split.known_classes), args.epochs, device, args.seed)
    p_test = _softmax(model, x_test, device)
    msp_known = p_test.max(1)
    acc = closed_set_accuracy(y_test, p_test.argmax(1))
    n_unknown = {g: len(split.unknown_classes[g]) for g in UNKNOWN_GROUPS}
    print(f"zoo {data_list.parent.name} {args.split}: {len(split.known_classes)} known classes, "
          f"{len(split.train)} train images, {args.epochs} epochs, {time.time() - t0:.0f} s on {device}")
    print(f"closed-set test accuracy: {acc:.3f}  ({len(y_test)} images)")
    print("AUROC, known test vs unknown (score = max softmax probability):")
    msp_all = []
    for g, x in x_out.items():
        p_out = _softmax(model, x, device)
        msp = p_out.max(1)
        msp_all.append(msp)
        print(f"  {g:8s} ({n_unknown[g]:2d} classes, {len(x):5d} images): {auroc(msp_known, msp):.3f}")
        if args.per_class:
            names = np.array([s.label for s in split.test_out[g]])
            for c in dict.fromkeys(names):
                m = names == c
                pred = np.bincount(p_out[m].argmax(1), minlength=len(split.known_classes))
                top = int(pred.argmax())
                print(f"      {c:24s} {auroc(msp_known, msp[m]):.3f}   "
                      f"mostly -> {split.known_classes[top]} ({pred[top] / m.sum():.0%})")
    print(f"  {'all':8s} ({sum(n_unknown.values()):2d} classes, {sum(map(len, msp_all)):5d} images): "
          f"{auroc(msp_known, np.concatenate(msp_all)):.3f}")
    if split.unseen_real:
        unseen = {id(s) for s in split.unseen_real}
        mask = np.array([id(s) in unseen for s in split.test])
        tau = calibrate_threshold(_softmax(model, _tensor(split.val, args.size), device).max(1), 0.95)
        ur = p_test[mask]
        real = split.known_classes.index("real")
        print(f"unseen real ({mask.sum()} images): AUROC seen known test vs them {auroc(msp_known[~mask], ur.max(1)):.3f}, "
              f"{np.mean(ur.argmax(1) == real):.0%} attributed to real, {np.mean(ur.max(1) >= tau):.0%} accepted "
              f"at the 95%-of-validation threshold (seen real test: {np.mean(msp_known[(y_test == real) & ~mask] >= tau):.0%})")


if __name__ == "__main__":
    main()
