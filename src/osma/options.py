"""Typed options: one dataclass per method, per score and for preprocessing.

Each options class is a dataclass whose fields carry their help text (and optionally a
set of ``choices`` or a ``min``) in the field metadata. :meth:`Options.from_dict` is the
one place where untyped input (a JSON document, ``--opt key=value`` strings, keyword
arguments) is checked and converted: unknown keys, wrong types and out-of-range values
raise :class:`OptionError` naming the key and where it came from. After that, code reads
typed attributes (``opts.crop``), never ``int(config["crop"])``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="Options")


class OptionError(ValueError):
    """A bad option: unknown key, wrong type or out-of-range value (the message names it)."""


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,  # noqa: A002, ANN401
        max: float | None = None) -> Any:  # noqa: A002, ANN401
    """A dataclass field with its help text and constraints (``choices``, ``min``, ``max``)
    in the metadata. A ``max`` bounds what a bundle or a command line can make osma
    allocate (a crop of 100000 pixels would ask for 100 GB)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "min": min, "max": max})


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_types(tp: Any) -> tuple[tuple[type, ...], bool]:  # noqa: ANN401
    """(allowed concrete types, None allowed) of an annotation like ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (tp,), False


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:  # noqa: ANN401
    allowed, nullable = _base_types(tp)
    if value is None:
        if nullable:
            return None
        raise OptionError(f"{where}option {key!r}: must not be null")
    for t in allowed:
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif t is str:
            if isinstance(value, str):
                return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed) + (" or null" if nullable else "")
    raise OptionError(f"{where}option {key!r}: expected {names}, got {value!r}")


@dataclasses.dataclass
class Options:
    """Base of every options dataclass."""

    #: what the options belong to, for messages ("method pose", "score knn", ...)
    owner: ClassVar[str] = "options"
    #: options whose default changed (or that came later): the value a configuration saved
    #: without them was trained with (:meth:`from_saved`)
    saved_defaults: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            setattr(self, f.name, _coerce(v, hints[f.name], f.name, f"{self.owner}: "))
            v = getattr(self, f.name)
            choices, lo, hi = f.metadata.get("choices"), f.metadata.get("min"), f.metadata.get("max")
            if choices is not None and v is not None and v not in choices:
                raise OptionError(f"{self.owner}: option {f.name!r}: {v!r} is not one of {list(choices)}")
            if isinstance(v, float) and not math.isfinite(v):
                raise OptionError(f"{self.owner}: option {f.name!r}: must be a finite number, got {v!r}")
            if lo is not None and v is not None and v < lo:
                raise OptionError(f"{self.owner}: option {f.name!r}: must be >= {lo}, got {v!r}")
            if hi is not None and v is not None and v > hi:
                raise OptionError(f"{self.owner}: option {f.name!r}: must be <= {hi}, got {v!r}")
        self.validate()

    def validate(self) -> None:
        """Cross-field checks (override); raise :class:`OptionError`."""

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
        """Build from a mapping; unknown keys and bad values raise :class:`OptionError`.

        ``where`` (a file, a command-line flag) prefixes the messages.
        """
        if values is None:
            values = {}
        if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
            raise OptionError(f"{where}{cls.owner}: options must be a mapping of names to values")
        values = dict(values)
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise OptionError(f"{where}{cls.owner}: unknown option(s) {unknown}; valid: {cls.names()}")
        try:
            return cls(**values)
        except OptionError as exc:
            raise OptionError(f"{where}{exc}") from None

    @classmethod
    def from_saved(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
        """:meth:`from_dict` for a saved configuration (a bundle, a checkpoint): an option it
        lacks takes :attr:`saved_defaults`' value, i.e. what it was trained with, if listed."""
        if isinstance(values, Mapping):
            values = {**cls.saved_defaults, **values}
        return cls.from_dict(values, where)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every option."""
        return dataclasses.asdict(self)

    def replace(self: T, **changes: Any) -> T:  # noqa: ANN401
        """A copy with some options changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(name, type, default, help) of every option, for ``--list-options``."""
        hints = _hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            allowed, nullable = _base_types(tp)
            tname = "|".join(getattr(t, "__name__", str(t)) for t in allowed) + ("|None" if nullable else "")
            extra = f" (one of {', '.join(map(str, f.metadata['choices']))})" if f.metadata.get("choices") else ""
            rows.append((f.name, tname, repr(f.default), f.metadata.get("help", "") + extra))
        return rows


@dataclasses.dataclass
class NoOptions(Options):
    """For parts that take no options."""


def split_options(values: Mapping[str, Any], *classes: type[Options]) -> list[dict[str, Any]]:
    """Distribute a flat mapping over several options classes by name (first match wins);
    a key that none of them has raises :class:`OptionError` listing every valid name."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    for k, v in values.items():
        for part, c in zip(parts, classes):
            if k in c.names():
                part[k] = v
                break
        else:
            valid = sorted({n for c in classes for n in c.names()})
            raise OptionError(f"unknown option {k!r}; valid: {valid}")
    return parts


def parse_assignments(items: list[str] | None, flag: str = "--opt") -> dict[str, Any]:
    """``["margin=0.3", "variant=am"]`` -> ``{"margin": 0.3, "variant": "am"}`` (values read as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise OptionError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)):
            raise OptionError(f"{flag} {item!r}: expected a single value")
        out[key] = value
    return out


__all__ = ["NoOptions", "OptionError", "Options", "opt", "parse_assignments", "split_options"]
