"""The method registry: each method registers itself where it is defined (as timm does)."""
from __future__ import annotations

from osma.registry import Registry


def _named(name: str, cls: type) -> None:
    cls.method = name
    cls.Options.owner = f"method {name}"


#: method registry: name -> class
METHODS: Registry[type] = Registry("method", _named)
#: class decorator: make a method available to ``osma train``, the evaluation and the tests
register_method = METHODS.register
