"""The built-in benchmark: a zoo of real image generators trained here, in the public format.

``osma.zoo.build("tiny", "runs/zoo-tiny")`` trains / loads the preset's generators, samples
train / val / test images for every class and writes ``data_list.yaml`` with five splits.
See :mod:`osma.zoo.presets` for how splits rotate the known generators.
"""
from __future__ import annotations

from osma.zoo.builder import build
from osma.zoo.presets import PRESETS, GeneratorSpec, ZooSpec, describe

__all__ = ["PRESETS", "GeneratorSpec", "ZooSpec", "build", "describe"]
