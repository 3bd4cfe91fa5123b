"""The training loop, apart from the methods: epochs, checkpoints and exact resume, the log,
precise-BN, progress, and fitting the score at the end.

A method (:class:`osma.methods.network.NetworkMethod`) supplies its modules, optimisers,
schedulers and one :meth:`train_step` returning named losses; the :class:`Trainer` owns
everything around it.

Exact resume: at the start of epoch ``e`` every random generator is re-seeded from
``(seed, e)`` and the data order and augmentations are drawn from that seed, so an epoch is
a deterministic function of the state at its start; the checkpoint written after each
epoch (modules, optimisers, schedulers, epoch, method state; safetensors + JSON) is that
state, and ``checkpoints/config.json`` the configuration it was trained with.

Data-parallel (under ``torchrun``, :mod:`osma.distributed`): every rank trains on its share
of each global batch with gradients averaged before every optimiser step; only rank 0
writes the checkpoints, the log and the bundle; the final embedding pass is sharded.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from osma import distributed as dist
from osma.methods.state import load_state, save_state
from osma.runtime import seed_everything


@dataclass
class StepContext:
    """What a method's training step sees besides the batch."""

    epoch: int
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    #: per-epoch scratch space of the method (e.g. POSE's current augmentation model)
    state: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains a method on a split into a run directory (checkpoints, log, bundle)."""

    def __init__(self, method, out_dir: str | Path, *, progress: bool = True) -> None:  # noqa: ANN001
        self.method = method
        self.out = Path(out_dir)
        self.progress = progress

    def fit(self, split, *, resume: bool = False, data: str | None = None) -> None:  # noqa: ANN001
        """Train on ``split.train``, checkpoint every epoch into ``out/checkpoints`` and write
        the bundle into ``out``. ``resume`` continues after the last checkpoint."""
        m = self.method
        ckdir = self.out / "checkpoints"
        ckdir.mkdir(parents=True, exist_ok=True)
        world, main = dist.world_size(), dist.is_main()
        share = (dist.rank(), world) if world > 1 else None
        progress = self.progress and main
        n_epochs, seed = m.total_epochs(), m.opts.seed
        train = list(split.train)
        if not train:
            raise ValueError(f"split {getattr(split, 'name', '')!r} has no training images")
        counts = np.bincount([i for _, i in m.label_index(train)], minlength=m.n_train)
        m.training.train_counts = {c: int(n) for c, n in zip(m.classes, counts)}
        m.training.data, m.training.split = data, getattr(split, "name", None)
        m.training.folder = getattr(split, "recipe", None)  # a folder split: how to make it again
        bpe = m.opts.batches_per_epoch
        balanced = m.loader(train, train=True, per_class=m.opts.per_class, batches=bpe, share=share)
        other_loaders: dict[int, Any] = {}
        opts = m.optimizers()
        scheds = m.schedulers(opts)
        log_path = self.out / "train_log.jsonl"
        start = 0
        last = sorted(ckdir.glob("epoch_*.json")) if resume else []
        if last:
            start = self._load_checkpoint(last[-1].with_suffix(""), opts, scheds)
            if progress:
                print(f"resuming after epoch {start} ({last[-1].with_suffix('')})")
            if main and log_path.exists():  # drop log lines of epochs after the checkpoint
                lines = [ln for ln in log_path.read_text(encoding="utf-8").splitlines()
                         if ln.strip() and json.loads(ln).get("epoch", 0) <= start]
                log_path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        else:
            for f in ckdir.glob("epoch_*") if main else ():
                f.unlink()
            if main:
                log_path.unlink(missing_ok=True)
            if m.opts.init_from:
                copied = m.init_weights_from(m.opts.init_from)
                if progress:
                    print(f"initialised {', '.join(copied)} from {m.opts.init_from}")
            if m.input.needs_fit:
                m.input.fit(m.input_tensor(b[0]) for b in m.loader(train, train=False))
        dist.barrier()  # every rank has read the checkpoint and config.json before rank 0 rewrites them
        if main:
            (ckdir / "config.json").write_text(json.dumps(self.configuration(), indent=2) + "\n", encoding="utf-8")
        dist.broadcast_modules(m.modules().values())
        dist.average_gradients(True)  # before every optimiser step (no-op when not distributed)
        for epoch in range(start, n_epochs):
            seed_everything(seed * 100_003 + epoch)
            alt = m.epoch_samples(epoch, train)
            if alt is None:
                loader = balanced
            else:
                key = hash(tuple(str(s.path) for s in alt))
                if key not in other_loaders:
                    other_loaders.clear()
                    other_loaders[key] = m.loader(alt, train=True, batch_size=m.opts.per_class * m.n_train,
                                                  share=share)
                loader = other_loaders[key]
            loader.set_epoch(epoch)
            m.train_mode(True)
            t0 = time.perf_counter()
            ctx = StepContext(epoch, opts, scheds)
            m.begin_epoch(ctx)
            # modules a method creates per epoch (POSE's augmentation model): rank 0's everywhere
            dist.broadcast_modules(v for v in ctx.state.values() if isinstance(v, nn.Module))
            sums: dict[str, float] = {}
            n = 0
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(loader), desc=f"{m.method} epoch {epoch + 1}/{n_epochs}", dynamic_ncols=True)
            for b in loader:
                x, y = m.input_tensor(b[0]), torch.as_tensor(b[1]).long().to(m.device)
                losses = m.train_step(ctx, x, y)
                n += 1
                bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
                if bad:  # diverged: every later step would be NaN too; stop before saving anything
                    if bar is not None:
                        bar.close()
                    raise FloatingPointError(
                        f"{m.method}: training diverged at epoch {epoch + 1}, batch {n}: loss(es) {', '.join(bad)} "
                        f"not finite; the checkpoints in {ckdir} hold the last good epoch (try a lower lr)")
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
                    bar.update(1)
            m.end_epoch(ctx)
            if bar is not None:
                bar.close()
            record = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 3), "batches": n,
                      **{k: v / max(n, 1) for k, v in sums.items()}}
            if share is not None:  # the global batch's losses: the ranks' equal-share means averaged
                record.update(dist.all_mean({k: v / max(n, 1) for k, v in sums.items()}), processes=world)
                dist.average_buffers(m.modules().values())
                dist.check_in_sync(m.modules())
            if main:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                self._save_checkpoint(ckdir / f"epoch_{epoch + 1:04d}", epoch + 1, opts, scheds)
        dist.average_gradients(False)
        seed_everything(seed * 100_003 + n_epochs + 7)
        m.training.epochs_done, m.training.resumed_from = n_epochs, (start if resume else None)
        eval_loader = m.loader(train, train=False)
        if m.opts.precise_bn:  # on every rank (the same result everywhere)
            self.recompute_bn(eval_loader)
        m.finalize(split)  # a method's post-training step on the split (default: nothing; every rank)
        emb, labels = m.embed_loader(eval_loader) if share is None else self._embed_sharded(train)
        m.fit_score(emb, labels)
        if main:
            m.save(self.out)
        dist.barrier()

    def _embed_sharded(self, train: list) -> tuple[np.ndarray, np.ndarray]:
        """Training embeddings for the score fit: each rank embeds one contiguous block, all
        ranks receive them all, in the single-process order."""
        m = self.method
        r, w = dist.rank(), dist.world_size()
        block = train[r * len(train) // w:(r + 1) * len(train) // w]
        mine = m.embed_loader(m.loader(block, train=False)) if block else (
            np.zeros((0, m.opts.embed_dim), np.float32), np.zeros(0, np.int64))
        parts = dist.all_gather(mine)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def configuration(self) -> dict[str, Any]:
        """What ``checkpoints/config.json`` records: the run's configuration."""
        m = self.method
        return {"method": m.method, "classes": m.classes[: m.n_train], "preprocess": m.pre.to_dict(),
                "options": m.opts.to_dict(), "score": m.score.describe(),
                **({"folder": m.training.folder} if m.training.folder else {})}  # a folder split, for --resume

    @torch.no_grad()
    def recompute_bn(self, loader) -> None:  # noqa: ANN001
        """"Precise BN": replace BatchNorm running statistics by their exact average over
        ``loader`` (evaluation patches of the training images), computed with the final weights.

        The running averages of a short run lag behind the weights; inference then differs
        from training. Only the BN buffers of :meth:`bn_modules` change (``precise_bn=False`` skips it).
        """
        m = self.method
        bns = [b for mod in m.bn_modules() for b in mod.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        saved = [b.momentum for b in bns]
        for b in bns:
            b.reset_running_stats()
            b.momentum = None  # cumulative moving average = exact mean over batches
        for mod in m.bn_modules():
            mod.train(True)
        for batch in loader:
            m.features(m.input_tensor(batch[0]))
        for b, mom in zip(bns, saved):
            b.momentum = mom
        m.train_mode(False)

    def _save_checkpoint(self, stem: Path, epoch: int, opts: dict, scheds: dict) -> None:
        m = self.method
        state = {
            "epoch": epoch,
            "modules": {k: mod.state_dict() for k, mod in m.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in opts.items()},
            "schedulers": {k: s.state_dict() for k, s in scheds.items()},
            "method": m.epoch_state(),
        }
        save_state(state, stem)
        keep = m.opts.keep_checkpoints
        if keep > 0:  # a checkpoint holds weights + optimiser state: 30 epochs of them are GBs
            for old in sorted(stem.parent.glob("epoch_*.json"))[:-keep]:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                old.unlink()

    def _load_checkpoint(self, stem: Path, opts: dict, scheds: dict) -> int:
        m = self.method
        state = load_state(stem)
        m.load_epoch_state(state["method"])
        for k, mod in m.modules().items():
            if k in state["modules"] or mod.state_dict():
                mod.load_state_dict(state["modules"][k])
        for k, o in opts.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in scheds.items():
            s.load_state_dict(state["schedulers"][k])
        return int(state["epoch"])


__all__ = ["StepContext", "Trainer"]
