"""Names from the file system made safe to print on a terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["without_surrogates", "printable"]


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped as ``repr`` would (``\\n``, ESC → ``\\x1b``...).

    Case ids and paths come from folder and file names, which may hold newlines (that would forge extra
    ``error:`` lines), terminal escape sequences (which a terminal would obey) or undecodable bytes (which
    cannot be encoded for output). Every line the command line prints goes through this.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def without_surrogates(value: Any) -> Any:
    """``value`` (nested dicts, lists and tuples) with lone surrogates in its strings escaped as :func:`printable`
    does (an undecodable byte of a file name → ``\\xff`` as text).

    ``json.dumps`` would write them as ``\\udcff`` escapes, which strict JSON parsers (and any UTF-8 encoder)
    refuse; a report whose reader fails on one folder name is lost for every case.
    """
    if isinstance(value, str):
        return (
            "".join(_escape(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in value) if _has_surrogate(value) else value
        )
    if isinstance(value, Mapping):
        return {without_surrogates(key): without_surrogates(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_surrogates(item) for item in value]
    return value
