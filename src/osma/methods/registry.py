"""The method registry: each method registers itself where it is defined (as timm does)."""
from __future__ import annotations

from collections.abc import Callable

#: method registry: name -> class
METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a method available to ``osma train``, the evaluation and the tests."""

    def deco(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.method = name
        cls.Options.owner = f"method {name}"
        METHODS[name] = cls
        return cls

    return deco
