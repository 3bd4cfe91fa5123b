"""How hard is an unseen *seed* to reject, as a function of how a generator is trained?

    .venv/bin/python bench/zoo_seeds.py [--archs pixshuffle,dcgan] [--data objects]
        [--checkpoints 1200,3000] [--ema 0.999] [--n 1500] [--epochs 8] [--device auto]

For every architecture, trains seeds 0 and 1 on one real dataset (the ``mini`` preset's
training patches, lr and batch), and at each checkpoint samples ``--n`` images from the
raw weights and, with ``--ema``, from the moving average of the weights. Per checkpoint
and kind it then runs the zoo sanity protocol in miniature: a plain CNN
(``zoo_sanity.fit_cnn``) is trained on {real, every architecture's seed 0} and we print
closed-set accuracy and, per architecture, the AUROC of known test images against its
seed-1 images (score = maximum softmax probability) and the share of seed-1 images
attributed to the same architecture's seed 0. In the published benchmark unseen seeds
are the hardest unknowns, which needs a low AUROC and a high share here.

Real images are held-out patches of the same photos (the zoo's ``real`` band).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from osma.metrics import auroc, closed_set_accuracy
from osma.models import to_pixels
from osma.runtime import resolve_device, seed_everything
from osma.zoo import generators as G
from osma.zoo.builder import _photos, _train_patches
from osma.zoo.presets import get
from osma.zoo.sources import sample_patches
from zoo_sanity import _softmax, fit_cnn


def _t(a: np.ndarray) -> torch.Tensor:
    return to_pixels(torch.from_numpy(a).permute(0, 3, 1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="pixshuffle,dcgan")
    ap.add_argument("--data", default="objects")
    ap.add_argument("--checkpoints", default="1200,3000")
    ap.add_argument("--ema", type=float, default=0.999, help="0 = raw weights only")
    ap.add_argument("--n", type=int, default=1500, help="images per generator (2/3 train, 1/3 test)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    spec = get("mini")
    device = resolve_device(args.device)
    archs = args.archs.split(",")
    marks = sorted(int(c) for c in args.checkpoints.split(","))
    patches = _train_patches(spec, args.data, args.seed)
    real = sample_patches(_photos(args.data, None), args.n, spec.size, np.random.default_rng(args.seed + 17), "real")
    images: dict[tuple[str, str, int, int], np.ndarray] = {}  # (kind, arch, seed, iters) -> images
    t0 = time.time()
    for arch in archs:
        for s in (0, 1):
            def keep(it: int, snaps: dict, arch: str = arch, s: int = s) -> None:
                for kind, m in snaps.items():
                    if hasattr(m, "sample_steps"):  # DDPM: sample as the zoo does
                        m.sample_steps = spec.ddpm_steps
                    gen = torch.Generator().manual_seed(1000 + s)
                    images[kind, arch, s, it] = G.sample(arch, m, args.n, gen, device)

            G.train(arch, patches, seed=1000 + s, iters=marks[-1], width=spec.widths[arch], batch=spec.batch,
                    lr=spec.lr, device=device, ema=args.ema, checkpoints=marks, on_checkpoint=keep)
            print(f"trained {arch} seed {s} ({marks[-1]} iterations, {time.time() - t0:.0f} s so far)", flush=True)

    n_tr = 2 * args.n // 3
    print(f"\nseed rejection on {args.data}: known = real + seed 0 of {', '.join(archs)}; unknown = seed 1")
    print(f"{'weights':8s} {'iters':>6s} {'acc':>6s}  " + "  ".join(f"{a + ' AUROC / to s0':>24s}" for a in archs))
    for kind in ("raw", "ema") if args.ema > 0 else ("raw",):
        for it in marks:
            known = [real] + [images[kind, a, 0, it] for a in archs]
            x_tr = torch.cat([_t(k[:n_tr]) for k in known])
            y_tr = torch.cat([torch.full((n_tr,), i) for i in range(len(known))])
            seed_everything(args.seed)
            model = fit_cnn(x_tr, y_tr, len(known), args.epochs, device, args.seed)
            p = _softmax(model, torch.cat([_t(k[n_tr:]) for k in known]), device)
            y_te = np.repeat(np.arange(len(known)), args.n - n_tr)
            cells = []
            for i, a in enumerate(archs, start=1):
                q = _softmax(model, _t(images[kind, a, 1, it][n_tr:]), device)
                cells.append(f"{auroc(p.max(1), q.max(1)):.3f} / {np.mean(q.argmax(1) == i):4.0%}")
            print(f"{kind:8s} {it:6d} {closed_set_accuracy(y_te, p.argmax(1)):6.3f}  "
                  + "  ".join(f"{c:>24s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
