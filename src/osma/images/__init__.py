"""The forensic image pipeline, one job per module:

* :mod:`osma.images.decode`: safe decoding of files to HxWx3 uint8 RGB (:func:`load_image`,
  :class:`ImageError`, bounded pixel count, exact 16-bit PNGs) and :data:`IMAGE_EXTENSIONS`.
* :mod:`osma.images.transforms`: crops (:func:`eval_patch`, :func:`center_crop`,
  :func:`random_crop`, reflect padding), the explicit :func:`resize`, the training
  augmentations (JPEG re-compression, flip), :class:`CropConfig` and the DCT (:func:`dct2`).
* :mod:`osma.images.dataset`: :class:`ImageDataset`, :class:`BalancedBatchSampler` and
  :func:`make_loader`, which skip unreadable files instead of crashing a training run.
* :mod:`osma.images.sheet`: :func:`contact_sheet`, images tiled into one picture.

Every public name is importable from ``osma.images`` itself. The submodules are imported on
first use, so ``osma.images.decode`` (numpy and Pillow) does not pull in torch, which only
the transforms and the dataset need.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy __getattr__ below returns, spelled out for type checkers
    from osma.images.dataset import BalancedBatchSampler, ImageDataset, SkippingLoader, collate_skip, make_loader
    from osma.images.decode import (
        ALLOWED_FORMATS,
        IMAGE_EXTENSIONS,
        MAX_DECODE_BYTES,
        MAX_FILE_BYTES,
        MAX_PIXELS,
        ImageError,
        ImageSource,
        estimate_decode_bytes,
        load_image,
        load_images,
        to_rgb_array,
    )
    from osma.images.sheet import contact_sheet
    from osma.images.transforms import (
        JPEG_QUALITIES,
        CropConfig,
        center_crop,
        dct2,
        eval_patch,
        hflip,
        idct2,
        jpeg_recompress,
        pad_to,
        random_crop,
        random_jpeg,
        resize,
    )

#: submodule -> the names it defines that ``osma.images`` re-exports (the private ones as well,
#: as they were reachable when this package was one module)
_NAMES: dict[str, tuple[str, ...]] = {
    "decode": (
        "ALLOWED_FORMATS", "IMAGE_EXTENSIONS", "ImageError", "ImageSource", "MAX_DECODE_BYTES",
        "MAX_FILE_BYTES", "MAX_PIXELS", "estimate_decode_bytes", "load_image", "load_images", "to_rgb_array",
        "_gray3", "_load_pixels", "_maybe_png16", "_merge16", "_open", "_png16_low_bytes",
        "_read_bytes", "_scale16", "_source_name",
    ),
    "transforms": (
        "CropConfig", "JPEG_QUALITIES", "center_crop", "dct2", "eval_patch", "hflip", "idct2",
        "jpeg_recompress", "pad_to", "random_crop", "random_jpeg", "resize",
        "_DCT_CACHE", "_DCT_LOCK", "_dct_matrix",
    ),
    "dataset": (
        "BalancedBatchSampler", "ImageDataset", "SkippingLoader", "collate_skip", "make_loader",
        "_Collated", "_collate_with_failures", "_worker_init",
    ),
    "sheet": ("contact_sheet",),
}
_WHERE: dict[str, str] = {name: mod for mod, names in _NAMES.items() for name in names}

__all__ = sorted(name for name in _WHERE if not name.startswith("_"))


def __getattr__(name: str) -> Any:  # noqa: ANN401 - any re-exported object
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


class _Package(types.ModuleType):
    """``osma.images`` itself. Re-binding a re-exported name on it (as
    ``monkeypatch.setattr(osma.images, "load_image", fake)`` does) re-binds it in the loaded
    submodules too, so that e.g. :func:`load_images` and :class:`ImageDataset` call the
    replacement, as they did when this package was a single module."""

    def __setattr__(self, name: str, value: Any) -> None:  # noqa: ANN401
        if name in _WHERE:
            old = getattr(self, name)
            for sub in _NAMES:
                mod = sys.modules.get(f"{__name__}.{sub}")
                if mod is not None:
                    for key, val in list(vars(mod).items()):
                        if val is old:
                            setattr(mod, key, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
