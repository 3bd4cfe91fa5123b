"""The one rule for source names (trained class names and enrolled sources alike).

A source name appears in file names (discovery folders), CSV column headers
(``score:<name>``), JSON keys, HTTP answers and log lines, so it must be safe in all of
them: 1 to 128 characters; ASCII letters, digits, ``_ . + -`` and inner spaces; starting
with a letter or digit, not ending with a space; not ``unknown`` (the rejection label).
Everything else (``a/b``, ``..``, control characters, ``score:x``, names that are not
valid UTF-8) is refused with a message saying so. Every name in the public POSE
benchmark's lists and in the zoo fits.
"""
from __future__ import annotations

import re

from osma.decision import UNKNOWN

MAX_SOURCE_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.+\- ]{0,%d}[A-Za-z0-9_.+\-])?" % (MAX_SOURCE_NAME - 2))
RULE = ("1-128 characters: ASCII letters, digits, '_', '.', '+', '-' and inner spaces, "
        "starting with a letter or digit, and not 'unknown'")


def check_source_name(name: object, where: str = "") -> str:
    """``name`` if it is an allowed source name, else ``ValueError`` stating the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == UNKNOWN:
        shown = ascii(name) if isinstance(name, str) and len(name) <= 60 else f"{ascii(name)[:60]}..."
        raise ValueError(f"{where}invalid source name {shown}: a source name has {RULE}")
    return name


__all__ = ["MAX_SOURCE_NAME", "RULE", "check_source_name"]
