"""Data-parallel training under ``torchrun``: process group, rank helpers, gradient averaging.

``torchrun --nproc-per-node N -m osma train ...`` starts N copies of ``osma train`` with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` in their environment;
:func:`setup` joins them into one process group (NCCL on CUDA, gloo on the CPU).

How the ranks stay one model (see docs/scale.md):

* every rank builds the same model from the same seed, and every module of the method
  (:meth:`~osma.methods.network.NetworkMethod.modules`: backbone, heads, POSE's frozen
  augmentation models, the metric method's proxies, the input transform) is broadcast from
  rank 0 before the first epoch (:func:`broadcast_modules`), as are the modules a method
  creates in ``begin_epoch`` (POSE's new augmentation model);
* each rank trains on a disjoint share of every global batch (the balanced sampler's batch
  sliced ``batch[rank::world]``), and before **every** optimiser step, of every optimiser
  (the network's, the proxies', POSE's per-epoch augmentation-model optimiser), the
  gradients are averaged over the ranks (:func:`average_gradients`, one all-reduce of
  the flattened gradients). That is the all-reduce DistributedDataParallel performs, done
  at the optimiser instead of inside ``backward``, because POSE's step runs the backbone
  three times with the network frozen for the first pass, which DDP's reducer does not allow;
* BatchNorm statistics are per rank during the epoch (as DDP's default without
  SyncBatchNorm) and averaged over the ranks at the end of each epoch; precise-BN then
  recomputes them over all training images anyway;
* :func:`check_in_sync` compares a checksum of every parameter and buffer across ranks after
  each epoch and raises when they differ.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def is_initialized() -> bool:
    """True when a torch.distributed process group is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (the process that writes checkpoints, logs and the bundle)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    import torch.distributed as dist

    if is_initialized():
        dist.barrier()


def setup(device: str = "auto") -> tuple[str, bool]:
    """Join the process group torchrun describes in the environment, if any.

    Returns ``(device, started)``: the device this rank should use (``cuda:LOCAL_RANK`` when
    ``device`` is ``auto``/``cuda`` and CUDA is available) and whether this call started
    the group (the caller then ends it with :func:`teardown`). Without torchrun
    (``WORLD_SIZE`` unset or 1) nothing happens.
    """
    import torch.distributed as dist

    if env_world_size() <= 1 or is_initialized():
        return device, False
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    spec = (device or "auto").lower()
    cuda = torch.cuda.is_available() and (spec == "auto" or spec.startswith("cuda"))
    if cuda:
        if spec in ("auto", "cuda"):
            spec = f"cuda:{local}"
        torch.cuda.set_device(torch.device(spec))
    elif spec == "auto":
        spec = "cpu"
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60),
                            **({"device_id": torch.device(spec)} if cuda else {}))
    return spec, True


def teardown() -> None:
    """End the process group started by :func:`setup`."""
    import torch.distributed as dist

    if is_initialized():  # no barrier: after an error on one rank the others would wait forever
        dist.destroy_process_group()


def _tensors(modules: Iterable[nn.Module], buffers: bool = True) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for m in modules:
        out += [p.data for p in m.parameters()]
        if buffers:
            out += list(m.buffers())
    return out


@torch.no_grad()
def broadcast_modules(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy every parameter and buffer of ``modules`` from rank ``src`` to all ranks."""
    import torch.distributed as dist

    if not is_initialized():
        return
    for t in _tensors(modules):
        dist.broadcast(t, src)


@torch.no_grad()
def average_buffers(modules: Iterable[nn.Module]) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over the ranks."""
    if not is_initialized():
        return
    _mean_in_place([b for m in modules for b in m.buffers() if b.is_floating_point()])


def _mean_in_place(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks: one all-reduce of them all, flattened."""
    import torch.distributed as dist

    if not tensors:
        return
    with torch.no_grad():
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:  # noqa: ANN401
    """Optimizer step pre-hook: replace each gradient by its mean over the ranks.

    One all-reduce of the flattened gradients of the parameters that have one; every rank
    runs the same code path, so the same parameters have gradients everywhere.
    """
    if not is_initialized():
        return
    _mean_in_place([p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None])


_HOOK: Any = None


def average_gradients(on: bool) -> None:
    """Switch gradient averaging on or off: while on (and distributed), every optimiser step,
    of any optimiser, first averages its gradients over the ranks (a global ``torch.optim``
    step pre-hook, :func:`average_gradients_hook`). Idempotent."""
    global _HOOK
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    if on and _HOOK is None and is_initialized():
        _HOOK = register_optimizer_step_pre_hook(average_gradients_hook)
    elif not on and _HOOK is not None:
        _HOOK.remove()
        _HOOK = None


def all_mean(values: Mapping[str, float]) -> dict[str, float]:
    """Mean of each named float over the ranks (every rank passes the same keys)."""
    import torch.distributed as dist

    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.cpu().tolist())}


@torch.no_grad()
def check_in_sync(modules: Mapping[str, nn.Module]) -> None:
    """Raise when any module's parameters or buffers differ between ranks (a checksum each)."""
    import torch.distributed as dist

    if not is_initialized():
        return
    names = sorted(modules)
    sums = []
    for k in names:
        ts = _tensors([modules[k]])
        w = [(t.double().reshape(-1) * torch.linspace(1, 2, t.numel(), dtype=torch.float64, device=t.device)).sum()
             for t in ts]
        sums.append(torch.stack(w).sum() if w else torch.zeros((), dtype=torch.float64, device="cpu"))
    local = torch.stack([s.cpu() for s in sums])
    if dist.get_backend() == "nccl":
        local = local.cuda()
    lo, hi = local.clone(), local.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    bad = [n for n, a, b in zip(names, lo.tolist(), hi.tolist()) if abs(a - b) > 1e-9 * max(1.0, abs(a))]
    if bad:
        raise RuntimeError(f"rank {rank()}: modules out of sync across ranks: {', '.join(bad)}")


def all_gather(obj: Any) -> list[Any]:  # noqa: ANN401
    """Every rank's picklable ``obj``, as a list by rank, on every rank."""
    import torch.distributed as dist

    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


__all__ = [
    "all_gather", "all_mean", "average_buffers", "average_gradients", "barrier", "broadcast_modules",
    "check_in_sync", "env_world_size", "is_initialized", "is_main", "rank", "setup", "teardown", "world_size",
]
