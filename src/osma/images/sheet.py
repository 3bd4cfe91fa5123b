"""Contact sheets: many images tiled into one picture for a person to look at.

One implementation for the project: :mod:`osma.discovery` (thumbnails of the members of each
cluster) and :mod:`osma.zoo.generators` (samples of each generator, at their own size).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def contact_sheet(
    images: Sequence[np.ndarray], tile: int | None = 96, cols: int = 8, pad: int = 2
):  # noqa: ANN201 - PIL.Image
    """A grid of ``cols`` columns (fewer when there are fewer images) on a white background,
    ``pad`` pixels between the tiles and around them, as a PIL RGB image.

    ``tile``: every image is centre-cropped to a square and resized to ``tile`` x ``tile``
    (nearest neighbour when enlarging, bilinear otherwise). ``tile=None``: images are pasted
    as they are (no crop, no resampling); they must all have the same height and width, and
    there must be at least one. Only the first three channels are used. No image at all
    gives one empty white tile.
    """
    from PIL import Image

    if tile is None:
        if not len(images):
            raise ValueError("contact_sheet(tile=None) needs at least one image")
        th, tw = images[0].shape[:2]
        if any(a.shape[:2] != (th, tw) for a in images):
            raise ValueError("contact_sheet(tile=None): images of different sizes")
    else:
        th = tw = tile
    n = max(1, len(images))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + pad) + pad), (255, 255, 255))
    for i, a in enumerate(images):
        if tile is None:
            thumb = Image.fromarray(np.ascontiguousarray(a[:, :, :3]))
        else:
            h, w = a.shape[:2]
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            thumb = Image.fromarray(np.ascontiguousarray(a[top : top + s, left : left + s, :3]))
            thumb = thumb.resize((tile, tile), Image.NEAREST if s < tile else Image.BILINEAR)
        r, c = divmod(i, cols)
        sheet.paste(thumb, (pad + c * (tw + pad), pad + r * (th + pad)))
    return sheet


__all__ = ["contact_sheet"]
