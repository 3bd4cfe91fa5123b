"""Inference precision: ``fp32`` or ``bf16`` (bfloat16 autocast around the network forward).

``bf16`` runs the embedding network under ``torch.autocast(device_type, torch.bfloat16)``;
its outputs are cast back to float32 before anything is scored, so scores, fits and
thresholds always see float32 embeddings. ``auto`` picks ``bf16`` only where both hold:

1. the hardware computes bfloat16 natively (:func:`native_bf16`: a CPU with the
   ``avx512_bf16`` or ``amx_bf16`` flag, or a CUDA device that supports bfloat16);
2. the method is in :data:`BF16_MEASURED` for that device type, i.e. bf16 was measured
   (``bench/precision.py`` on ``mini``) to decide like fp32 on at least 99.5% of a split's
   test images with AUROC within 0.2 points (issue 17).

Otherwise ``auto`` is ``fp32``. :data:`BF16_MEASURED` is empty: on ``mini`` v4 split1 no
method passed on every bundle (0.4-1.5% of the decisions changed; docs/speed.md, Results),
so ``auto`` means fp32.

Memory layout: on the CPU the inference forward hands the backbone a batch of at least
:data:`CHANNELS_LAST_MIN_BATCH` crops in channels-last (NHWC) layout
(:func:`channels_last`), which oneDNN's convolutions run faster (issue 17, ``bench/layout.py``:
1.03-2.28x on every backbone at batches of 64 and 256, crops 32 and 64); smaller batches,
where reordering the (NCHW) weights on every call can cost more than it saves (0.53-1.13x
for one image), keep the default layout. The numbers differ from the default layout's only
by float rounding. Training keeps the default layout; CUDA too (not measured).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")

#: device type ("cpu", "cuda") -> methods measured to decide like fp32 in bf16 (see the module doc)
BF16_MEASURED: dict[str, frozenset[str]] = {"cpu": frozenset(), "cuda": frozenset()}

#: /proc/cpuinfo flags of native bfloat16 arithmetic on x86 CPUs
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: Any) -> bool:  # noqa: ANN401 - torch.device or str
    """True when ``device`` computes bfloat16 natively (not emulated in fp32)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return any(f in cpu_flags() for f in CPU_BF16_FLAGS)
    return False


def resolve_precision(spec: str | None, method: str, device: Any) -> str:  # noqa: ANN401
    """``auto`` / ``fp32`` / ``bf16`` -> ``fp32`` or ``bf16`` for ``method`` on ``device``.

    An explicit ``bf16`` is honoured on any device (emulated where not native: slower, same
    rounding); ``auto`` follows the rule of the module docstring.
    """
    import torch

    spec = (spec or "auto").lower()
    if spec not in PRECISIONS:
        raise ValueError(f"unknown precision {spec!r}: use one of {', '.join(PRECISIONS)}")
    if spec != "auto":
        return spec
    dev = torch.device(device)
    if native_bf16(dev) and method in BF16_MEASURED.get(dev.type, frozenset()):
        return "bf16"
    return "fp32"


#: device types whose inference forward uses the channels-last layout (measured faster)
CHANNELS_LAST: frozenset[str] = frozenset({"cpu"})
#: smallest batch (crops) given the channels-last layout (below it the default was faster)
CHANNELS_LAST_MIN_BATCH = 64


def channels_last(x: Any, device: Any, enabled: bool = True) -> Any:  # noqa: ANN401 - torch tensors
    """``x`` (N, C, H, W) in channels-last layout when ``enabled``, N >= :data:`CHANNELS_LAST_MIN_BATCH`
    and ``device``'s type is in :data:`CHANNELS_LAST`; otherwise (or not 4-D) unchanged."""
    import torch

    if (enabled and getattr(x, "ndim", 0) == 4 and x.shape[0] >= CHANNELS_LAST_MIN_BATCH
            and torch.device(device).type in CHANNELS_LAST):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def autocast(precision: str, device: Any) -> Iterator[None]:  # noqa: ANN401
    """Autocast to bfloat16 when ``precision == "bf16"``; a no-op for ``fp32``."""
    import torch

    if precision != "bf16":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield
