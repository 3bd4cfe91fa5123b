"""A registry of named parts (methods, scores, backbones, input transforms), as timm's:
each part registers itself where it is defined, and is built by name."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """``name -> part``; :meth:`register` is the class decorator, :meth:`get` gives a clear error."""

    def __init__(self, kind: str, on_register: Callable[[str, T], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._on_register = on_register

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register the class under ``name`` (twice is an error)."""

        def deco(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self._on_register is not None:
                self._on_register(name, obj)
            self[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:  # type: ignore[override]
        """The part registered as ``name``; ``ValueError`` naming the choices otherwise."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}")
        return self[name]
